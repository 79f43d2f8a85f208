"""Copying one partition's rows between two cups, of the same kind or not: the data side
of a move (shards.moves drives the steps). Every cup table keyed by partition is copied;
a table a move does not know about stops the move (``check_tables``).

A move copies in two passes (shards.moves): the pre-copy, while the partition keeps
running in its source, and the catch-up, while it is paused and fenced.

The history tables are only ever appended to, and each of their rows carries the input
place of the command that wrote it (``src_offset``: engine.core.records.Position.seq, the
sum of the partition's two topic offsets at that record). A batch's records all have
places from its start position's sum up to, not including, its end position's sum, and
the fenced commit moves the state row's two offsets together with the batch's rows. So
in any snapshot of the source, the rows with a place below the state row's
``next_offset + internal_offset`` (the *watermark*) are exactly the rows committed so
far, and every later commit writes places at or above it.

- The pre-copy takes the history rows below the watermark, and the transfers in flight
  at that snapshot: the command results of those transfers are PENDING, the only history
  rows ever changed (replaced in place by their final result when the transfer
  settles, in the same commit that deletes the transfer in flight). It goes in rounds:
  each later round takes, from a newer snapshot, the history from the last round's
  watermark to its own and the results of the transfers the target holds in flight
  (whatever they became), and replaces the transfers in flight. After each round the
  target holds the source's history below the round's watermark, but for the results of
  the transfers it holds in flight.
- The catch-up takes the history rows at or above the watermark, the command results of
  the transfers the pre-copy saw in flight (again, whatever they became), and every
  other table whole: those are state (accounts, outbox, transfers in flight, the credit
  book, any table added later), whose rows change in place.

A catch-up with watermark 0 and no pending transfers is a whole copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from engine.core.errors import invariant
from shards.cup_admin import CopySnapshot, PartitionSink, Selection

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

HISTORY: Final = ("journal", "clearing_entries", "command_results")
"""The tables a pre-copy takes, by input place (``src_offset``): appended to, never
changed, except PENDING command results (``Pass``)."""

IN_FLIGHT: Final = "transfers_in_flight"
RESULTS: Final = "command_results"


@dataclass(frozen=True, slots=True)
class Pass:
    """What one pass of a copy takes: per table, the rows it deletes first in the target
    and the rows it copies from the source (None: none)."""

    tables: dict[str, tuple[Selection | None, Selection | None]] = field(default_factory=dict)


def precopy_pass(watermark: int, since: int | None = None, pending: Sequence[str] = ()) -> Pass:
    """A round of the pre-copy at ``watermark``. The first (``since`` None) deletes first
    everything of the partition in the target (an earlier pre-copy cut short, an aborted
    move's copy), then takes the history below ``watermark``; a later one replaces the
    history from ``since`` (the last round's watermark) and the results of ``pending``
    (the transfers in flight the target holds). Both replace the transfers in flight
    (the PENDING results the next round or the catch-up takes again)."""
    invariant(watermark >= 0, "a watermark is an input place")
    if since is None:
        first = {table: Selection(below=watermark) for table in HISTORY}
        copied = first | {IN_FLIGHT: Selection()}
        return Pass({table: (Selection(), copied.get(table)) for table in TABLES})
    invariant(0 <= since <= watermark, "a round's watermark does not go back")
    rows = Selection(below=watermark, since=since)
    results = Selection(below=watermark, since=since, ids=tuple(pending))
    tables: dict[str, tuple[Selection | None, Selection | None]] = {
        table: (None, None) for table in TABLES
    }
    tables |= {table: (rows, rows) for table in HISTORY}
    tables |= {RESULTS: (results, results), IN_FLIGHT: (Selection(), Selection())}
    return Pass(tables)


def catch_up_pass(watermark: int, pending: Sequence[str]) -> Pass:
    """The history at or above ``watermark``, the results of ``pending`` (the transfers
    in flight at the pre-copy), every other table whole. Rows are deleted in the target
    as they are selected, so a catch-up after a pre-copy of the same watermark leaves
    the target equal to the source."""
    invariant(watermark >= 0, "a watermark is an input place")
    since = Selection(since=watermark) if watermark else Selection()
    results = Selection(since=watermark, ids=tuple(pending)) if watermark else Selection()
    tables: dict[str, tuple[Selection | None, Selection | None]] = {}
    for table in TABLES:
        selection = results if table == RESULTS else since if table in HISTORY else Selection()
        tables[table] = (selection, selection)
    return Pass(tables)


def check_tables(columns: dict[str, list[str]]) -> dict[str, list[str]]:
    """The columns of the tables a move copies, from every table's columns in a cup.

    A cup table keyed by partition that a move would not copy is a bug: refuse.
    """
    keyed = {t for t, names in columns.items() if "partition" in names} - {"partition_state"}
    invariant(keyed == set(TABLES), f"moves copy {TABLES}, the cup has {sorted(keyed)}")
    return {table: columns[table] for table in TABLES}


async def copy_partition(
    source: CopySnapshot,
    target: PartitionSink,
    target_columns: dict[str, list[str]],
    copy: Pass | None = None,
) -> int:
    """The rows ``copy`` selects (default: every row) of the snapshot's partition into
    the target, after deleting there the rows it replaces; returns the rows copied.

    The columns are named (the source's, in order), so the copy does not depend on the
    two cups having their columns in the same order, nor on their kind; both must have
    the same columns.
    """
    tables = (copy or catch_up_pass(0, ())).tables
    rows = 0
    for table in TABLES:
        columns = source.columns[table]
        invariant(
            sorted(columns) == sorted(target_columns[table]),
            f"{table} has the columns {columns} in the source, {target_columns[table]} in the "
            "target: migrate both cups first",
        )
        replaced, selected = tables[table]
        if replaced is not None:
            await target.delete(table, replaced)
        if selected is None:
            continue
        async for chunk in source.selected(table, columns, selected):
            await target.write(table, columns, chunk)
            rows += len(chunk)
    return rows
