"""``make soak``: the engine for half an hour (or ``--seconds``) on a throwaway system, with
the idempotency window pruning, the journal archived every few periods and two partition
moves, and what an operator would want flat over that time, minute by minute.

1. a new system (topics, a control database, two Postgres cups and a MariaDB cup) and
   two worker processes with a short idempotency window and short journal periods;
2. open and fund the customers, then publish transfers, deposits and withdrawals at a
   steady rate (open loop, a bounded number awaiting their result);
3. each minute: publish-to-result latency (p50, p99), the cups' mean commit statement
   time (the workers' ``smallcups_commit_duration_seconds``), the rows of the
   idempotency records and of the journal in every cup;
4. every ``archive_every_seconds``: ``smallcups archive`` of the periods closed a window
   ago; at a third and two thirds of the run: a partition moved (pre-copied) to another
   cup, its pause recorded;
5. at the end: every result in, the workers stopped, ``reconcile`` on the topics; the
   verdicts (flat latency, flat tables, pauses that do not grow, reconcile clean) and the
   JSON of every sample (``--json``).

Everything is bounded: the run's time, the commands (``COMMANDS_MAX``), the waits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

import msgspec

from deploy.local.prometheus_throwaway import free_port
from engine.admin.archive import archive
from engine.admin.reconcile import reconcile
from engine.core.config import Config, load_config
from engine.core.messages import Command, Result, issued
from engine.core.periods import iso, period_start
from engine.kafka.client import Client, now_ms
from loadtest.bench.scrape import totals, wait_owning
from loadtest.system import System, drop_system, make_system, with_archive_periods
from loadtest.workload import Workload, WorkloadShape
from shards.cluster import inventory, move_partition
from shards.control import connect

COMMANDS_MAX: Final = 5_000_000
AWAITED_MAX: Final = 5_000
"""Commands awaiting their result at once; past it the driver waits (and says so)."""
PARTITIONS: Final = 16
TICK_SECONDS: Final = 0.1
RESULTS_WAIT_SECONDS: Final = 120.0
OWNING_WAIT_SECONDS: Final = 60.0
PAUSE_NOISE_SECONDS: Final = 1.0
"""What a move's pause may vary by on this machine for reasons other than history (the
load, the rebalance it triggers): the second move's pause must stay within twice the
first's plus this."""


@dataclass(frozen=True, slots=True)
class SoakOptions:
    seconds: float = 1800.0
    rate: int = 800
    """Commands per second."""
    customers: int = 2_000
    window_seconds: int = 120
    """The workers' idempotency window."""
    period_seconds: int = 120
    """The journal's period (archive.period_seconds)."""
    archive_every_seconds: float = 240.0
    sample_seconds: float = 60.0


@dataclass(slots=True)
class Sample:
    elapsed_seconds: float
    commands: int
    p50_ms: float
    p99_ms: float
    commit_mean_ms: float
    records: int
    journal_rows: int
    expired: int


@dataclass(slots=True)
class Soak:
    options: SoakOptions
    system: System
    ports: list[int]
    samples: list[Sample] = field(default_factory=list)
    pauses_seconds: list[float] = field(default_factory=list)
    archives: list[str] = field(default_factory=list)
    sent: int = 0
    answered: int = 0
    expired: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    awaited: dict[str, float] = field(default_factory=dict)
    commit_seconds: tuple[float, float] = (0.0, 0.0)

    def on_result(self, result: Result) -> None:
        started = self.awaited.pop(result.command_id, None)
        if started is None:
            return
        self.answered += 1
        self.expired += result.reason == "id_expired"
        self.latencies_ms.append((time.perf_counter() - started) * 1000)


def _worker_env(options: SoakOptions, port: int) -> dict[str, str]:
    return {
        "SMALLCUPS_WORKER_METRICS_PORT": str(port),
        "SMALLCUPS_WORKER_IDEMPOTENCY_WINDOW_SECONDS": str(options.window_seconds),
    }


async def _table_rows(system: System) -> tuple[int, int]:
    """(idempotency records, journal rows) over every cup of the system."""
    config = system.config
    control = await connect(config.control_dsn, config.shards)
    try:
        cups = await inventory(control, config.shards)
    finally:
        await control.close()
    return sum(c.idempotency_records for c in cups), sum(c.journal_rows for c in cups)


async def _sample(soak: Soak, started: float) -> None:
    latencies, soak.latencies_ms = sorted(soak.latencies_ms), []
    figures = await totals(
        soak.ports,
        ["smallcups_commit_duration_seconds_sum", "smallcups_commit_duration_seconds_count"],
    )
    total, count = (
        figures["smallcups_commit_duration_seconds_sum"],
        figures["smallcups_commit_duration_seconds_count"],
    )
    before_total, before_count = soak.commit_seconds
    soak.commit_seconds = (total, count)
    commits = count - before_count
    records, journal = await _table_rows(soak.system)
    sample = Sample(
        elapsed_seconds=round(time.monotonic() - started, 1),
        commands=len(latencies),
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        commit_mean_ms=round(1000 * (total - before_total) / commits, 2) if commits else 0.0,
        records=records,
        journal_rows=journal,
        expired=soak.expired,
    )
    soak.samples.append(sample)
    print(
        f"{sample.elapsed_seconds:7.0f} s  {sample.commands:7,} answered  p50 {sample.p50_ms:7.1f}"
        f" ms  p99 {sample.p99_ms:7.1f} ms  commit {sample.commit_mean_ms:6.2f} ms  records"
        f" {records:9,}  journal {journal:10,}",
        flush=True,
    )


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1)


async def _publish(soak: Soak, client: Client, workload: Workload, deadline: float) -> None:
    """Open loop at ``rate`` commands/s until ``deadline``, at most AWAITED_MAX awaiting."""
    per_tick = max(1, int(soak.options.rate * TICK_SECONDS))
    next_tick = time.monotonic()
    while time.monotonic() < deadline and soak.sent < COMMANDS_MAX:
        if len(soak.awaited) + per_tick <= AWAITED_MAX:
            commands = [issued(workload.next_command(), now_ms()) for _ in range(per_tick)]
            await _send(soak, client, commands)
        next_tick += TICK_SECONDS
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))


async def _send(soak: Soak, client: Client, commands: list[Command]) -> None:
    started = time.perf_counter()
    for command in commands:
        soak.awaited[command.id] = started
    await client.publish_many(commands)
    soak.sent += len(commands)


async def _moves(soak: Soak, started: float) -> None:
    """At a third of the run, move a partition to the other Postgres cup; at two thirds,
    another to the MariaDB cup (or, if it lives there, to the first cup)."""
    config = soak.system.config
    shard_map = soak.system.shard_map
    cups = sorted(shard_map.cups)
    for number, partition in enumerate((0, 1)):
        await asyncio.sleep(
            max(0.0, started + soak.options.seconds * (number + 1) / 3 - time.monotonic())
        )
        source = shard_map.cup_of[partition]
        wanted = cups[1] if number == 0 else cups[-1]
        target = wanted if wanted != source else cups[0]
        control = await connect(config.control_dsn, config.shards)
        try:
            move = await move_partition(control, partition, target, config.shards, None, 30.0)
        finally:
            await control.close()
        print(f"soak: {move.summary()}", flush=True)
        if move.pause_seconds is not None:
            soak.pauses_seconds.append(move.pause_seconds)


async def _archives(soak: Soak, started: float, directory: Path) -> None:
    """Every ``archive_every_seconds``: archive the periods that closed a period ago."""
    options = soak.options
    period = options.period_seconds
    rounds = int(options.seconds // options.archive_every_seconds)
    for number in range(1, rounds + 1):
        await asyncio.sleep(
            max(0.0, started + number * options.archive_every_seconds - time.monotonic())
        )
        now_s = int(time.time())
        before_s = period_start(now_s, period) - period
        status = await archive(soak.system.config, before_s, directory, now_s)
        line = f"archive --before {iso(before_s)}: exit {status}"
        print(f"soak: {line}", flush=True)
        soak.archives.append(line)


async def run_soak(base: Config, options: SoakOptions, log_dir: Path) -> Soak:
    system = await make_system(base, log_dir, partitions=PARTITIONS, cups=2, mysql_cups=1)
    with_archive_periods(base, system, options.period_seconds)
    ports = [free_port(), free_port()]
    soak = Soak(options, system, ports)
    try:
        for port in ports:
            system.start_worker(_worker_env(options, port))
        await wait_owning(ports, PARTITIONS, OWNING_WAIT_SECONDS)
        await _drive(soak)
    finally:
        system.stop_all()
    report = await reconcile(system.config, topics=True)
    print(f"soak: reconcile {'OK' if report.ok else dict(report.problems)}", flush=True)
    if report.ok:
        await drop_system(base, system)
    return soak


async def _drive(soak: Soak) -> None:
    options = soak.options
    shape = WorkloadShape(
        customers=options.customers, partitions=PARTITIONS, cross_share_percent=20, seed=24
    )
    workload = Workload(shape)
    async with Client(soak.system.config.kafka) as client:
        client.on_result = soak.on_result
        await _send(soak, client, [issued(c, now_ms()) for c in workload.opening()])
        started = time.monotonic()
        deadline = started + options.seconds
        archived = soak.system.log_dir / "archive"
        archived.mkdir(exist_ok=True)
        background = [
            asyncio.create_task(_moves(soak, started)),
            asyncio.create_task(_archives(soak, started, archived)),
        ]
        publisher = asyncio.create_task(_publish(soak, client, workload, deadline))
        while True:
            await asyncio.wait({publisher}, timeout=options.sample_seconds)
            if publisher.done():
                break
            await _sample(soak, started)
        await publisher
        for task in background:
            await task
        for _ in range(int(RESULTS_WAIT_SECONDS / TICK_SECONDS)):
            if not soak.awaited:
                break
            await asyncio.sleep(TICK_SECONDS)


def verdicts(soak: Soak) -> dict[str, bool]:
    """What the soak shows, each a yes or no: latency, commit time and table sizes in the
    last third within twice the first third's (after the window filled), pauses that do
    not grow, nothing left unanswered."""
    samples = soak.samples[1:] or soak.samples
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]

    def flat(values_first: list[float], values_last: list[float]) -> bool:
        return statistics.median(values_last) <= 2 * max(statistics.median(values_first), 1.0)

    return {
        "p99_flat": flat([s.p99_ms for s in first], [s.p99_ms for s in last]),
        "commit_flat": flat([s.commit_mean_ms for s in first], [s.commit_mean_ms for s in last]),
        "records_flat": flat([float(s.records) for s in first], [float(s.records) for s in last]),
        "journal_flat": flat(
            [float(s.journal_rows) for s in first], [float(s.journal_rows) for s in last]
        ),
        "pauses_flat": len(soak.pauses_seconds) == 2
        and soak.pauses_seconds[1] <= 2 * soak.pauses_seconds[0] + PAUSE_NOISE_SECONDS,
        "all_answered": not soak.awaited,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__)
    defaults = SoakOptions()
    parser.add_argument("--seconds", type=float, default=defaults.seconds)
    parser.add_argument("--rate", type=int, default=defaults.rate)
    parser.add_argument("--json", type=Path, default=Path(".smallcups/soak.json"))
    args = parser.parse_args(argv)
    options = SoakOptions(seconds=args.seconds, rate=args.rate)
    log_dir = Path(".smallcups/soak")
    log_dir.mkdir(parents=True, exist_ok=True)
    soak = asyncio.run(run_soak(load_config(), options, log_dir))
    outcome = verdicts(soak)
    document = {
        "options": asdict(options),
        "samples": [asdict(s) for s in soak.samples],
        "pauses_seconds": soak.pauses_seconds,
        "archives": soak.archives,
        "verdicts": outcome,
    }
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(msgspec.json.encode(outcome).decode())
    return 0 if all(outcome.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
