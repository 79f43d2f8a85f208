"""Who gets into the local MariaDB server, and how (``stack.security``).

Secure (the default): TLS with the stack's server certificate for every TCP client
(``require_secure_transport``: a plaintext connection is refused before it logs in), and
a password for each of the stack's two accounts: the cups' one (credentials ``mariadb``)
and the administrator (``mariadb-admin``), both ``mysql_native_password`` (MariaDB has no
SCRAM; over TLS the challenge and response stay private). The Unix socket, where the OS
user that started the server administers it (unix_socket authentication), is not a
network listener and stays as it was. Plain (``stack.security = false``): no TLS, the
accounts without a password.

The server never receives a password: the accounts are given the password's hash
(``IDENTIFIED BY PASSWORD '*...'``), so neither the binary log nor any other log of the
server can hold one.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path
from typing import Any, Final

from deploy.local.credentials import read_password
from engine.core.config import StackConfig
from engine.core.errors import StackError

NO_PASSWORD: Final = ""


def tls_settings(tls_folder: Path) -> dict[str, str]:
    """The my.cnf settings of a secure server, its certificate, key and CA in
    ``tls_folder``."""
    return {
        "ssl_ca": str(tls_folder / "ca.pem"),
        "ssl_cert": str(tls_folder / "server.pem"),
        "ssl_key": str(tls_folder / "server-key.pem"),
        "tls_version": "TLSv1.2,TLSv1.3",
        "require_secure_transport": "ON",
    }


def native_password_hash(password: str) -> str:
    """What ``mysql_native_password`` stores: ``*`` and SHA1(SHA1(password)) in hex."""
    if not password:
        return NO_PASSWORD
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


def identified(config: StackConfig, credentials: str) -> str:
    """The ``IDENTIFIED BY ...`` clause of an account of the stack: its password's hash
    when secure, no password when plain."""
    password = read_password(config.secrets_path, credentials) if config.security else ""
    password_hash = native_password_hash(password)
    if "'" in password_hash or "\\" in password_hash:
        raise StackError("a password hash is hex: no quote, no backslash")
    return f"IDENTIFIED BY PASSWORD '{password_hash}'" if password_hash else "IDENTIFIED BY ''"


def client_arguments(config: StackConfig, credentials: str) -> dict[str, Any]:
    """asyncmy.connect's password and TLS arguments for an account of the stack over TCP:
    its password and the stack's CA (the server's name checked) when secure."""
    if not config.security:
        return {"password": NO_PASSWORD}
    return {
        "password": read_password(config.secrets_path, credentials),
        "ssl": ssl.create_default_context(cafile=str(config.tls_ca_path)),
    }
