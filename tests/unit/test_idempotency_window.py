"""The idempotency window: commands issued before a partition's horizon are answered
``id_expired`` and never applied, whatever the records still hold; a record is deleted
only below the committed horizon; so no command is applied twice, however late it comes
back (engine.core.ledger)."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.book import Incoming, Known, SystemAccount, system_account_number
from engine.core.ledger import IdempotencyWindow, PartitionLedger
from engine.core.messages import (
    Command,
    Deposit,
    OpenAccount,
    Reason,
    Result,
    SettleLeg,
    Status,
    Transfer,
    fingerprint,
    issued,
)
from engine.core.routing import partition_of
from engine.core.saga import credit_leg

PARTITIONS = 4
PARTITION = 0
A, B = [c for c in range(1, 200) if partition_of(c, PARTITIONS) == PARTITION][:2]
PAYER = next(c for c in range(1, 200) if partition_of(c, PARTITIONS) != PARTITION)
WINDOW_MS = 60_000
SKEW_MS = 5_000
T0_MS = 1_800_000_000_000
"""A time in 2027, in ms since the epoch."""


def windowed() -> PartitionLedger:
    return PartitionLedger(PARTITION, PARTITIONS, {}, IdempotencyWindow(WINDOW_MS, SKEW_MS))


def decide(
    ledger: PartitionLedger,
    commands: Sequence[Command],
    now_ms: int,
    known: dict[str, Known] | None = None,
) -> list[Result]:
    batch = [Incoming(i, i, now_ms, c, fingerprint(c)) for i, c in enumerate(commands)]
    outcome = ledger.decide_batch(batch, known or {}, now_us=now_ms * 1000)
    assert outcome.horizon_ms == ledger.horizon_ms
    return outcome.results


def opened(ledger: PartitionLedger, now_ms: int) -> None:
    results = decide(ledger, [issued(OpenAccount(f"open-{A}", A, 1, "EUR"), now_ms)], now_ms)
    assert results[0].accepted


def test_a_command_without_an_issue_time_is_refused_and_not_recorded() -> None:
    ledger = windowed()
    outcome = ledger.decide_batch(
        [Incoming(0, 0, T0_MS, command := OpenAccount("o", A, 1, "EUR"), fingerprint(command))],
        {},
        now_us=T0_MS * 1000,
    )
    (result,) = outcome.results
    assert (result.status, result.reason) == (Status.REJECTED, Reason.ISSUED_AT)
    assert "issued_at_ms is required" in result.detail
    assert outcome.applied == [] and ledger.book.accounts == {}


def test_a_command_issued_ahead_of_the_clock_is_refused() -> None:
    ledger = windowed()
    ahead = issued(OpenAccount("o", A, 1, "EUR"), T0_MS + SKEW_MS + 1)
    (result,) = decide(ledger, [ahead], T0_MS)
    assert result.reason is Reason.ISSUED_AT and "ahead of the engine's clock" in result.detail
    within = issued(OpenAccount("o", A, 1, "EUR"), T0_MS + SKEW_MS)
    assert decide(ledger, [within], T0_MS)[0].accepted


def test_a_resend_after_the_window_is_expired_even_while_its_record_remains() -> None:
    ledger = windowed()
    opened(ledger, T0_MS)
    deposit = issued(Deposit("d-1", A, 1, 500, "EUR"), T0_MS)
    (first,) = decide(ledger, [deposit], T0_MS)
    assert first.accepted
    record = {deposit.id: Known(fingerprint(deposit), first)}
    (again,) = decide(ledger, [deposit], T0_MS + WINDOW_MS, record)
    assert again == first, "inside the window: the recorded result"
    later = T0_MS + WINDOW_MS + 1
    outcome = ledger.decide_batch(
        [Incoming(9, 9, later, deposit, fingerprint(deposit))], record, now_us=later * 1000
    )
    (expired,) = outcome.results
    assert (expired.status, expired.reason) == (Status.REJECTED, Reason.ID_EXPIRED)
    assert outcome.applied == [] and outcome.journal == [], "not recorded, nothing moved"
    assert ledger.book.accounts[(A, 1)].balance == 500


def test_the_horizon_never_goes_back() -> None:
    ledger = windowed()
    ledger.raise_horizon(T0_MS)
    decide(ledger, [], T0_MS - 10 * WINDOW_MS)
    assert ledger.horizon_ms == T0_MS
    ledger.raise_horizon(T0_MS - 1)
    assert ledger.horizon_ms == T0_MS
    (result,) = decide(ledger, [issued(OpenAccount("o", A, 1, "EUR"), T0_MS - 1)], T0_MS)
    assert result.reason is Reason.ID_EXPIRED


def test_a_credit_leg_of_a_transfer_issued_before_the_window_is_refunded() -> None:
    """The payee refuses it (its record could be gone: it could be a copy of a leg applied
    long ago) and answers with a settle leg that refunds the payer."""
    ledger = windowed()
    opened(ledger, T0_MS)
    transfer = issued(Transfer("t-1", PAYER, 1, A, 1, 70, "EUR"), T0_MS)
    leg = credit_leg(transfer, 3, T0_MS)
    assert leg.issued_at_ms == T0_MS
    later = T0_MS + WINDOW_MS + 1
    outcome = ledger.decide_batch([Incoming(4, 4, later, leg, fingerprint(leg))], {}, later * 1000)
    (settle,) = [planned.command for planned in outcome.legs]
    assert isinstance(settle, SettleLeg)
    assert settle.reason == Reason.ID_EXPIRED and outcome.journal == []
    assert ledger.book.accounts[(A, 1)].balance == 0
    clearing = (0, system_account_number(SystemAccount.CLEARING, "EUR"))
    assert clearing not in outcome.changed


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 3 * WINDOW_MS), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_no_command_is_applied_twice_whenever_it_comes_back(
    sends: list[tuple[int, int, bool]],
) -> None:
    """Commands (a few ids, each issued once) sent and re-sent at random later times,
    with the records below the committed horizon pruned at random: every id changes the
    balance at most once, and a re-send is answered with the recorded result or
    ``id_expired``, never applied again."""
    ledger = windowed()
    opened(ledger, T0_MS)
    deposits = {n: issued(Deposit(f"d-{n}", A, 1, 10 + n, "EUR"), T0_MS + n) for n in range(6)}
    records: dict[str, Known] = {}
    committed_horizon = 0
    applied: dict[str, int] = {}
    now_ms = T0_MS
    for number, delay_ms, prune in sends:
        now_ms += delay_ms // 4
        deposit = deposits[number]
        batch = [Incoming(0, 0, now_ms, deposit, fingerprint(deposit))]
        outcome = ledger.decide_batch(batch, dict(records), now_us=now_ms * 1000)
        for record in outcome.applied:
            records[record.command_id] = Known(record.fingerprint, record.result)
            applied[record.command_id] = applied.get(record.command_id, 0) + 1
        committed_horizon = outcome.horizon_ms
        (result,) = outcome.results
        assert result.accepted or result.reason is Reason.ID_EXPIRED
        if prune:
            records = {
                command_id: known
                for command_id, known in records.items()
                if deposits[int(command_id[2:])].issued_at_ms >= committed_horizon
            }
    assert all(count == 1 for count in applied.values())
    expected = sum(10 + int(command_id[2:]) for command_id in applied)
    assert ledger.book.accounts[(A, 1)].balance == expected
