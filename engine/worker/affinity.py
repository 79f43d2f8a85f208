"""Restoring cup affinity after moves: ask the consumer group to rebalance once the
shard map has been quiet for a while after a flip.

A move's flip leaves the moved partition with the worker that held it, in a cup that
worker may not otherwise serve; only a group rebalance lets the leader assign by cup
again. aiokafka's rebalances are eager (every partition is handed over and claimed
again), so a rebalance in the middle of a series of moves (``shards rebalance``,
``shards drain``) would stretch the next move's pause to the rebalance's length, once
per move. Instead the worker that saw a flip of a partition it owns waits until the map
has not changed for ``worker.rebalance_on_flip_quiet_seconds`` (every new version
restarts the wait), then asks once: a series of moves costs one rebalance, at its end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from engine.core.errors import ConfigError

log = logging.getLogger(__name__)


class FlipRebalance:
    def __init__(self, request: Callable[[], None], *, enabled: bool, quiet_seconds: float):
        if quiet_seconds < 0:
            raise ConfigError(f"the quiet time must be >= 0 s, got {quiet_seconds}")
        self._request = request
        self._enabled = enabled
        self._quiet_seconds = quiet_seconds
        self._flipped: list[int] = []
        """Partitions flipped since the last request (for the log)."""
        self._timer: asyncio.TimerHandle | None = None

    def map_changed(self, flipped: Sequence[int]) -> None:
        """A new map version, which flipped ``flipped`` of this worker's partitions."""
        if not self._enabled:
            return
        self._flipped.extend(flipped)
        if not self._flipped:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._quiet_seconds, self._fire)

    def cancel(self) -> None:
        """The worker stops: no rebalance is asked any more."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flipped = []

    @property
    def pending(self) -> bool:
        return self._timer is not None

    def _fire(self) -> None:
        flipped, self._flipped, self._timer = sorted(set(self._flipped)), [], None
        log.info("partitions %s moved to another cup: asking for a rebalance", flipped)
        self._request()
