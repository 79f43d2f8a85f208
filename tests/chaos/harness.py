"""What every chaos scenario shares: its scale, worker handles, a bounded load, the verdict.

The verdict does not trust the load generator's own books: it reads back what is on the
command topic and classifies each record the way a worker does (a saga leg, a record for
the DLQ, or a command that must have a result), then requires

1. every command on the topic, and every command the broker acknowledged, to have a
   result, one distinct result per command id (identical re-sends are allowed: readers
   deduplicate), and every DLQ-bound record its dead letter;
2. the cups' balances to equal a pure-ledger replay of the command topic;
3. ``smallcups reconcile`` (the CLI, in a child process) to exit 0.

Its one-line figure goes to FIGURES, which the conftest prints at the end of the run.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
from aiokafka.errors import KafkaError

from engine.admin.answers import answer_of
from engine.core.batch import routed
from engine.core.config import Config, to_environ
from engine.core.decoding import decode_command
from engine.core.keyfiles import load_authority
from engine.core.messages import LEG_TYPES, Command, DeadLetter, Reason, Undecodable, result_decoder
from engine.core.records import Position
from engine.kafka.client import Client
from loadtest.system import System
from loadtest.workers import WorkerProcess
from loadtest.workload import Workload, WorkloadShape
from shards.cup_admin import CupKind
from shards.cups import close_cups, open_cups
from tests.chaos.proxy import FaultProxy
from tests.integration.system import cup_balances, input_places, read_topic, replay

FIGURES: list[str] = []
TICK_SECONDS: Final = 0.1
SETTLE_POLL_SECONDS: Final = 2.0
RECONCILE_TIMEOUT_SECONDS: Final = 120.0
HTTP_TIMEOUT_SECONDS: Final = 3.0
FLUSH_TIMEOUT_SECONDS: Final = 60.0
LOOPBACK_HEX: Final = "0100007F"
"""127.0.0.1 as /proc/net/tcp writes it (little-endian hex)."""
WORKER_REQUEST_TIMEOUT_MS: Final = 15_000
"""Workers' Kafka request timeout: above the session timeout (a rebalance waits for a
zombie that long), short enough that an outage outlives it and batches expire."""


@dataclass(frozen=True, slots=True)
class Scale:
    """How hard a run pushes: ``make test`` runs SHORT, ``make chaos`` runs LONG."""

    name: str
    load_seconds: float
    rate_per_second: int
    customers: int
    kills: int
    settle_seconds: float


SHORT: Final = Scale("short", load_seconds=15.0, rate_per_second=300, customers=300, kills=10,
                     settle_seconds=180.0)  # fmt: skip
LONG: Final = Scale("long", load_seconds=90.0, rate_per_second=500, customers=2_000, kills=30,
                    settle_seconds=300.0)  # fmt: skip


def scale() -> Scale:
    """SMALLCUPS_CHAOS_SCALE=long (``make chaos``) or short (the default, ``make test``)."""
    chosen = os.environ.get("SMALLCUPS_CHAOS_SCALE", "short")
    if chosen not in ("short", "long"):
        raise ValueError(f"SMALLCUPS_CHAOS_SCALE is short or long, not {chosen!r}")
    return LONG if chosen == "long" else SHORT


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def connected_ports(pid: int, remote_port: int) -> set[int]:
    """The source ports of process ``pid``'s TCP connections to 127.0.0.1:``remote_port``.

    Read from /proc: the process's socket inodes (its file descriptors), matched against
    the IPv4 TCP table, whose addresses are hex (``0100007F:1F90`` is 127.0.0.1:8080).
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    remote = f"{LOOPBACK_HEX}:{remote_port:04X}"
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] == remote and fields[9] in inodes:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass(slots=True)
class Worker:
    process: WorkerProcess
    metrics_port: int

    async def get(self, path: str) -> tuple[int, str]:
        """(HTTP status, body) of GET ``path`` on the worker's health server; 0 if silent."""
        try:
            async with asyncio.timeout(HTTP_TIMEOUT_SECONDS):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.metrics_port)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                raw = await reader.read()
                writer.close()
        except (OSError, TimeoutError):
            return 0, ""
        head, _, body = raw.decode("utf-8", "replace").partition("\r\n\r\n")
        parts = head.split(" ", 2)
        return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), body

    async def metric(self, name: str) -> float:
        """The sum of every sample of ``name`` on /metrics (0 when absent)."""
        _, body = await self.get("/metrics")
        total = 0.0
        for line in body.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


@dataclass
class ChaosSystem:
    system: System
    direct: Config
    kafka_proxy: FaultProxy | None
    """In front of the one broker's proxied listener; None on a several-broker stack,
    whose workers bootstrap from every broker directly."""
    postgres_proxy: FaultProxy
    mariadb_proxy: FaultProxy
    faults: int = 0
    workers: list[Worker] = field(default_factory=list)

    @property
    def config(self) -> Config:
        return self.system.config

    @property
    def kafka_faults(self) -> FaultProxy:
        """The broker's proxy, for the scenarios that break the workers' Kafka traffic."""
        assert self.kafka_proxy is not None, "this chaos stack has no Kafka proxy"
        return self.kafka_proxy

    @property
    def worker_bootstrap(self) -> str:
        if self.kafka_proxy is None:
            return self.direct.kafka.bootstrap_servers
        return f"127.0.0.1:{self.kafka_proxy.listen_port}"

    def start_worker(self, request_timeout_ms: int = WORKER_REQUEST_TIMEOUT_MS) -> Worker:
        """A ``smallcups worker`` reaching the broker (or every broker, when there is no
        Kafka proxy) and the cups through the proxies."""
        port = free_port()
        env = {
            "SMALLCUPS_KAFKA_BOOTSTRAP_SERVERS": self.worker_bootstrap,
            "SMALLCUPS_WORKER_METRICS_PORT": str(port),
            "SMALLCUPS_KAFKA_REQUEST_TIMEOUT_MS": str(request_timeout_ms),
        }
        worker = Worker(self.system.start_worker(env), port)
        self.workers.append(worker)
        return worker

    def cup_proxy(self, kind: CupKind) -> FaultProxy:
        return self.mariadb_proxy if kind is CupKind.MYSQL else self.postgres_proxy

    def clear_faults(self) -> None:
        """Every proxy passes everything again."""
        for proxy in (self.kafka_proxy, self.postgres_proxy, self.mariadb_proxy):
            if proxy is not None:
                proxy.clear()

    def fault(self, count: int = 1) -> None:
        self.faults += count

    def logs(self) -> str:
        return self.system.worker_logs()


class Load:
    """A seeded workload published at a bounded rate, for a bounded time, in the background.

    Each command is published on its own (one delivery future each) so that the
    commands the broker acknowledged are known exactly.
    """

    def __init__(self, chaos: ChaosSystem, run_scale: Scale, *, cross_percent: int = 20):
        shape = WorkloadShape(
            customers=run_scale.customers,
            partitions=chaos.config.kafka.partitions,
            cross_share_percent=cross_percent,
            seed=int.from_bytes(os.urandom(4), "big"),
        )
        self.workload = Workload(shape)
        self.scale = run_scale
        self.client = Client(chaos.config.kafka)
        self.acked: set[str] = set()
        self.attempted = 0
        self.errors = 0
        self._deliveries: list[asyncio.Future[object]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Load:
        await self.client.start(results=False)
        await self.publish(list(self.workload.opening()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await self.client.close()

    def start(self, seconds: float | None = None) -> None:
        """Publish transfers, deposits and withdrawals in the background."""
        self._task = asyncio.create_task(self._run(seconds or self.scale.load_seconds))

    async def wait(self) -> None:
        """Wait for the background load to end, then (bounded) for the broker's acks."""
        if self._task is not None:
            await self._task
        pending = [d for d in self._deliveries if not d.done()]
        if pending:
            await asyncio.wait(pending, timeout=FLUSH_TIMEOUT_SECONDS)

    async def publish(self, commands: Sequence[Command]) -> None:
        for command in commands:
            self.attempted += 1
            try:
                delivery = await self.client.publish(command)
            except KafkaError:
                self.errors += 1
                continue
            self._deliveries.append(delivery)
            delivery.add_done_callback(functools.partial(self._delivered, command.id))

    async def _run(self, seconds: float) -> None:
        per_tick = max(1, int(self.scale.rate_per_second * TICK_SECONDS))
        deadline = time.monotonic() + seconds
        for _ in range(int(seconds / TICK_SECONDS) + 1):
            if time.monotonic() >= deadline:
                return
            started = time.monotonic()
            await self.publish([self.workload.next_command() for _ in range(per_tick)])
            await asyncio.sleep(max(0.0, TICK_SECONDS - (time.monotonic() - started)))

    def _delivered(self, command_id: str, delivery: asyncio.Future[object]) -> None:
        if delivery.cancelled() or delivery.exception() is not None:
            self.errors += 1
        else:
            self.acked.add(command_id)


@dataclass(frozen=True, slots=True)
class Verdict:
    scenario: str
    published: int
    results: int
    dead_letters: int
    faults: int
    duplicates: int
    lost: int
    resent: int
    findings: tuple[str, ...]
    forged: int = 0
    """Dead letters of legs no worker made (forged_leg)."""

    def line(self) -> str:
        return (
            f"chaos {self.scenario} [{scale().name}]: commands published {self.published}, "
            f"results {self.results}, DLQ {self.dead_letters} (forged legs {self.forged}), "
            f"faults injected {self.faults}, "
            f"duplicates found {self.duplicates}, lost {self.lost} "
            f"(identical results re-sent {self.resent})"
        )


@dataclass(slots=True)
class _Seen:
    command_ids: set[str] = field(default_factory=set)
    dead_offsets: set[tuple[str, int, int]] = field(default_factory=set)
    answers: dict[str, set[bytes]] = field(default_factory=lambda: defaultdict(set))
    result_records: int = 0
    letters: set[tuple[str, int, int]] = field(default_factory=set)
    forged: int = 0
    records: list[Any] = field(default_factory=list)

    def missing(self, acked: set[str]) -> list[str]:
        ids = sorted((self.command_ids | acked) - self.answers.keys())
        dead = sorted(self.dead_offsets - self.letters)
        return [f"no result for {i}" for i in ids] + [f"no dead letter for {d}" for d in dead]


async def _read_back(chaos: ChaosSystem) -> _Seen:
    kafka = chaos.config.kafka
    bytes_max = chaos.config.worker.message_bytes_max
    records = await read_topic(kafka, kafka.commands_topic)
    seen = _Seen(records=records + await read_topic(kafka, kafka.internal_topic))
    for record in seen.records:
        value = record.value or b""
        internal = record.topic == kafka.internal_topic
        parsed = (
            Undecodable("", "")
            if len(value) > bytes_max
            else routed(decode_command(value), internal)
        )
        if isinstance(parsed, Undecodable):
            seen.dead_offsets.add((record.topic, record.partition, record.offset))
        elif not isinstance(parsed, LEG_TYPES):
            seen.command_ids.add(parsed.id)
    for record in await read_topic(kafka, kafka.results_topic):
        result = result_decoder.decode(record.value)
        if result.reason is not Reason.DUPLICATE_CONFLICT:
            seen.result_records += 1
            seen.answers[result.command_id].add(answer_of(result))
    for record in await read_topic(kafka, kafka.dlq_topic):
        letter = msgspec.msgpack.decode(record.value, type=DeadLetter)
        seen.letters.add((letter.topic, letter.partition, letter.offset))
        seen.forged += letter.reason == "forged_leg"
    return seen


async def verdict(chaos: ChaosSystem, scenario: str, acked: set[str]) -> Verdict:
    """Wait (bounded) until everything is answered, stop the workers, judge, record."""
    settle_seconds = scale().settle_seconds
    deadline = time.monotonic() + settle_seconds
    for _ in range(int(settle_seconds / SETTLE_POLL_SECONDS) + 1):
        seen = await _read_back(chaos)
        if not seen.missing(acked) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(SETTLE_POLL_SECONDS)
    await asyncio.to_thread(chaos.system.stop_all)
    # Read everything again now that no worker runs: a saga leg appended after the
    # commands topic was read above, and applied before its result was read, would be
    # in the cups but not in the replay.
    seen = await _read_back(chaos)
    findings = seen.missing(acked)
    duplicates = sum(len(v) - 1 for v in seen.answers.values())
    findings += [f"{i}: {len(v)} different results" for i, v in seen.answers.items() if len(v) > 1]
    balances = await cup_balances(chaos.system)
    bytes_max = chaos.config.worker.message_bytes_max
    positions = await _positions(chaos)
    kafka = chaos.config.kafka
    replayed = [
        r
        for r in seen.records
        if r.value is not None
        and len(r.value) <= bytes_max
        and r.offset
        < positions.get(r.partition, Position(0, 0)).of(r.topic == kafka.internal_topic)
    ]
    expected = replay(
        replayed,
        kafka.partitions,
        load_authority(chaos.config),
        kafka.internal_topic,
        await input_places(chaos.config),
    )
    wrong = sorted(
        k for k in balances.keys() | expected.keys() if balances.get(k) != expected.get(k)
    )
    duplicates += len(wrong)
    findings += [f"balance of {k}: cup {balances.get(k)}, replay {expected.get(k)}" for k in wrong]
    reconciled, applied_twice, report = await reconcile_cli(chaos.config)
    duplicates += applied_twice
    if not reconciled:
        findings.append(f"smallcups reconcile failed: {report}")
    figures = Verdict(
        scenario,
        published=len(seen.command_ids) + len(seen.dead_offsets),
        results=len(seen.answers),
        dead_letters=len(seen.letters),
        faults=chaos.faults,
        duplicates=duplicates,
        lost=len(seen.missing(acked)),
        resent=seen.result_records - len(seen.answers),
        findings=tuple(findings[:20]),
        forged=seen.forged,
    )
    FIGURES.append(figures.line())
    print(figures.line())
    return figures


async def _positions(chaos: ChaosSystem) -> dict[int, Position]:
    """The cups' positions per partition (commands and internal topic): what the balances
    must be a replay of."""
    shard_map = chaos.system.shard_map
    stores = await open_cups(shard_map, chaos.config.shards)
    try:
        claims = await asyncio.gather(
            *(s.states(shard_map.partitions_of(cup)) for cup, s in stores.items())
        )
    finally:
        await close_cups(stores)
    return {p: claim.position for part in claims for p, claim in part.items()}


def assert_clean(figures: Verdict, chaos: ChaosSystem, forged: int = 0) -> None:
    """Nothing lost, nothing applied twice, reconcile clean, and exactly ``forged`` legs
    refused as forged (a real leg, re-sent after a crash, is never taken for one)."""
    assert figures.forged == forged, (figures.line(), chaos.logs()[-4000:])
    assert figures.duplicates == 0, (figures.findings, chaos.logs()[-4000:])
    assert figures.lost == 0, (figures.findings, chaos.logs()[-4000:])
    assert not figures.findings, figures.findings
    assert figures.published > 0


async def reconcile_cli(config: Config) -> tuple[bool, int, str]:
    """Run ``smallcups reconcile --json``: (exit 0, commands applied twice, its output)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli",
        "reconcile",
        "--json",
        env={**os.environ, **to_environ(config)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(RECONCILE_TIMEOUT_SECONDS):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return False, 0, "reconcile timed out"
    text = output.decode("utf-8", "replace")
    try:
        document = msgspec.json.decode(text.strip().splitlines()[-1])
    except (msgspec.DecodeError, IndexError):
        return False, 0, text[-2000:]
    twice = int(document.get("counts", {}).get("applied_once_problems", 0))
    return process.returncode == 0 and bool(document.get("ok")), twice, text[-2000:]
