"""The cups of a shard map: their schema set-up, and the worker's stores (one pool each)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from engine.core.config import ShardsConfig
from engine.core.errors import ConfigError
from engine.core.records import ShardMap
from engine.core.store import CupStore
from shards.backends import connect_cup, open_store
from shards.cup_admin import CupAdmin


async def initialize_cups(shard_map: ShardMap, config: ShardsConfig) -> None:
    """Migrate every cup and give each partition its state row in its cup."""
    for cup_id, dsn in sorted(shard_map.cups.items()):
        admin = await connect_cup(dsn, config)
        try:
            await admin.migrate()
            await admin.add_partitions(shard_map.partitions_of(cup_id))
        finally:
            await admin.close()


async def open_cups(shard_map: ShardMap, config: ShardsConfig) -> dict[int, CupStore]:
    """One pool per cup. A cup that cannot be reached, or lacks migrations, fails the
    start, by name."""
    for cup_id, dsn in sorted(shard_map.cups.items()):
        admin = await connect_cup(dsn, config)
        try:
            missing = await admin.missing_migrations()
        finally:
            await admin.close()
        if missing:
            raise ConfigError(f"cup {cup_id} lacks migrations {missing}: run `smallcups init`")
    stores = await asyncio.gather(
        *(open_store(cup_id, dsn, config) for cup_id, dsn in sorted(shard_map.cups.items()))
    )
    return {store.cup_id: store for store in stores}


async def connect_cups(shard_map: ShardMap, config: ShardsConfig) -> dict[int, CupAdmin]:
    """One administrative connection per cup of the map (reconcile, tests)."""
    admins = await asyncio.gather(
        *(connect_cup(dsn, config) for dsn in shard_map.cups.values()),
        return_exceptions=True,
    )
    opened = [a for a in admins if not isinstance(a, BaseException)]
    failed = [a for a in admins if isinstance(a, BaseException)]
    if failed:
        await close_cups(dict(enumerate(opened)))
        raise failed[0]
    return dict(zip(shard_map.cups, opened, strict=True))


async def close_cups(cups: Mapping[int, CupStore | CupAdmin]) -> None:
    await asyncio.gather(*(cup.close() for cup in cups.values()))
