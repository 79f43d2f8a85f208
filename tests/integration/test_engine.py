"""The vertical slice on the real stack: commands in, exactly-once effects, results out."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from engine.core.config import Config
from engine.core.messages import (
    Command,
    DeadLetter,
    Deposit,
    OpenAccount,
    Reason,
    Result,
    result_decoder,
)
from engine.core.routing import customer_key, partition_of
from engine.kafka.client import Client
from loadtest.driver import Driver
from loadtest.system import System, drop_system, make_system
from loadtest.workload import Workload, WorkloadShape
from tests.integration.system import (
    RawCup,
    cup_balances,
    read_topic,
    replay_system,
    upstream_producer,
)

pytestmark = pytest.mark.integration

RESULTS_TIMEOUT_SECONDS = 120.0
RESULTS_POLLS_MAX = 60
HANG_ANSWER_SECONDS = 10.0
"""Longest wait for a command of a free cup while another cup hangs."""


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=8, cups=1, mysql_cups=1)
    yield made
    await drop_system(stack, made)


async def _publish_load(system: System, commands: list[Command], *, kill_after: int = 0) -> Driver:
    """Publish ``commands``; after ``kill_after`` of them SIGKILL worker 0 and restart it."""
    async with Client(system.config.kafka) as client:
        driver = Driver(client, window=2_000)
        for index, command in enumerate(commands):
            await driver.send(command)
            if kill_after and index == kill_after:
                await asyncio.sleep(0.5)
                system.workers[0].kill()
                system.start_worker()
        finished = await driver.wait_all(RESULTS_TIMEOUT_SECONDS)
        assert finished, f"results missing; worker logs:\n{system.worker_logs()}"
    return driver


def _commands(system: System, count: int, *, duplicates: int) -> list[Command]:
    shape = WorkloadShape(
        customers=300, partitions=system.config.kafka.partitions, cross_share_percent=0, seed=11
    )
    workload = Workload(shape)
    commands = list(workload.opening())
    load = [workload.next_command() for _ in range(count - len(commands) - duplicates)]
    rng = random.Random(5)
    for _ in range(duplicates):
        load.insert(rng.randrange(len(load)), rng.choice(load))
    return commands + load


async def _results(system: System, count: int) -> list[Result]:
    """The results topic once it holds ``count`` results (bounded wait)."""
    kafka = system.config.kafka
    for _ in range(RESULTS_POLLS_MAX):
        records = await read_topic(kafka, kafka.results_topic)
        if len(records) >= count:
            break
        await asyncio.sleep(0.5)
    return [result_decoder.decode(r.value) for r in records]


async def _check_exactly_once(system: System, commands: list[Command], *, resent_ok: bool) -> None:
    kafka = system.config.kafka
    results = await _results(system, len(commands))
    published = Counter(c.id for c in commands)
    answered = Counter(r.command_id for r in results)
    assert set(answered) == set(published)
    for command_id, count in published.items():
        if resent_ok:
            assert answered[command_id] >= count
        else:
            assert answered[command_id] == count, command_id
    by_id: dict[str, set[bytes]] = {}
    for result in results:
        by_id.setdefault(result.command_id, set()).add(msgspec.msgpack.encode(result))
    assert all(len(variants) == 1 for variants in by_id.values()), "one result per command id"
    records = await read_topic(kafka, kafka.commands_topic)
    assert len(records) == len(commands)
    assert await cup_balances(system) == await replay_system(system.config)


async def test_ten_thousand_commands_two_workers_exactly_once(system: System) -> None:
    system.start_worker()
    system.start_worker()
    commands = _commands(system, 10_000, duplicates=200)
    driver = await _publish_load(system, commands)
    assert driver.score.publish_errors == 0
    assert system.stop_all() == [0, 0], system.worker_logs()
    await _check_exactly_once(system, commands, resent_ok=False)
    accepted = sum(1 for r in driver.score.results.values() if r.accepted)
    assert accepted > 8_000


async def test_worker_killed_mid_load_loses_nothing_applies_nothing_twice(system: System) -> None:
    system.start_worker()
    system.start_worker()
    commands = _commands(system, 10_000, duplicates=100)
    await _publish_load(system, commands, kill_after=5_000)
    system.stop_all()
    await _check_exactly_once(system, commands, resent_ok=True)


async def test_malformed_bytes_go_to_the_dlq_and_the_partition_flows(system: System) -> None:
    system.start_worker()
    kafka = system.config.kafka
    customer = 1234
    producer = upstream_producer(system.config)
    await producer.start()
    try:
        await producer.send_and_wait(
            kafka.commands_topic, b"\x93\xc1garbage", key=customer_key(customer)
        )
    finally:
        await producer.stop()
    async with Client(kafka) as client:
        result: Result = await client.submit(Deposit("after-garbage", customer, 1, 5, "EUR"), 60)
    assert result.reason is Reason.ACCOUNT_NOT_FOUND
    letters = [
        msgspec.msgpack.decode(r.value, type=DeadLetter)
        for r in await read_topic(kafka, kafka.dlq_topic)
    ]
    assert [(d.reason, d.topic, d.value) for d in letters] == [
        ("undecodable", kafka.commands_topic, b"\x93\xc1garbage")
    ]
    assert letters[0].offset == result.offset - 1


@pytest.mark.parametrize("hanging", [0, 1], ids=["postgres-hangs", "mariadb-hangs"])
async def test_a_cup_that_hangs_holds_back_only_its_own_partitions(
    system: System, hanging: int
) -> None:
    """One cup's tables are locked: its commits and the worker's housekeeping queries on
    it wait. The worker's fetch loop must go on feeding the other cup's partitions."""
    system.start_worker()
    partitions = system.config.kafka.partitions
    by_cup: dict[int, int] = {}
    for customer in range(1, 1_000):
        by_cup.setdefault(system.shard_map.cup_of[partition_of(customer, partitions)], customer)
    stuck, free = by_cup[hanging], by_cup[1 - hanging]
    cup = await RawCup.open(system.shard_map.cups[hanging], system.config.shards)
    try:
        async with Client(system.config.kafka) as client:
            for customer in (free, stuck):
                opened = OpenAccount(f"hang-open-{customer}", customer, 1, "EUR")
                assert (await client.submit(opened, RESULTS_TIMEOUT_SECONDS)).accepted
            async with cup.tables_locked("outbox", "transfers_in_flight"):
                waiting = asyncio.create_task(
                    client.submit(Deposit("hang-dep-stuck", stuck, 1, 100, "EUR"), 120)
                )
                await asyncio.sleep(3 * system.config.worker.outbox_trim_interval_seconds)
                for n in range(3):
                    deposit = Deposit(f"hang-dep-free-{n}", free, 1, 100, "EUR")
                    assert (await client.submit(deposit, HANG_ANSWER_SECONDS)).accepted
                assert not waiting.done()
            assert (await waiting).accepted
    finally:
        await cup.close()
    assert system.stop_all() == [0], system.worker_logs()
