"""Moves with a pre-copy (shards.moves, shards.partition_copy): the history is copied
while the partition runs, the pause copies only what changed since.

Everything real, as in test_moves: worker processes, Kafka, Postgres and MariaDB cups,
a steady closed-loop load of transfers (a fifth crossing partitions, so transfers are in
flight, their results PENDING, when the pre-copy reads its snapshot)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.admin.setup import read_shard_map
from engine.core.config import Config
from loadtest.system import System, drop_system, make_system
from loadtest.workload import Workload, WorkloadShape
from shards.backends import connect_cup, cup_kind
from shards.control import connect
from shards.cup_admin import CupAdmin, CupKind, Row
from shards.history_lock import HISTORY_LOCK_CLASS
from shards.moves import Mover, Step, plan_move, read_move
from shards.partition_copy import TABLES
from tests.integration.test_moves import assert_books, control_database, steady_load

pytestmark = pytest.mark.integration


@pytest.fixture
async def cups(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    """Cups 0 and 1 on Postgres, cup 2 on MariaDB."""
    made = await make_system(stack, tmp_path, partitions=12, cups=2, mysql_cups=1)
    yield made
    await drop_system(stack, made)


async def partition_rows(cup: CupAdmin, partition: int) -> dict[str, list[Row]]:
    """Every row of the partition in the cup, table by table, in one order."""
    rows: dict[str, list[Row]] = {}
    columns = await cup.table_columns()
    async with cup.snapshot(partition) as snapshot:
        for table in TABLES:
            found: list[Row] = []
            async for chunk in snapshot.rows(table, sorted(columns[table])):
                found += chunk
            rows[table] = sorted(found, key=repr)
    return rows


async def results(cup: CupAdmin, partition: int, ids: list[str]) -> dict[str, bytes]:
    return {c: r for _, c, r in await cup.results_of([(partition, i) for i in ids])}


async def test_a_precopied_move_under_load_catches_up_what_changed(cups: System) -> None:
    """Pre-copy, let the load run on (PENDING results finalize, rows are appended), then
    pause and catch up: the target then holds exactly the fenced source's rows."""
    system = cups
    system.start_worker()
    system.start_worker()
    shard_map = await read_shard_map(system.config)
    partition = shard_map.partitions_of(0)[0]
    workload = Workload(WorkloadShape(customers=600, partitions=12, seed=13, run="pre"))
    async with steady_load(system, workload) as load, control_database(system) as control:
        await asyncio.sleep(2)
        source = await connect_cup(shard_map.cups[0], system.config.shards)
        target = await connect_cup(shard_map.cups[1], system.config.shards)
        mover = Mover(control, system.config.shards)
        try:
            planned = await plan_move(control, partition, 1)
            precopied = await mover.finish(planned.move_id, Step.PRECOPIED)
            watermark = precopied.precopy_watermark
            assert watermark is not None and watermark > 0
            pending = [t[0] for t in await target_flights(target, partition)]
            assert pending, "transfers were in flight at the pre-copy"
            before = await results(target, partition, pending)
            await asyncio.sleep(2)
            copied = await mover.finish(planned.move_id, Step.COPIED)
            assert copied.catch_up_watermark == watermark, "the catch-up trusted the pre-copy"
            moved = await partition_rows(target, partition)
            assert moved == await partition_rows(source, partition), "target = fenced source"
            after = await results(target, partition, pending)
            assert any(after[i] != before[i] for i in before), "a PENDING result finalized"
            places = await journal_places(target, partition)
            assert min(places) < watermark <= max(places), "history on both sides of it"
            done = await mover.finish(planned.move_id)
        finally:
            await mover.close()
            await asyncio.gather(source.close(), target.close())
    assert done.step is Step.DONE and done.pause_seconds is not None
    await assert_books(system)
    print(
        f"\npre-copied move under load: {done.summary()}; {len(pending)} transfers in flight"
        f" at the pre-copy; {load.results():,} commands, reconcile clean"
    )


async def target_flights(cup: CupAdmin, partition: int) -> list[tuple[str, int]]:
    return [(f.transfer_id, f.amount) for f in await cup.flights([partition])]


async def journal_places(cup: CupAdmin, partition: int) -> list[int]:
    places: list[int] = []
    async with cup.snapshot(partition) as snapshot:
        async for chunk in snapshot.rows("journal", ["src_offset"]):
            places += [int(str(row[0])) for row in chunk]
    return places


async def test_rows_written_during_a_precopy_survive_a_mover_killed_after_it(
    cups: System,
) -> None:
    """A mover session ends after the pre-copy (its control connection dies, as kill -9
    leaves it): its history locks go with it, the next session makes the pre-copy again,
    so what the load wrote meanwhile moves too. A session resuming a move past the pause
    trusts no pre-copy: it copies the partition whole."""
    system = cups
    system.start_worker()
    system.start_worker()
    shard_map = await read_shard_map(system.config)
    (mariadb,) = [c for c, dsn in shard_map.cups.items() if cup_kind(dsn) is CupKind.MYSQL]
    first, second = shard_map.partitions_of(0)[:2]
    workload = Workload(WorkloadShape(customers=300, partitions=12, seed=17, run="kill"))
    async with steady_load(system, workload), control_database(system) as control:
        await asyncio.sleep(2)
        killed = await connect(system.config.control_dsn, system.config.shards)
        move = await plan_move(killed, first, mariadb)
        cut = await Mover(killed, system.config.shards).finish(move.move_id, Step.PRECOPIED)
        assert not await history_free(system, 0), "the killed session holds cup 0's history"
        await killed.close()
        assert await history_free(system, 0), "released with its session"
        await asyncio.sleep(2)
        resumed = await Mover(control, system.config.shards).finish(move.move_id)
        assert resumed.step is Step.DONE
        assert cut.precopy_watermark is not None and resumed.precopy_watermark is not None
        assert resumed.precopy_watermark > cut.precopy_watermark, "pre-copied again"
        assert resumed.catch_up_watermark == resumed.precopy_watermark

        killed = await connect(system.config.control_dsn, system.config.shards)
        move = await plan_move(killed, second, mariadb)
        await Mover(killed, system.config.shards).finish(move.move_id, Step.PAUSED)
        await killed.close()
        whole = await Mover(control, system.config.shards).finish(move.move_id)
        assert whole.step is Step.DONE and whole.catch_up_watermark == 0, "a whole copy"
        assert await history_free(system, mariadb), "released when the move ended"
        assert (await read_move(control, move.move_id)).pause_seconds is not None
    await assert_books(system)
    print(f"\nresumed after the pre-copy: {resumed.summary()}; past the pause: {whole.summary()}")


async def history_free(system: System, cup_id: int) -> bool:
    """Whether another session (an archive) could take the cup's history lock now."""
    other = await connect(system.config.control_dsn, system.config.shards)
    try:
        taken: bool = await other.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)", HISTORY_LOCK_CLASS, cup_id
        )
    finally:
        await other.close()
    return taken
