"""Copying one partition's rows between two cups, of the same kind or not: the data side
of a move (shards.moves drives the steps). Every cup table keyed by partition is copied;
a table a move does not know about stops the move (``check_tables``).
"""

from __future__ import annotations

from typing import Final

from engine.core.errors import invariant
from shards.cup_admin import PartitionSink, PartitionSnapshot

TABLES: Final = (
    "accounts",
    "journal",
    "journal_openings",
    "command_results",
    "outbox",
    "transfers_in_flight",
    "credit_book",
    "clearing_entries",
)
"""Every cup table keyed by partition besides ``partition_state``: what a move copies."""


def check_tables(columns: dict[str, list[str]]) -> dict[str, list[str]]:
    """The columns of the tables a move copies, from every table's columns in a cup.

    A cup table keyed by partition that a move would not copy is a bug: refuse.
    """
    keyed = {t for t, names in columns.items() if "partition" in names} - {"partition_state"}
    invariant(keyed == set(TABLES), f"moves copy {TABLES}, the cup has {sorted(keyed)}")
    return {table: columns[table] for table in TABLES}


async def copy_partition(
    source: PartitionSnapshot, target: PartitionSink, target_columns: dict[str, list[str]]
) -> int:
    """Every row of the snapshot's partition into the target; returns the row count.

    The columns are named (the source's, in order), so the copy does not depend on the
    two cups having their columns in the same order, nor on their kind; both must have
    the same columns.
    """
    rows = 0
    for table in TABLES:
        columns = source.columns[table]
        invariant(
            sorted(columns) == sorted(target_columns[table]),
            f"{table} has the columns {columns} in the source, {target_columns[table]} in the "
            "target: migrate both cups first",
        )
        async for chunk in source.rows(table, columns):
            await target.write(table, columns, chunk)
            rows += len(chunk)
    return rows
