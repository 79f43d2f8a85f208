"""``raw_pipe``: the Kafka-side ceiling, no database.

The bench process publishes the load's encoded commands with ``Client.publish_many``
(the engine's producer settings: idempotent, acks=all) while a reader process consumes
the command topic with the worker's fetch settings and decodes every record with
msgspec. The rate is the load's size over the time from the first publish until the
reader decoded the last record.
"""

from __future__ import annotations

import asyncio
import multiprocessing.connection
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.core.config import Config, KafkaConfig
from engine.core.decoding import decode_command
from engine.core.messages import Command, Deposit, Invalid, Transfer, Undecodable, Withdraw
from engine.kafka.client import Client
from engine.kafka.clients import FETCH_LIMITS
from engine.kafka.connection import connection
from loadtest.bench.child import Child, Figures, serve
from loadtest.bench.cpu import CpuMeter
from loadtest.bench.options import (
    BenchOptions,
    Checks,
    Load,
    ModeResult,
    fresh_system,
    rate_of,
    transferred,
)
from loadtest.driver import CHUNK_COMMANDS
from loadtest.system import drop_system

READY_TIMEOUT_SECONDS: Final = 60.0
DELIVERIES_PENDING_MAX: Final = 2_000
"""Record batches awaiting their broker acknowledgement before the producer waits."""


async def run_raw_pipe(
    base: Config, options: BenchOptions, load: Load, log_dir: Path
) -> ModeResult:
    system = await fresh_system(base, options, "raw_pipe", log_dir)
    kafka = system.config.kafka
    expected = len(load.commands)
    reader = Child(
        _reader_main,
        kafka,
        kafka.commands_topic,
        options.partitions,
        expected,
        base.worker.fetch_records_max,
        options.results_timeout_seconds,
    )
    try:
        reader.start(READY_TIMEOUT_SECONDS)
        meter = CpuMeter(base.stack, [reader.pid])
        client = Client(kafka)
        await client.start(results=False)
        try:
            meter.start()
            started = time.time()
            reader.send("go")
            errors = await publish_all(client, load.commands)
            figures = await asyncio.to_thread(
                reader.expect, "done", options.results_timeout_seconds
            )
            meter.stop()
        finally:
            await client.close()
    finally:
        reader.close()
        await drop_system(base, system)
    seconds = figures["finished_at"] - started
    checks = Checks()
    checks.expect(errors == 0, "every record acknowledged by the broker", f"{errors} errors")
    checks.expect(figures["records"] == expected, f"{expected} records read", figures["records"])
    checks.expect(figures["commands"] == expected, "every record decoded", figures["commands"])
    amounts = transferred(load.commands)
    checks.expect(figures["amounts"] == amounts, "amounts checksum", figures["amounts"])
    result = ModeResult(
        mode="raw_pipe",
        commands=expected,
        seconds=round(seconds, 3),
        rate_per_second=round(rate_of(expected, seconds), 1),
        cpu_seconds_per_1k=meter.per_thousand(expected),
    )
    return checks.apply(result)


async def publish_all(client: Client, commands: list[Command]) -> int:
    """Publish ``commands``; the number of record batches the broker refused."""
    refused = 0
    pending: list[asyncio.Future[object]] = []
    for start in range(0, len(commands), CHUNK_COMMANDS):
        pending += await client.publish_many(commands[start : start + CHUNK_COMMANDS])
        if len(pending) > DELIVERIES_PENDING_MAX:
            half = len(pending) // 2
            refused += await _refused(pending[:half])
            pending = pending[half:]
    return refused + await _refused(pending)


async def _refused(deliveries: list[asyncio.Future[object]]) -> int:
    outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
    return sum(1 for outcome in outcomes if isinstance(outcome, BaseException))


def _reader_main(
    conn: multiprocessing.connection.Connection,
    kafka: KafkaConfig,
    topic: str,
    partitions: int,
    expected: int,
    fetch_records_max: int,
    timeout_seconds: float,
) -> None:
    work = partial(_read, kafka, topic, partitions, expected, fetch_records_max, timeout_seconds)
    serve(conn, work)


async def _read(
    kafka: KafkaConfig,
    topic: str,
    partitions: int,
    expected: int,
    fetch_records_max: int,
    timeout_seconds: float,
    ready: Callable[[], Awaitable[None]],
) -> Figures:
    """Consume and decode ``expected`` records (bounded by ``timeout_seconds``)."""
    consumer = AIOKafkaConsumer(
        **connection(kafka),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **FETCH_LIMITS,
    )
    await consumer.start()
    figures: Figures = {"records": 0, "commands": 0, "amounts": 0, "finished_at": 0.0}
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        await ready()
        deadline = time.monotonic() + timeout_seconds
        while figures["records"] < expected and time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=100, max_records=fetch_records_max)
            for records in fetched.values():
                _tally(records, figures)
        figures["finished_at"] = time.time()
    finally:
        await consumer.stop()
    return figures


def _tally(records: Sequence[Any], figures: Figures) -> None:
    for record in records:
        figures["records"] += 1
        command = decode_command(record.value or b"")
        if isinstance(command, Invalid | Undecodable):
            continue
        figures["commands"] += 1
        if isinstance(command, Transfer | Deposit | Withdraw):
            figures["amounts"] += command.amount
