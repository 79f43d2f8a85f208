"""The administrative side of a Postgres cup (shards.cup_admin.CupAdmin): one asyncpg
connection."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Final

import asyncpg

from engine.core.book import CreditKind
from engine.core.errors import invariant
from shards.cup_admin import (
    CLEARING_ROWS_PER_CHUNK,
    COPY_ROWS_PER_CHUNK,
    ClearingRow,
    ClosedWithMoney,
    CupKind,
    CurrencyTotals,
    FlightRow,
    Footprint,
    Holdings,
    OffJournal,
    Row,
    Selection,
    StateRow,
    StuckTransfer,
)
from shards.migrate import migrate, missing_migrations
from shards.partition_copy import TABLES, check_tables

_TOTALS: Final = """
SELECT currency,
       coalesce(sum(balance) FILTER (WHERE customer_id <> 0), 0) AS customers,
       coalesce(sum(balance) FILTER (WHERE customer_id = 0 AND account_no = ANY($1)), 0)
           AS clearing,
       coalesce(sum(balance) FILTER (WHERE customer_id = 0 AND account_no = ANY($2)), 0)
           AS cash,
       count(*) AS accounts
FROM accounts WHERE partition = ANY($3::integer[]) GROUP BY currency
"""

_BOOKS: Final = """
WITH opened AS (SELECT partition, customer_id, account_no, currency,
                       sum(amount) AS opening, max(period_end) AS opened_until
                FROM journal_openings WHERE partition = ANY($1::integer[])
                GROUP BY partition, customer_id, account_no, currency),
     kept AS (SELECT j.partition, j.customer_id, j.account_no, j.currency, sum(j.amount) AS total
              FROM journal j LEFT JOIN opened o USING (partition, customer_id, account_no, currency)
              WHERE j.partition = ANY($1::integer[])
                AND (o.opened_until IS NULL OR j.booked_at >= o.opened_until)
              GROUP BY j.partition, j.customer_id, j.account_no, j.currency),
     books AS (SELECT partition, customer_id, account_no, currency, sum(total) AS total
               FROM (SELECT partition, customer_id, account_no, currency, opening AS total
                     FROM opened UNION ALL SELECT * FROM kept) AS both_parts
               GROUP BY partition, customer_id, account_no, currency)
"""
"""Each account's books: its openings (the sums of its archived periods) and its journal
rows booked since the last of them (a row booked before is counted in an opening: it is
archived, or being archived)."""

_OFF_JOURNAL: Final = (
    _BOOKS
    + """
SELECT a.partition, a.customer_id, a.account_no, a.balance, coalesce(s.total, 0) AS total
FROM accounts a LEFT JOIN books s USING (partition, customer_id, account_no)
WHERE a.partition = ANY($1::integer[]) AND a.balance <> coalesce(s.total, 0)
UNION ALL
SELECT s.partition, s.customer_id, s.account_no, NULL, s.total
FROM books s LEFT JOIN accounts a USING (partition, customer_id, account_no)
WHERE a.partition IS NULL
LIMIT 1000
"""
)

_STUCK: Final = """
SELECT partition, transfer_id, amount, currency,
       extract(epoch FROM now() - opened_at)::bigint AS age_seconds
FROM transfers_in_flight
WHERE partition = ANY($1::integer[]) AND opened_at < now() - make_interval(secs => $2)
ORDER BY opened_at LIMIT 1000
"""

_FOOTPRINT: Final = """
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint AS size_bytes,
       coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint AS rows_estimated
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind = 'r'
"""
"""Every ordinary table of the cup's schema, the partitions of a partitioned table too
(whose parent has no storage of its own)."""

_STRAY: Final = """
SELECT DISTINCT partition FROM (
    SELECT partition FROM partition_state WHERE NOT frozen
    UNION ALL SELECT partition FROM accounts
    UNION ALL SELECT partition FROM command_results) AS held
WHERE partition <> ALL($1::integer[])
"""


_CLEARING: Final = """
SELECT loan_id, kind, command_id, partition, src_offset, entry, customer_id, amount, currency
FROM clearing_entries
WHERE partner = $1 AND business_day = $2 AND partition = ANY($3::integer[])
ORDER BY loan_id COLLATE "C", kind, command_id COLLATE "C", partition, src_offset, entry
"""
"""A partner's day, byte order whatever the database's collation (ids are ASCII)."""


class PostgresCupAdmin:
    kind = CupKind.POSTGRES

    def __init__(self, connection: asyncpg.Connection):
        self.connection = connection

    async def close(self) -> None:
        await self.connection.close()

    async def migrate(self) -> list[str]:
        return await migrate(self.connection, "postgres")

    async def missing_migrations(self) -> list[str]:
        return await missing_migrations(self.connection, "postgres")

    async def add_partitions(self, partitions: Sequence[int]) -> None:
        await self.connection.executemany(
            "INSERT INTO partition_state (partition) VALUES ($1) ON CONFLICT DO NOTHING",
            [(p,) for p in partitions],
        )

    async def holdings(self, partitions: Sequence[int]) -> Holdings:
        row = await self.connection.fetchrow(
            "SELECT (SELECT count(*) FROM accounts WHERE partition = ANY($1)),"
            " (SELECT count(*) FROM journal WHERE partition = ANY($1)),"
            " (SELECT count(*) FROM transfers_in_flight WHERE partition = ANY($1)),"
            " (SELECT count(*) FROM command_results WHERE partition = ANY($1))",
            list(partitions),
        )
        return Holdings(*row.values())

    async def footprint(self) -> Footprint:
        row = await self.connection.fetchrow(_FOOTPRINT)
        return Footprint(int(row["size_bytes"]), int(row["rows_estimated"]))

    async def live_partitions(self) -> list[int]:
        held = " UNION ".join(f"(SELECT partition FROM {table} LIMIT 1)" for table in TABLES)
        rows = await self.connection.fetch(
            f"SELECT partition FROM partition_state WHERE NOT frozen UNION {held}"
            " ORDER BY partition"
        )
        return [r["partition"] for r in rows]

    async def table_columns(self) -> dict[str, list[str]]:
        rows = await self.connection.fetch(
            "SELECT c.relname AS table_name, a.attname AS column_name"
            " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
            " AND NOT c.relispartition"
            " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum"
        )
        columns: dict[str, list[str]] = {}
        for row in rows:
            columns.setdefault(row["table_name"], []).append(row["column_name"])
        return check_tables(columns)

    async def state_row(self, partition: int) -> StateRow | None:
        row = await self.connection.fetchrow(
            "SELECT epoch, next_offset, internal_offset, frozen, expired_before_ms"
            " FROM partition_state WHERE partition = $1",
            partition,
        )
        return None if row is None else StateRow(*row.values())

    async def fence(self, partition: int, owner: str) -> int | None:
        epoch: int | None = await self.connection.fetchval(
            "UPDATE partition_state SET epoch = epoch + 1, owner = $2, frozen = true,"
            " updated_at = now() WHERE partition = $1 AND NOT frozen RETURNING epoch",
            partition,
            owner,
        )
        if epoch is None:
            epoch = await self.connection.fetchval(
                "SELECT epoch FROM partition_state WHERE partition = $1 AND frozen", partition
            )
        return epoch

    async def freeze(self, partition: int) -> None:
        await self.connection.execute(
            "UPDATE partition_state SET frozen = true WHERE partition = $1 AND NOT frozen",
            partition,
        )

    async def thaw(self, partition: int, *, forget_owner: bool) -> int | None:
        owner = ", owner = ''" if forget_owner else ""
        offset: int | None = await self.connection.fetchval(
            f"UPDATE partition_state SET frozen = false{owner} WHERE partition = $1"
            " RETURNING next_offset",
            partition,
        )
        return offset

    @contextlib.asynccontextmanager
    async def snapshot(self, partition: int) -> AsyncIterator[_Snapshot]:
        columns = await self.table_columns()
        async with self.connection.transaction(isolation="repeatable_read", readonly=True):
            yield _Snapshot(self.connection, partition, await self.state_row(partition), columns)

    @contextlib.asynccontextmanager
    async def receive(self, partition: int) -> AsyncIterator[_Sink]:
        async with self.connection.transaction():
            yield _Sink(self.connection, partition)

    async def delete_partition(self, partition: int, *, keep_tombstone: bool) -> None:
        async with self.connection.transaction():
            await self._delete(partition, keep_tombstone=keep_tombstone)

    async def _delete(self, partition: int, *, keep_tombstone: bool) -> None:
        tables = TABLES if keep_tombstone else (*TABLES, "partition_state")
        for table in tables:
            await self.connection.execute(f"DELETE FROM {table} WHERE partition = $1", partition)

    async def analyze(self) -> None:
        for table in (*TABLES, "partition_state"):
            await self.connection.execute(f"ANALYZE {table}")

    async def stray_partitions(self, owned: Sequence[int]) -> list[int]:
        return [r["partition"] for r in await self.connection.fetch(_STRAY, list(owned))]

    async def currency_totals(
        self, partitions: Sequence[int], clearing: Sequence[int], cash: Sequence[int]
    ) -> list[CurrencyTotals]:
        rows = await self.connection.fetch(_TOTALS, list(clearing), list(cash), list(partitions))
        return [
            CurrencyTotals(
                r["currency"],
                int(r["customers"]),
                int(r["clearing"]),
                int(r["cash"]),
                r["accounts"],
            )
            for r in rows
        ]

    async def journal_rows(self, partitions: Sequence[int]) -> int:
        count: int = await self.connection.fetchval(
            "SELECT count(*) FROM journal WHERE partition = ANY($1::integer[])", list(partitions)
        )
        return count

    async def off_journal(self, partitions: Sequence[int]) -> list[OffJournal]:
        rows = await self.connection.fetch(_OFF_JOURNAL, list(partitions))
        return [
            OffJournal(
                r["partition"], r["customer_id"], r["account_no"], r["balance"], int(r["total"])
            )
            for r in rows
        ]

    async def unbalanced_journal(self, partitions: Sequence[int]) -> list[tuple[str, int]]:
        rows = await self.connection.fetch(
            _BOOKS + "SELECT currency, sum(total) AS total FROM books"
            " GROUP BY currency HAVING sum(total) <> 0",
            list(partitions),
        )
        return [(r["currency"], int(r["total"])) for r in rows]

    async def applied_twice(self, partitions: Sequence[int]) -> list[tuple[int, str]]:
        rows = await self.connection.fetch(
            "SELECT partition, command_id FROM journal WHERE partition = ANY($1::integer[])"
            " GROUP BY partition, command_id HAVING count(DISTINCT src_offset) > 1 LIMIT 1000",
            list(partitions),
        )
        return [(r["partition"], r["command_id"]) for r in rows]

    async def closed_with_money(self, partitions: Sequence[int]) -> list[ClosedWithMoney]:
        rows = await self.connection.fetch(
            "SELECT partition, customer_id, account_no, balance FROM accounts"
            " WHERE partition = ANY($1::integer[]) AND status = 2 AND balance <> 0 LIMIT 1000",
            list(partitions),
        )
        return [ClosedWithMoney(*r.values()) for r in rows]

    async def stuck_transfers(
        self, partitions: Sequence[int], stuck_after_seconds: float
    ) -> list[StuckTransfer]:
        rows = await self.connection.fetch(_STUCK, list(partitions), stuck_after_seconds)
        return [StuckTransfer(*r.values()) for r in rows]

    async def flights(self, partitions: Sequence[int]) -> list[FlightRow]:
        rows = await self.connection.fetch(
            "SELECT partition, transfer_id, from_customer, to_customer, amount, currency"
            " FROM transfers_in_flight WHERE partition = ANY($1::integer[])",
            list(partitions),
        )
        return [FlightRow(*r.values()) for r in rows]

    async def results_of(self, ids: Sequence[tuple[int, str]]) -> list[tuple[int, str, bytes]]:
        rows = await self.connection.fetch(
            "SELECT partition, command_id, result FROM command_results"
            " WHERE (partition, command_id) IN (SELECT * FROM unnest($1::integer[], $2::text[]))",
            [partition for partition, _ in ids],
            [command_id for _, command_id in ids],
        )
        return [(r["partition"], r["command_id"], r["result"]) for r in rows]

    async def balances(self) -> dict[tuple[int, int, int], int]:
        rows = await self.connection.fetch(
            "SELECT partition, customer_id, account_no, balance FROM accounts"
        )
        return {(r["partition"], r["customer_id"], r["account_no"]): r["balance"] for r in rows}

    async def clearing_entries(
        self, partner: int, day: int, partitions: Sequence[int]
    ) -> AsyncGenerator[list[ClearingRow], None]:
        async with self.connection.transaction(readonly=True):
            cursor = await self.connection.cursor(_CLEARING, partner, day, list(partitions))
            while chunk := await cursor.fetch(CLEARING_ROWS_PER_CHUNK):
                yield [ClearingRow(*record.values()) for record in chunk]

    async def partner_body(
        self, partner: int, partitions: Sequence[int]
    ) -> tuple[int, bytes] | None:
        row = await self.connection.fetchrow(
            "SELECT partition, body FROM credit_book WHERE kind = $1 AND entity_key = $2"
            " AND partition = ANY($3::integer[]) ORDER BY partition LIMIT 1",
            int(CreditKind.PARTNER),
            str(partner),
            list(partitions),
        )
        return None if row is None else (row["partition"], row["body"])

    async def last_closed(self, partitions: Sequence[int]) -> dict[int, int]:
        rows = await self.connection.fetch(
            "SELECT partition, amount FROM credit_book WHERE kind = $1"
            " AND partition = ANY($2::integer[])",
            int(CreditKind.CALENDAR),
            list(partitions),
        )
        return {r["partition"]: r["amount"] for r in rows}


class _Snapshot:
    def __init__(
        self,
        connection: asyncpg.Connection,
        partition: int,
        state: StateRow | None,
        columns: dict[str, list[str]],
    ):
        self.connection = connection
        self.partition = partition
        self.state = state
        self.columns = columns

    def rows(self, table: str, columns: Sequence[str]) -> AsyncIterator[list[Row]]:
        return self.selected(table, columns, Selection())

    async def selected(
        self, table: str, columns: Sequence[str], selection: Selection
    ) -> AsyncIterator[list[Row]]:
        invariant(table in TABLES, f"{table} is a partition table")
        where, arguments = _selected(self.partition, selection)
        query = f"SELECT {', '.join(columns)} FROM {table} WHERE {where}"
        cursor = await self.connection.cursor(query, *arguments)
        while chunk := await cursor.fetch(COPY_ROWS_PER_CHUNK):
            yield [tuple(record.values()) for record in chunk]


def _selected(partition: int, selection: Selection) -> tuple[str, list[object]]:
    """The WHERE clause of a partition's rows that ``selection`` takes, its arguments."""
    condition = selection.condition(lambda _: "command_id = ANY($2::text[])")
    ids: list[object] = [list(selection.ids)] if selection.ids else []
    return f"partition = $1 AND {condition}", [partition, *ids]


class _Sink:
    def __init__(self, connection: asyncpg.Connection, partition: int):
        self.connection = connection
        self.partition = partition

    async def pending_transfers(self) -> list[str]:
        rows = await self.connection.fetch(
            "SELECT transfer_id FROM transfers_in_flight WHERE partition = $1", self.partition
        )
        return [r["transfer_id"] for r in rows]

    async def delete(self, table: str, selection: Selection) -> None:
        invariant(table in TABLES, f"{table} is a partition table")
        where, arguments = _selected(self.partition, selection)
        await self.connection.execute(f"DELETE FROM {table} WHERE {where}", *arguments)

    async def write(self, table: str, columns: Sequence[str], rows: list[Row]) -> None:
        invariant(table in TABLES, f"{table} is a partition table")
        await self.connection.copy_records_to_table(table, records=rows, columns=list(columns))

    async def write_state(
        self, epoch: int, next_offset: int, internal_offset: int, owner: str, expired_before_ms: int
    ) -> None:
        await self.connection.execute(
            "DELETE FROM partition_state WHERE partition = $1", self.partition
        )
        await self.connection.execute(
            "INSERT INTO partition_state"
            " (partition, epoch, next_offset, internal_offset, owner, frozen, expired_before_ms)"
            " VALUES ($1, $2, $3, $4, $5, true, $6)",
            self.partition,
            epoch,
            next_offset,
            internal_offset,
            owner,
            expired_before_ms,
        )
