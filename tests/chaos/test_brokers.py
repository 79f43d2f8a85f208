"""Three brokers, every topic replicated three times with two in sync: the leader of the
busiest partitions is SIGKILLed under load and restarted, then a second broker in turn.

Runs on its own three-broker stack (conftest ``brokers_stack``), whose workers bootstrap
from every broker directly. Marked slow: even its short version, with its own stack's
start, is well past what ``make test`` gives a scenario; ``make chaos`` runs it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaClient
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from deploy.local import kafka_broker, kafka_quorum
from engine.core.config import KafkaConfig, StackConfig
from engine.kafka.connection import connection
from engine.kafka.topics import end_offsets
from tests.chaos.harness import ChaosSystem, Load, assert_clean, scale, verdict
from tests.chaos.test_servers import EXPIRY_SECONDS, POLL_SECONDS

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]

KILLS = 2
BUSIEST_SHARE = 2
"""The busiest partitions are the top 1/BUSIEST_SHARE by records on the commands topic."""
IN_SYNC_SECONDS_MAX = 120.0
GONE_SECONDS_MAX = 30.0


async def busiest_leader(kafka: KafkaConfig, spared: set[int]) -> tuple[int, list[int]]:
    """The broker (not in ``spared``) that leads most of the commands topic's busiest
    partitions, and those partitions."""
    ends = await end_offsets(kafka, kafka.commands_topic)
    ranked = sorted(ends, key=lambda p: ends[p], reverse=True)
    busiest = ranked[: max(1, len(ranked) // BUSIEST_SHARE)]
    client = AIOKafkaClient(**connection(kafka))
    await client.bootstrap()
    try:
        client.add_topic(kafka.commands_topic)
        await client.force_metadata_update()
        leaders = {
            p: client.cluster.leader_for_partition(TopicPartition(kafka.commands_topic, p))
            for p in ranked
        }
    finally:
        await client.close()
    votes = Counter(leaders[p] for p in busiest if leaders[p] not in spared)
    votes.update(leaders[p] for p in ranked if leaders[p] not in spared)  # breaks ties
    assert votes, f"no partition led by a broker outside {spared}: {leaders}"
    leader = votes.most_common(1)[0][0]
    assert isinstance(leader, int) and leader >= kafka_quorum.FIRST_NODE_ID, leaders
    return leader, [p for p in busiest if leaders[p] == leader]


async def wait_in_sync(kafka: KafkaConfig) -> float:
    """Wait (bounded) until every partition of every topic has all its replicas in sync;
    the seconds it took."""
    started = time.monotonic()
    admin = AIOKafkaAdminClient(**connection(kafka))
    await admin.start()
    try:
        while True:
            lagging = [
                f"{topic['topic']}/{part['partition']}"
                for topic in await admin.describe_topics(await admin.list_topics())
                for part in topic["partitions"]
                if len(part["isr"]) < len(part["replicas"])
            ]
            if not lagging:
                return time.monotonic() - started
            if time.monotonic() - started > IN_SYNC_SECONDS_MAX:
                raise AssertionError(f"replicas still out of sync: {lagging[:10]}")
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await admin.close()


def kill_node(stack: StackConfig, node: int) -> None:
    """SIGKILL Kafka node ``node`` and wait (bounded) until it is gone."""
    pid = kafka_broker.running_broker_pid(stack, node)
    assert pid is not None, f"broker {node} runs"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + GONE_SECONDS_MAX
    while kafka_broker.running_broker_pid(stack, node) is not None:
        assert time.monotonic() < deadline, f"broker {node} outlived SIGKILL"
        time.sleep(POLL_SECONDS)


def start_node(stack: StackConfig, node: int) -> None:
    kafka_broker.wait_broker_ready(stack, kafka_broker.start_broker(stack, node), node)


async def test_leaders_killed_in_turn_under_load(chaos_brokers: ChaosSystem) -> None:
    """The leader of the busiest partitions is SIGKILLed, stays down past the workers'
    request timeout, and comes back; once every replica is in sync again, another broker
    (the leader of the busiest partitions among those not killed yet) goes the same way.

    With two of three replicas left, acks=all writes go on (min.insync.replicas 2): the
    producers and the group move to the new leaders and coordinators, the transactions in
    flight on the dead one abort or complete, and nothing acknowledged may be lost.
    """
    run = scale()
    kafka, stack = chaos_brokers.config.kafka, chaos_brokers.direct.stack
    assert stack.kafka_brokers == 3, stack
    chaos_brokers.start_worker()
    chaos_brokers.start_worker()
    killed: list[tuple[int, list[int], float]] = []
    async with Load(chaos_brokers, run) as load:
        load.start(run.load_seconds * 2)
        for _ in range(KILLS):
            await asyncio.sleep(run.load_seconds / 3)
            leader, partitions = await busiest_leader(kafka, {node for node, _, _ in killed})
            await asyncio.to_thread(kill_node, stack, leader)
            chaos_brokers.fault()
            await asyncio.sleep(EXPIRY_SECONDS)
            await asyncio.to_thread(start_node, stack, leader)
            killed.append((leader, partitions, await wait_in_sync(kafka)))
        await load.wait()
    assert_clean(await verdict(chaos_brokers, "broker-failover", load.acked), chaos_brokers)
    turns = "; ".join(
        f"broker {node} (leading busy partitions {parts}) back in sync after {seconds:.1f} s"
        for node, parts, seconds in killed
    )
    print(f"broker-failover: {load.errors} publishes failed; SIGKILLed {turns}")
