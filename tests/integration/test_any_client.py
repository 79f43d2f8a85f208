"""Clients that are not aiokafka, on the real stack: librdkafka (confluent-kafka) with its
default partitioner (CRC32: most commands land in the wrong partition and are forwarded)
and with murmur2, in msgpack and in JSON, and a plain Java producer run with the
broker's own client jars. Every command gets exactly one final result, in the encoding
it came in; balances equal the model; reconcile is clean.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Producer

from deploy.local.kafka_jars import libs_path
from engine.admin.reconcile import reconcile
from engine.core.config import Config
from engine.core.decoding import decode_result
from engine.core.keyfiles import write_secret
from engine.core.messages import (
    Command,
    Deposit,
    OpenAccount,
    Result,
    Status,
    Transfer,
    Withdraw,
    encode,
    encode_json,
    issued,
)
from engine.core.routing import customer_key, partition_of
from loadtest.system import System, drop_system, make_system
from tests.integration.system import (
    cup_balances,
    java_properties,
    librdkafka_settings,
    read_topic,
)

pytestmark = pytest.mark.integration

PARTITIONS = 8
CUSTOMERS = 40
WAIT_SECONDS = 120.0
JAVA_SOURCE = Path(__file__).resolve().parents[1] / "clients" / "JsonProducer.java"
Encode = Callable[[Command], bytes]


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=PARTITIONS, cups=2)
    made.start_worker()
    yield made
    await drop_system(stack, made)


def _phases(prefix: str) -> tuple[list[Command], list[Command]]:
    """Accounts opened and funded; then each customer pays the next 100 (mostly across
    partitions) and withdraws 50: every balance ends at 950."""
    customers = [1_000 + n for n in range(CUSTOMERS)]
    now_ms = time.time_ns() // 1_000_000
    opening: list[Command] = []
    for customer in customers:
        opening.append(issued(OpenAccount(f"{prefix}-o-{customer}", customer, 1, "EUR"), now_ms))
        opening.append(issued(Deposit(f"{prefix}-d-{customer}", customer, 1, 1_000, "EUR"), now_ms))
    moving: list[Command] = []
    for index, customer in enumerate(customers):
        payee = customers[(index + 1) % len(customers)]
        transfer = Transfer(f"{prefix}-t-{customer}", customer, 1, payee, 1, 100, "EUR")
        moving.append(issued(transfer, now_ms))
        moving.append(issued(Withdraw(f"{prefix}-w-{customer}", customer, 1, 50, "EUR"), now_ms))
    return opening, moving


async def _results(system: System, ids: set[str]) -> dict[str, list[tuple[Result, bytes]]]:
    """Every result record of ``ids`` (waiting until each has one), with its raw bytes."""
    kafka = system.config.kafka
    found: dict[str, list[tuple[Result, bytes]]] = defaultdict(list)
    for _ in range(int(WAIT_SECONDS)):
        found.clear()
        for record in await read_topic(kafka, kafka.results_topic):
            result = decode_result(record.value)
            if isinstance(result, Result) and result.command_id in ids:
                found[result.command_id].append((result, record.value))
        if ids <= found.keys():
            return found
        await asyncio.sleep(1.0)
    raise AssertionError(f"no result for {sorted(ids - found.keys())[:10]}")


async def _run(
    system: System, publish: Callable[[Sequence[Command]], None], json: bool
) -> dict[str, list[tuple[Result, bytes]]]:
    """Both phases through ``publish``; checks one final result per command, in the
    command's encoding, and the books."""
    answers: dict[str, list[tuple[Result, bytes]]] = {}
    for phase in _phases("json" if json else "mp"):
        publish(phase)
        answers.update(await _results(system, {c.id for c in phase}))
    for command_id, results in answers.items():
        assert len({r for r, _ in results}) == 1, f"{command_id}: {results}"
        result, raw = results[0]
        assert result.status is Status.ACCEPTED, result
        assert raw.startswith(b"{") == json, f"{command_id} answered in another encoding"
    balances = {(c, a): b for (_, c, a), b in (await cup_balances(system)).items() if c}
    assert balances == {(1_000 + n, 1): 950 for n in range(CUSTOMERS)}
    report = await reconcile(system.config, topics=True)
    assert report.ok, dict(report.problems)
    return answers


def _librdkafka(
    system: System, encoder: Encode, **settings: str
) -> Callable[[Sequence[Command]], None]:
    def publish(commands: Sequence[Command]) -> None:
        producer = Producer({**librdkafka_settings(system.config), **settings})
        topic = system.config.kafka.commands_topic
        for command in commands:
            producer.produce(topic, encoder(command), key=customer_key(command.customer))
        assert producer.flush(30) == 0, "every command acknowledged"

    return publish


def _forwarded(answers: dict[str, list[tuple[Result, bytes]]]) -> int:
    return sum(1 for results in answers.values() if results[0][0].forwarded_from >= 0)


@pytest.mark.parametrize("json", [False, True], ids=["msgpack", "json"])
async def test_librdkafka_with_its_default_partitioner(system: System, json: bool) -> None:
    """consistent_random (CRC32) puts most commands in the wrong partition: each is
    forwarded once to its customer's and answered from there, saying where it came from."""
    answers = await _run(system, _librdkafka(system, encode_json if json else encode), json)
    forwarded = _forwarded(answers)
    assert forwarded > len(answers) // 2, f"only {forwarded} of {len(answers)} forwarded"
    for results in answers.values():
        result = results[0][0]
        assert result.partition == partition_of(int(result.command_id.split("-")[2]), PARTITIONS)


@pytest.mark.parametrize("json", [False, True], ids=["msgpack", "json"])
async def test_librdkafka_with_murmur2(system: System, json: bool) -> None:
    publish = _librdkafka(system, encode_json if json else encode, partitioner="murmur2_random")
    assert _forwarded(await _run(system, publish, json)) == 0


def _java(system: System, build: Path) -> Callable[[Sequence[Command]], None]:
    libs = libs_path(system.config.stack.cache_path)
    classpath = f"{build}:{libs}/*"
    javac = shutil.which("javac")
    assert javac is not None, "the JDK's javac"
    subprocess.run(
        [javac, "-cp", f"{libs}/*", "-d", str(build), str(JAVA_SOURCE)],
        check=True,
        capture_output=True,
        timeout=120,
    )

    properties = build / "client.properties"
    write_secret(properties, java_properties(system.config), replace=True)

    def publish(commands: Sequence[Command]) -> None:
        lines = "".join(
            f"{command.customer}\t{encode_json(command).decode()}\n" for command in commands
        )
        done = subprocess.run(
            [
                "java",
                "-cp",
                classpath,
                "JsonProducer",
                str(properties),
                system.config.kafka.commands_topic,
            ],
            input=lines,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == f"published {len(commands)}"

    return publish


async def test_a_java_producer_with_the_kafka_clients_defaults(
    system: System, tmp_path: Path
) -> None:
    """Java's default partitioner is murmur2 of the key: nothing is forwarded."""
    assert _forwarded(await _run(system, _java(system, tmp_path / "classes"), json=True)) == 0


async def test_a_command_corrected_after_a_rejection_is_one_command(system: System) -> None:
    """A producer's first try is rejected from the record alone (it changed nothing); the
    same id sent again, right, is applied: reconcile counts one command, not a conflict."""
    customer = 77
    bad = {"type": "deposit", "id": "fix-1", "customer": customer, "account": 1, "amount": 0}
    publish = _librdkafka(system, encode, partitioner="murmur2_random")
    now_ms = time.time_ns() // 1_000_000
    publish([issued(OpenAccount("fix-o", customer, 1, "EUR"), now_ms)])
    await _results(system, {"fix-o"})
    producer = Producer({**librdkafka_settings(system.config), "partitioner": "murmur2_random"})
    producer.produce(
        system.config.kafka.commands_topic,
        msgspec.json.encode({**bad, "currency": "EUR"}),
        key=customer_key(customer),
    )
    assert producer.flush(30) == 0
    publish([issued(Deposit("fix-1", customer, 1, 5, "EUR"), now_ms)])
    results = (await _results(system, {"fix-1"}))["fix-1"]
    for _ in range(int(WAIT_SECONDS)):
        if len(results) == 2:
            break
        await asyncio.sleep(1.0)
        results = (await _results(system, {"fix-1"}))["fix-1"]
    assert sorted(r.status for r, _ in results) == [Status.ACCEPTED, Status.REJECTED]
    report = await reconcile(system.config, topics=True)
    assert report.ok, dict(report.problems)
    assert report.counts["retried_after_rejection"] == 1
