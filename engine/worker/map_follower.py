"""Following the shard map: LISTEN for new versions, poll as a fallback, reconnect.

Movers NOTIFY ``smallcups_shard_map`` in the transaction that changes the map, so a
worker usually learns of a pause or a flip within milliseconds. Notifications are lost
while the connection is down, hence the poll of the version every
``worker.shard_map_poll_seconds`` and a fresh read after every reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from engine.core.config import Config
from engine.core.errors import InfrastructureError
from engine.core.records import ShardMap
from engine.worker.partition import RETRIABLE
from shards.control import MAP_CHANNEL, connect, load_shard_map
from shards.cups import open_cups
from shards.store import CupStore

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_MAX_SECONDS = 5.0


class MapFollower:
    """Reads each new map version, opens pools for new cups, hands the map on."""

    def __init__(
        self,
        config: Config,
        shard_map: ShardMap,
        stores: dict[int, CupStore],
        adopt: Callable[[ShardMap], Awaitable[None]],
    ):
        self.config = config
        self.version = shard_map.version
        self.stores = stores
        """The worker's stores: pools of new cups are added here, closed by the service."""
        self.adopt = adopt
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Follow until cancelled; connection faults back off and reconnect."""
        backoff = 0.1
        while True:
            try:
                control = await connect(
                    self.config.control_dsn, self.config.shards.connect_timeout_seconds
                )
            except InfrastructureError as error:
                log.warning("shard map follower: %s; retrying", error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_SECONDS)
                continue
            try:
                await control.add_listener(MAP_CHANNEL, self._notified)
                backoff = 0.1
                await self._follow(control)
            except (*RETRIABLE, InfrastructureError) as error:
                log.warning("shard map follower lost the control database: %s", error)
            finally:
                with contextlib.suppress(*RETRIABLE):
                    await control.close()

    async def _follow(self, control: asyncpg.Connection) -> None:
        poll_seconds = self.config.worker.shard_map_poll_seconds
        while True:
            self._wake.clear()
            version = await control.fetchval("SELECT version FROM shard_map_version")
            if version != self.version:
                await self._refresh(control)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll_seconds)

    async def _refresh(self, control: asyncpg.Connection) -> None:
        shard_map = await load_shard_map(control)
        new_cups = {c: d for c, d in shard_map.cups.items() if c not in self.stores}
        if new_cups:
            subset = ShardMap(shard_map.version, shard_map.partitions, "", new_cups, {})
            self.stores.update(await open_cups(subset, self.config.shards))
            log.info("opened new cups %s", sorted(new_cups))
        await self.adopt(shard_map)
        self.version = shard_map.version
        log.info(
            "shard map version %d: %d paused partitions", shard_map.version, len(shard_map.paused)
        )

    def _notified(self, connection: object, pid: int, channel: str, payload: object) -> None:
        self._wake.set()
