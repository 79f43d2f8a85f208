"""The account book of one partition and the mechanics of moving money in it.

Pure: no I/O, no clock. A movement debits one account and credits another by the same
amount and writes the two journal rows, or refuses and changes nothing. The rules of
which movements a command makes live in engine.core.ledger and engine.core.saga.

The records a decision makes (journal rows, decisions, results to publish, legs) are
frozen msgspec structs untracked by the cyclic collector (``gc=False``): a command
builds about nine, and a struct is several times cheaper to build than a NamedTuple
(docs/performance.md). None of them can be part of a reference cycle: they hold
numbers, strings, enums, messages and accounts, and nothing they hold refers back.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec

from engine.core.errors import invariant
from engine.core.messages import (
    BALANCE_MAX,
    BALANCE_MIN,
    Command,
    CreditLeg,
    Invalid,
    Reason,
    Result,
    SettleLeg,
)

IN_FLIGHT_PER_PARTITION_MAX: Final = 100_000
"""Most transfers out of one partition in flight at once: a new one past it is refused
(``too_many_in_flight``), so the book of transfers in flight stays bounded in memory
when a payee's cup stays unreachable."""

SYSTEM_CUSTOMER: Final = 0
"""Customer id of the partition's own system accounts; real customers start at 1."""


class SystemAccount(enum.IntEnum):
    CASH = 1
    """The outside world: deposits are credited from it, withdrawals debited to it."""
    CLEARING = 2
    """Money of cross-partition transfers between their debit and their credit."""
    LOANS = 3
    """The principal lent on credit lines: minus the principal outstanding."""
    INTEREST_RECEIVABLE = 4
    """Interest accrued on loans and not paid yet: minus that interest."""
    INTEREST_INCOME = 5
    """Interest earned on loans since the partition began (the originator's part)."""


class PartnerAccount(enum.IntEnum):
    """A partner bank's system accounts in a partition, one of each per currency
    (docs/lending.md): together they are the originator's position with the partner."""

    FUNDED = 1
    """The partner's share of the principal outstanding: owed to the partner as loans
    are repaid."""
    INTEREST = 2
    """The partner's share of the interest accrued and not paid by the customers yet."""
    CLEARING = 3
    """Today's movements with the partner not cleared yet: minus its share of the draws,
    plus its share of what customers paid. Cleared to SETTLEMENT at each day's close."""
    SETTLEMENT = 4
    """The days' nets: what the originator owes the partner (minus: is owed), to settle
    between the banks."""


def system_account_number(kind: SystemAccount, currency: str) -> int:
    """Account number of a system account: one per kind and currency (base-26 code)."""
    return int(kind) * 100_000 + _currency_code(currency)


def _currency_code(currency: str) -> int:
    """A three-letter code as a number below 26^3 (base 26)."""
    code = 0
    for letter in currency:
        code = code * 26 + (ord(letter) - ord("A"))
    return code


PARTNER_ACCOUNTS_BASE: Final = 10**10
"""Partner accounts are numbered from here: kind * 10^9 + partner * 10^5 + currency code
on top, so they never meet the partition's own system accounts (below 10^6)."""


def partner_account_number(kind: PartnerAccount, partner: int, currency: str) -> int:
    """Account number of a partner's system account of ``kind`` in ``currency``."""
    invariant(1 <= partner < 10_000, "partners are 1..9999")
    code = _currency_code(currency)
    return PARTNER_ACCOUNTS_BASE + int(kind) * 10**9 + partner * 100_000 + code


class AccountStatus(enum.IntEnum):
    OPEN = 0
    FROZEN = 1
    CLOSED = 2


AccountKey = tuple[int, int]


@dataclass(slots=True)
class Account:
    customer: int
    number: int
    currency: str
    balance: int = 0
    credit_limit: int = 0
    status: AccountStatus = AccountStatus.OPEN

    @property
    def key(self) -> AccountKey:
        return (self.customer, self.number)

    @property
    def is_system(self) -> bool:
        return self.customer == SYSTEM_CUSTOMER


class JournalRow(msgspec.Struct, frozen=True, gc=False):
    seq: int
    """The input place (``Incoming.seq``) of the command that moved the money."""
    command_id: str
    customer: int
    account: int
    currency: str
    amount: int


class CreditKind(enum.IntEnum):
    """What a row of a cup's credit book holds (engine.core.credit)."""

    LINE = 1
    LOAN = 2
    HOLD = 3
    CALENDAR = 4
    PARTNER = 5


class ClearingKind(enum.IntEnum):
    """What a clearing entry records between the originator and a partner."""

    FUNDED = 1
    """The partner's share of a draw (negative: the partner owes it)."""
    PRINCIPAL = 2
    """The partner's share of principal a customer repaid (owed to the partner)."""
    INTEREST = 3
    """The partner's share of interest a customer paid (owed to the partner)."""
    NET = 4
    """The day's net, booked to the partner's SETTLEMENT account at the day's close."""


class ClearingEntry(msgspec.Struct, frozen=True, gc=False):
    """One movement with a partner, on one loan, on one business day: a line of the
    partner's clearing statement. ``amount`` is what the originator owes the partner
    by it (negative: what the partner owes)."""

    seq: int
    """The input place of the command that made it."""
    entry: int
    """Its rank among the entries of that command (seq and entry are unique)."""
    day: int
    partner: int
    currency: str
    loan: str
    """The loan's id ("" for a day's net)."""
    customer: int
    kind: ClearingKind
    amount: int
    command_id: str


class CreditRow(msgspec.Struct, frozen=True, gc=False):
    """One entity of the credit book as the commit writes it: its kind and key (a line's
    key is its customer, a loan's the draw's id, a hold's the hold's id, the calendar's
    empty), its figure (a line's and a loan's open principal, a hold's amount, the last
    closed day's number), whether it is still open, and the entity itself (msgpack)."""

    kind: CreditKind
    key: str
    customer: int
    currency: str
    amount: int
    open: bool
    body: bytes


class Known(msgspec.Struct, frozen=True, gc=False):
    """A command applied in an earlier batch: its content digest and its result."""

    fingerprint: int
    result: Result


class Incoming(msgspec.Struct, frozen=True, gc=False):
    offset: int
    """The record's offset in its topic (commands or internal): what its result names."""
    seq: int
    """The record's place in the partition's input, both topics in the order the worker
    took them (engine.core.batch): what orders the outbox rows it makes."""
    published_at_ms: int
    command: Command | Invalid
    fingerprint: int
    json: bool = False
    """The command came as JSON: its result goes back as JSON."""
    forwarded_from: int = -1
    """The partition a worker forwarded it from (-1: published here)."""


class Applied(msgspec.Struct, frozen=True, gc=False):
    """A new idempotency record: this command id now has this result, decided at this
    input place (``Incoming.seq``: the cup records it, so the order the partition took
    its two topics in is known afterwards)."""

    command_id: str
    fingerprint: int
    result: Result
    seq: int
    issued_at_ms: int = 0
    """When the command was issued (its record's time when it names none): the record is
    kept until the partition's idempotency horizon passes it."""


class InFlight(msgspec.Struct, frozen=True, gc=False):
    """A cross-partition transfer debited here whose settle leg has not come back: the
    payer (customer, account), the payee, the amount and the offset of the transfer."""

    transfer_id: str
    customer: int
    account: int
    to_customer: int
    to_account: int
    amount: int
    currency: str
    offset: int
    json: bool = False
    """The transfer came as JSON: its final result goes back as JSON."""
    forwarded_from: int = -1
    """The partition a worker forwarded the transfer from (-1: published here)."""


class Leg(msgspec.Struct, frozen=True, gc=False):
    """An internal command to publish to another partition of the internal topic."""

    seq: int
    """The input place (``Incoming.seq``) of the record whose decision emitted the leg."""
    partition: int
    command: CreditLeg | SettleLeg


class Forged(msgspec.Struct, frozen=True, gc=False):
    """A leg the ledger refused as not made by a worker: it goes to the DLQ, unrecorded.

    Its id is still checked by the fenced commit: a real leg delivered again after its
    transfer settled (a relay re-send) finds no transfer in flight, and only the cup
    knows it was applied before; the commit is then refused for duplicates, and the
    leg decided again with its recorded result (changing nothing, forging nothing)."""

    seq: int
    """The leg's input place (``Incoming.seq``)."""
    leg: str
    """The leg's type tag (``credit_leg``, ``settle_leg``)."""
    detail: str
    leg_id: str = ""


class Publish(msgspec.Struct, frozen=True, gc=False):
    """A result to publish, keyed by customer, in the outbox after the input place
    (``Incoming.seq``) of the record whose decision made it."""

    seq: int
    customer: int
    result: Result
    json: bool = False


@dataclass(slots=True)
class Outcome:
    """What a batch decided: everything the fenced commit writes and the relay sends."""

    results: list[Result] = field(default_factory=list)
    published: list[Publish] = field(default_factory=list)
    journal: list[JournalRow] = field(default_factory=list)
    changed: dict[AccountKey, Account] = field(default_factory=dict)
    applied: list[Applied] = field(default_factory=list)
    finals: list[Applied] = field(default_factory=list)
    legs: list[Leg] = field(default_factory=list)
    opened: list[InFlight] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    forged: list[Forged] = field(default_factory=list)
    credit: dict[tuple[CreditKind, str], CreditRow] = field(default_factory=dict)
    """The credit book's entities the batch changed, by kind and key (the last state)."""
    clearing: list[ClearingEntry] = field(default_factory=list)
    """Movements with partner banks, for their clearing statements."""
    horizon_ms: int = 0
    """The partition's idempotency horizon when the batch was decided: the commit records
    it, and commands issued before it are expired (engine.core.ledger)."""


class Decision(msgspec.Struct, frozen=True, gc=False):
    """One command's decision: a reason (NONE = accepted) and the accounts it touched."""

    reason: Reason
    detail: str
    touched: tuple[Account, ...] = ()
    pending: bool = False
    internal: bool = False

    def as_pending(self) -> Decision:
        """The same decision, its result held back."""
        return Decision(self.reason, self.detail, self.touched, True, self.internal)

    def as_internal(self) -> Decision:
        """The same decision about an internal leg: no result of its own to publish."""
        return Decision(self.reason, self.detail, self.touched, self.pending, True)


MOVABLE: Final = Decision(Reason.NONE, "")
"""The decision ``movable`` pairs with an account that can move money (one, shared)."""


class AccountBook:
    """A partition's accounts (the worker's cache), its transfers in flight (all of them,
    never a cache: a settle leg is checked against them) and how money moves."""

    def __init__(self, partition: int, partitions: int, accounts: dict[AccountKey, Account]):
        invariant(0 <= partition < partitions, "partition out of range")
        self.partition = partition
        self.partitions = partitions
        self.accounts = accounts
        self.in_flight: dict[str, InFlight] = {}
        self.out_in_flight: dict[AccountKey, int] = {}
        """Transfers in flight out of each payer account (a closing account has none)."""
        self.held: dict[AccountKey, int] = {}
        """Money reserved by open holds, per account (engine.core.credit keeps it): the
        account's available balance is its balance + credit limit - held."""

    def load_in_flight(self, flights: Iterable[InFlight]) -> None:
        """Replace the transfers in flight with the cup's (after a claim or a reload)."""
        self.in_flight = {}
        self.out_in_flight = {}
        for flight in flights:
            self.track(flight)

    def track(self, flight: InFlight) -> None:
        invariant(flight.transfer_id not in self.in_flight, "a transfer is in flight once")
        self.in_flight[flight.transfer_id] = flight
        payer = (flight.customer, flight.account)
        self.out_in_flight[payer] = self.out_in_flight.get(payer, 0) + 1

    def untrack(self, transfer_id: str) -> InFlight:
        flight = self.in_flight.pop(transfer_id)
        payer = (flight.customer, flight.account)
        left = self.out_in_flight[payer] - 1
        invariant(left >= 0, "in-flight counts never go below zero")
        if left:
            self.out_in_flight[payer] = left
        else:
            del self.out_in_flight[payer]
        return flight

    def movable(
        self, customer: int, number: int, currency: str
    ) -> tuple[Account, Decision] | tuple[None, Decision]:
        account = self.accounts.get((customer, number))
        if account is None:
            return None, Decision(
                Reason.ACCOUNT_NOT_FOUND, f"account {(customer, number)} not found"
            )
        if account.status is AccountStatus.FROZEN:
            return None, Decision(Reason.ACCOUNT_FROZEN, f"account {account.key} is frozen")
        if account.status is AccountStatus.CLOSED:
            return None, Decision(Reason.ACCOUNT_CLOSED, f"account {account.key} is closed")
        if account.currency != currency:
            detail = f"account {account.key} holds {account.currency}, not {currency}"
            return None, Decision(Reason.CURRENCY_MISMATCH, detail)
        return account, MOVABLE

    def system_account(self, kind: SystemAccount, currency: str) -> Account:
        key = (SYSTEM_CUSTOMER, system_account_number(kind, currency))
        account = self.accounts.get(key)
        if account is None:
            account = Account(SYSTEM_CUSTOMER, key[1], currency)
            self.accounts[key] = account
        return account

    def available(self, account: Account) -> int:
        """What ``account`` can pay now: its balance, its credit limit, less its holds."""
        return account.balance + account.credit_limit - self.held.get(account.key, 0)

    def move(
        self,
        command_id: str,
        seq: int,
        debit: Account,
        credit: Account,
        amount: int,
        outcome: Outcome,
    ) -> Decision:
        """Debit one account and credit the other by ``amount``, or refuse and change nothing.

        The hot path of every transfer: ``move_many`` in its simplest case, kept apart."""
        invariant(amount > 0, "amounts are validated positive")
        invariant(debit.currency == credit.currency, "one currency per movement")
        debit_after = debit.balance - amount
        credit_after = credit.balance + amount
        if not debit.is_system:
            held = self.held.get(debit.key, 0) if self.held else 0
            if debit_after < held - debit.credit_limit:
                return Decision(Reason.INSUFFICIENT_FUNDS, _short_of(debit, held))
        if debit_after < BALANCE_MIN or credit_after > BALANCE_MAX:
            return Decision(Reason.OVERFLOW, "the balance would leave the 64-bit range")
        debit.balance = debit_after
        credit.balance = credit_after
        outcome.journal.append(
            JournalRow(seq, command_id, debit.customer, debit.number, debit.currency, -amount)
        )
        outcome.journal.append(
            JournalRow(seq, command_id, credit.customer, credit.number, credit.currency, amount)
        )
        return Decision(Reason.NONE, "", (debit, credit))

    def move_many(
        self,
        command_id: str,
        seq: int,
        debit: Account,
        credits: Sequence[tuple[Account, int]],
        outcome: Outcome,
    ) -> Decision:
        """Debit one account by the sum of ``credits`` and credit each of them by its
        amount (one journal row each), or refuse and change nothing. Amounts of zero are
        left out; the credited accounts are distinct."""
        credits = [(account, amount) for account, amount in credits if amount]
        invariant(bool(credits), "a movement moves money")
        invariant(all(amount > 0 for _, amount in credits), "amounts are validated positive")
        invariant(len({account.key for account, _ in credits}) == len(credits), "distinct accounts")
        invariant(
            all(account.currency == debit.currency for account, _ in credits),
            "one currency per movement",
        )
        total = sum(amount for _, amount in credits)
        debit_after = debit.balance - total
        if not debit.is_system:
            held = self.held.get(debit.key, 0)
            if debit_after < held - debit.credit_limit:
                return Decision(Reason.INSUFFICIENT_FUNDS, _short_of(debit, held))
        if debit_after < BALANCE_MIN or any(
            account.balance + amount > BALANCE_MAX for account, amount in credits
        ):
            return Decision(Reason.OVERFLOW, "the balance would leave the 64-bit range")
        debit.balance = debit_after
        outcome.journal.append(
            JournalRow(seq, command_id, debit.customer, debit.number, debit.currency, -total)
        )
        for account, amount in credits:
            account.balance += amount
            outcome.journal.append(
                JournalRow(
                    seq, command_id, account.customer, account.number, account.currency, amount
                )
            )
        return Decision(Reason.NONE, "", (debit, *(account for account, _ in credits)))

    def post(
        self,
        command_id: str,
        seq: int,
        legs: Sequence[tuple[Account, int]],
        outcome: Outcome,
    ) -> Decision:
        """Post journal rows that sum to zero, one per (account, signed amount), to system
        accounts only (customers' accounts move through ``move``); zero amounts are left
        out. Refuses (and changes nothing) when a balance would leave the 64-bit range."""
        legs = [(account, amount) for account, amount in legs if amount]
        invariant(all(account.is_system for account, _ in legs), "postings move system money")
        invariant(len({a.key for a, _ in legs}) == len(legs), "one row per account")
        invariant(sum(amount for _, amount in legs) == 0, "a posting sums to zero")
        if any(
            not BALANCE_MIN <= account.balance + amount <= BALANCE_MAX for account, amount in legs
        ):
            return Decision(Reason.OVERFLOW, "the balance would leave the 64-bit range")
        for account, amount in legs:
            account.balance += amount
            outcome.journal.append(
                JournalRow(
                    seq, command_id, account.customer, account.number, account.currency, amount
                )
            )
        return Decision(Reason.NONE, "", tuple(account for account, _ in legs))

    def partner_account(self, kind: PartnerAccount, partner: int, currency: str) -> Account:
        key = (SYSTEM_CUSTOMER, partner_account_number(kind, partner, currency))
        account = self.accounts.get(key)
        if account is None:
            account = Account(SYSTEM_CUSTOMER, key[1], currency)
            self.accounts[key] = account
        return account


def _short_of(account: Account, held: int) -> str:
    detail = f"account {account.key} has {account.balance}, limit {account.credit_limit}"
    return detail + (f", held {held}" if held else "")


def check_balanced(rows: Sequence[JournalRow]) -> None:
    """Journal rows of a batch sum to zero per currency (double entry)."""
    totals: dict[str, int] = {}
    for row in rows:
        totals[row.currency] = totals.get(row.currency, 0) + row.amount
    invariant(all(total == 0 for total in totals.values()), "journal rows must sum to zero")
