"""A Postgres cup's journal periods (shards.journal_periods.JournalPeriods): declarative
partitions ``journal_<end>`` and the catch-all ``journal_default`` (migration 0010).

Archiving a period is one transaction: its sums go into journal_openings and its
partition is dropped together, so a crash leaves either both or neither. Each DDL takes
the journal's ACCESS EXCLUSIVE lock for the time of a catalog change (a commit waits
that long); it waits at most DDL_LOCK_WAIT_SECONDS for a long reader before it gives up.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Final

import asyncpg

from engine.core.errors import invariant
from engine.core.periods import AccountSum, ends_to_make
from shards.journal_periods import (
    ARCHIVE_ROWS_PER_CHUNK,
    DDL_LOCK_WAIT_SECONDS,
    OPENINGS_PER_STATEMENT_MAX,
    ROW_ORDER,
    JournalRow,
)

_PARTITION: Final = re.compile(r"journal_(\d+)")
_MAKE_LOCK: Final = 0x5C0FFEF
"""Transaction advisory lock of the workers that make a cup's next partitions."""

_PARTITIONS: Final = """
SELECT c.relname,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \\(''([^'']+)''\\)')::timestamptz
           AS low
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'journal'::regclass
"""

_CARRY: Final = """
INSERT INTO journal_openings
    (partition, customer_id, account_no, currency, period_end, amount, row_count)
SELECT p, c, a, cur, to_timestamp($1), amount, n
FROM unnest($2::integer[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[])
    AS s(p, c, a, cur, amount, n)
ON CONFLICT DO NOTHING
"""

_DIFFERING: Final = """
SELECT count(*) FROM unnest($2::integer[], $3::bigint[], $4::bigint[], $5::text[],
                            $6::bigint[], $7::bigint[]) AS s(p, c, a, cur, amount, n)
LEFT JOIN journal_openings o ON o.partition = s.p AND o.customer_id = s.c
    AND o.account_no = s.a AND o.currency = s.cur AND o.period_end = to_timestamp($1)
WHERE o.amount IS DISTINCT FROM s.amount OR o.row_count IS DISTINCT FROM s.n
"""


class PostgresJournalPeriods:
    def __init__(self, connection: asyncpg.Connection):
        self.connection = connection

    async def _partitions(self) -> dict[int, datetime | None]:
        """Each period partition's end and its range's start (None: MINVALUE)."""
        found: dict[int, datetime | None] = {}
        for row in await self.connection.fetch(_PARTITIONS):
            match = _PARTITION.fullmatch(row["relname"])
            if match:
                found[int(match[1])] = row["low"]
        return found

    async def partition_ends(self) -> list[int]:
        return sorted(await self._partitions())

    async def make_partitions(self, now_s: int, period_seconds: int) -> list[int]:
        async with self.connection.transaction():
            await self.connection.execute("SELECT pg_advisory_xact_lock($1)", _MAKE_LOCK)
            await self.connection.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_WAIT_SECONDS}s'")
            ends = await self.partition_ends()
            made = ends_to_make(ends, now_s, period_seconds)
            start = max(ends, default=None)
            for end in made:
                await self.connection.execute("SELECT journal_add_partition($1, $2)", start, end)
                start = end
        return made

    async def adopt_strays(self) -> int:
        partitions = await self._partitions()
        if not partitions:
            return 0
        low = partitions[min(partitions)]
        if low is None:
            return 0
        async with self.connection.transaction():
            await self.connection.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_WAIT_SECONDS}s'")
            strays: int = await self.connection.fetchval(
                "SELECT count(*) FROM journal_default WHERE booked_at < $1", low
            )
            if strays:
                end = int(low.timestamp())
                await self.connection.execute("SELECT journal_add_partition(NULL, $1)", end)
        return strays

    async def catch_all_rows(self) -> int:
        count: int = await self.connection.fetchval("SELECT count(*) FROM journal_default")
        return count

    async def rows(self, end: int) -> AsyncIterator[list[JournalRow]]:
        query = f"SELECT {ROW_ORDER} FROM journal_{int(end)} ORDER BY {ROW_ORDER}"
        async with self.connection.transaction(isolation="repeatable_read", readonly=True):
            cursor = await self.connection.cursor(query)
            while chunk := await cursor.fetch(ARCHIVE_ROWS_PER_CHUNK):
                yield [JournalRow(*r.values()) for r in chunk]

    async def carry_and_drop(
        self, end: int, rows: int, sums: Sequence[AccountSum], after_carry: Callable[[], None]
    ) -> None:
        table = f"journal_{int(end)}"
        async with self.connection.transaction():
            await self.connection.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_WAIT_SECONDS}s'")
            await self.connection.execute(f"LOCK TABLE {table} IN SHARE MODE")
            held: int = await self.connection.fetchval(f"SELECT count(*) FROM {table}")
            invariant(held == rows, f"{table} holds {held} rows, the export {rows}: run again")
            for at in range(0, len(sums), OPENINGS_PER_STATEMENT_MAX):
                chunk = sums[at : at + OPENINGS_PER_STATEMENT_MAX]
                columns = [list(column) for column in zip(*chunk, strict=True)]
                await self.connection.execute(_CARRY, end, *columns)
                differing = await self.connection.fetchval(_DIFFERING, end, *columns)
                invariant(differing == 0, f"{table}: openings recorded before differ")
            after_carry()
            await self.connection.execute(f"DROP TABLE {table}")
