"""The domain records the stores and the Kafka side share: what a commit writes, what the
outbox holds, a partition's claim, the shard map.

Pure data: the core defines them, the stores (shards/) read and write them, the relay
publishes them; neither side imports the other for them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from engine.core.book import Outcome


class OutboxKind(enum.IntEnum):
    RESULT = 1
    DEAD_LETTER = 2
    LEG = 3
    FORWARD = 4
    """A command published to the wrong partition, to publish again to its customer's
    (the value is an engine.core.messages.Forwarded)."""


class OutboxRow(msgspec.Struct, frozen=True, gc=False):
    """A message to publish after the commit: to which topic kind and partition.

    A struct untracked by the cyclic collector, like the ledger's records
    (engine.core.book): its fields hold no references back to it."""

    src_offset: int
    seq: int
    kind: OutboxKind
    key: bytes | None
    value: bytes
    target_partition: int


class InputTopics(NamedTuple):
    """The two topics a partition's input comes from, in ``Position``'s order."""

    commands: str
    internal: str


class Position(NamedTuple):
    """Where a partition's input stands: the next offset to take from the commands topic
    and from the internal topic."""

    commands: int
    internal: int

    def of(self, internal: bool) -> int:
        """The next offset to take from the internal topic, or else the commands topic."""
        return self.internal if internal else self.commands

    @property
    def seq(self) -> int:
        """The partition's input place: every record taken moves one of the offsets up by
        one at least, so this only grows, record after record (it orders the outbox)."""
        return self.commands + self.internal


class Claim(NamedTuple):
    """A partition's state in its cup: the owner's epoch and where its two inputs
    resume (docs/design.md §3): the next offset of the commands topic and of the
    internal topic."""

    epoch: int
    next_offset: int
    internal_offset: int
    expired_before_ms: int = 0
    """The partition's idempotency horizon (engine.core.ledger.PartitionLedger)."""

    @property
    def position(self) -> Position:
        return Position(self.next_offset, self.internal_offset)

    @property
    def fence(self) -> tuple[int, int, int]:
        """What a commit's compare-and-set checks: the epoch and both offsets."""
        return (self.epoch, self.next_offset, self.internal_offset)


class InFlightFigures(NamedTuple):
    currency: str
    transfers: int
    money: int
    stuck: int


class CommitStatus(enum.Enum):
    COMMITTED = "committed"
    FENCED = "fenced"
    DUPLICATES = "duplicates"


@dataclass(frozen=True, slots=True)
class CommitBatch:
    """Everything one partition batch writes, already decided."""

    partition: int
    epoch: int
    expected_offset: int
    next_offset: int
    expected_internal: int
    """The internal topic's offset the batch starts at (the cup's ``internal_offset``)."""
    next_internal: int
    outcome: Outcome
    applied_results: Sequence[bytes]
    final_results: Sequence[bytes]
    outbox: Sequence[OutboxRow]
    trim_below_offset: int
    trim_from_offset: int
    """The outbox rows below this were deleted before (the trim's lower bound)."""


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
