"""The lane's pipeline: order, batch bounds, holes, back-pressure, loss."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple, cast

from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.lane import Lane
from engine.partition import PartitionState


class Record(NamedTuple):
    offset: int


class Consumer:
    """Records what the lane asks of the consumer (pause, resume, seek)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def pause(self, tp: TopicPartition) -> None:
        self.calls.append(("pause", tp.partition))

    def resume(self, tp: TopicPartition) -> None:
        self.calls.append(("resume", tp.partition))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.calls.append(("seek", offset))


class State(NamedTuple):
    partition: int
    position: int


class Handler:
    def __init__(self, lose_after: int = 1_000_000) -> None:
        self.batches: list[list[int]] = []
        self.lose_after = lose_after
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, state: PartitionState, records: list[Any]) -> bool:
        await self.release.wait()
        self.batches.append([r.offset for r in records])
        return len(self.batches) < self.lose_after


def make_lane(
    handler: Handler,
    position: int = 10,
    batch_max: int = 3,
    turns: asyncio.Semaphore | None = None,
    partition: int = 7,
) -> tuple[Lane, Consumer]:
    consumer = Consumer()
    state = cast(PartitionState, State(partition, position))
    gate = turns or asyncio.Semaphore(1)
    lane = Lane(state, cast(AIOKafkaConsumer, consumer), "t", batch_max, gate, handler)
    return lane, consumer


def records(first: int, last: int) -> list[Record]:
    return [Record(offset) for offset in range(first, last + 1)]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_batches_keep_order_and_bound_and_skip_stale_records() -> None:
    handler = Handler()
    lane, consumer = make_lane(handler)
    lane.start()
    lane.offer(records(5, 14))  # 5..9 are before the claimed position: stale
    await settle()
    await lane.stop()
    assert handler.batches == [[10, 11, 12], [13, 14]]
    assert consumer.calls == [("resume", 7)]


async def test_records_arriving_during_a_commit_form_the_next_batch() -> None:
    handler = Handler()
    handler.release.clear()
    lane, _ = make_lane(handler, batch_max=100)
    lane.start()
    lane.offer(records(10, 10))
    await settle()
    lane.offer(records(11, 13))
    handler.release.set()
    await settle()
    await lane.stop()
    assert handler.batches == [[10], [11, 12, 13]]


async def test_a_hole_is_read_again_once_then_accepted() -> None:
    handler = Handler()
    lane, consumer = make_lane(handler)
    lane.start()
    lane.offer(records(12, 13))  # 10 and 11 missing: re-read from 10
    await settle()
    assert handler.batches == []
    assert consumer.calls[-1] == ("seek", 10)
    lane.offer(records(12, 13))  # Kafka starts past 10 again: the hole is real
    await settle()
    await lane.stop()
    assert handler.batches == [[12, 13]]


async def test_a_full_lane_pauses_fetching_and_resumes_when_drained() -> None:
    handler = Handler()
    handler.release.clear()
    lane, consumer = make_lane(handler, batch_max=2)
    lane.start()
    lane.offer(records(10, 17))  # 8 records: high water is 4 x 2
    assert consumer.calls[-1] == ("pause", 7)
    handler.release.set()
    await settle()
    await lane.stop()
    assert ("resume", 7) in consumer.calls[consumer.calls.index(("pause", 7)) :]
    assert [offset for batch in handler.batches for offset in batch] == list(range(10, 18))


async def test_a_lost_partition_ends_the_lane_without_error() -> None:
    handler = Handler(lose_after=1)
    lane, _ = make_lane(handler)
    lane.start()
    lane.offer(records(10, 15))
    await settle()
    assert handler.batches == [[10, 11, 12]]
    assert lane.failure() is None
    await lane.stop()


async def test_lanes_of_a_cup_take_turns_and_batch_what_arrives_meanwhile() -> None:
    handler = Handler()
    handler.release.clear()
    turns = asyncio.Semaphore(1)
    first, _ = make_lane(handler, batch_max=100, turns=turns, partition=1)
    second, _ = make_lane(handler, batch_max=100, turns=turns, partition=2)
    first.start()
    second.start()
    first.offer(records(10, 10))
    await settle()
    second.offer(records(10, 10))
    await settle()
    second.offer(records(11, 12))  # waiting for its turn: joins the same batch
    handler.release.set()
    await settle()
    await first.stop()
    await second.stop()
    assert handler.batches == [[10], [10, 11, 12]]


async def test_a_lane_stopped_while_waiting_for_its_turn_commits_nothing() -> None:
    handler = Handler()
    turns = asyncio.Semaphore(1)
    lane, _ = make_lane(handler, turns=turns)
    await turns.acquire()
    lane.start()
    lane.offer(records(10, 12))
    await settle()
    async with asyncio.timeout(1):
        await lane.stop()  # without waiting for the turn another lane holds
    turns.release()
    await settle()
    assert handler.batches == []
    assert lane.failure() is None


async def test_stop_finishes_the_commit_in_flight() -> None:
    handler = Handler()
    handler.release.clear()
    lane, _ = make_lane(handler)
    lane.start()
    lane.offer(records(10, 15))
    await settle()
    stopping = asyncio.ensure_future(lane.stop())
    await settle()
    assert not stopping.done()
    handler.release.set()
    await stopping
    assert handler.batches == [[10, 11, 12]]
