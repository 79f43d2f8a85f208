"""Taking a cup out: ``shards drain`` under load, then ``shards remove``.

Everything real: two worker processes, Kafka, cups 0 and 1 on Postgres and cup 2 on
MariaDB. The drain runs through the CLI while transfers flow; it must leave every
partition elsewhere, one result per command and reconcile clean. Removing refuses while
the cup holds partitions or live rows, then unregisters it; the workers close its pool
and keep running.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import pytest

from engine.admin.setup import read_shard_map
from engine.core.config import to_environ
from engine.core.errors import ConfigError
from loadtest.system import System
from loadtest.workload import Workload, WorkloadShape
from shards import cluster
from shards.moves import Move, Mover, Step
from tests.integration.system import RawCup
from tests.integration.test_moves import (
    assert_books,
    control_database,
    steady_load,
    three_cups,
)

pytestmark = pytest.mark.integration

__all__ = ["three_cups"]  # the fixture, shared with test_moves

CLI = (sys.executable, "-m", "engine.cli")
DRAINED = 2
"""The MariaDB cup: its partitions go to the two Postgres cups."""


async def smallcups(system: System, *args: str) -> tuple[int, str, str]:
    """Run ``smallcups shards ARGS``: (exit code, stdout, stderr)."""
    child = await asyncio.create_subprocess_exec(
        *CLI,
        "shards",
        *args,
        env=to_environ(system.config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await child.communicate()
    assert child.returncode is not None
    return child.returncode, stdout.decode(), stderr.decode()


async def test_drain_a_cup_under_load_then_remove_it(three_cups: System) -> None:
    system = three_cups
    system.start_worker()
    system.start_worker()
    before = await read_shard_map(system.config)
    held = before.partitions_of(DRAINED)
    assert held, "round-robin gave the cup its share"
    workload = Workload(WorkloadShape(customers=300, partitions=12, seed=13, run="drain"))
    async with steady_load(system, workload) as load, control_database(system) as control:
        await asyncio.sleep(2)
        code, _, refused = await smallcups(system, "remove", str(DRAINED))
        assert code != 0 and f"holds {len(held)} partitions" in refused, refused
        cut = await _cut_moves(system, control, held[0])
        code, drained, errors = await smallcups(system, "drain", str(DRAINED))
        assert code == 0, errors
        assert drained.splitlines()[0].startswith(f"move {cut.move_id}: "), drained
        await asyncio.sleep(2)
    after = await read_shard_map(system.config)
    assert after.partitions_of(DRAINED) == [], drained
    assert sorted(len(after.partitions_of(c)) for c in (0, 1)) == [6, 6], "evenly"
    await assert_books(system)
    code, listed, _ = await smallcups(system, "list")
    assert "draining" in listed and "rows (est.)" in listed, listed
    async with control_database(system) as control:
        with pytest.raises(ConfigError, match="draining"):
            await cluster.move_partition(control, 0, DRAINED, system.config.shards)
        assert await cluster.rebalance(control, system.config.shards) == []
    await _assert_live_rows_refuse_removal(system, held[0])
    code, removed, errors = await smallcups(system, "remove", str(DRAINED))
    assert code == 0, errors
    gone = await read_shard_map(system.config)
    assert DRAINED not in gone.cups and gone.version > after.version
    await _assert_the_workers_closed_the_cup(system, after.cups[DRAINED])
    await assert_books(system)
    print(f"\n{drained.strip()}\n{removed.strip()}\n{listed.strip()}\n{load.results():,} commands")


async def _cut_moves(system: System, control: asyncpg.Connection, partition: int) -> Move:
    """A move out of the cup cut after its copy (what a crashed drain leaves): the drain
    will finish it. A move between two other cups left unfinished makes it refuse."""
    shards = system.config.shards
    cut = await cluster.move_partition(control, partition, 0, shards, Step.COPIED)
    assert cut.step is Step.COPIED
    other = (await read_shard_map(system.config)).partitions_of(0)[0]
    stray = await cluster.move_partition(control, other, 1, shards, Step.PAUSED)
    code, _, refused = await smallcups(system, "drain", str(DRAINED))
    assert code != 0 and f"move {stray.move_id}" in refused, refused
    assert (await Mover(control, shards).abort(stray.move_id)).step is Step.ABORTED
    return cut


async def _assert_live_rows_refuse_removal(system: System, partition: int) -> None:
    """A state row that is not a tombstone in the drained cup stops the removal."""
    shard_map = await read_shard_map(system.config)
    cup = await RawCup.open(shard_map.cups[DRAINED], system.config.shards)
    try:
        await cup.execute(f"UPDATE partition_state SET frozen = false WHERE {{p}} = {partition}")
        code, _, refused = await smallcups(system, "remove", str(DRAINED))
        assert code != 0 and "not tombstones" in refused, refused
        await cup.execute(f"UPDATE partition_state SET frozen = true WHERE {{p}} = {partition}")
    finally:
        await cup.close()


async def _assert_the_workers_closed_the_cup(system: System, dsn: str) -> None:
    """Every worker closed the removed cup's pool, kept running, and never logged its DSN."""
    for _ in range(100):
        if all("closed removed cup 2" in w.log_path.read_text() for w in system.workers):
            break
        await asyncio.sleep(0.1)
    assert all(w.alive() for w in system.workers), system.worker_logs()
    logs = "\n".join(w.log_path.read_text() for w in system.workers)
    assert "closed removed cup 2" in logs, logs[-3000:]
    assert dsn.split("?", maxsplit=1)[0] not in logs, "a cup's DSN in a worker's log"
