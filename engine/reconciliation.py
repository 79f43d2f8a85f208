"""``smallcups reconcile``: the cups' checks plus the topics' (every command one result)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.admin import read_shard_map
from engine.config import Config, KafkaConfig
from engine.messages import (
    CURRENCIES,
    LEG_TYPES,
    Reason,
    Result,
    Status,
    Undecodable,
    decode_command,
    result_decoder,
)
from shards.cups import close_cups, open_cups
from shards.reconcile import Report, reconcile_cups
from shards.store import CupStore

_FETCH_TIMEOUT_MS = 1_000


async def reconcile(config: Config, *, topics: bool) -> Report:
    shard_map = await read_shard_map(config)
    stores = await open_cups(shard_map, config.shards)
    try:
        report = await reconcile_cups(stores, shard_map, CURRENCIES)
        if topics:
            positions = await _positions(stores, shard_map.cup_of)
            await _check_results(config.kafka, positions, report)
    finally:
        await close_cups(stores)
    return report


async def _positions(stores: dict[int, CupStore], cup_of: dict[int, int]) -> dict[int, int]:
    """The cups' next_offset of every partition: what has been consumed for good."""
    positions = {}
    for partition, cup in cup_of.items():
        state = await stores[cup].state(partition)
        positions[partition] = 0 if state is None else state.next_offset
    return positions


async def read_range(kafka: KafkaConfig, topic: str, ends: dict[int, int]) -> list[Any]:
    """Records of ``topic`` from the start of each partition up to ``ends`` (exclusive)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        wanted = {TopicPartition(topic, p): end for p, end in ends.items() if end > 0}
        consumer.assign(list(wanted))
        records: list[Any] = []
        while wanted:
            fetched = await consumer.getmany(timeout_ms=_FETCH_TIMEOUT_MS, max_records=50_000)
            if not fetched:
                break
            for tp, batch in fetched.items():
                end = wanted.get(tp)
                if end is None:
                    continue
                records.extend(r for r in batch if r.offset < end)
                if batch[-1].offset >= end - 1:
                    del wanted[tp]
                    consumer.pause(tp)
        return records
    finally:
        await consumer.stop()


async def _check_results(kafka: KafkaConfig, positions: dict[int, int], report: Report) -> None:
    """Check 6: every consumed command has its result; results of an id agree."""
    consumed: dict[str, int] = defaultdict(int)
    for record in await read_range(kafka, kafka.commands_topic, positions):
        command = decode_command(record.value or b"")
        if isinstance(command, (Undecodable, *LEG_TYPES)):
            continue
        consumed[command.id] += 1
    results_end = await _end_offsets(kafka, kafka.results_topic, len(positions))
    answers: dict[str, set[bytes]] = defaultdict(set)
    for record in await read_range(kafka, kafka.results_topic, results_end):
        result: Result = result_decoder.decode(record.value)
        if result.status is Status.PENDING:
            report.add("one_result", f"command {result.command_id}: a pending result was published")
        if result.reason is not Reason.DUPLICATE_CONFLICT:
            answers[result.command_id].add(msgspec.msgpack.encode(result))
    for command_id in consumed:
        if command_id not in answers and command_id not in report.pending_ids:
            report.add("one_result", f"command {command_id}: consumed but no result")
    for command_id, variants in answers.items():
        if len(variants) > 1:
            report.add("one_result", f"command {command_id}: {len(variants)} different results")
    report.counts["commands_consumed"] = sum(consumed.values())
    report.counts["command_ids_answered"] = len(answers)


async def _end_offsets(kafka: KafkaConfig, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()
