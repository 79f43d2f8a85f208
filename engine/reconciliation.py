"""``smallcups reconcile``: the cups' checks plus the topics' (every command one result)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any, Final

import msgspec

from engine.config import Config, KafkaConfig
from engine.decoding import decode_command, decode_result, forwarded_partition, says_json
from engine.messages import (
    CURRENCIES,
    INPUT_REASONS,
    LEG_TYPES,
    Invalid,
    Reason,
    Result,
    Status,
    Undecodable,
)
from engine.routing import partition_of
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
            await _check_results(config.kafka, positions, bytes_max, shard_map.partitions, report)
    finally:
        await close_cups(stores)
    return report


async def _positions(stores: dict[int, CupStore], cup_of: dict[int, int]) -> dict[int, int]:
    """The cups' next_offset of every partition: what has been consumed for good."""
    owned = {cup: store.next_offsets() for cup, store in stores.items()}
    by_cup = dict(zip(owned, await asyncio.gather(*owned.values()), strict=True))
    return {partition: by_cup[cup].get(partition, 0) for partition, cup in cup_of.items()}


async def _check_results(
    kafka: KafkaConfig,
    positions: dict[int, int],
    bytes_max: int,
    partitions: int,
    report: Report,
) -> None:
    """Checks 6 and 10: every consumed command has its result, results of an id agree,
    and every result record is one the engine could have written. Command ids are unique
    per partition (two customers of two partitions may share one), so results are told
    apart by partition and id; a command published to another partition than its
    customer's was forwarded there, and is answered there.

    Results of one id agree when at most one of them changed something: a rejection
    decided from the record alone (a decode rejection, a bad signature, a record
    forwarded twice) changed nothing, so the same id sent again, right this time, is one
    command (counted as ``retried_after_rejection``).

    A record over ``bytes_max`` went to the DLQ undecoded (as the worker does), so it
    owes no result whatever it holds. A result for an offset past the cup's position
    answers a command consumed after the positions were read: it is left for the next run.
    """
    consumed: dict[tuple[int, str], int] = defaultdict(int)
    ids_at: dict[tuple[int, int], str] = {}
    for record in await read_range(kafka, kafka.commands_topic, positions):
        answered_in = _answered_in(record, bytes_max, partitions)
        if answered_in is None:
            continue
        command_id, partition, forward = answered_in
        if not forward:  # a forward is the second hop of a command counted already
            consumed[(partition, command_id)] += 1
        if partition == record.partition:
            ids_at[(record.partition, record.offset)] = command_id
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
    retried = 0
    for (partition, command_id), variants in answers.items():
        real = [v for v in variants if not v.startswith(_NOTHING_CHANGED_PREFIX)]
        if len(real) > 1:
            report.add(
                "one_result",
                f"command {command_id} (partition {partition}): {len(real)} different results",
            )
        retried += len(variants) > len(real) and bool(real)
    report.counts["commands_consumed"] = sum(consumed.values())
    report.counts["command_ids_answered"] = len(answers)
    report.counts["retried_after_rejection"] = retried


def _answered_in(record: Any, bytes_max: int, partitions: int) -> tuple[str, int, bool] | None:
    """(id, partition whose result answers it, whether the record is a worker's forward)
    of a command record; None when it owes no result (a dead letter, a leg)."""
    value = record.value or b""
    if len(value) > bytes_max:
        return None
    headers = record.headers or ()
    command = decode_command(value, json=says_json(headers) or None)
    if isinstance(command, (Undecodable, *LEG_TYPES)):
        return None
    forward = forwarded_partition(headers, partitions) >= 0
    if isinstance(command, Invalid) or forward:
        return command.id, record.partition, forward
    return command.id, partition_of(command.customer, partitions), False


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


_NOTHING_CHANGED: Final = INPUT_REASONS | {Reason.WRONG_PARTITION}
"""Rejections that changed nothing and recorded nothing that a later record of the same
id could disagree with."""
_NOTHING_CHANGED_PREFIX: Final = b"nothing changed:"


def answer_of(result: Result) -> bytes:
    """What must agree between the results of one command id: all of a recorded result
    (re-sends are identical, whatever their encoding), only the reason of a rejection
    that changed nothing (a re-sent bad record is answered again, at another offset)."""
    if result.status is Status.REJECTED and result.reason in _NOTHING_CHANGED:
        return _NOTHING_CHANGED_PREFIX + result.reason.encode()
    return msgspec.msgpack.encode(result)
