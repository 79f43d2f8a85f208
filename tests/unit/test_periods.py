"""The journal's periods, pure: alignment, the partitions made ahead, which are closed,
the ``--before`` bound, and an archive's manifest."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import ConfigError, InvariantError
from engine.core.periods import (
    PERIODS_AHEAD,
    AccountSum,
    Manifest,
    PeriodTotals,
    closed_ends,
    ends_to_make,
    file_sha256,
    parse_bound,
    period_start,
)

DAY = 86_400
NOW = 1_796_179_443  # 2026-12-02T02:44:03Z


@given(st.integers(0, 2**40), st.integers(60, 400 * DAY))
def test_a_period_start_is_aligned_and_holds_the_moment(at_s: int, period: int) -> None:
    start = period_start(at_s, period)
    assert start % period == 0
    assert start <= at_s < start + period


def test_a_period_is_at_least_a_minute() -> None:
    with pytest.raises(InvariantError):
        period_start(NOW, 59)


def test_the_current_and_the_next_period_are_made_after_the_last_end() -> None:
    current_end = period_start(NOW, DAY) + DAY
    assert ends_to_make([NOW + 1], NOW, DAY) == [current_end, current_end + DAY]
    assert ends_to_make([current_end], NOW, DAY) == [current_end + DAY]
    assert ends_to_make([current_end, current_end + DAY], NOW, DAY) == []
    assert len(ends_to_make([], NOW, 60)) == PERIODS_AHEAD


def test_closed_partitions_end_at_or_before_the_bound() -> None:
    start = period_start(NOW, 60)
    ends = [start - 120, start - 60, start, start + 60]
    assert closed_ends(ends, start, NOW, 60) == [start - 120, start - 60, start]
    assert closed_ends(ends, start - 61, NOW, 60) == [start - 120]


def test_a_bound_in_the_current_period_or_later_is_refused() -> None:
    start = period_start(NOW, DAY)
    with pytest.raises(ConfigError, match="current period"):
        closed_ends([], start + 1, NOW, DAY)
    with pytest.raises(ConfigError, match="current period"):
        closed_ends([], NOW + DAY, NOW, DAY)


def test_the_bound_is_a_date_or_a_time_in_utc_unless_it_names_its_offset() -> None:
    assert parse_bound("2026-12-02") == 1_796_169_600
    assert parse_bound("2026-12-02T02:44:03Z") == NOW
    assert parse_bound("2026-12-02T03:44:03+01:00") == NOW
    assert parse_bound("2026-12-02 02:44:03") == NOW
    with pytest.raises(ConfigError, match="not a date"):
        parse_bound("yesterday")


def test_totals_sum_and_count_each_account_in_key_order() -> None:
    totals = PeriodTotals()
    for row in [(1, 7, 1, "EUR", 100), (0, 0, 1, "EUR", -100), (1, 7, 1, "EUR", -30)]:
        totals.add(*row)
    assert totals.rows == 3
    assert totals.sums() == [
        AccountSum(0, 0, 1, "EUR", -100, 1),
        AccountSum(1, 7, 1, "EUR", 70, 2),
    ]
    with pytest.raises(InvariantError):
        totals.add(1, 7, 1, "EUR", 0)


def test_a_manifest_reads_back_as_written_and_counts_every_row() -> None:
    sums = [AccountSum(0, 0, 1, "EUR", -100, 1), AccountSum(1, 7, 1, "EUR", 100, 1)]
    sha = file_sha256([b"abc", b"def"])
    manifest = Manifest(3, NOW, "cup3-journal.jsonl.gz", 2, sha, sums)
    document = manifest.document()
    assert document["period_end"] == "2026-12-02T02:44:03Z"
    assert Manifest.from_document(document) == manifest
    with pytest.raises(InvariantError, match="every row"):
        manifest._replace(rows=3).document()
