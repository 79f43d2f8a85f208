"""Reconciliation check 11: the revolving credit of one partition (shards.audit runs it
on every partition of every cup and merges what it finds).

Per partition and currency:

- ``credit_rows_match_bodies``: every credit_book row's columns say what its body says;
- ``credit_lines_match_loans``: a line's principal is its open loans' principal and its
  drawn less repaid principal, its interest accrued less paid is its open loans'
  interest, and no loan is open without a line of its currency;
- ``loans_account_matches_lines``: minus the LOANS balance is the lines' principal;
- ``interest_accounts_match_loans``: minus INTEREST_RECEIVABLE is the open loans'
  interest, and INTEREST_INCOME the lines' interest accrued less the partners' share;
- ``holds_payable``: an account's open holds are at most its balance plus its credit
  limit (money held is payable).

Per partner bank and currency (joint lending, docs/lending.md):

- ``partner_shares_within_loans``: every loan's partner shares are within it: 0 to its
  principal and 0 to its interest (none without a partner);
- ``partner_accounts_match_loans``: the partner's FUNDED account is its share of the
  open loans' principal, its INTEREST account its share of their interest;
- ``partner_accounts_match_clearing``: its SETTLEMENT account is the sum of its NET
  clearing entries, its CLEARING account the sum of its other entries of the open day
  (the day after the last one closed);
- ``clearing_nets_match_days``: each closed day's NET entry is the sum of that day's
  other entries (no NET: they sum to zero), and no entry is of a day after the open one.

That INTEREST_INCOME is the sum of its journal rows is check 1, which covers every
account, the system ones included.

The rows are streamed from one snapshot of the partition (its credit rows, its clearing
entries and its accounts agree), in that order. Memory holds the partition's open lines,
the sums the checks compare, and one pair of sums per partner, currency and business day
with clearing entries; never its accounts, never its entries. While they stream by, the
audit tallies the book's figures: ``CreditFigures`` per currency, ``PartnerFigures`` per
partner and currency, and the partition's last closed business day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from engine.core.book import (
    PARTNER_ACCOUNTS_BASE,
    SYSTEM_CUSTOMER,
    AccountKey,
    ClearingKind,
    CreditKind,
    CreditRow,
    PartnerAccount,
    SystemAccount,
    partner_account_number,
    system_account_number,
)
from engine.core.credit import Calendar, CreditLine, Hold, Loan, Partner, day_text
from engine.core.errors import invariant
from engine.core.messages import PARTNER_MAX
from shards.cup_admin import PartitionSnapshot

CREDIT_SYSTEM_ACCOUNTS: Final = (
    SystemAccount.LOANS,
    SystemAccount.INTEREST_RECEIVABLE,
    SystemAccount.INTEREST_INCOME,
)
CREDIT_COLUMNS: Final = (
    "kind",
    "entity_key",
    "customer_id",
    "currency",
    "amount",
    "is_open",
    "body",
)
CreditColumns = tuple[CreditKind, str, int, str, int, bool, bytes]
ACCOUNT_COLUMNS: Final = ("customer_id", "account_no", "currency", "balance", "credit_limit")
AccountColumns = tuple[int, int, str, int, int]
"""An account as check 11 reads it: customer, number, currency, balance, credit limit."""
CLEARING_COLUMNS: Final = ("business_day", "partner", "currency", "kind", "amount")
ClearingColumns = tuple[int, int, str, ClearingKind, int]
"""A clearing entry as check 11 reads it: its day, partner, currency, kind and amount."""

Found = Callable[[str, str], None]
"""Takes a finding: the check's name, what is wrong."""


_ENTITY_DECODERS: Final[dict[CreditKind, msgspec.msgpack.Decoder[Any]]] = {
    CreditKind.LINE: msgspec.msgpack.Decoder(CreditLine),
    CreditKind.LOAN: msgspec.msgpack.Decoder(Loan),
    CreditKind.HOLD: msgspec.msgpack.Decoder(Hold),
    CreditKind.CALENDAR: msgspec.msgpack.Decoder(Calendar),
    CreditKind.PARTNER: msgspec.msgpack.Decoder(Partner),
}


@dataclass(slots=True)
class CreditFigures:
    """The credit book of one currency, in minor units but for the counts: what the open
    rows say (the rows ``is_open`` calls open, as a worker loads them)."""

    lines: int = 0
    limit_total: int = 0
    principal_outstanding: int = 0
    """The lines' principal (as the worker's ``smallcups_loans_outstanding_minor_units``)."""
    interest_unpaid: int = 0
    """Interest accrued on the open loans and not paid yet."""
    interest_income: int = 0
    """The INTEREST_INCOME balances: the originator's interest accrued, paid or not."""
    loans_open: int = 0
    loans_overdue: int = 0
    holds_open: int = 0
    money_held: int = 0

    def add(self, other: CreditFigures) -> None:
        for name in _FIGURE_NAMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))


_FIGURE_NAMES: Final = tuple(f.name for f in dataclasses.fields(CreditFigures))


@dataclass(slots=True)
class PartnerFigures:
    """A partner bank's position in one currency, in minor units."""

    funded_principal: int = 0
    """Its share of the open loans' principal (owed to it as they are repaid)."""
    interest_owed: int = 0
    """Its share of the open loans' interest, not paid by the customers yet."""
    settlement_balance: int = 0
    """Its SETTLEMENT balance: the days' nets the originator owes it (minus: is owed)."""
    clearing_balance: int = 0
    """Its CLEARING balance: the open day's movements, not cleared yet."""

    def add(self, other: PartnerFigures) -> None:
        self.funded_principal += other.funded_principal
        self.interest_owed += other.interest_owed
        self.settlement_balance += other.settlement_balance
        self.clearing_balance += other.clearing_balance

    @property
    def position(self) -> int:
        """What its four accounts hold together: the money of customers' loans that is
        the partner's (its principal, its interest, what is cleared and not)."""
        return (
            self.funded_principal
            + self.interest_owed
            + self.settlement_balance
            + self.clearing_balance
        )


PartnerKey = tuple[int, str]
"""A partner bank and a currency."""


@dataclass(slots=True)
class PartitionCredit:
    """What check 11 tallied on one partition."""

    figures: dict[str, CreditFigures] = field(default_factory=dict)
    """By currency: only the currencies with a line, a loan, a hold or interest income."""
    last_closed: int | None = None
    """The day number (``date.toordinal``) of its last closed business day; None before
    its calendar started."""
    partners: dict[PartnerKey, PartnerFigures] = field(default_factory=dict)
    """By partner and currency: every partner registered here, or with a loan, an
    account or a clearing entry here."""


async def audit_credit(
    snapshot: PartitionSnapshot, currencies: Iterable[str], found: Found
) -> PartitionCredit:
    """Check 11 on the snapshot's partition, its rows streamed (``CreditAudit``); its
    figures."""
    audit = CreditAudit(currencies, found)
    async for chunk in snapshot.rows("credit_book", CREDIT_COLUMNS):
        for columns in msgspec.convert(chunk, list[CreditColumns]):
            audit.add_credit(CreditRow(*columns))
    async for chunk in snapshot.rows("clearing_entries", CLEARING_COLUMNS):
        for entry in msgspec.convert(chunk, list[ClearingColumns]):
            audit.add_clearing(entry)
    async for chunk in snapshot.rows("accounts", ACCOUNT_COLUMNS):
        for account in msgspec.convert(chunk, list[AccountColumns]):
            audit.add_account(account)
    audit.finish()
    return audit.credit


class Stage(enum.IntEnum):
    """Which rows a ``CreditAudit`` takes now: each kind once, in this order."""

    CREDIT = 1
    CLEARING = 2
    ACCOUNTS = 3


class CreditAudit:
    """Check 11 on one partition's rows, tallied as they stream by: its credit rows
    first, then its clearing entries, then its accounts; each finding goes to ``found``
    at once. It keeps the open lines and the sums the checks compare (per customer and
    currency, per currency, per account with holds, per partner and currency, per
    partner, currency and day): never a closed row, never an account without holds."""

    def __init__(self, currencies: Iterable[str], found: Found):
        self.system: dict[int, tuple[SystemAccount, str]] = {
            system_account_number(kind, currency): (kind, currency)
            for kind in CREDIT_SYSTEM_ACCOUNTS
            for currency in currencies
        }
        self.balances: dict[tuple[SystemAccount, str], int] = {}
        self.partner_balances: dict[tuple[PartnerAccount, int, str], int] = {}
        self.lines: dict[int, CreditLine] = {}
        self.owed: dict[tuple[int, str], tuple[int, int]] = {}
        """(principal, interest) of the open loans of each (customer, currency)."""
        self.held: dict[AccountKey, int] = {}
        self.days: dict[tuple[int, str, int], tuple[int, int]] = {}
        """(movements, net) of the clearing entries of each (partner, currency, day)."""
        self.credit = PartitionCredit()
        self.found = found
        self.stage = Stage.CREDIT

    def _enter(self, stage: Stage) -> None:
        invariant(stage >= self.stage, "credit rows, then clearing entries, then accounts")
        self.stage = stage

    def add_credit(self, row: CreditRow) -> None:
        self._enter(Stage.CREDIT)
        what = f"{row.kind.name.lower()} {row.key!r}"
        try:
            entity = _ENTITY_DECODERS[row.kind].decode(row.body)
        except msgspec.DecodeError as error:
            self.found("credit_rows_match_bodies", f"{what}: {error}")
            return
        said = entity.row()
        columns = (row.key, row.customer, row.currency, row.amount, row.open)
        body = (said.key, said.customer, said.currency, said.amount, said.open)
        if columns != body:
            detail = f"{what}: (key, customer, currency, amount, open) {columns}, its body {body}"
            self.found("credit_rows_match_bodies", detail)
        if isinstance(entity, Loan):
            self._check_shares(entity)
        if row.open:
            self._add_open(entity)

    def _figures(self, currency: str) -> CreditFigures:
        return self.credit.figures.setdefault(currency, CreditFigures())

    def _partner(self, partner: int, currency: str) -> PartnerFigures:
        return self.credit.partners.setdefault((partner, currency), PartnerFigures())

    def _check_shares(self, loan: Loan) -> None:
        """A loan's partner shares are within its principal and interest (none without
        a partner), open or closed."""
        ceilings = (loan.principal, loan.interest) if loan.partner else (0, 0)
        shares = (loan.partner_principal, loan.partner_interest)
        if not all(0 <= share <= most for share, most in zip(shares, ceilings, strict=True)):
            detail = (
                f"loan {loan.id!r} (partner {loan.partner}): partner principal"
                f" {loan.partner_principal} of {loan.principal}, partner interest"
                f" {loan.partner_interest} of {loan.interest}"
            )
            self.found("partner_shares_within_loans", detail)

    def _add_open(self, entity: CreditLine | Loan | Hold | Calendar | Partner) -> None:
        match entity:
            case CreditLine():
                self.lines[entity.customer] = entity
                figures = self._figures(entity.currency)
                figures.lines += 1
                figures.limit_total += entity.limit
                figures.principal_outstanding += entity.principal
            case Loan():
                key = (entity.customer, entity.currency)
                principal, interest = self.owed.get(key, (0, 0))
                self.owed[key] = (principal + entity.principal, interest + entity.interest)
                figures = self._figures(entity.currency)
                figures.loans_open += 1
                figures.loans_overdue += entity.overdue
                figures.interest_unpaid += entity.interest
                if entity.partner:
                    partner = self._partner(entity.partner, entity.currency)
                    partner.funded_principal += entity.partner_principal
                    partner.interest_owed += entity.partner_interest
            case Hold():
                self.held[entity.key] = self.held.get(entity.key, 0) + entity.amount
                figures = self._figures(entity.currency)
                figures.holds_open += 1
                figures.money_held += entity.amount
            case Calendar():
                self.credit.last_closed = entity.last_closed
            case Partner():
                self._partner(entity.partner, entity.currency)

    def add_clearing(self, entry: ClearingColumns) -> None:
        self._enter(Stage.CLEARING)
        day, partner, currency, kind, amount = entry
        self._partner(partner, currency)
        key = (partner, currency, day)
        moved, net = self.days.get(key, (0, 0))
        if kind is ClearingKind.NET:
            self.days[key] = (moved, net + amount)
        else:
            self.days[key] = (moved + amount, net)

    def add_account(self, account: AccountColumns) -> None:
        self._enter(Stage.ACCOUNTS)
        customer, number, currency, balance, credit_limit = account
        if customer == SYSTEM_CUSTOMER:
            system = self.system.get(number)
            if system is not None:
                self.balances[system] = balance
                kind, currency = system
                if kind is SystemAccount.INTEREST_INCOME and balance:
                    self._figures(currency).interest_income += balance
                return
            partner_account = partner_account_of(number, currency)
            if partner_account is not None:
                account_kind, partner = partner_account
                self.partner_balances[(account_kind, partner, currency)] = balance
                figures = self._partner(partner, currency)
                if account_kind is PartnerAccount.SETTLEMENT:
                    figures.settlement_balance = balance
                elif account_kind is PartnerAccount.CLEARING:
                    figures.clearing_balance = balance
                return
        held = self.held.pop((customer, number), None)
        if held is not None and held > balance + credit_limit:
            detail = f"account {customer}/{number} holds {held}, over its balance {balance}"
            self.found("holds_payable", f"{detail} + credit limit {credit_limit}")

    def finish(self) -> None:
        """The checks of the totals, once all the rows went by."""
        self._check_lines()
        self._check_accounts()
        self._check_partners()
        self._check_days()
        for (customer, number), held in sorted(self.held.items()):
            self.found("holds_payable", f"account {customer}/{number} does not exist, holds {held}")

    def _check_lines(self) -> None:
        owed = dict(self.owed)
        for customer, line in sorted(self.lines.items()):
            principal, interest = owed.pop((customer, line.currency), (0, 0))
            where = f"customer {customer}'s line"
            if line.principal != principal:
                detail = f"{where}: principal {line.principal}, its open loans' {principal}"
                self.found("credit_lines_match_loans", detail)
            if line.drawn - line.principal_repaid != line.principal:
                detail = f"{where}: drawn {line.drawn} - repaid {line.principal_repaid}"
                self.found("credit_lines_match_loans", f"{detail} != principal {line.principal}")
            if line.interest_accrued - line.interest_paid != interest:
                detail = f"{where}: interest accrued {line.interest_accrued} - paid"
                detail += f" {line.interest_paid} != its open loans' interest {interest}"
                self.found("credit_lines_match_loans", detail)
        for (customer, currency), (principal, _) in sorted(owed.items()):
            detail = f"customer {customer} owes {currency} {principal} with no {currency} line"
            self.found("credit_lines_match_loans", detail)

    def _check_accounts(self) -> None:
        earned: dict[str, int] = {}
        for line in self.lines.values():
            kept = line.interest_accrued - line.partner_interest_accrued
            earned[line.currency] = earned.get(line.currency, 0) + kept
        currencies = {*self.credit.figures, *(currency for _, currency in self.balances)}
        for currency in sorted(currencies):
            figures = self.credit.figures.get(currency, CreditFigures())
            loans = self.balances.get((SystemAccount.LOANS, currency), 0)
            lent = figures.principal_outstanding
            if -loans != lent:
                detail = f"{currency}: LOANS {loans}, the lines' principal {lent}"
                self.found("loans_account_matches_lines", detail)
            receivable = self.balances.get((SystemAccount.INTEREST_RECEIVABLE, currency), 0)
            interest = figures.interest_unpaid
            if -receivable != interest:
                detail = (
                    f"{currency}: INTEREST_RECEIVABLE {receivable}, open loans' interest {interest}"
                )
                self.found("interest_accounts_match_loans", detail)
            income = self.balances.get((SystemAccount.INTEREST_INCOME, currency), 0)
            if income != earned.get(currency, 0):
                detail = (
                    f"{currency}: INTEREST_INCOME {income}, the lines' interest accrued less"
                    f" the partners' share {earned.get(currency, 0)}"
                )
                self.found("interest_accounts_match_loans", detail)

    def _check_partners(self) -> None:
        """Each partner's accounts against its loans' shares and its clearing entries."""
        nets: dict[PartnerKey, int] = {}
        for (partner, currency, _), (_, net) in self.days.items():
            nets[(partner, currency)] = nets.get((partner, currency), 0) + net
        today = self._today()
        loans, clearing = "partner_accounts_match_loans", "partner_accounts_match_clearing"
        for key, figures in sorted(self.credit.partners.items()):
            moved_today = 0
            if today is not None:
                moved_today, _ = self.days.get((*key, today), (0, 0))
            principal, interest = figures.funded_principal, figures.interest_owed
            self._compare(loans, key, PartnerAccount.FUNDED, principal, "its open loans' principal")
            self._compare(loans, key, PartnerAccount.INTEREST, interest, "its open loans' interest")
            net = nets.get(key, 0)
            self._compare(clearing, key, PartnerAccount.SETTLEMENT, net, "its NET entries")
            today_is = "its other entries of the open day"
            self._compare(clearing, key, PartnerAccount.CLEARING, moved_today, today_is)

    def _compare(
        self, check: str, key: PartnerKey, kind: PartnerAccount, expected: int, what: str
    ) -> None:
        """The partner's account of ``kind`` holds ``expected`` (``what`` says why)."""
        partner, currency = key
        balance = self.partner_balances.get((kind, partner, currency), 0)
        if balance != expected:
            detail = f"{kind.name} {balance}, {what} {expected}"
            self.found(check, f"partner {partner} {currency}: {detail}")

    def _today(self) -> int | None:
        """The open business day: the day after the last one closed."""
        last_closed = self.credit.last_closed
        return None if last_closed is None else last_closed + 1

    def _check_days(self) -> None:
        """Each closed day's NET is its other entries; no entry after the open day, no
        NET of the open day."""
        today = self._today()
        for (partner, currency, day), (moved, net) in sorted(self.days.items()):
            where = f"partner {partner} {currency} {_day(day)}"
            if today is None or day > today:
                opened = "no day closed yet" if today is None else f"the open day is {_day(today)}"
                self.found("clearing_nets_match_days", f"{where}: entries, but {opened}")
            elif day == today:
                if net:
                    self.found("clearing_nets_match_days", f"{where}: a NET {net} of the open day")
            elif net != moved:
                detail = f"{where}: NET {net}, the day's other entries {moved}"
                self.found("clearing_nets_match_days", detail)


def partner_account_numbers(partners: Iterable[PartnerKey]) -> list[int]:
    """The numbers of every account of ``partners`` (one partner out of range has none)."""
    return [
        partner_account_number(kind, partner, currency)
        for partner, currency in sorted(set(partners))
        if 1 <= partner <= PARTNER_MAX
        for kind in PartnerAccount
    ]


def partner_account_of(number: int, currency: str) -> tuple[PartnerAccount, int] | None:
    """(kind, partner) of the partner account numbered ``number`` in ``currency`` (as
    engine.core.book numbers them); None for any other number."""
    if number < PARTNER_ACCOUNTS_BASE:
        return None
    kind, rest = divmod(number - PARTNER_ACCOUNTS_BASE, 10**9)
    partner = rest // 100_000
    if kind not in _PARTNER_KINDS or not 1 <= partner <= PARTNER_MAX:
        return None
    if partner_account_number(PartnerAccount(kind), partner, currency) != number:
        return None
    return PartnerAccount(kind), partner


_PARTNER_KINDS: Final = frozenset(int(kind) for kind in PartnerAccount)
_DAY_MAX: Final = dt.date.max.toordinal()


def _day(day: int) -> str:
    """A business day's date (its number when it is no date)."""
    return day_text(day) if 1 <= day <= _DAY_MAX else f"day {day}"
