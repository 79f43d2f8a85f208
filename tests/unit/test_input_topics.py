"""A partition's input is two topics: each kind of command is taken from its own only,
and every record gets an input place that orders what it makes."""

from __future__ import annotations

from typing import NamedTuple

import msgspec
import pytest

from engine.core.authority import fresh_authority
from engine.core.batch import decode_records
from engine.core.messages import (
    DeadLetter,
    Deposit,
    Invalid,
    Reason,
    SetCreditLimit,
    Transfer,
    encode,
)
from engine.core.records import Position
from engine.core.routing import partition_of
from engine.core.saga import credit_leg

PARTITIONS = 8
COMMANDS, INTERNAL = "in.commands", "in.internal"
AUTHORITY, RISK = fresh_authority(COMMANDS)
CUSTOMER = 5
HOME = partition_of(CUSTOMER, PARTITIONS)


class Record(NamedTuple):
    topic: str
    offset: int
    value: bytes
    partition: int = HOME
    key: bytes | None = b"5"
    timestamp: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


def _leg() -> bytes:
    transfer = Transfer("t-1", 99, 1, CUSTOMER, 1, 10, "EUR")
    return encode(AUTHORITY.sign_leg(credit_leg(transfer, 3, 0), HOME))


def _grant() -> bytes:
    return encode(RISK.sign(SetCreditLimit("g-1", CUSTOMER, 1, 500)))


def _deposit(command_id: str = "d-1") -> bytes:
    return encode(Deposit(command_id, CUSTOMER, 1, 5, "EUR"))


def test_each_kind_is_taken_from_its_own_topic() -> None:
    decoded = decode_records(
        [
            Record(INTERNAL, 0, _leg()),
            Record(INTERNAL, 1, _grant()),
            Record(COMMANDS, 0, _deposit()),
        ],
        65_536,
        AUTHORITY,
        PARTITIONS,
        Position(0, 0),
        INTERNAL,
    )
    assert not decoded.dead
    assert [type(i.command).__name__ for i in decoded.incoming] == [
        "CreditLeg",
        "SetCreditLimit",
        "Deposit",
    ]


@pytest.mark.parametrize(
    ("topic", "value", "refused_as"),
    [
        (COMMANDS, _leg(), "dead letter"),
        (COMMANDS, _grant(), "rejection"),
        (INTERNAL, _deposit(), "rejection"),
    ],
)
def test_a_command_off_its_topic_is_misrouted_whatever_its_proof(
    topic: str, value: bytes, refused_as: str
) -> None:
    decoded = decode_records(
        [Record(topic, 0, value)], 65_536, AUTHORITY, PARTITIONS, Position(0, 0), INTERNAL
    )
    if refused_as == "dead letter":
        (row,) = decoded.dead
        letter = msgspec.msgpack.decode(row.value, type=DeadLetter)
        assert (letter.reason, letter.topic) == ("misrouted", topic)
        assert not decoded.forged_legs, "misrouted, not counted as forged"
    else:
        (incoming,) = decoded.incoming
        assert isinstance(incoming.command, Invalid)
        assert incoming.command.reason is Reason.MISROUTED


def test_input_places_grow_record_after_record_across_both_topics() -> None:
    records = [
        Record(COMMANDS, 10, _deposit("a")),
        Record(INTERNAL, 4, _grant()),
        Record(COMMANDS, 11, _deposit("b")),
        Record(COMMANDS, 13, _deposit("c")),  # 12 is a gap in the offsets
        Record(INTERNAL, 5, _leg()),
    ]
    decoded = decode_records(records, 65_536, AUTHORITY, PARTITIONS, Position(10, 4), INTERNAL)
    places = [i.seq for i in decoded.incoming]
    assert places == [14, 15, 16, 18, 19]
    assert [i.offset for i in decoded.incoming] == [10, 4, 11, 13, 5], "results name offsets"
    assert decoded.end == Position(14, 6) and decoded.end.seq == 20


def test_a_malformed_leg_on_the_commands_topic_is_misrouted_too() -> None:
    leg = msgspec.msgpack.decode(_leg())
    broken = msgspec.msgpack.encode({**leg, "detail": "d" * 5_000, "type": "settle_leg"})
    for topic, reason in ((COMMANDS, "misrouted"), (INTERNAL, "forged_leg")):
        decoded = decode_records(
            [Record(topic, 0, broken)], 65_536, AUTHORITY, PARTITIONS, Position(0, 0), INTERNAL
        )
        (row,) = decoded.dead
        assert msgspec.msgpack.decode(row.value, type=DeadLetter).reason == reason
