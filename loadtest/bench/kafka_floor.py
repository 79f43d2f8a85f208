"""``kafka_floor``: the engine's latency with everything but Kafka taken away.

An echo process stands in for the workers. It consumes the commands and internal topics
with the worker's fetch settings and answers every command with an accepted result on
the results partition, through a producer with the relay's settings. Commands take the same trips
through Kafka as in the engine: a transfer whose payee is in another partition goes to
the payee's partition (the credit leg) and back to the payer's (the settle leg) before
its result is published. Nothing is decided and no database is written.

The bench publishes an open-loop load at the rate of the faster engine's latency phase in
the same run (FLOOR_RATE_DEFAULT when no engine ran), for WARM_UP_SECONDS unmeasured and
then for ``latency_seconds``, and measures publish-to-result latency as for the engine.
The engine's latency cannot go below this floor on the same machine: what the engine adds
(deciding, three commits for a cross-partition transfer) comes on top.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing.connection
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.core.authority import Authority, fresh_authority
from engine.core.batch import authenticate
from engine.core.config import Config
from engine.core.decoding import decode_command
from engine.core.messages import (
    CreditLeg,
    Invalid,
    Reason,
    Result,
    SettleLeg,
    Status,
    Transfer,
    Undecodable,
    encode,
)
from engine.core.records import OutboxKind, OutboxRow
from engine.core.routing import customer_key, partition_of
from engine.core.saga import credit_leg, settle_leg
from engine.kafka.client import Client
from engine.kafka.clients import FETCH_LIMITS, make_producer
from engine.kafka.connection import connection
from engine.kafka.relay import Relay
from engine.worker.metrics import WorkerMetrics
from loadtest.bench.child import Child, Figures, serve
from loadtest.bench.cpu import CpuMeter
from loadtest.bench.engine_mode import WINDOW_COMMANDS, open_loop
from loadtest.bench.options import BenchOptions, Checks, Load, ModeResult, fresh_system
from loadtest.driver import Driver
from loadtest.system import drop_system

FLOOR_RATE_DEFAULT: Final = 2_000.0
"""Commands/s of the open-loop load when no engine measured its latency in the run."""
WARM_UP_SECONDS: Final = 2.0
"""Load at the measured rate before the measurement: fresh topics answer their first
seconds of load slowly (p99 of the first 2 s about 0.5-1 s at 3,000/s, 30-190 ms after),
and the engine's latency phases run on topics warmed by the maximum-rate phase."""
READY_TIMEOUT_SECONDS: Final = 60.0
STOP_TIMEOUT_SECONDS: Final = 60.0


async def run_kafka_floor(
    base: Config, options: BenchOptions, load: Load, log_dir: Path, rate: float
) -> ModeResult:
    system = await fresh_system(base, options, "kafka_floor", log_dir)
    echo = Child(_echo_main, system.config, base.worker.fetch_records_max)
    try:
        echo.start(READY_TIMEOUT_SECONDS)
        async with Client(system.config.kafka) as client:
            driver = Driver(client, window=WINDOW_COMMANDS)
            echo.send("go")
            warm_up = dataclasses.replace(options, latency_seconds=WARM_UP_SECONDS)
            warmed = await open_loop(driver, load, rate, warm_up, CpuMeter(base.stack, []))
            latency = await open_loop(driver, load, rate, options, CpuMeter(base.stack, [echo.pid]))
            echo.send("stop")
            figures = await asyncio.to_thread(echo.expect, "done", STOP_TIMEOUT_SECONDS)
            publish_errors = driver.score.publish_errors
    finally:
        echo.close()
        await drop_system(base, system)
    checks = Checks()
    checks.expect(latency.complete, "every command answered", latency.sent)
    checks.expect(publish_errors == 0, "no publish refused", publish_errors)
    answered = figures["answered"]
    sent = warmed.sent + latency.sent
    checks.expect(answered == sent, f"{sent} results published", answered)
    checks.expect(figures["legs"] > 0, "cross-partition transfers took their legs")
    result = ModeResult(
        mode="kafka_floor",
        commands=latency.sent,
        rate_per_second=round(latency.rate_per_second, 1),
        cpu_seconds_per_1k=latency.cpu_seconds_per_1k,
        latency_ms=latency.percentiles_ms,
        latency_rate_per_second=round(latency.rate_per_second, 1),
        phases={"half": latency.phase()},
        notes={"legs": figures["legs"]},
    )
    return checks.apply(result)


def _echo_main(
    conn: multiprocessing.connection.Connection, config: Config, fetch_records_max: int
) -> None:
    serve(conn, partial(_echo, conn, config, fetch_records_max))


async def _echo(
    conn: multiprocessing.connection.Connection,
    config: Config,
    fetch_records_max: int,
    ready: Callable[[], Awaitable[None]],
) -> Figures:
    """Answer every command through the engine's relay until the parent says stop."""
    kafka = config.kafka
    consumer = AIOKafkaConsumer(
        **connection(kafka),
        enable_auto_commit=False,
        **FETCH_LIMITS,
    )
    producer = make_producer(config.kafka)
    await consumer.start()
    await producer.start()
    relay = Relay(producer, kafka, 1, WorkerMetrics())
    authority, _ = fresh_authority(kafka.commands_topic)
    figures: Figures = {"answered": 0, "legs": 0}
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in (kafka.commands_topic, kafka.internal_topic)
            for p in range(kafka.partitions)
        ]
        # Per partition, the input place of the next record of either topic (what orders
        # the relay's rows, as in the engine).
        places = dict.fromkeys(range(kafka.partitions), 0)
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        await ready()
        while not conn.poll():
            fetched = await consumer.getmany(timeout_ms=100, max_records=fetch_records_max)
            for tp, records in fetched.items():
                first = places[tp.partition]
                places[tp.partition] += len(records)
                rows = [
                    _answer(kafka.partitions, tp.partition, r, first + n, figures, authority)
                    for n, r in enumerate(records)
                ]
                await relay.publish(tp.partition, rows)
                relay.settle(tp.partition)
                if relay.failed(tp.partition):
                    raise RuntimeError(f"publishing partition {tp.partition} failed")
        conn.recv()
        await relay.flush(STOP_TIMEOUT_SECONDS)
    finally:
        await relay.close()
        await consumer.stop()
        await producer.stop()
    return figures


def _answer(
    partitions: int,
    partition: int,
    record: Any,
    place: int,
    figures: Figures,
    authority: Authority,
) -> OutboxRow:
    """What the engine publishes for ``record`` once it is decided: a leg or a result.
    Legs are signed and checked as the workers do."""
    command = authenticate(decode_command(record.value or b""), partition, authority)
    if isinstance(command, Invalid | Undecodable):
        raise RuntimeError(f"offset {record.offset}: the bench published a bad command")
    now_ms = time.time_ns() // 1_000_000
    leg: CreditLeg | SettleLeg | None = None
    match command:
        case Transfer() if partition_of(command.to_customer, partitions) != partition:
            leg = credit_leg(command, record.offset, now_ms)
        case CreditLeg():
            leg = settle_leg(command, Reason.NONE, "", 0)
    if leg is not None:
        figures["legs"] += 1
        target = partition_of(leg.customer, partitions)
        key = customer_key(leg.customer)
        value = encode(authority.sign_leg(leg, target))
        return OutboxRow(place, 0, OutboxKind.LEG, key, value, target)
    command_id = command.transfer_id if isinstance(command, SettleLeg) else command.id
    result = Result(command_id, Status.ACCEPTED, published_at_ms=now_ms, partition=partition)
    figures["answered"] += 1
    return OutboxRow(place, 0, OutboxKind.RESULT, record.key, encode(result), partition)
