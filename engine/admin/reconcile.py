"""``smallcups reconcile``: the cups' checks (shards.audit) plus the topics' (every command one
result), printed, and written for a Prometheus textfile collector."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from engine.core.batch import routed
from engine.core.config import Config, KafkaConfig
from engine.core.credit import day_text
from engine.core.decoding import decode_command, decode_result, forwarded_partition, says_json
from engine.core.messages import (
    CURRENCIES,
    INPUT_REASONS,
    LEG_TYPES,
    Invalid,
    Reason,
    Result,
    Status,
    Undecodable,
)
from engine.core.records import Position
from engine.core.routing import partition_of
from engine.core.store import CupStore
from engine.kafka.topics import end_offsets, read_range
from shards.audit import Report, reconcile_cups
from shards.control import connect, load_shard_map
from shards.cups import close_cups, connect_cups, open_cups
from shards.moves import open_moves


async def reconcile(config: Config, *, topics: bool) -> Report:
    control = await connect(config.control_dsn, config.shards)
    try:
        shard_map = await load_shard_map(control)
        moving = frozenset(move.partition for move in await open_moves(control))
    finally:
        await control.close()
    cups = await connect_cups(shard_map, config.shards)
    try:
        stuck = config.worker.transfer_stuck_seconds
        report = await reconcile_cups(cups, shard_map, CURRENCIES, moving, stuck)
    finally:
        await close_cups(cups)
    if topics:
        stores = await open_cups(shard_map, config.shards)
        try:
            positions = await _positions(stores, shard_map.cup_of)
        finally:
            await close_cups(stores)
        kafka = config.require_kafka()
        bytes_max = config.worker.message_bytes_max
        await _check_results(kafka, positions, bytes_max, shard_map.partitions, report)
    return report


async def _positions(stores: Mapping[int, CupStore], cup_of: dict[int, int]) -> dict[int, Position]:
    """Every partition's position in its cup (commands and internal topic): what has been
    consumed for good."""
    partitions_of: dict[int, list[int]] = defaultdict(list)
    for partition, cup in cup_of.items():
        partitions_of[cup].append(partition)
    owned = {cup: stores[cup].states(partitions_of[cup]) for cup in stores}
    by_cup = dict(zip(owned, await asyncio.gather(*owned.values()), strict=True))
    start = Position(0, 0)
    return {
        partition: claim.position if (claim := by_cup[cup].get(partition)) else start
        for partition, cup in cup_of.items()
    }


async def _check_results(
    kafka: KafkaConfig,
    positions: dict[int, Position],
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

    Commands come from the commands topic and the internal topic (privileged commands);
    a result names the offset of its command in either, so ``ids_at`` holds the ids of
    both by (partition, offset), and a result is authentic when one of them is its id.

    A record over ``bytes_max`` went to the DLQ undecoded (as the worker does), so it
    owes no result whatever it holds. A result for an offset past the cup's position
    answers a command consumed after the positions were read: it is left for the next run.
    """
    consumed: dict[tuple[int, str], int] = defaultdict(int)
    ids_at: dict[tuple[int, int], set[str]] = defaultdict(set)
    for topic in (kafka.commands_topic, kafka.internal_topic):
        internal = topic == kafka.internal_topic
        ends = {p: position.of(internal) for p, position in positions.items()}
        for record in await read_range(kafka, topic, ends):
            answered_in = _answered_in(record, bytes_max, partitions, internal)
            if answered_in is None:
                continue
            command_id, partition, forward = answered_in
            if not forward:  # a forward is the second hop of a command counted already
                consumed[(partition, command_id)] += 1
            if partition == record.partition:
                ids_at[(record.partition, record.offset)].add(command_id)
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


def _answered_in(
    record: Any, bytes_max: int, partitions: int, internal: bool
) -> tuple[str, int, bool] | None:
    """(id, partition whose result answers it, whether the record is a worker's forward)
    of a command record of the commands or the ``internal`` topic; None when it owes no
    result (a dead letter, a leg)."""
    value = record.value or b""
    if len(value) > bytes_max:
        return None
    headers = record.headers or ()
    command = routed(decode_command(value, json=says_json(headers) or None), internal)
    if isinstance(command, (Undecodable, *LEG_TYPES)):
        return None
    forward = forwarded_partition(headers, partitions) >= 0
    if isinstance(command, Invalid) or forward:
        return command.id, record.partition, forward
    return command.id, partition_of(command.customer, partitions), False


def _authentic_result(
    record: Any,
    positions: dict[int, Position],
    ids_at: dict[tuple[int, int], set[str]],
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
    if result.command_id in ids_at.get((result.partition, result.offset), ()):
        return result
    if result.offset >= min(positions.get(result.partition, Position(0, 0))):
        return None
    report.notice(
        "results_well_formed",
        f"{where}: answers {result.command_id[:80]!r}, but offset {result.offset} "
        "holds another command",
    )
    return None


_NOTHING_CHANGED: Final = INPUT_REASONS | {
    Reason.WRONG_PARTITION,
    Reason.ID_EXPIRED,
    Reason.ISSUED_AT,
}
"""Rejections that changed nothing and recorded nothing that a later record of the same
id could disagree with (``id_expired`` answers a re-send of a command whose window has
passed: the first answer stands)."""
_NOTHING_CHANGED_PREFIX: Final = b"nothing changed:"


def answer_of(result: Result) -> bytes:
    """What must agree between the results of one command id: all of a recorded result
    (re-sends are identical, whatever their encoding), only the reason of a rejection
    that changed nothing (a re-sent bad record is answered again, at another offset)."""
    if result.status is Status.REJECTED and result.reason in _NOTHING_CHANGED:
        return _NOTHING_CHANGED_PREFIX + result.reason.encode()
    return msgspec.msgpack.encode(result)


CHECKS = (
    "balance_equals_journal",
    "journal_balanced",
    "clearing_equals_in_flight",
    "money_conserved",
    "applied_once",
    "one_result",
    "one_cup",
    "no_money_in_closed_accounts",
    "no_stuck_transfers",
    "credit_rows_match_bodies",
    "credit_lines_match_loans",
    "loans_account_matches_lines",
    "interest_accounts_match_loans",
    "holds_payable",
    "partner_shares_within_loans",
    "partner_accounts_match_loans",
    "partner_accounts_match_clearing",
    "clearing_nets_match_days",
)
NOTICES = ("results_well_formed",)


def run_reconcile(
    config: Config, *, as_json: bool, topics: bool, metrics_file: str | None = None
) -> int:
    """Print the reconciliation report; exit 1 on any discrepancy."""
    report = asyncio.run(reconcile(config, topics=topics))
    if metrics_file:
        write_reconcile_metrics(Path(metrics_file), ok=report.ok)
    checks = {name: report.problems.get(name, []) for name in CHECKS}
    notices = {name: report.notices.get(name, []) for name in NOTICES if topics}
    if not topics:
        del checks["one_result"]
    if as_json:
        document = {
            "ok": report.ok,
            "cups": [dataclasses.asdict(f) for f in report.cups],
            "in_flight": report.in_flight,
            "transfers_in_flight": report.transfers_in_flight,
            "transfers_unsettled": len(report.pending_ids),
            "checks": {
                name: {"ok": not found, "problems": found} for name, found in checks.items()
            },
            "notices": notices,
            "counts": report.counts,
            "credit": {c: dataclasses.asdict(f) for c, f in sorted(report.credit.items())},
            "partners": [
                {"partner": partner, "currency": currency, **dataclasses.asdict(f)}
                for (partner, currency), f in sorted(report.partners.items())
            ],
            "calendars": {p: day_text(day) for p, day in sorted(report.calendars.items())},
        }
        print(msgspec.json.encode(document).decode())
        return 0 if report.ok else 1
    for f in report.cups:
        money = ", ".join(f"{c} {v:,}" for c, v in sorted(f.money_in_flight.items())) or "none"
        print(
            f"cup {f.cup}: {f.accounts:,} accounts, {f.journal_rows:,} journal rows, "
            f"{f.legs_in_flight} transfers in flight (money: {money})"
        )
    flight = ", ".join(f"{c} {v:,}" for c, v in sorted(report.in_flight.items())) or "none"
    print(
        f"system: {report.transfers_in_flight} transfers with money in flight ({flight}), "
        f"{len(report.pending_ids)} unsettled"
    )
    for line in credit_book_text(report):
        print(line)
    for name, found in checks.items():
        print(f"  {name:<28} {'ok' if not found else f'FAILED ({len(found)})'}")
        for finding in found:
            print(f"      {finding}")
    for name, found in notices.items():
        total = report.counts.get(f"{name}_notices", 0)
        print(f"  {name:<28} {'ok' if not found else f'NOTICE ({total}: not the books)'}")
        for finding in found:
            print(f"      {finding}")
    print("reconcile: OK" if report.ok else "reconcile: DISCREPANCIES FOUND")
    return 0 if report.ok else 1


def credit_book_text(report: Report) -> list[str]:
    """The credit book in a few lines: two per currency with credit, one per partner bank
    and currency, one for the business days closed; none without credit."""
    text: list[str] = []
    for currency, f in sorted(report.credit.items()):
        head = f"credit {currency}: "
        text.append(
            f"{head}{f.lines:,} lines (limits {f.limit_total:,}), principal outstanding "
            f"{f.principal_outstanding:,}, interest unpaid {f.interest_unpaid:,}"
        )
        text.append(
            f"{' ' * len(head)}{f.loans_open:,} loans open ({f.loans_overdue:,} overdue), "
            f"{f.holds_open:,} holds open ({f.money_held:,} held), interest income "
            f"{f.interest_income:,}"
        )
    for (partner, currency), p in sorted(report.partners.items()):
        text.append(
            f"partner {partner} {currency}: funded principal {p.funded_principal:,}, "
            f"interest owed {p.interest_owed:,}, settlement balance {p.settlement_balance:,}"
        )
    if report.calendars:
        first, last = min(report.calendars.values()), max(report.calendars.values())
        days = day_text(last) if first == last else f"{day_text(first)} to {day_text(last)}"
        text.append(f"last business day closed: {days} ({len(report.calendars)} partitions)")
    return text


def write_reconcile_metrics(path: Path, *, ok: bool, now: float | None = None) -> None:
    """Export the outcome in the Prometheus text format, for a textfile collector.

    The failures counter and the last success time carry over from the previous file,
    so ``increase(smallcups_reconcile_failures_total[1h])`` works across runs.
    """
    failures, last_success = 0.0, 0.0
    if path.exists():
        for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
            for sample in family.samples:
                if sample.name == "smallcups_reconcile_failures_total":
                    failures = sample.value
                elif sample.name == "smallcups_reconcile_last_success_timestamp_seconds":
                    last_success = sample.value
    registry = CollectorRegistry()
    counter = Counter(
        "smallcups_reconcile_failures",
        "Reconcile runs that found a discrepancy.",
        registry=registry,
    )
    counter.inc(failures + (0 if ok else 1))
    gauge = Gauge(
        "smallcups_reconcile_last_success_timestamp_seconds",
        "Unix time of the last reconcile that found the books balanced.",
        registry=registry,
    )
    when = time.time() if now is None else now
    gauge.set(when if ok else last_success)
    write_to_textfile(str(path), registry)
