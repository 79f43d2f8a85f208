"""A real worker under load, scraped by a real Prometheus; readiness follows the cups."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deploy.local.prometheus_throwaway import ThrowawayPrometheus, free_port
from engine.core.config import Config
from engine.kafka.client import Client
from loadtest.driver import Driver
from loadtest.system import System, drop_system, make_system
from loadtest.workload import Workload, WorkloadShape
from shards.control import connect
from tests.promtool import output, promtool

pytestmark = pytest.mark.integration

PARTITIONS = 4
READY_TIMEOUT_SECONDS = 30.0
SCRAPE_TIMEOUT_SECONDS = 60.0


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=PARTITIONS, cups=2)
    yield made
    await drop_system(stack, made)


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        body: bytes = answer.read()
        return body


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


async def _wait_ready(port: int, wanted: int) -> str:
    last = (0, "")
    for _ in range(int(READY_TIMEOUT_SECONDS * 4)):
        last = await asyncio.to_thread(_readyz, port)
        if last[0] == wanted:
            return last[1]
        await asyncio.sleep(0.25)
    raise AssertionError(f"/readyz never answered {wanted}; last {last}")


async def test_prometheus_sees_throughput_and_lag_and_readiness_follows_cups(
    system: System, tmp_path: Path
) -> None:
    port = free_port()
    system.start_worker({"SMALLCUPS_WORKER_METRICS_PORT": str(port)})
    await _wait_ready(port, 200)
    with ThrowawayPrometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"]) as prometheus:
        await asyncio.to_thread(prometheus.wait_for, "up == 1", SCRAPE_TIMEOUT_SECONDS)
        workload = Workload(WorkloadShape(customers=200, partitions=PARTITIONS, seed=5))
        async with Client(system.config.kafka) as client:
            driver = Driver(client, window=2_000)
            await driver.send_all(workload.opening())
            for _ in range(10):
                await driver.send_all(workload.next_command() for _ in range(400))
                await asyncio.sleep(0.5)
            assert await driver.wait_all(120)
        rate = await asyncio.to_thread(
            prometheus.wait_for,
            'sum(increase(smallcups_commands_total{outcome="accepted"}[1m])) > 1000',
            SCRAPE_TIMEOUT_SECONDS,
        )
        assert float(rate[0]["value"][1]) > 1000
        lag = await asyncio.to_thread(
            prometheus.wait_for, "count(smallcups_consumer_lag_records >= 0) == 4", 30
        )
        assert lag
        owned = await asyncio.to_thread(prometheus.query, "smallcups_partitions_owned")
        assert float(owned[0]["value"][1]) == PARTITIONS
        p99 = "histogram_quantile(0.99, sum by (le) (rate({}[1m])))"
        latency = await asyncio.to_thread(
            prometheus.query, p99.format("smallcups_publish_to_result_seconds_bucket")
        )
        assert 0 < float(latency[0]["value"][1]) < 30
        scrape = await asyncio.to_thread(_get, port, "/metrics")
        checked = await asyncio.to_thread(promtool, "check", "metrics", stdin=scrape)
        assert checked.returncode == 0, output(checked)

    cup = system.databases[1]
    admin = await connect(system.config.stack.control_dsn, system.config.shards)
    try:
        await admin.execute(f'ALTER DATABASE "{cup}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", cup
        )
        assert "unreachable" in await _wait_ready(port, 503)
        await admin.execute(f'ALTER DATABASE "{cup}" ALLOW_CONNECTIONS true')
        await _wait_ready(port, 200)
    finally:
        await admin.execute(f'ALTER DATABASE "{cup}" ALLOW_CONNECTIONS true')
        await admin.close()
