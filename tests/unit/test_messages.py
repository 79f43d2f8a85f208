"""Encoding round trips and validation reason codes."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.messages import (
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
    Status,
    Transfer,
    Undecodable,
    Withdraw,
    decode_command,
    encode,
    fingerprint,
    result_decoder,
)

COMMANDS: list[Command] = [
    OpenAccount("o-1", 42, 1, "EUR", credit_limit=500),
    Deposit("d-1", 42, 1, 1_000, "EUR"),
    Withdraw("w-1", 42, 1, 250, "EUR"),
    Transfer("t-1", 42, 1, 43, 2, 99, "EUR"),
    FreezeAccount("f-1", 42, 1),
    CloseAccount("c-1", 42, 1),
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
        (OpenAccount("o", 1, 1, "EUR", credit_limit=-1), Reason.BAD_CREDIT_LIMIT),
        (Deposit("bad id with spaces", 1, 1, 5, "EUR"), Reason.BAD_COMMAND_ID),
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
