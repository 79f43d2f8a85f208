"""Which rows each pass of a move copies (shards.partition_copy), and their SQL."""

from __future__ import annotations

import pytest

from engine.core.errors import InvariantError
from shards.cup_admin import Selection
from shards.partition_copy import HISTORY, TABLES, catch_up_pass, precopy_pass

WHOLE = Selection()


def _ids(ids: tuple[str, ...]) -> str:
    return f"command_id IN {ids}"


def test_a_precopy_clears_the_target_then_takes_the_history_below_the_watermark() -> None:
    tables = precopy_pass(1_000).tables
    assert set(tables) == set(TABLES)
    assert all(replaced == WHOLE for replaced, _ in tables.values())
    taken = {table: copied for table, (_, copied) in tables.items() if copied is not None}
    assert taken == {
        "journal": Selection(below=1_000),
        "clearing_entries": Selection(below=1_000),
        "command_results": Selection(below=1_000),
        "transfers_in_flight": WHOLE,
    }


def test_a_later_precopy_round_takes_what_the_last_one_left() -> None:
    """From the last round's watermark to its own, the results of the transfers the
    target holds in flight again, the transfers in flight replaced; no state table."""
    tables = precopy_pass(1_500, 1_000, ["t-1"]).tables
    rows = Selection(below=1_500, since=1_000)
    assert tables["journal"] == (rows, rows)
    assert tables["clearing_entries"] == (rows, rows)
    results = Selection(below=1_500, since=1_000, ids=("t-1",))
    assert tables["command_results"] == (results, results)
    assert tables["transfers_in_flight"] == (WHOLE, WHOLE)
    for table in ("accounts", "outbox", "credit_book"):
        assert tables[table] == (None, None)
    with pytest.raises(InvariantError):
        precopy_pass(999, 1_000)


def test_a_catch_up_takes_the_history_from_the_watermark_and_the_state_whole() -> None:
    tables = catch_up_pass(1_000, ["t-1", "t-2"]).tables
    assert tables["journal"] == (Selection(since=1_000),) * 2
    assert tables["clearing_entries"] == (Selection(since=1_000),) * 2
    results = Selection(since=1_000, ids=("t-1", "t-2"))
    assert tables["command_results"] == (results, results)
    state = set(TABLES) - set(HISTORY)
    assert state == {"accounts", "outbox", "transfers_in_flight", "credit_book", "journal_openings"}
    assert all(tables[table] == (WHOLE, WHOLE) for table in state)


def test_a_catch_up_without_a_precopy_is_a_whole_copy() -> None:
    tables = catch_up_pass(0, ["ignored"]).tables
    assert all(pair == (WHOLE, WHOLE) for pair in tables.values())


def test_a_table_added_to_the_cups_is_state_copied_whole() -> None:
    """Only the history tables are split by input place (cross-lane agreement)."""
    assert set(HISTORY) == {"journal", "command_results", "clearing_entries"}
    for table in set(TABLES) - set(HISTORY):
        assert catch_up_pass(5, ()).tables[table] == (WHOLE, WHOLE)


def test_a_negative_watermark_is_refused() -> None:
    with pytest.raises(InvariantError):
        precopy_pass(-1)
    with pytest.raises(InvariantError):
        catch_up_pass(-1, ())


@pytest.mark.parametrize(
    ("selection", "sql"),
    [
        (WHOLE, "TRUE"),
        (Selection(below=7), "src_offset < 7"),
        (Selection(since=7), "src_offset >= 7"),
        (Selection(below=9, since=7), "src_offset < 9 AND src_offset >= 7"),
        (Selection(since=7, ids=("a",)), "(src_offset >= 7 OR command_id IN ('a',))"),
    ],
)
def test_a_selection_in_sql(selection: Selection, sql: str) -> None:
    assert selection.condition(_ids) == sql
