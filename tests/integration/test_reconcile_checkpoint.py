"""Reconcile from a checkpoint on the real stack: a full run saves where it stopped; after
more load, the next run reads only the records that came after (counted); a second result
planted after the checkpoint, for a command answered before it, is found by the
incremental run as by a full one; --full ignores the checkpoint, and so does a run whose
checkpoint is past a partition's position."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from deploy.local.roles import Role, as_role
from engine.admin.reconcile import reconcile
from engine.core.config import Config
from engine.core.messages import Balance, Command, Deposit, OpenAccount, encode
from engine.kafka.client import Client
from loadtest.system import System, drop_system, make_system
from shards.control import connect
from shards.reconcile_checkpoint import load_checkpoint
from tests.integration.system import submit_all, worker_producer

pytestmark = pytest.mark.integration

PARTITIONS = 4
CUSTOMERS = 20


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=PARTITIONS, cups=2)
    made.start_worker()
    yield made
    await drop_system(stack, made)


def _deposits(tag: str) -> list[Command]:
    return [Deposit(f"{tag}-{c}", 100 + c, 1, 10, "EUR") for c in range(CUSTOMERS)]


async def test_an_incremental_run_reads_only_what_came_after_the_checkpoint(
    system: System,
) -> None:
    config = system.config
    opening = [OpenAccount(f"open-{c}", 100 + c, 1, "EUR") for c in range(CUSTOMERS)]
    async with Client(as_role(config, Role.UPSTREAM).kafka) as client:
        answered = await submit_all(client, [*opening, *_deposits("first")])
        full = await reconcile(config, topics=True)
        assert full.ok, dict(full.problems)
        assert full.checkpoint == "none"
        assert full.counts["topic_records_read"] == 4 * CUSTOMERS  # commands and results
        await submit_all(client, _deposits("second"))
    incremental = await reconcile(config, topics=True)
    assert incremental.ok, dict(incremental.problems)
    assert incremental.checkpoint == "continued"
    assert incremental.counts["topic_records_read"] == 2 * CUSTOMERS
    assert incremental.counts["commands_consumed"] == CUSTOMERS
    control = await connect(config.control_dsn, config.shards)
    try:
        saved = await load_checkpoint(control, config.kafka.topic_prefix)
    finally:
        await control.close()
    assert sorted(saved) == list(range(PARTITIONS))
    assert sum(mark.commands_offset for mark in saved.values()) == 3 * CUSTOMERS

    victim = answered[-1]
    other = msgspec.structs.replace(victim, balances=(Balance(victim.balances[0].customer, 1, 7),))
    producer = worker_producer(config)
    await producer.start()
    try:
        await producer.send_and_wait(
            config.kafka.results_topic, encode(other), partition=victim.partition
        )
    finally:
        await producer.stop()
    planted = await reconcile(config, topics=True)
    assert planted.counts["topic_records_read"] == 1
    assert [victim.command_id in f for f in planted.problems["one_result"]] == [True]
    again = await reconcile(config, topics=True, full=True)
    assert again.checkpoint == "none"
    assert again.counts["topic_records_read"] == 6 * CUSTOMERS + 1
    assert [victim.command_id in f for f in again.problems["one_result"]] == [True]
    control = await connect(config.control_dsn, config.shards)
    try:
        await control.execute(
            "UPDATE reconcile_checkpoints SET commands_offset = commands_offset + 1000"
            " WHERE partition = 0"
        )
    finally:
        await control.close()
    behind = await reconcile(config, topics=True)
    assert behind.checkpoint.startswith("ignored: the commands topic's partition 0"), (
        behind.checkpoint
    )
    assert behind.counts["topic_records_read"] == 6 * CUSTOMERS + 1
