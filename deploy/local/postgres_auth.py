"""Who gets into the local Postgres cluster, and how (``stack.security``).

Secure (the default): TLS with the stack's server certificate, SCRAM-SHA-256 passwords,
and one line in ``pg_hba.conf``: ``hostssl`` from 127.0.0.1 only. No Unix socket line,
no trust: the stack itself administers the cluster over TCP and TLS, as the role
``stack.postgres_user`` whose password is the credentials ``postgres``
(deploy.local.credentials). Plain (``stack.security = false``): trust from the socket
and 127.0.0.1, no TLS, as before there was security.

The role's password is set while the cluster is stopped, in single-user mode, whenever
``pg_hba.conf`` is not yet the secure one: a fresh cluster (initdb leaves trust), a
cluster made before security, or one last run plain. So no server ever listens with
trust while security is on. The server receives only the SCRAM verifier, never the
password, so no log of it can hold the password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import subprocess
from pathlib import Path
from typing import Final

from deploy.local.credentials import read_password
from engine.core.config import POSTGRES_CREDENTIALS, StackConfig
from engine.core.errors import StackError

HBA_FILE: Final = "pg_hba.conf"
SCRAM_ITERATIONS: Final = 4096
"""Postgres's own default (scram_iterations)."""
SCRAM_SALT_BYTES: Final = 16


def render_hba(security: bool) -> str:
    """``pg_hba.conf``: TLS and SCRAM from 127.0.0.1 only, or trust (plain)."""
    lines = ["# Written by `smallcups dev up`; rewritten on every start."]
    if security:
        lines.append("hostssl all all 127.0.0.1/32 scram-sha-256")
    else:
        lines += ["local all all trust", "host all all 127.0.0.1/32 trust"]
    return "\n".join(lines) + "\n"


def tls_settings(tls_folder: Path) -> dict[str, str]:
    """The settings of a secure cluster, its certificate and key in ``tls_folder``."""
    return {
        "ssl": "on",
        "ssl_cert_file": _quote(str(tls_folder / "server.pem")),
        "ssl_key_file": _quote(str(tls_folder / "server-key.pem")),
        "ssl_min_protocol_version": "'TLSv1.2'",
        "password_encryption": "'scram-sha-256'",
    }


def scram_verifier(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> str:
    """What Postgres stores for a SCRAM-SHA-256 password (RFC 5802, 7677): the salt, the
    StoredKey and the ServerKey. The password is ASCII (deploy.local.credentials makes
    URL-safe ones), which SASLprep leaves as it is."""
    if not password.isascii() or not password.isprintable():
        raise StackError("the stack's Postgres password must be printable ASCII")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def write_hba(config: StackConfig, data: Path, postgres: list[str], timeout_seconds: float) -> None:
    """Rewrite ``pg_hba.conf`` of the stopped cluster in ``data``; when it becomes the
    secure one, first set the role's password (single-user mode, ``postgres`` being the
    command that runs the server binary as the cluster's owner)."""
    path = data / HBA_FILE
    wanted = render_hba(config.security)
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    if current == wanted:
        return
    if config.security:
        password = read_password(config.secrets_path, POSTGRES_CREDENTIALS)
        verifier = scram_verifier(password, secrets.token_bytes(SCRAM_SALT_BYTES))
        _single_user(
            [*postgres, "--single", "-D", str(data), "postgres"],
            f"ALTER ROLE \"{_identifier(config.postgres_user)}\" PASSWORD '{verifier}';\n",
            timeout_seconds,
        )
    path.write_text(wanted, encoding="utf-8")  # in place: the cluster's owner keeps it


def _single_user(command: list[str], statement: str, timeout_seconds: float) -> None:
    try:
        done = subprocess.run(
            command,
            input=statement,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise StackError(f"postgres --single did not finish in {timeout_seconds:.0f} s") from error
    output = done.stdout + done.stderr
    if done.returncode != 0 or "ERROR:" in output or "FATAL:" in output:
        lines = [line for line in output.splitlines() if "SCRAM-SHA-256$" not in line]
        raise StackError(
            f"setting the role's password failed (exit {done.returncode}):\n" + "\n".join(lines)
        )


def _identifier(name: str) -> str:
    if '"' in name or "\\" in name:
        raise StackError(f"stack.postgres_user holds a quote or a backslash: {name!r}")
    return name


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
