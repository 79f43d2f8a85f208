"""The journal archived on a real system: a Postgres cup and a MariaDB cup, one-minute
periods, load across several of them; ``archive`` exports the closed ones (files that
match their manifests), carries their sums into journal_openings and drops them, and
the books stay whole (balances unchanged, reconcile clean). An archive cut short between
carrying and dropping finishes on the next run without counting twice; a run with
nothing closed does nothing.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from deploy.local.mariadb_databases import admin_account
from engine.admin.archive import archive
from engine.admin.reconcile import reconcile
from engine.core.config import MARIADB_ADMIN_CREDENTIALS, ArchiveConfig, Config
from engine.core.errors import ConfigError
from engine.core.periods import Manifest, period_start
from engine.kafka.client import Client
from loadtest.driver import Driver
from loadtest.system import System, drop_system, make_system
from loadtest.workload import Workload, WorkloadShape
from shards.cups import close_cups, connect_cups
from tests.integration.system import cup_balances

pytestmark = pytest.mark.integration

PERIOD_SECONDS = 60
PARTITIONS = 4
RESULTS_TIMEOUT_SECONDS = 120.0
CHUNK = 40
CHUNK_INTERVAL_SECONDS = 0.5


class CrashError(Exception):
    """Where the test cuts an archive short, as a kill would."""


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=PARTITIONS, cups=1, mysql_cups=1)
    settings = ArchiveConfig(
        period_seconds=PERIOD_SECONDS,
        mysql_user=admin_account(stack.stack),
        mysql_credentials=MARIADB_ADMIN_CREDENTIALS,
    )
    made.config = msgspec.structs.replace(made.config, archive=settings)
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
    await _load_until(system, period_start(int(started), PERIOD_SECONDS) + 2 * PERIOD_SECONDS + 5)
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
