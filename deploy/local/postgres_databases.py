"""The databases of the local cluster: the control database and one per Postgres cup.

Creating is idempotent: a later ``dev up`` with more cups creates only the missing ones.
Only ``drop_every_database`` drops: when the broker's storage was formatted again, every
database of the cluster held state of topics that no longer exist.
"""

from __future__ import annotations

import asyncio

import asyncpg

from deploy.local.credentials import stack_login
from engine.core.config import StackConfig
from engine.core.errors import ConfigError, StackError

MAINTENANCE_DATABASE = "postgres"
CONTROL_DATABASE = "smallcups_control"
CONNECT_TIMEOUT_SECONDS = 5.0


def wanted_databases(config: StackConfig) -> list[str]:
    """The control database first, then every Postgres cup's database."""
    return [CONTROL_DATABASE, *config.postgres_cup_databases]


def ensure_databases(config: StackConfig) -> list[str]:
    """Create the missing databases; return the names created."""
    try:
        return asyncio.run(_create_missing(config))
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        raise StackError(f"cannot create the stack's databases: {error}") from error


def missing_databases(config: StackConfig) -> list[str] | None:
    """The wanted databases that do not exist, or None when the cluster does not answer."""
    try:
        return asyncio.run(_missing(config))
    except (OSError, asyncpg.PostgresError, TimeoutError, ConfigError):
        return None


async def _connect(config: StackConfig) -> asyncpg.Connection:
    """As the cluster's superuser over TCP (and TLS, with its password, when secure)."""
    login = stack_login(config, config.database_dsn(MAINTENANCE_DATABASE))
    return await asyncpg.connect(
        login.dsn, password=login.password, timeout=CONNECT_TIMEOUT_SECONDS
    )


async def _existing(connection: asyncpg.Connection, names: list[str]) -> set[str]:
    rows = await connection.fetch(
        "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", names
    )
    return {row["datname"] for row in rows}


async def _missing(config: StackConfig) -> list[str]:
    connection = await _connect(config)
    try:
        wanted = wanted_databases(config)
        existing = await _existing(connection, wanted)
    finally:
        await connection.close()
    return [name for name in wanted if name not in existing]


async def _create_missing(config: StackConfig) -> list[str]:
    connection = await _connect(config)
    created: list[str] = []
    try:
        wanted = wanted_databases(config)
        existing = await _existing(connection, wanted)
        for name in wanted:
            if name in existing:
                continue
            try:
                await connection.execute(f'CREATE DATABASE "{name}"')
            except asyncpg.DuplicateDatabaseError:
                continue  # another `dev up` created it a moment ago
            created.append(name)
    finally:
        await connection.close()
    return created


def drop_every_database(config: StackConfig) -> list[str]:
    """Drop every database but Postgres's own; return their names."""
    try:
        return asyncio.run(_drop_every(config))
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        raise StackError(f"cannot drop the stack's databases: {error}") from error


async def _drop_every(config: StackConfig) -> list[str]:
    connection = await _connect(config)
    try:
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> $1",
            MAINTENANCE_DATABASE,
        )
        names = [row["datname"] for row in rows]
        for name in names:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
    return names
