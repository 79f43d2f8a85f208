"""Turning a committed batch into metrics (per batch, never per metric call per field)."""

from __future__ import annotations

from collections import Counter

import msgspec

from engine.core.batch import Decoded
from engine.core.messages import Invalid, Reason, Status
from engine.core.records import CommitBatch
from engine.worker.metrics import WorkerMetrics


def record_batch(metrics: WorkerMetrics, decoded: Decoded, batch: CommitBatch, now_ms: int) -> None:
    """Counts by type and outcome, rejections and dead letters by reason, forged legs by
    kind, publish delays.

    The loop over the commands only counts objects (command class, status, reason);
    their label strings are looked up once per distinct value."""
    outcome = batch.outcome
    forwarded = len(decoded.forwards)
    metrics.batch_commands.observe(len(decoded.incoming) + len(decoded.dead_reasons) + forwarded)
    if forwarded:
        metrics.forwarded_commands.inc(forwarded)
    tally: Counter[tuple[type[msgspec.Struct], Status]] = Counter()
    rejections: Counter[Reason] = Counter()
    for incoming, result in zip(decoded.incoming, outcome.results, strict=True):
        status = result.status
        if result.reason is Reason.FORGED_LEG:  # a dead letter, counted below
            continue
        tally[(type(incoming.command), status)] += 1
        if status is Status.REJECTED:
            rejections[result.reason] += 1
    metrics.publish_to_commit.observe_many(
        [max(0, now_ms - incoming.published_at_ms) / 1000 for incoming in decoded.incoming]
    )
    for (kind, status), count in tally.items():
        metrics.commands.labels(_type_label(kind), status.value).inc(count)
    for reason, count in rejections.items():
        metrics.rejections.labels(reason.value).inc(count)
    forged = [*decoded.forged_legs, *(f.leg for f in outcome.forged)]
    dead_reasons = [*decoded.dead_reasons, *(["forged_leg"] * len(outcome.forged))]
    if dead_reasons:
        metrics.commands.labels("undecodable", "dead_letter").inc(len(dead_reasons))
    for dead in dead_reasons:
        metrics.dead_letters.labels(dead).inc()
    for leg in forged:
        metrics.forged_legs.labels(leg).inc()


def _type_label(kind: type[msgspec.Struct]) -> str:
    """The ``type`` label of a command class: its message tag, or ``invalid``."""
    if kind is Invalid:
        return "invalid"
    return str(kind.__struct_config__.tag)
