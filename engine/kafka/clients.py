"""The worker's Kafka clients: the group member that consumes commands, the idempotent
producer of the relay, and the listener that hands rebalances to the worker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor

from engine.core.config import KafkaConfig
from engine.kafka.connection import connection

FETCH_LIMITS: Final = {"max_partition_fetch_bytes": 1_048_576, "fetch_max_bytes": 16_777_216}
"""The worker consumer's fetch sizes (the bench's Kafka-only readers use them too)."""
RECORD_BATCH_BYTES_MAX: Final = 524_288
"""The relay's record batches: large enough that a round's results for one partition fit
one. aiokafka appends a partition's next batch only once the previous one is drained, so
a small batch size makes a round wait a produce round trip per batch
(docs/performance.md). Below the broker's message.max.bytes (1 MiB by default)."""
SESSION_TIMEOUT_MS: Final = 10_000
HEARTBEAT_INTERVAL_MS: Final = 1_000
LINGER_MS: Final = 5


def make_producer(kafka: KafkaConfig) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **connection(kafka),
        enable_idempotence=True,
        acks="all",
        linger_ms=LINGER_MS,
        max_batch_size=RECORD_BATCH_BYTES_MAX,
        request_timeout_ms=kafka.request_timeout_ms,
    )


def make_consumer(kafka: KafkaConfig, assignor: AbstractPartitionAssignor) -> AIOKafkaConsumer:
    """The group member; when it leads the group, ``assignor`` assigns (cup affinity)."""
    return AIOKafkaConsumer(
        partition_assignment_strategy=(assignor,),
        **connection(kafka),
        group_id=kafka.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **FETCH_LIMITS,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        request_timeout_ms=kafka.request_timeout_ms,
    )


def request_rebalance(consumer: AIOKafkaConsumer) -> None:
    """Ask the group to rebalance: the member rejoins at once, the others at their next
    heartbeat, and the leader assigns again. aiokafka has no public call for it; this is
    the call its coordinator makes itself when the subscribed topics' metadata change
    (GroupCoordinator.request_rejoin). Re-subscribing would also rejoin, but forgets the
    assignment, so the revoke callback would miss the partitions held."""
    consumer._coordinator.request_rejoin()


Rebalanced = Callable[[Sequence[int]], Awaitable[None]]


class GroupListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands the partitions of each rebalance to the worker, revoked first: their numbers,
    once each (a worker is assigned a partition of the commands topic and of the internal
    topic together: engine.kafka.assignor)."""

    def __init__(self, assigned: Rebalanced, revoked: Rebalanced):
        self._assigned = assigned
        self._revoked = revoked

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._revoked(sorted({tp.partition for tp in revoked}))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        await self._assigned(sorted({tp.partition for tp in assigned}))
