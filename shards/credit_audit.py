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

Per partner bank and currency (joint lending): the checks of shards.partner_audit, on
the same rows.

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
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from engine.core.book import (
    SYSTEM_CUSTOMER,
    AccountKey,
    CreditKind,
    CreditRow,
    SystemAccount,
    system_account_number,
)
from engine.core.credit import Calendar, CreditLine, Hold, Loan, Partner
from engine.core.errors import invariant
from shards.cup_admin import PartitionSnapshot
from shards.partner_audit import (
    CLEARING_COLUMNS,
    ClearingColumns,
    Found,
    PartnerAudit,
    PartnerFigures,
    PartnerKey,
    partner_account_of,
)

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
    currency, per currency, per account with holds; its ``PartnerAudit`` those per
    partner): never a closed row, never an account without holds."""

    def __init__(self, currencies: Iterable[str], found: Found):
        self.system: dict[int, tuple[SystemAccount, str]] = {
            system_account_number(kind, currency): (kind, currency)
            for kind in CREDIT_SYSTEM_ACCOUNTS
            for currency in currencies
        }
        self.balances: dict[tuple[SystemAccount, str], int] = {}
        self.lines: dict[int, CreditLine] = {}
        self.owed: dict[tuple[int, str], tuple[int, int]] = {}
        """(principal, interest) of the open loans of each (customer, currency)."""
        self.held: dict[AccountKey, int] = {}
        self.partners = PartnerAudit(found)
        """The partner part of check 11: it tallies ``credit.partners``."""
        self.credit = PartitionCredit(partners=self.partners.figures)
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
            self.partners.check_shares(entity)
        if row.open:
            self._add_open(entity)

    def _figures(self, currency: str) -> CreditFigures:
        return self.credit.figures.setdefault(currency, CreditFigures())

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
                self.partners.add_loan(entity)
            case Hold():
                self.held[entity.key] = self.held.get(entity.key, 0) + entity.amount
                figures = self._figures(entity.currency)
                figures.holds_open += 1
                figures.money_held += entity.amount
            case Calendar():
                self.credit.last_closed = entity.last_closed
            case Partner():
                self.partners.add_partner(entity.partner, entity.currency)

    def add_clearing(self, entry: ClearingColumns) -> None:
        self._enter(Stage.CLEARING)
        self.partners.add_clearing(entry)

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
                self.partners.add_account(account_kind, partner, currency, balance)
                return
        held = self.held.pop((customer, number), None)
        if held is not None and held > balance + credit_limit:
            detail = f"account {customer}/{number} holds {held}, over its balance {balance}"
            self.found("holds_payable", f"{detail} + credit limit {credit_limit}")

    def finish(self) -> None:
        """The checks of the totals, once all the rows went by."""
        self._check_lines()
        self._check_accounts()
        self.partners.finish(self.credit.last_closed)
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
