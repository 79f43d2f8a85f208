"""A seeded workload: customers, their accounts, and a stream of money commands.

Pure and deterministic (same seed, same commands), so a test can replay exactly what was
published through the pure ledger and compare.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from engine.core.messages import (
    CloseBusinessDay,
    Command,
    Deposit,
    Draw,
    GrantCreditLine,
    OpenAccount,
    Privileged,
    Repay,
    Transfer,
    Withdraw,
)
from engine.core.routing import partition_of, routing_customers

ACCOUNT = 1
CURRENCY = "EUR"
FOREIGN_TRIES_MAX = 64
LINE_LIMIT = 10**12
"""A credit line large enough that a load never exhausts it."""
LINE_RATE_BP = 1_825
LINE_TERM_DAYS = 365
FIRST_BUSINESS_DAY = "2026-01-01"


@dataclass(frozen=True, slots=True)
class WorkloadShape:
    customers: int = 2_000
    partitions: int = 64
    initial_deposit: int = 1_000_000
    transfer_amount_max: int = 5_000
    deposit_share_percent: int = 5
    withdraw_share_percent: int = 5
    cross_share_percent: int = 20
    """Of the transfers, how many go to a customer in another partition."""
    credit_share_percent: int = 0
    """Of the commands, how many are draws or repayments on the customers' credit lines
    (half each; ``credit_opening`` grants the lines)."""
    seed: int = 7
    run: str = "w"

    def __post_init__(self) -> None:
        if self.customers < 2:
            raise ValueError("a workload needs at least 2 customers")
        if self.deposit_share_percent + self.withdraw_share_percent > 100:
            raise ValueError("deposit and withdraw shares exceed 100%")
        if not 0 <= self.cross_share_percent <= 100:
            raise ValueError("cross_share_percent must be in 0..100")
        shares = self.deposit_share_percent + self.withdraw_share_percent
        if not 0 <= self.credit_share_percent <= 100 - shares:
            raise ValueError("credit_share_percent must be in 0..100 less the other shares")


class Workload:
    def __init__(self, shape: WorkloadShape):
        self.shape = shape
        self.random = random.Random(shape.seed)
        first = 1 + self.random.randrange(1_000_000_000)
        self.customers = list(range(first, first + shape.customers))
        by_partition: dict[int, list[int]] = {}
        for customer in self.customers:
            by_partition.setdefault(partition_of(customer, shape.partitions), []).append(customer)
        self.neighbours = {
            c: by_partition[partition_of(c, shape.partitions)] for c in self.customers
        }
        self.sequence = 0

    def _id(self, kind: str) -> str:
        self.sequence += 1
        return f"{self.shape.run}-{kind}-{self.sequence}"

    def opening(self) -> Iterator[Command]:
        """Open one account per customer and fund it."""
        for customer in self.customers:
            yield OpenAccount(self._id("open"), customer, ACCOUNT, CURRENCY)
        for customer in self.customers:
            yield Deposit(self._id("dep"), customer, ACCOUNT, self.shape.initial_deposit, CURRENCY)

    def credit_opening(self) -> Iterator[Privileged]:
        """Unsigned (the risk authority signs them): a credit line for every customer,
        then the first business day of every partition closed (draws need a calendar)."""
        for customer in self.customers:
            yield GrantCreditLine(
                self._id("line"),
                customer,
                ACCOUNT,
                CURRENCY,
                LINE_LIMIT,
                LINE_RATE_BP,
                2 * LINE_RATE_BP,
                self.shape.transfer_amount_max,
                LINE_TERM_DAYS,
            )
        for partition, customer in enumerate(routing_customers(self.shape.partitions)):
            command_id = f"{self.shape.run}-close-{FIRST_BUSINESS_DAY}-p{partition}"
            yield CloseBusinessDay(command_id, customer, FIRST_BUSINESS_DAY)

    def next_command(self) -> Command:
        """A transfer (some to another partition), a deposit or withdrawal, or a draw or
        repayment on a credit line."""
        shape = self.shape
        pick = self.random.randrange(100)
        customer = self.random.choice(self.customers)
        amount = 1 + self.random.randrange(shape.transfer_amount_max)
        if pick < shape.deposit_share_percent:
            return Deposit(self._id("dep"), customer, ACCOUNT, amount, CURRENCY)
        if pick < shape.deposit_share_percent + shape.withdraw_share_percent:
            return Withdraw(self._id("wd"), customer, ACCOUNT, amount, CURRENCY)
        credit = shape.deposit_share_percent + shape.withdraw_share_percent
        if pick < credit + shape.credit_share_percent:
            if pick % 2:
                return Draw(self._id("draw"), customer, amount, CURRENCY)
            return Repay(self._id("repay"), customer, amount, CURRENCY)
        if self.random.randrange(100) < shape.cross_share_percent:
            payee = self._foreign(customer)
        else:
            payees = self.neighbours[customer]
            payee = self.random.choice(payees)
            if payee == customer and len(payees) > 1:
                payee = payees[(payees.index(customer) + 1) % len(payees)]
        return Transfer(self._id("tr"), customer, ACCOUNT, payee, ACCOUNT, amount, CURRENCY)

    def _foreign(self, customer: int) -> int:
        """A customer of another partition (bounded tries; the same one if P is 1)."""
        home = partition_of(customer, self.shape.partitions)
        for _ in range(FOREIGN_TRIES_MAX):
            payee = self.random.choice(self.customers)
            if partition_of(payee, self.shape.partitions) != home:
                return payee
        return customer
