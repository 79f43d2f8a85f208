"""``smallcups reconcile``: the cups' checks (shards.audit) plus the topics' (every command one
result), printed, and written for a Prometheus textfile collector."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import asyncpg
import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from engine.admin.topic_checks import KafkaSource, check_topics
from engine.core.config import Config
from engine.core.credit import day_text
from engine.core.messages import CURRENCIES
from engine.core.records import Position, ShardMap
from engine.core.store import CupStore
from engine.kafka.topics import end_offsets
from shards.audit import Report, reconcile_cups
from shards.control import connect, load_shard_map
from shards.cup_admin import CupAdmin
from shards.cups import close_cups, connect_cups, open_cups
from shards.moves import open_moves
from shards.reconcile_checkpoint import Checkpoint, load_checkpoint, save_checkpoint, why_unusable


async def reconcile(config: Config, *, topics: bool, full: bool = False) -> Report:
    """The cups' checks, then (with ``topics``) the topics' from the saved checkpoint
    (unless ``full`` or none usable); a clean run with the topics saves the next one."""
    control = await connect(config.control_dsn, config.shards)
    try:
        shard_map = await load_shard_map(control)
        moving = frozenset(move.partition for move in await open_moves(control))
        cups = await connect_cups(shard_map, config.shards)
        try:
            stuck = config.worker.transfer_stuck_seconds
            report = await reconcile_cups(cups, shard_map, CURRENCIES, moving, stuck)
            if topics:
                await _reconcile_topics(config, control, shard_map, cups, report, full=full)
        finally:
            await close_cups(cups)
    finally:
        await control.close()
    return report


async def _reconcile_topics(
    config: Config,
    control: asyncpg.Connection,
    shard_map: ShardMap,
    cups: Mapping[int, CupAdmin],
    report: Report,
    *,
    full: bool,
) -> None:
    """The topic checks (engine.admin.topic_checks). The results topic's end is read
    before the positions: a result is published after its command's commit, so every
    result read answers a command before its partition's position."""
    kafka = config.require_kafka()
    results_end = await end_offsets(kafka, kafka.results_topic)
    stores = await open_cups(shard_map, config.shards)
    try:
        positions = await _positions(stores, shard_map.cup_of)
    finally:
        await close_cups(stores)
    since: Checkpoint = {} if full else await load_checkpoint(control, kafka.topic_prefix)
    ends = {
        "commands": {p: position.commands for p, position in positions.items()},
        "internal": {p: position.internal for p, position in positions.items()},
        "results": results_end,
    }
    if since and (why := why_unusable(since, shard_map.partitions, ends)):
        report.checkpoint = f"ignored: {why}"
        since = {}
    else:
        report.checkpoint = "continued" if since else "none"
    bytes_max = config.worker.message_bytes_max
    source = KafkaSource(kafka)
    following = await check_topics(
        source, source.topics, positions, results_end, bytes_max, shard_map, cups, report, since
    )
    if report.ok and following is not None:
        await save_checkpoint(control, kafka.topic_prefix, following)


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
    config: Config,
    *,
    as_json: bool,
    topics: bool,
    full: bool = False,
    metrics_file: str | None = None,
) -> int:
    """Print the reconciliation report; exit 1 on any discrepancy."""
    report = asyncio.run(reconcile(config, topics=topics, full=full))
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
            "checkpoint": report.checkpoint,
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
    if topics:
        read = report.counts.get("topic_records_read", 0)
        print(f"topics: {read:,} records read (checkpoint: {report.checkpoint})")
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
