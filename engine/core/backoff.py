"""Back-off: the delays between tries of something that fails for a passing reason.

One small helper for every retry loop (a commit, a claim, a reconnect, a new producer):
each failed try waits longer, doubling from ``first_seconds`` up to ``max_seconds``;
a success starts over. Pure: it computes delays, the caller sleeps.
"""

from __future__ import annotations

from engine.core.errors import ConfigError


class Backoff:
    def __init__(self, first_seconds: float, max_seconds: float, factor: float = 2.0):
        if not 0 < first_seconds <= max_seconds:
            raise ConfigError(f"back-off from {first_seconds} s up to {max_seconds} s")
        if factor < 1:
            raise ConfigError(f"a back-off factor of {factor} would shrink")
        self.first_seconds = first_seconds
        self.max_seconds = max_seconds
        self.factor = factor
        self._next = first_seconds

    def next(self) -> float:
        """The delay before the next try (and the one after it grows)."""
        delay = self._next
        self._next = min(self._next * self.factor, self.max_seconds)
        return delay

    def reset(self) -> None:
        """A try succeeded: the next failure waits ``first_seconds`` again."""
        self._next = self.first_seconds
