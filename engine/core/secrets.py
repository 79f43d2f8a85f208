"""Secrets a process reads: passwords, from a file or from an environment variable.

Never from argv (any user of the machine can read a process's command line), never from a
stored address: a DSN names its credentials (``credentials=NAME``), the control database
stores that name, and each process resolves the name from its own secret source:

- the environment variable ``SMALLCUPS_CREDENTIALS_<NAME>`` (upper case, ``-`` and ``.``
  as ``_``), which wins, else
- the file ``<credentials_dir>/<NAME>`` (``shards.credentials_dir``).

A secret is the file's text without its trailing newline (or the variable's value):
1..SECRET_BYTES_MAX bytes, no other newline. Errors say where a secret was looked for,
never what it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from engine.core.errors import ConfigError

SECRET_BYTES_MAX: Final = 4096
CREDENTIALS_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CREDENTIALS_ENV_PREFIX: Final = "SMALLCUPS_CREDENTIALS_"


def read_secret_file(path: Path, what: str) -> str:
    """The secret held in ``path`` (``what`` names it in errors)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {what} from {path}: {type(error).__name__}") from None
    return _checked(data.decode("utf-8", "replace").removesuffix("\n"), f"{what} in {path}")


def secret_from(file: str, env_name: str, what: str, environ: Mapping[str, str]) -> str:
    """The secret in ``file`` when it is set, else in the environment variable named
    ``env_name``; ConfigError when neither is set or the one named is missing."""
    if file:
        return read_secret_file(Path(file).expanduser(), what)
    if not env_name:
        raise ConfigError(f"{what}: name its file (*_file) or its environment variable (*_env)")
    value = environ.get(env_name)
    if value is None:
        raise ConfigError(f"{what}: the environment variable {env_name} is not set")
    return _checked(value, f"{what} in ${env_name}")


def credentials_env_name(name: str) -> str:
    """The environment variable that holds the credentials ``name``."""
    check_credentials_name(name)
    return CREDENTIALS_ENV_PREFIX + re.sub(r"[-.]", "_", name).upper()


def check_credentials_name(name: str) -> str:
    if not CREDENTIALS_NAME.fullmatch(name):
        raise ConfigError(
            f"credentials name {name[:70]!r} must be 1..64 of [A-Za-z0-9_.-], "
            "starting with a letter or digit"
        )
    return name


def named_credentials(name: str, folder: str, environ: Mapping[str, str]) -> str:
    """The password of the credentials ``name``: from its environment variable, else from
    ``<folder>/<name>``."""
    env_name = credentials_env_name(name)
    value = environ.get(env_name)
    if value is not None:
        return _checked(value, f"credentials {name!r} in ${env_name}")
    if not folder:
        raise ConfigError(
            f"credentials {name!r}: set ${env_name} or shards.credentials_dir "
            f"(a folder holding a file named {name})"
        )
    return read_secret_file(Path(folder).expanduser() / name, f"credentials {name!r}")


def _checked(secret: str, where: str) -> str:
    if not secret:
        raise ConfigError(f"{where} is empty")
    if len(secret.encode()) > SECRET_BYTES_MAX:
        raise ConfigError(f"{where} is longer than {SECRET_BYTES_MAX} bytes")
    if "\n" in secret or "\r" in secret:
        raise ConfigError(f"{where} holds more than one line")
    return secret
