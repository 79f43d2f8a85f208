"""The outbox relay: publishes committed results and dead letters to Kafka.

Rows reach the relay only after their commit, so a result is never published for a
command whose effects could still roll back. The producer is idempotent (acks=all), and
a row stays in the cup's outbox until its send is acknowledged; a crash in between means
the next owner of the partition re-sends it. A result may therefore arrive twice,
identical both times: readers deduplicate by command id.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaProducer

from engine.config import KafkaConfig
from engine.errors import InvariantError
from shards.store import OutboxKind, OutboxRow

log = logging.getLogger(__name__)

_Pending = tuple[int, list["asyncio.Future[object]"]]


class Relay:
    """Sends outbox rows and tracks, per partition, the offset below which all are acked."""

    def __init__(self, producer: AIOKafkaProducer, kafka: KafkaConfig, dlq_partitions: int):
        self._producer = producer
        self._dlq_partitions = dlq_partitions
        self._topics = {
            OutboxKind.RESULT: kafka.results_topic,
            OutboxKind.DEAD_LETTER: kafka.dlq_topic,
            OutboxKind.LEG: kafka.commands_topic,
        }
        self._pending: dict[int, deque[_Pending]] = {}
        self._acked_below: dict[int, int] = {}
        self._resend: set[int] = set()

    async def publish(self, partition: int, rows: Sequence[OutboxRow]) -> None:
        """Queue rows of one partition, in offset order, for sending.

        Each row names its target partition: results of command partition p go to results
        partition p (a customer's results stay in order), saga legs to the command
        partition of their account, dead letters to DLQ partition p mod its count. Rows
        are packed into record batches: one future per batch, not per row.
        """
        if not rows:
            return
        groups: dict[tuple[OutboxKind, int], list[OutboxRow]] = {}
        for row in rows:
            target = row.target_partition
            if row.kind is OutboxKind.DEAD_LETTER:
                target %= self._dlq_partitions
            groups.setdefault((row.kind, target), []).append(row)
        futures: list[asyncio.Future[object]] = []
        for (kind, target), chosen in groups.items():
            futures.extend(await self._send_batches(self._topics[kind], target, chosen))
        self._pending.setdefault(partition, deque()).append((rows[-1].src_offset, futures))

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
            last_offset, futures = pending[0]
            if not all(f.done() for f in futures):
                break
            failed = [f.exception() for f in futures if f.exception() is not None]
            if failed:
                log.warning(
                    "publishing partition %d failed (%s); will re-send", partition, failed[0]
                )
                pending.clear()
                self._resend.add(partition)
                break
            pending.popleft()
            self._acked_below[partition] = last_offset + 1
        return self._acked_below.get(partition, 0)

    def take_resends(self) -> set[int]:
        """Partitions whose unsent outbox must be read again and re-published."""
        resend, self._resend = self._resend, set()
        return resend

    def forget(self, partition: int) -> None:
        """Stop tracking a partition this worker no longer owns."""
        self._pending.pop(partition, None)
        self._acked_below.pop(partition, None)
        self._resend.discard(partition)

    async def flush(self, timeout_seconds: float, partitions: Iterable[int] | None = None) -> None:
        """Wait (bounded) until what is queued so far is acknowledged or failed."""
        chosen = self._pending.keys() if partitions is None else partitions
        queues = [self._pending[p] for p in chosen if p in self._pending]
        futures = [f for queue in queues for _, fs in queue for f in fs]
        if futures:
            await asyncio.wait(futures, timeout=timeout_seconds)
