"""Guards below the ledger, on a real cup of each kind: what the ledger never writes, the
cup refuses; and what reconcile and the workers' gauges say of closed accounts and stuck
transfers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from engine.admin.reconcile import reconcile
from engine.core.config import Config
from loadtest.system import System, drop_system, make_system
from shards.cup_admin import CupKind
from shards.cups import close_cups, open_cups
from tests.integration.system import RawCup

pytestmark = pytest.mark.integration

PARTITIONS = 4
KINDS = [CupKind.POSTGRES, CupKind.MYSQL]

CHECK_VIOLATION_ERRNO = 4025
JOURNAL_GUARD_ERRNO = 45101
TABLE_ACCESS_DENIED_ERRNO = 1142


@pytest.fixture(params=KINDS, ids=[str(k) for k in KINDS])
async def system(
    stack: Config, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[System]:
    mysql = request.param is CupKind.MYSQL
    made = await make_system(
        stack, tmp_path, partitions=PARTITIONS, cups=0 if mysql else 1, mysql_cups=int(mysql)
    )
    yield made
    await drop_system(stack, made)


async def _book(cup: RawCup) -> None:
    """Partition 0 (its state row made by init) holds one account with 100, as its
    journal says."""
    await cup.execute(
        "INSERT INTO accounts VALUES (0, 7, 1, 'EUR', 100, 0, 0),"
        " (0, 0, 100004, 'EUR', -100, 0, 0);"
        "INSERT INTO journal ({p}, src_offset, command_id, customer_id, account_no, currency,"
        " amount) VALUES (0, 0, 'd-1', 7, 1, 'EUR', 100),"
        " (0, 0, 'd-1', 0, 100004, 'EUR', -100)"
    )


async def test_a_balance_below_its_credit_limit_is_refused(system: System) -> None:
    cup = await RawCup.open(system.shard_map.cups[0], system.config.shards)
    check = asyncpg.CheckViolationError
    try:
        await _book(cup)
        await cup.refuses(
            "UPDATE accounts SET balance = -1 WHERE customer_id = 7", check, CHECK_VIOLATION_ERRNO
        )
        await cup.execute(
            "UPDATE accounts SET credit_limit = 50, balance = -50 WHERE customer_id = 7"
        )
        await cup.refuses(
            "UPDATE accounts SET credit_limit = 49 WHERE customer_id = 7",
            check,
            CHECK_VIOLATION_ERRNO,
        )
        await cup.refuses(
            "UPDATE accounts SET credit_limit = -1 WHERE customer_id = 0",
            check,
            CHECK_VIOLATION_ERRNO,
        )
        await cup.execute("UPDATE accounts SET balance = -10 WHERE customer_id = 0")
    finally:
        await cup.close()


async def test_journal_rows_are_never_changed_and_deleted_only_when_frozen(
    system: System,
) -> None:
    """On MariaDB, TRUNCATE fires no trigger: the cup's account lacks the DROP privilege
    it needs (deploy/local/mariadb_databases.py)."""
    cup = await RawCup.open(system.shard_map.cups[0], system.config.shards)
    guard = asyncpg.IntegrityConstraintViolationError
    try:
        await _book(cup)
        for statement in (
            "UPDATE journal SET amount = 1000 WHERE customer_id = 7",
            "UPDATE journal SET amount = amount WHERE customer_id = 0",
            "DELETE FROM journal WHERE {p} = 0",
        ):
            await cup.refuses(statement, guard, JOURNAL_GUARD_ERRNO)
        await cup.refuses("TRUNCATE journal", guard, TABLE_ACCESS_DENIED_ERRNO)
        assert await cup.value("SELECT sum(amount) FROM journal WHERE customer_id = 7") == 100
        await cup.execute("UPDATE partition_state SET frozen = true WHERE {p} = 0")
        await cup.execute("DELETE FROM journal WHERE {p} = 0")
        assert await cup.value("SELECT count(*) FROM journal") == 0
    finally:
        await cup.close()


async def test_reconcile_names_money_in_a_closed_account_and_a_stuck_transfer(
    system: System,
) -> None:
    cup = await RawCup.open(system.shard_map.cups[0], system.config.shards)
    hour_ago = (
        "now() - INTERVAL 1 HOUR" if cup.kind is CupKind.MYSQL else "now() - interval '1 hour'"
    )
    try:
        await _book(cup)
        await cup.execute("UPDATE accounts SET status = 2 WHERE customer_id = 7")
        await cup.execute(
            "INSERT INTO transfers_in_flight ({p}, transfer_id, from_customer,"
            " from_account, to_customer, to_account, amount, currency, src_offset, opened_at)"
            f" VALUES (0, 'old-1', 7, 1, 9, 1, 5, 'EUR', 0, {hour_ago}),"
            " (0, 'new-1', 7, 1, 9, 1, 5, 'EUR', 0, now())"
        )
    finally:
        await cup.close()
    report = await reconcile(system.config, topics=False)
    closed = report.problems["no_money_in_closed_accounts"]
    assert len(closed) == 1 and "7/1" in closed[0] and "holds 100" in closed[0]
    stuck = report.problems["no_stuck_transfers"]
    assert len(stuck) == 1 and "old-1" in stuck[0]
    stores = await open_cups(system.shard_map, system.config.shards)
    try:
        (figures,) = await stores[0].in_flight([0], 300.0)
    finally:
        await close_cups(stores)
    assert (figures.transfers, figures.money, figures.stuck) == (2, 10, 1)
