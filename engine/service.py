"""Starting and stopping a worker process: connections, signals, clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from engine.config import Config
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
    producer = make_producer(config)
    consumer = make_consumer(config)
    try:
        await producer.start()
        dlq_partitions = len(await producer.partitions_for(config.kafka.dlq_topic))
        relay = Relay(producer, config.kafka, dlq_partitions)
        worker = Worker(config, shard_map, stores, consumer, relay)
        consumer.subscribe([config.kafka.commands_topic], listener=RebalanceListener(worker))
        await consumer.start()
        log.info(
            "worker %s started: %d partitions over %d cups",
            worker.owner,
            shard_map.partitions,
            len(stores),
        )
        try:
            await worker.run(stop)
            await worker.drain()
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
        await close_cups(stores)
    log.info("worker %s stopped cleanly", worker.owner)


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
