"""Revolving credit and holds in the pure ledger: every rule of engine.core.credit, and
properties over random days and command sequences."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.book import (
    SYSTEM_CUSTOMER,
    Account,
    ClearingEntry,
    CreditKind,
    CreditRow,
    Incoming,
    Known,
    SystemAccount,
    system_account_number,
)
from engine.core.credit import (
    CATCH_UP_DAYS_MAX,
    DAY_DENOMINATOR,
    HOLD_DAYS_MAX,
    HOLDS_PER_ACCOUNT_MAX,
    LOANS_PER_CUSTOMER_MAX,
    Loan,
    daily_interest,
)
from engine.core.ledger import PartitionLedger
from engine.core.messages import (
    ChangeCreditLine,
    CloseAccount,
    CloseBusinessDay,
    Command,
    CreditLeg,
    Deposit,
    Draw,
    FreezeAccount,
    GrantCreditLine,
    HoldFunds,
    OpenAccount,
    PostHold,
    Reason,
    Repay,
    Result,
    SetCreditLimit,
    Status,
    SuspendCreditLine,
    VoidHold,
    Withdraw,
    fingerprint,
)
from engine.core.routing import partition_of

PARTITIONS = 4
PARTITION = 0
LOCAL = [c for c in range(1, 400) if partition_of(c, PARTITIONS) == PARTITION][:4]
FOREIGN = next(c for c in range(1, 200) if partition_of(c, PARTITIONS) != PARTITION)
A, B, C, ROUTE = LOCAL
START = dt.date(2026, 1, 1)


def day(offset: int) -> str:
    """The date ``offset`` days after START."""
    return (START + dt.timedelta(days=offset)).isoformat()


class Bank:
    """A partition's ledger driven one command at a time, each at the next input place."""

    def __init__(self) -> None:
        self.ledger = PartitionLedger(PARTITION, PARTITIONS, {})
        self.seq = 0
        self.rows: dict[tuple[CreditKind, str], CreditRow] = {}
        self.journal: list[tuple[str, int, int, int]] = []
        self.legs: list[object] = []
        self.clearing: list[ClearingEntry] = []
        self.known: dict[str, Known] = {}
        """The idempotency records the cup would hold."""
        self.balances: dict[tuple[int, int], int] = {}
        """The balances the cup would hold: what the commits wrote (Outcome.changed)."""

    def run(self, *commands: Command) -> list[Result]:
        batch = []
        for command in commands:
            batch.append(Incoming(self.seq, self.seq, 0, command, fingerprint(command)))
            self.seq += 1
        outcome = self.ledger.decide_batch(batch, self.known, now_us=1)
        self.known.update({a.command_id: Known(a.fingerprint, a.result) for a in outcome.applied})
        self.rows.update(outcome.credit)
        self.balances.update({key: a.balance for key, a in outcome.changed.items()})
        self.journal += [(j.currency, j.customer, j.account, j.amount) for j in outcome.journal]
        self.legs += [leg.command for leg in outcome.legs]
        self.clearing += outcome.clearing
        return outcome.results

    def one(self, command: Command) -> Result:
        return self.run(command)[0]

    def account(self, customer: int, number: int = 1) -> Account:
        return self.ledger.book.accounts[(customer, number)]

    def system(self, kind: SystemAccount, currency: str = "EUR") -> int:
        key = (SYSTEM_CUSTOMER, system_account_number(kind, currency))
        account = self.ledger.book.accounts.get(key)
        return 0 if account is None else account.balance

    def loans(self, customer: int = A) -> list[Loan]:
        return self.ledger.credit.loans.get(customer, [])


def grant(
    customer: int = A,
    limit: int = 100_000,
    rate_bp: int = 1_825,
    overdue_rate_bp: int = 3_650,
    loan_max: int = 50_000,
    term_days: int = 30,
    command_id: str = "",
) -> GrantCreditLine:
    return GrantCreditLine(
        command_id or f"grant-{customer}",
        customer,
        1,
        "EUR",
        limit,
        rate_bp,
        overdue_rate_bp,
        loan_max,
        term_days,
    )


def close(offset: int) -> CloseBusinessDay:
    return CloseBusinessDay(f"close-{day(offset)}", ROUTE, day(offset))


def open_bank(*customers: int, deposit: int = 0) -> Bank:
    """Accounts 1 of ``customers`` (each with ``deposit``), a line for A, day 0 closed."""
    bank = Bank()
    for customer in customers:
        bank.one(OpenAccount(f"open-{customer}", customer, 1, "EUR"))
        if deposit:
            bank.one(Deposit(f"dep-{customer}", customer, 1, deposit, "EUR"))
    bank.one(grant())
    assert bank.one(close(0)).accepted
    return bank


def check_books(bank: Bank) -> None:
    """The credit book's own identities, and double entry."""
    credit = bank.ledger.credit
    for line in credit.lines.values():
        loans = credit.loans.get(line.customer, [])
        assert line.principal == sum(loan.principal for loan in loans)
        assert line.drawn - line.principal_repaid == line.principal
        assert 0 <= line.principal <= max(line.limit, line.principal)
    assert -bank.system(SystemAccount.LOANS) == sum(
        line.principal for line in credit.lines.values()
    )
    assert -bank.system(SystemAccount.INTEREST_RECEIVABLE) == sum(
        loan.interest for loans in credit.loans.values() for loan in loans
    )
    assert bank.system(SystemAccount.INTEREST_INCOME) == sum(
        line.interest_accrued - line.partner_interest_accrued for line in credit.lines.values()
    )
    held: dict[tuple[int, int], int] = {}
    for hold in credit.holds.values():
        held[hold.key] = held.get(hold.key, 0) + hold.amount
    assert held == bank.ledger.book.held
    assert sum(a.balance for a in bank.ledger.book.accounts.values()) == 0
    for key, account in bank.ledger.book.accounts.items():
        assert key in bank.balances, f"{key} is in the book, never committed"
        assert bank.balances[key] == account.balance, f"{key} changed, not committed"
    assert sum(amount for _, _, _, amount in bank.journal) == 0


# Lines: invitation only, and their terms.


def test_no_line_no_loan() -> None:
    bank = Bank()
    bank.one(OpenAccount("o", A, 1, "EUR"))
    bank.one(close(0))
    result = bank.one(Draw("d1", A, 100, "EUR"))
    assert result.reason is Reason.NO_CREDIT_LINE
    assert bank.one(Repay("r1", A, 100, "EUR")).reason is Reason.NO_CREDIT_LINE
    assert bank.account(A).balance == 0


def test_grant_needs_an_account_of_its_currency_and_is_granted_once() -> None:
    bank = Bank()
    assert bank.one(grant()).reason is Reason.ACCOUNT_NOT_FOUND
    bank.one(OpenAccount("o", A, 1, "USD"))
    assert bank.one(grant(command_id="g2")).reason is Reason.CURRENCY_MISMATCH
    bank.one(OpenAccount("o2", B, 1, "EUR"))
    assert bank.one(grant(B)).accepted
    assert bank.one(grant(B, command_id="again")).reason is Reason.CREDIT_LINE_EXISTS


def test_draw_disburses_a_loan_and_uses_the_line() -> None:
    bank = open_bank(A)
    result = bank.one(Draw("loan-1", A, 30_000, "EUR"))
    assert result.accepted, result
    assert result.balances[0].balance == 30_000
    assert bank.account(A).balance == 30_000
    assert bank.system(SystemAccount.LOANS) == -30_000
    (loan,) = bank.loans()
    assert (loan.id, loan.principal, loan.drawn_on, loan.due_on) == (
        "loan-1",
        30_000,
        START.toordinal() + 1,
        START.toordinal() + 31,
    )
    assert bank.ledger.credit.lines[A].available == 70_000
    assert "due 2026-02-01" in result.detail
    check_books(bank)


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (50_001, Reason.LOAN_TOO_LARGE),
        (50_000, Reason.NONE),
    ],
)
def test_per_loan_maximum(amount: int, reason: Reason) -> None:
    bank = open_bank(A)
    assert bank.one(Draw("d", A, amount, "EUR")).reason is reason


def test_draws_stop_at_the_limit() -> None:
    bank = open_bank(A)
    assert bank.one(Draw("d1", A, 50_000, "EUR")).accepted
    assert bank.one(Draw("d2", A, 40_000, "EUR")).accepted
    refused = bank.one(Draw("d3", A, 10_001, "EUR"))
    assert refused.reason is Reason.CREDIT_LIMIT_EXCEEDED
    assert "10000 left" in refused.detail
    assert bank.one(Draw("d4", A, 10_000, "EUR")).accepted
    check_books(bank)


def test_draw_refusals() -> None:
    bank = open_bank(A)
    assert bank.one(Draw("usd", A, 100, "USD")).reason is Reason.CURRENCY_MISMATCH
    bank.one(SuspendCreditLine("s", A))
    assert bank.one(Draw("susp", A, 100, "EUR")).reason is Reason.CREDIT_LINE_SUSPENDED
    assert bank.one(Repay("r", A, 100, "EUR")).reason is Reason.NOTHING_OWED
    bank.one(SuspendCreditLine("lift", A, suspended=False))
    bank.one(FreezeAccount("f", A, 1))
    assert bank.one(Draw("frozen", A, 100, "EUR")).reason is Reason.ACCOUNT_FROZEN
    assert bank.system(SystemAccount.LOANS) == 0
    assert not bank.loans()


def test_no_draw_before_the_calendar_starts() -> None:
    bank = Bank()
    bank.one(OpenAccount("o", A, 1, "EUR"))
    bank.one(grant())
    assert bank.one(Draw("early", A, 100, "EUR")).reason is Reason.NO_BUSINESS_DATE
    result = bank.one(close(0))
    assert result.accepted and "calendar starts" in result.detail
    assert bank.one(Draw("now", A, 100, "EUR")).accepted


def test_open_loans_are_bounded() -> None:
    bank = open_bank(A)
    bank.one(ChangeCreditLine("c", A, 10**9, 100, 100, 1_000, 30))
    for n in range(LOANS_PER_CUSTOMER_MAX):
        assert bank.one(Draw(f"d{n}", A, 1, "EUR")).accepted
    assert bank.one(Draw("one-more", A, 1, "EUR")).reason is Reason.TOO_MANY_LOANS
    assert bank.one(Repay("r", A, 1, "EUR")).accepted
    assert bank.one(Draw("after", A, 1, "EUR")).accepted


def test_change_never_below_what_is_drawn() -> None:
    bank = open_bank(A)
    bank.one(Draw("d", A, 30_000, "EUR"))
    assert bank.one(ChangeCreditLine("c1", A, 29_999, 1, 1, 1, 1)).reason is Reason.CREDIT_IN_USE
    assert bank.one(ChangeCreditLine("c2", A, 30_000, 0, 0, 1, 1)).accepted
    assert bank.ledger.credit.lines[A].available == 0
    assert bank.one(ChangeCreditLine("nobody", B, 1, 1, 1, 1, 1)).reason is Reason.NO_CREDIT_LINE


# Repayments: interest first, then principal, oldest loan first; revolving.


def test_repay_interest_first_then_principal_oldest_first() -> None:
    bank = open_bank(A, deposit=1_000_000)
    bank.one(Draw("old", A, 36_500, "EUR"))
    bank.one(close(1))
    bank.one(Draw("new", A, 36_500, "EUR"))
    bank.one(close(2))
    old, new = bank.loans()
    # 18.25% a year on 36,500 is 18.25 a day: 18 and a carry of a quarter, then 18, ...
    assert (old.interest, new.interest) == (36, 18)
    result = bank.one(Repay("r1", A, 60, "EUR"))
    assert result.accepted and result.detail == "paid interest 54, principal 6"
    assert (old.interest, new.interest) == (0, 0)
    assert (old.principal, new.principal) == (36_494, 36_500)
    result = bank.one(Repay("r2", A, 40_000, "EUR"))
    assert result.detail == "paid interest 0, principal 40000"
    assert [loan.id for loan in bank.loans()] == ["new"]
    assert bank.loans()[0].principal == 32_994
    assert bank.ledger.credit.lines[A].available == 100_000 - 32_994
    check_books(bank)


def test_repay_takes_at_most_what_is_owed() -> None:
    bank = open_bank(A, deposit=10_000)
    bank.one(Draw("d", A, 1_000, "EUR"))
    result = bank.one(Repay("r", A, 5_000, "EUR"))
    assert result.accepted
    assert result.detail == "paid interest 0, principal 1000; 4000 more than owed, not taken"
    assert bank.account(A).balance == 10_000
    assert not bank.loans()
    assert bank.one(Repay("r2", A, 1, "EUR")).reason is Reason.NOTHING_OWED
    closed = msgspec.msgpack.decode(bank.rows[(CreditKind.LOAN, "d")].body, type=Loan)
    assert closed.closed and not bank.rows[(CreditKind.LOAN, "d")].open


def test_repay_needs_the_money() -> None:
    bank = open_bank(A)
    bank.one(Draw("d", A, 1_000, "EUR"))
    bank.one(Withdraw("w", A, 1, 900, "EUR"))
    refused = bank.one(Repay("r", A, 1_000, "EUR"))
    assert refused.reason is Reason.INSUFFICIENT_FUNDS
    assert bank.loans()[0].principal == 1_000
    assert bank.one(Repay("r2", A, 100, "EUR")).accepted
    check_books(bank)


def test_early_repayment_has_no_penalty() -> None:
    bank = open_bank(A, deposit=100)
    bank.one(Draw("d", A, 50_000, "EUR"))
    assert bank.one(Repay("r", A, 50_000, "EUR")).detail == "paid interest 0, principal 50000"
    assert bank.account(A).balance == 100
    assert bank.system(SystemAccount.INTEREST_INCOME) == 0


# Interest: daily, exact, remainders carried.


@settings(max_examples=200, deadline=None)
@given(
    principal=st.integers(1, 10**15),
    rate_bp=st.integers(0, 100_000),
)
def test_a_year_of_daily_interest_is_the_closed_form(principal: int, rate_bp: int) -> None:
    total, carry = 0, 0
    for _ in range(365):
        interest, carry = daily_interest(principal, rate_bp, carry)
        total += interest
        assert 0 <= carry < DAY_DENOMINATOR
    assert total == principal * rate_bp // 10_000


@settings(max_examples=25, deadline=None)
@given(principal=st.integers(1, 50_000), rate_bp=st.integers(0, 100_000))
def test_a_year_of_closes_books_the_closed_form(principal: int, rate_bp: int) -> None:
    bank = Bank()
    bank.one(OpenAccount("o", A, 1, "EUR"))
    bank.one(grant(rate_bp=rate_bp, overdue_rate_bp=rate_bp, term_days=3_650))
    bank.one(close(0))
    bank.one(Draw("d", A, principal, "EUR"))
    for offset in range(1, 366):
        assert bank.one(close(offset)).accepted
    assert bank.loans()[0].interest == principal * rate_bp // 10_000
    assert bank.system(SystemAccount.INTEREST_INCOME) == principal * rate_bp // 10_000
    check_books(bank)


@settings(max_examples=30, deadline=None)
@given(
    gaps=st.lists(st.integers(1, CATCH_UP_DAYS_MAX), min_size=1, max_size=5),
    term=st.integers(1, 60),
)
def test_closing_days_at_once_equals_one_by_one(gaps: list[int], term: int) -> None:
    def book(steps: Sequence[int]) -> tuple[object, ...]:
        bank = open_bank(A, deposit=0)
        bank.one(ChangeCreditLine("c", A, 100_000, 1_337, 4_999, 50_000, term))
        bank.one(Draw("d1", A, 12_345, "EUR"))
        bank.one(Draw("d2", A, 33_333, "EUR"))
        for offset in steps:
            assert bank.one(close(offset)).accepted
        loans = [msgspec.structs.asdict(loan) for loan in bank.loans()]
        return (loans, bank.system(SystemAccount.INTEREST_INCOME))

    ends = []
    offset = 0
    for gap in gaps:
        offset += gap
        ends.append(offset)
    assert book(ends) == book(range(1, offset + 1))


def test_overdue_after_the_due_date_at_the_overdue_rate() -> None:
    bank = open_bank(A)
    bank.one(ChangeCreditLine("c", A, 100_000, 3_650, 7_300, 50_000, 2))
    bank.one(Draw("d", A, 10_000, "EUR"))
    (loan,) = bank.loans()
    assert loan.due_on == START.toordinal() + 3
    result = bank.one(close(2))
    assert "0 loans now overdue" in result.detail
    # 36.5% a year on 10,000 is 10 a day: days 1 and 2.
    assert (loan.interest, loan.overdue) == (20, False)
    result = bank.one(close(3))
    assert "1 loans now overdue" in result.detail
    assert (loan.interest, loan.overdue) == (30, True)
    bank.one(close(4))
    assert loan.interest == 50  # day 4 at the overdue rate, 73%: 20
    assert bank.ledger.credit.overdue_loans() == 1
    assert bank.one(Draw("more", A, 1, "EUR")).reason is Reason.LOAN_OVERDUE
    check_books(bank)


def test_close_dates() -> None:
    bank = open_bank(A)
    assert bank.one(close(0)).accepted  # the same id: the same answer
    again = CloseBusinessDay("other-id", ROUTE, day(0))
    assert bank.one(again).reason is Reason.DAY_ALREADY_CLOSED
    too_far = bank.one(close(CATCH_UP_DAYS_MAX + 1))
    assert too_far.reason is Reason.BAD_DATE
    assert bank.one(close(CATCH_UP_DAYS_MAX)).accepted
    assert bank.ledger.credit.last_closed == START.toordinal() + CATCH_UP_DAYS_MAX


# Holds: two-phase movements.


def test_hold_reserves_available_not_balance() -> None:
    bank = open_bank(A, B, deposit=1_000)
    result = bank.one(HoldFunds("h1", A, 1, B, 1, 700, "EUR", day(3)))
    assert result.accepted and result.detail == "available 300"
    assert bank.account(A).balance == 1_000
    assert bank.ledger.book.available(bank.account(A)) == 300
    refused = bank.one(Withdraw("w", A, 1, 301, "EUR"))
    assert refused.reason is Reason.INSUFFICIENT_FUNDS and "held 700" in refused.detail
    assert bank.one(Withdraw("w2", A, 1, 300, "EUR")).accepted
    over = bank.one(HoldFunds("h2", A, 1, B, 1, 1, "EUR", day(3)))
    assert over.reason is Reason.INSUFFICIENT_FUNDS
    check_books(bank)


def test_post_captures_part_and_releases_the_rest() -> None:
    bank = open_bank(A, B, deposit=1_000)
    bank.one(HoldFunds("h1", A, 1, B, 1, 700, "EUR", day(3)))
    assert bank.one(PostHold("p0", A, "h1", 701)).reason is Reason.HOLD_EXCEEDED
    result = bank.one(PostHold("p1", A, "h1", 500))
    assert result.accepted, result
    assert (bank.account(A).balance, bank.account(B).balance) == (500, 1_500)
    assert bank.ledger.book.available(bank.account(A)) == 500
    assert bank.one(PostHold("p2", A, "h1", 1)).reason is Reason.HOLD_NOT_FOUND
    assert bank.one(VoidHold("v", A, "h1")).reason is Reason.HOLD_NOT_FOUND
    check_books(bank)


def test_void_releases_and_nobody_else_touches_a_hold() -> None:
    bank = open_bank(A, B, deposit=1_000)
    bank.one(HoldFunds("h1", A, 1, B, 1, 700, "EUR", day(3)))
    assert bank.one(VoidHold("thief", B, "h1")).reason is Reason.HOLD_NOT_FOUND
    assert bank.one(PostHold("thief2", B, "h1", 700)).reason is Reason.HOLD_NOT_FOUND
    assert bank.one(VoidHold("v", A, "h1")).accepted
    assert bank.ledger.book.available(bank.account(A)) == 1_000
    assert bank.account(B).balance == 1_000


def test_a_hold_expires_at_the_close_of_its_date() -> None:
    bank = open_bank(A, B, deposit=1_000)
    bank.one(HoldFunds("h1", A, 1, B, 1, 700, "EUR", day(2)))
    bank.one(close(1))
    assert bank.ledger.book.held == {(A, 1): 700}
    result = bank.one(close(2))
    assert "1 holds released" in result.detail
    assert bank.ledger.book.held == {}
    assert not bank.rows[(CreditKind.HOLD, "h1")].open
    assert bank.one(PostHold("late", A, "h1", 1)).reason is Reason.HOLD_NOT_FOUND


def test_hold_refusals() -> None:
    bank = open_bank(A, B, deposit=1_000)
    past = bank.one(HoldFunds("h0", A, 1, B, 1, 1, "EUR", day(0)))
    assert past.reason is Reason.BAD_DATE
    far = bank.one(HoldFunds("h1", A, 1, B, 1, 1, "EUR", day(2 + HOLD_DAYS_MAX)))
    assert far.reason is Reason.BAD_DATE
    same = bank.one(HoldFunds("h2", A, 1, A, 1, 1, "EUR", day(1)))
    assert same.reason is Reason.SAME_ACCOUNT
    for n in range(HOLDS_PER_ACCOUNT_MAX):
        assert bank.one(HoldFunds(f"ok{n}", A, 1, B, 1, 1, "EUR", day(1))).accepted
    more = bank.one(HoldFunds("more", A, 1, B, 1, 1, "EUR", day(1)))
    assert more.reason is Reason.TOO_MANY_HOLDS


def test_post_to_another_partition_is_a_saga() -> None:
    bank = open_bank(A, deposit=1_000)
    bank.one(HoldFunds("h1", A, 1, FOREIGN, 1, 700, "EUR", day(3)))
    result = bank.one(PostHold("p1", A, "h1", 600))
    assert result.status is Status.PENDING
    (leg,) = bank.legs
    assert isinstance(leg, CreditLeg)
    assert (leg.transfer_id, leg.customer, leg.amount) == ("p1", FOREIGN, 600)
    assert bank.account(A).balance == 400
    assert bank.ledger.book.held == {}
    assert bank.system(SystemAccount.CLEARING) == 600


def test_accounts_with_credit_or_holds_do_not_close() -> None:
    bank = open_bank(A, B, deposit=0)
    bank.one(Draw("d", A, 100, "EUR"))
    bank.one(Withdraw("w", A, 1, 100, "EUR"))
    assert bank.account(A).balance == 0
    assert bank.one(CloseAccount("c", A, 1)).reason is Reason.CREDIT_IN_USE
    bank.one(SetCreditLimit("limit", B, 1, 10))
    bank.one(HoldFunds("h", B, 1, A, 1, 10, "EUR", day(1)))
    assert bank.one(CloseAccount("c2", B, 1)).reason is Reason.HOLDS_OPEN
    bank.one(VoidHold("v", B, "h"))
    assert bank.one(CloseAccount("c3", B, 1)).accepted


def test_credit_limit_never_below_holds() -> None:
    bank = open_bank(A, B, deposit=0)
    bank.one(SetCreditLimit("l1", A, 1, 500))
    bank.one(HoldFunds("h", A, 1, B, 1, 400, "EUR", day(1)))
    assert bank.one(SetCreditLimit("l2", A, 1, 399)).reason is Reason.CREDIT_IN_USE
    assert bank.one(SetCreditLimit("l3", A, 1, 400)).accepted


# The book survives a reload from its rows (what a new owner of the partition reads).


_ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["draw", "repay", "close", "hold", "post", "void", "reload"]),
        st.integers(1, 60_000),
        st.integers(0, 5),
    ),
    max_size=60,
)


def _script(actions: Sequence[tuple[str, int, int]]) -> list[Command | None]:
    """The commands of ``actions`` (None: reload the book from its rows)."""
    commands: list[Command | None] = []
    today = 0
    for n, (kind, amount, pick) in enumerate(actions):
        match kind:
            case "draw":
                commands.append(Draw(f"d{n}", A, amount, "EUR"))
            case "repay":
                commands.append(Repay(f"r{n}", A, amount, "EUR"))
            case "close":
                today += 1 + pick
                commands.append(close(today))
            case "hold":
                expiry = day(today + 1 + pick)
                commands.append(HoldFunds(f"h{n}", A, 1, B, 1, amount, "EUR", expiry))
            case "post":
                commands.append(PostHold(f"p{n}", A, f"h{n - pick - 1}", amount))
            case "void":
                commands.append(VoidHold(f"v{n}", A, f"h{n - pick - 1}"))
            case _:
                commands.append(None)
    return commands


def _state(bank: Bank) -> tuple[object, ...]:
    credit = bank.ledger.credit
    return (
        {c: msgspec.structs.asdict(line) for c, line in credit.lines.items()},
        {c: [msgspec.structs.asdict(loan) for loan in ls] for c, ls in credit.loans.items()},
        {i: msgspec.structs.asdict(hold) for i, hold in credit.holds.items()},
        dict(bank.ledger.book.held),
        credit.last_closed,
        sorted((a.key, a.balance) for a in bank.ledger.book.accounts.values()),
    )


@settings(max_examples=80, deadline=None)
@given(actions=_ACTIONS)
def test_random_days_keep_the_books_and_survive_reloads(
    actions: list[tuple[str, int, int]],
) -> None:
    plain, reloaded = open_bank(A, B, deposit=40_000), open_bank(A, B, deposit=40_000)
    for command in _script(actions):
        if command is None:
            open_rows = [row for row in reloaded.rows.values() if row.open]
            reloaded.ledger.credit.load(open_rows)
            continue
        first, second = plain.one(command), reloaded.one(command)
        assert (first.status, first.reason, first.detail) == (
            second.status,
            second.reason,
            second.detail,
        )
        check_books(plain)
    assert _state(plain) == _state(reloaded)
