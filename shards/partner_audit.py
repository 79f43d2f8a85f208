"""Reconciliation check 11 for joint lending: the partner banks of one partition
(shards.credit_audit runs it on the partition's rows as they stream by; docs/lending.md).

Per partner bank and currency:

- ``partner_shares_within_loans``: every loan's partner shares are within it: 0 to its
  principal and 0 to its interest (none without a partner);
- ``partner_accounts_match_loans``: the partner's FUNDED account is its share of the
  open loans' principal, its INTEREST account its share of their interest;
- ``partner_accounts_match_clearing``: its SETTLEMENT account is the sum of its NET
  clearing entries, its CLEARING account the sum of its other entries of the open day
  (the day after the last one closed);
- ``clearing_nets_match_days``: each closed day's NET entry is the sum of that day's
  other entries (no NET: they sum to zero), and no entry is of a day after the open one.

Memory holds one ``PartnerFigures`` per partner and currency, the balances of their
accounts, and one pair of sums per partner, currency and business day with clearing
entries; never an entry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from engine.core.book import (
    PARTNER_ACCOUNTS_BASE,
    ClearingKind,
    PartnerAccount,
    partner_account_number,
)
from engine.core.credit import Loan, day_text
from engine.core.messages import PARTNER_MAX

CLEARING_COLUMNS: Final = ("business_day", "partner", "currency", "kind", "amount")
ClearingColumns = tuple[int, int, str, ClearingKind, int]
"""A clearing entry as check 11 reads it: its day, partner, currency, kind and amount."""

Found = Callable[[str, str], None]
"""Takes a finding: the check's name, what is wrong."""


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


class PartnerAudit:
    """The partner part of check 11 on one partition, tallied as its rows stream by
    (``shards.credit_audit.CreditAudit`` hands it its loans, partners, clearing entries
    and partner accounts, in that order); each finding goes to ``found`` at once."""

    def __init__(self, found: Found):
        self.figures: dict[PartnerKey, PartnerFigures] = {}
        """By partner and currency: every partner registered here, or with a loan, an
        account or a clearing entry here."""
        self.balances: dict[tuple[PartnerAccount, int, str], int] = {}
        self.days: dict[tuple[int, str, int], tuple[int, int]] = {}
        """(movements, net) of the clearing entries of each (partner, currency, day)."""
        self.found = found

    def _partner(self, partner: int, currency: str) -> PartnerFigures:
        return self.figures.setdefault((partner, currency), PartnerFigures())

    def check_shares(self, loan: Loan) -> None:
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

    def add_loan(self, loan: Loan) -> None:
        """An open loan: its partner's shares count in its position."""
        if loan.partner:
            figures = self._partner(loan.partner, loan.currency)
            figures.funded_principal += loan.partner_principal
            figures.interest_owed += loan.partner_interest

    def add_partner(self, partner: int, currency: str) -> None:
        """A partner registered here: tallied, at zero when it has nothing else."""
        self._partner(partner, currency)

    def add_clearing(self, entry: ClearingColumns) -> None:
        day, partner, currency, kind, amount = entry
        self._partner(partner, currency)
        key = (partner, currency, day)
        moved, net = self.days.get(key, (0, 0))
        if kind is ClearingKind.NET:
            self.days[key] = (moved, net + amount)
        else:
            self.days[key] = (moved + amount, net)

    def add_account(self, kind: PartnerAccount, partner: int, currency: str, balance: int) -> None:
        """The balance of the partner's account of ``kind`` (``partner_account_of``)."""
        self.balances[(kind, partner, currency)] = balance
        figures = self._partner(partner, currency)
        if kind is PartnerAccount.SETTLEMENT:
            figures.settlement_balance = balance
        elif kind is PartnerAccount.CLEARING:
            figures.clearing_balance = balance

    def finish(self, last_closed: int | None) -> None:
        """The checks of the totals, once all the rows went by; ``last_closed`` is the
        partition's last closed business day (None before its calendar started)."""
        today = None if last_closed is None else last_closed + 1
        self._check_partners(today)
        self._check_days(today)

    def _check_partners(self, today: int | None) -> None:
        """Each partner's accounts against its loans' shares and its clearing entries."""
        nets: dict[PartnerKey, int] = {}
        for (partner, currency, _), (_, net) in self.days.items():
            nets[(partner, currency)] = nets.get((partner, currency), 0) + net
        loans, clearing = "partner_accounts_match_loans", "partner_accounts_match_clearing"
        for key, figures in sorted(self.figures.items()):
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
        balance = self.balances.get((kind, partner, currency), 0)
        if balance != expected:
            detail = f"{kind.name} {balance}, {what} {expected}"
            self.found(check, f"partner {partner} {currency}: {detail}")

    def _check_days(self, today: int | None) -> None:
        """Each closed day's NET is its other entries; no entry after the open day
        (``today``), no NET of the open day."""
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
