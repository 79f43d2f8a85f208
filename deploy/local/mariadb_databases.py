"""The account and the databases of the local MariaDB server: one database per MariaDB cup.

``ensure_mysql_databases`` (``dev up``) connects as the server's administrator over the
Unix socket (``root`` under euid 0, authenticated as the OS user by unix_socket: the
account mariadb-install-db made) and creates or updates, with their passwords when
``stack.security`` is on (deploy.local.mariadb_auth; without passwords when it is off):

- the account the cups are reached as, ``'<stack.mariadb_user>'@'127.0.0.1'`` (the
  credentials ``mariadb``): what a cup needs (read and write rows, migrate: create and
  alter tables, indexes and triggers) and not DROP, which TRUNCATE needs: the journal's
  triggers cannot refuse a TRUNCATE (MySQL fires none), so the account cannot run one;
- an administrator account, ``'<stack.mariadb_user>_admin'@'127.0.0.1'`` (the
  credentials ``mariadb-admin``), with every privilege: the tools' and tests' fresh
  databases are created and dropped through it;

then the missing cup databases. Creating is idempotent.

``create_mysql_databases`` and ``drop_mysql_databases`` take explicit names and connect
through the administrator's TCP account, as any OS user can.
"""

from __future__ import annotations

import asyncio
import re
from typing import Final

import asyncmy
from asyncmy.errors import MySQLError

from deploy.local import ports
from deploy.local.mariadb_auth import client_arguments, identified
from deploy.local.mariadb_server import admin_user, socket_path
from engine.core.config import MARIADB_ADMIN_CREDENTIALS, MARIADB_CREDENTIALS, StackConfig
from engine.core.errors import StackError

CONNECT_TIMEOUT_SECONDS: Final = 5
CHARSET: Final = "utf8mb4"
COLLATION: Final = "utf8mb4_bin"
QUIET_NOTES: Final = "SET SESSION sql_notes = 0"
"""IF [NOT] EXISTS leaves a note when there was nothing to do; asyncmy logs each one."""
DATABASE_NAME: Final = re.compile(r"[A-Za-z0-9_]{1,64}")
"""Names we create or drop: plain identifiers within MariaDB's 64-character limit."""


def ensure_mysql_databases(config: StackConfig) -> list[str]:
    """Create the account and the missing cup databases; return the databases created."""
    try:
        return asyncio.run(_ensure(config))
    except (OSError, MySQLError, TimeoutError) as error:
        raise StackError(f"cannot create the MariaDB account and databases: {error}") from error


def missing_mysql_databases(config: StackConfig) -> list[str] | None:
    """The cup databases that do not exist, or None when the server does not answer
    (or does not let the account in)."""
    try:
        return asyncio.run(_missing(config, config.mysql_cup_databases))
    except (OSError, MySQLError, TimeoutError):
        return None


def create_mysql_databases(config: StackConfig, names: list[str]) -> None:
    """Create each database (utf8mb4, binary collation) unless it exists."""
    if not names:
        return
    statements = [_create_statement(name) for name in names]
    _run_as_account(config, statements, "create")


def drop_mysql_databases(config: StackConfig, names: list[str]) -> None:
    """Drop each database if it exists."""
    if not names:
        return
    statements = [f"DROP DATABASE IF EXISTS {_identifier(name)}" for name in names]
    _run_as_account(config, statements, "drop")


SYSTEM_DATABASES = ("mysql", "information_schema", "performance_schema", "sys")


def drop_every_mysql_database(config: StackConfig) -> list[str]:
    """Drop every database but the server's own (the broker's storage was formatted again:
    their state belonged to topics that no longer exist); return their names. As the
    server's administrator over the Unix socket: the accounts may not be set up yet."""
    try:
        return asyncio.run(_drop_every(config))
    except (OSError, MySQLError, TimeoutError) as error:
        raise StackError(f"cannot drop MariaDB databases: {error}") from error


async def _drop_every(config: StackConfig) -> list[str]:
    connection = await _connect_as_admin(config)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
            names = [str(row[0]) for row in await cursor.fetchall()]
            names = [name for name in names if name not in SYSTEM_DATABASES]
            for name in names:
                await cursor.execute(f"DROP DATABASE IF EXISTS {_identifier(name)}")
    finally:
        await connection.ensure_closed()
    return names


def _run_as_account(config: StackConfig, statements: list[str], verb: str) -> None:
    try:
        asyncio.run(_execute_as_account(config, statements))
    except (OSError, MySQLError, TimeoutError) as error:
        raise StackError(f"cannot {verb} MariaDB databases: {error}") from error


def _identifier(name: str) -> str:
    if not DATABASE_NAME.fullmatch(name):
        raise StackError(f"a database name is 1..64 of [A-Za-z0-9_], got {name!r}")
    return f"`{name}`"


def _literal(value: str) -> str:
    """A string literal whatever the sql_mode (NO_BACKSLASH_ESCAPES or not)."""
    if "\\" in value:
        raise StackError(f"a MariaDB account name has no backslash, got {value!r}")
    return "'" + value.replace("'", "''") + "'"


def _create_statement(name: str) -> str:
    return (
        f"CREATE DATABASE IF NOT EXISTS {_identifier(name)} "
        f"CHARACTER SET {CHARSET} COLLATE {COLLATION}"
    )


CUP_PRIVILEGES: Final = (
    "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, TRIGGER, LOCK TABLES,"
    " CREATE TEMPORARY TABLES"
)
"""What the cups' account may do: no DROP (so no TRUNCATE), no SUPER."""


def admin_account(config: StackConfig) -> str:
    return f"{config.mariadb_user}_admin"


def _account_statements(config: StackConfig) -> list[str]:
    """The accounts made if missing, and given their password (an account of an older
    stack, made without one, gets it too)."""
    cups = f"{_literal(config.mariadb_user)}@{_literal(ports.HOST)}"
    cups_identified = identified(config, MARIADB_CREDENTIALS)
    admin = f"{_literal(admin_account(config))}@{_literal(ports.HOST)}"
    admin_identified = identified(config, MARIADB_ADMIN_CREDENTIALS)
    return [
        f"CREATE USER IF NOT EXISTS {cups} {cups_identified}",
        f"ALTER USER {cups} {cups_identified}",
        f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {cups}",
        f"GRANT {CUP_PRIVILEGES} ON *.* TO {cups}",
        f"CREATE USER IF NOT EXISTS {admin} {admin_identified}",
        f"ALTER USER {admin} {admin_identified}",
        f"GRANT ALL PRIVILEGES ON *.* TO {admin}",
    ]


async def _connect_as_admin(config: StackConfig) -> asyncmy.Connection:
    return await asyncmy.connect(
        unix_socket=str(socket_path(config)),
        user=admin_user(),
        charset=CHARSET,
        autocommit=True,
        init_command=QUIET_NOTES,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
    )


async def _connect_as_account(
    config: StackConfig, user: str, credentials: str
) -> asyncmy.Connection:
    """As ``user`` over TCP (and TLS, with the password ``credentials``, when secure)."""
    return await asyncmy.connect(
        host=ports.HOST,
        port=config.mariadb_port,
        user=user,
        **client_arguments(config, credentials),
        charset=CHARSET,
        autocommit=True,
        init_command=QUIET_NOTES,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
    )


async def _existing(connection: asyncmy.Connection, names: list[str]) -> set[str]:
    if not names:
        return set()
    marks = ", ".join(["%s"] * len(names))
    async with connection.cursor() as cursor:
        await cursor.execute(
            f"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({marks})",
            names,
        )
        rows = await cursor.fetchall()
    return {str(row[0]) for row in rows}


async def _ensure(config: StackConfig) -> list[str]:
    connection = await _connect_as_admin(config)
    try:
        wanted = config.mysql_cup_databases
        existing = await _existing(connection, wanted)
        missing = [name for name in wanted if name not in existing]
        async with connection.cursor() as cursor:
            for statement in _account_statements(config):
                await cursor.execute(statement)
            for name in missing:
                await cursor.execute(_create_statement(name))
    finally:
        await connection.ensure_closed()
    return missing


async def _missing(config: StackConfig, wanted: list[str]) -> list[str]:
    connection = await _connect_as_account(config, config.mariadb_user, MARIADB_CREDENTIALS)
    try:
        existing = await _existing(connection, wanted)
    finally:
        await connection.ensure_closed()
    return [name for name in wanted if name not in existing]


async def _execute_as_account(config: StackConfig, statements: list[str]) -> None:
    connection = await _connect_as_account(config, admin_account(config), MARIADB_ADMIN_CREDENTIALS)
    try:
        async with connection.cursor() as cursor:
            for statement in statements:
                await cursor.execute(statement)
    finally:
        await connection.ensure_closed()
