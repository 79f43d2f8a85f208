"""Joint lending in the pure ledger: draws, repayments and interest split with partner
banks exactly in integers, and each day's clearing net equal to the settlement journal."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.book import (
    SYSTEM_CUSTOMER,
    ClearingKind,
    PartnerAccount,
    partner_account_number,
)
from engine.core.credit import partner_interest, split
from engine.core.decoding import validate
from engine.core.messages import (
    BASIS_POINTS,
    ChangeCreditLine,
    Command,
    Deposit,
    Draw,
    GrantCreditLine,
    OpenAccount,
    Reason,
    RegisterPartner,
    Repay,
)
from tests.unit.test_credit import ROUTE, A, B, Bank, check_books, close, open_bank

PARTNER = 7
OTHER = 8


def register(partner: int = PARTNER, currency: str = "EUR") -> RegisterPartner:
    return RegisterPartner(
        f"partner-{partner}-{currency}", ROUTE, partner, f"Bank {partner}", currency, "DE44500105"
    )


def joint(customer: int = A, share_bp: int = 8_000, rate_bp: int = 1_000) -> GrantCreditLine:
    return GrantCreditLine(
        f"joint-{customer}",
        customer,
        1,
        "EUR",
        1_000_000,
        1_825,
        3_650,
        500_000,
        30,
        partner=PARTNER,
        partner_share_bp=share_bp,
        partner_rate_bp=rate_bp,
    )


def partner_balance(bank: Bank, kind: PartnerAccount, partner: int = PARTNER) -> int:
    key = (SYSTEM_CUSTOMER, partner_account_number(kind, partner, "EUR"))
    account = bank.ledger.book.accounts.get(key)
    return 0 if account is None else account.balance


def joint_bank(*customers: int, share_bp: int = 8_000, deposit: int = 10**9) -> Bank:
    """Day 0 closed, partner 7 registered, a joint line for each of ``customers``."""
    bank = Bank()
    bank.one(close(0))
    assert bank.one(register()).accepted
    for customer in customers:
        bank.one(OpenAccount(f"open-{customer}", customer, 1, "EUR"))
        bank.one(_deposit(customer, deposit))
        assert bank.one(joint(customer, share_bp)).accepted
    return bank


def _deposit(customer: int, amount: int) -> Command:
    return Deposit(f"dep-{customer}", customer, 1, amount, "EUR")


def _line(customer: int, partner: int, command_id: str) -> GrantCreditLine:
    """A small EUR line at 1% a year, half funded by ``partner`` at 0.5%."""
    return GrantCreditLine(
        command_id, customer, 1, "EUR", 10, 100, 100, 10, 1,
        partner=partner, partner_share_bp=5_000, partner_rate_bp=50,
    )  # fmt: skip


def check_partners(bank: Bank) -> None:
    """The partner's accounts are what its loans and entries say."""
    check_books(bank)
    loans = [loan for ls in bank.ledger.credit.loans.values() for loan in ls]
    assert all(0 <= loan.partner_principal <= loan.principal for loan in loans)
    assert all(0 <= loan.partner_interest <= loan.interest for loan in loans)
    funded = sum(loan.partner_principal for loan in loans if loan.partner == PARTNER)
    owed = sum(loan.partner_interest for loan in loans if loan.partner == PARTNER)
    assert partner_balance(bank, PartnerAccount.FUNDED) == funded
    assert partner_balance(bank, PartnerAccount.INTEREST) == owed
    entries = bank.clearing
    nets = sum(e.amount for e in entries if e.kind is ClearingKind.NET)
    today = bank.ledger.credit.today
    open_today = sum(e.amount for e in entries if e.kind is not ClearingKind.NET and e.day == today)
    assert partner_balance(bank, PartnerAccount.SETTLEMENT) == nets
    settlement = partner_account_number(PartnerAccount.SETTLEMENT, PARTNER, "EUR")
    journal = sum(amount for _, customer, number, amount in bank.journal if number == settlement)
    assert journal == nets, "the days' nets are the settlement account's journal"
    assert partner_balance(bank, PartnerAccount.CLEARING) == open_today
    for day in {e.day for e in entries if e.kind is ClearingKind.NET}:
        moved = sum(e.amount for e in entries if e.day == day and e.kind is not ClearingKind.NET)
        (net,) = [e.amount for e in entries if e.day == day and e.kind is ClearingKind.NET]
        assert net == moved, "the day's net is the sum of its movements"


@settings(max_examples=500)
@given(whole=st.integers(0, 10**15), share=st.integers(0, BASIS_POINTS))
def test_a_split_is_exact(whole: int, share: int) -> None:
    part = split(whole, share, BASIS_POINTS)
    assert 0 <= part <= whole
    assert part + (whole - part) == whole
    assert split(whole, BASIS_POINTS, BASIS_POINTS) == whole


@settings(max_examples=500)
@given(
    interest=st.integers(0, 10**12),
    weight=st.integers(0, 10**20),
    more=st.integers(0, 10**20),
    carry=st.integers(0, 10**20),
)
def test_a_partners_interest_never_exceeds_the_loans(
    interest: int, weight: int, more: int, carry: int
) -> None:
    whole = weight + more
    share, left = partner_interest(interest, weight, whole, carry % whole if whole else 0)
    assert 0 <= share <= interest
    if whole:
        assert 0 <= left < whole


def test_a_draw_is_funded_by_the_partner_in_its_share() -> None:
    bank = joint_bank(A)
    result = bank.one(Draw("loan-1", A, 10_001, "EUR"))
    assert result.accepted
    (loan,) = bank.loans()
    assert (loan.partner, loan.partner_principal) == (PARTNER, 8_000)  # 80% of 10,001, down
    assert partner_balance(bank, PartnerAccount.FUNDED) == 8_000
    assert partner_balance(bank, PartnerAccount.CLEARING) == -8_000
    (entry,) = bank.clearing
    assert (entry.kind, entry.loan, entry.amount, entry.partner) == (
        ClearingKind.FUNDED,
        "loan-1",
        -8_000,
        PARTNER,
    )
    check_partners(bank)


def test_the_close_clears_the_day_and_interest_is_shared() -> None:
    bank = joint_bank(A, share_bp=5_000)
    bank.one(Draw("loan-1", A, 365_000, "EUR"))
    closed = bank.one(close(1))
    assert closed.accepted
    (loan,) = bank.loans()
    # 18.25% on 365,000 is 182.5 a day: 182; the partner's 10% on half: 50/182.5 of it
    assert loan.interest == 182
    assert loan.partner_interest == 182 * 182_500_000 // 666_125_000
    net = [e for e in bank.clearing if e.kind is ClearingKind.NET]
    assert [(e.day, e.amount) for e in net] == [(bank.ledger.credit.last_closed, -182_500)]
    assert partner_balance(bank, PartnerAccount.CLEARING) == 0
    assert partner_balance(bank, PartnerAccount.SETTLEMENT) == -182_500
    check_partners(bank)


def test_repayments_are_split_by_each_loans_shares_and_close_it_exactly() -> None:
    bank = joint_bank(A, share_bp=7_777)
    bank.one(Draw("l1", A, 99_999, "EUR"))
    bank.one(Draw("l2", A, 12_345, "EUR"))
    for offset in range(1, 40):
        bank.one(close(offset))
    bank.one(Repay("r1", A, 50_000, "EUR"))
    check_partners(bank)
    bank.one(Repay("r2", A, 10**6, "EUR"))
    assert not bank.loans()
    assert partner_balance(bank, PartnerAccount.FUNDED) == 0
    assert partner_balance(bank, PartnerAccount.INTEREST) == 0
    paid = [e for e in bank.clearing if e.command_id in {"r1", "r2"}]
    principal = sum(e.amount for e in paid if e.kind is ClearingKind.PRINCIPAL)
    funded = -sum(e.amount for e in bank.clearing if e.kind is ClearingKind.FUNDED)
    assert principal == funded, "the partner gets back all it funded"
    check_partners(bank)


def test_partner_refusals() -> None:
    bank = open_bank(A, B)
    assert bank.one(joint(A)).reason is Reason.CREDIT_LINE_EXISTS
    no_partner = joint(B)
    assert bank.one(no_partner).reason is Reason.PARTNER_NOT_FOUND
    assert bank.one(register(currency="USD")).accepted
    assert bank.one(register(currency="EUR")).reason is Reason.PARTNER_EXISTS
    in_dollars = _line(B, PARTNER, "other")
    assert bank.one(in_dollars).reason is Reason.PARTNER_TERMS
    bank.one(register(OTHER))
    assert bank.one(_line(B, OTHER, "ok")).accepted
    lower = ChangeCreditLine("c", B, 10, 49, 49, 10, 1)
    assert bank.one(lower).reason is Reason.PARTNER_TERMS


def test_funding_terms_are_validated_from_the_record() -> None:
    base = joint()
    assert validate(base) == (Reason.NONE, "")
    for wrong in (
        {"partner_share_bp": 0},
        {"partner_share_bp": BASIS_POINTS + 1},
        {"partner_rate_bp": 1_826},
        {"partner": 10_000},
        {"partner": 0},
    ):
        command = msgspec.structs.replace(base, **wrong)
        assert validate(command)[0] is Reason.BAD_PARTNER, wrong
    bad_name = RegisterPartner("p", ROUTE, 1, "", "EUR", "X")
    assert validate(bad_name)[0] is Reason.BAD_PARTNER
    bad_account = RegisterPartner("p", ROUTE, 1, "Bank", "EUR", "de-1")
    assert validate(bad_account)[0] is Reason.BAD_PARTNER


_DAYS = st.lists(
    st.tuples(
        st.sampled_from(["draw", "repay", "close", "reload"]),
        st.integers(1, 400_000),
        st.sampled_from([A, B]),
    ),
    max_size=50,
)


@settings(max_examples=60, deadline=None)
@given(actions=_DAYS, share=st.integers(1, BASIS_POINTS), rate=st.integers(0, 1_825))
def test_random_days_of_joint_lending_keep_every_position(
    actions: Sequence[tuple[str, int, int]], share: int, rate: int
) -> None:
    bank = Bank()
    bank.one(close(0))
    bank.one(register())
    for customer in (A, B):
        bank.one(OpenAccount(f"o-{customer}", customer, 1, "EUR"))
        bank.one(_deposit(customer, 10**9))
        bank.one(joint(customer, share, rate))
    today = 0
    for n, (kind, amount, customer) in enumerate(actions):
        match kind:
            case "draw":
                bank.one(Draw(f"d{n}", customer, amount, "EUR"))
            case "repay":
                bank.one(Repay(f"r{n}", customer, amount, "EUR"))
            case "close":
                today += 1 + amount % 3
                assert bank.one(close(today)).accepted
            case _:
                bank.ledger.credit.load([row for row in bank.rows.values() if row.open])
        check_partners(bank)
