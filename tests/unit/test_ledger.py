"""Ledger rules, and properties over random command sequences."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.book import (
    SYSTEM_CUSTOMER,
    Account,
    AccountKey,
    AccountStatus,
    Incoming,
    Known,
    SystemAccount,
    system_account_number,
)
from engine.core.ledger import PartitionLedger
from engine.core.messages import (
    BALANCE_MAX,
    CloseAccount,
    Command,
    Deposit,
    FreezeAccount,
    OpenAccount,
    Reason,
    Result,
    SetCreditLimit,
    Status,
    Transfer,
    UnfreezeAccount,
    Withdraw,
    fingerprint,
)
from engine.core.routing import partition_of

PARTITIONS = 4
PARTITION = 0
# Customers living in partition 0, and one living elsewhere.
LOCAL = [c for c in range(1, 200) if partition_of(c, PARTITIONS) == PARTITION][:4]
FOREIGN = next(c for c in range(1, 200) if partition_of(c, PARTITIONS) != PARTITION)
A, B, C, D = LOCAL


def ledger() -> PartitionLedger:
    return PartitionLedger(PARTITION, PARTITIONS, {})


def run(
    subject: PartitionLedger, commands: Sequence[Command], known: dict[str, Known] | None = None
) -> list[Result]:
    batch = [Incoming(i, i, 0, c, fingerprint(c)) for i, c in enumerate(commands)]
    return subject.decide_batch(batch, known or {}, now_us=1).results


def reasons(results: Sequence[Result]) -> list[Reason]:
    return [r.reason for r in results]


def test_open_deposit_withdraw_transfer() -> None:
    subject = ledger()
    results = run(
        subject,
        [
            OpenAccount("o1", A, 1, "EUR"),
            OpenAccount("o2", B, 1, "EUR"),
            Deposit("d1", A, 1, 1_000, "EUR"),
            Withdraw("w1", A, 1, 300, "EUR"),
            Transfer("t1", A, 1, B, 1, 200, "EUR"),
        ],
    )
    assert all(r.accepted for r in results)
    assert subject.book.accounts[(A, 1)].balance == 500
    assert subject.book.accounts[(B, 1)].balance == 200
    cash = subject.book.accounts[
        (SYSTEM_CUSTOMER, system_account_number(SystemAccount.CASH, "EUR"))
    ]
    assert cash.balance == -700
    assert results[-1].balances[0].balance == 500


def test_no_overdraft_unless_credit_limit() -> None:
    subject = ledger()
    results = run(
        subject,
        [
            OpenAccount("o1", A, 1, "EUR"),
            OpenAccount("o2", B, 1, "EUR"),
            SetCreditLimit("l2", B, 1, 100),
            Withdraw("w1", A, 1, 1, "EUR"),
            Withdraw("w2", B, 1, 100, "EUR"),
            Withdraw("w3", B, 1, 1, "EUR"),
        ],
    )
    assert reasons(results) == [
        Reason.NONE,
        Reason.NONE,
        Reason.NONE,
        Reason.INSUFFICIENT_FUNDS,
        Reason.NONE,
        Reason.INSUFFICIENT_FUNDS,
    ]
    assert subject.book.accounts[(B, 1)].balance == -100


def test_a_credit_limit_never_drops_below_what_is_owed() -> None:
    subject = ledger()
    results = run(
        subject,
        [
            OpenAccount("o1", A, 1, "EUR"),
            SetCreditLimit("l1", A, 1, 500),
            Withdraw("w1", A, 1, 300, "EUR"),
            SetCreditLimit("l2", A, 1, 299),
            SetCreditLimit("l3", A, 1, 300),
            Withdraw("w2", A, 1, 1, "EUR"),
            SetCreditLimit("l4", D, 1, 5),
        ],
    )
    assert reasons(results) == [
        Reason.NONE,
        Reason.NONE,
        Reason.NONE,
        Reason.CREDIT_IN_USE,
        Reason.NONE,
        Reason.INSUFFICIENT_FUNDS,
        Reason.ACCOUNT_NOT_FOUND,
    ]
    assert (subject.book.accounts[(A, 1)].balance, subject.book.accounts[(A, 1)].credit_limit) == (
        -300,
        300,
    )


def test_unfreeze_opens_a_frozen_account_again() -> None:
    subject = ledger()
    results = run(
        subject,
        [
            OpenAccount("o1", A, 1, "EUR"),
            Deposit("d1", A, 1, 50, "EUR"),
            FreezeAccount("f1", A, 1),
            Withdraw("w1", A, 1, 50, "EUR"),
            UnfreezeAccount("u1", A, 1),
            Withdraw("w2", A, 1, 50, "EUR"),
            CloseAccount("c1", A, 1),
            UnfreezeAccount("u2", A, 1),
        ],
    )
    assert reasons(results) == [
        Reason.NONE,
        Reason.NONE,
        Reason.NONE,
        Reason.ACCOUNT_FROZEN,
        Reason.NONE,
        Reason.NONE,
        Reason.NONE,
        Reason.ACCOUNT_CLOSED,
    ]


def test_frozen_closed_currency_and_missing_accounts_refuse() -> None:
    subject = ledger()
    results = run(
        subject,
        [
            OpenAccount("o1", A, 1, "EUR"),
            OpenAccount("o2", B, 1, "USD"),
            OpenAccount("o3", C, 1, "EUR"),
            Deposit("d1", A, 1, 50, "EUR"),
            Transfer("t1", A, 1, B, 1, 5, "EUR"),
            FreezeAccount("f1", C, 1),
            Transfer("t2", A, 1, C, 1, 5, "EUR"),
            CloseAccount("c1", A, 1),
            CloseAccount("c2", C, 1),
            Deposit("d2", C, 1, 5, "EUR"),
            Deposit("d3", D, 1, 5, "EUR"),
            Transfer("t3", A, 1, A, 1, 5, "EUR"),
            Transfer("t4", A, 1, FOREIGN, 1, 5, "EUR"),
            OpenAccount("o4", A, 1, "EUR"),
            Deposit("d4", FOREIGN, 1, 5, "EUR"),
        ],
    )
    assert reasons(results) == [
        Reason.NONE,
        Reason.NONE,
        Reason.NONE,
        Reason.NONE,
        Reason.CURRENCY_MISMATCH,
        Reason.NONE,
        Reason.ACCOUNT_FROZEN,
        Reason.BALANCE_NOT_ZERO,
        Reason.NONE,
        Reason.ACCOUNT_CLOSED,
        Reason.ACCOUNT_NOT_FOUND,
        Reason.SAME_ACCOUNT,
        Reason.NONE,
        Reason.ACCOUNT_EXISTS,
        Reason.WRONG_PARTITION,
    ]
    assert subject.book.accounts[(C, 1)].status is AccountStatus.CLOSED
    assert results[12].status is Status.PENDING, "a cross-partition transfer waits for its leg"


def test_overflow_is_refused_not_wrapped() -> None:
    subject = ledger()
    subject.book.accounts[(A, 1)] = Account(A, 1, "EUR", BALANCE_MAX - 10)
    results = run(subject, [Deposit("d1", A, 1, 11, "EUR"), Deposit("d2", A, 1, 10, "EUR")])
    assert reasons(results) == [Reason.OVERFLOW, Reason.NONE]
    assert subject.book.accounts[(A, 1)].balance == BALANCE_MAX


def test_replay_returns_the_original_result_and_conflict_is_rejected() -> None:
    subject = ledger()
    first = run(
        subject,
        [
            OpenAccount("o1", A, 1, "EUR"),
            Deposit("d1", A, 1, 10, "EUR"),
            Deposit("d1", A, 1, 10, "EUR"),
            Deposit("d1", A, 1, 99, "EUR"),
        ],
    )
    assert first[2] == first[1]
    assert first[3].reason is Reason.DUPLICATE_CONFLICT
    assert subject.book.accounts[(A, 1)].balance == 10
    known = {"d1": Known(fingerprint(Deposit("d1", A, 1, 10, "EUR")), first[1])}
    again = run(subject, [Deposit("d1", A, 1, 10, "EUR")], known)
    assert again == [first[1]]
    assert subject.book.accounts[(A, 1)].balance == 10


# --- properties -----------------------------------------------------------------------

customers = st.sampled_from([A, B, C, D])
amounts = st.integers(min_value=1, max_value=2_000)
ids = st.integers(min_value=0, max_value=60).map(lambda n: f"c{n}")
commands = st.one_of(
    st.builds(OpenAccount, ids, customers, st.just(1), st.just("EUR")),
    st.builds(SetCreditLimit, ids, customers, st.just(1), st.sampled_from([0, 0, 500])),
    st.builds(UnfreezeAccount, ids, customers, st.just(1)),
    st.builds(Deposit, ids, customers, st.just(1), amounts, st.just("EUR")),
    st.builds(Withdraw, ids, customers, st.just(1), amounts, st.just("EUR")),
    st.builds(Transfer, ids, customers, st.just(1), customers, st.just(1), amounts, st.just("EUR")),
    st.builds(FreezeAccount, ids, customers, st.just(1)),
    st.builds(CloseAccount, ids, customers, st.just(1)),
)


def snapshot(subject: PartitionLedger) -> dict[AccountKey, tuple[int, AccountStatus]]:
    return {k: (a.balance, a.status) for k, a in subject.book.accounts.items()}


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, max_size=60), st.integers(min_value=1, max_value=10))
def test_money_is_conserved_and_limits_hold(sequence: list[Command], batch_size: int) -> None:
    subject = ledger()
    journal_total = 0
    for start in range(0, len(sequence), batch_size):
        batch = [
            Incoming(start + i, start + i, 0, c, fingerprint(c))
            for i, c in enumerate(sequence[start : start + batch_size])
        ]
        outcome = subject.decide_batch(batch, {}, now_us=1)
        journal_total += sum(row.amount for row in outcome.journal)
    assert journal_total == 0
    assert sum(a.balance for a in subject.book.accounts.values()) == 0
    for account in subject.book.accounts.values():
        if not account.is_system:
            assert account.balance >= -account.credit_limit


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, max_size=60))
def test_replaying_the_sequence_changes_nothing(sequence: list[Command]) -> None:
    subject = ledger()
    batch = [Incoming(i, i, 0, c, fingerprint(c)) for i, c in enumerate(sequence)]
    outcome = subject.decide_batch(batch, {}, now_us=1)
    known = {a.command_id: Known(a.fingerprint, a.result) for a in outcome.applied}
    before = snapshot(subject)
    replay = subject.decide_batch(batch, known, now_us=2)
    assert snapshot(subject) == before
    assert replay.journal == []
    assert replay.applied == []
    for original, again in zip(outcome.results, replay.results, strict=True):
        if original.reason is Reason.DUPLICATE_CONFLICT:
            assert again.reason is Reason.DUPLICATE_CONFLICT
        else:
            assert again == known[original.command_id].result
