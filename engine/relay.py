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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Final, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from engine.config import KafkaConfig
from engine.errors import InvariantError
from engine.metrics import WorkerMetrics
from shards.store import OutboxKind, OutboxRow

log = logging.getLogger(__name__)

RENEW_INTERVAL_SECONDS: Final = 1.0
"""Least time between two attempts to replace a failed producer."""
STOP_TIMEOUT_SECONDS: Final = 5.0


class _Pending(NamedTuple):
    last_offset: int
    futures: list[asyncio.Future[object]]
    published_ms: Sequence[int]
    rows: int


class Relay:
    """Sends outbox rows and tracks, per partition, the offset below which all are acked."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        kafka: KafkaConfig,
        dlq_partitions: int,
        metrics: WorkerMetrics,
        new_producer: Callable[[], AIOKafkaProducer] | None = None,
    ):
        self._producer = producer
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
            OutboxKind.LEG: kafka.commands_topic,
        }
        self._pending: dict[int, deque[_Pending]] = {}
        self._acked_below: dict[int, int] = {}
        self._failed: set[int] = set()

    async def publish(
        self, partition: int, rows: Sequence[OutboxRow], published_ms: Sequence[int] = ()
    ) -> None:
        """Queue rows of one partition, in offset order, for sending.

        Each row names its target partition: results of command partition p go to results
        partition p (a customer's results stay in order), saga legs to the command
        partition of their account, dead letters to DLQ partition p mod its count. Rows
        are packed into record batches: one future per batch, not per row.
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
        try:
            for (kind, target), chosen in groups.items():
                futures.extend(await self._send_batches(self._topics[kind], target, chosen))
        except KafkaError as error:
            self._fail(partition, error)
            return
        pending = _Pending(rows[-1].src_offset, futures, published_ms, len(rows))
        self._pending.setdefault(partition, deque()).append(pending)
        self._metrics.outbox_backlog.inc(len(rows))

    async def _send_batches(
        self, topic: str, partition: int, rows: Sequence[OutboxRow]
    ) -> list[asyncio.Future[object]]:
        futures = []
        batch = self._producer.create_batch()
        for row in rows:
            if batch.append(key=row.key, value=row.value, timestamp=None) is None:
                futures.append(await self._producer.send_batch(batch, topic, partition=partition))
                batch = self._producer.create_batch()
                if batch.append(key=row.key, value=row.value, timestamp=None) is None:
                    raise InvariantError(f"outbox row of {len(row.value)} bytes fits no batch")
        futures.append(await self._producer.send_batch(batch, topic, partition=partition))
        return futures

    def acked_below(self, partition: int) -> int:
        """Every outbox row of ``partition`` below this offset has been published."""
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
        await self.close()
        self._producer = self._renewed = producer
        self._renew_needed = False
        log.info("the relay's producer was replaced after a failed send")
        return True

    async def close(self) -> None:
        """Stop the producer this relay started, if any (the original is its owner's)."""
        renewed, self._renewed = self._renewed, None
        if renewed is not None:
            try:
                await asyncio.wait_for(renewed.stop(), STOP_TIMEOUT_SECONDS)
            except (KafkaError, TimeoutError) as error:
                log.warning("stopping a replaced producer failed: %s", error)

    def _acked(self, head: _Pending) -> None:
        self._metrics.outbox_backlog.dec(head.rows)
        now_ms = time.time_ns() // 1_000_000
        self._metrics.publish_to_result.observe_many(
            [max(0, now_ms - published) / 1000 for published in head.published_ms]
        )

    def _drop(self, partition: int) -> None:
        for head in self._pending.pop(partition, ()):
            self._metrics.outbox_backlog.dec(head.rows)

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
