"""What archiving needs of one cup's journal, whatever its database: the partitions by
period, their rows in a fixed order, and the step that carries a period's sums into
``journal_openings`` and drops it (shards/migrations/postgres/0010 and mysql/0007 say how
the journal is partitioned). shards.postgres.journal_periods and
shards.mysql.journal_periods implement it; engine.admin.archive drives it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Final, NamedTuple, Protocol

from engine.core.periods import AccountSum

ARCHIVE_ROWS_PER_CHUNK: Final = 5_000
"""Journal rows read at a time by an export (bounded memory)."""
OPENINGS_PER_STATEMENT_MAX: Final = 1_000
DDL_LOCK_WAIT_SECONDS: Final = 2
"""How long a partition's DDL waits for the journal's lock before it gives up (and is
tried again later): while it waits, every commit of the cup waits behind it."""


class JournalRow(NamedTuple):
    """A journal row as an archive file holds it (one JSON object per line)."""

    partition: int
    src_offset: int
    command_id: str
    customer_id: int
    account_no: int
    currency: str
    amount: int
    booked_at: datetime


ROW_ORDER: Final = ", ".join(JournalRow._fields)
"""An export's order: by Kafka partition and offset, then every column (deterministic)."""


class JournalPeriods(Protocol):
    async def partition_ends(self) -> list[int]:
        """The end (seconds since the epoch) of every period partition of the journal."""
        ...

    async def make_partitions(self, now_s: int, period_seconds: int) -> list[int]:
        """Make the partitions of the current and the next period if missing (under a lock:
        the workers of a cup race); the ends made."""
        ...

    async def adopt_strays(self) -> int:
        """Rows of the catch-all booked before the first period partition (a move's rows of
        a period archived here already) move to a partition of their own, archived like
        any other; the rows moved."""
        ...

    async def catch_all_rows(self) -> int:
        """Rows in the catch-all partition (booked after every period made so far)."""
        ...

    def rows(self, end: int) -> AsyncIterator[list[JournalRow]]:
        """The rows of the partition ending at ``end``, in ROW_ORDER, in chunks."""
        ...

    async def carry_and_drop(
        self, end: int, rows: int, sums: Sequence[AccountSum], after_carry: Callable[[], None]
    ) -> None:
        """Add the period's sums to journal_openings (a sum recorded already is not added
        twice, and must be equal), call ``after_carry``, then drop the partition; refuse
        when it no longer holds ``rows`` rows."""
        ...
