"""Hostile records on the real command topic: each answered precisely, nothing else hurt.

Every bad record is sent by a plain Kafka producer (as any upstream app could), keyed
like a real command of one customer, and followed by a valid deposit of that customer:
each bad record must end in the DLQ or in a rejected result with the reason named here,
and every deposit after it must be accepted, so the partition kept flowing. Among them:
records whose shape is the attack (a field nested a thousand deep, a key named twice),
legs and privileged commands, which an upstream app can only put on the commands topic,
where they are misrouted (the proofs behind the internal topic are attacked in
tests/integration/test_attacks.py).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from engine.core.authority import fresh_authority
from engine.core.messages import (
    AMOUNT_MAX,
    BALANCE_MAX,
    Command,
    DeadLetter,
    Deposit,
    OpenAccount,
    Reason,
    SetCreditLimit,
    Status,
    Transfer,
    UnfreezeAccount,
    encode,
    issued,
    result_decoder,
)
from engine.core.routing import customer_key, partition_of
from engine.core.saga import credit_leg, settle_leg
from tests.chaos.conftest import PARTITIONS
from tests.chaos.harness import ChaosSystem, Load, assert_clean, scale, verdict
from tests.integration.system import read_topic, upstream_producer

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

CUSTOMER = 4_242
STRAY = "stray-1"
"""A deposit published to another partition than its customer's: forwarded, accepted."""
MARKER_AMOUNT = 1
POLL_SECONDS = 1.0
WAIT_SECONDS = 120.0
OVERFLOW_ACCOUNT = 2

Expected = tuple[str, str]
"""("dlq", dead letter reason) or ("rejected", Reason value)."""


def _stamped(command: Command) -> bytes:
    """A command as the Python client sends it: stamped with its issue time."""
    return encode(issued(command, time.time_ns() // 1_000_000))


def _deposit(**fields: Any) -> bytes:
    command = {"type": "deposit", "id": "d", "customer": CUSTOMER, "account": 1}
    command["issued_at_ms"] = time.time_ns() // 1_000_000
    return msgspec.msgpack.encode({**command, "amount": 5, "currency": "EUR", **fields})


def _hostile() -> Iterator[tuple[str, bytes | None, Expected]]:
    """(what it is, the record's value, what must become of it)."""
    pack = msgspec.msgpack.encode
    dlq, rejected = "dlq", "rejected"
    yield "random bytes", random.Random(7).randbytes(256), (dlq, "undecodable")
    yield "empty value", b"", (dlq, "undecodable")
    yield "tombstone", None, (dlq, "undecodable")
    yield "JSON, not msgpack", b'{"type":"deposit","id":"j1"}', (dlq, "undecodable")
    truncated = _stamped(Deposit("trunc-1", CUSTOMER, 1, 5, "EUR"))[:-4]
    yield "truncated msgpack", truncated, (dlq, "undecodable")
    yield "msgpack array", pack([1, 2, 3]), (dlq, "undecodable")
    yield "nested 5,000 deep", b"\x91" * 5_000 + b"\x01", (dlq, "undecodable")
    yield "no id", pack({"type": "deposit", "customer": CUSTOMER}), (dlq, "undecodable")
    yield "customer as text", _deposit(id="ct-1", customer="4242"), (dlq, "undecodable")
    envelope_id = pack({"type": "zzz", "id": "x" * 30_000, "customer": CUSTOMER})
    yield "30,000-char id, bad shape", envelope_id, (dlq, "bad_command_id")
    yield "oversized", _deposit(id="big-1", pad="p" * 70_000), (dlq, "message_too_large")
    yield (
        "unknown type",
        pack({"type": "launch", "id": "u-1", "customer": CUSTOMER}),
        (
            rejected,
            Reason.UNKNOWN_COMMAND_TYPE,
        ),
    )
    yield "unknown field", _deposit(id="uf-1", extra=1), (rejected, Reason.UNKNOWN_FIELD)
    yield "amount as text", _deposit(id="at-1", amount="5"), (rejected, Reason.INVALID_FIELD)
    yield "amount as float", _deposit(id="af-1", amount=5.0), (rejected, Reason.INVALID_FIELD)
    yield "currency list", _deposit(id="cl-1", currency=["EUR"]), (rejected, Reason.INVALID_FIELD)
    yield "zero amount", _deposit(id="z-1", amount=0), (rejected, Reason.AMOUNT_NOT_POSITIVE)
    yield "zero amount again", _deposit(id="z-1", amount=0), (rejected, Reason.AMOUNT_NOT_POSITIVE)
    yield "negative", _deposit(id="n-1", amount=-5), (rejected, Reason.AMOUNT_NOT_POSITIVE)
    yield "int64 min", _deposit(id="n-2", amount=-(2**63)), (rejected, Reason.AMOUNT_NOT_POSITIVE)
    yield "over the max", _deposit(id="o-1", amount=10**15 + 1), (rejected, Reason.AMOUNT_TOO_LARGE)
    yield "uint64 max", _deposit(id="o-2", amount=2**64 - 1), (rejected, Reason.AMOUNT_TOO_LARGE)
    yield "customer 0", _deposit(id="c-0", customer=0), (rejected, Reason.BAD_CUSTOMER_ID)
    yield "customer -1", _deposit(id="c-1", customer=-1), (rejected, Reason.BAD_CUSTOMER_ID)
    yield (
        "customer 2^64-1",
        _deposit(id="c-2", customer=2**64 - 1),
        (
            rejected,
            Reason.BAD_CUSTOMER_ID,
        ),
    )
    yield "account 0", _deposit(id="a-0", account=0), (rejected, Reason.BAD_ACCOUNT_NUMBER)
    yield "account 2^40", _deposit(id="a-1", account=2**40), (rejected, Reason.BAD_ACCOUNT_NUMBER)
    yield "empty id", _deposit(id=""), (dlq, "bad_command_id")
    yield "id with a space", _deposit(id="a b"), (dlq, "bad_command_id")
    yield "30,000-char id", _deposit(id="y" * 30_000), (dlq, "bad_command_id")
    yield "currency XXX", _deposit(id="cu-1", currency="XXX"), (rejected, Reason.UNKNOWN_CURRENCY)
    yield "currency €€€", _deposit(id="cu-2", currency="€€€"), (rejected, Reason.UNKNOWN_CURRENCY)
    yield (
        "currency 20,000 chars",
        _deposit(id="cu-3", currency="E" * 20_000),
        (
            rejected,
            Reason.UNKNOWN_CURRENCY,
        ),
    )
    bad_utf8 = _deposit(id="u8-1", currency="EU\u00e9").replace("\u00e9".encode(), b"\xff\xfe")
    yield "currency not UTF-8", bad_utf8, (rejected, Reason.INVALID_FIELD)
    yield (
        "id not UTF-8",
        _deposit(id="i\u00e9").replace("\u00e9".encode(), b"\xff\xfe"),
        (
            dlq,
            "undecodable",
        ),
    )
    yield from _hostile_structure(pack)
    yield from _forgeries()
    yield "first of a pair", _deposit(id="dup-1", amount=5), ("accepted", "")
    yield (
        "same id, other amount",
        _deposit(id="dup-1", amount=7),
        (
            rejected,
            Reason.DUPLICATE_CONFLICT,
        ),
    )


def _pairs(*pairs: tuple[str, object]) -> bytes:
    """A msgpack map written key by key, so a key may appear twice."""
    return bytes([0x80 | len(pairs)]) + b"".join(
        msgspec.msgpack.encode(k) + msgspec.msgpack.encode(v) for k, v in pairs
    )


def _hostile_structure(
    pack: Callable[[Any], bytes],
) -> Iterator[tuple[str, bytes | None, Expected]]:
    """Records whose shape is the attack: deep nesting in a field, keys named twice."""
    head = [("type", "deposit"), ("id", "deep-1"), ("customer", CUSTOMER), ("account", 1)]
    deep = bytes([0x85]) + _pairs(*head)[1:] + pack("amount") + b"\x91" * 1_000 + b"\x01"
    yield "1 KB nested in a field", deep, ("dlq", "undecodable")
    json_deep = b'{"type":"deposit","id":"deep-2","customer":%d,"amount":' % CUSTOMER
    yield (
        "JSON nested in a field",
        json_deep + b"[" * 1_000 + b"1" + b"]" * 1_000 + b"}",
        (
            "dlq",
            "undecodable",
        ),
    )
    twice = _pairs(*head[:3], ("account", 1), ("amount", 5), ("currency", "EUR"), ("amount", 999))
    yield "amount named twice", twice, ("rejected", Reason.DUPLICATE_FIELD)
    customer_twice = _pairs(*head[:3], ("customer", CUSTOMER + 1))
    yield "customer named twice", customer_twice, ("dlq", "undecodable")
    yield "a map claiming 4 billion entries", b"\xdf\xff\xff\xff\xff", ("dlq", "undecodable")


def _forgeries() -> Iterator[tuple[str, bytes | None, Expected]]:
    """Legs and privileged commands, signed or not: off their topic, each is misrouted."""
    forged, refused = ("dlq", "misrouted"), "rejected"
    stranger, stranger_risk = fresh_authority("anything", key_id="local-1")
    ghost = Transfer("ghost", CUSTOMER, 1, CUSTOMER + 1, 1, AMOUNT_MAX, "EUR")
    refund = settle_leg(credit_leg(ghost, 0, 0), Reason.ACCOUNT_CLOSED, "closed", 0)
    yield "unsigned settle leg (a refund of 10^15)", encode(refund), forged
    credit = credit_leg(Transfer("ghost-2", CUSTOMER + 1, 1, CUSTOMER, 1, AMOUNT_MAX, "EUR"), 0, 0)
    yield "unsigned credit leg of 10^15", encode(credit), forged
    yield "credit leg with a stranger's MAC", encode(stranger.sign_leg(credit, 0)), forged
    long_detail = msgspec.structs.replace(refund, detail="d" * 5_000)
    yield "settle leg with a 5,000-char detail", encode(long_detail), forged
    declared = {"type": "open_account", "id": "self-1", "customer": CUSTOMER, "account": 3}
    yield (
        "open_account declaring a credit limit",
        msgspec.msgpack.encode({**declared, "currency": "EUR", "credit_limit": AMOUNT_MAX}),
        (refused, Reason.UNKNOWN_FIELD),
    )
    grant = SetCreditLimit("grant-1", CUSTOMER, 1, AMOUNT_MAX)
    yield "unsigned set_credit_limit", encode(grant), (refused, Reason.MISROUTED)
    yield (
        "set_credit_limit signed by a stranger",
        encode(stranger_risk.sign(msgspec.structs.replace(grant, id="grant-2"))),
        (refused, Reason.MISROUTED),
    )
    unfreeze = UnfreezeAccount("unfreeze-1", CUSTOMER, 1)
    yield "unsigned unfreeze_account", encode(unfreeze), (refused, Reason.MISROUTED)


async def _send_all(chaos: ChaosSystem) -> dict[tuple[int, int], tuple[str, Expected]]:
    """Send each hostile record then a marker deposit; where each landed, what it owes."""
    kafka = chaos.config.kafka
    producer = upstream_producer(chaos.config, max_request_size=1_048_576)
    await producer.start()
    owed: dict[tuple[int, int], tuple[str, Expected]] = {}
    key = customer_key(CUSTOMER)
    try:
        opening = _stamped(OpenAccount("open-target", CUSTOMER, 1, "EUR"))
        sent = await producer.send_and_wait(kafka.commands_topic, opening, key=key)
        owed[(sent.partition, sent.offset)] = ("opening", ("accepted", ""))
        for index, (name, value, expected) in enumerate(_hostile()):
            sent = await producer.send_and_wait(kafka.commands_topic, value, key=key)
            owed[(sent.partition, sent.offset)] = (name, expected)
            marker = _stamped(Deposit(f"marker-{index}", CUSTOMER, 1, MARKER_AMOUNT, "EUR"))
            sent = await producer.send_and_wait(kafka.commands_topic, marker, key=key)
            owed[(sent.partition, sent.offset)] = (f"marker {index}", ("accepted", ""))
        owed.update(await _overflow(producer, kafka.commands_topic))
        home = partition_of(CUSTOMER, kafka.partitions)
        stray = _stamped(Deposit(STRAY, CUSTOMER, 1, 5, "EUR"))
        await producer.send_and_wait(kafka.commands_topic, stray, partition=_elsewhere(home))
    finally:
        await producer.stop()
    return owed


async def _overflow(
    producer: AIOKafkaProducer, topic: str
) -> dict[tuple[int, int], tuple[str, Expected]]:
    """Fill an account with the largest deposits until its balance would overflow int64."""
    key = customer_key(CUSTOMER)
    opened = _stamped(OpenAccount("open-full", CUSTOMER, OVERFLOW_ACCOUNT, "EUR"))
    await producer.send_and_wait(topic, opened, key=key)
    fitting = BALANCE_MAX // AMOUNT_MAX
    sends = []
    for index in range(fitting + 1):
        deposit = Deposit(f"full-{index}", CUSTOMER, OVERFLOW_ACCOUNT, AMOUNT_MAX, "EUR")
        sends.append(await producer.send(topic, _stamped(deposit), key=key))
    last_fitting, overflowing = await asyncio.gather(sends[-2], sends[-1])
    return {
        (last_fitting.partition, last_fitting.offset): ("last that fits", ("accepted", "")),
        (overflowing.partition, overflowing.offset): ("overflow", ("rejected", Reason.OVERFLOW)),
    }


def _elsewhere(home: int) -> int:
    return (home + 1) % PARTITIONS


async def _outcomes(chaos: ChaosSystem) -> dict[tuple[int, int], Expected]:
    """Outcomes by (partition, offset) of the record answered; the record published to the
    wrong partition is forwarded, so its outcome is keyed (-1, -1), with where it came from."""
    kafka = chaos.config.kafka
    found: dict[tuple[int, int], Expected] = {}
    for record in await read_topic(kafka, kafka.results_topic):
        result = result_decoder.decode(record.value)
        status = "accepted" if result.status is Status.ACCEPTED else str(result.status)
        found[(result.partition, result.offset)] = (status, str(result.reason))
        if result.command_id == STRAY:
            found[(-1, -1)] = (status, f"forwarded from {result.forwarded_from}")
    for record in await read_topic(kafka, kafka.dlq_topic):
        letter = msgspec.msgpack.decode(record.value, type=DeadLetter)
        found[(letter.partition, letter.offset)] = ("dlq", letter.reason)
    return found


async def test_hostile_records_are_answered_and_the_partition_flows(chaos: ChaosSystem) -> None:
    run = scale()
    chaos.start_worker()
    async with Load(chaos, run) as load:
        load.start(run.load_seconds / 2)
        owed = await _send_all(chaos)
        await load.wait()
    home = partition_of(CUSTOMER, chaos.config.kafka.partitions)
    owed[(-1, -1)] = ("wrong partition", ("accepted", f"forwarded from {_elsewhere(home)}"))
    found: dict[tuple[int, int], Expected] = {}
    for _ in range(int(WAIT_SECONDS / POLL_SECONDS)):
        found = await _outcomes(chaos)
        if owed.keys() <= found.keys():
            break
        await asyncio.sleep(POLL_SECONDS)
    wrong = {
        name: (expected, found.get(where))
        for where, (name, expected) in owed.items()
        if found.get(where) != (expected[0], str(expected[1]))
    }
    assert not wrong, wrong
    chaos.fault(sum(1 for _ in _hostile()) + 2)
    assert_clean(await verdict(chaos, "bad-input", load.acked), chaos)
