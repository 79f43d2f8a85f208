"""The pure ledger: (accounts, batch of commands) -> (results, journal rows, changes).

No I/O, no clock, no Kafka, no database: the caller passes the accounts a batch touches,
the results already recorded for the batch's command ids, and the time. The ledger
decides every command in order, mutates the account book in place (the book is the
worker's cache of its partition; if the commit fails, the caller drops it) and returns
what must be committed.

Rules (DESIGN.md §4):

- Double entry: every accepted money movement writes journal rows that sum to zero per
  currency. Deposits and withdrawals move money against the partition's CASH system
  account (customer 0), so sum(customer balances) == -CASH == deposits - withdrawals.
- No overdraft by default; ``credit_limit`` lets a balance go down to ``-credit_limit``.
- Frozen and closed accounts refuse every movement; a closed account stays closed.
- A command id seen before with the same content returns the original result and
  changes nothing; with other content it is rejected as a conflict.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from engine.errors import invariant
from engine.messages import (
    BALANCE_MAX,
    BALANCE_MIN,
    Balance,
    CloseAccount,
    Command,
    Deposit,
    FreezeAccount,
    Invalid,
    OpenAccount,
    Reason,
    Result,
    Status,
    Transfer,
    Withdraw,
)
from engine.routing import partition_of

SYSTEM_CUSTOMER: Final = 0
"""Customer id of the partition's own system accounts; real customers start at 1."""


class SystemAccount(enum.IntEnum):
    CASH = 1
    """The outside world: deposits are credited from it, withdrawals debited to it."""


def system_account_number(kind: SystemAccount, currency: str) -> int:
    """Account number of a system account: one per kind and currency (base-26 code)."""
    code = 0
    for letter in currency:
        code = code * 26 + (ord(letter) - ord("A"))
    return int(kind) * 100_000 + code


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


class JournalRow(NamedTuple):
    offset: int
    command_id: str
    customer: int
    account: int
    currency: str
    amount: int


class Known(NamedTuple):
    """A command applied in an earlier batch: its content digest and its result."""

    fingerprint: int
    result: Result


class Incoming(NamedTuple):
    offset: int
    published_at_ms: int
    command: Command | Invalid
    fingerprint: int


class Applied(NamedTuple):
    """A new idempotency record: this command id now has this result."""

    command_id: str
    fingerprint: int
    result: Result


@dataclass(slots=True)
class Outcome:
    results: list[Result] = field(default_factory=list)
    journal: list[JournalRow] = field(default_factory=list)
    changed: dict[AccountKey, Account] = field(default_factory=dict)
    applied: list[Applied] = field(default_factory=list)


class _Decision(NamedTuple):
    reason: Reason
    detail: str
    touched: tuple[Account, ...] = ()


class PartitionLedger:
    """Decides the commands of one partition against its account book."""

    def __init__(self, partition: int, partitions: int, accounts: dict[AccountKey, Account]):
        invariant(0 <= partition < partitions, "partition out of range")
        self.partition = partition
        self.partitions = partitions
        self.accounts = accounts

    def decide_batch(
        self, batch: Sequence[Incoming], known: Mapping[str, Known], now_us: int
    ) -> Outcome:
        """Decide ``batch`` in order. ``known`` holds earlier results of its command ids."""
        outcome = Outcome()
        seen: dict[str, Known] = {}
        for incoming in batch:
            result = self._decide_one(incoming, known, seen, outcome, now_us)
            outcome.results.append(result)
        invariant(len(outcome.results) == len(batch), "one result per command")
        _check_balanced(outcome.journal)
        return outcome

    def _decide_one(
        self,
        incoming: Incoming,
        known: Mapping[str, Known],
        seen: dict[str, Known],
        outcome: Outcome,
        now_us: int,
    ) -> Result:
        command = incoming.command
        if isinstance(command, Invalid):
            return self._result(incoming, now_us, _Decision(command.reason, command.detail))
        previous = seen.get(command.id) or known.get(command.id)
        if previous is not None:
            if previous.fingerprint == incoming.fingerprint:
                return previous.result
            detail = f"command id {command.id} was used before for another command"
            return self._result(incoming, now_us, _Decision(Reason.DUPLICATE_CONFLICT, detail))
        decision = self._apply(command, incoming.offset, outcome)
        result = self._result(incoming, now_us, decision)
        if decision.reason is Reason.NONE:
            for account in decision.touched:
                outcome.changed[account.key] = account
        seen[command.id] = Known(incoming.fingerprint, result)
        outcome.applied.append(Applied(command.id, incoming.fingerprint, result))
        return result

    def _result(self, incoming: Incoming, now_us: int, decision: _Decision) -> Result:
        status = Status.ACCEPTED if decision.reason is Reason.NONE else Status.REJECTED
        balances = tuple(
            Balance(a.customer, a.number, a.balance) for a in decision.touched if not a.is_system
        )
        return Result(
            command_id=incoming.command.id,
            status=status,
            reason=decision.reason,
            detail=decision.detail,
            balances=balances if status is Status.ACCEPTED else (),
            committed_at_us=now_us,
            published_at_ms=incoming.published_at_ms,
            partition=self.partition,
            offset=incoming.offset,
        )

    def _apply(self, command: Command, offset: int, outcome: Outcome) -> _Decision:
        if partition_of(command.customer, self.partitions) != self.partition:
            return _Decision(Reason.WRONG_PARTITION, "the record key does not match customer")
        match command:
            case OpenAccount():
                return self._open(command)
            case Deposit():
                return self._deposit(command, offset, outcome)
            case Withdraw():
                return self._withdraw(command, offset, outcome)
            case Transfer():
                return self._transfer(command, offset, outcome)
            case FreezeAccount():
                return self._set_status(command.customer, command.account, AccountStatus.FROZEN)
            case CloseAccount():
                return self._set_status(command.customer, command.account, AccountStatus.CLOSED)

    def _open(self, command: OpenAccount) -> _Decision:
        key = (command.customer, command.account)
        if key in self.accounts:
            return _Decision(Reason.ACCOUNT_EXISTS, f"account {key} already exists")
        account = Account(
            command.customer,
            command.account,
            command.currency,
            0,
            command.credit_limit,
            AccountStatus.OPEN,
        )
        self.accounts[key] = account
        return _Decision(Reason.NONE, "", (account,))

    def _deposit(self, command: Deposit, offset: int, outcome: Outcome) -> _Decision:
        account, refusal = self._movable(command.customer, command.account, command.currency)
        if account is None:
            return refusal
        cash = self._system(SystemAccount.CASH, command.currency)
        return self._move(command.id, offset, cash, account, command.amount, outcome)

    def _withdraw(self, command: Withdraw, offset: int, outcome: Outcome) -> _Decision:
        account, refusal = self._movable(command.customer, command.account, command.currency)
        if account is None:
            return refusal
        cash = self._system(SystemAccount.CASH, command.currency)
        return self._move(command.id, offset, account, cash, command.amount, outcome)

    def _transfer(self, command: Transfer, offset: int, outcome: Outcome) -> _Decision:
        if (command.customer, command.account) == (command.to_customer, command.to_account):
            return _Decision(Reason.SAME_ACCOUNT, "a transfer needs two different accounts")
        if partition_of(command.to_customer, self.partitions) != self.partition:
            return _Decision(
                Reason.CROSS_PARTITION_UNSUPPORTED,
                "the payee lives in another partition; cross-partition transfers are not enabled",
            )
        payer, refusal = self._movable(command.customer, command.account, command.currency)
        if payer is None:
            return refusal
        payee, refusal = self._movable(command.to_customer, command.to_account, command.currency)
        if payee is None:
            return refusal
        return self._move(command.id, offset, payer, payee, command.amount, outcome)

    def _set_status(self, customer: int, number: int, status: AccountStatus) -> _Decision:
        account = self.accounts.get((customer, number))
        if account is None:
            return _Decision(Reason.ACCOUNT_NOT_FOUND, f"account {(customer, number)} not found")
        if account.status is AccountStatus.CLOSED:
            return _Decision(Reason.ACCOUNT_CLOSED, f"account {account.key} is closed")
        if status is AccountStatus.CLOSED and account.balance != 0:
            return _Decision(Reason.BALANCE_NOT_ZERO, f"account {account.key} holds money")
        account.status = status
        return _Decision(Reason.NONE, "", (account,))

    def _movable(
        self, customer: int, number: int, currency: str
    ) -> tuple[Account, _Decision] | tuple[None, _Decision]:
        account = self.accounts.get((customer, number))
        if account is None:
            return None, _Decision(
                Reason.ACCOUNT_NOT_FOUND, f"account {(customer, number)} not found"
            )
        if account.status is AccountStatus.FROZEN:
            return None, _Decision(Reason.ACCOUNT_FROZEN, f"account {account.key} is frozen")
        if account.status is AccountStatus.CLOSED:
            return None, _Decision(Reason.ACCOUNT_CLOSED, f"account {account.key} is closed")
        if account.currency != currency:
            detail = f"account {account.key} holds {account.currency}, not {currency}"
            return None, _Decision(Reason.CURRENCY_MISMATCH, detail)
        return account, _Decision(Reason.NONE, "")

    def _system(self, kind: SystemAccount, currency: str) -> Account:
        key = (SYSTEM_CUSTOMER, system_account_number(kind, currency))
        account = self.accounts.get(key)
        if account is None:
            account = Account(SYSTEM_CUSTOMER, key[1], currency)
            self.accounts[key] = account
        return account

    def _move(
        self,
        command_id: str,
        offset: int,
        debit: Account,
        credit: Account,
        amount: int,
        outcome: Outcome,
    ) -> _Decision:
        """Debit one account and credit the other by ``amount``, or refuse and change nothing."""
        invariant(amount > 0, "amounts are validated positive")
        invariant(debit.currency == credit.currency, "one currency per movement")
        debit_after = debit.balance - amount
        credit_after = credit.balance + amount
        if not debit.is_system and debit_after < -debit.credit_limit:
            detail = f"account {debit.key} has {debit.balance}, limit {debit.credit_limit}"
            return _Decision(Reason.INSUFFICIENT_FUNDS, detail)
        if debit_after < BALANCE_MIN or credit_after > BALANCE_MAX:
            return _Decision(Reason.OVERFLOW, "the balance would leave the 64-bit range")
        debit.balance = debit_after
        credit.balance = credit_after
        outcome.journal.append(
            JournalRow(offset, command_id, debit.customer, debit.number, debit.currency, -amount)
        )
        outcome.journal.append(
            JournalRow(offset, command_id, credit.customer, credit.number, credit.currency, amount)
        )
        return _Decision(Reason.NONE, "", (debit, credit))


def _check_balanced(rows: Sequence[JournalRow]) -> None:
    totals: dict[str, int] = {}
    for row in rows:
        totals[row.currency] = totals.get(row.currency, 0) + row.amount
    invariant(all(total == 0 for total in totals.values()), "journal rows must sum to zero")
