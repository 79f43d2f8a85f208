"""Creating the topics: commands, internal, results and the DLQ with P partitions each, so
a record of command (or internal) partition p is answered in results partition p and
dead-lettered in DLQ partition p. A DLQ made by an older version with fewer partitions
keeps working (the relay writes to p modulo its count)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Final, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from engine.core.config import KafkaConfig
from engine.core.errors import ConfigError, InfrastructureError
from engine.kafka.connection import access_denied, connection

_READY_ATTEMPTS = 150
TOPIC_AUTHORIZATION_FAILED: Final = 29
CLUSTER_AUTHORIZATION_FAILED: Final = 31
TOPIC_ALREADY_EXISTS: Final = 36
_FETCH_TIMEOUT_MS = 1_000


REPLICATION_FACTOR_DEFAULT_MAX: Final = 3


class Replication(NamedTuple):
    """How the topics init creates are replicated."""

    factor: int
    min_insync: int


def replication_for(kafka: KafkaConfig, brokers: int) -> Replication:
    """The configured replication, or what fits a cluster of ``brokers``: a replica on
    each broker up to 3, and acks=all waiting for all but one of them (at least one).
    A factor above the brokers, or a min.insync.replicas above the factor, is refused:
    no write could ever be acknowledged."""
    factor = kafka.replication_factor or min(brokers, REPLICATION_FACTOR_DEFAULT_MAX)
    if factor > brokers:
        detail = f"replication factor {factor} needs {factor} brokers, the cluster has {brokers}"
        raise ConfigError(detail)
    min_insync = kafka.min_insync_replicas or max(1, factor - 1)
    if min_insync > factor:
        raise ConfigError(f"min.insync.replicas {min_insync} is above the replication {factor}")
    return Replication(factor, min_insync)


async def ensure_topics(kafka: KafkaConfig, partitions: int) -> dict[str, int]:
    """Create the missing topics, replicated to fit the cluster (``replication_for``);
    refuse existing ones with another partition count."""
    wanted = {
        kafka.commands_topic: partitions,
        kafka.internal_topic: partitions,
        kafka.results_topic: partitions,
        kafka.dlq_topic: partitions,
    }
    admin = AIOKafkaAdminClient(**connection(kafka), request_timeout_ms=kafka.request_timeout_ms)
    await admin.start()
    try:
        existing = await _partition_counts(admin, list(wanted))
        replication = replication_for(kafka, len((await admin.describe_cluster())["brokers"]))
        settings = {"min.insync.replicas": str(replication.min_insync)}
        missing = [
            NewTopic(name, count, replication.factor, topic_configs=settings)
            for name, count in wanted.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                response = await admin.create_topics(missing)
                _check_created(kafka, response.topic_errors)
            for _ in range(300):
                existing = await _partition_counts(admin, list(wanted))
                if len(existing) == len(wanted):
                    break
                await asyncio.sleep(0.1)
            await _wait_for_leaders(kafka, existing)
    finally:
        await admin.close()
    for topic in (kafka.commands_topic, kafka.internal_topic):
        if existing.get(topic) != partitions:
            raise ConfigError(
                f"topic {topic} has {existing.get(topic)} partitions, not {partitions}"
            )
    return existing


def _check_created(kafka: KafkaConfig, topic_errors: list[tuple[Any, ...]]) -> None:
    """The broker answers each topic with an error code: refused rights stop init."""
    for topic, error_code, *message in topic_errors:
        if error_code in (TOPIC_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED):
            raise access_denied(kafka, KafkaError(f"creating {topic} refused: {message}"))
        if error_code not in (0, TOPIC_ALREADY_EXISTS):
            raise InfrastructureError(f"creating {topic} failed: error {error_code} {message}")


async def _wait_for_leaders(kafka: KafkaConfig, topics: dict[str, int]) -> None:
    """New partitions answer metadata before their leaders serve offsets: wait for that."""
    tps = [TopicPartition(name, p) for name, count in topics.items() for p in range(count)]
    consumer = AIOKafkaConsumer(**connection(kafka))
    await consumer.start()
    try:
        for _ in range(_READY_ATTEMPTS):
            try:
                await consumer.end_offsets(tps)
                return
            except KafkaError:
                await asyncio.sleep(0.2)
    finally:
        await consumer.stop()
    raise InfrastructureError(f"new topics {sorted(topics)} have no partition leaders yet")


async def partition_counts(kafka: KafkaConfig, names: list[str]) -> dict[str, int]:
    """Partition counts of the existing, ready topics among ``names``."""
    admin = AIOKafkaAdminClient(**connection(kafka), request_timeout_ms=kafka.request_timeout_ms)
    await admin.start()
    try:
        return await _partition_counts(admin, names)
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    described = await admin.describe_topics(names)
    return {
        topic["topic"]: len(topic["partitions"])
        for topic in described
        if topic.get("error_code", 0) == 0
        and topic["partitions"]
        and all(p.get("leader", -1) >= 0 for p in topic["partitions"])
    }


async def end_offsets(kafka: KafkaConfig, topic: str) -> dict[int, int]:
    """The current end offset of every partition of ``topic``."""
    count = (await partition_counts(kafka, [topic]))[topic]
    consumer = AIOKafkaConsumer(**connection(kafka))
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(count)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_range(
    kafka: KafkaConfig, topic: str, ends: dict[int, int], timeout_seconds: float = 120.0
) -> list[Any]:
    """Records of ``topic`` from the start of each partition up to ``ends`` (exclusive).

    Bounded: raises InfrastructureError when the records do not all arrive in time.
    An empty range starts no consumer: aiokafka's stop() right after start() with no
    assignment raises CancelledError (its committed-offsets task is cancelled under it).
    """
    wanted = {TopicPartition(topic, p): end for p, end in ends.items() if end > 0}
    if not wanted:
        return []
    consumer = AIOKafkaConsumer(
        **connection(kafka),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        records: list[Any] = []
        deadline = time.monotonic() + timeout_seconds
        while wanted:
            if time.monotonic() > deadline:
                raise InfrastructureError(f"{topic}: records missing after {timeout_seconds} s")
            fetched = await consumer.getmany(timeout_ms=_FETCH_TIMEOUT_MS, max_records=50_000)
            for tp, batch in fetched.items():
                end = wanted.get(tp)
                if end is None or not batch:
                    continue
                records.extend(r for r in batch if r.offset < end)
                if batch[-1].offset >= end - 1:
                    del wanted[tp]
                    consumer.pause(tp)
        return records
    finally:
        await consumer.stop()


async def read_chunks(
    kafka: KafkaConfig,
    topic: str,
    spans: dict[int, tuple[int, int]],
    records_max: int,
    timeout_seconds: float = 120.0,
) -> AsyncIterator[list[Any]]:
    """Records of ``topic`` in ``spans`` (partition: [start, end)), one partition after the
    other, in chunks of at most ``records_max``: memory holds one chunk, whatever the
    history. Bounded in time as read_range."""
    wanted = {p: span for p, span in sorted(spans.items()) if span[1] > span[0]}
    if not wanted:
        return
    consumer = AIOKafkaConsumer(
        **connection(kafka), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        for partition, (start, end) in wanted.items():
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            deadline = time.monotonic() + timeout_seconds
            position = start
            while position < end:
                if time.monotonic() > deadline:
                    raise InfrastructureError(f"{topic}: records missing after {timeout_seconds} s")
                fetched = await consumer.getmany(
                    tp, timeout_ms=_FETCH_TIMEOUT_MS, max_records=records_max
                )
                batch = fetched.get(tp, [])
                chunk = [r for r in batch if r.offset < end]
                if batch:
                    deadline = time.monotonic() + timeout_seconds
                position = await consumer.position(tp)
                if chunk:
                    yield chunk
    finally:
        await consumer.stop()
