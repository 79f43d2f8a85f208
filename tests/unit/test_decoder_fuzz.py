"""Fuzzing the decoder and validator: whatever the bytes, an answer and never an exception.

Three kinds of input, each with a bounded budget so ``make test`` stays fast: raw bytes,
msgpack maps built from the real field names with hostile values, and valid commands
with bytes flipped, cut or appended. For every input ``decode_command`` returns exactly
one of a valid Command (which passes ``validate`` and survives a round trip), an Invalid
(with a reason that names a problem) or an Undecodable (with a DLQ reason).
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.messages import (
    COMMAND_TYPES,
    DEAD_LETTER_REASONS,
    Command,
    Deposit,
    Invalid,
    OpenAccount,
    Reason,
    Transfer,
    Undecodable,
    decode_command,
    encode,
    fingerprint,
    validate,
)

BUDGET = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
FIELDS = sorted(
    {name for kind in COMMAND_TYPES for name in kind.__struct_fields__} | {"type", "extra", ""}
)
TAGS = [str(kind.__struct_config__.tag) for kind in COMMAND_TYPES] + ["", "launch", "DEPOSIT"]

hostile_ints = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 10**15, 10**15 + 1]),
)
hostile_values: st.SearchStrategy[Any] = st.one_of(
    hostile_ints,
    st.text(max_size=80),
    st.sampled_from(["EUR", "USD", "XXX", "€€€", "e" * 300, "a b", ""]),
    st.binary(max_size=40),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.lists(hostile_ints, max_size=3),
)


def _check(data: bytes) -> None:
    parsed = decode_command(data)
    match parsed:
        case Undecodable():
            assert parsed.reason in DEAD_LETTER_REASONS
            assert len(parsed.detail) <= 200
        case Invalid():
            assert parsed.reason is not Reason.NONE
            assert isinstance(parsed.id, str)
            assert isinstance(parsed.customer, int)
        case _:
            assert isinstance(parsed, COMMAND_TYPES)
            command: Command = parsed
            assert validate(command) == (Reason.NONE, "")
            again = decode_command(encode(command))
            assert again == command
            assert fingerprint(again) == fingerprint(command)


@BUDGET
@given(st.binary(max_size=600))
def test_random_bytes_get_an_answer(data: bytes) -> None:
    _check(data)


@BUDGET
@given(
    st.sampled_from(TAGS),
    st.dictionaries(st.sampled_from(FIELDS), hostile_values, max_size=10),
)
def test_maps_of_hostile_values_get_an_answer(tag: str, fields: dict[str, Any]) -> None:
    _check(msgspec.msgpack.encode({"type": tag, **fields}))
    _check(msgspec.json.encode({"type": tag, **fields}))


VALID: list[Command] = [
    OpenAccount("o-1", 42, 1, "EUR", credit_limit=500),
    Deposit("d-1", 42, 1, 1_000, "EUR"),
    Transfer("t-1", 42, 1, 77, 2, 250, "USD"),
]


@BUDGET
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    st.integers(0, 200),
    st.binary(max_size=8),
)
def test_mutated_commands_get_an_answer(
    command: Command, flips: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(encode(command))
    for position, value in flips:
        data[position % len(data)] = value
    _check(bytes(data[: len(data) - cut % len(data)]) + tail)
    _check(bytes(data))


def test_the_valid_seeds_are_valid() -> None:
    assert [decode_command(encode(c)) for c in VALID] == VALID
