"""The idempotency window on the real stack (a Postgres and a MariaDB cup): records go
once their window has passed, a re-send after that is answered ``id_expired`` and moves
no money, the table stays as small as the window, and reconcile stays clean."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from engine.admin.reconcile import reconcile
from engine.core.config import Config
from engine.core.messages import Command, Deposit, OpenAccount, Reason, Result, issued
from engine.core.routing import customer_key, partition_of
from engine.kafka.client import Client
from loadtest.system import System, drop_system, make_system
from tests.integration.system import RawCup, cup_balances, submit_all, upstream_producer

PARTITIONS = 4
WINDOW_SECONDS = 3
PRUNED_WAIT_SECONDS = 30.0
CUSTOMERS = list(range(1, 9))
"""Customers of every partition, so of both cups."""


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=PARTITIONS, cups=1, mysql_cups=1)
    yield made
    await drop_system(stack, made)


def _worker_env() -> dict[str, str]:
    return {
        "SMALLCUPS_WORKER_IDEMPOTENCY_WINDOW_SECONDS": str(WINDOW_SECONDS),
        "SMALLCUPS_WORKER_PRUNE_INTERVAL_SECONDS": "0.2",
        "SMALLCUPS_WORKER_PRUNE_ROWS_MAX": "7",
    }


async def _records(system: System) -> int:
    """Idempotency records in all the system's cups."""
    total = 0
    for dsn in system.config.shards.cup_dsns:
        cup = await RawCup.open(dsn, system.config.shards)
        try:
            total += int(await cup.value("SELECT count(*) FROM command_results"))
        finally:
            await cup.close()
    return total


async def _wait_records(system: System, at_most: int) -> int:
    records = await _records(system)
    for _ in range(int(PRUNED_WAIT_SECONDS / 0.3)):
        if records <= at_most:
            break
        await asyncio.sleep(0.3)
        records = await _records(system)
    return records


async def _send_raw(system: System, value: bytes, customer: int) -> None:
    producer: AIOKafkaProducer = upstream_producer(system.config)
    await producer.start()
    try:
        await producer.send_and_wait(
            system.config.kafka.commands_topic, value, key=customer_key(customer)
        )
    finally:
        await producer.stop()


async def test_a_resend_after_the_window_is_expired_and_moves_nothing(system: System) -> None:
    assert {partition_of(c, PARTITIONS) for c in CUSTOMERS} == set(range(PARTITIONS))
    system.start_worker(_worker_env())
    now_ms = time.time_ns() // 1_000_000
    opening: list[Command] = [
        issued(OpenAccount(f"open-{c}", c, 1, "EUR"), now_ms) for c in CUSTOMERS
    ]
    deposits: list[Command] = [
        issued(Deposit(f"dep-{c}", c, 1, 100 * c, "EUR"), now_ms) for c in CUSTOMERS
    ]
    async with Client(system.config.kafka) as client:
        first = await submit_all(client, opening + deposits)
        assert all(r.accepted for r in first), [r.detail for r in first if not r.accepted]
        again = await submit_all(client, deposits)
        assert again == first[len(opening) :], "inside the window: the recorded results"
        balances = await cup_balances(system)
        assert await _wait_records(system, 0) == 0, system.worker_logs()
        expired = await submit_all(client, deposits)
        assert {r.reason for r in expired} == {Reason.ID_EXPIRED}, expired
        assert await cup_balances(system) == balances, "an expired re-send moves nothing"
        late = issued(Deposit("dep-late", 1, 1, 5, "EUR"), now_ms)
        (result,) = await submit_all(client, [late])
        assert result.reason is Reason.ID_EXPIRED, "a command held back past its window"
        ahead = issued(Deposit("dep-ahead", 1, 1, 5, "EUR"), time.time_ns() // 10**6 + 3_600_000)
        (result,) = await submit_all(client, [ahead])
        assert result.reason is Reason.ISSUED_AT and "ahead" in result.detail
        unstamped = msgspec.msgpack.encode(
            {"type": "deposit", "id": "dep-raw", "customer": 2, "account": 1}
            | {"amount": 5, "currency": "EUR"}
        )
        waiting = client.expect(Deposit("dep-raw", 2, 1, 5, "EUR"))
        await _send_raw(system, unstamped, 2)
        raw: Result = await asyncio.wait_for(waiting, 30)
        assert raw.reason is Reason.ISSUED_AT and "issued_at_ms is required" in raw.detail
        fresh = await submit_all(client, [Deposit("dep-fresh", 3, 1, 7, "EUR")])
        assert fresh[0].accepted, "the client stamps what it sends"
    report = await reconcile(system.config, topics=True)
    assert report.ok, dict(report.problems)
    assert system.stop_all() == [0], system.worker_logs()


async def test_the_records_stay_as_few_as_the_window_holds(system: System) -> None:
    """Four rounds of 200 commands, each a window apart: the table never holds much more
    than one round, and the deleted count grows by each round."""
    system.start_worker(_worker_env())
    async with Client(system.config.kafka) as client:
        opened = await submit_all(
            client, [OpenAccount(f"open-{c}", c, 1, "EUR") for c in CUSTOMERS]
        )
        assert all(r.accepted for r in opened)
        sizes = []
        for round_number in range(4):
            load = [
                Deposit(f"r{round_number}-{n}", CUSTOMERS[n % len(CUSTOMERS)], 1, 1, "EUR")
                for n in range(200)
            ]
            assert all(r.accepted for r in await submit_all(client, load))
            sizes.append(await _records(system))
            await asyncio.sleep(WINDOW_SECONDS + 1)
        assert max(sizes) <= 200 + len(CUSTOMERS), sizes
        assert await _wait_records(system, 0) == 0
    report = await reconcile(system.config, topics=True)
    assert report.ok, dict(report.problems)
    assert system.stop_all() == [0], system.worker_logs()
