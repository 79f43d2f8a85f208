"""Connection pools to the cups of a shard map, and their schema set-up."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import asyncpg

from engine.core.config import ShardsConfig
from engine.core.errors import ConfigError, InfrastructureError
from engine.core.records import ShardMap
from engine.core.store import CupStore
from shards.control import CONNECT_ERRORS, connect, redact, safe_detail
from shards.migrate import migrate, missing_migrations
from shards.store import PostgresCupStore


async def initialize_cups(shard_map: ShardMap, config: ShardsConfig) -> None:
    """Migrate every cup and give each partition its state row in its cup."""
    for cup_id, dsn in sorted(shard_map.cups.items()):
        connection = await connect(dsn, config.connect_timeout_seconds)
        try:
            await migrate(connection, "postgres")
            await connection.executemany(
                "INSERT INTO partition_state (partition) VALUES ($1) ON CONFLICT DO NOTHING",
                [(p,) for p in shard_map.partitions_of(cup_id)],
            )
        finally:
            await connection.close()


async def open_cups(shard_map: ShardMap, config: ShardsConfig) -> dict[int, PostgresCupStore]:
    """One pool per cup. A cup that cannot be reached fails the start, by name."""

    async def open_one(cup_id: int, dsn: str) -> PostgresCupStore:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=config.pool_size_max,
                timeout=config.connect_timeout_seconds,
                command_timeout=60,
                reset=_keep_session,
                server_settings={"plan_cache_mode": "force_generic_plan"},
            )
        except CONNECT_ERRORS as error:
            detail = safe_detail(error)
            raise InfrastructureError(f"cup {cup_id} at {redact(dsn)}: {detail}") from None
        return PostgresCupStore(cup_id, pool)

    stores = await asyncio.gather(*(open_one(c, d) for c, d in sorted(shard_map.cups.items())))
    for store in stores:
        async with store.pool.acquire() as connection:
            missing = await missing_migrations(connection, "postgres")
        if missing:
            await asyncio.gather(*(s.pool.close() for s in stores))
            raise ConfigError(
                f"cup {store.cup_id} lacks migrations {missing}: run `smallcups init`"
            )
    return {store.cup_id: store for store in stores}


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool connections are returned with no session state to undo: skip the reset query.

    The store never leaves a transaction open, sets nothing, listens to nothing, so the
    default reset (one more round trip per acquire) is pure cost on the hot path.
    """


async def close_cups(stores: Mapping[int, CupStore]) -> None:
    await asyncio.gather(*(store.close() for store in stores.values()))
