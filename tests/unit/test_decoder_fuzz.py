"""Fuzzing the decoder and validator: whatever the bytes, an answer and never an exception.

Kinds of input, each with a bounded budget so ``make test`` stays fast: raw bytes; maps
built from the real field names with values of every type, nested at every depth (deep
nesting in any field was the 1 KB record that crashed every worker claiming its
partition), in msgpack and JSON, with keys sometimes repeated; and valid commands with
bytes flipped, cut or appended. For every input ``decode_command`` returns exactly one of
a valid Command (which passes validation and survives a round trip), an Invalid (with a
reason that names a problem, a bounded detail) or an Undecodable (with a DLQ reason), and
``decode_result`` returns a Result or an Undecodable.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.decoding import decode_command, decode_result, leg_problem, validate
from engine.core.messages import (
    COMMAND_TYPES,
    DEAD_LETTER_REASONS,
    INPUT_REASONS,
    LEG_TYPES,
    Command,
    Deposit,
    Invalid,
    OpenAccount,
    Reason,
    Result,
    SetCreditLimit,
    Transfer,
    Undecodable,
    encode,
    fingerprint,
)
from engine.core.saga import credit_leg, settle_leg

BUDGET = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
FIELDS = sorted(
    {name for kind in COMMAND_TYPES for name in kind.__struct_fields__} | {"type", "extra", ""}
)
TAGS = [str(kind.__struct_config__.tag) for kind in COMMAND_TYPES] + ["", "launch", "DEPOSIT"]
VALID_SEEDS: list[Command] = [
    OpenAccount("o-1", 42, 1, "EUR"),
    Deposit("d-1", 42, 1, 1_000, "EUR"),
    Transfer("t-1", 42, 1, 77, 2, 250, "USD"),
    SetCreditLimit("l-1", 42, 1, 500, "risk-1", b"s" * 64),
    credit_leg(Transfer("t-2", 42, 1, 77, 2, 250, "USD"), 3, 9),
    settle_leg(credit_leg(Transfer("t-3", 42, 1, 77, 2, 5, "EUR"), 3, 9), Reason.NONE, "", 5),
]

hostile_ints = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 10**15, 10**15 + 1]),
)
scalars: st.SearchStrategy[Any] = st.one_of(
    hostile_ints,
    st.text(max_size=80),
    st.sampled_from(["EUR", "USD", "XXX", "€€€", "e" * 300, "a b", "", "t-1/credit"]),
    st.binary(max_size=40),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
)
hostile_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(FIELDS), inner, max_size=3),
    ),
    max_leaves=12,
)


def _nested_msgpack(leaf: Any, depth: int, as_map: bool) -> bytes:
    """``leaf`` wrapped ``depth`` times in a one-element array or map, as msgpack bytes
    (written by hand: msgspec's encoder refuses such depths itself)."""
    wrapper = b"\x81" + msgspec.msgpack.encode("v") if as_map else b"\x91"
    return wrapper * depth + msgspec.msgpack.encode(leaf)


def _nested_json(leaf: Any, depth: int, as_map: bool) -> bytes:
    opening, closing = (b'{"v":', b"}") if as_map else (b"[", b"]")
    return opening * depth + msgspec.json.encode(leaf) + closing * depth


def _with_field_msgpack(document: dict[str, Any], field: str, raw: bytes) -> bytes:
    pairs = [(k, v) for k, v in document.items() if k != field]
    return _pairs(pairs, extra=msgspec.msgpack.encode(field) + raw)


def _with_field_json(document: dict[str, Any], field: str, raw: bytes) -> bytes:
    rest = msgspec.json.encode({k: v for k, v in document.items() if k != field})
    head = rest[:-1] + (b"," if len(rest) > 2 else b"")
    return head + msgspec.json.encode(field) + b":" + raw + b"}"


def _pairs(pairs: list[tuple[str, Any]], extra: bytes = b"") -> bytes:
    """A msgpack map written pair by pair (keys may repeat), ``extra`` a last raw pair."""
    count = len(pairs) + (1 if extra else 0)
    head = bytes([0x80 | count]) if count < 16 else b"\xde" + count.to_bytes(2)
    body = b"".join(msgspec.msgpack.encode(k) + msgspec.msgpack.encode(v) for k, v in pairs)
    return head + body + extra


def _check(data: bytes, *, json: bool = False) -> None:
    parsed = decode_command(data, json=json)
    match parsed:
        case Undecodable():
            assert parsed.reason in DEAD_LETTER_REASONS
            assert len(parsed.detail) <= 200
        case Invalid():
            assert parsed.reason is not Reason.NONE
            assert parsed.reason in INPUT_REASONS
            assert isinstance(parsed.id, str) and len(parsed.id) <= 64
            assert isinstance(parsed.customer, int)
            assert len(parsed.detail) <= 200
        case _:
            assert isinstance(parsed, COMMAND_TYPES)
            command: Command = parsed
            if isinstance(command, LEG_TYPES):
                assert leg_problem(command) == ""
            else:
                assert validate(command) == (Reason.NONE, "")
            again = decode_command(encode(command))
            assert again == command
            assert fingerprint(again) == fingerprint(command)
    result = decode_result(data)
    assert isinstance(result, Result | Undecodable)


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
    _check(msgspec.json.encode({"type": tag, **fields}), json=True)


@BUDGET
@given(
    st.sampled_from(VALID_SEEDS),
    st.sampled_from(FIELDS),
    scalars,
    st.sampled_from([2, 9, 50, 1_000, 5_000]),
    st.booleans(),
)
def test_deep_nesting_in_any_field_gets_an_answer(
    seed: Command, field: str, leaf: Any, depth: int, as_map: bool
) -> None:
    """Any field of a real command, replaced by a value nested ``depth`` deep."""
    document = msgspec.to_builtins(seed)
    _check(_with_field_msgpack(document, field, _nested_msgpack(leaf, depth, as_map)))
    json_leaf = leaf if isinstance(leaf, int | str | bool | None) else 0
    json = _with_field_json(document, field, _nested_json(json_leaf, depth, as_map))
    _check(json, json=True)


@BUDGET
@given(st.sampled_from(VALID_SEEDS), st.sampled_from(FIELDS), scalars, st.booleans())
def test_a_repeated_key_is_never_accepted(
    seed: Command, field: str, value: Any, repeat_last: bool
) -> None:
    """Whatever the key and the value, a map that names a key twice is no command."""
    pairs = list(msgspec.to_builtins(seed).items())
    pairs.append((field, value) if repeat_last else pairs[0])
    data = _pairs(pairs)
    _check(data)
    assert not isinstance(decode_command(data), COMMAND_TYPES)


VALID: list[Command] = VALID_SEEDS


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
