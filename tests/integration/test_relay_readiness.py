"""/readyz follows the relay: a worker whose results cannot be published is not ready.

The results topic is made to refuse every batch (its max.message.bytes below any
batch: MessageSizeTooLarge, on each re-send too). The worker keeps consuming and
committing; its relay keeps the rows in the outbox and retries; /readyz turns 503 once
that has lasted worker.relay_stall_max_seconds, and 200 again once the topic takes them.
Changing a topic's min.insync.replicas above its replicas does not do it: the broker
caps it at the replication factor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from deploy.local.prometheus_throwaway import free_port
from engine.core.config import Config, KafkaConfig
from engine.kafka.client import Client
from engine.kafka.connection import connection
from loadtest.driver import Driver
from loadtest.system import System, drop_system, make_system
from loadtest.workload import Workload, WorkloadShape
from tests.integration.test_worker_metrics import _readyz, _wait_ready

pytestmark = pytest.mark.integration

PARTITIONS = 4
STALL_MAX_SECONDS = 3


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=PARTITIONS, cups=1)
    yield made
    await drop_system(stack, made)


async def set_topic_configs(kafka: KafkaConfig, topic: str, configs: dict[str, str]) -> None:
    """Replace the topic's configuration (AlterConfigs: what is not named is the default)."""
    admin = AIOKafkaAdminClient(**connection(kafka), request_timeout_ms=kafka.request_timeout_ms)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)
        answer = await admin.alter_configs([resource])
        assert all(error == 0 for error, *_ in answer[0].resources), answer
    finally:
        await admin.close()


async def test_readiness_fails_while_the_relay_cannot_publish(system: System) -> None:
    port = free_port()
    system.start_worker(
        {
            "SMALLCUPS_WORKER_METRICS_PORT": str(port),
            "SMALLCUPS_WORKER_RELAY_STALL_MAX_SECONDS": str(STALL_MAX_SECONDS),
        }
    )
    await _wait_ready(port, 200)
    kafka = system.config.kafka
    workload = Workload(WorkloadShape(customers=50, partitions=PARTITIONS, seed=21))
    async with Client(kafka) as client:
        driver = Driver(client, window=2_000)
        await driver.send_all(workload.opening())
        assert await driver.wait_all(60), system.worker_logs()
        await set_topic_configs(kafka, kafka.results_topic, {"max.message.bytes": "16"})
        try:
            await driver.send_all(workload.next_command() for _ in range(200))
            reason = await _wait_ready(port, 503)
            for _ in range(40):
                if "relay has not published" in reason:
                    break
                await asyncio.sleep(0.25)
                reason = (await asyncio.to_thread(_readyz, port))[1]
            assert "relay has not published" in reason, reason
        finally:
            await set_topic_configs(kafka, kafka.results_topic, {})
        await _wait_ready(port, 200)
        assert await driver.wait_all(120), system.worker_logs()
    print(f"\nwhile results could not be published, /readyz said: {reason.strip()}")
