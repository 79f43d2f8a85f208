"""What the tools need of one cup, whatever its database: the schema, the steps of a
move, the copy of a partition, the reads of reconcile and of the inventory.

The worker's hot path goes through engine.core.store.CupStore; this is the other
side: one administrative connection to a cup (``shards.backends.connect_cup``), used by
``smallcups init``, ``shards``, ``reconcile`` and the tests. shards.postgres.admin and
shards.mysql.admin implement it; shards.moves, shards.partition_copy, shards.audit and
shards.cluster are written against it only, so a cluster may mix both kinds and move
partitions between them.

Rows cross between the two kinds in one canonical shape (``Row``): integers, ``str``,
``bytes``, ``bool``, None, and timestamps as timezone-aware UTC datetimes.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

Value = int | str | bytes | bool | datetime | None
Row = tuple[Value, ...]

COPY_ROWS_PER_CHUNK = 2_000
"""Rows read and written at a time when a partition is copied (bounded memory)."""
CLEARING_ROWS_PER_CHUNK = 5_000
"""Clearing entries read at a time by a partner's statement (bounded memory)."""


class CupKind(enum.StrEnum):
    POSTGRES = "postgres"
    MYSQL = "mysql"


class StateRow(NamedTuple):
    """A partition's state row: its epoch, where its worker resumes in the commands topic
    (``next_offset``) and in the internal topic (``internal_offset``), whether it is
    frozen by a move, and its idempotency horizon (a move carries it, so the new owner
    refuses what the old one expired)."""

    epoch: int
    next_offset: int
    internal_offset: int
    frozen: bool
    expired_before_ms: int = 0


class Holdings(NamedTuple):
    """The rows a cup holds for some partitions: what ``shards list`` prints."""

    accounts: int
    journal_rows: int
    transfers_in_flight: int
    idempotency_records: int


class Footprint(NamedTuple):
    """How full a cup is: what ``shards list`` prints."""

    size_bytes: int
    """On disk: the cup's tables with their indexes (Postgres: pg_total_relation_size of
    every table of the schema; MariaDB: data_length + index_length)."""
    rows_estimated: int
    """The planner's row estimate over all the cup's tables (as of the last ANALYZE)."""


class CurrencyTotals(NamedTuple):
    currency: str
    customers: int
    clearing: int
    cash: int
    accounts: int


class OffJournal(NamedTuple):
    """An account whose balance is not the sum of its journal rows (balance None: the
    journal has rows of an account that does not exist)."""

    partition: int
    customer: int
    account: int
    balance: int | None
    journal_total: int


class ClosedWithMoney(NamedTuple):
    partition: int
    customer: int
    account: int
    balance: int


class StuckTransfer(NamedTuple):
    partition: int
    transfer_id: str
    amount: int
    currency: str
    age_seconds: int


class FlightRow(NamedTuple):
    """A transfer in flight as a cup holds it: where it was debited, who pays whom."""

    partition: int
    transfer_id: str
    payer: int
    payee: int
    amount: int
    currency: str


class ClearingRow(NamedTuple):
    """A clearing entry as a cup holds it (engine.core.book.ClearingEntry). Its first six
    fields are the order of a partner's statement, and unique: the last three are the
    row's key. Loan and command ids are ASCII, ordered byte for byte."""

    loan: str
    """The loan's id ("" for a day's net)."""
    kind: int
    command: str
    partition: int
    src_offset: int
    entry: int
    customer: int
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class Selection:
    """Which of a partition's rows of a table a copy takes (shards.partition_copy): those
    with an input place (``src_offset``) below ``below`` and at or above ``since``, or
    (command results) whose command id is one of ``ids``. The default: every row."""

    below: int | None = None
    since: int | None = None
    ids: tuple[str, ...] = ()

    def condition(self, in_ids: Callable[[tuple[str, ...]], str]) -> str:
        """The SQL condition, ``in_ids`` writing "command_id is one of these" for the
        cup's dialect. Offsets are integers, written as literals."""
        places = []
        if self.below is not None:
            places.append(f"src_offset < {int(self.below)}")
        if self.since is not None:
            places.append(f"src_offset >= {int(self.since)}")
        where = " AND ".join(places) or "TRUE"
        return f"({where} OR {in_ids(self.ids)})" if self.ids else where


class PartitionSnapshot(Protocol):
    """One partition of a source cup, read from one consistent snapshot."""

    state: StateRow | None
    columns: dict[str, list[str]]
    """The columns, in order, of every table a move copies (partition_copy.TABLES)."""

    def rows(self, table: str, columns: Sequence[str]) -> AsyncIterator[list[Row]]:
        """The partition's rows of ``table``, in chunks of at most COPY_ROWS_PER_CHUNK."""
        ...


class CopySnapshot(PartitionSnapshot, Protocol):
    """A snapshot a move copies from: its rows, or some of them."""

    def selected(
        self, table: str, columns: Sequence[str], selection: Selection
    ) -> AsyncIterator[list[Row]]:
        """The partition's rows of ``table`` that ``selection`` takes, in chunks of at
        most COPY_ROWS_PER_CHUNK."""
        ...


class PartitionSink(Protocol):
    """The target side of a copy: one open transaction, committed on a clean exit."""

    async def pending_transfers(self) -> list[str]:
        """The ids of the partition's transfers in flight here (a pre-copy's)."""
        ...

    async def delete(self, table: str, selection: Selection) -> None:
        """The partition's rows of ``table`` that ``selection`` takes, here."""
        ...

    async def write(self, table: str, columns: Sequence[str], rows: list[Row]) -> None: ...

    async def write_state(
        self, epoch: int, next_offset: int, internal_offset: int, owner: str, expired_before_ms: int
    ) -> None:
        """The partition's state row, replacing any, frozen (the flip thaws it), both
        offsets and the idempotency horizon as the source's."""
        ...


class ClearingReads(Protocol):
    """What a partner's statement reads of a cup (shards.clearing_query)."""

    def clearing_entries(
        self, partner: int, day: int, partitions: Sequence[int]
    ) -> AsyncGenerator[list[ClearingRow], None]:
        """The partner's clearing entries of business day ``day`` (a day number) in
        ``partitions``, in ClearingRow order, from one query read in chunks of at most
        CLEARING_ROWS_PER_CHUNK."""
        ...

    async def partner_body(
        self, partner: int, partitions: Sequence[int]
    ) -> tuple[int, bytes] | None:
        """(partition, body) of the partner's credit_book row (CreditKind.PARTNER) in the
        first of ``partitions`` that has one; None when none has."""
        ...

    async def last_closed(self, partitions: Sequence[int]) -> dict[int, int]:
        """The last business day closed (a day number) of each of ``partitions`` whose
        calendar started (its credit_book row of CreditKind.CALENDAR)."""
        ...


class CupAdmin(ClearingReads, Protocol):
    """One administrative connection to a cup. Errors are the driver's: a tool reports
    them and stops (the worker's store is the side that retries)."""

    kind: CupKind

    async def close(self) -> None: ...

    async def migrate(self) -> list[str]:
        """Apply the missing migrations; the names applied now."""
        ...

    async def missing_migrations(self) -> list[str]: ...

    async def add_partitions(self, partitions: Sequence[int]) -> None:
        """A state row for each partition that has none."""
        ...

    async def holdings(self, partitions: Sequence[int]) -> Holdings: ...

    async def footprint(self) -> Footprint: ...

    async def live_partitions(self) -> list[int]:
        """Partitions with a row here that is not a tombstone: every one whose state row is
        not frozen, and the partition of one row of each table a move copies that has
        any (a sample, not a scan: cheap on a full cup). An empty cup has none."""
        ...

    async def table_columns(self) -> dict[str, list[str]]:
        """The columns of every table a move copies; refuses a cup with a table keyed by
        partition that moves would not copy."""
        ...

    async def state_row(self, partition: int) -> StateRow | None: ...

    async def fence(self, partition: int, owner: str) -> int | None:
        """Freeze the partition with a new epoch; its epoch, also when it was frozen
        already (a rerun); None when it has no state row here."""
        ...

    async def freeze(self, partition: int) -> None:
        """Freeze the partition's state row if it is not (an aborted move's target)."""
        ...

    async def thaw(self, partition: int, *, forget_owner: bool) -> int | None:
        """Thaw the partition's state row; its next offset in the commands topic (None: no
        row here)."""
        ...

    def snapshot(self, partition: int) -> AbstractAsyncContextManager[CopySnapshot]:
        """A read-only transaction on one consistent snapshot of the cup."""
        ...

    def receive(self, partition: int) -> AbstractAsyncContextManager[PartitionSink]:
        """A transaction that replaces rows of the partition here (shards.partition_copy
        deletes what it replaces first)."""
        ...

    async def delete_partition(self, partition: int, *, keep_tombstone: bool) -> None:
        """Every row of the partition, in one transaction; with ``keep_tombstone``, all but
        its frozen state row."""
        ...

    async def analyze(self) -> None:
        """Fresh planner statistics after rows arrived in bulk."""
        ...

    async def stray_partitions(self, owned: Sequence[int]) -> list[int]:
        """Partitions other than ``owned`` that have rows here (a frozen state row is a
        tombstone, not rows)."""
        ...

    async def currency_totals(
        self, partitions: Sequence[int], clearing: Sequence[int], cash: Sequence[int]
    ) -> list[CurrencyTotals]: ...

    async def journal_rows(self, partitions: Sequence[int]) -> int: ...

    async def off_journal(self, partitions: Sequence[int]) -> list[OffJournal]: ...

    async def unbalanced_journal(self, partitions: Sequence[int]) -> list[tuple[str, int]]:
        """(currency, sum) of each currency whose journal rows do not sum to zero."""
        ...

    async def applied_twice(self, partitions: Sequence[int]) -> list[tuple[int, str]]:
        """(partition, command id) of ids journaled from two different offsets."""
        ...

    async def closed_with_money(self, partitions: Sequence[int]) -> list[ClosedWithMoney]: ...

    async def stuck_transfers(
        self, partitions: Sequence[int], stuck_after_seconds: float
    ) -> list[StuckTransfer]: ...

    async def flights(self, partitions: Sequence[int]) -> list[FlightRow]: ...

    async def results_of(self, ids: Sequence[tuple[int, str]]) -> list[tuple[int, str, bytes]]:
        """(partition, command id, result) of those (partition, command id) recorded."""
        ...

    async def balances(self) -> dict[tuple[int, int, int], int]:
        """Every account's balance by (partition, customer, account)."""
        ...
