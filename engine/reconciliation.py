"""``smallcups reconcile``: the cups' checks plus the topics' (every command one result)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import msgspec

from engine.config import Config, KafkaConfig
from engine.decoding import decode_command, decode_result
from engine.messages import (
    CURRENCIES,
    INPUT_REASONS,
    LEG_TYPES,
    Reason,
    Result,
    Status,
    Undecodable,
)
from engine.topics import end_offsets, read_range
from shards.control import connect, load_shard_map
from shards.cups import close_cups, open_cups
from shards.moves import open_moves
from shards.reconcile import Report, reconcile_cups
from shards.store import CupStore


async def reconcile(config: Config, *, topics: bool) -> Report:
    control = await connect(config.control_dsn, config.shards.connect_timeout_seconds)
    try:
        shard_map = await load_shard_map(control)
        moving = frozenset(move.partition for move in await open_moves(control))
    finally:
        await control.close()
    stores = await open_cups(shard_map, config.shards)
    try:
        stuck = config.worker.transfer_stuck_seconds
        report = await reconcile_cups(stores, shard_map, CURRENCIES, moving, stuck)
        if topics:
            positions = await _positions(stores, shard_map.cup_of)
            bytes_max = config.worker.message_bytes_max
            await _check_results(config.kafka, positions, bytes_max, report)
    finally:
        await close_cups(stores)
    return report


async def _positions(stores: dict[int, CupStore], cup_of: dict[int, int]) -> dict[int, int]:
    """The cups' next_offset of every partition: what has been consumed for good."""
    owned = {cup: store.next_offsets() for cup, store in stores.items()}
    by_cup = dict(zip(owned, await asyncio.gather(*owned.values()), strict=True))
    return {partition: by_cup[cup].get(partition, 0) for partition, cup in cup_of.items()}


async def _check_results(
    kafka: KafkaConfig, positions: dict[int, int], bytes_max: int, report: Report
) -> None:
    """Checks 6 and 10: every consumed command has its result, results of an id agree,
    and every result record is one the engine could have written. Command ids are unique
    per partition (two customers of two partitions may share one), so results are told
    apart by partition and id.

    A record over ``bytes_max`` went to the DLQ undecoded (as the worker does), so it
    owes no result whatever it holds. A result for an offset past the cup's position
    answers a command consumed after the positions were read: it is left for the next run.
    """
    consumed: dict[tuple[int, str], int] = defaultdict(int)
    ids_at: dict[tuple[int, int], str] = {}
    for record in await read_range(kafka, kafka.commands_topic, positions):
        value = record.value or b""
        if len(value) > bytes_max:
            continue
        command = decode_command(value)
        if isinstance(command, (Undecodable, *LEG_TYPES)):
            continue
        consumed[(record.partition, command.id)] += 1
        ids_at[(record.partition, record.offset)] = command.id
    results_end = await end_offsets(kafka, kafka.results_topic)
    answers: dict[tuple[int, str], set[bytes]] = defaultdict(set)
    for record in await read_range(kafka, kafka.results_topic, results_end):
        result = _authentic_result(record, positions, ids_at, report)
        if result is None:
            continue
        if result.status is Status.PENDING:
            report.add("one_result", f"command {result.command_id}: a pending result was published")
        if result.reason is not Reason.DUPLICATE_CONFLICT:
            answers[(result.partition, result.command_id)].add(answer_of(result))
    for key in consumed:
        if key not in answers and key not in report.pending_ids:
            report.add("one_result", f"command {key[1]} (partition {key[0]}): consumed, no result")
    for (partition, command_id), variants in answers.items():
        if len(variants) > 1:
            report.add(
                "one_result",
                f"command {command_id} (partition {partition}): {len(variants)} different results",
            )
    report.counts["commands_consumed"] = sum(consumed.values())
    report.counts["command_ids_answered"] = len(answers)


def _authentic_result(
    record: Any,
    positions: dict[int, int],
    ids_at: dict[tuple[int, int], str],
    report: Report,
) -> Result | None:
    """The record's result if it is one the engine could have published (check 10), else
    None with a finding; None without one for a result of a command not consumed yet."""
    where = f"results partition {record.partition} offset {record.offset}"
    result = decode_result(record.value)
    if isinstance(result, Undecodable):
        report.notice("results_well_formed", f"{where}: not a result ({result.detail[:80]})")
        return None
    if result.partition != record.partition:
        report.notice(
            "results_well_formed", f"{where}: names partition {result.partition}, not its own"
        )
        return None
    if result.offset >= positions.get(result.partition, 0):
        return None
    answered = ids_at.get((result.partition, result.offset))
    if answered != result.command_id:
        report.notice(
            "results_well_formed",
            f"{where}: answers {result.command_id[:80]!r}, but offset {result.offset} "
            "holds another command",
        )
        return None
    return result


def answer_of(result: Result) -> bytes:
    """What must agree between the results of one command id: all of a recorded result
    (re-sends are identical), only status and reason of an input rejection (a re-sent
    bad record is answered again, at another offset)."""
    if result.status is Status.REJECTED and result.reason in INPUT_REASONS:
        return f"{result.status}:{result.reason}".encode()
    return msgspec.msgpack.encode(result)
