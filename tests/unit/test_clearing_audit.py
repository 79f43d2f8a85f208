"""Reconcile's partner checks (shards.partner_audit, check 11 for joint lending) and the
partner figures it tallies, on the rows a real ledger writes, then on those rows with one
thing wrong each: no servers."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from engine.admin.reconcile import credit_book_text
from engine.core.book import (
    SYSTEM_CUSTOMER,
    AccountKey,
    ClearingKind,
    CreditKind,
    Incoming,
    PartnerAccount,
    SystemAccount,
    partner_account_number,
    system_account_number,
)
from engine.core.credit import Loan
from engine.core.errors import InvariantError
from engine.core.messages import (
    PARTNER_MAX,
    Deposit,
    Draw,
    GrantCreditLine,
    OpenAccount,
    RegisterPartner,
    Repay,
    fingerprint,
)
from shards.audit import Report
from shards.credit_audit import CreditAudit, audit_credit
from shards.partner_audit import PartnerFigures, partner_account_numbers, partner_account_of
from tests.unit.credit_rows import (
    BORROWER,
    FUNDING,
    OTHER,
    ROUTE,
    START,
    Book,
    Snapshot,
    audit,
    book_of,
    close,
    merged_twice,
    money_conserved,
    tables,
)

PARTNER, SECOND = 7, 8
INCOME = system_account_number(SystemAccount.INTEREST_INCOME, "EUR")


def day(offset: int) -> int:
    return (START + dt.timedelta(days=offset)).toordinal()


def register(partner: int) -> RegisterPartner:
    return RegisterPartner(f"partner-{partner}", ROUTE, partner, f"Bank {partner}", "EUR", "DE44")


def joint(customer: int, partner: int, share_bp: int, rate_bp: int) -> GrantCreditLine:
    return GrantCreditLine(
        f"grant-{customer}", customer, 1, "EUR", 100_000, 1_825, 3_650, 50_000, 30,
        partner=partner, partner_share_bp=share_bp, partner_rate_bp=rate_bp,
    )  # fmt: skip


def balance_key(kind: PartnerAccount, partner: int = PARTNER) -> AccountKey:
    return (SYSTEM_CUSTOMER, partner_account_number(kind, partner, "EUR"))


def change_loan(book: Book, loan_id: str, **change: int) -> None:
    key = (CreditKind.LOAN, loan_id)
    book.set_body(key, msgspec.structs.replace(book.body(key, Loan), **change))


def entry(book: Book, kind: ClearingKind, on: int) -> int:
    """The index of the book's first clearing entry of ``kind`` on day ``on``."""
    return next(n for n, e in enumerate(book.clearing) if e.kind is kind and e.day == on)


def sound_book() -> Book:
    """Partition 0, two partners: BORROWER's line funded 80% by partner 7 at 10%, OTHER's
    50% by partner 8 at 5%. Both draw on day 1 (netted at day 10's close, interest
    shared), BORROWER repays part and OTHER all (loan-2 closes) on day 11, closed too;
    BORROWER draws again on day 12, the open day, whose movement is still in CLEARING."""
    return book_of(
        [
            OpenAccount("open-b", BORROWER, 1, "EUR"),
            OpenAccount("open-o", OTHER, 1, "EUR"),
            Deposit("dep-o", OTHER, 1, 10_000, "EUR"),
            close(0),
            register(PARTNER),
            register(SECOND),
            joint(BORROWER, PARTNER, 8_000, 1_000),
            joint(OTHER, SECOND, 5_000, 500),
            Draw("loan-1", BORROWER, 30_000, "EUR"),
            Draw("loan-2", OTHER, 20_000, "EUR"),
            close(10),
            Repay("repay-1", BORROWER, 10_000, "EUR"),
            Repay("repay-2", OTHER, 10**6, "EUR"),
            close(11),
            Draw("loan-3", BORROWER, 5_001, "EUR"),
        ]
    )


def checks(book: Book) -> list[str]:
    return sorted({check for check, _ in audit(book)[0]})


def test_the_books_of_a_joint_ledger_pass_and_tally_each_partner() -> None:
    book = sound_book()
    loans = [loan for ls in book.ledger.credit.loans.values() for loan in ls]
    loans = [loan for loan in loans if loan.partner == PARTNER]

    found, credit = audit(book)

    assert found == []
    settlement = book.accounts[balance_key(PartnerAccount.SETTLEMENT)][3]
    assert credit.partners[(PARTNER, "EUR")] == PartnerFigures(
        funded_principal=sum(loan.partner_principal for loan in loans),
        interest_owed=sum(loan.partner_interest for loan in loans),
        settlement_balance=settlement,
        clearing_balance=-4_000,
    )
    assert credit.partners[(SECOND, "EUR")].funded_principal == 0, "loan-2 is repaid"
    assert book.accounts[balance_key(PartnerAccount.CLEARING)][3] == -4_000, "80% of 5,001"
    assert [loan.id for loan in loans] == ["loan-1", "loan-3"]
    assert loans[0].partner_interest > 0, "a day's interest shared since the repayment"
    days = {e.day for e in book.clearing if e.kind is ClearingKind.NET}
    assert days == {day(1), day(11)}
    assert {e.day for e in book.clearing} == {day(1), day(11), day(12)}


def test_a_partner_without_loans_or_entries_is_tallied_at_zero() -> None:
    book = sound_book()
    incoming = Incoming(99, 99, 0, register(9), fingerprint(register(9)))
    book.rows.update(book.ledger.decide_batch([incoming], {}, now_us=1).credit)

    found, credit = audit(book)

    assert found == []
    assert credit.partners[(9, "EUR")] == PartnerFigures()


@pytest.mark.parametrize(
    ("loan_id", "change"),
    [
        ("loan-1", {"partner_principal": 30_001}),
        ("loan-1", {"partner_interest": -1}),
        ("loan-3", {"partner": 0}),
    ],
    ids=["principal-over", "interest-negative", "no-partner"],
)
def test_a_loan_whose_partner_shares_leave_it_is_found(
    loan_id: str, change: dict[str, int]
) -> None:
    """An open loan's shares are its partner's position too: its accounts disagree."""
    book = sound_book()
    change_loan(book, loan_id, **change)

    assert checks(book) == ["partner_accounts_match_loans", "partner_shares_within_loans"]


def test_a_closed_loan_with_a_share_left_is_only_that() -> None:
    """A closed loan's shares are not its partner's position: only the loan is wrong."""
    book = sound_book()
    change_loan(book, "loan-2", partner_interest=1)

    found, _ = audit(book)

    assert found == [
        (
            "partner_shares_within_loans",
            f"loan 'loan-2' (partner {SECOND}): partner principal 0 of 0, partner interest 1 of 0",
        )
    ]


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        (PartnerAccount.FUNDED, "partner_accounts_match_loans"),
        (PartnerAccount.INTEREST, "partner_accounts_match_loans"),
        (PartnerAccount.SETTLEMENT, "partner_accounts_match_clearing"),
        (PartnerAccount.CLEARING, "partner_accounts_match_clearing"),
    ],
)
def test_a_partner_account_off_its_book_is_found(kind: PartnerAccount, check: str) -> None:
    book = sound_book()
    key = balance_key(kind)
    book.set_balance(key, book.accounts[key][3] - 1)

    found, _ = audit(book)

    assert [c for c, _ in found] == [check]
    assert found[0][1].startswith(f"partner {PARTNER} EUR: {kind.name} ")


def test_a_missing_partner_account_is_a_zero_balance() -> None:
    book = sound_book()
    funded = book.accounts.pop(balance_key(PartnerAccount.FUNDED))[3]

    found, _ = audit(book)

    assert found == [
        (
            "partner_accounts_match_loans",
            f"partner {PARTNER} EUR: FUNDED 0, its open loans' principal {funded}",
        )
    ]


def test_a_closed_day_whose_net_is_not_its_movements_is_found() -> None:
    book = sound_book()
    n = entry(book, ClearingKind.FUNDED, day(1))
    book.clearing[n] = msgspec.structs.replace(book.clearing[n], amount=book.clearing[n].amount - 1)

    found, _ = audit(book)

    net = book.clearing[entry(book, ClearingKind.NET, day(1))]
    assert net.partner == book.clearing[n].partner == PARTNER
    assert [c for c, _ in found] == ["clearing_nets_match_days"]
    assert found[0][1] == (
        f"partner {PARTNER} EUR 2026-01-02: NET {net.amount}, the day's other entries"
        f" {net.amount - 1}"
    )


def test_a_closed_day_without_its_net_is_found() -> None:
    book = sound_book()
    del book.clearing[entry(book, ClearingKind.NET, day(11))]

    assert checks(book) == ["clearing_nets_match_days", "partner_accounts_match_clearing"]


def test_the_open_days_entries_are_what_clearing_holds() -> None:
    book = sound_book()
    n = entry(book, ClearingKind.FUNDED, day(12))
    book.clearing[n] = msgspec.structs.replace(book.clearing[n], amount=-3_999)

    found, _ = audit(book)

    assert found == [
        (
            "partner_accounts_match_clearing",
            f"partner {PARTNER} EUR: CLEARING -4000, its other entries of the open day -3999",
        )
    ]


def test_entries_after_the_open_day_and_nets_of_it_are_found() -> None:
    book = sound_book()
    n = entry(book, ClearingKind.FUNDED, day(12))
    book.clearing.append(msgspec.structs.replace(book.clearing[n], day=day(13), seq=99))

    found, _ = audit(book)

    assert found == [
        (
            "clearing_nets_match_days",
            f"partner {PARTNER} EUR 2026-01-14: entries, but the open day is 2026-01-13",
        )
    ]
    book.clearing[-1] = msgspec.structs.replace(
        book.clearing[n], day=day(12), kind=ClearingKind.NET, amount=0, seq=99
    )
    assert checks(book) == []
    book.clearing[-1] = msgspec.structs.replace(book.clearing[-1], amount=5)
    assert checks(book) == ["clearing_nets_match_days", "partner_accounts_match_clearing"]


def test_entries_before_the_calendar_started_are_found() -> None:
    book = sound_book()
    del book.rows[(CreditKind.CALENDAR, "")]

    found, _ = audit(book)

    nets = [f for c, f in found if c == "clearing_nets_match_days"]
    assert nets and all(f.endswith("entries, but no day closed yet") for f in nets)


def test_interest_income_is_the_originators_part() -> None:
    book = sound_book()
    line = book.ledger.credit.lines[BORROWER]
    assert line.partner_interest_accrued > 0
    income = book.accounts[(SYSTEM_CUSTOMER, INCOME)][3]
    book.set_balance((SYSTEM_CUSTOMER, INCOME), income + line.partner_interest_accrued)

    found, _ = audit(book)

    assert [c for c, _ in found] == ["interest_accounts_match_loans"]
    assert "interest accrued less the partners' share" in found[0][1]


def test_money_is_conserved_counting_the_partner_accounts() -> None:
    book = sound_book()
    _, credit = audit(book)
    partners = set(partner_account_numbers(credit.partners))
    assert {n for _, n, *_ in book.accounts.values() if n > max(FUNDING)} <= partners

    report = money_conserved(book, FUNDING | partners)

    assert report.ok, report.problems
    assert len(money_conserved(book, FUNDING).problems["money_conserved"]) == 1


def test_partner_accounts_are_told_from_every_other_number() -> None:
    for kind in PartnerAccount:
        for partner in (1, PARTNER, PARTNER_MAX):
            for currency in ("EUR", "USD"):
                number = partner_account_number(kind, partner, currency)
                assert partner_account_of(number, currency) == (kind, partner)
                assert partner_account_of(number, "GBP" if currency == "EUR" else "EUR") is None
    for system in SystemAccount:
        assert partner_account_of(system_account_number(system, "EUR"), "EUR") is None
    base = partner_account_number(PartnerAccount.FUNDED, 1, "EUR")
    assert partner_account_of(base - 10**9, "EUR") is None, "kind 0"
    assert partner_account_of(base + 4 * 10**9, "EUR") is None, "kind 5"
    assert partner_account_of(base - 100_000, "EUR") is None, "partner 0"
    assert partner_account_numbers([(0, "EUR"), (PARTNER_MAX + 1, "EUR")]) == []
    assert len(partner_account_numbers([(PARTNER, "EUR"), (PARTNER, "EUR")])) == 4


def test_the_report_merges_and_prints_the_partners() -> None:
    first_partition, report = merged_twice(sound_book())

    first = first_partition.partners[(PARTNER, "EUR")]
    assert report.partners[(PARTNER, "EUR")] == PartnerFigures(
        2 * first.funded_principal,
        2 * first.interest_owed,
        2 * first.settlement_balance,
        2 * first.clearing_balance,
    )
    assert first.position == sum(
        (first.funded_principal, first.interest_owed, first.settlement_balance, -4_000)
    )
    printed = PartnerFigures(24_000, 1_234, -20_000)
    report = Report(partners={(PARTNER, "EUR"): printed, (SECOND, "EUR"): PartnerFigures()})
    assert credit_book_text(report) == [
        f"partner {PARTNER} EUR: funded principal 24,000, interest owed 1,234,"
        " settlement balance -20,000",
        f"partner {SECOND} EUR: funded principal 0, interest owed 0, settlement balance 0",
    ]


def test_clearing_entries_come_after_the_credit_rows_and_before_the_accounts() -> None:
    book = sound_book()
    credit = CreditAudit(["EUR"], lambda check, finding: None)
    e = book.clearing[0]
    credit.add_clearing((e.day, e.partner, e.currency, e.kind, e.amount))
    with pytest.raises(InvariantError):
        credit.add_credit(next(iter(book.rows.values())))
    credit.add_account(next(iter(book.accounts.values())))
    with pytest.raises(InvariantError):
        credit.add_clearing((e.day, e.partner, e.currency, e.kind, e.amount))


async def test_the_snapshot_streams_the_clearing_entries_in_chunks() -> None:
    """The kinds come as the cup's smallints; an entry off by one is found."""
    book = sound_book()
    found: list[tuple[str, str]] = []

    def collect(check: str, finding: str) -> None:
        found.append((check, finding))

    credit = await audit_credit(Snapshot(tables(book), chunk_rows=3), ["EUR"], collect)

    assert found == []
    assert credit.partners == audit(book)[1].partners
    n = entry(book, ClearingKind.INTEREST, day(11))
    book.clearing[n] = msgspec.structs.replace(book.clearing[n], amount=book.clearing[n].amount + 1)
    await audit_credit(Snapshot(tables(book), chunk_rows=3), ["EUR"], collect)
    assert [c for c, _ in found] == ["clearing_nets_match_days"]
