"""The broker and the cups' servers (Postgres, MariaDB) go down under load and come back."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from deploy.local import kafka_broker, mariadb_server, postgres_cluster
from engine.core.config import StackConfig
from shards.cup_admin import CupKind
from tests.chaos.harness import (
    WORKER_REQUEST_TIMEOUT_MS,
    ChaosSystem,
    Load,
    Worker,
    assert_clean,
    scale,
    verdict,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

DOWN_SECONDS = 3.0
EXPIRY_SECONDS = WORKER_REQUEST_TIMEOUT_MS / 1000 + 2
"""Down long enough for the workers' sends in flight to expire."""
POLL_SECONDS = 0.5
RECOVER_SECONDS = 120.0


def _kill_broker(stack: StackConfig) -> None:
    """SIGKILL the broker and wait (bounded) until it is gone."""
    pid = kafka_broker.running_broker_pid(stack)
    assert pid is not None, "the chaos broker runs"
    os.kill(pid, signal.SIGKILL)
    for _ in range(int(30 / POLL_SECONDS)):
        if kafka_broker.running_broker_pid(stack) is None:
            return
        time.sleep(POLL_SECONDS)
    raise AssertionError("the broker outlived SIGKILL")


def _start_broker(stack: StackConfig) -> None:
    kafka_broker.wait_broker_ready(stack, kafka_broker.start_broker(stack))


async def test_broker_restarted_under_load(chaos: ChaosSystem) -> None:
    """The one broker is stopped with SIGTERM, restarted, then SIGKILLed and restarted.

    Publishes fail while it is down (the load counts them; only what reached the topic
    is owed a result); workers lose their group, fetches and sends, and must resume.
    The second outage outlives the workers' request timeout: the relay's sends in
    flight expire, and its idempotent producer must be replaced (an expired batch
    leaves a gap in its sequence numbers that the broker refuses for good).
    """
    run = scale()
    stack = chaos.direct.stack
    chaos.start_worker()
    chaos.start_worker()
    async with Load(chaos, run) as load:
        load.start(run.load_seconds * 2)
        try:
            for stop, down_seconds in (
                (kafka_broker.stop_broker, DOWN_SECONDS),
                (_kill_broker, EXPIRY_SECONDS),
            ):
                await asyncio.sleep(run.load_seconds / 3)
                await asyncio.to_thread(stop, stack)
                chaos.fault()
                await asyncio.sleep(down_seconds)
                await asyncio.to_thread(_start_broker, stack)
        finally:
            await asyncio.to_thread(_start_broker, stack)
        await load.wait()
    assert_clean(await verdict(chaos, "broker-restart", load.acked), chaos)
    logs = [w.process.log_path.read_text(errors="replace") for w in chaos.workers]
    renewed = sum(text.count("producer was replaced") for text in logs)
    print(f"broker-restart: {load.errors} publishes failed, {renewed} relay producers replaced")


async def _watch_readiness(workers: list[Worker], seen: set[int], stop: asyncio.Event) -> None:
    """Record every /readyz status the workers answer until ``stop`` (bounded)."""
    for _ in range(int(600 / POLL_SECONDS)):
        if stop.is_set():
            return
        for worker in workers:
            status, _ = await worker.get("/readyz")
            seen.add(status)
        await asyncio.sleep(POLL_SECONDS)


async def _all_ready(workers: list[Worker]) -> bool:
    for _ in range(int(RECOVER_SECONDS / POLL_SECONDS)):
        statuses = [(await w.get("/readyz"))[0] for w in workers]
        if all(s == 200 for s in statuses):
            return True
        await asyncio.sleep(POLL_SECONDS)
    return False


def _stop_cup_server(kind: CupKind, stack: StackConfig, mode: str) -> None:
    if kind is CupKind.MYSQL:
        mariadb_server.stop_mariadb(stack, mode)
    else:
        postgres_cluster.stop_postgres(stack, mode)


def _start_cup_server(kind: CupKind, stack: StackConfig) -> None:
    if kind is CupKind.MYSQL:
        mariadb_server.start_mariadb(stack)
    else:
        postgres_cluster.start_postgres(stack)


@pytest.mark.parametrize("kind", [CupKind.POSTGRES, CupKind.MYSQL], ids=["postgres", "mariadb"])
async def test_a_cup_server_restarted_under_load(chaos: ChaosSystem, kind: CupKind) -> None:
    """A cup's server is stopped (fast, then immediate: crash recovery) and started.

    Workers' commits to its cup fail, they back off and retry; /readyz answers 503 (a cup
    unreachable, partitions waiting to be re-claimed) while it is down and 200 again
    after; then the load ends and nothing is lost or applied twice.
    """
    run = scale()
    stack = chaos.direct.stack
    workers = [chaos.start_worker(), chaos.start_worker()]
    seen: set[int] = set()
    stop = asyncio.Event()
    async with Load(chaos, run) as load:
        assert await _all_ready(workers), chaos.logs()
        watcher = asyncio.create_task(_watch_readiness(workers, seen, stop))
        load.start(run.load_seconds * 2)
        try:
            for mode in ("fast", "immediate"):
                await asyncio.sleep(run.load_seconds / 3)
                await asyncio.to_thread(_stop_cup_server, kind, stack, mode)
                chaos.fault()
                await asyncio.sleep(DOWN_SECONDS)
                await asyncio.to_thread(_start_cup_server, kind, stack)
                assert await _all_ready(workers), chaos.logs()
        finally:
            await asyncio.to_thread(_start_cup_server, kind, stack)
        await load.wait()
        stop.set()
        await watcher
    assert 503 in seen, f"readiness never reflected the outage: {seen}"
    assert all(w.process.alive() for w in workers), chaos.logs()
    server = "mariadb" if kind is CupKind.MYSQL else "postgres"
    assert_clean(await verdict(chaos, f"{server}-restart", load.acked), chaos)
