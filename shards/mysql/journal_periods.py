"""A MariaDB/MySQL cup's journal periods (shards.journal_periods.JournalPeriods): RANGE
COLUMNS partitions ``p<end>`` and the catch-all ``p_max`` (migration 0007).

MySQL commits each DDL statement on its own, so archiving a period is two steps, each
safe to repeat: (1) statements add the period's sums to journal_openings (a sum recorded
already is kept, and checked equal); (2) DROP PARTITION. A crash between them leaves the
partition with its rows and their sums: the balance checks count a row booked before
its account's last opening in the opening, not twice, and the next archive exports the
same rows again (the same file), finds the sums recorded and drops the partition. The
first partition also holds any row booked before it (a move's rows of a period archived
here already): they are archived with it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import asyncmy
from asyncmy.cursors import SSCursor

from engine.core.errors import invariant
from engine.core.periods import AccountSum, ends_to_make
from shards.journal_periods import (
    ARCHIVE_ROWS_PER_CHUNK,
    DDL_LOCK_WAIT_SECONDS,
    OPENINGS_PER_STATEMENT_MAX,
    JournalRow,
)
from shards.mysql.driver import run, text

_PARTITION: Final = re.compile(r"p(\d+)")
_MAKE_LOCK: Final = "smallcups_journal_partitions"
_ROW_ORDER: Final = ", ".join(f"`{column}`" for column in JournalRow._fields)
"""shards.journal_periods.ROW_ORDER, quoted (`partition` is a reserved word)."""


def _moment(at_s: int) -> str:
    return text(datetime.fromtimestamp(at_s, UTC).strftime("%Y-%m-%d %H:%M:%S"))


def _partition_sql(end: int) -> str:
    return f"PARTITION p{int(end)} VALUES LESS THAN ({_moment(end)})"


def _row(row: tuple[Any, ...]) -> JournalRow:
    partition, src_offset, command_id, customer, account, currency, amount, booked_at = row
    return JournalRow(
        partition,
        src_offset,
        command_id,
        customer,
        account,
        currency,
        amount,
        booked_at.replace(tzinfo=UTC),
    )


class MysqlJournalPeriods:
    def __init__(self, connection: asyncmy.Connection):
        self.connection = connection

    async def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        return (await run(self.connection, sql))[0]

    async def partition_ends(self) -> list[int]:
        rows = await self._rows(
            "SELECT PARTITION_NAME FROM information_schema.PARTITIONS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'journal'"
        )
        return sorted(int(m[1]) for (name,) in rows if (m := _PARTITION.fullmatch(name or "")))

    async def make_partitions(self, now_s: int, period_seconds: int) -> list[int]:
        locked = await self._rows(f"SELECT GET_LOCK({text(_MAKE_LOCK)}, {DDL_LOCK_WAIT_SECONDS})")
        if locked != [(1,)]:
            return []  # another worker is making them: its next pass checks again
        try:
            made = ends_to_make(await self.partition_ends(), now_s, period_seconds)
            if made:
                parts = ", ".join(_partition_sql(end) for end in made)
                await run(
                    self.connection,
                    f"SET STATEMENT lock_wait_timeout = {DDL_LOCK_WAIT_SECONDS} FOR"
                    f" ALTER TABLE journal REORGANIZE PARTITION p_max INTO ({parts},"
                    " PARTITION p_max VALUES LESS THAN (MAXVALUE))",
                )
        finally:
            await run(self.connection, f"DO RELEASE_LOCK({text(_MAKE_LOCK)})")
        return made

    async def adopt_strays(self) -> int:
        """Nothing to do: the first partition holds the rows booked before it."""
        return 0

    async def catch_all_rows(self) -> int:
        return int((await self._rows("SELECT COUNT(*) FROM journal PARTITION (p_max)"))[0][0])

    async def rows(self, end: int) -> AsyncIterator[list[JournalRow]]:
        async with self.connection.cursor(SSCursor) as cursor:
            await cursor.execute(
                f"SELECT {_ROW_ORDER} FROM journal PARTITION (p{int(end)}) ORDER BY {_ROW_ORDER}"
            )
            while chunk := await cursor.fetchmany(ARCHIVE_ROWS_PER_CHUNK):
                yield [_row(row) for row in chunk]

    async def carry_and_drop(
        self, end: int, rows: int, sums: Sequence[AccountSum], after_carry: Callable[[], None]
    ) -> None:
        p = f"p{int(end)}"
        held = await self._rows(f"SELECT COUNT(*) FROM journal PARTITION ({p})")
        invariant(held[0][0] == rows, f"{p} holds {held[0][0]} rows, the export {rows}: run again")
        moment = _moment(end)
        for at in range(0, len(sums), OPENINGS_PER_STATEMENT_MAX):
            chunk = sums[at : at + OPENINGS_PER_STATEMENT_MAX]
            values = ",".join(
                f"({int(s.partition)},{int(s.customer)},{int(s.account)},{text(s.currency)},"
                f"{moment},{int(s.amount)},{int(s.rows)})"
                for s in chunk
            )
            await run(
                self.connection,
                "INSERT INTO journal_openings (`partition`, customer_id, account_no, currency,"
                f" period_end, amount, row_count) VALUES {values}"
                " ON DUPLICATE KEY UPDATE amount = amount",
            )
            wanted = {
                (s.partition, s.customer, s.account, s.currency): (s.amount, s.rows) for s in chunk
            }
            keys = " OR ".join(
                f"(`partition` = {int(s.partition)} AND customer_id = {int(s.customer)}"
                f" AND account_no = {int(s.account)})"
                for s in chunk
            )
            recorded = await self._rows(
                "SELECT `partition`, customer_id, account_no, currency, amount, row_count"
                f" FROM journal_openings WHERE period_end = {moment} AND ({keys})"
            )
            found = {(p_, c, a, cur): (amount, n) for p_, c, a, cur, amount, n in recorded}
            invariant(found == wanted, f"{p}: openings recorded before differ")
        after_carry()
        await run(
            self.connection,
            f"SET STATEMENT lock_wait_timeout = {DDL_LOCK_WAIT_SECONDS} FOR"
            f" ALTER TABLE journal DROP PARTITION {p}",
        )
