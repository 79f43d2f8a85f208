"""Key files: the workers' leg keys and the risk authority's keys, read and made.

A key file is text, one key per line, ``<key id> <hex>``; blank lines and lines that
start with ``#`` are skipped. Errors name the file and the line, never a key's bytes.
New files are written with mode 0600 in a folder of mode 0700 and never overwritten.

- leg keys (workers): 32 random bytes each; the first line signs, every line verifies;
- risk public keys (workers): Ed25519 public keys (32 bytes); an empty file accepts no
  privileged command at all;
- risk private key (the risk authority's ``smallcups risk``): one Ed25519 private key
  (its 32-byte seed).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from engine.core.authority import KEY_ID, LEG_SECRET_BYTES, Authority, LegKeys
from engine.core.config import LEG_KEYS_FILE, RISK_PRIVATE_KEY_FILE, RISK_PUBLIC_KEYS_FILE, Config
from engine.core.errors import ConfigError

ED25519_KEY_BYTES: Final = 32
KEY_LINES_MAX: Final = 64
"""Most keys one file may hold (rotation needs two)."""


def read_key_lines(path: Path, key_bytes: int) -> list[tuple[str, bytes]]:
    """(key id, key bytes) of every key line of ``path``, in order."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read key file {path}: {type(error).__name__}") from None
    keys: list[tuple[str, bytes]] = []
    for number, text_line in enumerate(text.splitlines(), start=1):
        line = text_line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"key file {path} line {number}"
        if len(fields) != 2 or not KEY_ID.fullmatch(fields[0]):
            raise ConfigError(f"{where}: expected '<key id> <hex>', id 1..32 of [A-Za-z0-9_.-]")
        try:
            key = bytes.fromhex(fields[1])
        except ValueError:
            raise ConfigError(f"{where}: the key is not hexadecimal") from None
        if len(key) != key_bytes:
            raise ConfigError(f"{where}: the key must be {key_bytes} bytes")
        if fields[0] in {known for known, _ in keys}:
            raise ConfigError(f"{where}: key id {fields[0]!r} appears twice")
        keys.append((fields[0], key))
    if len(keys) > KEY_LINES_MAX:
        raise ConfigError(f"key file {path} holds more than {KEY_LINES_MAX} keys")
    return keys


def read_leg_keys(path: Path) -> LegKeys:
    keys = read_key_lines(path, LEG_SECRET_BYTES)
    if not keys:
        raise ConfigError(f"key file {path} holds no leg key")
    return LegKeys(keys[0][0], dict(keys))


def read_risk_public_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    return {
        key_id: Ed25519PublicKey.from_public_bytes(key)
        for key_id, key in read_key_lines(path, ED25519_KEY_BYTES)
    }


def read_risk_private_key(path: Path) -> tuple[str, Ed25519PrivateKey]:
    keys = read_key_lines(path, ED25519_KEY_BYTES)
    if len(keys) != 1:
        raise ConfigError(f"key file {path} must hold exactly one risk private key")
    key_id, seed = keys[0]
    return key_id, Ed25519PrivateKey.from_private_bytes(seed)


def load_authority(config: Config) -> Authority:
    """The authority a worker checks proofs with: leg keys and risk public keys."""
    return Authority(
        config.kafka.commands_topic,
        read_leg_keys(config.leg_keys_path),
        read_risk_public_keys(config.risk_public_keys_path),
    )


def new_leg_key_line(key_id: str) -> str:
    """A fresh leg key as a key file line."""
    _check_id(key_id)
    return f"{key_id} {secrets.token_bytes(LEG_SECRET_BYTES).hex()}\n"


def new_risk_key_lines(key_id: str) -> tuple[str, str]:
    """A fresh Ed25519 key pair as (private key line, public key line)."""
    _check_id(key_id)
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"{key_id} {seed.hex()}\n", f"{key_id} {public.hex()}\n"


def ensure_local_keys(folder: Path, key_id: str = "local-1") -> list[Path]:
    """The local stack's key files, made where missing; returns the files made now."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    made = []
    legs = folder / LEG_KEYS_FILE
    if not legs.exists():
        write_secret(legs, new_leg_key_line(key_id))
        made.append(legs)
    private, public = folder / RISK_PRIVATE_KEY_FILE, folder / RISK_PUBLIC_KEYS_FILE
    if not private.exists() or not public.exists():
        private_line, public_line = new_risk_key_lines(key_id)
        write_secret(private, private_line, replace=True)
        write_secret(public, public_line, replace=True)
        made += [private, public]
    return made


def write_secret(path: Path, content: str | bytes, *, replace: bool = False) -> None:
    """Write a key file (text, or bytes such as a keystore) readable by its owner only;
    never overwrite one unless asked."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    try:
        descriptor = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists already: not overwriting a key file") from None
    os.fchmod(descriptor, 0o600)  # a file replaced keeps its mode otherwise
    data = content.encode() if isinstance(content, str) else content
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _check_id(key_id: str) -> None:
    if not KEY_ID.fullmatch(key_id):
        raise ConfigError(f"key id {key_id[:40]!r} is not 1..32 of [A-Za-z0-9_.-]")
