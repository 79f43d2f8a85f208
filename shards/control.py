"""The control database: the settings every process must agree on, the cups, the shard map."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from engine.errors import ConfigError, InfrastructureError
from shards.migrate import migrate

MAP_CHANNEL = "smallcups_shard_map"
"""NOTIFY channel: its payload is the shard map's new version."""


def redact(dsn: str) -> str:
    """A DSN fit for logs and errors: the password, if any, replaced by ``***``."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True, slots=True)
class ShardMap:
    """Which cup owns which partition, at one version of the map."""

    version: int
    partitions: int
    topic_prefix: str
    cups: dict[int, str]
    cup_of: dict[int, int]
    paused: frozenset[int] = frozenset()
    """Partitions being moved: nobody claims or commits them until the map flips."""

    def partitions_of(self, cup_id: int) -> list[int]:
        return sorted(p for p, c in self.cup_of.items() if c == cup_id)


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
    cups = {r["cup_id"]: r["dsn"] for r in await connection.fetch("SELECT cup_id, dsn FROM cups")}
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


async def connect(dsn: str, timeout_seconds: float) -> asyncpg.Connection:
    """Open one connection; errors name the database without its password."""
    try:
        return await asyncpg.connect(dsn, timeout=timeout_seconds)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        detail = f"{type(error).__name__}: {error}"
        raise InfrastructureError(f"cannot connect to {redact(dsn)}: {detail}") from None
