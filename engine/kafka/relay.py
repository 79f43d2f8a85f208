"""The outbox relay: publishes committed results and dead letters to Kafka.

Rows reach the relay only after their commit, so a result is never published for a
command whose effects could still roll back. The producer is idempotent (acks=all), and
a row stays in the cup's outbox until its send is acknowledged; a crash in between means
the next owner of the partition re-sends it. A result may therefore arrive twice,
identical both times: readers deduplicate by command id.

A failed send (an error on a record batch, or the producer refusing it) marks the
partition failed: nothing more of it is sent and its watermark stops, so no row past the
failure is ever trimmed before it is acknowledged. The worker then gives the partition up
and claims it again, and the claim re-sends the whole unsent outbox in order.

A failed send also makes the relay replace its producer before it sends again: the
idempotent producer numbers its batches, and one that failed (expired while the broker
was down) leaves a gap the broker refuses for good (OutOfOrderSequenceNumber on every
later batch of the partition). A new producer gets a new producer id and starts over, so
every partition with sends in flight on the old one fails too and is claimed again.

Publishing never waits on the broker. aiokafka takes a prebuilt record batch for a
partition only once the previous one for that partition has left in a produce request
(after its linger, and after the request before it was answered), so a caller that
awaited each hand-over waited up to a produce round trip per target partition: a round
of commits held its cup's turn while it did. Instead each target partition has a queue of
record batches and one task that hands them to the producer in order; a caller gets one
future per batch and returns at once, unless more than QUEUED_BATCHES_MAX batches wait
in the queues (then it waits for room: the broker's pace still bounds the workers').
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, Final, NamedTuple, Protocol

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from engine.core.config import KafkaConfig
from engine.core.errors import InvariantError
from engine.core.messages import (
    CONTENT_TYPE_HEADER,
    FORWARDED_FROM_HEADER,
    JSON_CONTENT_TYPE,
    Forwarded,
)
from engine.core.records import OutboxKind, OutboxRow
from engine.kafka.connection import ACCESS_ERRORS, access_denied

log = logging.getLogger(__name__)

RENEW_INTERVAL_SECONDS: Final = 1.0
"""Least time between two attempts to replace a failed producer."""
STOP_TIMEOUT_SECONDS: Final = 5.0
QUEUED_BATCHES_MAX: Final = 1_024
"""Record batches waiting in the relay's queues (not yet with the producer) before
publish() waits for room."""


class RelayMetrics(Protocol):
    """What the relay reports (engine.worker.metrics.WorkerMetrics implements it)."""

    def outbox_changed(self, rows: int) -> None:
        """Rows committed and not yet acknowledged grew (or, negative, shrank) by ``rows``."""
        ...

    def results_acked(self, delays_seconds: Sequence[float]) -> None:
        """Results the broker acknowledged, each with its delay since the command's
        publish."""
        ...


class _Pending(NamedTuple):
    last_offset: int
    futures: list[asyncio.Future[object]]
    published_ms: Sequence[int]
    rows: int
    queued_at: float
    """time.monotonic() when publish() took the rows."""


class _Queued(NamedTuple):
    partition: int
    """The command partition whose outbox rows the batch holds."""
    batch: BatchBuilder
    delivery: asyncio.Future[object]


class Relay:
    """Sends outbox rows and tracks, per partition, the offset below which all are acked."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        kafka: KafkaConfig,
        dlq_partitions: int,
        metrics: RelayMetrics,
        new_producer: Callable[[], AIOKafkaProducer] | None = None,
    ):
        self._producer = producer
        self._kafka = kafka
        self._new_producer = new_producer
        self._renewed: AIOKafkaProducer | None = None
        """The producer this relay started itself (it stops it); None while the original."""
        self._renew_needed = False
        self._renewed_at = 0.0
        self._metrics = metrics
        self._dlq_partitions = dlq_partitions
        self._topics = {
            OutboxKind.RESULT: kafka.results_topic,
            OutboxKind.DEAD_LETTER: kafka.dlq_topic,
            OutboxKind.LEG: kafka.internal_topic,
            OutboxKind.FORWARD: kafka.commands_topic,
        }
        self._pending: dict[int, deque[_Pending]] = {}
        self._acked_below: dict[int, int] = {}
        self._failed: set[int] = set()
        self._queues: dict[tuple[str, int], deque[_Queued]] = {}
        """Per target (topic, partition): batches not yet handed to the producer."""
        self._feeders: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._queued = 0
        self._room = asyncio.Event()
        self._crash: BaseException | None = None
        self._failing_since: float | None = None
        """time.monotonic() of the first failed send since the last acknowledgement."""

    async def publish(
        self, partition: int, rows: Sequence[OutboxRow], published_ms: Sequence[int] = ()
    ) -> None:
        """Queue rows of one partition, in offset order, for sending.

        Each row names its target partition: results of command partition p go to results
        partition p (a customer's results stay in order), saga legs to the internal
        topic's partition of their account, forwards to the commands topic's, dead letters
        to DLQ partition p mod its count. Rows are packed into record batches: one future
        per batch, not per row.
        """
        if not rows or partition in self._failed:
            return
        if self._renew_needed and not await self._renew():
            self._fail(partition, None)
            return
        groups: dict[tuple[OutboxKind, int], list[OutboxRow]] = {}
        for row in rows:
            target = row.target_partition
            if row.kind is OutboxKind.DEAD_LETTER:
                target %= self._dlq_partitions
            groups.setdefault((row.kind, target), []).append(row)
        futures: list[asyncio.Future[object]] = []
        for (kind, target), chosen in groups.items():
            futures.extend(self._enqueue(partition, (self._topics[kind], target), chosen))
        pending = _Pending(rows[-1].src_offset, futures, published_ms, len(rows), time.monotonic())
        self._pending.setdefault(partition, deque()).append(pending)
        self._metrics.outbox_changed(len(rows))
        while self._queued > QUEUED_BATCHES_MAX:
            self._room.clear()
            await self._room.wait()

    def _enqueue(
        self, partition: int, target: tuple[str, int], rows: Sequence[OutboxRow]
    ) -> list[asyncio.Future[object]]:
        """Pack ``rows`` into record batches queued for ``target``; one future each."""
        batches = [self._producer.create_batch()]
        for row in rows:
            record = _record(partition, row)
            if batches[-1].append(**record) is None:
                batches.append(self._producer.create_batch())
                if batches[-1].append(**record) is None:
                    raise InvariantError(f"outbox row of {len(row.value)} bytes fits no batch")
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(target, deque())
        queued = [_Queued(partition, batch, loop.create_future()) for batch in batches]
        queue.extend(queued)
        self._queued += len(queued)
        if target not in self._feeders:
            self._feeders[target] = asyncio.create_task(self._feed(target, queue))
        return [q.delivery for q in queued]

    async def _feed(self, target: tuple[str, int], queue: deque[_Queued]) -> None:
        """Hand ``target``'s queued batches to the producer, in order, until none is left.
        A batch whose partition was dropped meanwhile (its future cancelled) is skipped."""
        topic, partition = target
        try:
            while queue:
                queued = queue[0]
                if not queued.delivery.done():
                    try:
                        sent = await self._producer.send_batch(
                            queued.batch, topic, partition=partition
                        )
                    except KafkaError as error:
                        if not queued.delivery.done():
                            self._fail(queued.partition, error)
                    else:
                        sent.add_done_callback(partial(_settle, queued.delivery))
                queue.popleft()
                self._queued -= 1
                if self._queued <= QUEUED_BATCHES_MAX:
                    self._room.set()
        except Exception as error:  # not the broker refusing a batch: a bug
            self._crash = error
            raise
        finally:
            del self._feeders[target]

    def stalled_seconds(self, now: float) -> float:
        """How long the relay has had rows to send without getting any of them through: the
        age of its oldest unacknowledged send, or the time since sends began failing
        (without an acknowledgement since), whichever is longer; 0 with nothing to send.
        ``now`` is a time.monotonic() reading.

        Only an acknowledgement ends a run of failures: between a failure and the re-send
        after the partition's claim the relay holds nothing, and that gap must not hide
        that nothing got through."""
        if not self._failed and not any(self._pending.values()):
            return 0.0
        oldest = min((queue[0].queued_at for queue in self._pending.values() if queue), default=now)
        failing = now if self._failing_since is None else self._failing_since
        return max(0.0, now - min(oldest, failing))

    def failure(self) -> BaseException | None:
        """The error that stopped a queue's hand-over (a bug), or the broker's refusal of
        this worker's rights; the worker must stop."""
        return self._crash

    def settle(self, partition: int) -> int:
        """Take in the sends of ``partition`` that are done, oldest first: acknowledged
        ones move its watermark (and the latency histogram); a failed one fails the
        partition (``failed``). Returns the watermark."""
        pending = self._pending.get(partition)
        while pending:
            head = pending[0]
            if not all(f.done() for f in head.futures):
                break
            failed = [f.exception() for f in head.futures if f.exception() is not None]
            if failed:
                self._fail(partition, failed[0])
                break
            pending.popleft()
            self._acked(head)
            self._acked_below[partition] = head.last_offset + 1
        return self._acked_below.get(partition, 0)

    def failed(self, partition: int) -> bool:
        """Whether a send of ``partition`` failed: it must be claimed again (re-sent)."""
        return partition in self._failed

    @property
    def failed_partitions(self) -> frozenset[int]:
        return frozenset(self._failed)

    def _fail(self, partition: int, error: BaseException | None) -> None:
        """A send of ``partition`` failed, or could not even be queued (the producer waited
        past its request timeout for room, or a new one could not start yet)."""
        if isinstance(error, ACCESS_ERRORS) and self._crash is None:
            self._crash = access_denied(self._kafka, error)  # re-sending cannot help
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        if error is not None:
            log.warning("publishing partition %d failed (%r); will re-send", partition, error)
            self._renew_needed = self._new_producer is not None
        for failed in [partition, *self._pending] if self._renew_needed else [partition]:
            self._drop(failed)
            self._failed.add(failed)

    async def _renew(self) -> bool:
        """Replace the producer (bounded: once per RENEW_INTERVAL_SECONDS); True when done."""
        now = time.monotonic()
        if self._new_producer is None or now - self._renewed_at < RENEW_INTERVAL_SECONDS:
            return False
        self._renewed_at = now
        producer = self._new_producer()
        try:
            await producer.start()
        except KafkaError as error:
            log.warning("a new producer could not start (%s); will retry", error)
            await producer.stop()
            return False
        await self._stop_renewed()
        self._producer = self._renewed = producer
        self._renew_needed = False
        log.info("the relay's producer was replaced after a failed send")
        return True

    async def close(self) -> None:
        """Stop handing batches over, and stop the producer this relay started, if any
        (the original is its owner's)."""
        feeders = list(self._feeders.values())
        for feeder in feeders:
            feeder.cancel()
        await asyncio.gather(*feeders, return_exceptions=True)
        await self._stop_renewed()

    async def _stop_renewed(self) -> None:
        renewed, self._renewed = self._renewed, None
        if renewed is not None:
            try:
                await asyncio.wait_for(renewed.stop(), STOP_TIMEOUT_SECONDS)
            except (KafkaError, TimeoutError) as error:
                log.warning("stopping a replaced producer failed: %s", error)

    def _acked(self, head: _Pending) -> None:
        self._failing_since = None
        self._metrics.outbox_changed(-head.rows)
        now_ms = time.time_ns() // 1_000_000
        self._metrics.results_acked(
            [max(0, now_ms - published) / 1000 for published in head.published_ms]
        )

    def _drop(self, partition: int) -> None:
        """Stop tracking ``partition``'s sends; its batches still queued are not sent."""
        for head in self._pending.pop(partition, ()):
            self._metrics.outbox_changed(-head.rows)
            for delivery in head.futures:
                delivery.cancel()

    def forget(self, partition: int) -> None:
        """Stop tracking a partition this worker no longer owns."""
        self._drop(partition)
        self._acked_below.pop(partition, None)
        self._failed.discard(partition)

    async def flush(self, timeout_seconds: float, partitions: Iterable[int] | None = None) -> None:
        """Wait (bounded) until what is queued so far is acknowledged or failed."""
        chosen = self._pending.keys() if partitions is None else partitions
        queues = [self._pending[p] for p in chosen if p in self._pending]
        futures = [f for queue in queues for head in queue for f in head.futures]
        if futures:
            await asyncio.wait(futures, timeout=timeout_seconds)


def _record(partition: int, row: OutboxRow) -> dict[str, Any]:
    """The Kafka record of an outbox row. A forward is the original command as it came
    (its timestamp too), with a header naming the partition it was published to."""
    if row.kind is not OutboxKind.FORWARD:
        return {"key": row.key, "value": row.value, "timestamp": None}
    forwarded = _forwarded.decode(row.value)
    headers = [(FORWARDED_FROM_HEADER, str(partition).encode())]
    if forwarded.json:
        headers.append((CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE))
    return {
        "key": row.key,
        "value": forwarded.value,
        "timestamp": forwarded.timestamp_ms if forwarded.timestamp_ms >= 0 else None,
        "headers": headers,
    }


_forwarded: Final = msgspec.msgpack.Decoder(Forwarded)


def _settle(delivery: asyncio.Future[object], sent: asyncio.Future[object]) -> None:
    """Pass a batch's outcome at the broker on to the future the relay's caller holds."""
    if delivery.done():
        return
    if sent.cancelled():  # a failure like any other: the partition is sent again
        delivery.set_exception(KafkaError("the producer cancelled the batch"))
    elif (error := sent.exception()) is not None:
        delivery.set_exception(error)
    else:
        delivery.set_result(sent.result())
