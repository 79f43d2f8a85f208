"""The lane's pipeline: order, batch bounds, holes, back-pressure, loss."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple, cast

from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.core.records import InputTopics, Position
from engine.worker.lane import CupCommits, Lane
from engine.worker.partition import PartitionState

TOPICS = InputTopics("t", "t.internal")


class Record(NamedTuple):
    offset: int
    topic: str = TOPICS.commands


class Consumer:
    """Records what the lane asks of the consumer (pause, resume, seek)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.seeks: list[tuple[str, int]] = []

    def pause(self, *tps: TopicPartition) -> None:
        assert {tp.topic for tp in tps} == set(TOPICS), "both topics of the partition"
        self.calls.append(("pause", tps[0].partition))

    def resume(self, *tps: TopicPartition) -> None:
        assert {tp.topic for tp in tps} == set(TOPICS), "both topics of the partition"
        self.calls.append(("resume", tps[0].partition))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.calls.append(("seek", offset))
        self.seeks.append((tp.topic, offset))


class State(NamedTuple):
    partition: int
    position: Position


class Handler:
    """Commits rounds: records each round's batches (partition, offsets)."""

    def __init__(self, lose_after: int = 1_000_000) -> None:
        self.rounds: list[list[tuple[int, list[int]]]] = []
        self.lose_after = lose_after
        self.release = asyncio.Event()
        self.release.set()
        self.bug: Exception | None = None

    @property
    def batches(self) -> list[list[int]]:
        return [offsets for batches in self.rounds for _, offsets in batches]

    async def __call__(self, work: list[tuple[PartitionState, list[Any]]]) -> list[bool]:
        await self.release.wait()
        if self.bug is not None:
            raise self.bug
        self.rounds.append([(s.partition, [r.offset for r in records]) for s, records in work])
        return [len(self.batches) < self.lose_after for _ in work]


def make_lane(
    handler: Handler,
    position: int = 10,
    batch_max: int = 3,
    cup: CupCommits | None = None,
    partition: int = 7,
) -> tuple[Lane, Consumer]:
    consumer = Consumer()
    state = cast(PartitionState, State(partition, Position(position, 3)))
    commits = cup or CupCommits(1, 100, handler)
    lane = Lane(state, cast(AIOKafkaConsumer, consumer), TOPICS, batch_max, commits)
    return lane, consumer


def records(first: int, last: int, topic: str = TOPICS.commands) -> list[Record]:
    return [Record(offset, topic) for offset in range(first, last + 1)]


def offer(lane: Lane, batch: list[Record]) -> None:
    """Hand the lane records fetched from the topic partition they name."""
    lane.offer(TopicPartition(batch[0].topic, lane.partition), batch)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_batches_keep_order_and_bound_and_skip_stale_records() -> None:
    handler = Handler()
    lane, consumer = make_lane(handler)
    lane.start()
    offer(lane, records(5, 14))  # 5..9 are before the claimed position: stale
    await settle()
    await lane.stop()
    assert handler.batches == [[10, 11, 12], [13, 14]]
    assert consumer.calls == [("resume", 7)]


async def test_records_arriving_during_a_commit_form_the_next_batch() -> None:
    handler = Handler()
    handler.release.clear()
    lane, _ = make_lane(handler, batch_max=100)
    lane.start()
    offer(lane, records(10, 10))
    await settle()
    offer(lane, records(11, 13))
    handler.release.set()
    await settle()
    await lane.stop()
    assert handler.batches == [[10], [11, 12, 13]]


async def test_a_hole_is_read_again_once_then_accepted() -> None:
    handler = Handler()
    lane, consumer = make_lane(handler)
    lane.start()
    offer(lane, records(12, 13))  # 10 and 11 missing: re-read from 10
    await settle()
    assert handler.batches == []
    assert consumer.calls[-1] == ("seek", 10)
    offer(lane, records(12, 13))  # Kafka starts past 10 again: the hole is real
    await settle()
    await lane.stop()
    assert handler.batches == [[12, 13]]


async def test_a_full_lane_pauses_fetching_and_resumes_when_drained() -> None:
    handler = Handler()
    handler.release.clear()
    lane, consumer = make_lane(handler, batch_max=2)
    lane.start()
    offer(lane, records(10, 17))  # 8 records: high water is 4 x 2
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
    offer(lane, records(10, 15))
    await settle()
    assert handler.batches == [[10, 11, 12]]
    assert lane.failure() is None
    await lane.stop()


async def test_lanes_of_a_cup_commit_together_and_batch_what_arrives_meanwhile() -> None:
    handler = Handler()
    handler.release.clear()
    cup = CupCommits(1, 100, handler)
    lanes = [make_lane(handler, batch_max=100, cup=cup, partition=p)[0] for p in (1, 2, 3)]
    for lane in lanes:
        lane.start()
    offer(lanes[0], records(10, 10))
    await settle()
    offer(lanes[1], records(10, 10))
    offer(lanes[2], records(10, 11))
    await settle()
    offer(lanes[1], records(11, 12))  # waiting for the next round: joins its batch
    offer(lanes[0], records(11, 11))  # committing: joins once its round is done
    handler.release.set()
    await settle()
    for lane in lanes:
        await lane.stop()
    assert handler.rounds == [[(1, [10])], [(2, [10, 11, 12]), (3, [10, 11]), (1, [11])]]


async def test_rounds_in_flight_are_bounded_by_the_turns() -> None:
    handler = Handler()
    handler.release.clear()
    cup = CupCommits(2, 100, handler)
    lanes = [make_lane(handler, cup=cup, partition=p)[0] for p in (1, 2, 3)]
    for index, lane in enumerate(lanes):
        lane.start()
        offer(lane, records(10, 10))
        await settle()
        assert len(cup._rounds) == index + 1  # a third round waits for a turn
    handler.release.set()
    await settle()
    for lane in lanes:
        await lane.stop()
    assert handler.rounds == [[(1, [10])], [(2, [10])], [(3, [10])]]


async def test_a_round_holds_at_most_records_max_and_the_rest_come_first_next() -> None:
    handler = Handler()
    handler.release.clear()
    cup = CupCommits(1, 4, handler)
    lanes = [make_lane(handler, batch_max=100, cup=cup, partition=p)[0] for p in (1, 2, 3, 4)]
    for lane in lanes:
        lane.start()
    offer(lanes[0], records(10, 10))
    await settle()
    for lane in lanes[1:]:
        offer(lane, records(10, 12))
    await settle()
    handler.release.set()
    await settle()
    for lane in lanes:
        await lane.stop()
    assert handler.rounds[:2] == [[(1, [10])], [(2, [10, 11, 12]), (3, [10])]]
    assert handler.rounds[2][0] == (4, [10, 11, 12])  # left by a full round: first next
    assert all(sum(len(offsets) for _, offsets in batches) <= 4 for batches in handler.rounds)
    committed: dict[int, list[int]] = {}
    for batches in handler.rounds:
        for partition, offsets in batches:
            committed.setdefault(partition, []).extend(offsets)
    assert committed == {1: [10], 2: [10, 11, 12], 3: [10, 11, 12], 4: [10, 11, 12]}


async def test_a_lane_stopped_while_waiting_for_a_round_commits_nothing() -> None:
    handler = Handler()
    handler.release.clear()
    cup = CupCommits(1, 100, handler)
    busy, _ = make_lane(handler, cup=cup, partition=1)
    waiting, _ = make_lane(handler, cup=cup, partition=2)
    busy.start()
    waiting.start()
    offer(busy, records(10, 10))
    await settle()
    offer(waiting, records(10, 12))
    await settle()
    async with asyncio.timeout(1):
        await waiting.stop()  # without waiting for the round in flight
    handler.release.set()
    await settle()
    await busy.stop()
    assert handler.rounds == [[(1, [10])]]
    assert waiting.failure() is None


async def test_a_bug_in_a_round_ends_its_lanes_with_the_error() -> None:
    handler = Handler()
    handler.bug = RuntimeError("bug")
    cup = CupCommits(1, 100, handler)
    lanes = [make_lane(handler, cup=cup, partition=p)[0] for p in (1, 2)]
    for lane in lanes:
        lane.start()
        offer(lane, records(10, 10))
    await settle()
    assert [lane.failure() for lane in lanes] == [handler.bug, handler.bug]


async def test_stop_finishes_the_commit_in_flight() -> None:
    handler = Handler()
    handler.release.clear()
    lane, _ = make_lane(handler)
    lane.start()
    offer(lane, records(10, 15))
    await settle()
    stopping = asyncio.ensure_future(lane.stop())
    await settle()
    assert not stopping.done()
    handler.release.set()
    await stopping
    assert handler.batches == [[10, 11, 12]]


async def test_a_lane_stopped_while_it_waits_for_a_round_is_never_committed() -> None:
    """The round that gets the turn next starts before the stopped lane's task has seen
    its cancellation; it must not take the lane's batch."""
    handler = Handler()
    cup = CupCommits(1, 100, handler)
    first, _ = make_lane(handler, cup=cup, partition=1)
    second, _ = make_lane(handler, cup=cup, partition=2)
    first.start()
    second.start()
    handler.release.clear()
    offer(first, records(10, 11))
    await settle()  # the first round holds the only turn
    offer(second, records(10, 12))
    await settle()  # the second lane waits for the next round
    handler.release.set()
    await asyncio.create_task(second.stop())
    await settle()
    await first.stop()

    assert handler.rounds == [[(1, [10, 11])]]


async def test_both_topics_queue_in_arrival_order_each_with_its_own_position_and_holes() -> None:
    handler = Handler()
    handler.release.clear()
    lane, consumer = make_lane(handler, batch_max=100)
    lane.start()
    offer(lane, records(1, 4, TOPICS.internal))  # 1 and 2 are before the internal position 3
    offer(lane, records(10, 11))
    await settle()
    offer(lane, records(6, 6, TOPICS.internal))  # 5 missing: re-read the internal topic from 5
    assert consumer.seeks == [(TOPICS.internal, 5)]
    offer(lane, records(12, 12))  # the commands topic follows on: no hole there
    offer(lane, records(5, 6, TOPICS.internal))
    handler.release.set()
    await settle()
    await lane.stop()
    assert handler.batches == [[3, 4, 10, 11], [12, 5, 6]]
