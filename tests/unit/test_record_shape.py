"""The shape pre-check: total, iterative and cheap, for msgpack and JSON records.

Whatever the bytes, ``msgpack_shape`` and ``json_shape`` return a Shape and never raise;
records nested deeper than NESTING_MAX or with more than ELEMENTS_MAX elements have a
problem, found fast even when the nesting is 100,000 deep or a header claims 4 billion
items; duplicate top-level keys are listed, nested ones are a problem.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.record_shape import ELEMENTS_MAX, NESTING_MAX, Shape, json_shape, msgpack_shape

BUDGET = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
FAST_SECONDS = 0.05

COMMAND: dict[str, Any] = {
    "type": "transfer",
    "id": "cmd-000123",
    "customer": 123456789,
    "account": 42,
    "to_account": 43,
    "amount": 12345,
    "currency": "EUR",
    "memo": "rent, March",
    "ratio": 0.5,
    "tags": ["a", "b"],
    "extra": {"k": None, "flag": True, "blob": b"\x00\xff"},
}

Check = Callable[[bytes], Shape]
FORMATS: list[tuple[Check, Callable[[Any], bytes]]] = [
    (msgpack_shape, msgspec.msgpack.encode),
    (json_shape, msgspec.json.encode),
]
FORMAT_IDS = ["msgpack", "json"]


def timed(check: Check, data: bytes) -> Shape:
    started = time.perf_counter()
    shape = check(data)
    assert time.perf_counter() - started < FAST_SECONDS
    return shape


def nested(depth: int, kind: str) -> Any:
    """A structure of ``depth`` containers (a list or a map per level) around a 1."""
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


def elements_of(value: Any) -> int:
    if isinstance(value, list):
        return len(value) + sum(elements_of(item) for item in value)
    if isinstance(value, dict):
        return len(value) + sum(elements_of(item) for item in value.values())
    return 0


class Amount(msgspec.Struct):
    amount: int


def msgpack_map(*pairs: tuple[Any, Any]) -> bytes:
    """A msgpack fixmap built by hand, so that keys may repeat."""
    body = b"".join(msgspec.msgpack.encode(k) + msgspec.msgpack.encode(v) for k, v in pairs)
    return bytes([0x80 | len(pairs)]) + body


# --- valid records --------------------------------------------------------------------


@pytest.mark.parametrize(("check", "encode"), FORMATS, ids=FORMAT_IDS)
def test_a_flat_command_map_is_fine(check: Check, encode: Callable[[Any], bytes]) -> None:
    assert check(encode(COMMAND)) == Shape()
    assert check(encode({"type": "deposit", "amount": 5})) == Shape()


@pytest.mark.parametrize(("check", "encode"), FORMATS, ids=FORMAT_IDS)
def test_a_top_level_that_is_not_a_map_is_fine(
    check: Check, encode: Callable[[Any], bytes]
) -> None:
    values: list[Any] = [1, "text", None, [], {}, [1, [2, {"a": 3}]], 2**64 - 1, -(2**63)]
    for value in values:
        assert check(encode(value)) == Shape(), value


def test_json_whitespace_around_and_inside_is_fine() -> None:
    assert json_shape(b' \r\n\t{ "a" : [ 1 , { } , [ ] ] }\n ') == Shape()


def test_json_escapes_do_not_confuse_the_string_skipping() -> None:
    assert json_shape(b'{"a\\"[[[[[[[[[[": "\\\\", "b": "x\\\\\\"]]]}"}') == Shape()
    assert json_shape(b'["\\\\"]') == Shape()
    assert json_shape(b'["\\"]').problem == "unterminated string"


def test_every_msgpack_format_is_walked() -> None:
    values: list[Any] = [
        0, 127, -1, -32, 128, 255, 256, 65_536, 2**32, 2**64 - 1, -33, -129, -32_769, -(2**31) - 1,
        -(2**63), 1.5, None, True, False, "", "x" * 31, "x" * 32, "x" * 256, "x" * 65_536,
        b"", b"x" * 256, b"x" * 65_536, list(range(16)), list(range(15)),
    ]  # fmt: skip
    assert msgpack_shape(msgspec.msgpack.encode(values)) == Shape()
    for size in (1, 2, 4, 8, 16, 3, 256, 65_536):  # fixext1-16, ext8/16/32
        ext = msgspec.msgpack.Ext(5, b"e" * size)
        assert msgpack_shape(msgspec.msgpack.encode({"e": ext})) == Shape(), size
    assert msgpack_shape(msgspec.msgpack.encode({str(n): n for n in range(16)})) == Shape()
    assert msgpack_shape(msgspec.msgpack.encode({str(n): n for n in range(17)})) == Shape()
    assert msgpack_shape(b"\xca\x00\x00\x00\x00") == Shape()  # float32


# --- nesting --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["list", "map"])
@pytest.mark.parametrize(("check", "encode"), FORMATS, ids=FORMAT_IDS)
def test_nesting_up_to_the_limit_passes_and_one_more_fails(
    check: Check, encode: Callable[[Any], bytes], kind: str
) -> None:
    assert check(encode(nested(NESTING_MAX, kind))) == Shape()
    assert check(encode(nested(NESTING_MAX + 1, kind))).problem == "nested deeper than 8 levels"
    inside = {"id": "c1", "amount": 1, "x": nested(NESTING_MAX - 1, kind)}
    assert check(encode(inside)) == Shape()
    inside["x"] = nested(NESTING_MAX, kind)
    assert check(encode(inside)).problem == "nested deeper than 8 levels"


@pytest.mark.parametrize(("check", "encode"), FORMATS, ids=FORMAT_IDS)
def test_empty_containers_count_for_nesting(check: Check, encode: Callable[[Any], bytes]) -> None:
    assert check(encode({"a": [[[[[[[]]]]]]]})) == Shape()
    assert check(encode({"a": [[[[[[[[]]]]]]]]})).problem != ""


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deep_msgpack_nesting_is_refused_fast(depth: int) -> None:
    assert timed(msgpack_shape, b"\x91" * depth + b"\x01").problem != ""
    assert timed(msgpack_shape, b"\x81\xa1a" * depth + b"\x01").problem != ""
    assert timed(msgpack_shape, b"\xdc\x00\x01" * depth + b"\x01").problem != ""
    hostile = b"\x82\xa6amount\x01\xa1x" + b"\x91" * depth + b"\x01"  # an unknown field
    assert timed(msgpack_shape, hostile).problem == "nested deeper than 8 levels"
    with pytest.raises(RecursionError):  # what the pre-check protects the decoder from
        msgspec.msgpack.decode(hostile, type=Amount)


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deep_json_nesting_is_refused_fast(depth: int) -> None:
    assert timed(json_shape, b'{"a":' * depth + b"1" + b"}" * depth).problem != ""
    assert timed(json_shape, b"[" * depth + b"1" + b"]" * depth).problem != ""
    assert timed(json_shape, b"[" * depth).problem != ""
    assert timed(json_shape, b'{"a":' * depth).problem != ""
    assert timed(json_shape, b'{"id": "c1", "x": ' + b"[" * depth + b"]" * depth + b"}").problem


# --- size -----------------------------------------------------------------------------


@pytest.mark.parametrize(("check", "encode"), FORMATS, ids=FORMAT_IDS)
def test_elements_up_to_the_limit_pass_and_one_more_fails(
    check: Check, encode: Callable[[Any], bytes]
) -> None:
    too_many = "more than 1024 elements"
    assert check(encode(list(range(ELEMENTS_MAX)))) == Shape()
    assert check(encode(list(range(ELEMENTS_MAX + 1)))).problem == too_many
    assert check(encode({str(n): n for n in range(ELEMENTS_MAX)})) == Shape()
    assert check(encode({str(n): n for n in range(ELEMENTS_MAX + 1)})).problem == too_many
    spread: dict[str, Any] = {"a": list(range(ELEMENTS_MAX - 2)), "b": {}}  # 2 entries + 1022 items
    assert check(encode(spread)) == Shape()
    spread["b"] = {"c": None}
    assert check(encode(spread)).problem == too_many
    assert check(encode([[]] * ELEMENTS_MAX)) == Shape()
    assert check(encode([[]] * (ELEMENTS_MAX + 1))).problem == too_many


def test_many_json_strings_or_brackets_are_refused_fast() -> None:
    assert timed(json_shape, b"[" + b'"a",' * 100_000 + b'"a"]').problem == (
        "more than 1024 elements"
    )
    assert timed(json_shape, b"[" + b"[]," * 100_000 + b"[]]").problem != ""
    assert timed(json_shape, b"]" * 100_000).problem != ""
    assert timed(json_shape, b'"' * 100_001).problem != ""


@pytest.mark.parametrize(
    "data",
    [
        b"\xdd\xff\xff\xff\xff",  # array32: 4 billion items, none there
        b"\xdd\xff\xff\xff\xff\x01\x02\x03",
        b"\xdf\xff\xff\xff\xff",  # map32
        b"\xdf\xff\xff\xff\xff\xa1a\x01",
        b"\xdb\xff\xff\xff\xffabc",  # str32
        b"\xc6\xff\xff\xff\xff\x00",  # bin32
        b"\xc9\xff\xff\xff\xff\x01abc",  # ext32
        b"\x81\xa1a\xdd\xff\xff\xff\xff",  # inside a field
        b"\xdd\xff\xff\xff",  # the length itself cut short
    ],
)
def test_huge_msgpack_headers_with_little_data_are_refused(data: bytes) -> None:
    shape = timed(msgpack_shape, data)
    assert shape.problem.startswith("truncated at byte"), shape


def test_a_huge_msgpack_array_with_data_stops_at_the_limit() -> None:
    data = b"\xdd\xff\xff\xff\xff" + b"\x01" * 100_000
    assert timed(msgpack_shape, data).problem == "more than 1024 elements"


# --- framing --------------------------------------------------------------------------


@pytest.mark.parametrize(("check", "encode"), FORMATS, ids=FORMAT_IDS)
def test_every_truncation_of_a_valid_record_is_a_problem(
    check: Check, encode: Callable[[Any], bytes]
) -> None:
    data = encode(COMMAND)
    for end in range(len(data)):
        assert check(data[:end]).problem != "", data[:end]


def test_msgpack_truncation_says_where() -> None:
    data = msgspec.msgpack.encode(COMMAND)
    assert msgpack_shape(data[:17]).problem == "truncated at byte 17"
    assert msgpack_shape(b"").problem == "empty record"


def test_trailing_bytes_are_a_problem() -> None:
    data = msgspec.msgpack.encode(COMMAND)
    assert msgpack_shape(data + b"\x00").problem == "1 byte after the value"
    assert msgpack_shape(data + b"\x00\x00").problem == "2 bytes after the value"
    assert msgpack_shape(b"\x01\x01").problem == "1 byte after the value"
    assert json_shape(msgspec.json.encode(COMMAND) + b" {}").problem.startswith("not valid JSON")
    assert json_shape(b"1 2").problem.startswith("not valid JSON")


def test_the_reserved_msgpack_byte_is_a_problem() -> None:
    assert msgpack_shape(b"\xc1").problem == "reserved byte 0xc1 at byte 0"
    assert msgpack_shape(b"\x82\xa1a\x01\xa1b\xc1").problem == "reserved byte 0xc1 at byte 6"
    assert msgpack_shape(b"\x81\xc1\x01").problem != ""


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b" ",
        b"{",
        b"}",
        b"[}",
        b"{]",
        b"[1 2]",
        b"{'a': 1}",
        b'{"a" 1}',
        b'{"a":1,}',
        b"[1,]",
        b"NaN",
        b"[Infinity]",
        b"-Infinity",
        b"tru",
        b"1" * 5_000,
        b"\xef\xbb\xbf{}",  # a BOM
        b'"a\\',
        b'["a]',
    ],
)
def test_invalid_json_is_a_problem(data: bytes) -> None:
    assert json_shape(data).problem != ""


def test_invalid_json_says_where() -> None:
    assert json_shape(b'{"a": 1 2}').problem == "not valid JSON at byte 8: Expecting ',' delimiter"
    assert json_shape('{"€": x}'.encode()).problem.startswith("not valid JSON at byte 8:")


def test_non_utf8_json_is_a_problem() -> None:
    assert json_shape(b'{"a": "\xff"}').problem == "not UTF-8 at byte 7"
    assert json_shape(b"\xc3").problem == "not UTF-8 at byte 0"
    assert json_shape(b'"\xed\xa0\x80"').problem != ""  # an encoded surrogate


# --- duplicate keys -------------------------------------------------------------------


def test_duplicate_top_level_msgpack_keys_are_listed() -> None:
    data = msgpack_map(("type", "deposit"), ("amount", 5), ("id", "c1"), ("amount", 10**6))
    assert msgpack_shape(data) == Shape(duplicate_keys=("amount",))
    thrice = msgpack_map(("amount", 1), ("b", 1), ("amount", 2), ("b", 2), ("amount", 3))
    assert msgpack_shape(thrice) == Shape(duplicate_keys=("amount", "b"))


def test_duplicate_msgpack_keys_are_compared_by_value_not_encoding() -> None:
    str8 = b"\x82\xa6amount\x01\xd9\x06amount\x02"
    assert msgpack_shape(str8) == Shape(duplicate_keys=("amount",))
    ints = b"\x82\x01\x01\xcc\x01\x02"  # 1 as fixint and as uint8
    assert msgpack_shape(ints) == Shape(duplicate_keys=("1",))
    assert msgpack_shape(b"\x82\xa1a\x01\xc4\x01a\x02") == Shape()  # str "a" and bin b"a"


def test_long_or_odd_duplicate_keys_are_shown_short() -> None:
    long_key = "k" * 100
    shape = msgpack_shape(msgpack_map((long_key, 1), (long_key, 2)))
    assert shape.duplicate_keys == ("k" * 40,)
    assert msgpack_shape(b"\x82\xa2\xff\xfe\x01\xa2\xff\xfe\x02").duplicate_keys == (
        "\ufffd\ufffd",
    )
    assert msgpack_shape(msgpack_map((b"x" * 50, 1), (b"x" * 50, 2))).duplicate_keys == (
        repr(b"x" * 50)[:40],
    )
    ext = b"\xd4\x01\x00"
    assert msgpack_shape(b"\x82" + ext + b"\x01" + ext + b"\x02").duplicate_keys == (repr(ext),)
    assert json_shape(b'{"' + b"j" * 60 + b'": 1, "' + b"j" * 60 + b'": 2}').duplicate_keys == (
        "j" * 40,
    )


def test_duplicate_top_level_json_keys_are_listed() -> None:
    data = b'{"type": "deposit", "amount": 5, "id": "c1", "amount": 1000000}'
    assert json_shape(data) == Shape(duplicate_keys=("amount",))
    assert json_shape(b'{"a\\u006d\\u006f\\u0075nt": 1, "amount": 2}') == Shape(
        duplicate_keys=("amount",)
    )


def test_nested_duplicate_keys_are_a_problem() -> None:
    inner = msgpack_map(("amount", 1), ("amount", 2))
    assert msgpack_shape(b"\x81\xa1x" + inner).problem == "duplicate key 'amount' in a nested map"
    assert msgpack_shape(b"\x91" + inner).problem == "duplicate key 'amount' in a nested map"
    assert json_shape(b'{"x": {"amount": 1, "amount": 2}}').problem == (
        "duplicate key 'amount' in a nested map"
    )
    assert json_shape(b'[{"amount": 1, "amount": 2}]').problem != ""
    long_key = "é" * 300
    shape = msgpack_shape(b"\x91" + msgpack_map((long_key, 1), (long_key, 2)))
    assert shape.problem and len(shape.problem) <= 200


def test_same_keys_in_different_maps_are_not_duplicates() -> None:
    data = msgspec.msgpack.encode({"a": {"a": 1, "b": {"a": 2}}, "b": [{"a": 1}, {"a": 1}]})
    assert msgpack_shape(data) == Shape()
    assert json_shape(msgspec.json.encode(msgspec.msgpack.decode(data))) == Shape()


# --- properties -----------------------------------------------------------------------

leaves = (
    st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.floats()
    | st.none()
    | st.booleans()
)
structures: st.SearchStrategy[Any] = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=50,
)


@st.composite
def wrapped(draw: st.DrawFn) -> Any:
    """A structure inside 0 to 12 more containers, so both sides of the limit are met."""
    value = draw(structures)
    for kind in draw(st.lists(st.sampled_from(["list", "map"]), max_size=12)):
        value = [value] if kind == "list" else {draw(st.text(max_size=3)): value}
    return value


def _never_raises(check: Check, data: bytes) -> Shape:
    shape = check(data)
    assert isinstance(shape, Shape)
    assert len(shape.problem) <= 200
    assert all(len(key) <= 40 for key in shape.duplicate_keys)
    return shape


@BUDGET
@given(st.binary(max_size=600))
def test_any_bytes_get_a_shape(data: bytes) -> None:
    shape = _never_raises(msgpack_shape, data)
    if not shape.problem:  # then the recursive decoder is safe to run
        with contextlib.suppress(msgspec.DecodeError):
            msgspec.msgpack.decode(data)
    _never_raises(json_shape, data)


@BUDGET
@given(wrapped())
def test_structures_within_the_limits_pass_and_deeper_ones_fail(value: Any) -> None:
    within = depth_of(value) <= NESTING_MAX and elements_of(value) <= ELEMENTS_MAX
    for check, encode in FORMATS:
        shape = _never_raises(check, encode(value))
        if within:
            assert shape == Shape(), (check, value)
        if depth_of(value) > NESTING_MAX:
            assert shape.problem != "", (check, value)


@BUDGET
@given(wrapped(), st.data())
def test_damaged_records_get_a_shape(value: Any, data: st.DataObject) -> None:
    for check, encode in FORMATS:
        record = bytearray(encode(value))
        for _ in range(data.draw(st.integers(1, 3))):
            if record:
                at = data.draw(st.integers(0, len(record) - 1))
                record[at] = data.draw(st.integers(0, 255))
        _never_raises(check, bytes(record))
        _never_raises(check, bytes(record[: data.draw(st.integers(0, len(record)))]))
