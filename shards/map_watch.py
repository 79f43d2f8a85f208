"""Following the shard map in the control database: LISTEN for new versions, poll as a
fallback (engine.core.store.ShardMapWatch).

Movers NOTIFY ``smallcups_shard_map`` in the transaction that changes the map, so a
worker usually learns of a pause or a flip within milliseconds. Notifications are lost
while the connection is down, hence the caller's poll of the version and a fresh read
after every reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from engine.core.config import ShardsConfig
from engine.core.errors import InfrastructureError
from engine.core.records import ShardMap
from shards.control import MAP_CHANNEL, connect, load_shard_map
from shards.postgres.store import RETRIABLE


class PostgresMapWatch:
    def __init__(self, connection: asyncpg.Connection):
        self._connection = connection
        self._wake = asyncio.Event()

    @classmethod
    async def open(cls, dsn: str, config: ShardsConfig) -> PostgresMapWatch:
        connection = await connect(dsn, config)
        watch = cls(connection)
        try:
            await connection.add_listener(MAP_CHANNEL, watch._notified)
        except RETRIABLE as error:
            await watch.close()
            raise InfrastructureError(f"control database: {type(error).__name__}") from error
        return watch

    async def version(self) -> int:
        """The map's version now; a notification from here on wakes ``changed``."""
        self._wake.clear()
        try:
            version: int = await self._connection.fetchval("SELECT version FROM shard_map_version")
        except RETRIABLE as error:
            raise InfrastructureError(f"control database: {type(error).__name__}") from error
        return version

    async def load(self) -> ShardMap:
        try:
            return await load_shard_map(self._connection)
        except RETRIABLE as error:
            raise InfrastructureError(f"control database: {type(error).__name__}") from error

    async def changed(self, timeout_seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_seconds)

    async def close(self) -> None:
        with contextlib.suppress(*RETRIABLE):
            await self._connection.close()

    def _notified(self, connection: object, pid: int, channel: str, payload: object) -> None:
        self._wake.set()
