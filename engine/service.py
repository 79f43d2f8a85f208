"""Starting and stopping a worker process: connections, signals, clean shutdown."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
from pathlib import Path

import msgspec
import uvloop

from engine.config import Config
from engine.health import HealthServer
from engine.messages import COMMAND_TYPES, DEAD_LETTER_REASONS, Reason
from engine.metrics import WorkerMetrics
from engine.relay import Relay
from engine.worker import RebalanceListener, Worker, make_consumer, make_producer
from shards.control import connect, load_shard_map
from shards.cups import close_cups, open_cups

log = logging.getLogger(__name__)


async def serve_worker(config: Config, stop: asyncio.Event) -> None:
    """Run one worker until ``stop`` is set: finish the batch, publish, leave the group."""
    control = await connect(config.control_dsn, config.shards.connect_timeout_seconds)
    try:
        shard_map = await load_shard_map(control)
    finally:
        await control.close()
    stores = await open_cups(shard_map, config.shards)
    metrics = WorkerMetrics()
    metrics.precreate(
        [str(t.__struct_config__.tag) for t in COMMAND_TYPES] + ["invalid", "undecodable"],
        [reason.value for reason in Reason if reason is not Reason.NONE],
        DEAD_LETTER_REASONS,
    )
    producer = make_producer(config)
    consumer = make_consumer(config)
    try:
        await producer.start()
        dlq_partitions = len(await producer.partitions_for(config.kafka.dlq_topic))
        renew = functools.partial(make_producer, config)
        relay = Relay(producer, config.kafka, dlq_partitions, metrics, renew)
        worker = Worker(config, shard_map, stores, consumer, relay, metrics)
        health = HealthServer(metrics.registry, worker.readiness, port=config.worker.metrics_port)
        port = await health.start()
        target = _announce(config.worker.metrics_targets_dir, port)
        consumer.subscribe([config.kafka.commands_topic], listener=RebalanceListener(worker))
        await consumer.start()
        log.info(
            "worker %s started: %d partitions over %d cups, metrics on %s/metrics",
            worker.owner,
            shard_map.partitions,
            len(stores),
            health.url,
        )
        try:
            await worker.run(stop)
            await worker.drain()
        finally:
            await consumer.stop()
            await relay.close()
            await health.stop()
            if target is not None:
                target.unlink(missing_ok=True)
    finally:
        await producer.stop()
        await close_cups(stores)
    log.info("worker %s stopped cleanly", worker.owner)


def _announce(targets_dir: str, port: int) -> Path | None:
    """Write a Prometheus file-discovery target for this worker, if a folder is configured."""
    if not targets_dir:
        return None
    folder = Path(targets_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"worker-{os.getpid()}.json"
    document = [{"targets": [f"127.0.0.1:{port}"], "labels": {}}]
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(msgspec.json.encode(document))
    temporary.replace(path)
    return path


def run_worker(config: Config) -> int:
    """The ``smallcups worker`` process: uvloop, SIGTERM/SIGINT for a clean stop."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve_worker(config, stop)

    uvloop.run(main())
    return 0
