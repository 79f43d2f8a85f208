"""The lifecycle of each partition Kafka assigned to a worker: one phase per partition.

::

    (assigned) ──▶ OWNED ◀──────▶ WAITING       OWNED: claimed in its cup, its lane runs
                     │  ▲            │          WAITING: lost (fenced, the cup failed, a
                     ▼  │            ▼                   publish failed): claimed again
                    PARKED ◀─────────┘                   once its back-off has passed
                                                PARKED: paused by the shard map (a move):
    any phase ──(revoked)──▶ gone                       not claimed, not fetched

Pure: the worker asks which partitions are due for a claim and tells the phases what
happened; every transition is checked against the table below, so a partition is
never, say, owned twice or claimed while parked. Back-offs are per cup (a cup that
refused a claim is not asked again for any of its partitions before its back-off ends)
and per partition (after a failed publish, the broker gets a moment).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Final

from engine.core.backoff import Backoff
from engine.core.errors import invariant


class Phase(enum.Enum):
    OWNED = "owned"
    WAITING = "waiting"
    PARKED = "parked"


_ALLOWED: Final = frozenset(
    {
        (None, Phase.OWNED),
        (None, Phase.WAITING),
        (None, Phase.PARKED),
        (Phase.OWNED, Phase.WAITING),
        (Phase.OWNED, Phase.PARKED),
        (Phase.WAITING, Phase.OWNED),
        (Phase.WAITING, Phase.WAITING),
        (Phase.WAITING, Phase.PARKED),
        (Phase.PARKED, Phase.OWNED),
        (Phase.PARKED, Phase.WAITING),
        (Phase.PARKED, Phase.PARKED),
    }
)
"""(from, to) transitions; None is a partition not (yet, or no longer) assigned."""

CLAIM_BACKOFF_FIRST_SECONDS: Final = 0.5
"""First wait before asking a cup that refused a claim again (it doubles from there)."""


class PartitionPhases:
    def __init__(self, backoff_max_seconds: float):
        self._phase: dict[int, Phase] = {}
        self._retry_at: dict[int, float] = {}
        self._cup_retry_at: dict[int, float] = {}
        self._cup_backoff: dict[int, Backoff] = {}
        self._backoff_max_seconds = backoff_max_seconds

    def phase(self, partition: int) -> Phase | None:
        return self._phase.get(partition)

    def assigned(self) -> frozenset[int]:
        return frozenset(self._phase)

    def in_phase(self, phase: Phase) -> list[int]:
        return sorted(p for p, current in self._phase.items() if current is phase)

    def set(self, partition: int, phase: Phase) -> None:
        """Move ``partition`` to ``phase``, which must be allowed from where it is."""
        current = self._phase.get(partition)
        invariant((current, phase) in _ALLOWED, f"partition {partition}: {current} -> {phase}")
        self._phase[partition] = phase
        if phase is not Phase.WAITING:
            self._retry_at.pop(partition, None)

    def wait(self, partition: int, until: float = 0.0) -> None:
        """Lost: claim it again, not before ``until`` (monotonic seconds)."""
        self.set(partition, Phase.WAITING)
        self._retry_at[partition] = max(until, self._retry_at.get(partition, 0.0))

    def revoke(self, partitions: Iterable[int]) -> None:
        """Kafka took them away: forgotten, whatever their phase."""
        for partition in partitions:
            self._phase.pop(partition, None)
            self._retry_at.pop(partition, None)

    def claimed_in(self, cup: int) -> None:
        """A claim in ``cup`` succeeded: its next failure backs off from the start."""
        backoff = self._cup_backoff.get(cup)
        if backoff is not None:
            backoff.reset()
        self._cup_retry_at.pop(cup, None)

    def claim_failed_in(self, cup: int, now: float) -> None:
        """A claim in ``cup`` failed: none of its partitions is tried before a back-off."""
        backoff = self._cup_backoff.setdefault(
            cup, Backoff(CLAIM_BACKOFF_FIRST_SECONDS, self._backoff_max_seconds)
        )
        self._cup_retry_at[cup] = now + backoff.next()

    def due(self, now: float, cup_of: Mapping[int, int], paused: frozenset[int]) -> list[int]:
        """Waiting partitions whose back-off (theirs and their cup's) has passed and that
        the shard map does not pause."""
        return [
            partition
            for partition in self.in_phase(Phase.WAITING)
            if partition not in paused
            and now >= self._retry_at.get(partition, 0.0)
            and now >= self._cup_retry_at.get(cup_of[partition], 0.0)
        ]
