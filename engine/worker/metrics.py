"""Prometheus metrics of a worker process. Names follow Prometheus conventions: the
``smallcups_`` prefix, base units (seconds, minor units), ``_total`` counters.

Label values are bounded: command types, outcomes, reason codes, cup ids, partition
numbers and currencies. Never an account, a customer or a command id.

The credit gauges are computed at each scrape from the credit books of the partitions the
worker owns then (``CreditGauges``): nothing to keep up to date between scrapes, and a
partition that went takes its series with it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import accumulate
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.core.credit import CreditBook

LATENCY_BUCKETS_SECONDS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Latency buckets; 0.1 s is the publish-to-result objective (p99 <= 100 ms)."""

OUTCOMES: Final = ("accepted", "rejected", "pending", "dead_letter")

BATCH_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

SECONDS_PER_DAY: Final = 86_400
UNIX_EPOCH_DAY: Final = dt.date(1970, 1, 1).toordinal()
"""The day number (``date.toordinal``, as engine.core.credit counts days) of 1970-01-01."""

CreditBooks = Callable[[], Mapping[int, CreditBook]]
"""The credit book of every partition the worker owns, by partition."""


class WorkerMetrics:
    """Every metric a worker exports, in one registry (one per process, or per test)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.commands = Counter(
            "smallcups_commands",
            "Commands processed, by command type and outcome "
            "(accepted, rejected, pending, dead_letter).",
            ["type", "outcome"],
            registry=r,
        )
        self.rejections = Counter(
            "smallcups_rejections", "Rejected commands by reason code.", ["reason"], registry=r
        )
        self.dead_letters = Counter(
            "smallcups_dead_letters", "Records sent to the DLQ, by reason.", ["reason"], registry=r
        )
        self.forged_legs = Counter(
            "smallcups_forged_legs",
            "Saga legs refused as not made by a worker (no or wrong MAC, wrong partition, "
            "no matching transfer in flight), by leg type; each went to the DLQ.",
            ["kind"],
            registry=r,
        )
        self.forwarded_commands = Counter(
            "smallcups_forwarded_commands",
            "Commands published to another partition than their customer's (a producer "
            "whose partitioner is not murmur2 of the key), forwarded to it at one more hop.",
            registry=r,
        )
        self.batch_commands = Histogram(
            "smallcups_batch_commands",
            "Records of one partition in one commit round.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_duration = Histogram(
            "smallcups_commit_duration_seconds",
            "Duration of one commit round's statement, by cup.",
            ["cup"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=r,
        )
        self.publish_to_commit = BatchHistogram(
            "smallcups_publish_to_commit_seconds",
            "From the command record's timestamp to the commit of its effects.",
            LATENCY_BUCKETS_SECONDS,
            r,
        )
        self.publish_to_result = BatchHistogram(
            "smallcups_publish_to_result_seconds",
            "From the command record's timestamp to the broker's ack of its result.",
            LATENCY_BUCKETS_SECONDS,
            r,
        )
        self.lag = Gauge(
            "smallcups_consumer_lag_records",
            "Records not yet committed to the cup: high watermarks minus the cup's positions"
            " (commands and internal topic).",
            ["partition"],
            registry=r,
        )
        self.committed_offset = Gauge(
            "smallcups_committed_offset",
            "The cup's next_offset (commands topic) of each owned partition.",
            ["partition"],
            registry=r,
        )
        self.records_pruned = Counter(
            "smallcups_idempotency_records_pruned",
            "Idempotency records deleted because their partition's window passed them.",
            registry=r,
        )
        self.idempotency_horizon = Gauge(
            "smallcups_idempotency_horizon_timestamp_seconds",
            "Each owned partition's idempotency horizon: commands issued before it are "
            "answered id_expired.",
            ["partition"],
            registry=r,
        )
        self.partitions_owned = Gauge(
            "smallcups_partitions_owned", "Partitions this worker owns now.", registry=r
        )
        self.fenced_commits = Counter(
            "smallcups_fenced_commits",
            "Commits refused because another worker claimed the partition.",
            registry=r,
        )
        self.rebalances = Counter(
            "smallcups_rebalances", "Partition assignments received from the group.", registry=r
        )
        self.outbox_backlog = Gauge(
            "smallcups_outbox_backlog_rows",
            "Outbox rows committed but not yet acknowledged by the broker.",
            registry=r,
        )
        self.cup_up = Gauge(
            "smallcups_cup_up",
            "1 when the last statement to the cup succeeded, else 0.",
            ["cup"],
            registry=r,
        )
        self.legs_in_flight = Gauge(
            "smallcups_legs_in_flight",
            "Cross-partition transfer legs sent and not yet applied, by cup.",
            ["cup"],
            registry=r,
        )
        self.money_in_flight = Gauge(
            "smallcups_money_in_flight_minor_units",
            "Money held in clearing for legs in flight, by cup and currency.",
            ["cup", "currency"],
            registry=r,
        )
        self.transfers_stuck = Gauge(
            "smallcups_transfers_stuck",
            "Transfers in flight out of this worker's partitions for longer than "
            "worker.transfer_stuck_seconds, by cup (sum by cup over workers).",
            ["cup"],
            registry=r,
        )
        self.loans_outstanding = Gauge(
            "smallcups_loans_outstanding_minor_units",
            "Principal lent on credit lines and not repaid yet, by currency (this worker's "
            "partitions: sum over workers).",
            ["currency"],
            registry=None,
        )
        self.loans_open = Gauge(
            "smallcups_credit_loans_open", "Loans open in this worker's partitions.", registry=None
        )
        self.overdue_loans = Gauge(
            "smallcups_credit_overdue_loans",
            "Open loans of this worker's partitions still owing principal after the close of "
            "their due date.",
            registry=None,
        )
        self.holds_open = Gauge(
            "smallcups_credit_holds_open_minor_units",
            "Money reserved by open holds in this worker's partitions, by currency.",
            ["currency"],
            registry=None,
        )
        self.business_day = Gauge(
            "smallcups_credit_business_day_timestamp_seconds",
            "Start (midnight UTC, as Unix time) of each owned partition's open business day: "
            "the day after the last one closed (partitions whose calendar has started).",
            ["partition"],
            registry=None,
        )
        self.credit = CreditGauges(
            r,
            self.loans_outstanding,
            self.loans_open,
            self.overdue_loans,
            self.holds_open,
            self.business_day,
        )
        self.cups_down: set[str] = set()
        """Cups whose last statement failed (readiness reads it; the gauge mirrors it)."""

    def outbox_changed(self, rows: int) -> None:
        self.outbox_backlog.inc(rows)

    def results_acked(self, delays_seconds: Sequence[float]) -> None:
        self.publish_to_result.observe_many(delays_seconds)

    def set_cup_up(self, cup: int, up: bool) -> None:
        label = str(cup)
        self.cup_up.labels(label).set(1 if up else 0)
        if up:
            self.cups_down.discard(label)
        else:
            self.cups_down.add(label)

    def forget_cup(self, cup: int) -> None:
        """A cup removed from the map: none of its per-cup gauges, and not down."""
        label = str(cup)
        self.cups_down.discard(label)
        for gauge in (self.cup_up, self.legs_in_flight, self.transfers_stuck):
            with contextlib.suppress(KeyError):
                gauge.remove(label)

    def precreate(
        self,
        command_types: Sequence[str],
        reasons: Sequence[str],
        dead_letter_reasons: Sequence[str],
        leg_types: Sequence[str] = (),
    ) -> None:
        """Create every known label value at 0, so rate() sees the first event too."""
        for kind in leg_types:
            self.forged_legs.labels(kind)
        for kind in command_types:
            for outcome in OUTCOMES:
                self.commands.labels(kind, outcome)
        for reason in reasons:
            self.rejections.labels(reason)
        for reason in dead_letter_reasons:
            self.dead_letters.labels(reason)


class CreditGauges(Collector):
    """The credit gauges, set from the owned partitions' credit books at each scrape.

    A scrape runs on the event loop (engine.worker.health), so no book changes under it.
    It costs one pass over the open lines, loans and holds: once per scrape rather than
    once per commit, and nothing at all before the worker calls ``watch``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        loans_outstanding: Gauge,
        loans_open: Gauge,
        overdue_loans: Gauge,
        holds_open: Gauge,
        business_day: Gauge,
    ):
        self.loans_outstanding = loans_outstanding
        self.loans_open = loans_open
        self.overdue_loans = overdue_loans
        self.holds_open = holds_open
        self.business_day = business_day
        self.gauges = (loans_outstanding, loans_open, overdue_loans, holds_open, business_day)
        self.books: CreditBooks = dict
        registry.register(self)

    def watch(self, books: CreditBooks) -> None:
        """Read ``books`` at each scrape (the worker's owned partitions)."""
        self.books = books

    def describe(self) -> Iterator[Metric]:
        for gauge in self.gauges:
            yield from gauge.describe()

    def collect(self) -> Iterator[Metric]:
        self.refresh()
        for gauge in self.gauges:
            yield from gauge.collect()

    def refresh(self) -> None:
        outstanding: dict[str, int] = {}
        held: dict[str, int] = {}
        loans_open = overdue = 0
        self.business_day.clear()
        for partition, book in self.books().items():
            for currency, principal in book.outstanding().items():
                outstanding[currency] = outstanding.get(currency, 0) + principal
            for hold in book.holds.values():
                held[hold.currency] = held.get(hold.currency, 0) + hold.amount
            loans_open += sum(len(loans) for loans in book.loans.values())
            overdue += book.overdue_loans()
            if book.today is not None:
                self.business_day.labels(str(partition)).set(day_start_seconds(book.today))
        _set_by_currency(self.loans_outstanding, outstanding)
        _set_by_currency(self.holds_open, held)
        self.loans_open.set(loans_open)
        self.overdue_loans.set(overdue)


def day_start_seconds(day: int) -> int:
    """Unix time of midnight UTC starting ``day`` (a ``date.toordinal`` day number)."""
    return (day - UNIX_EPOCH_DAY) * SECONDS_PER_DAY


def _set_by_currency(gauge: Gauge, totals: dict[str, int]) -> None:
    gauge.clear()
    for currency, total in totals.items():
        gauge.labels(currency).set(total)


class BatchHistogram(Collector):
    """A histogram without labels, observed a batch of values at a time.

    prometheus_client's ``Histogram.observe`` takes a lock and walks the buckets in
    Python for every value, and the two latency histograms see every command
    (docs/performance.md has its cost). Here a batch costs one bisect per value and one
    addition to the sum. Scrapes run on the event loop too (engine.worker.health), so a
    scrape sees a batch whole or not at all."""

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ):
        self.name = name
        self.documentation = documentation
        self.bounds = [*buckets, math.inf]
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        bounds, counts, total = self.bounds, self.counts, 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1
            total += value
        self.sum += total

    def collect(self) -> Iterator[Metric]:
        cumulative = accumulate(list(self.counts))
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=[(_le(b), c) for b, c in zip(self.bounds, cumulative, strict=True)],
            sum_value=self.sum,
        )


def _le(bound: float) -> str:
    """A bucket's ``le`` label as prometheus_client writes it (``0.25``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == math.inf else repr(float(bound))
