"""Encoding round trips and validation reason codes."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.decoding import decode_command, decode_result
from engine.core.messages import (
    AMOUNT_MAX,
    Balance,
    CloseAccount,
    Command,
    DeadLetter,
    Deposit,
    FreezeAccount,
    Invalid,
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
    fingerprint,
    result_decoder,
)

COMMANDS: list[Command] = [
    OpenAccount("o-1", 42, 1, "EUR"),
    Deposit("d-1", 42, 1, 1_000, "EUR"),
    Withdraw("w-1", 42, 1, 250, "EUR"),
    Transfer("t-1", 42, 1, 43, 2, 99, "EUR"),
    FreezeAccount("f-1", 42, 1),
    CloseAccount("c-1", 42, 1),
    SetCreditLimit("s-1", 42, 1, 500, "risk-1", b"\x01" * 64),
    UnfreezeAccount("u-1", 42, 1, "risk-1", b"\x02" * 64),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_commands_round_trip_msgpack_and_json(command: Command) -> None:
    assert decode_command(encode(command)) == command
    assert decode_command(msgspec.json.encode(command), json=True) == command


def test_result_round_trips() -> None:
    result = Result("t-1", Status.ACCEPTED, balances=(Balance(42, 1, 901),), committed_at_us=5)
    assert result_decoder.decode(encode(result)) == result


def test_json_shape_is_documented_shape() -> None:
    text = b'{"type":"deposit","id":"d-9","customer":7,"account":1,"amount":100,"currency":"USD"}'
    assert decode_command(text, json=True) == Deposit("d-9", 7, 1, 100, "USD")


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (Deposit("d", 1, 1, 0, "EUR"), Reason.AMOUNT_NOT_POSITIVE),
        (Deposit("d", 1, 1, -5, "EUR"), Reason.AMOUNT_NOT_POSITIVE),
        (Withdraw("w", 1, 1, AMOUNT_MAX + 1, "EUR"), Reason.AMOUNT_TOO_LARGE),
        (Deposit("d", 1, 1, 5, "XXX"), Reason.UNKNOWN_CURRENCY),
        (Deposit("d", 0, 1, 5, "EUR"), Reason.BAD_CUSTOMER_ID),
        (Deposit("d", 1, 0, 5, "EUR"), Reason.BAD_ACCOUNT_NUMBER),
        (Deposit("d", 1, 2**31, 5, "EUR"), Reason.BAD_ACCOUNT_NUMBER),
        (Transfer("t", 1, 1, -3, 1, 5, "EUR"), Reason.BAD_CUSTOMER_ID),
        (SetCreditLimit("s", 1, 1, -1), Reason.BAD_CREDIT_LIMIT),
        (SetCreditLimit("s", 1, 1, AMOUNT_MAX + 1), Reason.BAD_CREDIT_LIMIT),
        (SetCreditLimit("s", 1, 1, 5, "bad key id"), Reason.BAD_SIGNATURE),
        (UnfreezeAccount("u", 1, 1, "k", b"x" * 65), Reason.BAD_SIGNATURE),
    ],
)
def test_invalid_values_are_rejected_with_a_reason(command: Command, reason: Reason) -> None:
    decoded = decode_command(encode(command))
    assert isinstance(decoded, Invalid)
    assert decoded.reason is reason
    assert decoded.id == command.id


def test_unknown_field_and_type_are_answered_not_dropped() -> None:
    extra = msgspec.msgpack.encode(
        {
            "type": "deposit",
            "id": "x1",
            "customer": 3,
            "account": 1,
            "amount": 5,
            "currency": "EUR",
            "memo": "hi",
        }
    )
    decoded = decode_command(extra)
    assert isinstance(decoded, Invalid) and decoded.reason is Reason.UNKNOWN_FIELD
    unknown = msgspec.msgpack.encode({"type": "mint", "id": "x2", "customer": 3})
    decoded = decode_command(unknown)
    assert isinstance(decoded, Invalid) and decoded.reason is Reason.UNKNOWN_COMMAND_TYPE
    wrong = msgspec.msgpack.encode(
        {
            "type": "deposit",
            "id": "x3",
            "customer": 3,
            "account": 1,
            "amount": "5",
            "currency": "EUR",
        }
    )
    decoded = decode_command(wrong)
    assert isinstance(decoded, Invalid) and decoded.reason is Reason.INVALID_FIELD


def test_unanswerable_input_goes_to_the_dlq() -> None:
    assert isinstance(decode_command(b"\xc1\xff garbage"), Undecodable)
    assert isinstance(decode_command(encode(COMMANDS[1])[:-3]), Undecodable)
    no_id = msgspec.msgpack.encode({"type": "deposit", "customer": 3})
    assert isinstance(decode_command(no_id), Undecodable)
    bad_id = msgspec.msgpack.encode({"type": "deposit", "id": "", "customer": 3})
    assert isinstance(decode_command(bad_id), Undecodable)


def test_floats_are_not_money() -> None:
    data = msgspec.msgpack.encode(
        {
            "type": "deposit",
            "id": "f1",
            "customer": 3,
            "account": 1,
            "amount": 1.5,
            "currency": "EUR",
        }
    )
    decoded = decode_command(data)
    assert isinstance(decoded, Invalid) and decoded.reason is Reason.INVALID_FIELD


@given(st.binary(max_size=300))
def test_decoder_never_raises(data: bytes) -> None:
    assert decode_command(data) is not None


def test_fingerprint_tells_content_apart() -> None:
    a = Deposit("d", 1, 1, 5, "EUR")
    assert fingerprint(a) == fingerprint(Deposit("d", 1, 1, 5, "EUR"))
    assert fingerprint(a) != fingerprint(Deposit("d", 1, 1, 6, "EUR"))


def test_dead_letter_round_trips() -> None:
    letter = DeadLetter("undecodable", "x", "t", 1, 2, None, b"\x00")
    assert msgspec.msgpack.decode(encode(letter), type=DeadLetter) == letter


def test_strings_that_are_not_utf8_are_answered_not_raised() -> None:
    """msgspec raises UnicodeDecodeError (not DecodeError) for them: a worker crashed on one."""
    command = msgspec.msgpack.encode(
        {"type": "deposit", "id": "u8", "customer": 4, "account": 1, "amount": 5, "currency": "EU?"}
    )
    bad_currency = decode_command(command.replace(b"EU?", b"EU\xff"))
    assert isinstance(bad_currency, Invalid)
    assert bad_currency.reason is Reason.INVALID_FIELD
    bad_id = decode_command(command.replace(b"u8", b"u\xff"))
    assert isinstance(bad_id, Undecodable)
    assert bad_id.reason == "undecodable"


def test_a_self_declared_credit_limit_is_not_a_field_of_open_account() -> None:
    """Credit is granted by the risk authority (set_credit_limit), never by the customer."""
    data = msgspec.msgpack.encode(
        {
            "type": "open_account",
            "id": "o-9",
            "customer": 5,
            "account": 1,
            "currency": "EUR",
            "credit_limit": 10**15,
        }
    )
    decoded = decode_command(data)
    assert isinstance(decoded, Invalid)
    assert decoded.reason is Reason.UNKNOWN_FIELD


def _pairs(*pairs: tuple[str, object]) -> bytes:
    """A msgpack map written key by key, so a key may appear twice."""
    return bytes([0x80 | len(pairs)]) + b"".join(
        msgspec.msgpack.encode(k) + msgspec.msgpack.encode(v) for k, v in pairs
    )


def test_a_key_named_twice_is_refused_not_last_one_wins() -> None:
    data = _pairs(
        ("type", "deposit"),
        ("id", "dk-1"),
        ("customer", 5),
        ("account", 1),
        ("amount", 5),
        ("currency", "EUR"),
        ("amount", 999),
    )
    decoded = decode_command(data)
    assert isinstance(decoded, Invalid)
    assert decoded.reason is Reason.DUPLICATE_FIELD
    assert "amount" in decoded.detail
    json = (
        b'{"type":"deposit","id":"dk-2","customer":5,"account":1,'
        b'"amount":5,"currency":"EUR","amount":999}'
    )
    decoded = decode_command(json, json=True)
    assert isinstance(decoded, Invalid) and decoded.reason is Reason.DUPLICATE_FIELD


def test_an_id_or_customer_named_twice_cannot_be_answered() -> None:
    data = _pairs(("type", "deposit"), ("id", "a"), ("customer", 5), ("customer", 6))
    decoded = decode_command(data)
    assert isinstance(decoded, Undecodable) and decoded.reason == "undecodable"


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_a_field_nested_deep_goes_to_the_dlq(depth: int) -> None:
    """The 1 KB record that crashed every worker claiming its partition (RecursionError)."""
    deep = b"\x91" * depth + b"\x01"
    head = _pairs(("type", "deposit"), ("id", "deep-1"), ("customer", 5))[1:]
    data = bytes([0x84]) + head + msgspec.msgpack.encode("amount") + deep
    decoded = decode_command(data)
    assert isinstance(decoded, Undecodable) and decoded.reason == "undecodable"
    assert "deeper" in decoded.detail
    json_deep = b'{"type":"deposit","id":"deep-2","customer":5,"amount":' + b"[" * depth
    json_deep += b"1" + b"]" * depth + b"}"
    decoded = decode_command(json_deep, json=True)
    assert isinstance(decoded, Undecodable) and decoded.reason == "undecodable"


def test_a_malformed_leg_is_forged_never_answered() -> None:
    """Answering it would publish a result for an id no client used."""
    data = msgspec.msgpack.encode({"type": "credit_leg", "id": "t-1/credit", "customer": 5})
    decoded = decode_command(data)
    assert isinstance(decoded, Undecodable)
    assert (decoded.reason, decoded.leg) == ("forged_leg", "credit_leg")


@pytest.mark.parametrize(
    "data",
    [
        msgspec.msgpack.encode({"type": "zzz", "id": "x" * 30_000, "customer": 5}),
        encode(Deposit("x" * 30_000, 1, 1, 5, "EUR")),
        encode(Deposit("bad id with spaces", 1, 1, 5, "EUR")),
        encode(Deposit("", 1, 1, 5, "EUR")),
    ],
)
def test_a_bad_id_goes_to_the_dlq_echoed_as_a_bounded_prefix(data: bytes) -> None:
    """No client could match a result to it, and a result must not echo 30,000 characters."""
    decoded = decode_command(data)
    assert isinstance(decoded, Undecodable)
    assert decoded.reason == "bad_command_id"
    assert len(decoded.detail) < 200


@pytest.mark.parametrize(
    "value",
    [None, b"", b"\xc1", b"\x91" * 5_000 + b"\x01", msgspec.msgpack.encode({"type": "result"})],
)
def test_a_hostile_result_record_is_undecodable_not_an_exception(value: bytes | None) -> None:
    assert isinstance(decode_result(value), Undecodable)


def test_a_result_with_fields_out_of_range_is_refused() -> None:
    long_detail = Result("c-1", Status.REJECTED, detail="d" * 5_000)
    assert isinstance(decode_result(encode(long_detail)), Undecodable)
    many = Result("c-1", Status.ACCEPTED, balances=tuple(Balance(1, 1, 1) for _ in range(3)))
    assert isinstance(decode_result(encode(many)), Undecodable)
    fine = Result("c-1", Status.ACCEPTED, balances=(Balance(1, 1, 1),), partition=3, offset=9)
    assert decode_result(encode(fine)) == fine
