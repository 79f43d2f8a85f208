"""Misrouted commands are forwarded once, never forged, never round in a loop; every
result of a movement has one shape; results come back in the command's encoding."""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from engine.core.authority import fresh_authority
from engine.core.batch import Decoded, Fence, build_commit, decode_records
from engine.core.book import Incoming
from engine.core.config import ResultsEncoding
from engine.core.ledger import PartitionLedger
from engine.core.messages import (
    FORWARDED_FROM_HEADER,
    Balance,
    Command,
    Deposit,
    Forwarded,
    Invalid,
    OpenAccount,
    Reason,
    Result,
    Status,
    Transfer,
    Withdraw,
    encode,
    encode_json,
    fingerprint,
)
from engine.core.records import OutboxKind, Position
from engine.core.routing import partition_of
from engine.core.saga import credit_leg
from engine.kafka.relay import _record

PARTITIONS = 8
AUTHORITY, _ = fresh_authority("fw.commands")
INTERNAL = "fw.internal"
CUSTOMER = 5
HOME = partition_of(CUSTOMER, PARTITIONS)
ELSEWHERE = (HOME + 1) % PARTITIONS


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: int
    headers: tuple[tuple[str, bytes], ...] = ()


def _decode(*records: Record) -> Decoded:
    return decode_records(records, 65_536, AUTHORITY, PARTITIONS, Position(0, 0), INTERNAL)


def test_a_misrouted_command_is_forwarded_as_it_came_to_its_customers_partition() -> None:
    value = encode_json(Deposit("d-1", CUSTOMER, 1, 5, "EUR"))
    decoded = _decode(Record("fw.commands", ELSEWHERE, 7, b"whatever", value, 1_234))
    assert decoded.incoming == [] and decoded.end == Position(8, 0)
    (row,) = decoded.forwards
    assert (row.kind, row.target_partition, row.src_offset) == (OutboxKind.FORWARD, HOME, 7)
    assert row.key == b"5", "keyed as the engine keys a customer"
    record = _record(ELSEWHERE, row)
    assert record["value"] == value and record["timestamp"] == 1_234
    assert (FORWARDED_FROM_HEADER, str(ELSEWHERE).encode()) in record["headers"]
    assert msgspec.msgpack.decode(row.value, type=Forwarded).json


def test_a_forwarded_command_is_answered_with_where_it_came_from() -> None:
    headers = ((FORWARDED_FROM_HEADER, str(ELSEWHERE).encode()),)
    value = encode(OpenAccount("o-1", CUSTOMER, 1, "EUR"))
    decoded = _decode(Record("fw.commands", HOME, 3, b"5", value, 1, headers))
    (incoming,) = decoded.incoming
    assert incoming.forwarded_from == ELSEWHERE
    outcome = PartitionLedger(HOME, PARTITIONS, {}).decide_batch(decoded.incoming, {}, 1)
    assert outcome.results[0].forwarded_from == ELSEWHERE


def test_a_command_forwarded_and_still_misrouted_is_never_forwarded_again() -> None:
    headers = ((FORWARDED_FROM_HEADER, b"2"),)
    value = encode(Deposit("d-2", CUSTOMER, 1, 5, "EUR"))
    decoded = _decode(Record("fw.commands", ELSEWHERE, 4, b"5", value, 1, headers))
    assert decoded.forwards == []
    ledger = PartitionLedger(ELSEWHERE, PARTITIONS, {})
    (result,) = ledger.decide_batch(decoded.incoming, {}, 1).results
    assert result.reason is Reason.WRONG_PARTITION


def test_legs_and_invalid_commands_are_never_forwarded() -> None:
    leg = credit_leg(Transfer("t-1", 9, 1, CUSTOMER, 1, 5, "EUR"), 0, 0)
    signed = encode(AUTHORITY.sign_leg(leg, HOME))
    invalid = encode(Deposit("d-3", CUSTOMER, 1, 0, "EUR"))
    decoded = _decode(
        Record(INTERNAL, ELSEWHERE, 1, b"5", signed, 1),
        Record("fw.commands", ELSEWHERE, 2, b"5", invalid, 1),
    )
    assert decoded.forwards == []
    assert decoded.forged_legs == ["credit_leg"], "a leg's MAC names its partition"
    (answered,) = decoded.incoming
    assert isinstance(answered.command, Invalid)
    assert answered.command.reason is Reason.AMOUNT_NOT_POSITIVE


def _run(ledger: PartitionLedger, *commands: Command) -> list[Result]:
    batch = [Incoming(n, n, 0, c, fingerprint(c)) for n, c in enumerate(commands)]
    return ledger.decide_batch(batch, {}, 1).results


def test_every_result_of_a_movement_shows_the_payers_balance() -> None:
    ledger = PartitionLedger(HOME, PARTITIONS, {})
    other = next(c for c in range(6, 500) if partition_of(c, PARTITIONS) == HOME)
    results = _run(
        ledger,
        OpenAccount("o", CUSTOMER, 1, "EUR"),
        Deposit("d", CUSTOMER, 1, 70, "EUR"),
        Withdraw("w", CUSTOMER, 1, 500, "EUR"),
        Transfer("t", CUSTOMER, 1, other, 1, 5, "EUR"),
        Deposit("d-usd", CUSTOMER, 1, 5, "USD"),
        Deposit("d-none", CUSTOMER, 9, 5, "EUR"),
    )
    assert [r.reason for r in results[2:]] == [
        Reason.INSUFFICIENT_FUNDS,
        Reason.ACCOUNT_NOT_FOUND,
        Reason.CURRENCY_MISMATCH,
        Reason.ACCOUNT_NOT_FOUND,
    ]
    assert [r.balances for r in results[2:]] == [(Balance(CUSTOMER, 1, 70),)] * 3 + [()]


def test_results_go_back_in_the_commands_encoding_or_as_configured() -> None:
    ledger = PartitionLedger(HOME, PARTITIONS, {})
    outcome = ledger.decide_batch(
        [
            Incoming(0, 0, 0, OpenAccount("o-j", CUSTOMER, 1, "EUR"), 1, json=True),
            Incoming(1, 1, 0, OpenAccount("o-m", CUSTOMER, 2, "EUR"), 2, json=False),
        ],
        {},
        1,
    )
    fence = Fence(HOME, 1, Position(0, 0), Position(2, 0))
    as_command = build_commit(fence, outcome, Decoded(fence.end), (0, 0), AUTHORITY)
    assert [r.value.startswith(b"{") for r in as_command.outbox] == [True, False]
    all_json = build_commit(
        fence, outcome, Decoded(fence.end), (0, 0), AUTHORITY, ResultsEncoding.JSON
    )
    assert all(r.value.startswith(b"{") for r in all_json.outbox)
    assert all(not raw.startswith(b"{") for raw in as_command.applied_results), "cups keep msgpack"
    assert msgspec.json.decode(all_json.outbox[1].value, type=Result).status is Status.ACCEPTED
