"""The control database: the settings every process must agree on, the cups, the shard map."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Final

import asyncpg

from engine.core.config import ShardsConfig
from engine.core.dsn import DatabaseLogin, database_login, redact, refuse_password
from engine.core.errors import ConfigError, InfrastructureError
from engine.core.records import ShardMap
from shards.migrate import migrate

MAP_CHANNEL = "smallcups_shard_map"
"""NOTIFY channel: its payload is the shard map's new version."""


async def initialize_control(
    connection: asyncpg.Connection, cup_dsns: Sequence[str], partitions: int, topic_prefix: str
) -> ShardMap:
    """Create the control schema, register the cups, assign partitions round-robin.

    Idempotent: a second run keeps the existing map and refuses a different partition
    count or topic prefix rather than silently re-routing money.
    """
    await migrate(connection, "control")
    async with connection.transaction():
        await _settle_setting(connection, "partitions", str(partitions))
        await _settle_setting(connection, "topic_prefix", topic_prefix)
        for dsn in cup_dsns:
            refuse_password(dsn, "a cup's DSN")
            await connection.execute(
                "INSERT INTO cups (cup_id, dsn)"
                " SELECT coalesce(max(cup_id) + 1, 0), $1 FROM cups"
                " ON CONFLICT (dsn) DO NOTHING",
                dsn,
            )
        mapped = await connection.fetchval("SELECT count(*) FROM shard_map")
        if mapped == 0:
            cup_ids = [
                r["cup_id"]
                for r in await connection.fetch("SELECT cup_id FROM cups ORDER BY cup_id")
            ]
            await connection.executemany(
                "INSERT INTO shard_map (partition, cup_id, version) VALUES ($1, $2, 1)",
                [(p, cup_ids[p % len(cup_ids)]) for p in range(partitions)],
            )
            await connection.execute(
                "INSERT INTO shard_map_version (version) VALUES (1) ON CONFLICT DO NOTHING"
            )
    return await load_shard_map(connection)


async def _settle_setting(connection: asyncpg.Connection, name: str, value: str) -> None:
    current = await connection.fetchval("SELECT value FROM settings WHERE name = $1", name)
    if current is None:
        await connection.execute("INSERT INTO settings (name, value) VALUES ($1, $2)", name, value)
    elif current != value:
        raise ConfigError(
            f"the control database was initialized with {name}={current}, not {value}"
        )


async def load_shard_map(connection: asyncpg.Connection) -> ShardMap:
    """The map at one version: its queries read one snapshot, so a move is never torn."""
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        return await _read_shard_map(connection)


async def _read_shard_map(connection: asyncpg.Connection) -> ShardMap:
    settings = {
        r["name"]: r["value"] for r in await connection.fetch("SELECT name, value FROM settings")
    }
    if "partitions" not in settings:
        raise ConfigError("the control database is not initialized: run `smallcups init`")
    version = await connection.fetchval("SELECT version FROM shard_map_version")
    cups = {
        r["cup_id"]: refuse_password(r["dsn"], f"cup {r['cup_id']} in the control database")
        for r in await connection.fetch("SELECT cup_id, dsn FROM cups")
    }
    rows = await connection.fetch("SELECT partition, cup_id, paused FROM shard_map")
    return ShardMap(
        version=version,
        partitions=int(settings["partitions"]),
        topic_prefix=settings["topic_prefix"],
        cups=cups,
        cup_of={r["partition"]: r["cup_id"] for r in rows},
        paused=frozenset(r["partition"] for r in rows if r["paused"]),
    )


async def publish_version(connection: asyncpg.Connection) -> int:
    """Give the map a new version and tell the workers, inside the caller's transaction.

    The NOTIFY is delivered when the transaction commits, so no worker reads a version
    that could still roll back.
    """
    version: int = await connection.fetchval(
        "UPDATE shard_map_version SET version = version + 1 RETURNING version"
    )
    await connection.execute("SELECT pg_notify($1, $2)", MAP_CHANNEL, str(version))
    return version


async def register_cup(connection: asyncpg.Connection, dsn: str) -> int:
    """Add a cup (or find it by its DSN) and publish a new map version; returns its id."""
    refuse_password(dsn, "a cup's DSN")
    async with connection.transaction():
        cup_id: int | None = await connection.fetchval(
            "SELECT cup_id FROM cups WHERE dsn = $1", dsn
        )
        if cup_id is None:
            cup_id = await connection.fetchval(
                "INSERT INTO cups (cup_id, dsn) SELECT coalesce(max(cup_id) + 1, 0), $1"
                " FROM cups RETURNING cup_id",
                dsn,
            )
            await publish_version(connection)
    if cup_id is None:
        raise InfrastructureError(f"cup {redact(dsn)} was not registered")
    return cup_id


async def draining_cups(connection: asyncpg.Connection) -> frozenset[int]:
    """The cups marked draining: no partition may be placed on them."""
    rows = await connection.fetch("SELECT cup_id FROM cups WHERE draining")
    return frozenset(r["cup_id"] for r in rows)


async def set_draining(connection: asyncpg.Connection, cup_id: int, *, draining: bool) -> bool:
    """Mark a cup draining (or not); False when there is no such cup. The map's version
    does not change: draining decides where partitions go, not where they are."""
    status: str = await connection.execute(
        "UPDATE cups SET draining = $2 WHERE cup_id = $1", cup_id, draining
    )
    return status != "UPDATE 0"


async def unregister_cup(connection: asyncpg.Connection, cup_id: int) -> None:
    """Delete an empty cup's row and publish a new map version, in one transaction; the
    caller checked the cup is empty. Refuses a cup that a partition or an unfinished move
    still names (checked again here, under the row locks, against a concurrent move)."""
    async with connection.transaction():
        await connection.execute("LOCK TABLE shard_map, moves IN SHARE MODE")
        mapped = await connection.fetchval(
            "SELECT count(*) FROM shard_map WHERE cup_id = $1", cup_id
        )
        moving = await connection.fetchval(
            "SELECT count(*) FROM moves WHERE (source_cup = $1 OR target_cup = $1)"
            " AND step NOT IN ('done', 'aborted')",
            cup_id,
        )
        if mapped or moving:
            raise ConfigError(
                f"cup {cup_id} still holds {mapped} partitions and is named by {moving}"
                " unfinished moves"
            )
        deleted = await connection.execute("DELETE FROM cups WHERE cup_id = $1", cup_id)
        if deleted == "DELETE 0":
            raise ConfigError(f"no cup {cup_id}")
        await publish_version(connection)


def login(dsn: str, config: ShardsConfig) -> DatabaseLogin:
    """``dsn``'s login with this process's secrets: the environment, then
    ``shards.credentials_dir``."""
    return database_login(dsn, config.credentials_dir, os.environ)


async def connect(dsn: str, config: ShardsConfig) -> asyncpg.Connection:
    """Open one connection, with the password of the credentials ``dsn`` names; errors
    name the database without a password."""
    credentials = login(dsn, config)
    try:
        return await asyncpg.connect(
            credentials.dsn, password=credentials.password, timeout=config.connect_timeout_seconds
        )
    except CONNECT_ERRORS as error:
        detail = safe_detail(error)
        raise InfrastructureError(f"cannot connect to {redact(dsn)}: {detail}") from None


CONNECT_ERRORS: Final = (
    OSError,
    TimeoutError,
    ValueError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
"""What connecting to a DSN may raise: the server refused, it was not reached, or the DSN
itself is malformed (asyncpg's ClientConfigurationError, ValueError)."""


def safe_detail(error: BaseException) -> str:
    """An error of a connection attempt, fit for logs: the server's message, but only the
    kind of a DSN parsing error (whose message may quote the DSN, password and all)."""
    if isinstance(error, ValueError | asyncpg.InterfaceError):
        return f"{type(error).__name__} (is the DSN well-formed?)"
    return f"{type(error).__name__}: {error}"
