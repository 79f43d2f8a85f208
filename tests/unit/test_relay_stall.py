"""How long the relay has had rows to send without getting any through: what /readyz
compares with worker.relay_stall_max_seconds."""

from __future__ import annotations

import time

from aiokafka.errors import KafkaTimeoutError

from tests.unit.test_relay import Producer, relay_of, rows, settle


async def test_an_idle_relay_is_not_stalled() -> None:
    relay = relay_of(Producer())
    assert relay.stalled_seconds(time.monotonic() + 1_000) == 0.0


async def test_an_unacknowledged_send_stalls_until_it_is_acknowledged() -> None:
    producer = Producer()
    relay = relay_of(producer)
    queued = time.monotonic()
    await relay.publish(0, rows(0, 0, 1))
    await settle()
    assert relay.stalled_seconds(queued + 90) >= 89.9
    producer.ack_all()
    await settle()
    assert relay.settle(0) == 2
    assert relay.stalled_seconds(queued + 90) == 0.0


async def test_failing_sends_stall_the_relay_across_claims() -> None:
    """A failed send drops the partition's rows; claimed again, it re-sends: the stall is
    counted from the first failure, not from the re-send."""
    producer = Producer()
    producer.refusal = KafkaTimeoutError()
    relay = relay_of(producer)
    failed_at = time.monotonic()
    await relay.publish(0, rows(0, 0))
    await settle()
    assert relay.failed(0)
    assert relay.stalled_seconds(failed_at + 70) >= 69.9
    relay.forget(0)
    assert relay.stalled_seconds(failed_at + 70) == 0.0, "nothing to send while it waits"
    await relay.publish(0, rows(0, 0))
    await settle()
    assert relay.stalled_seconds(failed_at + 70) >= 69.9
    producer.refusal = None
    relay.forget(0)
    await relay.publish(0, rows(0, 0))
    await settle()
    producer.ack_all()
    await settle()
    relay.settle(0)
    assert relay.stalled_seconds(time.monotonic()) == 0.0
