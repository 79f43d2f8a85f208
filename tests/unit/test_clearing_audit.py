"""Reconcile's partner checks (shards.credit_audit, check 11 for joint lending) and the
partner figures it tallies, on the rows a real ledger writes, then on those rows with one
thing wrong each: no servers."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import msgspec
import pytest

from engine.admin.reconcile import credit_book_text
from engine.core.book import (
    SYSTEM_CUSTOMER,
    AccountKey,
    ClearingEntry,
    ClearingKind,
    CreditKind,
    CreditRow,
    Incoming,
    Known,
    PartnerAccount,
    SystemAccount,
    partner_account_number,
    system_account_number,
)
from engine.core.credit import Loan
from engine.core.errors import InvariantError
from engine.core.ledger import PartitionLedger
from engine.core.messages import (
    PARTNER_MAX,
    CloseBusinessDay,
    Command,
    Deposit,
    Draw,
    GrantCreditLine,
    OpenAccount,
    RegisterPartner,
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
    PartitionCredit,
    PartnerFigures,
    audit_credit,
    partner_account_numbers,
    partner_account_of,
)
from shards.cup_admin import Row, StateRow

PARTITIONS = 4
BORROWER, OTHER, ROUTE = [c for c in range(1, 400) if partition_of(c, PARTITIONS) == 0][:3]
PARTNER, SECOND = 7, 8
START = dt.date(2026, 1, 1)
INCOME = system_account_number(SystemAccount.INTEREST_INCOME, "EUR")


def close(offset: int) -> CloseBusinessDay:
    date = (START + dt.timedelta(days=offset)).isoformat()
    return CloseBusinessDay(f"close-{date}", ROUTE, date)


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


@dataclass
class Book:
    """A partition's rows as its cup holds them: the credit book by kind and key, the
    clearing entries, the accounts by (customer, number); and the ledger that wrote them."""

    ledger: PartitionLedger
    rows: dict[tuple[CreditKind, str], CreditRow]
    clearing: list[ClearingEntry]
    accounts: dict[AccountKey, AccountColumns]

    def set_balance(self, key: AccountKey, balance: int) -> None:
        customer, number, currency, _, limit = self.accounts[key]
        self.accounts[key] = (customer, number, currency, balance, limit)

    def loan(self, loan_id: str) -> Loan:
        return msgspec.msgpack.decode(self.rows[(CreditKind.LOAN, loan_id)].body, type=Loan)

    def set_loan(self, loan: Loan) -> None:
        key = (CreditKind.LOAN, loan.id)
        self.rows[key] = msgspec.structs.replace(self.rows[key], body=msgspec.msgpack.encode(loan))

    def entry(self, kind: ClearingKind, on: int) -> int:
        """The index of the first entry of ``kind`` on day ``on``."""
        return next(n for n, e in enumerate(self.clearing) if e.kind is kind and e.day == on)


def sound_book() -> Book:
    """Partition 0, two partners: BORROWER's line funded 80% by partner 7 at 10%, OTHER's
    50% by partner 8 at 5%. Both draw on day 1 (netted at day 10's close, interest
    shared), BORROWER repays part and OTHER all (loan-2 closes) on day 11, closed too;
    BORROWER draws again on day 12, the open day, whose movement is still in CLEARING."""
    ledger = PartitionLedger(0, PARTITIONS, {})
    rows: dict[tuple[CreditKind, str], CreditRow] = {}
    clearing: list[ClearingEntry] = []
    known: dict[str, Known] = {}
    commands: list[Command] = [
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
    for seq, command in enumerate(commands):
        incoming = Incoming(seq, seq, 0, command, fingerprint(command))
        outcome = ledger.decide_batch([incoming], known, now_us=1)
        assert outcome.results[0].accepted, outcome.results[0]
        known.update({a.command_id: Known(a.fingerprint, a.result) for a in outcome.applied})
        rows.update(outcome.credit)
        clearing += outcome.clearing
    accounts = {
        key: (a.customer, a.number, a.currency, a.balance, a.credit_limit)
        for key, a in ledger.book.accounts.items()
    }
    return Book(ledger, rows, clearing, accounts)


def audit(book: Book) -> tuple[list[tuple[str, str]], PartitionCredit]:
    found: list[tuple[str, str]] = []
    credit = CreditAudit(["EUR", "USD"], lambda check, finding: found.append((check, finding)))
    for row in book.rows.values():
        credit.add_credit(row)
    for e in book.clearing:
        credit.add_clearing((e.day, e.partner, e.currency, e.kind, e.amount))
    for account in book.accounts.values():
        credit.add_account(account)
    credit.finish()
    return found, credit.credit


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
    book.set_loan(msgspec.structs.replace(book.loan(loan_id), **change))

    assert checks(book) == ["partner_accounts_match_loans", "partner_shares_within_loans"]


def test_a_closed_loan_with_a_share_left_is_only_that() -> None:
    """A closed loan's shares are not its partner's position: only the loan is wrong."""
    book = sound_book()
    book.set_loan(msgspec.structs.replace(book.loan("loan-2"), partner_interest=1))

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
    n = book.entry(ClearingKind.FUNDED, day(1))
    book.clearing[n] = msgspec.structs.replace(book.clearing[n], amount=book.clearing[n].amount - 1)

    found, _ = audit(book)

    net = book.clearing[book.entry(ClearingKind.NET, day(1))]
    assert net.partner == book.clearing[n].partner == PARTNER
    assert [c for c, _ in found] == ["clearing_nets_match_days"]
    assert found[0][1] == (
        f"partner {PARTNER} EUR 2026-01-02: NET {net.amount}, the day's other entries"
        f" {net.amount - 1}"
    )


def test_a_closed_day_without_its_net_is_found() -> None:
    book = sound_book()
    del book.clearing[book.entry(ClearingKind.NET, day(11))]

    assert checks(book) == ["clearing_nets_match_days", "partner_accounts_match_clearing"]


def test_the_open_days_entries_are_what_clearing_holds() -> None:
    book = sound_book()
    n = book.entry(ClearingKind.FUNDED, day(12))
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
    n = book.entry(ClearingKind.FUNDED, day(12))
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
    accounts = book.accounts.values()
    funding = {system_account_number(kind, "EUR") for kind in CREDIT_SYSTEM_ACCOUNTS}
    funding.add(system_account_number(SystemAccount.CASH, "EUR"))
    customers = sum(a[3] for a in accounts if a[0] != SYSTEM_CUSTOMER)
    figures = CupFigures(0, customer_total={"EUR": customers}, clearing_total={"EUR": 0})
    partners = set(partner_account_numbers(credit.partners))
    assert {n for _, n, *_ in accounts if n > max(funding)} <= partners
    figures.funding_total["EUR"] = sum(a[3] for a in accounts if a[1] in funding | partners)
    report = Report(cups=[figures])

    _check_system_totals(report)

    assert report.ok, report.problems
    figures.funding_total["EUR"] = sum(a[3] for a in accounts if a[1] in funding)
    _check_system_totals(report)
    assert len(report.problems["money_conserved"]) == 1


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
    _, one = audit(sound_book())
    _, two = audit(sound_book())
    two.last_closed = None
    report = Report()

    report.add_credit(0, one)
    report.add_credit(1, two)

    first = one.partners[(PARTNER, "EUR")]
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


def _tables(book: Book) -> dict[str, list[Row]]:
    return {
        "credit_book": [
            (int(r.kind), r.key, r.customer, r.currency, r.amount, r.open, r.body)
            for r in book.rows.values()
        ],
        "clearing_entries": [
            (e.day, e.partner, e.currency, int(e.kind), e.amount) for e in book.clearing
        ],
        "accounts": [tuple(account) for account in book.accounts.values()],
    }


async def test_the_snapshot_streams_the_clearing_entries_in_chunks() -> None:
    """The kinds come as the cup's smallints; an entry off by one is found."""
    book = sound_book()
    found: list[tuple[str, str]] = []

    def collect(check: str, finding: str) -> None:
        found.append((check, finding))

    credit = await audit_credit(Snapshot(_tables(book), chunk_rows=3), ["EUR"], collect)

    assert found == []
    assert credit.partners == audit(book)[1].partners
    n = book.entry(ClearingKind.INTEREST, day(11))
    book.clearing[n] = msgspec.structs.replace(book.clearing[n], amount=book.clearing[n].amount + 1)
    await audit_credit(Snapshot(_tables(book), chunk_rows=3), ["EUR"], collect)
    assert [c for c, _ in found] == ["clearing_nets_match_days"]
