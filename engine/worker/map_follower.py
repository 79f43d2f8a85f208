"""Following the shard map: each new version is adopted by the worker, between batches.

The follower reads the map's version, waits for a change (a notification, or the poll
interval ``worker.shard_map_poll_seconds``: notifications are lost while disconnected),
opens the stores of new cups, then hands the new map on. A lost connection to the
control database backs off and reconnects, and reads the version again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from engine.core.backoff import Backoff
from engine.core.errors import InfrastructureError
from engine.core.records import ShardMap
from engine.core.store import ShardMapWatch

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_FIRST_SECONDS: Final = 0.1
RECONNECT_BACKOFF_MAX_SECONDS: Final = 5.0


class MapFollower:
    def __init__(
        self,
        watch: Callable[[], Awaitable[ShardMapWatch]],
        shard_map: ShardMap,
        open_cups: Callable[[ShardMap], Awaitable[None]],
        adopt: Callable[[ShardMap], Awaitable[None]],
        poll_seconds: float,
    ):
        self._watch = watch
        self.version = shard_map.version
        self._open_cups = open_cups
        """Opens the stores of the map's cups that are not open yet."""
        self._adopt = adopt
        self._poll_seconds = poll_seconds

    async def run(self) -> None:
        """Follow until cancelled."""
        backoff = Backoff(RECONNECT_BACKOFF_FIRST_SECONDS, RECONNECT_BACKOFF_MAX_SECONDS)
        while True:
            try:
                watch = await self._watch()
            except InfrastructureError as error:
                log.warning("shard map follower: %s; retrying", error)
                await asyncio.sleep(backoff.next())
                continue
            try:
                backoff.reset()
                await self._follow(watch)
            except InfrastructureError as error:
                log.warning("shard map follower lost the control database: %s", error)
            finally:
                await watch.close()

    async def _follow(self, watch: ShardMapWatch) -> None:
        while True:
            if await watch.version() != self.version:
                shard_map = await watch.load()
                await self._open_cups(shard_map)
                await self._adopt(shard_map)
                self.version = shard_map.version
                log.info(
                    "shard map version %d: %d paused partitions",
                    shard_map.version,
                    len(shard_map.paused),
                )
            await watch.changed(self._poll_seconds)
