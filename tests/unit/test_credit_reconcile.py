"""Reconcile's credit checks (shards.credit_audit, check 11) and the credit book it
tallies, on the rows a real ledger writes, then on those rows with one thing wrong each:
no servers."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import asdict

import msgspec
import pytest

from engine.admin.reconcile import credit_book_text
from engine.core.book import (
    SYSTEM_CUSTOMER,
    CreditKind,
    CreditRow,
    Incoming,
    Known,
    SystemAccount,
    system_account_number,
)
from engine.core.credit import CreditLine, Loan
from engine.core.errors import InvariantError
from engine.core.ledger import PartitionLedger
from engine.core.messages import (
    CloseBusinessDay,
    Command,
    Deposit,
    Draw,
    GrantCreditLine,
    HoldFunds,
    OpenAccount,
    Repay,
    fingerprint,
)
from engine.core.routing import partition_of
from shards.audit import CupFigures, Report, _check_system_totals
from shards.credit_audit import (
    ACCOUNT_COLUMNS,
    CLEARING_COLUMNS,
    CREDIT_COLUMNS,
    CREDIT_SYSTEM_ACCOUNTS,
    AccountColumns,
    CreditAudit,
    CreditFigures,
    PartitionCredit,
    audit_credit,
)
from shards.cup_admin import Row, StateRow

PARTITIONS = 4
BORROWER, PAYER, ROUTE = [c for c in range(1, 400) if partition_of(c, PARTITIONS) == 0][:3]
START = dt.date(2026, 1, 1)
LOANS = system_account_number(SystemAccount.LOANS, "EUR")
RECEIVABLE = system_account_number(SystemAccount.INTEREST_RECEIVABLE, "EUR")
INCOME = system_account_number(SystemAccount.INTEREST_INCOME, "EUR")
USD_INCOME = system_account_number(SystemAccount.INTEREST_INCOME, "USD")

Book = tuple[dict[tuple[CreditKind, str], CreditRow], dict[tuple[int, int], AccountColumns]]
"""A partition's credit rows by kind and key, and its accounts by (customer, number)."""


def close(offset: int) -> CloseBusinessDay:
    date = (START + dt.timedelta(days=offset)).isoformat()
    return CloseBusinessDay(f"close-{date}", ROUTE, date)


def sound_ledger() -> tuple[PartitionLedger, dict[tuple[CreditKind, str], CreditRow]]:
    """Partition 0 with a line of BORROWER, one loan repaid (its row closed) and one open,
    overdue and accruing, and PAYER's hold of 4,000 EUR on his account, day 40 closed; and
    its credit rows as the cup would hold them."""
    ledger = PartitionLedger(0, PARTITIONS, {})
    rows: dict[tuple[CreditKind, str], CreditRow] = {}
    known: dict[str, Known] = {}
    commands: list[Command] = [
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
        HoldFunds(
            "hold-1", PAYER, 1, BORROWER, 1, 4_000, "EUR", (START + dt.timedelta(41)).isoformat()
        ),
    ]
    for seq, command in enumerate(commands):
        incoming = Incoming(seq, seq, 0, command, fingerprint(command))
        outcome = ledger.decide_batch([incoming], known, now_us=1)
        assert outcome.results[0].accepted, outcome.results[0]
        known.update({a.command_id: Known(a.fingerprint, a.result) for a in outcome.applied})
        rows.update(outcome.credit)
    return ledger, rows


def sound_book() -> Book:
    ledger, rows = sound_ledger()
    accounts = {
        key: (a.customer, a.number, a.currency, a.balance, a.credit_limit)
        for key, a in ledger.book.accounts.items()
    }
    return rows, accounts


def audit(book: Book) -> tuple[list[tuple[str, str]], PartitionCredit]:
    rows, accounts = book
    found: list[tuple[str, str]] = []
    credit = CreditAudit(["EUR", "USD"], lambda check, finding: found.append((check, finding)))
    for row in rows.values():
        credit.add_credit(row)
    for account in accounts.values():
        credit.add_account(account)
    credit.finish()
    return found, credit.credit


def checks(book: Book) -> list[str]:
    return [check for check, _ in audit(book)[0]]


def with_body(row: CreditRow, entity: msgspec.Struct) -> CreditRow:
    return msgspec.structs.replace(row, body=msgspec.msgpack.encode(entity))


def set_balance(book: Book, key: tuple[int, int], balance: int) -> None:
    customer, number, currency, _, limit = book[1][key]
    book[1][key] = (customer, number, currency, balance, limit)


def test_the_books_of_a_real_ledger_pass_and_closed_rows_are_not_counted() -> None:
    book = sound_book()
    rows = book[0]

    found, credit = audit(book)

    assert found == []
    assert list(credit.figures) == ["EUR"]
    figures = credit.figures["EUR"]
    assert (figures.lines, figures.loans_open, figures.holds_open) == (1, 1, 1)
    assert not rows[(CreditKind.LOAN, "loan-1")].open
    assert book[1][(SYSTEM_CUSTOMER, RECEIVABLE)][3] < 0
    assert book[1][(SYSTEM_CUSTOMER, INCOME)][3] > 0


def test_the_book_is_tallied_as_the_worker_sees_it() -> None:
    ledger, _ = sound_ledger()
    book = sound_book()
    book[1][(SYSTEM_CUSTOMER, USD_INCOME)] = (SYSTEM_CUSTOMER, USD_INCOME, "USD", 0, 0)
    credit = ledger.credit
    (loan,) = credit.loans[BORROWER]

    found, tallied = audit(book)

    assert found == []
    assert tallied.figures == {
        "EUR": CreditFigures(
            lines=1,
            limit_total=100_000,
            principal_outstanding=credit.outstanding()["EUR"],
            interest_unpaid=loan.interest,
            interest_income=book[1][(SYSTEM_CUSTOMER, INCOME)][3],
            loans_open=1,
            loans_overdue=credit.overdue_loans(),
            holds_open=1,
            money_held=4_000,
        )
    }
    assert loan.overdue and loan.interest > 0, "the figures count an overdue loan's interest"
    assert tallied.last_closed == credit.last_closed == (START + dt.timedelta(40)).toordinal()


def test_partitions_without_credit_tally_nothing() -> None:
    found, credit = audit(({}, {(PAYER, 1): (PAYER, 1, "EUR", 10, 0)}))

    assert found == []
    assert credit == PartitionCredit()


def test_the_report_merges_the_partitions_books() -> None:
    _, one = audit(sound_book())
    _, two = audit(sound_book())
    two.last_closed = None
    report = Report()

    report.add_credit(0, one)
    report.add_credit(1, two)

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
    accounts = sound_book()[1].values()
    funding = {system_account_number(kind, "EUR") for kind in CREDIT_SYSTEM_ACCOUNTS}
    funding.add(system_account_number(SystemAccount.CASH, "EUR"))
    customers = sum(a[3] for a in accounts if a[0] != SYSTEM_CUSTOMER)
    figures = CupFigures(0, customer_total={"EUR": customers}, clearing_total={"EUR": 0})
    figures.funding_total["EUR"] = sum(a[3] for a in accounts if a[1] in funding)
    report = Report(cups=[figures])

    _check_system_totals(report)

    assert report.ok, report.problems
    figures.funding_total["EUR"] -= sum(a[3] for a in accounts if a[1] == INCOME)
    _check_system_totals(report)
    assert len(report.problems["money_conserved"]) == 1


def test_a_loan_that_disagrees_with_its_line_is_found() -> None:
    book = sound_book()
    key = (CreditKind.LOAN, "loan-2")
    loan = msgspec.msgpack.decode(book[0][key].body, type=Loan)
    book[0][key] = msgspec.structs.replace(
        with_body(book[0][key], msgspec.structs.replace(loan, principal=loan.principal + 1)),
        amount=loan.principal + 1,
    )

    found, _ = audit(book)

    assert [check for check, _ in found] == ["credit_lines_match_loans"]
    assert f"principal {loan.principal}, its open loans' {loan.principal + 1}" in found[0][1]


def test_a_line_whose_totals_do_not_add_up_is_found() -> None:
    book = sound_book()
    key = (CreditKind.LINE, str(BORROWER))
    line = msgspec.msgpack.decode(book[0][key].body, type=CreditLine)
    wrong = msgspec.structs.replace(
        line, drawn=line.drawn + 5, interest_paid=line.interest_paid + 1
    )
    book[0][key] = with_body(book[0][key], wrong)

    found, _ = audit(book)

    assert [check for check, _ in found] == ["credit_lines_match_loans"] * 2
    assert "drawn" in found[0][1] and "interest accrued" in found[1][1]


def test_a_loan_without_a_line_is_found() -> None:
    book = sound_book()
    del book[0][(CreditKind.LINE, str(BORROWER))]

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
    set_balance(book, key, book[1][key][3] - 1)

    assert checks(book) == [check]


def test_a_missing_credit_account_is_a_zero_balance() -> None:
    book = sound_book()
    del book[1][(SYSTEM_CUSTOMER, LOANS)]

    found, _ = audit(book)

    assert [check for check, _ in found] == ["loans_account_matches_lines"]
    assert "EUR: LOANS 0, the lines' principal" in found[0][1]


def test_holds_over_what_the_account_can_pay_are_found() -> None:
    book = sound_book()
    set_balance(book, (PAYER, 1), 3_999)

    assert checks(book) == ["holds_payable"]
    del book[1][(PAYER, 1)]
    found, _ = audit(book)
    assert found == [("holds_payable", f"account {PAYER}/1 does not exist, holds 4000")]


def test_rows_whose_columns_contradict_their_body_are_found() -> None:
    book = sound_book()
    hold = (CreditKind.HOLD, "hold-1")
    book[0][hold] = msgspec.structs.replace(book[0][hold], amount=3_000)
    closed = (CreditKind.LOAN, "loan-1")
    book[0][closed] = msgspec.structs.replace(book[0][closed], open=True)

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
    book[0][key] = msgspec.structs.replace(book[0][key], body=b"\xc1")

    assert checks(book) == ["credit_rows_match_bodies"]


def test_credit_rows_come_before_the_accounts() -> None:
    rows, accounts = sound_book()
    credit = CreditAudit(["EUR"], lambda check, finding: None)
    credit.add_account(next(iter(accounts.values())))

    with pytest.raises(InvariantError):
        credit.add_credit(next(iter(rows.values())))


class Snapshot:
    """A partition's rows as a cup's snapshot streams them: tuples, in chunks."""

    def __init__(self, tables: dict[str, list[Row]], chunk_rows: int):
        self.state: StateRow | None = None
        self.columns = {
            "credit_book": list(CREDIT_COLUMNS),
            "clearing_entries": list(CLEARING_COLUMNS),
            "accounts": list(ACCOUNT_COLUMNS),
        }
        self.tables = tables
        self.chunk_rows = chunk_rows

    async def rows(self, table: str, columns: Sequence[str]) -> AsyncIterator[list[Row]]:
        assert list(columns) == self.columns[table]
        rows = self.tables[table]
        for start in range(0, len(rows), self.chunk_rows):
            yield rows[start : start + self.chunk_rows]


def _table(rows: Iterable[CreditRow]) -> list[Row]:
    return [(int(r.kind), r.key, r.customer, r.currency, r.amount, r.open, r.body) for r in rows]


async def test_the_snapshot_is_read_in_chunks_credit_rows_first() -> None:
    rows, accounts = sound_book()
    wrong = dict(accounts)
    customer, number, currency, balance, limit = wrong[(SYSTEM_CUSTOMER, LOANS)]
    wrong[(SYSTEM_CUSTOMER, LOANS)] = (customer, number, currency, balance + 7, limit)
    tables: dict[str, list[Row]] = {
        "credit_book": _table(rows.values()),
        "clearing_entries": [],
        "accounts": [tuple(account) for account in wrong.values()],
    }
    found: list[tuple[str, str]] = []

    credit = await audit_credit(
        Snapshot(tables, chunk_rows=2), ["EUR"], lambda c, f: found.append((c, f))
    )

    assert credit == audit((rows, accounts))[1]
    assert credit.last_closed == (START + dt.timedelta(days=40)).toordinal()
    assert [check for check, _ in found] == ["loans_account_matches_lines"]
