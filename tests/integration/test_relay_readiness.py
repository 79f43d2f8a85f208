"""/readyz follows the relay: a worker whose results cannot be published is not ready.

The results topic is made unwritable the way a broker outage looks to a producer with
acks=all: more in-sync replicas required than exist (NotEnoughReplicas, retried until the
request times out). The worker keeps consuming and committing; its relay holds the rows.
"""

from __future__ import annotations

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
from tests.integration.test_worker_metrics import _wait_ready

pytestmark = pytest.mark.integration

PARTITIONS = 4
STALL_MAX_SECONDS = 3


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=PARTITIONS, cups=1)
    yield made
    await drop_system(stack, made)


async def set_min_insync(kafka: KafkaConfig, topic: str, replicas: int) -> None:
    admin = AIOKafkaAdminClient(**connection(kafka), request_timeout_ms=kafka.request_timeout_ms)
    await admin.start()
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={"min.insync.replicas": str(replicas)}
        )
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
        await set_min_insync(kafka, kafka.results_topic, 99)
        try:
            await driver.send_all(workload.next_command() for _ in range(200))
            reason = await _wait_ready(port, 503)
            assert "relay has not published" in reason, reason
        finally:
            await set_min_insync(kafka, kafka.results_topic, 1)
        await _wait_ready(port, 200)
        assert await driver.wait_all(120), system.worker_logs()
    print(f"\nwhile results could not be published, /readyz said: {reason.strip()}")
