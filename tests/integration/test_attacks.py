"""Attacks at the wire level, on the real stack: a stranger with a plain Kafka producer.

Every hostile record is hand-made msgpack (or JSON) sent by a bare aiokafka producer, as
any program allowed to write ``<prefix>.commands`` could; no ``engine.kafka.client``. After
each attack every balance is what the honest commands alone make it, reconcile finds the
books clean, and a valid command sent after the attack on the same key gets its result.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from deploy.local.prometheus_throwaway import free_port
from deploy.local.roles import Role, as_role
from engine.admin.reconcile import reconcile
from engine.core.authority import fresh_authority
from engine.core.config import Config, to_environ
from engine.core.decoding import decode_command, decode_result
from engine.core.messages import (
    CreditLeg,
    DeadLetter,
    Deposit,
    FreezeAccount,
    OpenAccount,
    Reason,
    Result,
    SetCreditLimit,
    Status,
    Transfer,
    Undecodable,
    UnfreezeAccount,
    Withdraw,
    encode,
    issued,
)
from engine.core.routing import customer_key, partition_of
from engine.core.saga import credit_leg, settle_leg
from engine.kafka.client import Client
from engine.kafka.connection import connection
from loadtest.system import System, drop_system, make_system
from tests.integration.system import cup_balances, read_topic

pytestmark = pytest.mark.integration

PARTITIONS = 8
WAIT_SECONDS = 90.0
HUGE = 10**15
Outcome = tuple[str, str]
"""("accepted" | "rejected" | "dlq", reason)."""


def _customers(count: int) -> list[int]:
    """``count`` customers of distinct partitions."""
    found: dict[int, int] = {}
    for customer in range(1, 10_000):
        found.setdefault(partition_of(customer, PARTITIONS), customer)
        if len(found) == count:
            break
    return list(found.values())


A, B, C, D = _customers(4)


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=PARTITIONS, cups=1, mysql_cups=1)
    yield made
    await drop_system(stack, made)


class Sent(NamedTuple):
    topic: str
    partition: int
    offset: int
    command_id: str
    """The id a worker reads in the record ("" when it cannot read one)."""


class Wire:
    """A bare producer as one of the stack's users (``upstream`` on the commands topic by
    default), and what became of each record it sent."""

    def __init__(self, system: System, role: Role = Role.UPSTREAM, internal: bool = False):
        self.kafka = system.config.kafka
        self.topic = self.kafka.internal_topic if internal else self.kafka.commands_topic
        kafka = as_role(system.config, role).kafka
        self.producer = AIOKafkaProducer(**connection(kafka))

    async def __aenter__(self) -> Wire:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(self, value: bytes | None, customer: int, partition: int | None = None) -> Sent:
        """Send a record keyed by ``customer`` (to ``partition`` if given)."""
        sent = await self.producer.send_and_wait(
            self.topic, value, key=customer_key(customer), partition=partition
        )
        command = decode_command(value or b"")
        command_id = "" if isinstance(command, Undecodable) else command.id
        return Sent(self.topic, sent.partition, sent.offset, command_id)

    async def command(self, command: Any) -> Sent:
        """Send a command as the Python client would: stamped with its issue time."""
        return await self.send(encode(issued(command, time.time_ns() // 10**6)), command.customer)

    async def outcomes(self, wanted: list[Sent]) -> dict[Sent, Outcome]:
        """The outcome of each record sent, waiting for all of them: its dead letter (by
        topic, partition and offset) or its result (by partition, offset and id)."""
        found: dict[tuple[Any, ...], Outcome] = {}
        for _ in range(int(WAIT_SECONDS)):
            found = await self._outcomes()
            keys = {where: _key(found, where) for where in wanted}
            if all(keys.values()):
                return {where: found[key] for where, key in keys.items() if key}
            await asyncio.sleep(1.0)
        missing = [where for where in wanted if not _key(found, where)]
        raise AssertionError(f"no outcome for records {missing}")

    async def _outcomes(self) -> dict[tuple[Any, ...], Outcome]:
        found: dict[tuple[Any, ...], Outcome] = {}
        for record in await read_topic(self.kafka, self.kafka.results_topic):
            result = decode_result(record.value)
            if isinstance(result, Result) and result.status is not Status.PENDING:
                where = ("result", result.partition, result.offset, result.command_id)
                found[where] = (str(result.status), str(result.reason))
        for record in await read_topic(self.kafka, self.kafka.dlq_topic):
            letter = msgspec.msgpack.decode(record.value, type=DeadLetter)
            found[("dlq", letter.topic, letter.partition, letter.offset)] = ("dlq", letter.reason)
        return found

    async def expect(self, sent: dict[str, tuple[Sent, Outcome]]) -> None:
        """Every named record got its expected outcome."""
        got = await self.outcomes([where for where, _ in sent.values()])
        wrong = {
            name: (expected, got[where])
            for name, (where, expected) in sent.items()
            if got[where] != expected
        }
        assert not wrong, wrong


def _key(found: dict[tuple[Any, ...], Outcome], sent: Sent) -> tuple[Any, ...] | None:
    for key in (
        ("dlq", sent.topic, sent.partition, sent.offset),
        ("result", sent.partition, sent.offset, sent.command_id),
    ):
        if key in found:
            return key
    return None


ACCEPTED: Outcome = ("accepted", "")
FORGED: Outcome = ("dlq", "forged_leg")
MISROUTED: Outcome = ("dlq", "misrouted")


async def _balances(system: System) -> dict[tuple[int, int], int]:
    return {(c, a): b for (_, c, a), b in (await cup_balances(system)).items() if c != 0}


async def _assert_clean(system: System) -> None:
    report = await reconcile(system.config, topics=True)
    assert report.ok, dict(report.problems)


def _metric(port: int, name: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(name)
    }


async def test_forged_legs_mint_nothing(system: System) -> None:
    """Hand-made settle and credit legs (unsigned, signed with a stranger's key, or a real
    leg copied to another partition) go to the DLQ and move nothing."""
    port = free_port()
    system.start_worker({"SMALLCUPS_WORKER_METRICS_PORT": str(port)})
    stranger, _ = fresh_authority(system.config.kafka.commands_topic, key_id="local-1")
    inside = Wire(system, Role.WORKER, internal=True)
    async with Wire(system) as wire, inside:
        setup = [
            OpenAccount("o-a", A, 1, "EUR"),
            Deposit("d-a", A, 1, 1_000, "EUR"),
            OpenAccount("o-b", B, 1, "EUR"),
        ]
        await wire.expect({c.id: (await wire.command(c), ACCEPTED) for c in setup})
        ghost = Transfer("ghost", A, 1, B, 1, HUGE, "EUR")
        refund = settle_leg(credit_leg(ghost, 0, 0), Reason.ACCOUNT_CLOSED, "closed", 0)
        credit = credit_leg(Transfer("ghost-2", A, 1, B, 1, HUGE, "EUR"), 1, 0)
        pb = partition_of(B, PARTITIONS)
        real = await wire.command(Transfer("t-1", A, 1, B, 1, 300, "EUR"))
        await wire.expect({"real transfer": (real, ACCEPTED)})
        legs = [
            r
            for r in await read_topic(wire.kafka, wire.kafka.internal_topic)
            if isinstance(decode_command(r.value), CreditLeg)
        ]
        attacks = {  # with a worker's Kafka credentials, without the workers' leg key
            "unsigned refund": await inside.command(refund),
            "refund with a stranger's MAC": await inside.send(
                encode(stranger.sign_leg(refund, partition_of(A, PARTITIONS))), A
            ),
            "unsigned credit": await inside.command(credit),
            "credit with a stranger's MAC": await inside.send(
                encode(stranger.sign_leg(credit, pb)), B
            ),
            "real credit leg copied to another partition": await inside.send(
                legs[0].value, B, partition=(pb + 1) % PARTITIONS
            ),
        }
        misrouted = {  # as upstream: legs are never taken from the commands topic
            "a leg on the commands topic": await wire.command(refund),
            "a real leg copied to the commands topic": await wire.send(
                legs[0].value, B, partition=pb
            ),
        }
        after = [
            Withdraw("w-b", B, 1, 2 * HUGE, "EUR"),
            Deposit("marker-a", A, 1, 1, "EUR"),
            Deposit("marker-b", B, 1, 1, "EUR"),
        ]
        placed = {c.id: await wire.command(c) for c in after}
        await wire.expect(
            {
                **{name: (where, FORGED) for name, where in attacks.items()},
                **{name: (where, MISROUTED) for name, where in misrouted.items()},
                "w-b": (placed["w-b"], ("rejected", "amount_too_large")),
                "marker-a": (placed["marker-a"], ACCEPTED),
                "marker-b": (placed["marker-b"], ACCEPTED),
            }
        )
    assert await _balances(system) == {(A, 1): 701, (B, 1): 301}
    await _assert_clean(system)
    forged = _metric(port, "smallcups_forged_legs_total")
    assert forged['smallcups_forged_legs_total{kind="settle_leg"}'] == 2
    assert forged['smallcups_forged_legs_total{kind="credit_leg"}'] == 3


async def test_a_squatted_leg_id_does_not_block_the_real_transfer(system: System) -> None:
    """A forged ``t-5/credit`` published before the real transfer t-5 (on the internal
    topic, with a worker's Kafka credentials but not its leg key) is dead-lettered and not
    recorded, so the real credit leg is applied and the transfer settles."""
    system.start_worker()
    inside = Wire(system, Role.WORKER, internal=True)
    async with Wire(system) as wire, inside:
        setup = [
            OpenAccount("o-a", A, 1, "EUR"),
            Deposit("d-a", A, 1, 500, "EUR"),
            OpenAccount("o-b", B, 1, "EUR"),
        ]
        await wire.expect({c.id: (await wire.command(c), ACCEPTED) for c in setup})
        transfer = Transfer("t-5", A, 1, B, 1, 200, "EUR")
        squatter = credit_leg(msgspec.structs.replace(transfer, amount=1), 99, 0)
        squatted = await inside.command(squatter)
        real = await wire.command(transfer)
        await wire.expect({"squatter": (squatted, FORGED), "t-5": (real, ACCEPTED)})
    assert await _balances(system) == {(A, 1): 300, (B, 1): 200}
    await _assert_clean(system)


def _risk(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``smallcups risk`` command, with the stack's risk key."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "risk", *args],
        env={**to_environ(system.config), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_credit_is_granted_by_the_risk_authority_only(system: System) -> None:
    """A self-declared limit, an unsigned, a stranger-signed or a tampered grant, and an
    unsigned unfreeze are refused (sent with the risk role's Kafka credentials, but not
    its key), a real grant copied to the commands topic is misrouted; `smallcups risk`
    grants and unfreezes."""
    system.start_worker()
    _, stranger = fresh_authority(system.config.kafka.commands_topic, key_id="local-1")
    declared = msgspec.msgpack.encode(
        {
            "type": "open_account",
            "id": "o-self",
            "customer": C,
            "account": 1,
            "currency": "EUR",
            "credit_limit": HUGE,
        }
    )
    inside = Wire(system, Role.RISK, internal=True)
    async with Wire(system) as wire, inside:
        sent = {
            "self-declared limit": (await wire.send(declared, C), ("rejected", "unknown_field")),
            "open": (await wire.command(OpenAccount("o-c", C, 1, "EUR")), ACCEPTED),
            "borrow": (
                await wire.command(Withdraw("w-1", C, 1, HUGE, "EUR")),
                ("rejected", "insufficient_funds"),
            ),
            "unsigned grant": (
                await inside.command(SetCreditLimit("l-1", C, 1, HUGE)),
                ("rejected", "not_signed"),
            ),
            "stranger's grant": (
                await inside.command(stranger.sign(SetCreditLimit("l-2", C, 1, HUGE))),
                ("rejected", "bad_signature"),
            ),
        }
        await wire.expect(sent)
        granted = _risk(system, "set-credit-limit", f"{C}/1", "500", "--id", "l-real")
        assert granted.returncode == 0, granted.stdout + granted.stderr
        assert '"status":"accepted"' in granted.stdout
        real_grant = next(
            decode_command(r.value)
            for r in await read_topic(wire.kafka, wire.kafka.internal_topic)
            if b"l-real" in r.value
        )
        assert isinstance(real_grant, SetCreditLimit)
        tampered = msgspec.structs.replace(real_grant, id="l-3", credit_limit=HUGE)
        copied = msgspec.structs.replace(real_grant, id="l-4")
        more = {
            "tampered grant": (await inside.command(tampered), ("rejected", "bad_signature")),
            "signed grant on the commands topic": (
                await wire.command(real_grant),
                ("rejected", "misrouted"),
            ),
            "copied grant": (await inside.command(copied), ("rejected", "bad_signature")),
            "borrow 500": (await wire.command(Withdraw("w-2", C, 1, 500, "EUR")), ACCEPTED),
            "borrow 1 more": (
                await wire.command(Withdraw("w-3", C, 1, 1, "EUR")),
                ("rejected", "insufficient_funds"),
            ),
            "freeze": (await wire.command(FreezeAccount("f-1", C, 1)), ACCEPTED),
            "unsigned unfreeze": (
                await inside.command(UnfreezeAccount("u-1", C, 1)),
                ("rejected", "not_signed"),
            ),
            "deposit while frozen": (
                await wire.command(Deposit("d-1", C, 1, 500, "EUR")),
                ("rejected", "account_frozen"),
            ),
        }
        await wire.expect(more)
        unfrozen = _risk(system, "unfreeze", f"{C}/1")
        assert unfrozen.returncode == 0, unfrozen.stdout + unfrozen.stderr
        repaid = await wire.command(Deposit("d-2", C, 1, 500, "EUR"))
        await wire.expect({"repay": (repaid, ACCEPTED)})
    assert await _balances(system) == {(C, 1): 0}
    await _assert_clean(system)


def _pairs(*pairs: tuple[str, object]) -> bytes:
    return bytes([0x80 | len(pairs)]) + b"".join(
        msgspec.msgpack.encode(k) + msgspec.msgpack.encode(v) for k, v in pairs
    )


async def test_poison_records_do_not_stop_a_partition(system: System) -> None:
    """A 1 KB record nested a thousand deep in a field (msgpack and JSON), a key named
    twice, a map header that claims four billion entries: each is answered, and the
    deposit sent after each on the same key is accepted."""
    system.start_worker()
    deposit = [("type", "deposit"), ("id", "p-1"), ("customer", D), ("account", 1)]
    poison = {
        "1 KB nested in a field": (
            bytes([0x85])
            + _pairs(*deposit)[1:]
            + msgspec.msgpack.encode("amount")
            + b"\x91" * 1_000
            + b"\x01",
            ("dlq", "undecodable"),
        ),
        "JSON nested in a field": (
            b'{"type":"deposit","id":"p-2","customer":%d,"amount":' % D
            + b"[" * 1_000
            + b"1"
            + b"]" * 1_000
            + b"}",
            ("dlq", "undecodable"),
        ),
        "amount named twice": (
            _pairs(
                *deposit[:3], ("account", 1), ("amount", 5), ("currency", "EUR"), ("amount", 999)
            ),
            ("rejected", "duplicate_field"),
        ),
        "four billion entries claimed": (b"\xdf\xff\xff\xff\xff", ("dlq", "undecodable")),
        "a leg nested deep": (
            _pairs(("type", "settle_leg"), ("id", "x/settle"), ("customer", D))[:-1]
            + b"\x91" * 2_000,
            ("dlq", "undecodable"),
        ),
    }
    async with Wire(system) as wire:
        opened = await wire.command(OpenAccount("o-d", D, 1, "EUR"))
        sent = {"open": (opened, ACCEPTED)}
        for index, (name, (value, expected)) in enumerate(poison.items()):
            sent[name] = (await wire.send(value, D), expected)
            marker = Deposit(f"after-{index}", D, 1, 10, "EUR")
            sent[f"deposit after {name}"] = (await wire.command(marker), ACCEPTED)
        await wire.expect(sent)
    assert await _balances(system) == {(D, 1): 10 * len(poison)}
    assert all(worker.alive() for worker in system.workers)
    await _assert_clean(system)


async def _publish_results(system: System, records: list[tuple[int, bytes | None]]) -> None:
    kafka = system.config.kafka
    producer = AIOKafkaProducer(**connection(kafka))  # the results topic: a worker's right
    await producer.start()
    try:
        for partition, value in records:
            await producer.send_and_wait(
                kafka.results_topic, value, key=b"hostile", partition=partition
            )
    finally:
        await producer.stop()


async def test_a_client_survives_hostile_result_records(system: System) -> None:
    """Tombstones, garbage, deep nesting and a result planted in another partition under
    a waiting command's id: the client skips and counts them, resolves each command by
    its own partition's result, and two customers may use the same id."""
    system.start_worker()
    pa, pb = partition_of(A, PARTITIONS), partition_of(B, PARTITIONS)
    planted = Result("same-1", Status.ACCEPTED, partition=pb, offset=0)
    hostile: list[tuple[int, bytes | None]] = [
        (pa, None),
        (pa, b"\xc1garbage"),
        (pa, b"\x91" * 5_000 + b"\x01"),
        (pa, msgspec.msgpack.encode({"type": "result", "command_id": "same-1", "x": [[[[1]]]]})),
        (pa, encode(planted)),
    ]
    async with Client(system.config.kafka) as client:
        for command in (OpenAccount("o-a", A, 1, "EUR"), OpenAccount("o-b", B, 1, "EUR")):
            assert (await client.submit(command, WAIT_SECONDS)).accepted
        for_a = Deposit("same-1", A, 1, 7, "EUR")
        waiting = client.expect(for_a)
        await _publish_results(system, hostile)
        await asyncio.sleep(1.0)
        assert not waiting.done(), "a result from another partition resolved nothing"
        assert client.skipped_results == len(hostile)
        results = await asyncio.gather(
            client.submit(for_a, WAIT_SECONDS),
            client.submit(Deposit("same-1", B, 1, 9, "EUR"), WAIT_SECONDS),
        )
    assert [r.balances[0].customer for r in results] == [A, B]
    assert [r.balances[0].balance for r in results] == [7, 9]
    report = await reconcile(system.config, topics=True)
    assert report.ok, dict(report.problems)
    assert report.counts["results_well_formed_notices"] == len(hostile)
