"""Cross-partition transfers on the real stack: kills, refunds, legs delivered twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from engine.admin.reconcile import reconcile
from engine.core.config import Config
from engine.core.decoding import decode_command
from engine.core.messages import (
    Balance,
    CloseAccount,
    Command,
    CreditLeg,
    DeadLetter,
    Deposit,
    FreezeAccount,
    OpenAccount,
    Reason,
    Status,
    Transfer,
)
from engine.core.routing import partition_of
from engine.kafka.client import Client
from loadtest.driver import Driver
from loadtest.system import System, drop_system, make_system
from loadtest.workload import Workload, WorkloadShape
from tests.integration.system import (
    cup_balances,
    final_results,
    read_topic,
    replay_system,
    upstream_producer,
    worker_producer,
)

pytestmark = pytest.mark.integration

PARTITIONS = 8
RESULTS_TIMEOUT_SECONDS = 180.0


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=PARTITIONS, cups=1, mysql_cups=1)
    yield made
    await drop_system(stack, made)


def _assert_reconciled(report: object) -> None:
    problems = getattr(report, "problems", {})
    assert not any(problems.values()), dict(problems)


async def test_twenty_thousand_transfers_half_crossing_with_two_kills(system: System) -> None:
    system.start_worker()
    system.start_worker()
    shape = WorkloadShape(
        customers=400,
        partitions=PARTITIONS,
        cross_share_percent=50,
        deposit_share_percent=0,
        withdraw_share_percent=0,
        seed=3,
    )
    workload = Workload(shape)
    opening = list(workload.opening())
    transfers = [workload.next_command() for _ in range(20_000)]
    kills = 0
    async with Client(system.config.kafka) as client:
        driver = Driver(client, window=3_000)
        await driver.send_all(opening)
        assert await driver.wait_all(RESULTS_TIMEOUT_SECONDS), system.worker_logs()
        for index, command in enumerate(transfers):
            await driver.send(command)
            if index in (6_000, 13_000):
                await asyncio.sleep(0.3)
                system.workers[kills].kill()
                system.start_worker()
                kills += 1
        assert await driver.wait_all(RESULTS_TIMEOUT_SECONDS), system.worker_logs()
    assert kills == 2
    report = await reconcile(system.config, topics=True)
    _assert_reconciled(report)
    assert report.transfers_in_flight == 0
    assert not report.pending_ids
    kafka = system.config.kafka
    finals = await final_results(kafka)
    assert all(len(finals[t.id]) == 1 for t in transfers), "one final result per transfer"
    crossing = [
        c
        for c in transfers
        if isinstance(c, Transfer)
        and partition_of(c.customer, PARTITIONS) != partition_of(c.to_customer, PARTITIONS)
    ]
    assert len(crossing) > 8_000
    assert await cup_balances(system) == await replay_system(system.config)
    print(
        f"\nsagas: {len(transfers)} transfers, {len(crossing)} crossing partitions, "
        f"{kills} SIGKILLs, reconcile clean, {report.counts.get('commands_consumed')} "
        f"commands consumed, balances equal the pure replay"
    )


def _customers_elsewhere(home: int, count: int) -> list[int]:
    found = [c for c in range(2, 10_000) if partition_of(c, PARTITIONS) != home]
    return found[:count]


async def test_refused_credits_are_refunded_and_rejected(system: System) -> None:
    system.start_worker()
    payer = 1
    closed, frozen, missing, dollars = _customers_elsewhere(partition_of(payer, PARTITIONS), 4)
    setup: list[Command] = [
        OpenAccount("o-payer", payer, 1, "EUR"),
        Deposit("d-payer", payer, 1, 1_000, "EUR"),
        OpenAccount("o-closed", closed, 1, "EUR"),
        CloseAccount("c-closed", closed, 1),
        OpenAccount("o-frozen", frozen, 1, "EUR"),
        FreezeAccount("f-frozen", frozen, 1),
        OpenAccount("o-usd", dollars, 1, "USD"),
    ]
    async with Client(system.config.kafka) as client:
        for command in setup:
            assert (await client.submit(command, 60)).accepted
        outcomes = {}
        for payee, expected in [
            (closed, Reason.ACCOUNT_CLOSED),
            (frozen, Reason.ACCOUNT_FROZEN),
            (missing, Reason.ACCOUNT_NOT_FOUND),
            (dollars, Reason.CURRENCY_MISMATCH),
        ]:
            result = await client.submit(Transfer(f"t-{payee}", payer, 1, payee, 1, 100, "EUR"), 60)
            outcomes[expected] = result
    for expected, result in outcomes.items():
        assert result.status is Status.REJECTED
        assert result.reason is expected
        assert result.balances[0].balance == 1_000, "the payer got the money back"
    _assert_reconciled(await reconcile(system.config, topics=True))


async def test_a_leg_delivered_twice_is_applied_once(system: System) -> None:
    system.start_worker()
    payer, payee = 1, _customers_elsewhere(partition_of(1, PARTITIONS), 1)[0]
    async with Client(system.config.kafka) as client:
        opening: list[Command] = [
            OpenAccount("o1", payer, 1, "EUR"),
            Deposit("d1", payer, 1, 500, "EUR"),
            OpenAccount("o2", payee, 1, "EUR"),
        ]
        for command in opening:
            assert (await client.submit(command, 60)).accepted
        first = await client.submit(Transfer("t1", payer, 1, payee, 1, 200, "EUR"), 60)
        assert first.accepted
        kafka = system.config.kafka
        legs = [
            r
            for r in await read_topic(kafka, kafka.internal_topic)
            if isinstance(decode_command(r.value), CreditLeg)
        ]
        assert len(legs) == 1
        leg = legs[0]
        for producer, topic in (
            (worker_producer(system.config), kafka.internal_topic),  # a relay's re-send
            (upstream_producer(system.config), kafka.commands_topic),  # a copy: misrouted
        ):
            await producer.start()
            try:
                await producer.send_and_wait(topic, leg.value, key=leg.key, partition=leg.partition)
            finally:
                await producer.stop()
        marker = await client.submit(Deposit("d2", payee, 1, 1, "EUR"), 60)
    assert marker.balances[0].balance == 201, "credited once, then the marker deposit"
    letters = [
        msgspec.msgpack.decode(r.value, type=DeadLetter)
        for r in await read_topic(kafka, kafka.dlq_topic)
    ]
    assert [(d.reason, d.topic) for d in letters] == [("misrouted", kafka.commands_topic)]
    report = await reconcile(system.config, topics=True)
    _assert_reconciled(report)
    assert first.balances == (Balance(payer, 1, 300), Balance(payee, 1, 200))
