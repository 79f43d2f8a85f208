"""The published JSON Schemas are the code's: current, and they accept what the decoder
accepts and refuse what it refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from engine.core.decoding import decode_command
from engine.core.messages import (
    AMOUNT_MAX,
    Balance,
    DeadLetter,
    Deposit,
    Invalid,
    OpenAccount,
    Reason,
    Result,
    SetCreditLimit,
    Status,
    Transfer,
    Undecodable,
    UnfreezeAccount,
    encode_json,
)
from scripts.schema import main as schema_main

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schema"


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / name).read_text()))


def test_the_schemas_are_current() -> None:
    assert schema_main(["--check", str(SCHEMA_DIR)]) == 0, "run `make docs`"


@pytest.mark.parametrize(
    "command",
    [
        OpenAccount("o-1", 42, 1, "EUR"),
        Deposit("d-1", 42, 1, AMOUNT_MAX, "EUR"),
        Transfer("t-1", 42, 1, 77, 2**31 - 1, 1, "USD"),
        SetCreditLimit("l-1", 42, 1, 0, "risk-1", b"s" * 64),
        UnfreezeAccount("u-1", 2**63 - 1, 1, "risk-1", b"s" * 64),
    ],
)
def test_what_the_decoder_accepts_the_schema_accepts(command: Any) -> None:
    data = encode_json(command)
    assert decode_command(data) == command
    _validator("command.schema.json").validate(json.loads(data))


@pytest.mark.parametrize(
    "document",
    [
        {"type": "deposit", "id": "d", "customer": 1, "account": 1, "amount": 0, "currency": "EUR"},
        {"type": "deposit", "id": "d", "customer": 0, "account": 1, "amount": 5, "currency": "EUR"},
        {
            "type": "deposit",
            "id": "a b",
            "customer": 1,
            "account": 1,
            "amount": 5,
            "currency": "EUR",
        },
        {"type": "deposit", "id": "d", "customer": 1, "account": 1, "amount": 5, "currency": "XXX"},
        {
            "type": "open_account",
            "id": "o",
            "customer": 1,
            "account": 1,
            "currency": "EUR",
            "credit_limit": 5,
        },
        {"type": "credit_leg", "id": "t/credit/1", "customer": 1},
        {"type": "launch", "id": "x", "customer": 1},
    ],
)
def test_what_the_decoder_refuses_the_schema_refuses(document: dict[str, Any]) -> None:
    assert isinstance(decode_command(msgspec.json.encode(document)), Invalid | Undecodable)
    with pytest.raises(jsonschema.ValidationError):
        _validator("command.schema.json").validate(document)


def test_results_and_dead_letters_match_their_schemas() -> None:
    result = Result(
        "t-1",
        Status.REJECTED,
        Reason.INSUFFICIENT_FUNDS,
        "account (42, 1) has 5, limit 0",
        (Balance(42, 1, 5),),
        1,
        2,
        3,
        4,
        forwarded_from=7,
    )
    _validator("result.schema.json").validate(json.loads(encode_json(result)))
    letter = DeadLetter("undecodable", "not JSON", "p.commands", 3, 9, b"42", b"\xc1")
    _validator("dead_letter.schema.json").validate(json.loads(encode_json(letter)))
