"""``naive``: one consumer process, one database transaction per command (naive_apply).

1. a fresh system, its accounts opened and funded through the store (as db_ceiling does),
   every partition's ``next_offset`` back to 0;
2. the load published to the command topic beforehand (not measured);
3. measure: the naive process consumes the topic from the start and applies record after
   record, until every record is applied or ``naive_seconds`` have passed;
4. verify: reconciliation of the cups is clean, the offsets moved by exactly the records
   applied, and customer money equals the funding plus deposits minus withdrawals.
"""

from __future__ import annotations

import asyncio
import multiprocessing.connection
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.admin.reconcile import reconcile
from engine.core.config import Config, KafkaConfig, ShardsConfig
from engine.core.decoding import decode_command
from engine.core.errors import invariant
from engine.core.messages import COMMAND_TYPES
from engine.core.store import CupStore
from engine.kafka.client import Client
from engine.kafka.connection import connection
from loadtest.bench.ceiling import seed
from loadtest.bench.child import Child, Figures, serve
from loadtest.bench.cpu import CpuMeter
from loadtest.bench.naive_apply import Naive
from loadtest.bench.options import (
    BenchOptions,
    Checks,
    Load,
    ModeResult,
    fresh_system,
    rate_of,
)
from loadtest.bench.raw_pipe import publish_all
from loadtest.system import System, drop_system
from shards.control import connect
from shards.cups import close_cups, open_cups
from shards.postgres.store import PostgresCupStore

READY_TIMEOUT_SECONDS: Final = 60.0
FETCH_RECORDS_MAX: Final = 500
_OFFSETS_SQL: Final = "SELECT sum(next_offset) FROM partition_state"
DONE_GRACE_SECONDS: Final = 60.0
"""How long past ``naive_seconds`` the parent waits for the last transaction to end."""


async def run_naive(base: Config, options: BenchOptions, load: Load, log_dir: Path) -> ModeResult:
    system = await fresh_system(base, options, "naive", log_dir)
    stores = _postgres_only(await open_cups(system.shard_map, system.config.shards))
    try:
        errors = await _prepare(system, stores, load, options)
        kafka = system.config.kafka
        cup_of = [system.shard_map.cup_of[p] for p in range(options.partitions)]
        child = Child(
            _naive_main,
            kafka,
            kafka.commands_topic,
            dict(system.shard_map.cups),
            system.config.shards,
            cup_of,
            len(load.commands),
            options.naive_seconds,
        )
        try:
            child.start(READY_TIMEOUT_SECONDS)
            meter = CpuMeter(base.stack, [child.pid])
            meter.start()
            child.send("go")
            wait_seconds = options.naive_seconds + DONE_GRACE_SECONDS
            figures = await asyncio.to_thread(child.expect, "done", wait_seconds)
            meter.stop()
        finally:
            child.close()
        offsets = sum([await store.pool.fetchval(_OFFSETS_SQL) for store in stores.values()])
        report = await reconcile(system.config, topics=False)
    finally:
        await close_cups(stores)
        await drop_system(base, system)
    processed = figures["processed"]
    checks = Checks()
    checks.expect(errors == 0, "the load reached the broker", f"{errors} errors")
    checks.expect(processed > 0, "some commands applied", processed)
    checks.expect(offsets == processed, "offsets moved by the records applied", offsets)
    checks.expect(report.ok, "reconcile (cups) clean", dict(report.problems))
    money = sum(sum(cup.customer_total.values()) for cup in report.cups)
    wanted = load.initial_total + figures["deposited"] - figures["withdrawn"]
    checks.expect(money == wanted, "customer money == funding + deposits - withdrawals", money)
    result = ModeResult(
        mode="naive",
        commands=processed,
        seconds=round(figures["seconds"], 3),
        rate_per_second=round(rate_of(processed, figures["seconds"]), 1),
        cpu_seconds_per_1k=meter.per_thousand(processed),
        notes={"accepted": figures["accepted"]},
    )
    return checks.apply(result)


def _postgres_only(stores: Mapping[int, CupStore]) -> dict[int, PostgresCupStore]:
    """The naive baseline is Postgres's (it writes Postgres's SQL): its cups are."""
    narrowed = {cup: s for cup, s in stores.items() if isinstance(s, PostgresCupStore)}
    invariant(len(narrowed) == len(stores), "the naive baseline runs on Postgres cups")
    return narrowed


async def _prepare(
    system: System, stores: dict[int, PostgresCupStore], load: Load, options: BenchOptions
) -> int:
    """Steps 1 and 2; the number of record batches the broker refused."""
    await seed(system, stores, load, options.ceiling_batch_records)
    for store in stores.values():
        await store.pool.execute("UPDATE partition_state SET next_offset = 0")
    client = Client(system.config.kafka)
    await client.start(results=False)
    try:
        return await publish_all(client, load.commands)
    finally:
        await client.close()


def _naive_main(
    conn: multiprocessing.connection.Connection,
    kafka: KafkaConfig,
    topic: str,
    cup_dsns: dict[int, str],
    shards: ShardsConfig,
    cup_of: list[int],
    expected: int,
    seconds: float,
) -> None:
    serve(conn, partial(_consume, kafka, topic, cup_dsns, shards, cup_of, expected, seconds))


async def _consume(
    kafka: KafkaConfig,
    topic: str,
    cup_dsns: dict[int, str],
    shards: ShardsConfig,
    cup_of: list[int],
    expected: int,
    seconds: float,
    ready: Callable[[], Awaitable[None]],
) -> Figures:
    """Apply records from offset 0 until ``expected`` are applied or ``seconds`` passed."""
    connections = {cup: await connect(dsn, shards) for cup, dsn in cup_dsns.items()}
    consumer = AIOKafkaConsumer(
        **connection(kafka), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    naive = Naive(connections, cup_of)
    try:
        tps = [TopicPartition(topic, p) for p in range(len(cup_of))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        await ready()
        started = time.monotonic()
        deadline = started + seconds
        while naive.tally.processed < expected and time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=100, max_records=FETCH_RECORDS_MAX)
            for records in fetched.values():
                for record in records:
                    if time.monotonic() >= deadline:
                        break
                    command = decode_command(record.value or b"")
                    money = command if isinstance(command, COMMAND_TYPES) else None
                    await naive.apply(record.partition, record.offset, money)
        elapsed = time.monotonic() - started
    finally:
        await consumer.stop()
        await asyncio.gather(*(c.close() for c in connections.values()))
    return {**asdict(naive.tally), "seconds": elapsed}
