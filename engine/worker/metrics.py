"""Prometheus metrics of a worker process. Names follow Prometheus conventions: the
``smallcups_`` prefix, base units (seconds, minor units), ``_total`` counters.

Label values are bounded: command types, outcomes, reason codes, cup ids and partition
numbers. Never an account, a customer or a command id.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

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


class BatchHistogram(Collector):
    """A histogram without labels, observed a batch of values at a time.

    prometheus_client's ``Histogram.observe`` takes a lock and walks the buckets in
    Python for every value, and the two latency histograms see every command
    (docs/performance.md has its cost). Here a batch costs one bisect per value and one
    addition to the sum. Scrapes read the counts from the metrics thread while the
    event loop adds to them, so a scrape may see a batch's counts before its sum."""

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
