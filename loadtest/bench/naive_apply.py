"""The naive baseline's per-command transactions: what a typical service would write.

Each command is one database transaction on its cup (synchronous_commit stays on):
lock each customer account with ``SELECT ... FOR UPDATE``, check it, ``UPDATE`` both
balances, ``INSERT`` the two journal rows, ``UPDATE`` the partition's ``next_offset``,
commit. A transfer whose payee lives in another cup cannot be one transaction: the payer's
cup debits the payer into its clearing account (with the offset), then the payee's cup
credits the payee out of its own clearing account (or the payer is refunded). The rows
are those of the engine's schema, so ``reconcile`` checks the naive books too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

import asyncpg

from engine.core.book import SYSTEM_CUSTOMER, AccountStatus, SystemAccount, system_account_number
from engine.core.messages import Command, Deposit, Transfer, Withdraw
from engine.core.routing import partition_of

_LOCK: Final = (
    "SELECT currency, balance, credit_limit, status FROM accounts"
    " WHERE partition = $1 AND customer_id = $2 AND account_no = $3 FOR UPDATE"
)
_UPDATE: Final = (
    "UPDATE accounts SET balance = balance + $4"
    " WHERE partition = $1 AND customer_id = $2 AND account_no = $3"
)
_UPSERT_SYSTEM: Final = (
    "INSERT INTO accounts (partition, customer_id, account_no, currency, balance,"
    " credit_limit, status) VALUES ($1, $2, $3, $4, $5, 0, 0)"
    " ON CONFLICT (partition, customer_id, account_no)"
    " DO UPDATE SET balance = accounts.balance + EXCLUDED.balance"
)
_JOURNAL: Final = (
    "INSERT INTO journal (partition, src_offset, command_id, customer_id, account_no,"
    " currency, amount) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
_OFFSET: Final = (
    "UPDATE partition_state SET next_offset = $2, updated_at = now() WHERE partition = $1"
)


class Side(NamedTuple):
    """One account of a movement: a customer's (locked, checked) or a system one."""

    partition: int
    customer: int
    account: int


@dataclass(frozen=True, slots=True)
class Movement:
    command_id: str
    offset: int
    currency: str
    amount: int


@dataclass(slots=True)
class Tally:
    processed: int = 0
    accepted: int = 0
    deposited: int = 0
    withdrawn: int = 0


class Naive:
    """Applies commands one transaction at a time over one connection per cup."""

    def __init__(self, connections: Mapping[int, asyncpg.Connection], cup_of: Sequence[int]):
        self.connections = connections
        self.cup_of = cup_of
        self.partitions = len(cup_of)
        self.tally = Tally()

    async def apply(self, partition: int, offset: int, command: Command | None) -> None:
        """Apply one record (None: not a money command, only its offset moves)."""
        accepted = False
        match command:
            case Transfer():
                accepted = await self._transfer(partition, offset, command)
            case Deposit():
                cash = self._system(partition, SystemAccount.CASH, command.currency)
                home = Side(partition, command.customer, command.account)
                accepted = await self._move(cash, home, _movement(command, offset), partition)
                self.tally.deposited += command.amount if accepted else 0
            case Withdraw():
                cash = self._system(partition, SystemAccount.CASH, command.currency)
                home = Side(partition, command.customer, command.account)
                accepted = await self._move(home, cash, _movement(command, offset), partition)
                self.tally.withdrawn += command.amount if accepted else 0
            case _:
                await self._move(None, None, None, partition, offset + 1)
        self.tally.processed += 1
        self.tally.accepted += int(accepted)

    async def _transfer(self, partition: int, offset: int, command: Transfer) -> bool:
        movement = _movement(command, offset)
        payer = Side(partition, command.customer, command.account)
        payee_partition = partition_of(command.to_customer, self.partitions)
        payee = Side(payee_partition, command.to_customer, command.to_account)
        if self.cup_of[partition] == self.cup_of[payee_partition]:
            return await self._move(payer, payee, movement, partition)
        out = self._system(partition, SystemAccount.CLEARING, command.currency)
        if not await self._move(payer, out, movement, partition):
            return False
        inbound = self._system(payee_partition, SystemAccount.CLEARING, command.currency)
        if await self._move(inbound, payee, movement, None):
            return True
        await self._move(out, payer, movement, None)
        return False

    def _system(self, partition: int, kind: SystemAccount, currency: str) -> Side:
        return Side(partition, SYSTEM_CUSTOMER, system_account_number(kind, currency))

    async def _move(
        self,
        debit: Side | None,
        credit: Side | None,
        movement: Movement | None,
        offset_partition: int | None,
        next_offset: int = -1,
    ) -> bool:
        """One transaction on the cup of ``debit`` (or of the offset's partition)."""
        partition = debit.partition if debit is not None else offset_partition
        if partition is None:
            raise ValueError("a transaction needs a debit side or an offset to move")
        connection = self.connections[self.cup_of[partition]]
        async with connection.transaction():
            moved = False
            if debit is not None and credit is not None and movement is not None:
                moved = await _checked_move(connection, debit, credit, movement)
                next_offset = movement.offset + 1
            if offset_partition is not None:
                await connection.execute(_OFFSET, offset_partition, next_offset)
        return moved


def _movement(command: Transfer | Deposit | Withdraw, offset: int) -> Movement:
    return Movement(command.id, offset, command.currency, command.amount)


async def _checked_move(
    connection: asyncpg.Connection, debit: Side, credit: Side, movement: Movement
) -> bool:
    """Lock and check the customer accounts, then move the money; False if refused."""
    amount = movement.amount
    for side in (debit, credit):
        if side.customer == SYSTEM_CUSTOMER:
            continue
        row = await connection.fetchrow(_LOCK, *side)
        if row is None or row["status"] != AccountStatus.OPEN:
            return False
        if row["currency"] != movement.currency:
            return False
        if side is debit and row["balance"] - amount < -row["credit_limit"]:
            return False
    for side, delta in ((debit, -amount), (credit, amount)):
        if side.customer == SYSTEM_CUSTOMER:
            await connection.execute(_UPSERT_SYSTEM, *side, movement.currency, delta)
        else:
            await connection.execute(_UPDATE, *side, delta)
        await connection.execute(
            _JOURNAL,
            side.partition,
            movement.offset,
            movement.command_id,
            side.customer,
            side.account,
            movement.currency,
            delta,
        )
    return True
