"""Wiring a worker process: its stores, Kafka clients, relay, worker, health endpoints and
shard map follower; signals and a clean shutdown."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import socket
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec
import uvloop

from engine.core.config import Config
from engine.core.errors import InfrastructureError
from engine.core.keyfiles import load_authority
from engine.core.messages import COMMAND_TYPES, DEAD_LETTER_REASONS, LEG_TYPES, Reason, type_tag
from engine.core.records import ShardMap
from engine.core.store import CupStore, ShardMapWatch
from engine.kafka.assignor import CupAffinityAssignor
from engine.kafka.clients import GroupListener, make_consumer, make_producer
from engine.kafka.relay import Relay
from engine.worker.health import HealthServer
from engine.worker.loop import Worker
from engine.worker.map_follower import MapFollower
from engine.worker.metrics import WorkerMetrics
from shards.control import connect, load_shard_map
from shards.cups import close_cups, open_cups
from shards.map_watch import PostgresMapWatch

log = logging.getLogger(__name__)

CLIENT_CLOSE_SECONDS: Final = 5.0


async def serve_worker(config: Config, stop: asyncio.Event) -> None:
    """Run one worker until ``stop`` is set: finish the batch, publish, leave the group."""
    authority = load_authority(config)
    control = await connect(config.control_dsn, config.shards)
    try:
        shard_map = await load_shard_map(control)
    finally:
        await control.close()
    opened = await open_cups(shard_map, config.shards)
    stores: dict[int, CupStore] = dict(opened)
    metrics = _metrics()
    producer = make_producer(config.require_kafka())
    assignor = CupAffinityAssignor(shard_map)
    consumer = make_consumer(config.kafka, assignor)
    try:
        await producer.start()
        dlq_partitions = len(await producer.partitions_for(config.kafka.dlq_topic))
        renew = functools.partial(make_producer, config.kafka)
        relay = Relay(producer, config.kafka, dlq_partitions, metrics, renew)
        worker = Worker(config, shard_map, stores, consumer, relay, metrics, authority)
        health = HealthServer(
            metrics.registry,
            worker.readiness,
            host=config.worker.metrics_host,
            port=config.worker.metrics_port,
        )
        port = await health.start()
        target = _announce(config.worker.metrics_targets_dir, config.worker.metrics_host, port)
        listener = GroupListener(worker.on_assigned, worker.on_revoked)
        topics = [config.kafka.commands_topic, config.kafka.internal_topic]
        consumer.subscribe(topics, listener=listener)
        await consumer.start()
        follower = asyncio.create_task(_follower(config, shard_map, stores, assignor, worker).run())
        follower.add_done_callback(lambda task: _stop_on_crash(task, stop))
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
            worker.abandon()
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            await _bounded(consumer.stop(), "the consumer")
            await relay.close()
            await health.stop()
            if target is not None:
                target.unlink(missing_ok=True)
    finally:
        await _bounded(producer.stop(), "the producer")
        await close_cups(stores)
    log.info("worker %s stopped cleanly", worker.owner)


async def _bounded(closing: Coroutine[Any, Any, None], what: str) -> None:
    """Close a Kafka client, giving up after CLIENT_CLOSE_SECONDS: the group was left and
    the records acknowledged before, and closing a TLS connection can wait up to 30 s for
    the broker's close_notify (the event loop's TLS shutdown timeout)."""
    try:
        await asyncio.wait_for(closing, CLIENT_CLOSE_SECONDS)
    except TimeoutError:
        log.warning("closing %s took longer than %.0f s; leaving it", what, CLIENT_CLOSE_SECONDS)


def _metrics() -> WorkerMetrics:
    metrics = WorkerMetrics()
    metrics.precreate(
        [type_tag(t) for t in COMMAND_TYPES] + ["invalid", "undecodable"],
        [reason.value for reason in Reason if reason not in (Reason.NONE, Reason.FORGED_LEG)],
        DEAD_LETTER_REASONS,
        [type_tag(t) for t in LEG_TYPES],
    )
    return metrics


def _follower(
    config: Config,
    shard_map: ShardMap,
    stores: dict[int, CupStore],
    assignor: CupAffinityAssignor,
    worker: Worker,
) -> MapFollower:
    """The shard map follower of a worker: the control database watched, the stores of new
    cups opened into ``stores``, each new map handed to the assignor and the worker."""
    shards = config.shards
    opened = dict(shard_map.cups)
    """The DSN each store was opened with: a removed cup's id may be given to a new cup."""

    async def watch() -> ShardMapWatch:
        return await PostgresMapWatch.open(config.control_dsn, shards)

    async def open_new(new_map: ShardMap) -> None:
        new_cups = {c: d for c, d in new_map.cups.items() if opened.get(c) != d}
        await _close_removed(stores, worker, new_cups)
        if new_cups:
            subset = ShardMap(new_map.version, new_map.partitions, "", new_cups, {})
            stores.update(await open_cups(subset, shards))
            opened.update(new_cups)
            log.info("opened new cups %s", sorted(new_cups))

    async def adopt(new_map: ShardMap) -> None:
        assignor.follow(new_map)
        await worker.follow(new_map)
        await _close_removed(stores, worker, {c: "" for c in stores if c not in new_map.cups})
        for cup_id in [c for c in opened if c not in new_map.cups]:
            del opened[cup_id]

    return MapFollower(watch, shard_map, open_new, adopt, config.worker.shard_map_poll_seconds)


async def _close_removed(
    stores: dict[int, CupStore], worker: Worker, removed: Mapping[int, object]
) -> None:
    """Close the pools of cups the map no longer has (`shards remove` refuses a cup that
    holds a partition, so no lane uses them). Bounded, and quiet about the DSN: the
    cup's database may be gone already."""
    for cup_id in sorted(c for c in removed if c in stores):
        store = stores.pop(cup_id)
        try:
            await asyncio.wait_for(store.close(), CLIENT_CLOSE_SECONDS)
        except (TimeoutError, OSError, InfrastructureError) as error:
            log.warning("closing removed cup %d: %s", cup_id, type(error).__name__)
        worker.metrics.forget_cup(cup_id)
        log.info("closed removed cup %d", cup_id)


def _stop_on_crash(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    """A map follower that died of a bug stops the worker: it must not run on a stale map."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the shard map follower crashed: %r; stopping", task.exception())
        stop.set()


def _announce(targets_dir: str, host: str, port: int) -> Path | None:
    """Write a Prometheus file-discovery target for this worker, if a folder is configured
    (a worker listening on every interface is announced by its host name)."""
    if not targets_dir:
        return None
    folder = Path(targets_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"worker-{os.getpid()}.json"
    address = socket.gethostname() if host in ("0.0.0.0", "::") else host
    document = [{"targets": [f"{address}:{port}"], "labels": {}}]
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(msgspec.json.encode(document))
    temporary.replace(path)
    return path


GC_THRESHOLDS: Final = (100_000, 50, 100)
"""The cyclic collector's thresholds in a worker: far fewer young collections than
Python's default (700, 10, 10), whose full scans of the growing account books cost a
third of a worker's CPU (docs/performance.md). Commands make no cycles worth hurrying
for."""


def run_worker(config: Config) -> int:
    """The ``smallcups worker`` process: uvloop, SIGTERM/SIGINT for a clean stop."""
    gc.set_threshold(*GC_THRESHOLDS)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve_worker(config, stop)

    uvloop.run(main())
    return 0
