"""``make move-pause``: the pause of a pre-copied move against the partition's history.
Not part of ``make test``: it runs on the local stack (``SMALLCUPS_CONFIG``) and takes a
few minutes.

1. A throwaway system (loadtest.system): 12 partitions, cups 0 and 1 on Postgres, cup 2
   on MariaDB; two workers and a steady closed-loop load of transfers (a fifth crossing
   partitions) from the start to the end.
2. After LOAD_SECONDS, the moved partitions hold about the history of the integration
   tests' moved partitions (one unit: the first partition's journal and idempotency
   rows then). For each size in SIZES, one partition is filled up to ``size`` units, in SQL
   (generate_series): per command, two journal rows that net to zero on one of its
   accounts and one idempotency record, at input places below its watermark, so the
   balances still equal their journal sums (its worker never reads these records: no
   command carries their ids).
3. Each partition is moved under the load (shards.moves.Mover, the tool's own path):
   Postgres -> Postgres from cup 0 to cup 1, Postgres -> MariaDB from cup 1 to cup 2.
   The figures are the mover's own records: the pre-copy's time and rows, the
   catch-up's rows and the pause (from the pause to the first claim in the target).
4. For contrast, one more Postgres partition of the largest size is moved the way a
   mover resumed past the pause moves it (no trusted pre-copy: a whole copy, paused).
5. One line per move; the system dropped, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from engine.core.config import Config, ShardsConfig, load_config
from engine.kafka.client import Client
from loadtest.driver import Driver
from loadtest.system import System, drop_system, make_system
from loadtest.workload import Workload, WorkloadShape
from shards.backends import connect_cup
from shards.control import connect
from shards.moves import Move, Mover, Step, plan_move
from shards.postgres.admin import PostgresCupAdmin

SIZES: Final = (1, 10, 100)
PARTITIONS: Final = 12
LOAD_SECONDS: Final = 4.0
CHUNK: Final = 200
RESUME_WAIT_SECONDS: Final = 30.0

_HISTORY: Final = """
SELECT (SELECT count(*) FROM journal WHERE partition = $1)
     + (SELECT count(*) FROM command_results WHERE partition = $1)
"""

_FILL: Final = """
WITH account AS (SELECT customer_id, account_no, currency FROM accounts
                 WHERE partition = $1 AND customer_id <> 0 ORDER BY customer_id LIMIT 1),
     place AS (SELECT next_offset + internal_offset AS watermark FROM partition_state
               WHERE partition = $1),
     made AS (
        INSERT INTO journal (partition, src_offset, command_id, customer_id, account_no,
                             currency, amount)
        SELECT $1, n % p.watermark, 'history-' || n, a.customer_id, a.account_no, a.currency,
               side * (1 + n % 1000)
        FROM generate_series(0, $2::integer - 1) AS n, account AS a, place AS p,
             (VALUES (1), (-1)) AS sides (side))
INSERT INTO command_results (partition, command_id, fingerprint, src_offset, result)
SELECT $1, 'history-' || n, n, n % p.watermark, '\\x00'::bytea
FROM generate_series(0, $2::integer - 1) AS n, place AS p
"""
"""$2 commands of the partition $1's past: three history rows each."""


@contextlib.asynccontextmanager
async def steady_load(system: System) -> AsyncIterator[Driver]:
    async with Client(system.config.kafka) as client:
        driver = Driver(client, window=2_000)
        workload = Workload(WorkloadShape(customers=600, partitions=PARTITIONS, seed=24))
        await driver.send_all(workload.opening())
        await driver.wait_all(120)
        stopping = asyncio.Event()

        async def run() -> None:
            while not stopping.is_set():
                await driver.send_many([workload.next_command() for _ in range(CHUNK)])

        task = asyncio.create_task(run())
        try:
            yield driver
        finally:
            stopping.set()
            await task


async def history(dsn: str, shards: ShardsConfig, partition: int, rows_min: int = 0) -> int:
    """The partition's history rows, after filling it up to ``rows_min``."""
    cup = await connect_cup(dsn, shards)
    assert isinstance(cup, PostgresCupAdmin), "the moved partitions start in Postgres"
    try:
        rows: int = await cup.connection.fetchval(_HISTORY, partition)
        if rows < rows_min:
            await cup.connection.execute(_FILL, partition, (rows_min - rows) // 3)
            await cup.connection.execute("ANALYZE journal; ANALYZE command_results")
            rows = await cup.connection.fetchval(_HISTORY, partition)
        return rows
    finally:
        await cup.close()


_SPLIT: Final = """
SELECT extract(epoch FROM flipped_at - paused_at)::float8,
       extract(epoch FROM resumed_at - flipped_at)::float8
FROM moves WHERE move_id = $1
"""
"""The pause's two parts: the mover's (fence, catch-up, flip) and the worker's (its turn
ends, it sees the new map and claims the partition in the target)."""


async def move(system: System, partition: int, target: int, *, whole: bool) -> tuple[Move, str]:
    """Move under the load (``whole``: as a mover resumed past the pause does); the move
    and the pause's split."""
    control = await connect(system.config.control_dsn, system.config.shards)
    try:
        planned = await plan_move(control, partition, target)
        mover = Mover(control, system.config.shards, RESUME_WAIT_SECONDS)
        if whole:
            await mover.finish(planned.move_id, Step.PAUSED)
            await mover.close()
            mover = Mover(control, system.config.shards, RESUME_WAIT_SECONDS)
        try:
            moved = await mover.finish(planned.move_id)
        finally:
            await mover.close()
        mover_part, worker_part = await control.fetchrow(_SPLIT, planned.move_id)
        return moved, f"(mover {mover_part:.3f} s + worker {worker_part:.3f} s)"
    finally:
        await control.close()


def line(route: str, size: int, rows: int, moved: Move) -> str:
    precopy = (
        "no pre-copy (whole copy, paused)"
        if moved.catch_up_watermark == 0
        else f"pre-copy {moved.precopy_seconds or 0:6.2f} s ({moved.precopy_rows or 0:>9,} rows)"
    )
    return (
        f"{route:<32} {size:>4}x history {rows:>9,} rows: {precopy}, "
        f"copied paused {moved.rows_copied or 0:>9,} rows, pause {moved.pause_seconds or 0:.3f} s"
    )


async def measure(system: System) -> list[str]:
    shards = system.config.shards
    cups = system.shard_map.cups
    routes = [("Postgres -> Postgres", 0, 1), ("Postgres -> MariaDB", 1, 2)]
    lines: list[str] = []
    system.start_worker()
    system.start_worker()
    async with steady_load(system) as driver:
        await asyncio.sleep(LOAD_SECONDS)
        first = system.shard_map.partitions_of(0)[0]
        unit = await history(cups[0], shards, first)
        lines.append(f"one unit of history: {unit:,} rows (partition {first})")
        for route, source, target in routes:
            partitions = system.shard_map.partitions_of(source)
            runs = [(route, size, False) for size in SIZES]
            if source == 0:
                runs.append((f"{route}, no pre-copy", SIZES[-1], True))
            for (name, size, whole), partition in zip(runs, partitions, strict=False):
                rows = await history(cups[source], shards, partition, size * unit)
                moved, split = await move(system, partition, target, whole=whole)
                assert moved.step is Step.DONE, moved.summary()
                lines.append(f"{line(name, size, rows, moved)} {split}")
                print(lines[-1], flush=True)
        lines.append(f"{len(driver.score.results):,} commands answered during the moves")
    return lines


async def main(base: Config) -> None:
    with tempfile.TemporaryDirectory() as log_dir:
        system = await make_system(base, Path(log_dir), partitions=PARTITIONS, cups=2, mysql_cups=1)
        try:
            lines = await measure(system)
        finally:
            await drop_system(base, system)
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main(load_config()))
