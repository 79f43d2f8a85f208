"""The local stack's passwords: one random password per account, one file per name in
``<state_dir>/secrets/credentials`` (mode 0600 in a 0700 folder), made where missing and
never shown. The folder is the local stack's ``shards.credentials_dir``: a DSN that names
``credentials=postgres`` finds its password in the file ``postgres`` (engine.core.secrets).

Kafka's accounts are the roles of docs/security.md (``kafka-admin``, ``kafka-worker``,
``kafka-upstream``, ``kafka-risk``); the databases have one account each for the cups
(``postgres``, ``mariadb``) and MariaDB one more for creating databases (``mariadb-admin``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

from engine.core.config import StackConfig
from engine.core.dsn import DatabaseLogin, database_login
from engine.core.keyfiles import write_secret
from engine.core.secrets import read_secret_file

PASSWORD_BYTES: Final = 24
"""Random bytes of a password (32 URL-safe characters: no quoting anywhere)."""


def credentials_folder(secrets_folder: Path) -> Path:
    return secrets_folder / "credentials"


def ensure_password(secrets_folder: Path, name: str) -> Path:
    """The file holding the password ``name``, made with a fresh password if missing."""
    folder = credentials_folder(secrets_folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = password_file(secrets_folder, name)
    if not path.exists():
        write_secret(path, secrets.token_urlsafe(PASSWORD_BYTES) + "\n")
    return path


def password_file(secrets_folder: Path, name: str) -> Path:
    """Where the password ``name`` is (``ensure_password`` makes it)."""
    return credentials_folder(secrets_folder) / name


def read_password(secrets_folder: Path, name: str) -> str:
    """The password ``name``, made earlier by ``ensure_password``."""
    return read_secret_file(password_file(secrets_folder, name), f"the password {name!r}")


def stack_passwords(secrets_folder: Path) -> list[str]:
    """Every password the stack made (the leak scan looks for each of them)."""
    folder = credentials_folder(secrets_folder)
    if not folder.is_dir():
        return []
    return [path.read_text(encoding="utf-8").strip() for path in sorted(folder.iterdir())]


def stack_login(stack: StackConfig, dsn: str) -> DatabaseLogin:
    """A DSN of the local stack and its password, from the stack's own folder: the one
    its servers took their passwords from (no environment variable overrides it here)."""
    return database_login(dsn, str(credentials_folder(stack.secrets_path)), {})
