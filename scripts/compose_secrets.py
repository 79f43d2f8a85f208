"""The compose cluster's secrets, made once in ``deploy/compose/secrets/`` (git-ignored).

    python -m scripts.compose_secrets [--folder deploy/compose/secrets]

Makes what is missing and keeps what is there: delete a password or key file to make it
again, ``risk-private-key`` for a new risk key pair, ``ca.pem`` for new certificates.

- ``ca.pem`` (trusted by every client) and ``ca-key.pem`` (kept here, never mounted);
- ``server.pem`` / ``server-key.pem``: one certificate for every server of the cluster,
  named by its compose service (SERVER_NAMES) and ``localhost``/``127.0.0.1``;
- ``kafka-keystore.p12`` and ``kafka-keystore-password``: the same key for the brokers;
- a random password per Kafka user (``kafka-admin``, ``kafka-worker``, ``kafka-upstream``,
  ``kafka-risk``) and per database account (PASSWORDS);
- ``leg-keys``, ``risk-public-keys``, ``risk-private-key`` (engine.core.keyfiles formats).

Compose (without swarm) bind-mounts a file secret with its owner and mode on the host,
and the containers' users (postgres, mysql, the Kafka image's and ours) are not the
host's: the files are mode 0644 inside a folder of mode 0700, which keeps the host's
other users out. ``ca-key.pem`` and ``risk-private-key`` are mounted nowhere and stay 0600.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from cryptography.x509.oid import ExtendedKeyUsageOID

from deploy.local import tls
from engine.core.keyfiles import new_leg_key_line, new_risk_key_lines

FOLDER: Final = Path(__file__).parents[1] / "deploy" / "compose" / "secrets"
SERVER_NAMES: Final = (
    "kafka-1",
    "kafka-2",
    "kafka-3",
    "control-db",
    "cup-postgres",
    "cup-mariadb",
    "localhost",
)
SERVER_ADDRESSES: Final = ("127.0.0.1",)
PASSWORDS: Final = (
    "kafka-admin",
    "kafka-worker",
    "kafka-upstream",
    "kafka-risk",
    "postgres-control",
    "postgres-cup",
    "mariadb-cup",
    "mariadb-root",
    "grafana-admin",
)
PRIVATE: Final = frozenset({"ca-key.pem", "risk-private-key"})
"""Never mounted into a container: mode 0600."""
PASSWORD_BYTES: Final = 24
KEY_ID: Final = "compose-1"
CA_NAME: Final = "smallcups compose CA"


def make_secrets(folder: Path) -> list[str]:
    """Every secret of the cluster that is missing in ``folder``; returns those made."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    made: list[str] = []
    for name in PASSWORDS:
        made += _write(folder, {name: secrets.token_urlsafe(PASSWORD_BYTES)})
    if not (folder / "leg-keys").exists():
        made += _write(folder, {"leg-keys": new_leg_key_line(KEY_ID)})
    if not (folder / "risk-private-key").exists():
        private, public = new_risk_key_lines(KEY_ID)
        pair = {"risk-private-key": private, "risk-public-keys": public}
        made += _write(folder, pair, replace=True)
    if not (folder / "ca.pem").exists():
        made += _write(folder, _certificates(), replace=True)
    return made


def _write(folder: Path, files: Mapping[str, str | bytes], *, replace: bool = False) -> list[str]:
    """Write ``files`` (0600 if PRIVATE, else 0644); keep existing ones unless ``replace``
    (the files of a set that belong together: a key pair, the certificates)."""
    made = []
    for name, content in files.items():
        path = folder / name
        if path.exists() and not replace:
            continue
        data = content.encode() if isinstance(content, str) else content
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
        descriptor = os.open(path, flags, 0o600)
        os.fchmod(descriptor, 0o600 if name in PRIVATE else 0o644)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        made.append(name)
    return made


def _certificates() -> dict[str, str | bytes]:
    """A CA, and one server certificate signed by it for every service (server and client
    authentication), as PEM and as PKCS#12 for the JVM: the local stack's (deploy.local.tls),
    named for the cluster."""
    ca_key, server_key = tls.new_key(), tls.new_key()
    ca = tls.ca_certificate(ca_key, CA_NAME)
    usages = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    server = tls.server_certificate(server_key, ca, ca_key, SERVER_NAMES, SERVER_ADDRESSES, usages)
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    return {
        "ca-key.pem": tls.key_pem(ca_key),
        "server-key.pem": tls.key_pem(server_key),
        "server.pem": tls.pem(server),
        "kafka-keystore.p12": tls.keystore(server_key, server, ca, password),
        "kafka-keystore-password": password,
        "ca.pem": tls.pem(ca),
    }


def main(argv: Sequence[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--folder", type=Path, default=FOLDER, help="where the files go")
    folder = arguments.parse_args(argv).folder
    made = make_secrets(folder)
    print(f"{folder}: made {', '.join(made) if made else 'nothing (all present)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
