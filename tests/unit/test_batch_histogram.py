"""The batch histogram exposes what prometheus_client's Histogram would for the same values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from engine.worker.metrics import LATENCY_BUCKETS_SECONDS, BatchHistogram

VALUES = [0.0, 0.001, 0.0011, 0.1, 0.10001, 0.5, 2.0, 29.9, 30.0, 31.0, 1e6]


def test_a_batch_gives_the_exposition_of_one_observe_per_value() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram(
        "delay_seconds", "Delays.", buckets=LATENCY_BUCKETS_SECONDS, registry=theirs
    )
    batched = BatchHistogram("delay_seconds", "Delays.", LATENCY_BUCKETS_SECONDS, ours)
    for value in VALUES:
        reference.observe(value)
    batched.observe_many(VALUES[:4])
    batched.observe_many(VALUES[4:])

    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if "_created" not in line]

    assert lines(ours) == lines(theirs)
    assert 'delay_seconds_bucket{le="0.1"} 4.0' in lines(ours)
    assert 'delay_seconds_bucket{le="+Inf"} 11.0' in lines(ours)


def test_an_empty_batch_changes_nothing() -> None:
    registry = CollectorRegistry()
    batched = BatchHistogram("delay_seconds", "Delays.", (0.5, 1.0), registry)
    batched.observe_many([])
    assert registry.get_sample_value("delay_seconds_count") == 0.0
    assert registry.get_sample_value("delay_seconds_sum") == 0.0
