"""``db_ceiling`` (Postgres cups) and ``db_ceiling_mariadb`` (MariaDB cups): the
database-side ceiling, no Kafka.

1. claim every partition in its cup (as a worker would);
2. decide the set-up (open and fund the accounts) with the pure ledger and commit it;
3. decide the whole load in memory, saga legs included (not measured);
4. measure: commit every partition's chain of decided batches with the store's fenced
   batch commit, in rounds as a worker commits (``worker.commits_per_cup_max`` rounds of
   each cup in flight, each round one statement for the next batch of its partitions);
5. verify: every commit went through, reconciliation of the cups is clean, the cups'
   journal rows and customer money equal the in-memory ledger's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.admin.reconcile import reconcile
from engine.core.config import Config
from engine.core.store import CupStore
from loadtest.bench.cpu import CpuMeter
from loadtest.bench.decided import Simulation, commit_chains
from loadtest.bench.options import BenchOptions, Checks, Load, ModeResult, fresh_system, rate_of
from loadtest.system import System, drop_system
from shards.cups import close_cups, open_cups

CLAIM_OWNER = "bench"


@dataclass(slots=True)
class Seeded:
    """A system whose accounts are open and funded, and the ledger that decided it."""

    simulation: Simulation
    journal_rows: int


async def seed(
    system: System, stores: Mapping[int, CupStore], load: Load, batch_records: int
) -> Seeded:
    """Steps 1 and 2: claim the partitions, then commit the decided set-up."""
    by_partition = partitions_to_stores(system, stores)
    epochs = {p: (await store.claim(p, CLAIM_OWNER)).epoch for p, store in by_partition.items()}
    simulation = Simulation(
        system.shard_map.partitions, epochs, batch_records, time.time_ns() // 1000
    )
    decided = simulation.decide(load.setup)
    problems = await commit_chains(by_partition, decided.chains)
    if problems:
        raise RuntimeError(f"the set-up did not commit: {problems[:3]}")
    return Seeded(simulation, decided.journal_rows)


def partitions_to_stores(system: System, stores: Mapping[int, CupStore]) -> dict[int, CupStore]:
    return {p: stores[cup] for p, cup in system.shard_map.cup_of.items()}


async def run_db_ceiling(
    base: Config, options: BenchOptions, load: Load, log_dir: Path, mode: str
) -> ModeResult:
    system = await fresh_system(base, options, mode, log_dir)
    checks = Checks()
    try:
        stores = await open_cups(system.shard_map, system.config.shards)
        try:
            seeded = await seed(system, stores, load, options.ceiling_batch_records)
            decided = seeded.simulation.decide(load.commands)
            meter = CpuMeter(base.stack)
            meter.start()
            started = time.perf_counter()
            problems = await commit_chains(
                partitions_to_stores(system, stores),
                decided.chains,
                base.worker.commits_per_cup_max,
            )
            seconds = time.perf_counter() - started
            meter.stop()
        finally:
            await close_cups(stores)
        report = await reconcile(system.config, topics=False)
    finally:
        await drop_system(base, system)
    checks.expect(not problems, "every fenced commit went through", problems[:3])
    checks.expect(report.ok, "reconcile (cups) clean", dict(report.problems))
    journal = sum(cup.journal_rows for cup in report.cups)
    wanted = seeded.journal_rows + decided.journal_rows
    checks.expect(journal == wanted, f"{wanted} journal rows", journal)
    money = sum(sum(cup.customer_total.values()) for cup in report.cups)
    in_memory = seeded.simulation.customer_total()
    checks.expect(money == in_memory, "customer money equals the pure ledger's", money)
    checks.expect(report.transfers_in_flight == 0, "no transfer left in flight")
    commands = len(load.commands)
    batches = sum(len(chain) for chain in decided.chains.values())
    result = ModeResult(
        mode=mode,
        commands=commands,
        seconds=round(seconds, 3),
        rate_per_second=round(rate_of(commands, seconds), 1),
        cpu_seconds_per_1k=meter.per_thousand(commands),
        notes={"batches": batches, "batch_records_max": options.ceiling_batch_records},
    )
    return checks.apply(result)
