"""Adding a cup online: moves under load, moves interrupted at every step, the assignor.

Everything real: worker processes in one consumer group, Kafka, a mixed cluster of
Postgres and MariaDB databases as cups (moves go between the kinds both ways); a steady
closed-loop load of transfers (a fifth crossing partitions) runs while
partitions move. Each test ends with reconcile (every check, the topics included),
one final result per command, and balances equal to a pure replay of the command topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from engine.admin.reconcile import reconcile
from engine.admin.setup import read_shard_map
from engine.core.config import Config, to_environ
from engine.core.errors import CupUnavailableError
from engine.kafka.client import Client
from loadtest.driver import Driver
from loadtest.system import System, add_cup_database, drop_system, make_system
from loadtest.workload import Workload, WorkloadShape
from shards import cluster
from shards.backends import cup_kind, open_store
from shards.control import connect
from shards.cup_admin import CupKind
from shards.moves import Step, open_moves
from tests.integration.system import RawCup, cup_balances, final_results, replay_system

pytestmark = pytest.mark.integration

RESULTS_TIMEOUT_SECONDS = 180.0
CHUNK = 200
SETTLE_TIMEOUT_SECONDS = 90.0

CLI = (sys.executable, "-m", "engine.cli")
Claims = Callable[[dict[int, dict[int, int]]], bool]


class SteadyLoad:
    """Transfers published in chunks through one Driver until stopped; results counted."""

    def __init__(self, driver: Driver, workload: Workload):
        self.driver = driver
        self.workload = workload
        self.stopping = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self.stopping.is_set():
            await self.driver.send_many([self.workload.next_command() for _ in range(CHUNK)])

    def results(self) -> int:
        return len(self.driver.score.results)

    async def rate(self, seconds: float) -> float:
        """Results per second over the next ``seconds``."""
        before, started = self.results(), time.monotonic()
        await asyncio.sleep(seconds)
        return (self.results() - before) / (time.monotonic() - started)

    async def stop(self) -> None:
        self.stopping.set()
        if self.task is not None:
            await self.task


@contextlib.asynccontextmanager
async def steady_load(system: System, workload: Workload) -> AsyncIterator[SteadyLoad]:
    """Open the workload's accounts, then run its transfers until the block ends; every
    command must then be answered."""
    async with Client(system.config.kafka) as client:
        driver = Driver(client, window=2_000)
        await driver.send_all(workload.opening())
        assert await driver.wait_all(RESULTS_TIMEOUT_SECONDS), system.worker_logs()
        load = SteadyLoad(driver, workload)
        load.start()
        yield load
        await load.stop()
        assert await driver.wait_all(RESULTS_TIMEOUT_SECONDS), system.worker_logs()


@contextlib.asynccontextmanager
async def control_database(system: System) -> AsyncIterator[asyncpg.Connection]:
    control = await connect(system.config.control_dsn, system.config.shards)
    try:
        yield control
    finally:
        await control.close()


async def assert_books(system: System) -> None:
    """Reconcile clean, no move left open, one final result per command, replay equal."""
    report = await reconcile(system.config, topics=True)
    assert report.ok, dict(report.problems)
    async with control_database(system) as control:
        assert await open_moves(control) == []
    kafka = system.config.kafka
    finals = await final_results(kafka)
    assert all(len(variants) == 1 for variants in finals.values()), "one result per command"
    assert await cup_balances(system) == await replay_system(system.config)


@pytest.fixture
async def three_cups(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    """Cups 0 and 1 on Postgres, cup 2 on MariaDB."""
    made = await make_system(stack, tmp_path, partitions=12, cups=2, mysql_cups=1)
    yield made
    await drop_system(stack, made)


async def test_a_partition_moves_postgres_to_mariadb_and_back_under_load(
    three_cups: System,
) -> None:
    system = three_cups
    system.start_worker()
    system.start_worker()
    shard_map = await read_shard_map(system.config)
    (mariadb,) = [c for c, dsn in shard_map.cups.items() if cup_kind(dsn) is CupKind.MYSQL]
    partition = shard_map.partitions_of(0)[0]
    workload = Workload(WorkloadShape(customers=600, partitions=12, seed=3, run="kinds"))
    async with steady_load(system, workload) as load, control_database(system) as control:
        await asyncio.sleep(2)
        there = await cluster.move_partition(control, partition, mariadb, system.config.shards)
        await asyncio.sleep(3)
        back = await cluster.move_partition(control, partition, 0, system.config.shards)
        await asyncio.sleep(2)
    assert [there.step, back.step] == [Step.DONE, Step.DONE]
    assert all(m.pause_seconds is not None for m in (there, back)), "claimed after each flip"
    await assert_books(system)
    print(
        f"\npartition {partition} under load: Postgres -> MariaDB {there.summary()}; "
        f"MariaDB -> Postgres {back.summary()}; {load.results():,} commands, reconcile clean"
    )


async def test_add_a_cup_under_load_and_rebalance(stack: Config, three_cups: System) -> None:
    system = three_cups
    system.start_worker()
    system.start_worker()
    workload = Workload(WorkloadShape(customers=600, partitions=12, seed=11, run="grow"))
    async with steady_load(system, workload) as load:
        await asyncio.sleep(2)
        before = await load.rate(8)
        dsn = await add_cup_database(stack, system, CupKind.MYSQL)
        async with control_database(system) as control:
            new_cup = await cluster.add_cup(control, dsn, system.config.shards)
            started = time.monotonic()
            moves = await cluster.rebalance(control, system.config.shards)
            rebalance_seconds = time.monotonic() - started
        await asyncio.sleep(2)
        after = await load.rate(8)
    shard_map = await read_shard_map(system.config)
    assert len(shard_map.partitions_of(new_cup)) == 3, "1/(N+1) of 12 partitions"
    assert [m.step for m in moves] == [Step.DONE] * 3
    pauses = [m.pause_seconds for m in moves]
    assert all(p is not None for p in pauses), "every moved partition resumed"
    await assert_books(system)
    print(
        f"\nadd a cup under load: {len(moves)} partitions moved in {rebalance_seconds:.2f} s, "
        f"pause per partition {', '.join(f'{p:.3f}' for p in pauses if p is not None)} s; "
        f"throughput {before:,.0f} commands/s with 3 cups before, {after:,.0f} after "
        f"the 4th; {load.results():,} commands, reconcile clean"
    )
    assert max(p for p in pauses if p is not None) < 5.0


async def owner_of(system: System, partition: int) -> int | None:
    """The pid of the worker that last claimed ``partition`` in its current cup."""
    shard_map = await read_shard_map(system.config)
    cup = await RawCup.open(shard_map.cups[shard_map.cup_of[partition]], system.config.shards)
    try:
        owner = await cup.value(f"SELECT owner FROM partition_state WHERE {{p}} = {int(partition)}")
    finally:
        await cup.close()
    with contextlib.suppress(ValueError, AttributeError, IndexError):
        return int(owner.rsplit(":", 1)[1])
    return None


async def live_owner_of(system: System, partition: int) -> int:
    """The pid of the live worker that claimed ``partition`` (waits out a rebalance that
    an earlier kill started)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        owner = await owner_of(system, partition)
        if owner in {w.pid for w in system.workers if w.alive()}:
            assert owner is not None
            return owner
        await asyncio.sleep(0.2)
    raise AssertionError(f"no live worker claimed partition {partition}")


def kill_worker(system: System, pid: int | None) -> None:
    """SIGKILL the worker ``pid`` (the owner of a partition) and start a replacement."""
    victims = [w for w in system.workers if w.alive() and w.pid == pid]
    assert victims, f"no live worker has pid {pid}: {system.worker_logs()}"
    victims[0].kill()
    system.start_worker()


async def test_moves_interrupted_at_each_step_recover(stack: Config, three_cups: System) -> None:
    """Stop the tool after each step (what kill -9 leaves behind), sometimes also kill the
    worker owning the partition, then resume or roll back with one call."""
    system = three_cups
    system.start_worker()
    system.start_worker()
    workload = Workload(WorkloadShape(customers=300, partitions=12, seed=5, run="cut"))
    cases = [
        (Step.PLANNED, True, False),
        (Step.PAUSED, False, True),
        (Step.PRECOPIED, True, False),
        (Step.FENCED, True, False),
        (Step.COPIED, False, False),
        (Step.COPIED, True, True),
        (Step.FLIPPED, False, False),
        (Step.FLIPPED, True, True),
        (Step.PAUSED, True, False),
        (Step.FENCED, False, False),
        (Step.PRECOPIED, False, True),
    ]
    async with steady_load(system, workload), control_database(system) as control:
        for index, (step, abort, kill) in enumerate(cases):
            shard_map = await read_shard_map(system.config)
            partition = index % 12
            target = (shard_map.cup_of[partition] + 1) % 3
            owner = await live_owner_of(system, partition) if kill else None
            cut = await cluster.move_partition(
                control, partition, target, system.config.shards, step
            )
            assert cut.step is step
            if kill:
                kill_worker(system, owner)
            recovered = await cluster.recover(control, system.config.shards, abort=abort)
            expected = Step.ABORTED if abort and step is not Step.FLIPPED else Step.DONE
            assert [m.step for m in recovered] == [expected], (step, abort)
            now = await read_shard_map(system.config)
            cup = target if expected is Step.DONE else shard_map.cup_of[partition]
            assert now.cup_of[partition] == cup and not now.paused
            print(f"\ninterrupted after {step}, kill={kill}: recovered to {expected}")
        home = (await read_shard_map(system.config)).cup_of[1]
        away = await cluster.move_partition(control, 1, (home + 1) % 3, system.config.shards)
        back = await cluster.move_partition(control, 1, home, system.config.shards)
        assert away.step is Step.DONE and back.step is Step.DONE, "over its tombstone"
    await assert_books(system)


async def wait_for_step(control: asyncpg.Connection, partition: int, steps: set[Step]) -> Step:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        step = await control.fetchval(
            "SELECT step FROM moves WHERE partition = $1 ORDER BY move_id DESC LIMIT 1", partition
        )
        if step is not None and Step(step) in steps:
            return Step(step)
        await asyncio.sleep(0.002)
    raise AssertionError(f"the move of partition {partition} never reached {steps}")


async def test_the_move_tool_killed_then_recovered_by_the_cli(three_cups: System) -> None:
    """``smallcups shards move`` SIGKILLed mid-move under load; ``shards recover`` ends it."""
    system = three_cups
    system.start_worker()
    env = to_environ(system.config)
    shard_map = await read_shard_map(system.config)
    partition, target = 5, (shard_map.cup_of[5] + 1) % 3
    workload = Workload(WorkloadShape(customers=200, partitions=12, seed=9, run="cli"))
    async with steady_load(system, workload), control_database(system) as control:
        await cut_the_workers_from_the_control_database(control)
        step, listed, recovered = await _kill_the_tool_mid_move(control, env, partition, target)
    assert "unfinished move" in listed or step is Step.DONE, listed
    print(f"\nkilled the tool after {step}: {recovered.strip()}")
    assert (await read_shard_map(system.config)).cup_of[partition] == target
    await assert_books(system)
    await assert_a_stale_claim_is_refused(system, partition, shard_map.cup_of[partition])
    await assert_stray_rows_are_reported(system, partition)


async def cut_the_workers_from_the_control_database(control: asyncpg.Connection) -> None:
    """Terminate every other session of the control database: the workers' LISTEN
    connections die, and their map followers must reconnect to see the next move."""
    cut = await control.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    assert cut >= 1, "the worker's map follower was listening"


async def assert_a_stale_claim_is_refused(system: System, partition: int, source: int) -> None:
    """A worker on the map of before the move claims in the old cup: the tombstone refuses."""
    shard_map = await read_shard_map(system.config)
    store = await open_store(source, shard_map.cups[source], system.config.shards)
    try:
        with pytest.raises(CupUnavailableError):
            await store.claim(partition, "a worker on an old map")
    finally:
        await store.close()


async def assert_stray_rows_are_reported(system: System, partition: int) -> None:
    """Rows of a partition left in a cup the map does not name fail the one_cup check."""
    shard_map = await read_shard_map(system.config)
    elsewhere = next(c for c in shard_map.cups if c != shard_map.cup_of[partition])
    cup = await RawCup.open(shard_map.cups[elsewhere], system.config.shards)
    try:
        await cup.execute(f"INSERT INTO partition_state ({{p}}) VALUES ({int(partition)})")
    finally:
        await cup.close()
    report = await reconcile(system.config, topics=False)
    assert len(report.problems["one_cup"]) == 1, dict(report.problems)


async def _kill_the_tool_mid_move(
    control: asyncpg.Connection, env: dict[str, str], partition: int, target: int
) -> tuple[Step, str, str]:
    """Start ``shards move``, SIGKILL it mid-way, list, recover: (step, list, recover)."""
    tool = await asyncio.create_subprocess_exec(
        *CLI, "shards", "move", str(partition), "--to", str(target), env=env
    )
    step = await wait_for_step(control, partition, {Step.PAUSED, Step.FENCED, Step.COPIED})
    tool.send_signal(signal.SIGKILL)
    await tool.wait()
    outputs = []
    for action in ("list", "recover"):
        child = await asyncio.create_subprocess_exec(
            *CLI, "shards", action, env=env, stdout=asyncio.subprocess.PIPE
        )
        stdout, _ = await child.communicate()
        outputs.append(stdout.decode())
    assert await open_moves(control) == []
    return step, outputs[0], outputs[1]


async def claimed_cups(system: System) -> dict[int, dict[int, int]]:
    """pid -> {cup: partitions} from the owners recorded by the claims in every cup."""
    shard_map = await read_shard_map(system.config)
    owners: dict[int, dict[int, int]] = {}
    for cup_id, dsn in shard_map.cups.items():
        cup = await RawCup.open(dsn, system.config.shards)
        try:
            owners_here = await cup.values("SELECT owner FROM partition_state WHERE epoch > 0")
        finally:
            await cup.close()
        for owner in owners_here:
            pid = int(owner.rsplit(":", 1)[1])
            owners.setdefault(pid, {}).setdefault(cup_id, 0)
            owners[pid][cup_id] += 1
    return owners


async def settle(system: System, done: Claims) -> dict[int, dict[int, int]]:
    """Poll the claims until ``done(claims)`` holds for the live workers (bounded)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    claims: dict[int, dict[int, int]] = {}
    while time.monotonic() < deadline:
        live = {w.pid for w in system.workers if w.alive()}
        claims = {pid: c for pid, c in (await claimed_cups(system)).items() if pid in live}
        if done(claims):
            return claims
        await asyncio.sleep(0.5)
    raise AssertionError(f"assignment did not settle: {claims}\n{system.worker_logs()}")


async def test_the_group_assigns_whole_cups_then_spreads(stack: Config, tmp_path: Path) -> None:
    system = await make_system(stack, tmp_path, partitions=16, cups=2, mysql_cups=2)
    try:
        system.start_worker()
        system.start_worker()
        two = await settle(
            system,
            lambda c: len(c) == 2 and sum(n for cups in c.values() for n in cups.values()) == 16,
        )
        assert sorted(len(cups) for cups in two.values()) == [2, 2], two
        for _ in range(6):
            system.start_worker()
        eight = await settle(
            system,
            lambda c: len(c) == 8 and all(sum(cups.values()) == 2 for cups in c.values()),
        )
        spans = sorted(len(cups) for cups in eight.values())
        assert max(spans) <= 2, eight
        print(
            f"\nassignor: 2 workers -> {sorted(len(c) for c in two.values())} cups each; "
            f"8 workers -> 2 partitions each, over {spans} cups"
        )
    finally:
        await drop_system(stack, system)
