"""The credit gauges: set at each scrape from the credit books of the owned partitions."""

from __future__ import annotations

import datetime as dt

from prometheus_client import generate_latest

from engine.core.book import AccountBook
from engine.core.credit import CreditBook
from engine.worker.metrics import WorkerMetrics, day_start_seconds
from tests.unit.credit_rows import START
from tests.unit.test_credit_reconcile import sound_book


def test_a_day_starts_at_midnight_utc() -> None:
    assert day_start_seconds(dt.date(1970, 1, 1).toordinal()) == 0
    midnight = dt.datetime(2026, 12, 2, tzinfo=dt.UTC).timestamp()
    assert day_start_seconds(dt.date(2026, 12, 2).toordinal()) == midnight


def test_the_gauges_follow_the_owned_books_at_each_scrape() -> None:
    metrics = WorkerMetrics()
    ledger = sound_book().ledger
    credit = ledger.credit
    no_calendar = CreditBook(AccountBook(1, 4, {}))
    owned = {0: credit, 1: no_calendar}

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("smallcups_credit_loans_open") == 0, "nothing owned before the worker watches"
    metrics.credit.watch(lambda: owned)

    line = next(iter(credit.lines.values()))
    assert value("smallcups_loans_outstanding_minor_units", currency="EUR") == line.principal > 0
    assert value("smallcups_credit_loans_open") == 1
    assert value("smallcups_credit_overdue_loans") == 1
    assert value("smallcups_credit_holds_open_minor_units", currency="EUR") == 4_000
    open_day = dt.datetime.combine(START + dt.timedelta(days=41), dt.time(), dt.UTC)
    assert value("smallcups_credit_business_day_timestamp_seconds", partition="0") == (
        open_day.timestamp()
    )
    text = generate_latest(metrics.registry).decode()
    assert 'smallcups_credit_business_day_timestamp_seconds{partition="1"}' not in text

    del owned[0]
    assert value("smallcups_credit_business_day_timestamp_seconds", partition="0") is None
    assert value("smallcups_loans_outstanding_minor_units", currency="EUR") is None
    assert value("smallcups_credit_loans_open") == 0
