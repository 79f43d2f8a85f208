"""Reconcile's credit checks (shards.credit_audit, check 11) and the credit book it
tallies, on the rows a real ledger writes, then on those rows with one thing wrong each:
no servers."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict

import msgspec
import pytest

from engine.admin.reconcile import credit_book_text
from engine.core.book import (
    SYSTEM_CUSTOMER,
    CreditKind,
    SystemAccount,
    system_account_number,
)
from engine.core.credit import CreditLine, Loan
from engine.core.errors import InvariantError
from engine.core.ledger import PartitionLedger
from engine.core.messages import Deposit, Draw, GrantCreditLine, HoldFunds, OpenAccount, Repay
from shards.audit import Report
from shards.credit_audit import CreditAudit, CreditFigures, PartitionCredit, audit_credit
from tests.unit.credit_rows import (
    BORROWER,
    FUNDING,
    PARTITIONS,
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
from tests.unit.credit_rows import OTHER as PAYER

LOANS = system_account_number(SystemAccount.LOANS, "EUR")
RECEIVABLE = system_account_number(SystemAccount.INTEREST_RECEIVABLE, "EUR")
INCOME = system_account_number(SystemAccount.INTEREST_INCOME, "EUR")
USD_INCOME = system_account_number(SystemAccount.INTEREST_INCOME, "USD")


def sound_book() -> Book:
    """Partition 0 with a line of BORROWER, one loan repaid (its row closed) and one open,
    overdue and accruing, and PAYER's hold of 4,000 EUR on his account, day 40 closed."""
    hold_until = (START + dt.timedelta(41)).isoformat()
    return book_of(
        [
            OpenAccount("open-b", BORROWER, 1, "EUR"),
            OpenAccount("open-p", PAYER, 1, "EUR"),
            Deposit("dep-p", PAYER, 1, 10_000, "EUR"),
            GrantCreditLine("grant", BORROWER, 1, "EUR", 100_000, 1_825, 3_650, 50_000, 30),
            close(0),
            Draw("loan-1", BORROWER, 30_000, "EUR"),
            Draw("loan-2", BORROWER, 20_000, "EUR"),
            close(10),
            Repay("repay-1", BORROWER, 31_000, "EUR"),
            close(40),
            HoldFunds("hold-1", PAYER, 1, BORROWER, 1, 4_000, "EUR", hold_until),
        ]
    )


def checks(book: Book) -> list[str]:
    return [check for check, _ in audit(book)[0]]


def test_the_books_of_a_real_ledger_pass_and_closed_rows_are_not_counted() -> None:
    book = sound_book()

    found, credit = audit(book)

    assert found == []
    assert list(credit.figures) == ["EUR"]
    figures = credit.figures["EUR"]
    assert (figures.lines, figures.loans_open, figures.holds_open) == (1, 1, 1)
    assert not book.rows[(CreditKind.LOAN, "loan-1")].open
    assert book.accounts[(SYSTEM_CUSTOMER, RECEIVABLE)][3] < 0
    assert book.accounts[(SYSTEM_CUSTOMER, INCOME)][3] > 0


def test_the_book_is_tallied_as_the_worker_sees_it() -> None:
    book = sound_book()
    book.accounts[(SYSTEM_CUSTOMER, USD_INCOME)] = (SYSTEM_CUSTOMER, USD_INCOME, "USD", 0, 0)
    credit = book.ledger.credit
    (loan,) = credit.loans[BORROWER]

    found, tallied = audit(book)

    assert found == []
    assert tallied.figures == {
        "EUR": CreditFigures(
            lines=1,
            limit_total=100_000,
            principal_outstanding=credit.outstanding()["EUR"],
            interest_unpaid=loan.interest,
            interest_income=book.accounts[(SYSTEM_CUSTOMER, INCOME)][3],
            loans_open=1,
            loans_overdue=credit.overdue_loans(),
            holds_open=1,
            money_held=4_000,
        )
    }
    assert loan.overdue and loan.interest > 0, "the figures count an overdue loan's interest"
    assert tallied.last_closed == credit.last_closed == (START + dt.timedelta(40)).toordinal()


def test_partitions_without_credit_tally_nothing() -> None:
    accounts = {(PAYER, 1): (PAYER, 1, "EUR", 10, 0)}

    found, credit = audit(Book(PartitionLedger(0, PARTITIONS, {}), {}, [], accounts))

    assert found == []
    assert credit == PartitionCredit()


def test_the_report_merges_the_partitions_books() -> None:
    one, report = merged_twice(sound_book())

    eur = one.figures["EUR"]
    assert report.credit == {"EUR": CreditFigures(**{k: 2 * v for k, v in asdict(eur).items()})}
    assert report.calendars == {0: (START + dt.timedelta(40)).toordinal()}
    with pytest.raises(InvariantError):
        report.add_credit(0, one)


def test_reconcile_prints_the_credit_book_when_there_is_one() -> None:
    report = Report()
    assert credit_book_text(report) == []
    eur = CreditFigures(2, 200_000, 50_000, 1_234, 5_678, 3, 1, 4, 9_000)
    report.add_credit(0, PartitionCredit({"EUR": eur}, dt.date(2026, 2, 9).toordinal()))
    report.add_credit(1, PartitionCredit({}, dt.date(2026, 2, 10).toordinal()))

    assert credit_book_text(report) == [
        "credit EUR: 2 lines (limits 200,000), principal outstanding 50,000, interest unpaid 1,234",
        "            3 loans open (1 overdue), 4 holds open (9,000 held), interest income 5,678",
        "last business day closed: 2026-02-09 to 2026-02-10 (2 partitions)",
    ]


def test_money_is_conserved_counting_the_credit_accounts() -> None:
    book = sound_book()

    report = money_conserved(book, FUNDING)

    assert report.ok, report.problems
    assert len(money_conserved(book, FUNDING - {INCOME}).problems["money_conserved"]) == 1


def test_a_loan_that_disagrees_with_its_line_is_found() -> None:
    book = sound_book()
    key = (CreditKind.LOAN, "loan-2")
    loan = book.body(key, Loan)
    book.set_body(key, msgspec.structs.replace(loan, principal=loan.principal + 1))
    book.rows[key] = msgspec.structs.replace(book.rows[key], amount=loan.principal + 1)

    found, _ = audit(book)

    assert [check for check, _ in found] == ["credit_lines_match_loans"]
    assert f"principal {loan.principal}, its open loans' {loan.principal + 1}" in found[0][1]


def test_a_line_whose_totals_do_not_add_up_is_found() -> None:
    book = sound_book()
    key = (CreditKind.LINE, str(BORROWER))
    line = book.body(key, CreditLine)
    wrong = msgspec.structs.replace(
        line, drawn=line.drawn + 5, interest_paid=line.interest_paid + 1
    )
    book.set_body(key, wrong)

    found, _ = audit(book)

    assert [check for check, _ in found] == ["credit_lines_match_loans"] * 2
    assert "drawn" in found[0][1] and "interest accrued" in found[1][1]


def test_a_loan_without_a_line_is_found() -> None:
    book = sound_book()
    del book.rows[(CreditKind.LINE, str(BORROWER))]

    found, _ = audit(book)

    assert "credit_lines_match_loans" in [check for check, _ in found]
    assert any(f"customer {BORROWER} owes EUR" in finding for _, finding in found)


@pytest.mark.parametrize(
    ("account", "check"),
    [
        (LOANS, "loans_account_matches_lines"),
        (RECEIVABLE, "interest_accounts_match_loans"),
        (INCOME, "interest_accounts_match_loans"),
    ],
)
def test_a_credit_account_off_its_book_is_found(account: int, check: str) -> None:
    book = sound_book()
    key = (SYSTEM_CUSTOMER, account)
    book.set_balance(key, book.accounts[key][3] - 1)

    assert checks(book) == [check]


def test_a_missing_credit_account_is_a_zero_balance() -> None:
    book = sound_book()
    del book.accounts[(SYSTEM_CUSTOMER, LOANS)]

    found, _ = audit(book)

    assert [check for check, _ in found] == ["loans_account_matches_lines"]
    assert "EUR: LOANS 0, the lines' principal" in found[0][1]


def test_holds_over_what_the_account_can_pay_are_found() -> None:
    book = sound_book()
    book.set_balance((PAYER, 1), 3_999)

    assert checks(book) == ["holds_payable"]
    del book.accounts[(PAYER, 1)]
    found, _ = audit(book)
    assert found == [("holds_payable", f"account {PAYER}/1 does not exist, holds 4000")]


def test_rows_whose_columns_contradict_their_body_are_found() -> None:
    book = sound_book()
    hold = (CreditKind.HOLD, "hold-1")
    book.rows[hold] = msgspec.structs.replace(book.rows[hold], amount=3_000)
    closed = (CreditKind.LOAN, "loan-1")
    book.rows[closed] = msgspec.structs.replace(book.rows[closed], open=True)

    found, credit = audit(book)

    assert sorted(found) == [
        (
            "credit_rows_match_bodies",
            "hold 'hold-1': (key, customer, currency, amount, open)"
            f" ('hold-1', {PAYER}, 'EUR', 3000, True),"
            f" its body ('hold-1', {PAYER}, 'EUR', 4000, True)",
        ),
        (
            "credit_rows_match_bodies",
            "loan 'loan-1': (key, customer, currency, amount, open)"
            f" ('loan-1', {BORROWER}, 'EUR', 0, True),"
            f" its body ('loan-1', {BORROWER}, 'EUR', 0, False)",
        ),
    ]
    assert credit.figures["EUR"].loans_open == 2, "the worker loads what is_open says"


def test_a_body_that_does_not_decode_is_found() -> None:
    book = sound_book()
    key = (CreditKind.CALENDAR, "")
    book.rows[key] = msgspec.structs.replace(book.rows[key], body=b"\xc1")

    assert checks(book) == ["credit_rows_match_bodies"]


def test_credit_rows_come_before_the_accounts() -> None:
    book = sound_book()
    credit = CreditAudit(["EUR"], lambda check, finding: None)
    credit.add_account(next(iter(book.accounts.values())))

    with pytest.raises(InvariantError):
        credit.add_credit(next(iter(book.rows.values())))


async def test_the_snapshot_is_read_in_chunks_credit_rows_first() -> None:
    book = sound_book()
    _, sound = audit(book)
    book.set_balance((SYSTEM_CUSTOMER, LOANS), book.accounts[(SYSTEM_CUSTOMER, LOANS)][3] + 7)
    found: list[tuple[str, str]] = []

    credit = await audit_credit(
        Snapshot(tables(book), chunk_rows=2), ["EUR"], lambda c, f: found.append((c, f))
    )

    assert credit == sound
    assert credit.last_closed == (START + dt.timedelta(days=40)).toordinal()
    assert [check for check, _ in found] == ["loans_account_matches_lines"]
