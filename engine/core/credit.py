"""Revolving credit and holds: the credit book of one partition and its rules.

Pure, like engine.core.ledger (which calls it): no I/O, no clock. Time enters only as
data, through ``close_business_day``; the partition's calendar is the last day it
closed, and "today" is the day after it.

Rules (docs/credit.md):

- **Lines, invitation only.** Only the risk authority grants, changes or suspends a
  customer's line (signed privileged commands). One line per customer, in the currency
  of the account it disburses to and is repaid from. Without one, ``draw`` is refused
  ``no_credit_line``.
- **Draws.** A draw opens a loan of its amount, due ``term_days`` after today, and
  moves the money from the partition's LOANS account to the line's account. Refused
  above the per-loan maximum (``loan_too_large``), above what the line has left
  (``credit_limit_exceeded``), on a suspended line, while a loan is overdue
  (``loan_overdue``), or past LOANS_PER_CUSTOMER_MAX open loans.
- **Repayments** take at most what is owed from the line's account (the rest of the
  amount is not taken): first the interest of every loan, oldest loan first, then the
  principal, oldest loan first. Repaid principal is available to draw again. A loan with
  nothing left is closed; its sub-minor-unit remainder (below) is forgiven.
- **Interest** accrues at each business day's close on each loan's principal, Actual/365:
  ``principal * rate_bp + carry`` divided by 10,000 * 365, the quotient booked and the
  remainder carried to the next day. Nothing is lost to rounding: a year of days at one
  principal books exactly ``principal * rate_bp // 10,000``. The day's interest of the
  partition moves from INTEREST_RECEIVABLE to INTEREST_INCOME, one movement per currency.
  A loan still owing principal at the close of its due date is overdue from the next
  day, and accrues at the line's overdue rate.
- **Holds** reserve money of an account for a payee: the account's available balance
  (balance + credit limit - holds) drops, its balance does not. ``post`` pays all or
  part of it to the payee like a transfer (a saga across partitions) and releases the
  rest, ``void`` releases it, and the close of its expiry date releases it too.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from engine.core.book import (
    MOVABLE,
    Account,
    AccountBook,
    CreditKind,
    CreditRow,
    Decision,
    Incoming,
    Outcome,
    SystemAccount,
)
from engine.core.decoding import parse_date
from engine.core.errors import invariant
from engine.core.messages import (
    BALANCE_MAX,
    BALANCE_MIN,
    ChangeCreditLine,
    CloseBusinessDay,
    Draw,
    GrantCreditLine,
    HoldFunds,
    PostHold,
    Reason,
    Repay,
    SuspendCreditLine,
    Transfer,
    VoidHold,
)
from engine.core.routing import partition_of
from engine.core.saga import transfer_out

BASIS_POINTS: Final = 10_000
DAYS_PER_YEAR: Final = 365
DAY_DENOMINATOR: Final = BASIS_POINTS * DAYS_PER_YEAR
"""A day's interest is ``(principal * rate_bp + carry) // DAY_DENOMINATOR``."""
LOANS_PER_CUSTOMER_MAX: Final = 100
"""Most open loans of one customer: the credit book stays bounded in memory."""
HOLDS_PER_ACCOUNT_MAX: Final = 100
HOLD_DAYS_MAX: Final = 31
"""Latest expiry of a hold, in days after today."""
CATCH_UP_DAYS_MAX: Final = 31
"""Most days one ``close_business_day`` closes (the scheduler publishes every day; this
bounds the work of one command when it was stopped for a while)."""


class CreditLine(msgspec.Struct, gc=False):
    """A customer's revolving line, with its running totals."""

    customer: int
    account: int
    currency: str
    limit: int
    rate_bp: int
    overdue_rate_bp: int
    loan_max: int
    term_days: int
    suspended: bool = False
    principal: int = 0
    """Principal open over the line's loans: the line has ``limit - principal`` left."""
    drawn: int = 0
    principal_repaid: int = 0
    interest_accrued: int = 0
    interest_paid: int = 0

    @property
    def available(self) -> int:
        return self.limit - self.principal

    def row(self) -> CreditRow:
        return _row(CreditKind.LINE, str(self.customer), self, self.principal, True)


class Loan(msgspec.Struct, gc=False):
    """One draw: its principal and interest still owed, and its dates (day numbers)."""

    id: str
    customer: int
    currency: str
    seq: int
    """The draw's input place: loans are repaid in this order."""
    drawn_on: int
    due_on: int
    amount: int
    principal: int
    interest: int = 0
    carry: int = 0
    """The remainder of the last day's interest division, below DAY_DENOMINATOR."""
    overdue: bool = False
    interest_accrued: int = 0
    closed: bool = False

    @property
    def owed(self) -> int:
        return self.principal + self.interest

    def row(self) -> CreditRow:
        return _row(CreditKind.LOAN, self.id, self, self.principal, not self.closed)


class HoldState(enum.StrEnum):
    OPEN = "open"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


class Hold(msgspec.Struct, gc=False):
    id: str
    customer: int
    account: int
    to_customer: int
    to_account: int
    amount: int
    currency: str
    expires_on: int
    state: HoldState = HoldState.OPEN
    captured: int = 0

    @property
    def key(self) -> tuple[int, int]:
        return (self.customer, self.account)

    def row(self) -> CreditRow:
        return _row(CreditKind.HOLD, self.id, self, self.amount, self.state == HoldState.OPEN)


class Calendar(msgspec.Struct, gc=False):
    last_closed: int
    """The day number (``date.toordinal``) of the last business day closed."""

    def row(self) -> CreditRow:
        return _row(CreditKind.CALENDAR, "", self, self.last_closed, True)


_encoder = msgspec.msgpack.Encoder()
_DECODERS: Final[dict[CreditKind, msgspec.msgpack.Decoder[Any]]] = {
    CreditKind.LINE: msgspec.msgpack.Decoder(CreditLine),
    CreditKind.LOAN: msgspec.msgpack.Decoder(Loan),
    CreditKind.HOLD: msgspec.msgpack.Decoder(Hold),
    CreditKind.CALENDAR: msgspec.msgpack.Decoder(Calendar),
}


def _row(
    kind: CreditKind, key: str, entity: msgspec.Struct, amount: int, is_open: bool
) -> CreditRow:
    customer = getattr(entity, "customer", 0)
    currency = getattr(entity, "currency", "")
    return CreditRow(kind, key, customer, currency, amount, is_open, _encoder.encode(entity))


def day_text(day: int) -> str:
    """A day number as ``YYYY-MM-DD``."""
    return dt.date.fromordinal(day).isoformat()


def daily_interest(principal: int, rate_bp: int, carry: int) -> tuple[int, int]:
    """One day's interest on ``principal`` at ``rate_bp`` a year, and the new carry."""
    return divmod(principal * rate_bp + carry, DAY_DENOMINATOR)


class CreditBook:
    """A partition's open credit: every line, open loan and open hold, and its calendar
    (all of them, never a cache: a business day's close reads every loan)."""

    def __init__(self, book: AccountBook):
        self.book = book
        self.lines: dict[int, CreditLine] = {}
        self.loans: dict[int, list[Loan]] = {}
        """Open loans by customer, oldest first."""
        self.holds: dict[str, Hold] = {}
        self.holds_per_account: dict[tuple[int, int], int] = {}
        self.last_closed: int | None = None

    def load(self, rows: Iterable[CreditRow]) -> None:
        """Replace the book with the cup's open rows (after a claim or a reload)."""
        self.lines, self.loans, self.holds = {}, {}, {}
        self.holds_per_account = {}
        self.book.held = {}
        self.last_closed = None
        loans: list[Loan] = []
        for row in rows:
            invariant(row.open, "only open credit rows are loaded")
            entity = _DECODERS[row.kind].decode(row.body)
            match entity:
                case CreditLine():
                    self.lines[entity.customer] = entity
                case Loan():
                    loans.append(entity)
                case Hold():
                    self._track(entity)
                case Calendar():
                    self.last_closed = entity.last_closed
        for loan in sorted(loans, key=lambda loan: loan.seq):
            self.loans.setdefault(loan.customer, []).append(loan)

    @property
    def today(self) -> int | None:
        return None if self.last_closed is None else self.last_closed + 1

    def _track(self, hold: Hold) -> None:
        self.holds[hold.id] = hold
        key = hold.key
        self.book.held[key] = self.book.held.get(key, 0) + hold.amount
        self.holds_per_account[key] = self.holds_per_account.get(key, 0) + 1

    def _release(self, hold: Hold, state: HoldState, outcome: Outcome) -> None:
        del self.holds[hold.id]
        key = hold.key
        left = self.book.held[key] - hold.amount
        invariant(left >= 0, "held money never goes below zero")
        if left:
            self.book.held[key] = left
        else:
            del self.book.held[key]
        count = self.holds_per_account[key] - 1
        if count:
            self.holds_per_account[key] = count
        else:
            del self.holds_per_account[key]
        hold.state = state
        _changed(outcome, hold.row())

    def refuses_close(self, account: Account) -> Decision | None:
        """Why ``account`` cannot close for credit's sake (None: it can): it pays out a
        line with money owed, or holds are open on it."""
        line = self.lines.get(account.customer)
        if line is not None and line.account == account.number and self.loans.get(line.customer):
            detail = f"account {account.key} repays loans still open"
            return Decision(Reason.CREDIT_IN_USE, detail)
        if self.holds_per_account.get(account.key):
            return Decision(Reason.HOLDS_OPEN, f"account {account.key} has holds open")
        return None

    def overdue_loans(self) -> int:
        return sum(loan.overdue for loans in self.loans.values() for loan in loans)

    def outstanding(self) -> dict[str, int]:
        """Principal outstanding by currency."""
        totals: dict[str, int] = {}
        for line in self.lines.values():
            totals[line.currency] = totals.get(line.currency, 0) + line.principal
        return totals

    # Privileged: the risk authority's lines, the scheduler's business days.

    def grant(self, command: GrantCreditLine, outcome: Outcome) -> Decision:
        if command.customer in self.lines:
            detail = f"customer {command.customer} has a credit line; change it instead"
            return Decision(Reason.CREDIT_LINE_EXISTS, detail)
        account, refusal = self.book.movable(command.customer, command.account, command.currency)
        if account is None:
            return refusal
        line = CreditLine(
            command.customer,
            command.account,
            command.currency,
            command.limit,
            command.rate_bp,
            command.overdue_rate_bp,
            command.loan_max,
            command.term_days,
        )
        self.lines[command.customer] = line
        _changed(outcome, line.row())
        return Decision(Reason.NONE, "", (account,))

    def change(self, command: ChangeCreditLine, outcome: Outcome) -> Decision:
        line, refusal = self._line(command.customer)
        if line is None:
            return refusal
        if command.limit < line.principal:
            detail = f"the line has {line.principal} drawn, over the new limit {command.limit}"
            return Decision(Reason.CREDIT_IN_USE, detail)
        line.limit = command.limit
        line.rate_bp = command.rate_bp
        line.overdue_rate_bp = command.overdue_rate_bp
        line.loan_max = command.loan_max
        line.term_days = command.term_days
        _changed(outcome, line.row())
        return self._line_decision(line)

    def suspend(self, command: SuspendCreditLine, outcome: Outcome) -> Decision:
        line, refusal = self._line(command.customer)
        if line is None:
            return refusal
        line.suspended = command.suspended
        _changed(outcome, line.row())
        return self._line_decision(line)

    def close_day(self, command: CloseBusinessDay, seq: int, outcome: Outcome) -> Decision:
        """Close every business day up to ``command.date`` not closed yet, in order."""
        day = parse_date(command.date)
        invariant(day is not None, "dates are validated")
        assert day is not None
        if self.last_closed is None:
            self.last_closed = day
            _changed(outcome, Calendar(day).row())
            return Decision(Reason.NONE, f"calendar starts: {command.date} closed")
        if day <= self.last_closed:
            detail = f"{command.date} is closed already (last {day_text(self.last_closed)})"
            return Decision(Reason.DAY_ALREADY_CLOSED, detail)
        if day - self.last_closed > CATCH_UP_DAYS_MAX:
            detail = (
                f"{command.date} is more than {CATCH_UP_DAYS_MAX} days after the last day"
                f" closed, {day_text(self.last_closed)}: close the days between first"
            )
            return Decision(Reason.BAD_DATE, detail)
        first = self.last_closed + 1
        accrued = self._accrue(first, day)
        refusal = self._book_interest(command.id, seq, accrued, outcome, dry_run=True)
        if refusal is not None:
            return refusal
        touched = self._apply_accrual(accrued, outcome)
        self._book_interest(command.id, seq, accrued, outcome, dry_run=False)
        released = [h for h in self.holds.values() if h.expires_on <= day]
        for hold in released:
            self._release(hold, HoldState.EXPIRED, outcome)
        self.last_closed = day
        _changed(outcome, Calendar(day).row())
        interest = sum(accrued.totals.values())
        detail = (
            f"closed {day_text(first)}..{command.date}: interest {interest},"
            f" {accrued.overdue_now} loans now overdue, {len(released)} holds released"
        )
        return Decision(Reason.NONE, detail, touched)

    def _accrue(self, first: int, last: int) -> Accrual:
        """Every open loan's interest and status over days ``first`` to ``last``, staged:
        nothing in the book changes yet."""
        accrual = Accrual()
        for customer, loans in self.loans.items():
            line = self.lines[customer]
            for loan in loans:
                interest, carry, overdue = loan.interest, loan.carry, loan.overdue
                for day in range(first, last + 1):
                    rate = line.overdue_rate_bp if overdue else line.rate_bp
                    today, carry = daily_interest(loan.principal, rate, carry)
                    interest += today
                    if not overdue and loan.due_on <= day and loan.principal:
                        overdue = True
                        accrual.overdue_now += 1
                gained = interest - loan.interest
                if gained or overdue != loan.overdue or carry != loan.carry:
                    accrual.loans.append((loan, interest, carry, overdue))
                if gained:
                    accrual.totals[loan.currency] = accrual.totals.get(loan.currency, 0) + gained
        return accrual

    def _book_interest(
        self, command_id: str, seq: int, accrual: Accrual, outcome: Outcome, *, dry_run: bool
    ) -> Decision | None:
        """Move each currency's interest from INTEREST_RECEIVABLE to INTEREST_INCOME (or,
        ``dry_run``, say why it cannot: the 64-bit range)."""
        for currency, total in sorted(accrual.totals.items()):
            receivable = self.book.system_account(SystemAccount.INTEREST_RECEIVABLE, currency)
            income = self.book.system_account(SystemAccount.INTEREST_INCOME, currency)
            if dry_run:
                if receivable.balance - total < BALANCE_MIN or income.balance + total > BALANCE_MAX:
                    return Decision(Reason.OVERFLOW, "interest would leave the 64-bit range")
                continue
            decision = self.book.move(command_id, seq, receivable, income, total, outcome)
            invariant(decision.reason is Reason.NONE, "checked by the dry run")
        return None

    def _apply_accrual(self, accrual: Accrual, outcome: Outcome) -> tuple[Account, ...]:
        for loan, interest, carry, overdue in accrual.loans:
            line = self.lines[loan.customer]
            gained = interest - loan.interest
            loan.interest, loan.carry, loan.overdue = interest, carry, overdue
            loan.interest_accrued += gained
            line.interest_accrued += gained
            _changed(outcome, loan.row())
            _changed(outcome, line.row())
        touched: list[Account] = []
        for currency in sorted(accrual.totals):
            touched.append(self.book.system_account(SystemAccount.INTEREST_RECEIVABLE, currency))
            touched.append(self.book.system_account(SystemAccount.INTEREST_INCOME, currency))
        return tuple(touched)

    # The customer's: draws and repayments.

    def draw(self, command: Draw, incoming: Incoming, outcome: Outcome) -> Decision:
        line, refusal = self._line(command.customer)
        if line is None:
            return refusal
        barred = self._draw_refusal(line, command)
        if barred is not None:
            return barred
        today = self.today
        assert today is not None
        account, refusal = self.book.movable(line.customer, line.account, line.currency)
        if account is None:
            return refusal
        loans = self.book.system_account(SystemAccount.LOANS, line.currency)
        decision = self.book.move(command.id, incoming.seq, loans, account, command.amount, outcome)
        if decision.reason is not Reason.NONE:
            return decision
        due = today + line.term_days
        loan = Loan(
            command.id,
            command.customer,
            line.currency,
            incoming.seq,
            today,
            due,
            command.amount,
            command.amount,
        )
        self.loans.setdefault(command.customer, []).append(loan)
        line.principal += command.amount
        line.drawn += command.amount
        _changed(outcome, loan.row())
        _changed(outcome, line.row())
        detail = f"loan {command.id} due {day_text(due)}; line has {line.available} left"
        return Decision(Reason.NONE, detail, decision.touched)

    def _draw_refusal(self, line: CreditLine, command: Draw) -> Decision | None:
        loans = self.loans.get(line.customer, [])
        refusal: tuple[Reason, str] | None = None
        if command.currency != line.currency:
            refusal = Reason.CURRENCY_MISMATCH, f"the line lends {line.currency}"
        elif line.suspended:
            refusal = Reason.CREDIT_LINE_SUSPENDED, "the line is suspended"
        elif self.today is None:
            refusal = Reason.NO_BUSINESS_DATE, "no business day closed here yet"
        elif command.amount > line.loan_max:
            refusal = Reason.LOAN_TOO_LARGE, f"one loan is at most {line.loan_max}"
        elif command.amount > line.available:
            refusal = Reason.CREDIT_LIMIT_EXCEEDED, f"the line has {line.available} left"
        elif any(loan.overdue for loan in loans):
            refusal = Reason.LOAN_OVERDUE, "a loan of the line is overdue: repay it first"
        elif len(loans) >= LOANS_PER_CUSTOMER_MAX:
            refusal = Reason.TOO_MANY_LOANS, f"{len(loans)} loans are open: repay one first"
        return None if refusal is None else Decision(*refusal)

    def repay(self, command: Repay, incoming: Incoming, outcome: Outcome) -> Decision:
        line, refusal = self._line(command.customer)
        if line is None:
            return refusal
        if command.currency != line.currency:
            return Decision(Reason.CURRENCY_MISMATCH, f"the line lends {line.currency}")
        loans = self.loans.get(line.customer, [])
        owed = sum(loan.owed for loan in loans)
        if not owed:
            return Decision(Reason.NOTHING_OWED, "the line has no loan open")
        account, refusal = self.book.movable(line.customer, line.account, line.currency)
        if account is None:
            return refusal
        paying = min(command.amount, owed)
        interest_part = min(paying, sum(loan.interest for loan in loans))
        principal_part = paying - interest_part
        receivable = self.book.system_account(SystemAccount.INTEREST_RECEIVABLE, line.currency)
        lent = self.book.system_account(SystemAccount.LOANS, line.currency)
        decision = self.book.move_many(
            command.id,
            incoming.seq,
            account,
            ((receivable, interest_part), (lent, principal_part)),
            outcome,
        )
        if decision.reason is not Reason.NONE:
            return decision
        self._allocate(line, loans, interest_part, principal_part, outcome)
        detail = f"paid interest {interest_part}, principal {principal_part}"
        if paying < command.amount:
            detail += f"; {command.amount - paying} more than owed, not taken"
        return Decision(Reason.NONE, detail, decision.touched)

    def _allocate(
        self,
        line: CreditLine,
        loans: list[Loan],
        interest: int,
        principal: int,
        outcome: Outcome,
    ) -> None:
        """Spread a repayment over the loans: interest oldest first, then principal
        oldest first; close the loans with nothing left."""
        line.interest_paid += interest
        for loan in loans:
            part = min(interest, loan.interest)
            loan.interest -= part
            interest -= part
        for loan in loans:
            part = min(principal, loan.principal)
            loan.principal -= part
            principal -= part
            line.principal -= part
            line.principal_repaid += part
        invariant(interest == 0 and principal == 0, "a repayment is at most what is owed")
        still_open: list[Loan] = []
        for loan in loans:
            if loan.owed == 0:
                loan.closed = True
            else:
                still_open.append(loan)
            _changed(outcome, loan.row())
        if still_open:
            self.loans[line.customer] = still_open
        else:
            del self.loans[line.customer]
        _changed(outcome, line.row())

    # Holds.

    def hold(self, command: HoldFunds, outcome: Outcome) -> Decision:
        today = self.today
        if today is None:
            return Decision(Reason.NO_BUSINESS_DATE, "no business day closed here yet")
        expires = parse_date(command.expires_on)
        assert expires is not None
        if not today <= expires <= today + HOLD_DAYS_MAX:
            detail = f"a hold expires {day_text(today)} to {day_text(today + HOLD_DAYS_MAX)}"
            return Decision(Reason.BAD_DATE, detail)
        if (command.customer, command.account) == (command.to_customer, command.to_account):
            return Decision(Reason.SAME_ACCOUNT, "a hold pays another account")
        account, refusal = self.book.movable(command.customer, command.account, command.currency)
        if account is None:
            return refusal
        if self.holds_per_account.get(account.key, 0) >= HOLDS_PER_ACCOUNT_MAX:
            detail = f"account {account.key} has {HOLDS_PER_ACCOUNT_MAX} holds open"
            return Decision(Reason.TOO_MANY_HOLDS, detail)
        available = self.book.available(account)
        if command.amount > available:
            detail = f"account {account.key} has {available} available"
            return Decision(Reason.INSUFFICIENT_FUNDS, detail)
        hold = Hold(
            command.id,
            command.customer,
            command.account,
            command.to_customer,
            command.to_account,
            command.amount,
            command.currency,
            expires,
        )
        self._track(hold)
        _changed(outcome, hold.row())
        detail = f"available {available - command.amount}"
        return Decision(Reason.NONE, detail, (account,))

    def post(self, command: PostHold, incoming: Incoming, outcome: Outcome) -> Decision:
        hold, refusal = self._hold(command.customer, command.hold_id)
        if hold is None:
            return refusal
        if command.amount > hold.amount:
            detail = f"hold {hold.id} holds {hold.amount}"
            return Decision(Reason.HOLD_EXCEEDED, detail)
        key = hold.key
        self.book.held[key] -= hold.amount
        transfer = Transfer(
            command.id,
            hold.customer,
            hold.account,
            hold.to_customer,
            hold.to_account,
            command.amount,
            hold.currency,
        )
        decision = self._pay(transfer, incoming, outcome)
        self.book.held[key] += hold.amount
        if decision.reason is not Reason.NONE:
            return decision
        hold.captured = command.amount
        self._release(hold, HoldState.POSTED, outcome)
        return decision

    def _pay(self, transfer: Transfer, incoming: Incoming, outcome: Outcome) -> Decision:
        """A hold's payment: a transfer in the partition, or a saga out of it."""
        book = self.book
        if partition_of(transfer.to_customer, book.partitions) != book.partition:
            return transfer_out(book, transfer, incoming, outcome)
        payer, refusal = book.movable(transfer.customer, transfer.account, transfer.currency)
        if payer is None:
            return refusal
        payee, refusal = book.movable(transfer.to_customer, transfer.to_account, transfer.currency)
        if payee is None:
            return refusal
        return book.move(transfer.id, incoming.seq, payer, payee, transfer.amount, outcome)

    def void(self, command: VoidHold, outcome: Outcome) -> Decision:
        hold, refusal = self._hold(command.customer, command.hold_id)
        if hold is None:
            return refusal
        self._release(hold, HoldState.VOIDED, outcome)
        account = self.book.accounts.get(hold.key)
        touched = () if account is None else (account,)
        return Decision(Reason.NONE, "", touched)

    def _hold(self, customer: int, hold_id: str) -> tuple[Hold, Decision] | tuple[None, Decision]:
        """The customer's open hold ``hold_id`` (another customer's is not found)."""
        hold = self.holds.get(hold_id)
        if hold is None or hold.customer != customer:
            return None, Decision(Reason.HOLD_NOT_FOUND, f"no open hold {hold_id!r}")
        return hold, MOVABLE

    def _line(self, customer: int) -> tuple[CreditLine, Decision] | tuple[None, Decision]:
        line = self.lines.get(customer)
        if line is None:
            detail = f"customer {customer} has no credit line (the risk authority grants them)"
            return None, Decision(Reason.NO_CREDIT_LINE, detail)
        return line, MOVABLE

    def _line_decision(self, line: CreditLine) -> Decision:
        account = self.book.accounts.get((line.customer, line.account))
        return Decision(Reason.NONE, "", () if account is None else (account,))


class Accrual:
    """A close's staged interest: each changed loan's (loan, interest, carry, overdue),
    each currency's total, and how many loans turned overdue."""

    def __init__(self) -> None:
        self.loans: list[tuple[Loan, int, int, bool]] = []
        self.totals: dict[str, int] = {}
        self.overdue_now = 0


def _changed(outcome: Outcome, row: CreditRow) -> None:
    outcome.credit[(row.kind, row.key)] = row
