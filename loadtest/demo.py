"""``smallcups demo``: the main job on the local stack, end to end.

1. initialize topics, cup schemas and the shard map (idempotent); register every cup
   of the local stack (Postgres and MariaDB: a mixed cluster), with ``--cups N`` after
   creating Postgres cups up to N, and rebalance so each cup holds its share; print the
   cups, their kind and their partitions;
2. start the worker processes;
3. open and fund one account per customer, and wait for every result;
4. publish transfers (plus some deposits and withdrawals) for a bounded time;
5. wait for every result, print commands/s and publish-to-result latency;
6. the credit scenario (loadtest.credit_demo): lines for one customer in ten, draws,
   holds, posts, repayments, business days closed, an overdue loan;
7. stop the workers with SIGTERM (each finishes its batch and leaves the group);
8. check the books: customer balances moved by deposits - withdrawals + what credit
   lent - what it was paid, ``smallcups reconcile`` (every check, the topics included)
   is clean; print the credit book.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import msgspec
import uvloop

from deploy.local.postgres_databases import ensure_databases
from deploy.local.roles import Role, as_role
from engine.admin.reconcile import credit_book_text, reconcile
from engine.admin.setup import initialize, read_shard_map
from engine.core.config import Config, StackConfig, to_environ
from engine.kafka.client import Client
from loadtest.credit_demo import PARTNER, partner_statement, run_credit, statement_excerpt
from loadtest.driver import CHUNK_COMMANDS, Driver, Score
from loadtest.workers import WorkerProcess
from loadtest.workload import Workload, WorkloadShape
from shards.audit import Report
from shards.cluster import add_cup, inventory, rebalance
from shards.control import connect

log = logging.getLogger(__name__)

COMMANDS_MAX = 2_000_000
"""Most commands one demo publishes, whatever its duration."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    seconds: float = 30.0
    workers: int = 2
    customers: int = 2_000
    rate: int = 0
    cross_percent: int = 20
    window: int = 2_000
    """Most commands awaiting their result at once (closed loop: latency ~ window / rate)."""
    cups: int = 0
    """Grow the local stack to this many Postgres cups before the load (0: as configured)."""


def customer_total(report: Report) -> int:
    """Money held by customers, over every cup and currency (minor units)."""
    return sum(sum(f.customer_total.values()) for f in report.cups)


def _workload(config: Config, options: DemoOptions, run: str) -> Workload:
    shape = WorkloadShape(
        customers=options.customers,
        partitions=config.kafka.partitions,
        cross_share_percent=options.cross_percent,
        run=run,
    )
    return Workload(shape)


def credit_total(report: Report) -> int:
    """What credit put in customers' hands and has not had back, over every currency:
    principal outstanding + interest unpaid - interest income - the partners' positions
    (= principal lent - all that was repaid, interest included)."""
    book = sum(
        f.principal_outstanding + f.interest_unpaid - f.interest_income
        for f in report.credit.values()
    )
    return book - sum(partner.position for partner in report.partners.values())


async def _load(config: Config, options: DemoOptions, workload: Workload) -> tuple[Score, float]:
    async with Client(as_role(config, Role.UPSTREAM).kafka) as client:
        driver = Driver(client, window=options.window)
        await driver.send_all(workload.opening())
        if not await driver.wait_all(120):
            raise RuntimeError("accounts were not opened within 120 s: are the workers up?")
        print(f"opened and funded {options.customers} accounts")
        before = len(driver.score.results)
        driver.score.latencies_ms.clear()
        started = time.monotonic()
        deadline = started + options.seconds
        interval = 1 / options.rate if options.rate else 0.0
        sent = 0
        while time.monotonic() < deadline and sent < COMMANDS_MAX:
            chunk = [workload.next_command() for _ in range(CHUNK_COMMANDS)]
            await driver.send_many(chunk)
            sent += len(chunk)
            if interval:
                await asyncio.sleep(max(0.0, started + sent * interval - time.monotonic()))
        if not await driver.wait_all(120):
            raise RuntimeError("results still missing 120 s after the load ended")
        elapsed = time.monotonic() - started
        return driver.score, (len(driver.score.results) - before) / elapsed


async def _spread_over_cups(config: Config, stack: StackConfig) -> None:
    """Add the stack's cups the map lacks, move their share to them, print every cup."""
    shard_map = await read_shard_map(config)
    known = set(shard_map.cups.values())
    control = await connect(config.control_dsn, config.shards)
    try:
        for dsn in stack.cup_dsns:
            if dsn not in known:
                print(f"cup {await add_cup(control, dsn, config.shards)} added")
        # the workers start after this: no claim to wait for after each flip
        await rebalance(control, config.shards, lambda move: print(move.summary()), 0.0)
        for cup in await inventory(control, config.shards):
            print(
                f"cup {cup.cup_id} ({cup.kind}): {len(cup.partitions)} partitions, "
                f"{cup.accounts:,} accounts  {cup.dsn}"
            )
    finally:
        await control.close()


def run_demo(config: Config, options: DemoOptions) -> int:
    state = config.stack.state_path
    run = f"demo{int(time.time())}"
    asyncio.run(initialize(config))
    stack = config.stack
    if options.cups:
        stack = msgspec.structs.replace(stack, postgres_cups=options.cups)
        ensure_databases(stack)
    asyncio.run(_spread_over_cups(config, stack))
    earlier = asyncio.run(reconcile(config, topics=False))
    before = customer_total(earlier) - credit_total(earlier)
    workload = _workload(config, options, run)
    workers = [
        WorkerProcess(
            f"worker-{i}",
            state / "logs" / f"demo-worker-{i}.log",
            env=to_environ(as_role(config, Role.WORKER)),
        )
        for i in range(options.workers)
    ]
    for worker in workers:
        worker.start()
    print(f"started {len(workers)} workers (logs in {state / 'logs'})")
    try:
        score, rate = uvloop.run(_load(config, options, workload))
        credit = uvloop.run(run_credit(config, workload.customers, earlier.calendars, run))
    finally:
        codes = [worker.stop() for worker in workers]
        print(f"workers stopped with exit codes {codes}")
    report = asyncio.run(reconcile(config, topics=True))
    print(
        f"commands: {score.published} published, {len(score.results)} results, "
        f"{score.accepted} accepted"
    )
    transfers = [r for r in score.results if r.startswith(f"{run}-tr-")]
    print(
        f"throughput: {rate:,.0f} commands/s over {options.seconds:.0f} s "
        f"({len(transfers):,} transfers, {options.cross_percent}% to another partition)"
    )
    print(
        f"publish-to-result latency: p50 {score.percentile_ms(0.5):.1f} ms, "
        f"p99 {score.percentile_ms(0.99):.1f} ms"
    )
    print(credit.summary())
    for line in credit_book_text(report):
        print(line)
    path = state / f"clearing-{PARTNER}-{credit.draw_day}.csv"
    print(f"partner {PARTNER}'s clearing statement of {credit.draw_day} ({path}):")
    statement, entries = asyncio.run(partner_statement(config, credit.draw_day))
    path.write_bytes(statement)
    for line in statement_excerpt(statement, entries):
        print(f"  {line}")
    moved = customer_total(report) - credit_total(report) - before
    expected = score.deposited - score.withdrawn
    ok = moved == expected
    print(
        f"books: customer balances moved by {moved:,} besides credit, deposits - withdrawals"
        f" = {expected:,} -> {'OK' if ok else 'FAILED'}"
    )
    problems = sum(len(found) for found in report.problems.values())
    print(
        f"reconcile: {report.counts.get('commands_consumed', 0):,} commands consumed, "
        f"{report.transfers_in_flight} transfers in flight, {problems} discrepancies -> "
        f"{'OK' if report.ok else 'FAILED'}"
    )
    for check, found in report.problems.items():
        for finding in found:
            print(f"  {check}: {finding}")
    return 0 if ok and report.ok else 1
