"""A lane: one owned partition's pipeline, so fetching never waits for a commit.

A partition's input is two topic partitions, the commands topic's and the internal
topic's (saga legs, privileged commands); the lane queues both in the order they are
fetched, and a batch moves both positions at once (docs/design.md §3).

The worker's fetch loop only hands records to lanes. Each lane commits its partition
batch after batch, one commit in flight at a time (its order is the partition's order);
whatever arrives while a commit is in flight becomes the next batch. So batches are small
and latency low when the load is light, and batches grow with the load instead of the
queue: the batch size follows the commit's latency (docs/design.md §5, pipelining).

The lanes of one cup commit together (``CupCommits``): a lane with records waits for
a round, and a round takes the next batch of every lane waiting at that moment and
commits them all in one statement. At most ``commits_per_cup_max`` rounds of a cup are in
flight; records that arrive while a lane waits join its batch. So under a load spread
over many partitions the cup sees a few large commits, not one small transaction per
command per partition.

Back-pressure: a lane holding more than ``high_water`` records pauses its partition's
fetching; it resumes once it has taken the queue below half of that.

A lane's state (``LaneState``)::

    IDLE ──records──▶ QUEUED ──a round takes its batch──▶ COMMITTING ──▶ IDLE or QUEUED
      any state ──stop()──▶ STOPPING ──its task ends──▶ STOPPED

Invariants: a round takes the batch of a QUEUED lane only (never a stopped one), a lane
has one commit in flight at most, and its batches follow each other without gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError

from engine.core.errors import invariant
from engine.core.records import InputTopics
from engine.worker.partition import PartitionState

RoundHandler = Callable[[list[tuple[PartitionState, list[Any]]]], Awaitable[list[bool]]]
"""Commits and publishes one batch per partition, in one statement; for each, False
when the partition was lost (its lane ends)."""


class LaneState(enum.Enum):
    IDLE = "idle"
    """Waiting for records."""
    QUEUED = "queued"
    """Holding records, waiting for a round of its cup to take them."""
    COMMITTING = "committing"
    """A round took its batch and has not returned."""
    STOPPING = "stopping"
    """Told to stop: finishes a commit in flight, takes no new batch."""
    STOPPED = "stopped"


_NEXT: Final = {
    LaneState.IDLE: {LaneState.QUEUED, LaneState.STOPPING},
    LaneState.QUEUED: {LaneState.COMMITTING, LaneState.STOPPING},
    LaneState.COMMITTING: {LaneState.IDLE, LaneState.QUEUED, LaneState.STOPPING},
    LaneState.STOPPING: {LaneState.STOPPED},
    LaneState.STOPPED: set(),
}


class Lane:
    def __init__(
        self,
        state: PartitionState,
        consumer: AIOKafkaConsumer,
        topics: InputTopics,
        batch_records_max: int,
        cup: CupCommits,
    ):
        self.state = state
        self._consumer = consumer
        self._tps = (
            TopicPartition(topics.commands, state.partition),
            TopicPartition(topics.internal, state.partition),
        )
        self._batch_max = batch_records_max
        self._high_water = 4 * batch_records_max
        self._cup = cup
        self._records: list[Any] = []
        self._next_offset = dict(zip(self._tps, state.position, strict=True))
        """Per topic partition: the offset the next queued record must have at least
        (older ones are stale)."""
        self._hole_seen_at = dict.fromkeys(self._tps, -1)
        """Per topic partition: the offset at which a hole was last seen and re-read (see
        ``offer``)."""
        self._ready = asyncio.Event()
        self._lane_state = LaneState.IDLE
        self._fetch_paused = False
        """Back-pressure: the partition's fetching is paused (orthogonal to the state)."""
        self._task: asyncio.Task[None] | None = None

    @property
    def partition(self) -> int:
        return self.state.partition

    @property
    def stopping(self) -> bool:
        return self._lane_state in (LaneState.STOPPING, LaneState.STOPPED)

    def _become(self, new: LaneState) -> None:
        invariant(
            new in _NEXT[self._lane_state], f"lane {self.partition}: {self._lane_state} -> {new}"
        )
        self._lane_state = new

    def start(self) -> None:
        invariant(self._task is None, "a lane starts once")
        self._fetching(True)  # a lane lost earlier may have left it paused
        self._task = asyncio.create_task(self._run(), name=f"lane-{self.partition}")

    def offer(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        """Queue records fetched from ``tp`` (the partition's commands or internal topic);
        ones before the lane's position there (a re-fetch) are dropped.

        Records must follow on without a hole: a fetch that began before the partition
        was claimed again may start past the claimed offset, and committing it would
        skip commands. Such a batch is dropped and the partition re-read from the
        missing offset; only if Kafka still starts past it is the hole real (Kafka's
        offsets may skip, e.g. transaction markers) and accepted.
        """
        if self.stopping:
            return
        expected = self._next_offset[tp]
        fresh = [r for r in records if r.offset >= expected]
        if not fresh:
            return
        if fresh[0].offset > expected and self._hole_seen_at[tp] != expected:
            self._hole_seen_at[tp] = expected
            self._consumer.seek(tp, expected)
            return
        self._records.extend(fresh)
        self._next_offset[tp] = fresh[-1].offset + 1
        self._ready.set()
        if len(self._records) >= self._high_water and not self._fetch_paused:
            self._fetching(False)

    def failure(self) -> BaseException | None:
        """The exception that ended the lane's task: a bug, which must stop the worker."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    async def stop(self) -> None:
        """Finish the batch in flight (never abandon a commit half-way), then end; a lane
        waiting for records or for its turn ends at once."""
        committing = self._lane_state is LaneState.COMMITTING
        if not self.stopping:
            self._become(LaneState.STOPPING)
        if self._task is not None:
            if not committing:
                self._task.cancel()
            await asyncio.wait([self._task])
        if self._lane_state is LaneState.STOPPING:
            self._become(LaneState.STOPPED)

    def cancel(self) -> None:
        """Abandon the lane (the worker is failing): a commit in flight is decided by the
        cup, and the next owner reads the outcome from it."""
        if self._task is not None:
            self._task.cancel()

    def take_batch(self, records_max: int) -> list[Any]:
        """The next batch (at most ``records_max`` records), for the round that commits it
        (the lane is then committing)."""
        invariant(bool(self._records), "a queued lane holds records")
        size = min(self._batch_max, records_max)
        batch = self._records[:size]
        del self._records[:size]
        if self._fetch_paused and len(self._records) < self._high_water // 2:
            self._fetching(True)
        self._become(LaneState.COMMITTING)
        return batch

    async def _run(self) -> None:
        while not self.stopping:
            await self._ready.wait()
            self._ready.clear()
            while not self.stopping and self._records:
                self._become(LaneState.QUEUED)
                owned = await self._cup.commit(self)
                if self._lane_state is LaneState.COMMITTING:
                    self._become(LaneState.IDLE)
                if not owned:  # lost: the lane ends here
                    if not self.stopping:
                        self._become(LaneState.STOPPING)
                    self._become(LaneState.STOPPED)
                    return

    def _fetching(self, on: bool) -> None:
        """Pause or resume the partition's fetching, from both topics (moot once Kafka
        took it away)."""
        self._fetch_paused = not on
        with contextlib.suppress(IllegalStateError):
            if on:
                self._consumer.resume(*self._tps)
            else:
                self._consumer.pause(*self._tps)


class CupCommits:
    """The commits of one worker's lanes in one cup, in rounds: each round waits for one
    of ``turns``, then takes the next batch of the lanes waiting, longest waiting first,
    up to ``records_max`` records in all, and hands them to ``on_round`` (one statement).
    One round at a time waits for a turn, so every lane that has records meanwhile joins
    it; lanes a full round leaves are first in the next one.

    A lane stopped while it waits is never taken, even by a round that starts before the
    lane's task has seen its cancellation: its hand-over has already flushed the relay,
    so a batch committed then would be published after the partition was forgotten, and
    published again by the next owner from the outbox."""

    def __init__(self, turns: int, records_max: int, on_round: RoundHandler):
        self._turns = asyncio.Semaphore(turns)
        self._records_max = records_max
        self._on_round = on_round
        self._waiting: dict[Lane, asyncio.Future[bool]] = {}
        self._round_pending = False
        self._rounds: set[asyncio.Task[None]] = set()

    async def commit(self, lane: Lane) -> bool:
        """Have the lane's next batch committed; False when its partition was lost."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[lane] = future
        self._start_round()
        try:
            return await future
        finally:
            if self._waiting.get(lane) is future:  # stopped before a round took it
                del self._waiting[lane]

    def _start_round(self) -> None:
        if self._round_pending or not self._waiting:
            return
        self._round_pending = True
        task = asyncio.create_task(self._round(), name="cup-round")
        self._rounds.add(task)
        task.add_done_callback(self._rounds.discard)

    async def _round(self) -> None:
        async with self._turns:
            self._round_pending = False
            taken: dict[Lane, asyncio.Future[bool]] = {}
            work = []
            room = self._records_max
            for lane in list(self._waiting):
                if room <= 0:
                    break
                future = self._waiting.pop(lane)
                if lane.stopping:  # its task is cancelled but has not run since
                    future.cancel()
                    continue
                taken[lane] = future
                batch = lane.take_batch(room)
                room -= len(batch)
                work.append((lane.state, batch))
            self._start_round()
            if not taken:
                return
            invariant(all(batch for _, batch in work), "a round takes no empty batch")
            invariant(room >= 0, "a round holds at most records_max records")
            try:
                owned = await self._on_round(work)
            except asyncio.CancelledError:
                for future in taken.values():
                    future.cancel()
                raise
            except Exception as error:  # a bug: every lane of the round ends with it
                for future in taken.values():
                    if not future.done():
                        future.set_exception(error)
                return
            for future, still_owned in zip(taken.values(), owned, strict=True):
                if not future.done():
                    future.set_result(still_owned)
