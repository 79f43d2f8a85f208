"""A committed batch's metrics: counts by type and outcome, rejections, dead letters, delays."""

from __future__ import annotations

from engine.core.batch import Decoded
from engine.core.book import Incoming, Outcome
from engine.core.messages import Deposit, Invalid, Reason, Result, Status, Transfer
from engine.core.records import CommitBatch, Position
from engine.worker.metrics import WorkerMetrics
from engine.worker.observe import record_batch


def _incoming(offset: int, command: Deposit | Transfer | Invalid) -> Incoming:
    return Incoming(offset, offset, 1_000, command, 0)


def test_a_batch_is_counted_by_type_outcome_and_reason() -> None:
    metrics = WorkerMetrics()
    deposit = Deposit(id="d1", customer=1, account=1, amount=5, currency="EUR")
    transfer = Transfer(
        id="t1", customer=1, account=1, to_customer=2, to_account=1, amount=9, currency="EUR"
    )
    broke = Transfer(
        id="t2", customer=1, account=1, to_customer=2, to_account=1, amount=10**9, currency="EUR"
    )
    invalid = Invalid("x1", 1, Reason.UNKNOWN_CURRENCY, "currency 'XXX' is not supported")
    incoming = [_incoming(0, deposit), _incoming(1, transfer), _incoming(2, broke)]
    incoming.append(_incoming(3, invalid))
    outcome = Outcome(
        results=[
            Result(command_id="d1", status=Status.ACCEPTED),
            Result(command_id="t1", status=Status.PENDING),
            Result(command_id="t2", status=Status.REJECTED, reason=Reason.INSUFFICIENT_FUNDS),
            Result(command_id="x1", status=Status.REJECTED, reason=Reason.UNKNOWN_CURRENCY),
        ]
    )
    end = Position(6, 0)
    decoded = Decoded(end, incoming=incoming, dead_reasons=["undecodable", "undecodable"])
    batch = CommitBatch(0, 1, 0, 6, 0, 0, outcome, [], [], [], 0, 0)

    record_batch(metrics, decoded, batch, now_ms=1_250)

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("smallcups_commands_total", type="deposit", outcome="accepted") == 1
    assert value("smallcups_commands_total", type="transfer", outcome="pending") == 1
    assert value("smallcups_commands_total", type="transfer", outcome="rejected") == 1
    assert value("smallcups_commands_total", type="invalid", outcome="rejected") == 1
    assert value("smallcups_commands_total", type="undecodable", outcome="dead_letter") == 2
    assert value("smallcups_rejections_total", reason="insufficient_funds") == 1
    assert value("smallcups_rejections_total", reason="unknown_currency") == 1
    assert value("smallcups_dead_letters_total", reason="undecodable") == 2
    assert value("smallcups_batch_commands_count") == 1
    assert value("smallcups_batch_commands_sum") == 6
    assert value("smallcups_publish_to_commit_seconds_count") == 4
    assert value("smallcups_publish_to_commit_seconds_sum") == 1.0
    assert value("smallcups_publish_to_commit_seconds_bucket", le="0.25") == 4
    assert value("smallcups_publish_to_commit_seconds_bucket", le="0.1") == 0
