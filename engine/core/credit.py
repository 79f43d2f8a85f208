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
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from engine.core.book import (
    MOVABLE,
    SYSTEM_CUSTOMER,
    Account,
    AccountBook,
    ClearingEntry,
    ClearingKind,
    CreditKind,
    CreditRow,
    Decision,
    Incoming,
    Outcome,
    PartnerAccount,
    SystemAccount,
    partner_account_number,
)
from engine.core.decoding import parse_date
from engine.core.errors import invariant
from engine.core.messages import (
    BALANCE_MAX,
    BALANCE_MIN,
    BASIS_POINTS,
    ChangeCreditLine,
    CloseBusinessDay,
    Draw,
    GrantCreditLine,
    HoldFunds,
    PostHold,
    Reason,
    RegisterPartner,
    Repay,
    SuspendCreditLine,
    Transfer,
    VoidHold,
)
from engine.core.saga import pay

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
    partner: int = 0
    """The partner bank funding ``partner_share_bp`` of every draw (0: none), earning
    ``partner_rate_bp`` on its share."""
    partner_share_bp: int = 0
    partner_rate_bp: int = 0
    partner_interest_accrued: int = 0
    """The partner's part of ``interest_accrued``."""

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
    partner: int = 0
    partner_principal: int = 0
    """The partner's share of ``principal`` (the rest is the originator's)."""
    partner_interest: int = 0
    """The partner's share of ``interest``."""
    partner_carry: int = 0
    partner_weight: int = 0
    """principal * rate at the last accrual: the partner's carry divides by it, and
    starts again when it changes."""

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


class Partner(msgspec.Struct, gc=False):
    """A partner bank, as the risk authority registered it in this partition."""

    partner: int
    name: str
    currency: str
    funding_account: str

    def row(self) -> CreditRow:
        return _row(CreditKind.PARTNER, str(self.partner), self, 0, True)


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
    CreditKind.PARTNER: msgspec.msgpack.Decoder(Partner),
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


def split(whole: int, part: int, of: int) -> int:
    """The share ``part / of`` of ``whole``, rounded down (the rest stays with the
    originator): never more than ``whole``, and all of it when ``part == of``."""
    invariant(0 <= part <= of and whole >= 0, "a share is a part of its whole")
    return whole * part // of if of else 0


def partner_interest(interest: int, weight: int, whole_weight: int, carry: int) -> tuple[int, int]:
    """The partner's share of one day's ``interest``: interest * weight / whole_weight
    (its principal * its rate over the loan's principal * the rate charged), the
    remainder carried; never more than ``interest``."""
    if not whole_weight:
        return 0, carry
    return divmod(interest * weight + carry, whole_weight)


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
        self.partners: dict[int, Partner] = {}

    def load(self, rows: Iterable[CreditRow]) -> None:
        """Replace the book with the cup's open rows (after a claim or a reload)."""
        self.lines, self.loans, self.holds = {}, {}, {}
        self.holds_per_account = {}
        self.partners = {}
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
                case Partner():
                    self.partners[entity.partner] = entity
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

    def register(self, command: RegisterPartner, outcome: Outcome) -> Decision:
        if command.partner in self.partners:
            return Decision(Reason.PARTNER_EXISTS, f"partner {command.partner} is registered")
        partner = Partner(command.partner, command.name, command.currency, command.funding_account)
        self.partners[command.partner] = partner
        _changed(outcome, partner.row())
        return Decision(Reason.NONE, f"partner {command.partner} registered")

    def grant(self, command: GrantCreditLine, outcome: Outcome) -> Decision:
        if command.customer in self.lines:
            detail = f"customer {command.customer} has a credit line; change it instead"
            return Decision(Reason.CREDIT_LINE_EXISTS, detail)
        if command.partner:
            partner = self.partners.get(command.partner)
            if partner is None:
                detail = f"partner {command.partner} is not registered in this partition"
                return Decision(Reason.PARTNER_NOT_FOUND, detail)
            if partner.currency != command.currency:
                detail = f"partner {partner.partner} settles in {partner.currency}"
                return Decision(Reason.PARTNER_TERMS, detail)
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
            partner=command.partner,
            partner_share_bp=command.partner_share_bp,
            partner_rate_bp=command.partner_rate_bp,
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
        if command.rate_bp < line.partner_rate_bp:
            detail = f"partner {line.partner} earns {line.partner_rate_bp} bp on this line"
            return Decision(Reason.PARTNER_TERMS, detail)
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
        postings = self._interest_postings(accrued)
        if not all(_fits(legs) for legs in postings):
            return Decision(Reason.OVERFLOW, "interest would leave the 64-bit range")
        self._apply_accrual(accrued, outcome)
        touched: tuple[Account, ...] = ()
        for legs in postings:
            posted = self.book.post(command.id, seq, legs, outcome)
            invariant(posted.reason is Reason.NONE, "checked before")
            touched += posted.touched
        touched += self._clear_partners(first, command.id, seq, outcome)
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
                staged = Staged(
                    loan,
                    loan.interest,
                    loan.carry,
                    loan.overdue,
                    loan.partner_interest,
                    loan.partner_carry,
                    loan.partner_weight,
                )
                for day in range(first, last + 1):
                    self._accrue_day(line, staged, day, accrual)
                if staged.changes(loan):
                    accrual.loans.append(staged)
                gained = staged.interest - loan.interest
                if gained:
                    accrual.totals[loan.currency] = accrual.totals.get(loan.currency, 0) + gained
                partner_gained = staged.partner_interest - loan.partner_interest
                if partner_gained:
                    key = (loan.partner, loan.currency)
                    accrual.partners[key] = accrual.partners.get(key, 0) + partner_gained
        return accrual

    @staticmethod
    def _accrue_day(line: CreditLine, staged: Staged, day: int, accrual: Accrual) -> None:
        """One day of ``staged``: its interest, its partner's share, maybe overdue."""
        loan = staged.loan
        rate = line.overdue_rate_bp if staged.overdue else line.rate_bp
        interest, staged.carry = daily_interest(loan.principal, rate, staged.carry)
        staged.interest += interest
        if loan.partner:
            whole = loan.principal * rate
            if whole != staged.partner_weight:
                staged.partner_weight, staged.partner_carry = whole, 0
            weight = loan.partner_principal * line.partner_rate_bp
            share, staged.partner_carry = partner_interest(
                interest, weight, whole, staged.partner_carry
            )
            staged.partner_interest += share
        if not staged.overdue and loan.due_on <= day and loan.principal:
            staged.overdue = True
            accrual.overdue_now += 1

    def _interest_postings(self, accrual: Accrual) -> list[list[tuple[Account, int]]]:
        """Per currency: the day's interest out of INTEREST_RECEIVABLE, the partners'
        shares to their INTEREST accounts, the rest to INTEREST_INCOME."""
        postings = []
        for currency, total in sorted(accrual.totals.items()):
            receivable = self.book.system_account(SystemAccount.INTEREST_RECEIVABLE, currency)
            legs = [(receivable, -total)]
            kept = total
            for (partner, of), share in sorted(accrual.partners.items()):
                if of == currency:
                    account = self.book.partner_account(PartnerAccount.INTEREST, partner, of)
                    legs.append((account, share))
                    kept -= share
            invariant(kept >= 0, "partners' shares never exceed the interest")
            if kept:
                legs.append(
                    (self.book.system_account(SystemAccount.INTEREST_INCOME, currency), kept)
                )
            postings.append(legs)
        return postings

    def _apply_accrual(self, accrual: Accrual, outcome: Outcome) -> None:
        for staged in accrual.loans:
            loan = staged.loan
            line = self.lines[loan.customer]
            gained = staged.interest - loan.interest
            partner_gained = staged.partner_interest - loan.partner_interest
            loan.interest, loan.carry, loan.overdue = staged.interest, staged.carry, staged.overdue
            loan.partner_interest = staged.partner_interest
            loan.partner_carry, loan.partner_weight = staged.partner_carry, staged.partner_weight
            loan.interest_accrued += gained
            line.interest_accrued += gained
            line.partner_interest_accrued += partner_gained
            _changed(outcome, loan.row())
            _changed(outcome, line.row())

    def _clear_partners(
        self, day: int, command_id: str, seq: int, outcome: Outcome
    ) -> tuple[Account, ...]:
        """The day's clearing: each partner's CLEARING (its movements of ``day``) moves
        to its SETTLEMENT account, as one NET entry of its statement."""
        touched: tuple[Account, ...] = ()
        for number, partner in sorted(self.partners.items()):
            key = (
                SYSTEM_CUSTOMER,
                partner_account_number(PartnerAccount.CLEARING, number, partner.currency),
            )
            clearing = self.book.accounts.get(key)
            if clearing is None or not clearing.balance:
                continue
            net = clearing.balance
            settlement = self.book.partner_account(
                PartnerAccount.SETTLEMENT, number, partner.currency
            )
            posted = self.book.post(command_id, seq, ((clearing, -net), (settlement, net)), outcome)
            invariant(posted.reason is Reason.NONE, "a day's net fits where its movements did")
            touched += posted.touched
            _clear(
                outcome,
                seq,
                day,
                number,
                partner.currency,
                "",
                0,
                ClearingKind.NET,
                net,
                command_id,
            )
        return touched

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
        touched = decision.touched
        if line.partner:
            loan.partner = line.partner
            loan.partner_principal = split(command.amount, line.partner_share_bp, BASIS_POINTS)
            touched += self._with_partner(
                loan,
                incoming.seq,
                command.id,
                ClearingKind.FUNDED,
                -loan.partner_principal,
                outcome,
            )
        _changed(outcome, loan.row())
        _changed(outcome, line.row())
        detail = f"loan {command.id} due {day_text(due)}; line has {line.available} left"
        return Decision(Reason.NONE, detail, touched)

    def _with_partner(
        self,
        loan: Loan,
        seq: int,
        command_id: str,
        kind: ClearingKind,
        amount: int,
        outcome: Outcome,
    ) -> tuple[Account, ...]:
        """Book one movement of ``loan`` with its partner: the partner's FUNDED (its
        share of a draw or of principal repaid) or INTEREST (of interest paid) against
        its CLEARING, and the clearing entry; the accounts touched."""
        if not amount:
            return ()
        source = PartnerAccount.INTEREST if kind is ClearingKind.INTEREST else PartnerAccount.FUNDED
        book = self.book
        side = book.partner_account(source, loan.partner, loan.currency)
        clearing = book.partner_account(PartnerAccount.CLEARING, loan.partner, loan.currency)
        posted = book.post(command_id, seq, ((side, -amount), (clearing, amount)), outcome)
        invariant(posted.reason is Reason.NONE, "partner positions stay within the principal")
        today = self.today
        invariant(today is not None, "a loan exists only once the calendar started")
        assert today is not None
        _clear(
            outcome,
            seq,
            today,
            loan.partner,
            loan.currency,
            loan.id,
            loan.customer,
            kind,
            amount,
            command_id,
        )
        return posted.touched

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
        credits: list[tuple[Account, int]] = []
        if interest_part:
            kind = SystemAccount.INTEREST_RECEIVABLE
            credits.append((self.book.system_account(kind, line.currency), interest_part))
        if principal_part:
            kind = SystemAccount.LOANS
            credits.append((self.book.system_account(kind, line.currency), principal_part))
        decision = self.book.move_many(command.id, incoming.seq, account, credits, outcome)
        if decision.reason is not Reason.NONE:
            return decision
        partners = self._allocate(
            line, loans, interest_part, principal_part, incoming.seq, command.id, outcome
        )
        detail = f"paid interest {interest_part}, principal {principal_part}"
        if paying < command.amount:
            detail += f"; {command.amount - paying} more than owed, not taken"
        return Decision(Reason.NONE, detail, decision.touched + partners)

    def _allocate(
        self,
        line: CreditLine,
        loans: list[Loan],
        interest: int,
        principal: int,
        seq: int,
        command_id: str,
        outcome: Outcome,
    ) -> tuple[Account, ...]:
        """Spread a repayment over the loans: interest oldest first, then principal
        oldest first, each loan's part split with its partner by the partner's share of
        what that loan owes; close the loans with nothing left. The partner accounts it
        touched."""
        touched: tuple[Account, ...] = ()
        line.interest_paid += interest
        for loan in loans:
            part = min(interest, loan.interest)
            partner_part = split(part, loan.partner_interest, loan.interest)
            loan.interest -= part
            loan.partner_interest -= partner_part
            interest -= part
            touched += self._with_partner(
                loan, seq, command_id, ClearingKind.INTEREST, partner_part, outcome
            )
        for loan in loans:
            part = min(principal, loan.principal)
            partner_part = split(part, loan.partner_principal, loan.principal)
            loan.principal -= part
            loan.partner_principal -= partner_part
            principal -= part
            line.principal -= part
            line.principal_repaid += part
            touched += self._with_partner(
                loan, seq, command_id, ClearingKind.PRINCIPAL, partner_part, outcome
            )
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
        return touched

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
        decision = pay(self.book, transfer, incoming, outcome)
        self.book.held[key] += hold.amount
        if decision.reason is not Reason.NONE:
            return decision
        hold.captured = command.amount
        self._release(hold, HoldState.POSTED, outcome)
        return decision

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


@dataclass(slots=True)
class Staged:
    """A loan's figures over the days a close closes, before they are applied."""

    loan: Loan
    interest: int
    carry: int
    overdue: bool
    partner_interest: int
    partner_carry: int
    partner_weight: int

    def changes(self, loan: Loan) -> bool:
        now = (
            loan.interest,
            loan.carry,
            loan.overdue,
            loan.partner_interest,
            loan.partner_carry,
            loan.partner_weight,
        )
        return now != (
            self.interest,
            self.carry,
            self.overdue,
            self.partner_interest,
            self.partner_carry,
            self.partner_weight,
        )


class Accrual:
    """A close's staged interest: each changed loan, each currency's interest, each
    (partner, currency)'s share of it, and how many loans turned overdue."""

    def __init__(self) -> None:
        self.loans: list[Staged] = []
        self.totals: dict[str, int] = {}
        self.partners: dict[tuple[int, str], int] = {}
        self.overdue_now = 0


def _fits(legs: list[tuple[Account, int]]) -> bool:
    """Whether posting ``legs`` keeps every balance in the 64-bit range."""
    return all(BALANCE_MIN <= account.balance + amount <= BALANCE_MAX for account, amount in legs)


def _clear(
    outcome: Outcome,
    seq: int,
    day: int,
    partner: int,
    currency: str,
    loan: str,
    customer: int,
    kind: ClearingKind,
    amount: int,
    command_id: str,
) -> None:
    """Append a clearing entry, ranked after the entries of the same command."""
    entries = outcome.clearing
    rank = 0
    while rank < len(entries) and entries[len(entries) - 1 - rank].seq == seq:
        rank += 1
    entry = ClearingEntry(
        seq, rank, day, partner, currency, loan, customer, kind, amount, command_id
    )
    entries.append(entry)


def _changed(outcome: Outcome, row: CreditRow) -> None:
    outcome.credit[(row.kind, row.key)] = row
