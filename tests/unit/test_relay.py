"""The relay's queues: a caller never waits on the broker, order and failures hold."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

import engine.kafka.relay
from engine.core.config import KafkaConfig
from engine.core.records import OutboxKind, OutboxRow
from engine.kafka.relay import Relay
from engine.worker.metrics import WorkerMetrics

KAFKA = KafkaConfig()
RESULTS = KAFKA.results_topic


class Batch:
    """A record batch that holds ``room`` records."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.values: list[bytes] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: None) -> object | None:
        if len(self.values) == self.room:
            return None
        self.values.append(value)
        return object()


class Producer:
    """aiokafka's hand-over rule: a partition's next batch is taken only once the one
    before it has left in a produce request (``drain``)."""

    def __init__(self, room: int = 100) -> None:
        self.room = room
        self.taken: list[tuple[str, int, list[bytes]]] = []
        self.acks: list[asyncio.Future[object]] = []
        self.refusal: KafkaError | None = None
        self._undrained: dict[tuple[str, int], asyncio.Event] = {}

    def create_batch(self) -> Batch:
        return Batch(self.room)

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> Any:
        target = (topic, partition)
        while (undrained := self._undrained.get(target)) is not None:
            await undrained.wait()
        if self.refusal is not None:
            raise self.refusal
        self._undrained[target] = asyncio.Event()
        self.taken.append((topic, partition, batch.values))
        self.acks.append(asyncio.get_running_loop().create_future())
        return self.acks[-1]

    def drain(self, partition: int, topic: str = RESULTS) -> None:
        self._undrained.pop((topic, partition)).set()

    def ack_all(self) -> None:
        for ack in self.acks:
            if not ack.done():
                ack.set_result(None)


def rows(partition: int, *offsets: int) -> list[OutboxRow]:
    return [
        OutboxRow(o, 0, OutboxKind.RESULT, b"k", f"{partition}:{o}".encode(), partition)
        for o in offsets
    ]


def relay_of(producer: Producer) -> Relay:
    return Relay(cast(AIOKafkaProducer, producer), KAFKA, 1, WorkerMetrics())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_publish_does_not_wait_for_the_previous_batch_to_leave() -> None:
    producer = Producer()
    relay = relay_of(producer)
    await asyncio.wait_for(relay.publish(0, rows(0, 0, 1)), 1)
    await asyncio.wait_for(relay.publish(0, rows(0, 2)), 1)
    await settle()
    assert producer.taken == [(RESULTS, 0, [b"0:0", b"0:1"])]
    producer.drain(0)
    await settle()
    assert [values for _, _, values in producer.taken] == [[b"0:0", b"0:1"], [b"0:2"]]
    assert relay.settle(0) == 0
    producer.ack_all()
    await settle()
    assert relay.settle(0) == 3


async def test_a_full_batch_continues_in_the_next_one_in_order() -> None:
    producer = Producer(room=2)
    relay = relay_of(producer)
    await relay.publish(0, rows(0, 0, 1, 2, 3, 4))
    for _ in range(2):
        await settle()
        producer.drain(0)
    await settle()
    assert [values for _, _, values in producer.taken] == [
        [b"0:0", b"0:1"],
        [b"0:2", b"0:3"],
        [b"0:4"],
    ]


async def test_batches_of_a_forgotten_partition_still_queued_are_never_sent() -> None:
    """The batch the producer is already taking may still go (a duplicate at worst, as
    after a crash); the ones queued behind it do not."""
    producer = Producer()
    relay = relay_of(producer)
    for offset in range(3):
        await relay.publish(0, rows(0, offset))
    await relay.publish(1, rows(1, 0))
    await settle()
    relay.forget(0)
    producer.drain(0)
    await settle()
    producer.drain(0)
    await relay.publish(0, rows(0, 3))
    await settle()
    taken = [values for _, _, values in producer.taken]
    assert taken == [[b"0:0"], [b"1:0"], [b"0:1"], [b"0:3"]]


async def test_a_refused_hand_over_fails_the_partition_and_stops_its_queue() -> None:
    producer = Producer()
    relay = relay_of(producer)
    await relay.publish(0, rows(0, 0))
    await relay.publish(0, rows(0, 1))
    await relay.publish(0, rows(0, 2))
    await settle()
    producer.refusal = KafkaTimeoutError()
    producer.drain(0)
    await settle()
    assert relay.failed(0)
    assert [values for _, _, values in producer.taken] == [[b"0:0"]]
    producer.ack_all()
    assert relay.settle(0) == 0
    await relay.publish(0, rows(0, 3))
    await settle()
    assert len(producer.taken) == 1


async def test_publish_waits_for_room_past_the_queue_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine.kafka.relay, "QUEUED_BATCHES_MAX", 2)
    producer = Producer()
    relay = relay_of(producer)
    for offset in range(3):
        await asyncio.wait_for(relay.publish(0, rows(0, offset)), 1)
    await settle()
    fourth = asyncio.create_task(relay.publish(0, rows(0, 3)))
    await settle()
    assert not fourth.done()
    producer.drain(0)
    await settle()
    assert fourth.done()
    await fourth


async def test_close_stops_the_queues() -> None:
    producer = Producer()
    relay = relay_of(producer)
    await relay.publish(0, rows(0, 0))
    await relay.publish(0, rows(0, 1))
    await settle()
    await asyncio.wait_for(relay.close(), 1)
    assert relay.failure() is None
    assert len(producer.taken) == 1


async def test_a_batch_the_producer_cancels_fails_its_partition() -> None:
    producer = Producer()
    relay = relay_of(producer)
    await relay.publish(0, rows(0, 0))
    await settle()
    producer.acks[0].cancel()
    await settle()
    assert relay.settle(0) == 0
    assert relay.failed(0)
