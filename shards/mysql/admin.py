"""The administrative side of a MariaDB/MySQL cup (shards.cup_admin.CupAdmin): one asyncmy
connection, statements as text (shards.mysql.driver writes the literals)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import asyncmy
from asyncmy.cursors import SSCursor

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
    Value,
)
from shards.migrate import migration_files
from shards.mysql.driver import blob, ints, run, text, texts
from shards.partition_copy import TABLES, check_tables

_MIGRATION_LOCK: Final = "smallcups_migrate"
_MIGRATION_LOCK_SECONDS: Final = 60
_STATEMENT_BYTES_MAX: Final = 4 * 1024 * 1024
"""A copy's INSERT is cut into statements of about this size (below max_allowed_packet)."""

Converter = Callable[[Any], Value]


def _in(values: Sequence[int]) -> str:
    """The inside of an IN list: ``(NULL)`` matches nothing when there are no values."""
    return ints(values) if values else "NULL"


def _owned(column: str, partitions: Sequence[int]) -> str:
    return f"{column} IN ({_in(partitions)})"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC)


def _converter(column_type: str) -> Converter | None:
    """How a value of a column reads in the canonical row shape (shards.cup_admin.Row)."""
    if column_type == "tinyint(1)":
        return bool
    if column_type.startswith("datetime"):
        return _utc
    return None


def literal(value: Value) -> str:
    """Any canonical value as a MySQL literal (timestamps in UTC, no zone)."""
    if value is None or isinstance(value, bytes):
        return blob(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return text(value)
    utc = value.astimezone(UTC).replace(tzinfo=None)
    return "'" + utc.isoformat(sep=" ", timespec="microseconds") + "'"


class MysqlCupAdmin:
    kind = CupKind.MYSQL

    def __init__(self, connection: asyncmy.Connection):
        self.connection = connection

    async def close(self) -> None:
        await self.connection.ensure_closed()

    async def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        return (await run(self.connection, sql))[0]

    async def _applied(self) -> set[int]:
        await run(
            self.connection,
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INT PRIMARY KEY, name VARCHAR(255) NOT NULL,"
            " applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE = InnoDB",
        )
        return {row[0] for row in await self._rows("SELECT version FROM schema_migrations")}

    async def missing_migrations(self) -> list[str]:
        """Read only: a cup never migrated has no schema_migrations table yet."""
        exists = await self._rows(
            "SELECT COUNT(*) FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'schema_migrations'"
        )
        done = await self._applied() if exists[0][0] else set()
        return [name for version, name, _ in migration_files("mysql") if version not in done]

    async def migrate(self) -> list[str]:
        """Apply the missing migrations, under a named lock (two ``init`` runs take turns).

        MySQL commits every DDL statement on its own, so a migration cannot be one
        transaction: its statements are written to be run again (IF NOT EXISTS), and a
        migration cut short is finished by the next run."""
        locked = await self._rows(
            f"SELECT GET_LOCK({text(_MIGRATION_LOCK)}, {_MIGRATION_LOCK_SECONDS})"
        )
        invariant(locked == [(1,)], "the migration lock was taken in time")
        applied_now = []
        try:
            done = await self._applied()
            for version, name, sql in migration_files("mysql"):
                if version in done:
                    continue
                await run(self.connection, sql)
                await run(
                    self.connection,
                    "INSERT INTO schema_migrations (version, name)"
                    f" VALUES ({int(version)}, {text(name)})",
                )
                applied_now.append(name)
        finally:
            await run(self.connection, f"DO RELEASE_LOCK({text(_MIGRATION_LOCK)})")
        return applied_now

    async def add_partitions(self, partitions: Sequence[int]) -> None:
        if partitions:
            wanted = " UNION ALL ".join(f"SELECT {int(p)} AS p" for p in partitions)
            await run(
                self.connection,
                f"INSERT INTO partition_state (`partition`) SELECT p FROM ({wanted}) AS w"
                " WHERE p NOT IN (SELECT `partition` FROM partition_state)",
            )

    async def holdings(self, partitions: Sequence[int]) -> Holdings:
        owned = _owned("`partition`", partitions)
        rows = await self._rows(
            f"SELECT (SELECT COUNT(*) FROM accounts WHERE {owned}),"
            f" (SELECT COUNT(*) FROM journal WHERE {owned}),"
            f" (SELECT COUNT(*) FROM transfers_in_flight WHERE {owned}),"
            f" (SELECT COUNT(*) FROM command_results WHERE {owned})"
        )
        return Holdings(*rows[0])

    async def footprint(self) -> Footprint:
        rows = await self._rows(
            "SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0), COALESCE(SUM(TABLE_ROWS), 0)"
            " FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'"
        )
        return Footprint(int(rows[0][0]), int(rows[0][1]))

    async def live_partitions(self) -> list[int]:
        held = " UNION ".join(f"(SELECT `partition` FROM {table} LIMIT 1)" for table in TABLES)
        rows = await self._rows(
            f"SELECT `partition` FROM partition_state WHERE NOT frozen UNION {held} ORDER BY 1"
        )
        return [row[0] for row in rows]

    async def _column_types(self) -> dict[str, list[tuple[str, str]]]:
        rows = await self._rows(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, ORDINAL_POSITION"
        )
        columns: dict[str, list[tuple[str, str]]] = {}
        for table, column, column_type in rows:
            columns.setdefault(table, []).append((column, column_type.lower()))
        return columns

    async def table_columns(self) -> dict[str, list[str]]:
        types = await self._column_types()
        return check_tables({t: [name for name, _ in columns] for t, columns in types.items()})

    async def state_row(self, partition: int) -> StateRow | None:
        rows = await self._rows(
            "SELECT epoch, next_offset, internal_offset, frozen, expired_before_ms"
            f" FROM partition_state WHERE `partition` = {int(partition)}"
        )
        if not rows:
            return None
        epoch, next_offset, internal_offset, frozen, expired_before_ms = rows[0]
        return StateRow(epoch, next_offset, internal_offset, bool(frozen), expired_before_ms)

    async def fence(self, partition: int, owner: str) -> int | None:
        p = int(partition)
        results = await run(
            self.connection,
            "START TRANSACTION;"
            f"UPDATE partition_state SET epoch = epoch + 1, owner = {text(owner)}, frozen = TRUE,"
            f" updated_at = CURRENT_TIMESTAMP(6) WHERE `partition` = {p} AND NOT frozen;"
            f"SELECT epoch FROM partition_state WHERE `partition` = {p} AND frozen;"
            "COMMIT",
        )
        return results[0][0][0] if results[0] else None

    async def freeze(self, partition: int) -> None:
        await run(
            self.connection,
            "UPDATE partition_state SET frozen = TRUE"
            f" WHERE `partition` = {int(partition)} AND NOT frozen",
        )

    async def thaw(self, partition: int, *, forget_owner: bool) -> int | None:
        p = int(partition)
        owner = ", owner = ''" if forget_owner else ""
        results = await run(
            self.connection,
            "START TRANSACTION;"
            f"UPDATE partition_state SET frozen = FALSE{owner} WHERE `partition` = {p};"
            f"SELECT next_offset FROM partition_state WHERE `partition` = {p};"
            "COMMIT",
        )
        return results[0][0][0] if results[0] else None

    @contextlib.asynccontextmanager
    async def snapshot(self, partition: int) -> AsyncIterator[_Snapshot]:
        types = await self._column_types()
        columns = check_tables({t: [name for name, _ in cs] for t, cs in types.items()})
        converters = {
            (table, name): converter
            for table, cs in types.items()
            for name, column_type in cs
            if (converter := _converter(column_type)) is not None
        }
        await run(
            self.connection,
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ;"
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        )
        try:
            state = await self.state_row(partition)
            yield _Snapshot(self.connection, partition, state, columns, converters)
            await run(self.connection, "COMMIT")
        except BaseException:
            await self.connection.ensure_closed()
            raise

    @contextlib.asynccontextmanager
    async def receive(self, partition: int) -> AsyncIterator[_Sink]:
        await run(self.connection, "START TRANSACTION")
        try:
            yield _Sink(self.connection, partition)
            await run(self.connection, "COMMIT")
        except BaseException:
            await self.connection.ensure_closed()
            raise

    async def delete_partition(self, partition: int, *, keep_tombstone: bool) -> None:
        await run(
            self.connection,
            "START TRANSACTION;" + _deletes(partition, keep_tombstone=keep_tombstone) + "COMMIT",
        )

    async def analyze(self) -> None:
        await run(self.connection, f"ANALYZE TABLE {', '.join((*TABLES, 'partition_state'))}")

    async def stray_partitions(self, owned: Sequence[int]) -> list[int]:
        elsewhere = f"WHERE `partition` NOT IN ({ints(owned)})" if owned else ""
        rows = await self._rows(
            "SELECT DISTINCT `partition` FROM ("
            " SELECT `partition` FROM partition_state WHERE NOT frozen"
            " UNION ALL SELECT `partition` FROM accounts"
            f" UNION ALL SELECT `partition` FROM command_results) AS held {elsewhere}"
        )
        return [row[0] for row in rows]

    async def currency_totals(
        self, partitions: Sequence[int], clearing: Sequence[int], cash: Sequence[int]
    ) -> list[CurrencyTotals]:
        rows = await self._rows(
            "SELECT currency,"
            " COALESCE(SUM(CASE WHEN customer_id <> 0 THEN balance END), 0),"
            " COALESCE(SUM(CASE WHEN customer_id = 0"
            f" AND account_no IN ({_in(clearing)}) THEN balance END), 0),"
            " COALESCE(SUM(CASE WHEN customer_id = 0"
            f" AND account_no IN ({_in(cash)}) THEN balance END), 0),"
            f" COUNT(*) FROM accounts WHERE {_owned('`partition`', partitions)} GROUP BY currency"
        )
        return [CurrencyTotals(c, int(a), int(b), int(d), n) for c, a, b, d, n in rows]

    async def journal_rows(self, partitions: Sequence[int]) -> int:
        rows = await self._rows(
            f"SELECT COUNT(*) FROM journal WHERE {_owned('`partition`', partitions)}"
        )
        return int(rows[0][0])

    async def off_journal(self, partitions: Sequence[int]) -> list[OffJournal]:
        rows = await self._rows(
            _books(partitions) + " SELECT a.`partition`, a.customer_id, a.account_no, a.balance,"
            " COALESCE(s.total, 0) FROM accounts a"
            " LEFT JOIN books s USING (`partition`, customer_id, account_no)"
            f" WHERE {_owned('a.`partition`', partitions)} AND a.balance <> COALESCE(s.total, 0)"
            " UNION ALL"
            " SELECT s.`partition`, s.customer_id, s.account_no, NULL, s.total FROM books s"
            " LEFT JOIN accounts a USING (`partition`, customer_id, account_no)"
            " WHERE a.`partition` IS NULL LIMIT 1000"
        )
        return [OffJournal(p, c, a, b, int(total)) for p, c, a, b, total in rows]

    async def unbalanced_journal(self, partitions: Sequence[int]) -> list[tuple[str, int]]:
        rows = await self._rows(
            _books(partitions) + " SELECT currency, SUM(total) FROM books"
            " GROUP BY currency HAVING SUM(total) <> 0"
        )
        return [(currency, int(total)) for currency, total in rows]

    async def applied_twice(self, partitions: Sequence[int]) -> list[tuple[int, str]]:
        rows = await self._rows(
            "SELECT `partition`, command_id FROM journal"
            f" WHERE {_owned('`partition`', partitions)} GROUP BY `partition`, command_id"
            " HAVING COUNT(DISTINCT src_offset) > 1 LIMIT 1000"
        )
        return [(p, command_id) for p, command_id in rows]

    async def closed_with_money(self, partitions: Sequence[int]) -> list[ClosedWithMoney]:
        rows = await self._rows(
            "SELECT `partition`, customer_id, account_no, balance FROM accounts"
            f" WHERE {_owned('`partition`', partitions)} AND status = 2 AND balance <> 0"
            " LIMIT 1000"
        )
        return [ClosedWithMoney(*row) for row in rows]

    async def stuck_transfers(
        self, partitions: Sequence[int], stuck_after_seconds: float
    ) -> list[StuckTransfer]:
        stuck_us = round(stuck_after_seconds * 1_000_000)
        rows = await self._rows(
            "SELECT `partition`, transfer_id, amount, currency,"
            " TIMESTAMPDIFF(SECOND, opened_at, CURRENT_TIMESTAMP(6))"
            f" FROM transfers_in_flight WHERE {_owned('`partition`', partitions)}"
            f" AND opened_at < CURRENT_TIMESTAMP(6) - INTERVAL {stuck_us} MICROSECOND"
            " ORDER BY opened_at LIMIT 1000"
        )
        return [StuckTransfer(*row) for row in rows]

    async def flights(self, partitions: Sequence[int]) -> list[FlightRow]:
        rows = await self._rows(
            "SELECT `partition`, transfer_id, from_customer, to_customer, amount, currency"
            f" FROM transfers_in_flight WHERE {_owned('`partition`', partitions)}"
        )
        return [FlightRow(*row) for row in rows]

    async def results_of(self, ids: Sequence[tuple[int, str]]) -> list[tuple[int, str, bytes]]:
        by_partition: dict[int, list[str]] = {}
        for partition, command_id in ids:
            by_partition.setdefault(partition, []).append(command_id)
        if not by_partition:
            return []
        wanted = " OR ".join(
            f"(`partition` = {int(p)} AND command_id IN ({texts(command_ids)}))"
            for p, command_ids in by_partition.items()
        )
        rows = await self._rows(
            f"SELECT `partition`, command_id, result FROM command_results WHERE {wanted}"
        )
        return [(p, command_id, result) for p, command_id, result in rows]

    async def balances(self) -> dict[tuple[int, int, int], int]:
        rows = await self._rows(
            "SELECT `partition`, customer_id, account_no, balance FROM accounts"
        )
        return {(p, c, a): balance for p, c, a, balance in rows}

    async def clearing_entries(
        self, partner: int, day: int, partitions: Sequence[int]
    ) -> AsyncGenerator[list[ClearingRow], None]:
        """Unbuffered (SSCursor): the server sends the rows as they are read. The ids'
        collation is binary (ascii_nopad_bin), and the index holds the primary key after
        its own columns: the index is read in the statement's order, without a sort."""
        async with self.connection.cursor(SSCursor) as cursor:
            await cursor.execute(
                "SELECT loan_id, kind, command_id, `partition`, src_offset, entry, customer_id,"
                " amount, currency FROM clearing_entries"
                f" WHERE partner = {int(partner)} AND business_day = {int(day)}"
                f" AND {_owned('`partition`', partitions)}"
                " ORDER BY loan_id, kind, command_id, `partition`, src_offset, entry"
            )
            while chunk := await cursor.fetchmany(CLEARING_ROWS_PER_CHUNK):
                yield [ClearingRow(*row) for row in chunk]

    async def partner_body(
        self, partner: int, partitions: Sequence[int]
    ) -> tuple[int, bytes] | None:
        rows = await self._rows(
            "SELECT `partition`, body FROM credit_book"
            f" WHERE kind = {int(CreditKind.PARTNER)} AND entity_key = {text(str(partner))}"
            f" AND {_owned('`partition`', partitions)} ORDER BY `partition` LIMIT 1"
        )
        return (rows[0][0], bytes(rows[0][1])) if rows else None

    async def last_closed(self, partitions: Sequence[int]) -> dict[int, int]:
        rows = await self._rows(
            "SELECT `partition`, amount FROM credit_book"
            f" WHERE kind = {int(CreditKind.CALENDAR)} AND {_owned('`partition`', partitions)}"
        )
        return {partition: day for partition, day in rows}


def _selected(partition: int, selection: Selection) -> str:
    """The WHERE clause of a partition's rows that ``selection`` takes."""
    condition = selection.condition(lambda ids: f"command_id IN ({texts(ids)})")
    return f"`partition` = {int(partition)} AND {condition}"


def _books(partitions: Sequence[int]) -> str:
    """Each account's books: its openings (the sums of its archived periods) and its
    journal rows booked since the last of them (a row booked before is counted in an
    opening: it is archived, or being archived)."""
    owned = _owned("`partition`", partitions)
    key = "`partition`, customer_id, account_no, currency"
    return (
        f"WITH opened AS (SELECT {key}, SUM(amount) AS opening,"
        f" MAX(period_end) AS opened_until FROM journal_openings WHERE {owned} GROUP BY {key}),"
        " kept AS (SELECT j.`partition`, j.customer_id, j.account_no, j.currency,"
        f" SUM(j.amount) AS total FROM journal j LEFT JOIN opened o USING ({key})"
        f" WHERE {_owned('j.`partition`', partitions)}"
        " AND (o.opened_until IS NULL OR j.booked_at >= o.opened_until)"
        " GROUP BY j.`partition`, j.customer_id, j.account_no, j.currency),"
        f" books AS (SELECT {key}, SUM(total) AS total FROM (SELECT {key}, opening AS total"
        f" FROM opened UNION ALL SELECT {key}, total FROM kept) AS both_parts GROUP BY {key})"
    )


def _deletes(partition: int, *, keep_tombstone: bool) -> str:
    tables = TABLES if keep_tombstone else (*TABLES, "partition_state")
    return "".join(f"DELETE FROM {t} WHERE `partition` = {int(partition)};" for t in tables)


class _Snapshot:
    def __init__(
        self,
        connection: asyncmy.Connection,
        partition: int,
        state: StateRow | None,
        columns: dict[str, list[str]],
        converters: dict[tuple[str, str], Converter],
    ):
        self.connection = connection
        self.partition = partition
        self.state = state
        self.columns = columns
        self.converters = converters

    def rows(self, table: str, columns: Sequence[str]) -> AsyncIterator[list[Row]]:
        return self.selected(table, columns, Selection())

    async def selected(
        self, table: str, columns: Sequence[str], selection: Selection
    ) -> AsyncIterator[list[Row]]:
        invariant(table in TABLES, f"{table} is a partition table")
        convert = [self.converters.get((table, column)) for column in columns]
        quoted = ", ".join(f"`{column}`" for column in columns)
        where = _selected(self.partition, selection)
        async with self.connection.cursor(SSCursor) as cursor:
            await cursor.execute(f"SELECT {quoted} FROM {table} WHERE {where}")
            while chunk := await cursor.fetchmany(COPY_ROWS_PER_CHUNK):
                yield [
                    tuple(
                        v if f is None or v is None else f(v)
                        for f, v in zip(convert, row, strict=True)
                    )
                    for row in chunk
                ]


class _Sink:
    def __init__(self, connection: asyncmy.Connection, partition: int):
        self.connection = connection
        self.partition = partition

    async def pending_transfers(self) -> list[str]:
        rows = (
            await run(
                self.connection,
                "SELECT transfer_id FROM transfers_in_flight"
                f" WHERE `partition` = {int(self.partition)}",
            )
        )[0]
        return [row[0] for row in rows]

    async def delete(self, table: str, selection: Selection) -> None:
        invariant(table in TABLES, f"{table} is a partition table")
        await run(
            self.connection, f"DELETE FROM {table} WHERE {_selected(self.partition, selection)}"
        )

    async def write(self, table: str, columns: Sequence[str], rows: list[Row]) -> None:
        invariant(table in TABLES, f"{table} is a partition table")
        head = f"INSERT INTO {table} ({', '.join(f'`{c}`' for c in columns)}) VALUES "
        values: list[str] = []
        size = 0
        for row in rows:
            value = "(" + ",".join(map(literal, row)) + ")"
            values.append(value)
            size += len(value)
            if size >= _STATEMENT_BYTES_MAX:
                await run(self.connection, head + ",".join(values))
                values, size = [], 0
        if values:
            await run(self.connection, head + ",".join(values))

    async def write_state(
        self, epoch: int, next_offset: int, internal_offset: int, owner: str, expired_before_ms: int
    ) -> None:
        p = int(self.partition)
        await run(
            self.connection,
            f"DELETE FROM partition_state WHERE `partition` = {p};"
            "INSERT INTO partition_state"
            " (`partition`, epoch, next_offset, internal_offset, owner, frozen, expired_before_ms)"
            f" VALUES ({p}, {int(epoch)}, {int(next_offset)},"
            f" {int(internal_offset)}, {text(owner)}, TRUE, {int(expired_before_ms)})",
        )
