"""Turning a committed batch into metrics (per batch, never per metric call per field)."""

from __future__ import annotations

from collections import Counter

from engine.messages import Invalid, Status
from engine.metrics import WorkerMetrics
from engine.partition import Decoded
from shards.store import CommitBatch


def record_batch(metrics: WorkerMetrics, decoded: Decoded, batch: CommitBatch, now_ms: int) -> None:
    """Counts by type and outcome, rejections and dead letters by reason, publish delays."""
    outcome = batch.outcome
    metrics.batch_commands.observe(len(decoded.incoming) + len(decoded.dead_reasons))
    tally: Counter[tuple[str, str]] = Counter()
    rejections: Counter[str] = Counter()
    delay = metrics.publish_to_commit
    for incoming, result in zip(decoded.incoming, outcome.results, strict=True):
        command = incoming.command
        kind = "invalid" if isinstance(command, Invalid) else command.__struct_config__.tag
        tally[(str(kind), result.status.value)] += 1
        if result.status is Status.REJECTED:
            rejections[result.reason.value] += 1
        delay.observe(max(0, now_ms - incoming.published_at_ms) / 1000)
    for reason in decoded.dead_reasons:
        tally[("undecodable", "dead_letter")] += 1
        metrics.dead_letters.labels(reason).inc()
    for (kind, status), count in tally.items():
        metrics.commands.labels(kind, status).inc(count)
    for reason, count in rejections.items():
        metrics.rejections.labels(reason).inc(count)
