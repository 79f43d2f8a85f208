"""What the worker needs of a cup and of the shard map: the store protocols, in domain
records.

A cup is one database holding some partitions' accounts, journal, idempotency records,
outbox and claims. shards.postgres.store implements this for Postgres, shards.mysql.store
for MariaDB/MySQL. Every method is one round trip (or few), and raises only
the project's errors (engine.core.errors): ``CupUnavailableError`` for a fault that passes,
``InvariantError`` for what must not happen. A driver's exception never crosses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from engine.core.book import Account, AccountKey, CreditRow, InFlight, Known
from engine.core.records import (
    Claim,
    CommitBatch,
    CommitStatus,
    InFlightFigures,
    OutboxRow,
    ShardMap,
)


class CupStore(Protocol):
    @property
    def cup_id(self) -> int: ...

    async def claim(self, partition: int, owner: str) -> Claim:
        """Become the partition's writer: bump its epoch, fencing every earlier owner."""
        ...

    async def states(self, partitions: Sequence[int]) -> dict[int, Claim]:
        """The claim of each partition that has a state row here."""
        ...

    async def next_offsets(self) -> dict[int, int]:
        """The next offset of every partition this cup holds state for."""
        ...

    async def load_partition(self, partition: int, limit: int) -> list[Account]:
        """Up to ``limit`` accounts of the partition, system accounts first."""
        ...

    async def load_accounts(self, partition: int, keys: Sequence[AccountKey]) -> list[Account]: ...

    async def load_in_flight(self, partition: int) -> list[InFlight]:
        """Every transfer in flight out of the partition."""
        ...

    async def load_credit(self, partition: int) -> list[CreditRow]:
        """The partition's open credit rows: lines, open loans, open holds, its calendar."""
        ...

    async def load_known(self, partition: int, command_ids: Sequence[str]) -> dict[str, Known]:
        """The recorded results of those command ids that were applied."""
        ...

    async def commit_many(self, batches: Sequence[CommitBatch]) -> dict[int, CommitStatus]:
        """The fenced commit of batches of distinct partitions, in one transaction; each
        partition's fence holds or fails on its own."""
        ...

    async def unsent(self, partition: int) -> list[OutboxRow]:
        """The partition's outbox rows not trimmed yet, in order."""
        ...

    async def in_flight(
        self, partitions: Sequence[int], stuck_after_seconds: float
    ) -> list[InFlightFigures]: ...

    async def trim_outbox(
        self, partition: int, epoch: int, from_offset: int, below_offset: int
    ) -> None:
        """Delete published outbox rows (``from_offset`` <= src_offset < ``below_offset``),
        while ``epoch`` still owns the partition. The rows below ``from_offset`` were
        deleted before: not naming them keeps the delete off their dead index entries,
        which a busy outbox piles up faster than vacuum removes them."""
        ...

    async def advance_horizon(self, partition: int, epoch: int, horizon_ms: int) -> None:
        """Raise the partition's committed idempotency horizon to ``horizon_ms`` (never
        lower it), while ``epoch`` still owns the partition: an idle partition's horizon
        moves too. The owner refuses what is below ``horizon_ms`` before it calls this."""
        ...

    async def prune_expired(self, partition: int, rows_max: int) -> int:
        """Delete up to ``rows_max`` idempotency records of ``partition`` whose commands were
        issued before its committed horizon (``expired_before_ms``), except the PENDING
        records of transfers still in flight; returns how many went. Safe whoever runs it:
        the horizon is the committed one, and every owner refuses what it has passed."""
        ...

    async def make_journal_partitions(self, now_s: int, period_seconds: int) -> list[int]:
        """Make the journal's partitions of the current and the next period if missing
        (engine.core.periods); the ends made."""
        ...

    async def renew_connections(self) -> None:
        """After a fault: replace every pooled connection at its next use."""
        ...

    async def close(self) -> None: ...


class ShardMapWatch(Protocol):
    """The shard map as a worker follows it: its version, the map, and a wait for the next
    change. Raises InfrastructureError when the control database cannot be reached."""

    async def version(self) -> int:
        """The map's version now; a change after this call ends the next ``changed``."""
        ...

    async def load(self) -> ShardMap: ...

    async def changed(self, timeout_seconds: float) -> None:
        """Return when the map may have changed, or after ``timeout_seconds``."""
        ...

    async def close(self) -> None: ...
