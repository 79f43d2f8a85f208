"""The command mix of the locust load test, with what each command's result should be.

Pure: randomness comes from the ``random.Random`` passed in, so a test can replay a mix.
Every planned command carries an Expectation: which results count as a success. Business
rejections that a realistic mix produces (insufficient funds) are successes; commands that
are invalid on purpose succeed only when rejected with their expected reason.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Final

from engine.core.messages import (
    Command,
    Deposit,
    Draw,
    HoldFunds,
    OpenAccount,
    Reason,
    Result,
    Transfer,
    VoidHold,
    Withdraw,
)
from engine.core.routing import partition_of

ACCOUNT: Final = 1
CURRENCY: Final = "EUR"
UNKNOWN_CURRENCY: Final = "XXX"
INITIAL_DEPOSIT: Final = 1_000_000
AMOUNT_MAX: Final = 5_000
CUSTOMER_ID_MAX: Final = 2**62
SEARCH_DRAWS_MAX: Final = 100_000
"""Most random customer ids drawn to find one in a given partition (about P are needed)."""
CUSTOMERS_MAX: Final = 100_000
"""Most customers one process remembers as payees."""


@dataclass(frozen=True, slots=True)
class Expectation:
    """The results that count as a success for one command."""

    accepted: bool
    reasons: frozenset[Reason] = frozenset()

    def failure(self, result: Result) -> str:
        """Why ``result`` is not what was expected; empty when it is."""
        if result.accepted:
            return "" if self.accepted else "accepted, expected a rejection"
        if result.reason in self.reasons:
            return ""
        return f"rejected: {result.reason.value} {result.detail}".strip()


ACCEPTED: Final = Expectation(True)
ACCEPTED_OR_UNFUNDED: Final = Expectation(True, frozenset([Reason.INSUFFICIENT_FUNDS]))
HOLD_PLACED: Final = Expectation(
    True,
    frozenset([Reason.INSUFFICIENT_FUNDS, Reason.NO_BUSINESS_DATE, Reason.BAD_DATE]),
)
"""A hold expiring tomorrow (UTC): accepted when the scheduler closes every day (the
partition's business day is then the calendar's); refused before any day was closed, or
when the partition's calendar is elsewhere (a demo's days)."""
HOLD_RELEASED: Final = Expectation(True, frozenset([Reason.HOLD_NOT_FOUND]))
"""The void of that hold: not found when the hold was refused."""


def rejected_with(reason: Reason) -> Expectation:
    return Expectation(False, frozenset([reason]))


@dataclass(frozen=True, slots=True)
class Planned:
    """A command, the name its locust statistics go under, and its expected result."""

    command: Command
    name: str
    expectation: Expectation


class Directory:
    """The customers whose accounts are open, by partition: the payees of transfers."""

    def __init__(self, partitions: int):
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.partitions = partitions
        self.by_partition: dict[int, list[int]] = {}
        self.size = 0

    def add(self, customer: int) -> None:
        if self.size < CUSTOMERS_MAX:
            self.by_partition.setdefault(self.partition(customer), []).append(customer)
            self.size += 1

    def partition(self, customer: int) -> int:
        return partition_of(customer, self.partitions)

    def neighbour(self, rng: random.Random, customer: int) -> int | None:
        """Another open customer in ``customer``'s partition, if any."""
        others = [c for c in self.by_partition.get(self.partition(customer), []) if c != customer]
        return rng.choice(others) if others else None

    def stranger(self, rng: random.Random, customer: int) -> int | None:
        """An open customer in another partition, if any."""
        home = self.partition(customer)
        partitions = [p for p, customers in self.by_partition.items() if p != home and customers]
        return rng.choice(self.by_partition[rng.choice(partitions)]) if partitions else None


def new_customer(rng: random.Random, partitions: int, partition: int | None = None) -> int:
    """A random customer id, in ``partition`` when given."""
    for _ in range(SEARCH_DRAWS_MAX):
        customer = rng.randrange(1, CUSTOMER_ID_MAX)
        if partition is None or partition_of(customer, partitions) == partition:
            return customer
    raise RuntimeError(f"no customer in partition {partition} after {SEARCH_DRAWS_MAX} draws")


class Mix:
    """Plans the commands of one simulated upstream app (one locust user)."""

    def __init__(self, rng: random.Random, directory: Directory, run: str):
        self.rng = rng
        self.directory = directory
        self.run = run
        self.sequence = 0

    def _id(self, kind: str) -> str:
        self.sequence += 1
        return f"{self.run}-{kind}-{self.sequence}"

    def _amount(self) -> int:
        return 1 + self.rng.randrange(AMOUNT_MAX)

    def opening(self, customer: int) -> list[Planned]:
        """Open ``customer``'s account and fund it."""
        opening = OpenAccount(self._id("open"), customer, ACCOUNT, CURRENCY)
        funding = Deposit(self._id("dep"), customer, ACCOUNT, INITIAL_DEPOSIT, CURRENCY)
        return [Planned(opening, "open_account", ACCEPTED), Planned(funding, "deposit", ACCEPTED)]

    def new_customer(self) -> int:
        return new_customer(self.rng, self.directory.partitions)

    def first_customers(self) -> tuple[int, int]:
        """Two new customers of one partition, so a user always has a same-partition payee."""
        first = self.new_customer()
        second = new_customer(self.rng, self.directory.partitions, self.directory.partition(first))
        return first, second

    def deposit(self, customer: int) -> Planned:
        command = Deposit(self._id("dep"), customer, ACCOUNT, self._amount(), CURRENCY)
        return Planned(command, "deposit", ACCEPTED)

    def withdraw(self, customer: int) -> Planned:
        command = Withdraw(self._id("wd"), customer, ACCOUNT, self._amount(), CURRENCY)
        return Planned(command, "withdraw", ACCEPTED_OR_UNFUNDED)

    def transfer(self, payer: int, payee: int) -> Planned:
        """A transfer; one across partitions is named and judged apart."""
        command = Transfer(self._id("tr"), payer, ACCOUNT, payee, ACCOUNT, self._amount(), CURRENCY)
        if self.directory.partition(payer) == self.directory.partition(payee):
            return Planned(command, "transfer", ACCEPTED_OR_UNFUNDED)
        return Planned(command, "transfer (cross-partition)", ACCEPTED_OR_UNFUNDED)

    def same_partition_transfer(self, payer: int, pair: tuple[int, int]) -> Planned:
        """A transfer to an open account of ``payer``'s partition; within ``pair`` (two
        customers of one partition) when ``payer`` has no neighbour yet."""
        payee = self.directory.neighbour(self.rng, payer)
        if payee is None:
            payer, payee = pair
        if self.directory.partition(payer) != self.directory.partition(payee):
            raise ValueError(f"customers {pair} are not in one partition")
        return self.transfer(payer, payee)

    def cross_partition_transfer(self, payer: int) -> Planned:
        """A transfer to a customer of another partition (an unknown one if none is open)."""
        partitions = self.directory.partitions
        if partitions < 2:
            raise ValueError("a cross-partition transfer needs at least 2 partitions")
        payee = self.directory.stranger(self.rng, payer)
        if payee is None:
            home = self.directory.partition(payer)
            other = (home + self.rng.randrange(1, partitions)) % partitions
            payee = new_customer(self.rng, partitions, other)
        return self.transfer(payer, payee)

    def hold_and_void(self, customer: int, payee: int) -> list[Planned]:
        """A hold for ``payee`` (two-phase), then its release."""
        tomorrow = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()
        hold_id = self._id("hold")
        hold = HoldFunds(
            hold_id, customer, ACCOUNT, payee, ACCOUNT, self._amount(), CURRENCY, tomorrow
        )
        void = VoidHold(self._id("void"), customer, hold_id)
        return [Planned(hold, "hold", HOLD_PLACED), Planned(void, "void", HOLD_RELEASED)]

    def draw_without_line(self, customer: int) -> Planned:
        """A draw by a customer no credit line was granted to: refused, invitation only."""
        command = Draw(self._id("draw"), customer, self._amount(), CURRENCY)
        reason = Reason.NO_CREDIT_LINE
        return Planned(command, f"draw ({reason.value})", rejected_with(reason))

    def invalid_amount(self, customer: int) -> Planned:
        amount = -self.rng.randrange(AMOUNT_MAX)
        command = Deposit(self._id("bad"), customer, ACCOUNT, amount, CURRENCY)
        reason = Reason.AMOUNT_NOT_POSITIVE
        return Planned(command, f"deposit ({reason.value})", rejected_with(reason))

    def invalid_currency(self, customer: int) -> Planned:
        command = Deposit(self._id("bad"), customer, ACCOUNT, self._amount(), UNKNOWN_CURRENCY)
        reason = Reason.UNKNOWN_CURRENCY
        return Planned(command, f"deposit ({reason.value})", rejected_with(reason))
