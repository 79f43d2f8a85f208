"""The journal archived on a real system: a Postgres cup and a MariaDB cup, one-minute
periods, load across several of them; ``archive`` exports the closed ones (files that
match their manifests), carries their sums into journal_openings and drops them, and
the books stay whole (balances unchanged, reconcile clean). An archive cut short between
carrying and dropping finishes on the next run without counting twice; a run with
nothing closed does nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from deploy.local.mariadb_databases import (
    create_mysql_databases,
    drop_mysql_databases,
)
from engine.admin.archive import HISTORY_LOCK_CLASS, archive
from engine.admin.reconcile import reconcile
from engine.core.book import SystemAccount, system_account_number
from engine.core.config import Config
from engine.core.errors import ConfigError
from engine.core.periods import Manifest, period_start
from engine.kafka.client import Client
from loadtest.driver import Driver
from loadtest.system import (
    System,
    create_databases,
    drop_databases,
    drop_system,
    make_system,
    with_archive_periods,
)
from loadtest.workload import Workload, WorkloadShape
from shards.backends import connect_cup, journal_periods
from shards.control import connect
from shards.cup_admin import CupKind
from shards.cups import close_cups, connect_cups
from shards.migrate import migration_files
from shards.mysql.driver import run
from tests.integration.system import RawCup, cup_balances

pytestmark = pytest.mark.integration

PERIOD_SECONDS = 60
PARTITIONS = 4
KINDS = [CupKind.POSTGRES, CupKind.MYSQL]
CASH = system_account_number(SystemAccount.CASH, "EUR")
RESULTS_TIMEOUT_SECONDS = 120.0
CHUNK = 40
CHUNK_INTERVAL_SECONDS = 0.5


class CrashError(Exception):
    """Where the test cuts an archive short, as a kill would."""


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=PARTITIONS, cups=1, mysql_cups=1)
    with_archive_periods(stack, made, PERIOD_SECONDS)
    yield made
    made.stop_all()
    await drop_system(stack, made)


async def _load_until(system: System, deadline_s: float) -> None:
    """Open accounts, then transfers at a modest pace until ``deadline_s`` (wall clock);
    every command answered."""
    workload = Workload(WorkloadShape(customers=200, partitions=PARTITIONS, seed=11))
    async with Client(system.config.kafka) as client:
        driver = Driver(client, window=2_000)
        await driver.send_all(workload.opening())
        while time.time() < deadline_s:
            await driver.send_many([workload.next_command() for _ in range(CHUNK)])
            await asyncio.sleep(CHUNK_INTERVAL_SECONDS)
        assert await driver.wait_all(RESULTS_TIMEOUT_SECONDS), system.worker_logs()


async def _journal_rows(system: System) -> dict[int, int]:
    cups = await connect_cups(system.shard_map, system.config.shards)
    try:
        return {
            cup_id: await cup.journal_rows(system.shard_map.partitions_of(cup_id))
            for cup_id, cup in cups.items()
        }
    finally:
        await close_cups(cups)


def _check_file(folder: Path, manifest: Manifest) -> None:
    """The file is what its manifest says: its sha256, its rows, each account's sum."""
    data = (folder / manifest.file).read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest.sha256
    lines = [json.loads(line) for line in gzip.decompress(data).splitlines()]
    assert len(lines) == manifest.rows
    sums: Counter[tuple[int, int, int, str]] = Counter()
    for line in lines:
        assert line["booked_at"] < manifest.document()["period_end"], line
        sums[line["partition"], line["customer_id"], line["account_no"], line["currency"]] += line[
            "amount"
        ]
    assert {(s.partition, s.customer, s.account, s.currency): s.amount for s in manifest.sums} == (
        dict(sums)
    )


def _manifests(folder: Path) -> list[Manifest]:
    return [
        Manifest.from_document(json.loads(path.read_text()))
        for path in sorted(folder.glob("*.manifest.json"))
    ]


async def test_archive_exports_carries_and_drops_closed_periods(
    system: System, tmp_path: Path
) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    system.start_worker()
    started = time.time()
    # Two period boundaries pass under load: at least two whole periods close.
    deadline_s = period_start(int(started), PERIOD_SECONDS) + 2 * PERIOD_SECONDS + 5
    await asyncio.wait_for(
        _load_until(system, deadline_s), deadline_s - started + RESULTS_TIMEOUT_SECONDS
    )
    now = int(time.time())
    bound = period_start(now, PERIOD_SECONDS)
    with pytest.raises(ConfigError, match="current period"):
        await archive(system.config, bound + 1, folder, now)

    balances = await cup_balances(system)
    rows_before = await _journal_rows(system)
    postgres_cup, mysql_cup = sorted(system.shard_map.cups)

    def crash_at(cup: int) -> Callable[[int, str, int], None]:
        def step(cup_id: int, name: str, end: int) -> None:
            if cup_id == cup and name == "carried":
                raise CrashError(f"cup {cup_id}, period ending {end}")

        return step

    # Postgres: the crash rolls back the openings with the drop.
    with pytest.raises(CrashError):
        await archive(system.config, bound, folder, now, crash_at(postgres_cup))
    assert await _journal_rows(system) == rows_before
    # MariaDB: the openings are committed, the partition still there: nothing counted twice.
    with pytest.raises(CrashError):
        await archive(system.config, bound, folder, now, crash_at(mysql_cup))
    report = await reconcile(system.config, topics=False)
    assert report.ok, dict(report.problems)

    assert await archive(system.config, bound, folder, now) == 0
    manifests = _manifests(folder)
    ends: dict[int, set[int]] = {m.cup: set() for m in manifests}
    for manifest in manifests:
        _check_file(folder, manifest)
        ends[manifest.cup].add(manifest.period_end)
    assert all(len(closed) >= 2 for closed in ends.values()), ends
    rows_after = await _journal_rows(system)
    for cup_id, before in rows_before.items():
        archived = sum(m.rows for m in manifests if m.cup == cup_id)
        assert archived > 0, cup_id
        assert rows_after[cup_id] == before - archived
    assert await cup_balances(system) == balances
    report = await reconcile(system.config, topics=True)
    assert report.ok, dict(report.problems)

    files = sorted(p.name for p in folder.iterdir())
    assert await archive(system.config, bound, folder, now) == 0
    assert sorted(p.name for p in folder.iterdir()) == files
    assert await _journal_rows(system) == rows_after


@pytest.fixture(params=KINDS, ids=[str(k) for k in KINDS])
async def idle_system(
    stack: Config, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[System]:
    """One cup of the kind, one partition, no worker: rows written by hand."""
    mysql = request.param is CupKind.MYSQL
    made = await make_system(
        stack, tmp_path, partitions=1, cups=int(not mysql), mysql_cups=int(mysql)
    )
    with_archive_periods(stack, made, PERIOD_SECONDS)
    yield made
    await drop_system(stack, made)


def _moment(cup: RawCup, at_s: int) -> str:
    text = dt.datetime.fromtimestamp(at_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"'{text}'" if cup.kind is CupKind.MYSQL else f"'{text}+00'"


async def _deposit(cup: RawCup, command_id: str, amount: int, booked_s: int) -> None:
    """A deposit to 7/1 booked at ``booked_s``: the balances and the journal agree."""
    await cup.execute(f"UPDATE accounts SET balance = balance + {amount} WHERE customer_id = 7")
    await cup.execute(f"UPDATE accounts SET balance = balance - {amount} WHERE account_no = {CASH}")
    await cup.execute(
        "INSERT INTO journal ({p}, src_offset, command_id, customer_id, account_no, currency,"
        f" amount, booked_at) VALUES (0, 0, '{command_id}', 7, 1, 'EUR', {amount},"
        f" {_moment(cup, booked_s)}), (0, 0, '{command_id}', 0, {CASH}, 'EUR', -{amount},"
        f" {_moment(cup, booked_s)})"
    )


@pytest.mark.slow
async def test_rows_booked_in_an_archived_period_are_archived_later(
    idle_system: System, tmp_path: Path
) -> None:
    """Rows from before the migration are in its first partition; a move's rows of a period
    the cup archived already (written here by hand) land in the catch-all (Postgres: given
    a partition of their own and archived by the next run) or in the first partition left
    (MariaDB: archived with it); reconcile is clean at every step."""
    system = idle_system
    cup = await RawCup.open(system.shard_map.cups[0], system.config.shards)
    admin = await connect_cup(system.shard_map.cups[0], system.config.shards)
    try:
        periods = journal_periods(admin)
        (first_end,) = await periods.partition_ends()
        await cup.execute(
            f"INSERT INTO accounts VALUES (0, 7, 1, 'EUR', 0, 0, 0), (0, 0, {CASH}, 'EUR', 0, 0, 0)"
        )
        await _deposit(cup, "d-1", 100, first_end - 3_600)
        made = await periods.make_partitions(int(time.time()), PERIOD_SECONDS)
        assert made and made[0] > first_end
        await asyncio.sleep(max(0.0, made[0] - time.time() + 0.5))
        now = int(time.time())
        bound = period_start(now, PERIOD_SECONDS)
        control = await connect(system.config.control_dsn, system.config.shards)
        try:
            await control.execute("SELECT pg_advisory_lock($1, 0)", HISTORY_LOCK_CLASS)
            assert await archive(system.config, bound, tmp_path, now) == 1, "a move holds it"
            assert await periods.partition_ends() == [first_end, *made]
        finally:
            await control.close()
        assert await archive(system.config, bound, tmp_path, now) == 0
        assert await periods.partition_ends() == [e for e in made if e > bound]
        assert (
            await cup.value("SELECT sum(amount) FROM journal_openings WHERE customer_id = 7") == 100
        )
        report = await reconcile(system.config, topics=False)
        assert report.ok, dict(report.problems)

        await _deposit(cup, "d-2", 50, bound - 1)
        report = await reconcile(system.config, topics=False)
        assert report.ok, dict(report.problems)
        assert await archive(system.config, bound, tmp_path, now) == 0
        kept = 0 if cup.kind is CupKind.POSTGRES else 2
        assert await cup.value("SELECT count(*) FROM journal") == kept
        report = await reconcile(system.config, topics=False)
        assert report.ok, dict(report.problems)
        assert await cup.value("SELECT sum(balance) FROM accounts WHERE customer_id = 7") == 150
    finally:
        await admin.close()
        await cup.close()


PERIODS_MIGRATION = {CupKind.POSTGRES: 10, CupKind.MYSQL: 7}


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS, ids=[str(k) for k in KINDS])
async def test_rows_from_before_the_migration_are_booked_at_its_time(
    stack: Config, kind: CupKind
) -> None:
    """The migration that partitions the journal keeps its rows, booked at the migration's
    time, in the first partition (which ends at the next whole second)."""
    name = f"t{uuid.uuid4().hex[:10]}_legacy"
    if kind is CupKind.POSTGRES:
        await create_databases(stack, [name])
        dsn = stack.stack.database_dsn(name)
    else:
        await asyncio.to_thread(create_mysql_databases, stack.stack, [name])
        dsn = stack.stack.mysql_dsn(name)
    cup = await RawCup.open(dsn, stack.shards)
    try:
        for version, _, sql in migration_files(str(kind)):
            if version == PERIODS_MIGRATION[kind]:
                await cup.execute(
                    "INSERT INTO journal VALUES (0, 1, 'd-1', 7, 1, 'EUR', 100),"
                    f" (0, 1, 'd-1', 0, {CASH}, 'EUR', -100)"
                )
                started = time.time()
            if kind is CupKind.POSTGRES:
                async with cup.connection.transaction():
                    await cup.connection.execute(sql)
            else:
                await run(cup.connection, sql)
        booked = await cup.values("SELECT booked_at FROM journal")
        assert len(booked) == 2 and booked[0] == booked[1]
        booked_s = booked[0].replace(tzinfo=dt.UTC).timestamp()  # MariaDB's: naive UTC
        assert started - 1 <= booked_s <= time.time()
        admin = await connect_cup(dsn, stack.shards)
        try:
            (end,) = await journal_periods(admin).partition_ends()
        finally:
            await admin.close()
        assert booked_s < end <= booked_s + 1
    finally:
        await cup.close()
        if kind is CupKind.POSTGRES:
            await drop_databases(stack, [name])
        else:
            await asyncio.to_thread(drop_mysql_databases, stack.stack, [name])
