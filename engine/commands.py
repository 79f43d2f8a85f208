"""The CLI's one-shot commands: init, publish, balance. Printing lives here, logic elsewhere."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from pathlib import Path

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from engine.admin import initialize, read_account
from engine.client import Client
from engine.config import Config
from engine.decoding import decode_command
from engine.errors import ConfigError
from engine.messages import (
    Invalid,
    Undecodable,
)


def init(config: Config, partitions: int | None) -> int:
    if partitions is not None:
        kafka = msgspec.structs.replace(config.kafka, partitions=partitions)
        config = msgspec.structs.replace(config, kafka=kafka)
    report = asyncio.run(initialize(config))
    for topic, count in sorted(report.topics.items()):
        print(f"topic {topic}: {count} partitions")
    shard_map = report.shard_map
    for cup_id in sorted(shard_map.cups):
        owned = shard_map.partitions_of(cup_id)
        print(f"cup {cup_id}: {len(owned)} partitions")
    print(f"shard map version {shard_map.version}: {shard_map.partitions} partitions")
    return 0


def publish(config: Config, text: str, *, wait: bool, timeout_seconds: float) -> int:
    data = (sys.stdin.read() if text == "-" else text).encode()
    command = decode_command(data, json=True)
    if isinstance(command, Undecodable | Invalid):
        raise ConfigError(f"not a valid command: {command.reason}: {command.detail}")

    async def send() -> bytes:
        async with Client(config.kafka) as client:
            if not wait:
                await (await client.publish(command))
                return msgspec.json.encode({"published": command.id})
            result = await client.submit(command, timeout_seconds)
            return msgspec.json.encode(result)

    try:
        print(asyncio.run(send()).decode())
    except TimeoutError:
        raise ConfigError(f"no result for {command.id} within {timeout_seconds} s") from None
    return 0


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
)
NOTICES = ("results_well_formed",)


def reconcile(
    config: Config, *, as_json: bool, topics: bool, metrics_file: str | None = None
) -> int:
    """Print the reconciliation report; exit 1 on any discrepancy."""
    from engine.reconciliation import reconcile as run_reconcile

    report = asyncio.run(run_reconcile(config, topics=topics))
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


def balance(config: Config, address: str) -> int:
    try:
        customer_text, account_text = address.split("/")
        customer, number = int(customer_text), int(account_text)
    except ValueError:
        raise ConfigError(f"expected CUSTOMER/ACCOUNT, got {address!r}") from None
    partition, account = asyncio.run(read_account(config, customer, number))
    if account is None:
        print(f"no account {customer}/{number} (partition {partition})", file=sys.stderr)
        return 1
    print(
        msgspec.json.encode(
            {
                "customer": account.customer,
                "account": account.number,
                "currency": account.currency,
                "balance": account.balance,
                "credit_limit": account.credit_limit,
                "status": account.status.name.lower(),
                "partition": partition,
            }
        ).decode()
    )
    return 0
