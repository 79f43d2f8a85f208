"""A move's flip asks the consumer group to rebalance, which restores cup affinity; the
price is a pause of the other partitions, measured here with the trigger off and on.

Two Postgres cups, two workers: each worker owns a whole cup. Moving a partition to the
other cup leaves it with the worker of its old cup (affinity broken) until the group
rebalances. The pause of the other partitions is the longest time without a commit
(their next_offset not moving) in the window after each flip, under a steady load.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.admin.setup import read_shard_map
from engine.core.config import Config
from loadtest.system import System, drop_system, make_system
from loadtest.workload import Workload, WorkloadShape
from shards import cluster
from shards.moves import Step
from tests.integration.system import RawCup
from tests.integration.test_moves import assert_books, control_database, steady_load

pytestmark = pytest.mark.integration

PARTITIONS = 8
MOVES = 1
"""Moves per phase (the figures in docs/performance.md were measured with three)."""
WINDOW_SECONDS = 8.0
"""After a flip: how long the other partitions' commits are watched."""
POLL_SECONDS = 0.02
SETTLE_SECONDS = 60.0


@pytest.fixture
async def two_cups(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=PARTITIONS, cups=2)
    yield made
    await drop_system(stack, made)


async def live_claims(system: System) -> dict[int, dict[int, int]]:
    """pid -> {cup: partitions} of the claims that are not tombstones."""
    shard_map = await read_shard_map(system.config)
    owners: dict[int, dict[int, int]] = {}
    for cup_id, dsn in shard_map.cups.items():
        cup = await RawCup.open(dsn, system.config.shards)
        try:
            rows = await cup.values("SELECT owner FROM partition_state WHERE NOT frozen")
        finally:
            await cup.close()
        for owner in rows:
            if ":" in owner:
                pid = int(owner.rsplit(":", 1)[1])
                owners.setdefault(pid, {}).setdefault(cup_id, 0)
                owners[pid][cup_id] += 1
    return owners


def affine(claims: dict[int, dict[int, int]], live: set[int]) -> bool:
    """Every live worker claims in one cup only, and all partitions are claimed."""
    mine = {pid: cups for pid, cups in claims.items() if pid in live}
    total = sum(n for cups in mine.values() for n in cups.values())
    return len(mine) == 2 and total == PARTITIONS and all(len(c) == 1 for c in mine.values())


async def wait_affine(system: System, seconds: float) -> float | None:
    """Seconds until the claims are cup-affine (None: not within ``seconds``)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        live = {w.pid for w in system.workers if w.alive()}
        if affine(await live_claims(system), live):
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    return None


class CommitWatch:
    """Samples every partition's next_offset in its cup, to find gaps without commits."""

    def __init__(self, system: System):
        self.system = system
        self.samples: dict[int, list[tuple[float, int]]] = {}
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        shard_map = await read_shard_map(self.system.config)
        cups = [await RawCup.open(d, self.system.config.shards) for d in shard_map.cups.values()]
        try:
            while not self.stopping.is_set():
                for cup in cups:
                    rows = await cup.rows(
                        "SELECT {p}, next_offset FROM partition_state WHERE NOT frozen"
                    )
                    now = time.time()
                    for partition, offset in rows:
                        self.samples.setdefault(partition, []).append((now, offset))
                await asyncio.sleep(POLL_SECONDS)
        finally:
            for cup in cups:
                await cup.close()

    def longest_gap(self, partition: int, start: float, end: float) -> float:
        """The longest time without a commit of ``partition`` within [start, end]."""
        last, longest, previous = start, 0.0, None
        for at, offset in sorted(self.samples.get(partition, [])):
            if previous is not None and offset > previous and start <= at <= end:
                longest = max(longest, at - last)
                last = at
            previous = max(offset, previous or 0)
        return max(longest, end - last)


async def moves_with_pauses(system: System, watch: CommitWatch) -> list[float]:
    """MOVES moves back and forth; the other partitions' longest gaps after each flip."""
    gaps: list[float] = []
    async with control_database(system) as control:
        for index in range(MOVES):
            shard_map = await read_shard_map(system.config)
            partition = index
            target = 1 - shard_map.cup_of[partition]
            move = await cluster.move_partition(control, partition, target, system.config.shards)
            assert move.step is Step.DONE
            flipped_at = await control.fetchval(
                "SELECT extract(epoch FROM flipped_at)::float8 FROM moves WHERE move_id = $1",
                move.move_id,
            )
            await asyncio.sleep(WINDOW_SECONDS)
            end = flipped_at + WINDOW_SECONDS
            others = [p for p in range(PARTITIONS) if p != partition]
            gaps.extend(watch.longest_gap(p, flipped_at, end) for p in others)
    return gaps


async def phase(system: System, trigger: bool, seed: int) -> tuple[list[float], float | None]:
    """Two workers with the trigger ``trigger``: the gaps, then how long until affine."""
    for _ in range(2):
        system.start_worker({"SMALLCUPS_WORKER_REBALANCE_ON_FLIP": str(trigger).lower()})
    assert await wait_affine(system, SETTLE_SECONDS) is not None, system.worker_logs()
    shape = WorkloadShape(customers=200, partitions=PARTITIONS, seed=seed, run=f"flip{seed}")
    workload = Workload(shape)
    watch = CommitWatch(system)
    watcher = asyncio.create_task(watch.run())
    try:
        async with steady_load(system, workload):
            await asyncio.sleep(2)
            gaps = await moves_with_pauses(system, watch)
            restored = await wait_affine(system, 10.0)
    finally:
        watch.stopping.set()
        await watcher
    system.stop_all()
    return gaps, restored


def figures(gaps: list[float]) -> str:
    return f"p50 {statistics.median(gaps):.3f} s, max {max(gaps):.3f} s"


async def test_a_flip_rebalances_the_group_and_restores_cup_affinity(two_cups: System) -> None:
    system = two_cups
    off, restored_off = await phase(system, trigger=False, seed=31)
    on, restored_on = await phase(system, trigger=True, seed=32)
    print(
        f"\nother partitions' longest commit gap in the {WINDOW_SECONDS:.0f} s after a flip "
        f"({MOVES} moves x {PARTITIONS - 1} partitions): trigger off {figures(off)}, "
        f"affinity restored: {restored_off is not None}; trigger on {figures(on)}, "
        f"affinity restored: {restored_on is not None}"
    )
    assert restored_on is not None, "the flip's rebalance restored cup affinity"
    assert restored_off is None, "without the trigger, nothing rebalances"
    await assert_books(system)
