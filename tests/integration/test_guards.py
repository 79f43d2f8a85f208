"""Guards below the ledger, on a real cup: what the ledger never writes, the cup refuses;
and what reconcile and the workers' gauges say of closed accounts and stuck transfers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from engine.admin.reconcile import reconcile
from engine.core.config import Config
from loadtest.system import System, drop_system, make_system
from shards.cups import close_cups, open_cups

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=PARTITIONS, cups=1)
    yield made
    await drop_system(stack, made)


async def _cup(system: System) -> asyncpg.Connection:
    return await asyncpg.connect(system.shard_map.cups[0])


async def _book(cup: asyncpg.Connection) -> None:
    """Partition 0 (its state row made by init) holds one account with 100, as its
    journal says."""
    await cup.execute(
        "INSERT INTO accounts VALUES (0, 7, 1, 'EUR', 100, 0, 0),"
        " (0, 0, 100004, 'EUR', -100, 0, 0);"
        "INSERT INTO journal VALUES (0, 0, 'd-1', 7, 1, 'EUR', 100),"
        " (0, 0, 'd-1', 0, 100004, 'EUR', -100)"
    )


async def test_a_balance_below_its_credit_limit_is_refused(system: System) -> None:
    cup = await _cup(system)
    try:
        await _book(cup)
        with pytest.raises(asyncpg.CheckViolationError):
            await cup.execute("UPDATE accounts SET balance = -1 WHERE customer_id = 7")
        await cup.execute(
            "UPDATE accounts SET credit_limit = 50, balance = -50 WHERE customer_id = 7"
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await cup.execute("UPDATE accounts SET credit_limit = 49 WHERE customer_id = 7")
        await cup.execute("UPDATE accounts SET balance = -10 WHERE customer_id = 0")
    finally:
        await cup.close()


async def test_journal_rows_are_never_changed_and_deleted_only_when_frozen(
    system: System,
) -> None:
    cup = await _cup(system)
    try:
        await _book(cup)
        for statement in (
            "UPDATE journal SET amount = 1000 WHERE customer_id = 7",
            "UPDATE journal SET amount = amount WHERE false",
            "DELETE FROM journal WHERE partition = 0",
            "TRUNCATE journal",
        ):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError):
                await cup.execute(statement)
        assert await cup.fetchval("SELECT sum(amount) FROM journal WHERE customer_id = 7") == 100
        await cup.execute("UPDATE partition_state SET frozen = true WHERE partition = 0")
        await cup.execute("DELETE FROM journal WHERE partition = 0")
        assert await cup.fetchval("SELECT count(*) FROM journal") == 0
    finally:
        await cup.close()


async def test_reconcile_names_money_in_a_closed_account_and_a_stuck_transfer(
    system: System,
) -> None:
    cup = await _cup(system)
    try:
        await _book(cup)
        await cup.execute("UPDATE accounts SET status = 2 WHERE customer_id = 7")
        await cup.execute(
            "INSERT INTO transfers_in_flight (partition, transfer_id, from_customer,"
            " from_account, to_customer, to_account, amount, currency, src_offset, opened_at)"
            " VALUES (0, 'old-1', 7, 1, 9, 1, 5, 'EUR', 0, now() - interval '1 hour'),"
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
