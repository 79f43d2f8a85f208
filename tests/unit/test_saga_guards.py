"""The saga's edges in the pure ledger: legs no worker made change nothing, refunds find
their account open, and the book of transfers in flight stays bounded."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest

from engine.core import saga
from engine.core.book import SYSTEM_CUSTOMER, Incoming, Known, SystemAccount, system_account_number
from engine.core.ledger import PartitionLedger
from engine.core.messages import (
    CloseAccount,
    Command,
    CreditLeg,
    Deposit,
    OpenAccount,
    Reason,
    Result,
    SettleLeg,
    Status,
    Transfer,
    fingerprint,
)
from engine.core.routing import partition_of
from engine.core.saga import credit_leg, settle_leg

PARTITIONS = 4
HOME = 0
PAYER = next(c for c in range(1, 500) if partition_of(c, PARTITIONS) == HOME)
PAYEE = next(c for c in range(1, 500) if partition_of(c, PARTITIONS) == 1)
CLEARING = (SYSTEM_CUSTOMER, system_account_number(SystemAccount.CLEARING, "EUR"))


class Book:
    """One partition's ledger fed commands at growing offsets."""

    def __init__(self, partition: int = HOME):
        self.ledger = PartitionLedger(partition, PARTITIONS, {})
        self.offset = 0

    def run(self, commands: Sequence[Command]) -> tuple[list[Result], list[str]]:
        batch = []
        for command in commands:
            batch.append(Incoming(self.offset, self.offset, 7, command, fingerprint(command)))
            self.offset += 1
        outcome = self.ledger.decide_batch(batch, {}, now_us=1)
        self.legs = [leg.command for leg in outcome.legs]
        self.applied = [a.command_id for a in outcome.applied]
        return outcome.results, [f.detail for f in outcome.forged]

    def balance(self, key: tuple[int, int]) -> int:
        return self.ledger.book.accounts[key].balance


def payer_book(funds: int = 1_000) -> tuple[Book, Transfer]:
    book = Book()
    transfer = Transfer("t-1", PAYER, 1, PAYEE, 1, 400, "EUR")
    book.run([OpenAccount("o", PAYER, 1, "EUR"), Deposit("d", PAYER, 1, funds, "EUR")])
    results, _ = book.run([transfer])
    assert results[0].status is Status.PENDING
    return book, transfer


def test_a_settle_leg_for_no_transfer_in_flight_is_forged() -> None:
    book = Book()
    book.run([OpenAccount("o", PAYER, 1, "EUR")])
    made_up = Transfer("t-x", PAYER, 1, PAYEE, 1, 10**15, "EUR")
    refund = settle_leg(credit_leg(made_up, 0, 0), Reason.ACCOUNT_NOT_FOUND, "no", 0)
    results, forged = book.run([refund])
    assert forged == ["no transfer 't-x' is in flight here"]
    assert results[0].reason is Reason.FORGED_LEG
    assert book.balance((PAYER, 1)) == 0
    assert book.applied == [], "a forged leg is not recorded: it cannot take the real id"


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 10**15},
        {"currency": "USD"},
        {"account": 2},
        {"to_customer": PAYEE + 4},
        {"to_account": 9},
        {"origin_offset": 0},
    ],
)
def test_a_settle_leg_must_match_its_transfer_in_flight(change: dict[str, object]) -> None:
    book, transfer = payer_book()
    leg = credit_leg(transfer, 2, 7)
    real = settle_leg(leg, Reason.ACCOUNT_CLOSED, "closed", 0)
    forged_leg = msgspec.structs.replace(real, **change)
    _, forged = book.run([forged_leg])
    assert forged and "does not match" in forged[0]
    assert book.balance((PAYER, 1)) == 600
    _, forged = book.run([real])
    assert not forged
    assert book.balance((PAYER, 1)) == 1_000, "the real refund still lands after the forgery"
    assert book.balance(CLEARING) == 0


def test_a_leg_id_taken_with_other_content_is_forged_not_a_conflict_result() -> None:
    book, transfer = payer_book()
    accepted = settle_leg(credit_leg(transfer, 2, 7), Reason.NONE, "", 400)
    again = msgspec.structs.replace(accepted, reason="account_closed")
    results, forged = book.run([accepted, again])
    assert forged and "used before" in forged[0]
    assert [r.reason for r in results] == [Reason.NONE, Reason.FORGED_LEG]
    assert book.balance((PAYER, 1)) == 600, "no refund after the settlement"


def test_a_credit_leg_for_a_customer_of_another_partition_is_forged() -> None:
    book = Book()
    stray = credit_leg(Transfer("t-2", PAYEE, 1, PAYEE, 1, 5, "EUR"), 0, 0)
    _, forged = book.run([stray])
    assert forged and "another partition" in forged[0]
    assert book.legs == [], "no settle leg (a refund) answers a forged credit"


def test_an_account_with_transfers_in_flight_cannot_close() -> None:
    book, transfer = payer_book(funds=400)
    assert book.balance((PAYER, 1)) == 0
    results, _ = book.run([CloseAccount("c-1", PAYER, 1)])
    assert results[0].reason is Reason.TRANSFERS_IN_FLIGHT
    refund = settle_leg(credit_leg(transfer, 2, 7), Reason.ACCOUNT_FROZEN, "frozen", 0)
    book.run([refund])
    assert book.balance((PAYER, 1)) == 400, "the refund found the account open"
    book.run([Transfer("t-3", PAYER, 1, PAYEE, 1, 400, "EUR")])
    accepted = settle_leg(
        credit_leg(Transfer("t-3", PAYER, 1, PAYEE, 1, 400, "EUR"), 5, 7), Reason.NONE, "", 400
    )
    book.run([accepted])
    results, _ = book.run([CloseAccount("c-2", PAYER, 1)])
    assert results[0].accepted


def test_transfers_in_flight_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(saga, "IN_FLIGHT_PER_PARTITION_MAX", 2)
    book, _ = payer_book()
    results, _ = book.run([Transfer(f"t-{n}", PAYER, 1, PAYEE, 1, 1, "EUR") for n in (10, 11, 12)])
    assert [r.reason for r in results] == [
        Reason.NONE,
        Reason.TOO_MANY_IN_FLIGHT,
        Reason.TOO_MANY_IN_FLIGHT,
    ]
    assert len(book.ledger.book.in_flight) == 2


def test_the_payee_side_answers_a_real_credit_leg() -> None:
    payee = Book(partition=1)
    payee.run([OpenAccount("o", PAYEE, 1, "EUR")])
    leg: CreditLeg = credit_leg(Transfer("t-9", PAYER, 1, PAYEE, 1, 25, "EUR"), 3, 7)
    _, forged = payee.run([leg])
    assert not forged
    assert payee.balance((PAYEE, 1)) == 25
    (answer,) = payee.legs
    assert isinstance(answer, SettleLeg) and answer.reason == ""


def test_two_payers_of_two_partitions_may_use_one_transfer_id() -> None:
    """Transfer ids are unique per partition only: their credit legs meet in one payee
    partition under distinct ids, and both are applied (neither is taken for a forgery)."""
    other_payer = next(c for c in range(1, 500) if partition_of(c, PARTITIONS) == 2)
    payee = Book(partition=1)
    payee.run([OpenAccount("o", PAYEE, 1, "EUR")])
    first = credit_leg(Transfer("t-1", PAYER, 1, PAYEE, 1, 10, "EUR"), 3, 7)
    second = credit_leg(Transfer("t-1", other_payer, 1, PAYEE, 1, 20, "EUR"), 3, 7)
    assert first.id != second.id
    _, forged = payee.run([first, second])
    assert not forged
    assert payee.balance((PAYEE, 1)) == 30


def test_a_settle_leg_delivered_again_is_checked_against_the_cup_not_forged() -> None:
    """A relay re-send of a settle leg that already settled finds no transfer in flight;
    the ledger refuses it with its id, which the fenced commit probes: the cup knows the id,
    so the batch is decided again with the recorded result, and nothing is forged."""
    book, transfer = payer_book()
    settle = settle_leg(credit_leg(transfer, 2, 7), Reason.NONE, "", 400)
    first = book.ledger.decide_batch([Incoming(10, 10, 7, settle, fingerprint(settle))], {}, 1)
    (applied,) = first.applied
    again = book.ledger.decide_batch([Incoming(11, 11, 7, settle, fingerprint(settle))], {}, 1)
    assert [f.leg_id for f in again.forged] == [settle.id], "the id goes to the commit's probe"
    known = {settle.id: Known(applied.fingerprint, applied.result)}
    decided_again = book.ledger.decide_batch(
        [Incoming(11, 11, 7, settle, fingerprint(settle))], known, 1
    )
    assert decided_again.forged == [] and decided_again.journal == []
    assert book.balance((PAYER, 1)) == 600
