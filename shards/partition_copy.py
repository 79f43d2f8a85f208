"""Copying one partition's rows between two cups, and deleting them: the data side of
a move (shards.moves drives the steps). Every cup table keyed by partition is copied;
a table a move does not know about stops the move (see ``table_columns``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

import asyncpg

from engine.core.errors import invariant

PARTITION_TABLES: Final = (
    "accounts",
    "journal",
    "command_results",
    "outbox",
    "transfers_in_flight",
)
"""Every cup table keyed by partition besides ``partition_state``: what a move copies."""

COPY_CHUNKS_QUEUED_MAX: Final = 16
"""COPY chunks buffered between the source and the target (bounded memory per move)."""


async def table_columns(cup: asyncpg.Connection) -> dict[str, list[str]]:
    """The columns, in order, of every table a move copies (from the catalog: fast).

    A cup table keyed by partition that a move would not copy is a bug: refuse.
    """
    rows = await cup.fetch(
        "SELECT c.relname AS table_name, a.attname AS column_name"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum"
    )
    columns: dict[str, list[str]] = {}
    for row in rows:
        columns.setdefault(row["table_name"], []).append(row["column_name"])
    keyed = {t for t, names in columns.items() if "partition" in names} - {"partition_state"}
    invariant(keyed == set(PARTITION_TABLES), f"moves copy {PARTITION_TABLES}, cups have {keyed}")
    return {table: columns[table] for table in PARTITION_TABLES}


async def analyze(cup: asyncpg.Connection) -> None:
    """Fresh planner statistics for a cup that just received a partition's rows in bulk."""
    for table in (*PARTITION_TABLES, "partition_state"):
        await cup.execute(f"ANALYZE {table}")


async def copy_table(
    source: asyncpg.Connection,
    target: asyncpg.Connection,
    table: str,
    columns: list[str],
    partition: int,
) -> int:
    """Stream one table's rows of ``partition`` as binary COPY; returns the row count.

    The columns are named (the source's, in order), so the copy does not depend on the
    two cups having added columns in the same order.
    """
    query = f"SELECT {', '.join(columns)} FROM {table} WHERE partition = {int(partition)}"
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(COPY_CHUNKS_QUEUED_MAX)

    async def put(chunk: bytes) -> None:
        await queue.put(chunk)

    async def chunks() -> AsyncIterator[bytes]:
        while (chunk := await queue.get()) is not None:
            yield chunk

    async def produce() -> str:
        status = await source.copy_from_query(query, output=put, format="binary")
        await queue.put(None)
        return str(status)

    async with asyncio.TaskGroup() as group:
        produced = group.create_task(produce())
        group.create_task(
            target.copy_to_table(table, source=chunks(), columns=columns, format="binary")
        )
    return int(produced.result().split()[-1])


async def delete_partition(
    cup: asyncpg.Connection, partition: int, *, keep_tombstone: bool = False
) -> None:
    """Every row of ``partition`` in one cup, in one transaction; with ``keep_tombstone``,
    all but its frozen state row (the tombstone of shards.moves, step 6)."""
    tables = PARTITION_TABLES if keep_tombstone else (*PARTITION_TABLES, "partition_state")
    async with cup.transaction():
        for table in tables:
            await cup.execute(f"DELETE FROM {table} WHERE partition = $1", partition)
