"""The store of one MariaDB/MySQL cup (engine.core.store.CupStore): the same contract as
shards.postgres.store, in the shapes MySQL has.

The fenced batch commit is one transaction in two round trips:

1. ``START TRANSACTION``; lock the state rows of the batches' partitions and read their
   epoch and both offsets (``SELECT ... FOR UPDATE``, in primary-key order, so two
   commits never wait on each other in a cycle); probe command_results for the batches'
   new command ids (and the ids of refused legs), one primary-key range per partition;
2. the worker decides in Python which fences hold (the epoch, ``next_offset`` and
   ``internal_offset`` it read or wrote, none of its ids recorded) and sends, for those
   partitions only, every write (both offsets moved to the batch's ends) and ``COMMIT``
   in one round trip; with none held, ``ROLLBACK``.

Why not one statement, as on Postgres: MySQL has no data-modifying CTEs, so the fence
cannot gate the writes inside one statement. The row locks taken in round trip 1 make
the compare-and-set of round trip 2 exact: no other commit or claim of those partitions
can run in between. A worker stopped between the two holds the locks until the server
ends its idle transaction (shards.mysql.driver.IDLE_TRANSACTION_SECONDS).

The writes keep the order Postgres's single statement implies (every part of it sees
the rows as they were before it): outbox trims before new outbox rows, final results
before new results, settled transfers before newly opened ones.

A lost reply of round trip 2 is read back by the worker from the claim (``states``), as
on Postgres. Literals are written by shards.mysql.driver (integers, hex bytes, ids).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import asyncmy
from asyncmy.errors import MySQLError

from engine.core.book import (
    Account,
    AccountKey,
    AccountStatus,
    CreditKind,
    CreditRow,
    InFlight,
    Known,
)
from engine.core.errors import CupUnavailableError, invariant
from engine.core.messages import result_decoder
from engine.core.records import (
    Claim,
    CommitBatch,
    CommitStatus,
    InFlightFigures,
    OutboxKind,
    OutboxRow,
)
from shards.faults import cup_faults
from shards.mysql.driver import blob, ints, is_passing, run, text, texts
from shards.mysql.journal_periods import MysqlJournalPeriods

_ACCOUNT_COLUMNS: Final = "customer_id, account_no, currency, balance, credit_limit, status"

_cup_faults = cup_faults(is_passing, (MySQLError,))


class MysqlCupStore:
    """The SQL of one MariaDB/MySQL cup. Every method is one round trip (the commit two),
    and raises CupUnavailableError for a passing fault."""

    def __init__(self, cup_id: int, pool: asyncmy.Pool):
        self.cup_id = cup_id
        self.pool = pool

    async def close(self) -> None:
        self.pool.close()
        await self.pool.wait_closed()

    async def renew_connections(self) -> None:
        """After a fault: close the idle connections (the busy ones close on their error)."""
        await self.pool.clear()

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[asyncmy.Connection]:
        """A pooled connection; closed, not reused, when anything failed on it (it may hold
        an open transaction or half a reply)."""
        try:
            connection = await self.pool.acquire()
        except RuntimeError as error:
            # asyncmy, when the server goes away in the middle of a new connection's
            # handshake: "Transport does not expose socket instance".
            raise CupUnavailableError(f"cup {self.cup_id}: connecting: {error}") from error
        try:
            yield connection
        except BaseException:
            connection.close()
            raise
        finally:
            self.pool.release(connection)

    async def _run(self, sql: str) -> list[list[tuple[Any, ...]]]:
        async with self._session() as connection:
            return await run(connection, sql)

    async def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        return (await self._run(sql))[0]

    @_cup_faults
    async def make_journal_partitions(self, now_s: int, period_seconds: int) -> list[int]:
        async with self._session() as connection:
            periods = MysqlJournalPeriods(connection)
            return await periods.make_partitions(now_s, period_seconds)

    @_cup_faults
    async def claim(self, partition: int, owner: str) -> Claim:
        """Become the partition's writer: bump its epoch, fencing every earlier owner."""
        p = int(partition)
        results = await self._run(
            "START TRANSACTION;"
            "INSERT INTO partition_state (`partition`, epoch, owner)"
            f" VALUES ({p}, 1, {text(owner)})"
            " ON DUPLICATE KEY UPDATE epoch = epoch + 1, owner = VALUES(owner),"
            " updated_at = CURRENT_TIMESTAMP(6);"
            "SELECT epoch, next_offset, internal_offset, expired_before_ms FROM partition_state"
            f" WHERE `partition` = {p};"
            "COMMIT"
        )
        return Claim(*results[0][0])

    @_cup_faults
    async def state(self, partition: int) -> Claim | None:
        return (await self.states([partition])).get(partition)

    @_cup_faults
    async def states(self, partitions: Sequence[int]) -> dict[int, Claim]:
        """The claim of each partition that has a state row here."""
        if not partitions:
            return {}
        rows = await self._rows(
            "SELECT `partition`, epoch, next_offset, internal_offset, expired_before_ms"
            f" FROM partition_state WHERE `partition` IN ({ints(partitions)})"
        )
        return {row[0]: Claim(*row[1:]) for row in rows}

    @_cup_faults
    async def next_offsets(self) -> dict[int, int]:
        """The next offset of the commands topic of every partition this cup holds state
        for."""
        rows = await self._rows("SELECT `partition`, next_offset FROM partition_state")
        return {p: offset for p, offset in rows}

    @_cup_faults
    async def load_partition(self, partition: int, limit: int) -> list[Account]:
        """Up to ``limit`` accounts of the partition, system accounts first."""
        rows = await self._rows(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE `partition` = {int(partition)}"
            f" ORDER BY customer_id LIMIT {int(limit)}"
        )
        return [_account(row) for row in rows]

    @_cup_faults
    async def load_accounts(self, partition: int, keys: Sequence[AccountKey]) -> list[Account]:
        if not keys:
            return []
        pairs = ",".join(f"({int(c)},{int(a)})" for c, a in keys)
        rows = await self._rows(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE `partition` = {int(partition)}"
            f" AND (customer_id, account_no) IN ({pairs})"
        )
        return [_account(row) for row in rows]

    @_cup_faults
    async def load_known(self, partition: int, command_ids: Sequence[str]) -> dict[str, Known]:
        if not command_ids:
            return {}
        rows = await self._rows(
            "SELECT command_id, fingerprint, result FROM command_results"
            f" WHERE `partition` = {int(partition)} AND command_id IN ({texts(command_ids)})"
        )
        return {
            command_id: Known(fingerprint, result_decoder.decode(result))
            for command_id, fingerprint, result in rows
        }

    @_cup_faults
    async def commit(self, batch: CommitBatch) -> CommitStatus:
        """The fenced commit of one partition batch."""
        return (await self.commit_many([batch]))[batch.partition]

    @_cup_faults
    async def commit_many(self, batches: Sequence[CommitBatch]) -> dict[int, CommitStatus]:
        """The fenced commit of batches of distinct partitions in one transaction (see the
        module docstring); each partition's fence holds or fails on its own."""
        invariant(len({b.partition for b in batches}) == len(batches), "one batch per partition")
        async with self._session() as connection:
            results = await run(connection, _fence_sql(batches))
            states = {
                p: Claim(epoch, offset, internal) for p, epoch, offset, internal in results[0]
            }
            seen = {row[0] for row in results[1]} if len(results) > 1 else set()
            statuses: dict[int, CommitStatus] = {}
            held = []
            for batch in batches:
                expected = Claim(batch.epoch, batch.expected_offset, batch.expected_internal)
                if states.get(batch.partition) != expected:
                    statuses[batch.partition] = CommitStatus.FENCED
                elif batch.partition in seen:
                    statuses[batch.partition] = CommitStatus.DUPLICATES
                else:
                    statuses[batch.partition] = CommitStatus.COMMITTED
                    held.append(batch)
            await run(connection, _writes_sql(held) + "COMMIT" if held else "ROLLBACK")
        return statuses

    @_cup_faults
    async def unsent(self, partition: int) -> list[OutboxRow]:
        rows = await self._rows(
            "SELECT src_offset, seq, kind, `key`, value, target_partition FROM outbox"
            f" WHERE `partition` = {int(partition)} ORDER BY src_offset, seq"
        )
        return [
            OutboxRow(offset, seq, OutboxKind(kind), key, value, target)
            for offset, seq, kind, key, value, target in rows
        ]

    @_cup_faults
    async def load_in_flight(self, partition: int) -> list[InFlight]:
        """Every transfer in flight out of ``partition``."""
        rows = await self._rows(
            "SELECT transfer_id, from_customer, from_account, to_customer, to_account,"
            " amount, currency, src_offset, answer_json, forwarded_from"
            f" FROM transfers_in_flight WHERE `partition` = {int(partition)}"
        )
        return [
            InFlight(tid, payer, account, payee, to_account, amount, currency, offset, bool(j), fwd)
            for tid, payer, account, payee, to_account, amount, currency, offset, j, fwd in rows
        ]

    @_cup_faults
    async def load_credit(self, partition: int) -> list[CreditRow]:
        """The partition's open credit rows: lines, open loans, open holds, its calendar."""
        rows = await self._rows(
            "SELECT kind, entity_key, customer_id, currency, amount, is_open, body"
            f" FROM credit_book WHERE `partition` = {int(partition)} AND is_open"
        )
        return [
            CreditRow(CreditKind(kind), key, customer, currency, amount, bool(is_open), body)
            for kind, key, customer, currency, amount, is_open, body in rows
        ]

    @_cup_faults
    async def in_flight(
        self, partitions: Sequence[int], stuck_after_seconds: float
    ) -> list[InFlightFigures]:
        """Transfers debited in ``partitions`` and not settled, by currency: how many, the
        money, and how many for longer than ``stuck_after_seconds``."""
        if not partitions:
            return []
        stuck_us = round(stuck_after_seconds * 1_000_000)
        rows = await self._rows(
            "SELECT currency, COUNT(*), COALESCE(SUM(amount), 0),"
            f" COALESCE(SUM(opened_at < CURRENT_TIMESTAMP(6) - INTERVAL {stuck_us} MICROSECOND), 0)"
            f" FROM transfers_in_flight WHERE `partition` IN ({ints(partitions)})"
            " GROUP BY currency"
        )
        return [
            InFlightFigures(currency, count, int(money), int(stuck))
            for currency, count, money, stuck in rows
        ]

    @_cup_faults
    async def trim_outbox(
        self, partition: int, epoch: int, from_offset: int, below_offset: int
    ) -> None:
        """Delete published outbox rows, while this worker still owns the partition."""
        p = int(partition)
        await self._run(
            f"DELETE FROM outbox WHERE `partition` = {p} AND src_offset >= {int(from_offset)}"
            f" AND src_offset < {int(below_offset)}"
            " AND EXISTS (SELECT 1 FROM partition_state"
            f" WHERE `partition` = {p} AND epoch = {int(epoch)})"
        )

    @_cup_faults
    async def advance_horizon(self, partition: int, epoch: int, horizon_ms: int) -> None:
        await self._run(
            f"UPDATE partition_state SET expired_before_ms = {int(horizon_ms)}"
            f" WHERE `partition` = {int(partition)} AND epoch = {int(epoch)}"
            f" AND expired_before_ms < {int(horizon_ms)}"
        )

    @_cup_faults
    async def prune_expired(self, partition: int, rows_max: int) -> int:
        """See engine.core.store.CupStore.prune_expired (oldest first, by the issue-time
        index)."""
        p = int(partition)
        rows = await self._rows(
            f"DELETE FROM command_results WHERE `partition` = {p} AND issued_at_ms <"
            f" (SELECT expired_before_ms FROM partition_state WHERE `partition` = {p})"
            " AND command_id NOT IN"
            f" (SELECT transfer_id FROM transfers_in_flight WHERE `partition` = {p})"
            f" ORDER BY issued_at_ms LIMIT {int(rows_max)}; SELECT ROW_COUNT()"
        )
        return int(rows[0][0])


def _account(row: tuple[Any, ...]) -> Account:
    customer, number, currency, balance, credit_limit, status = row
    return Account(customer, number, currency, balance, credit_limit, AccountStatus(status))


def _fence_sql(batches: Sequence[CommitBatch]) -> str:
    """Round trip 1: lock the state rows (reading the epoch and both offsets), probe the
    new command ids."""
    sql = (
        "START TRANSACTION;"
        "SELECT `partition`, epoch, next_offset, internal_offset FROM partition_state"
        f" WHERE `partition` IN ({ints(b.partition for b in batches)})"
        " ORDER BY `partition` FOR UPDATE"
    )
    probes = []
    for batch in batches:
        ids = [a.command_id for a in batch.outcome.applied]
        ids += [f.leg_id for f in batch.outcome.forged if f.leg_id]
        if ids:
            probes.append(
                f"(SELECT `partition` FROM command_results WHERE `partition` = {batch.partition}"
                f" AND command_id IN ({texts(ids)}) LIMIT 1)"
            )
    return sql + (";" + " UNION ALL ".join(probes) if probes else "")


def _insert(table_and_columns: str, rows: list[str], then: str = "") -> list[str]:
    """One multi-row INSERT, or nothing for no rows."""
    return [f"INSERT INTO {table_and_columns} VALUES {','.join(rows)}{then};"] if rows else []


def _writes_sql(batches: Sequence[CommitBatch]) -> str:
    """Round trip 2: every write of the batches whose fence held, each statement ending in
    ``;`` (the caller appends COMMIT)."""
    fences, trims, finals, settled = [], [], [], []
    accounts, journal, results, outbox, opened = [], [], [], [], []
    for batch in batches:
        p = batch.partition
        outcome = batch.outcome
        fences.append(
            f"UPDATE partition_state SET next_offset = {int(batch.next_offset)},"
            f" internal_offset = {int(batch.next_internal)},"
            f" expired_before_ms = GREATEST(expired_before_ms, {int(outcome.horizon_ms)}),"
            f" updated_at = CURRENT_TIMESTAMP(6) WHERE `partition` = {p};"
        )
        if batch.trim_below_offset > batch.trim_from_offset:
            trims.append(
                f"DELETE FROM outbox WHERE `partition` = {p}"
                f" AND src_offset >= {int(batch.trim_from_offset)}"
                f" AND src_offset < {int(batch.trim_below_offset)};"
            )
        accounts += [
            f"({p},{int(a.customer)},{int(a.number)},{text(a.currency)},{int(a.balance)},"
            f"{int(a.credit_limit)},{int(a.status)})"
            for a in outcome.changed.values()
        ]
        journal += [
            f"({p},{int(j.seq)},{text(j.command_id)},{int(j.customer)},{int(j.account)},"
            f"{text(j.currency)},{int(j.amount)})"
            for j in outcome.journal
        ]
        results += [
            f"({p},{text(a.command_id)},{int(a.fingerprint)},{int(a.seq)},{blob(r)},"
            f"{int(a.issued_at_ms)})"
            for a, r in zip(outcome.applied, batch.applied_results, strict=True)
        ]
        outbox += [
            f"({p},{int(o.src_offset)},{int(o.seq)},{int(o.kind)},{blob(o.key)},"
            f"{blob(o.value)},{int(o.target_partition)})"
            for o in batch.outbox
        ]
        if outcome.finals:
            cases = " ".join(
                f"WHEN {text(f.command_id)} THEN {blob(r)}"
                for f, r in zip(outcome.finals, batch.final_results, strict=True)
            )
            ids = texts([f.command_id for f in outcome.finals])
            finals.append(
                f"UPDATE command_results SET result = CASE command_id {cases} END"
                f" WHERE `partition` = {p} AND command_id IN ({ids});"
            )
        opened += [
            f"({p},{text(t.transfer_id)},{int(t.customer)},{int(t.account)},"
            f"{int(t.to_customer)},{int(t.to_account)},{int(t.amount)},{text(t.currency)},"
            f"{int(t.offset)},{int(bool(t.json))},{int(t.forwarded_from)})"
            for t in outcome.opened
        ]
        if outcome.settled:
            settled.append(
                f"DELETE FROM transfers_in_flight WHERE `partition` = {p}"
                f" AND transfer_id IN ({texts(outcome.settled)});"
            )
    statements = [
        *fences,
        *_insert(
            f"accounts (`partition`, {_ACCOUNT_COLUMNS})",
            accounts,
            " ON DUPLICATE KEY UPDATE balance = VALUES(balance), status = VALUES(status),"
            " credit_limit = VALUES(credit_limit)",
        ),
        *_insert(
            "journal (`partition`, src_offset, command_id, customer_id, account_no, currency,"
            " amount)",
            journal,
        ),
        *finals,
        *_insert(
            "command_results (`partition`, command_id, fingerprint, src_offset, result,"
            " issued_at_ms)",
            results,
        ),
        *trims,
        *_insert(
            "outbox (`partition`, src_offset, seq, kind, `key`, value, target_partition)", outbox
        ),
        *settled,
        *_insert(
            "transfers_in_flight (`partition`, transfer_id, from_customer, from_account,"
            " to_customer, to_account, amount, currency, src_offset, answer_json,"
            " forwarded_from)",
            opened,
        ),
        *_credit_sql(batches),
        *_clearing_sql(batches),
    ]
    return "".join(statements)


def _credit_sql(batches: Sequence[CommitBatch]) -> list[str]:
    """The upsert of the credit book's entities the batches changed, or nothing."""
    rows = [
        f"({int(b.partition)},{int(c.kind)},{text(c.key)},{int(c.customer)},"
        f"{text(c.currency)},{int(c.amount)},{int(bool(c.open))},{blob(c.body)})"
        for b in batches
        for c in b.outcome.credit.values()
    ]
    return _insert(
        "credit_book (`partition`, kind, entity_key, customer_id, currency, amount, is_open, body)",
        rows,
        " ON DUPLICATE KEY UPDATE customer_id = VALUES(customer_id),"
        " currency = VALUES(currency), amount = VALUES(amount), is_open = VALUES(is_open),"
        " body = VALUES(body)",
    )


def _clearing_sql(batches: Sequence[CommitBatch]) -> list[str]:
    """The append of the clearing entries the batches made, or nothing."""
    rows = [
        f"({int(b.partition)},{int(e.seq)},{int(e.entry)},{int(e.day)},{int(e.partner)},"
        f"{text(e.currency)},{text(e.loan)},{int(e.customer)},{int(e.kind)},{int(e.amount)},"
        f"{text(e.command_id)})"
        for b in batches
        for e in b.outcome.clearing
    ]
    return _insert(
        "clearing_entries (`partition`, src_offset, entry, business_day, partner, currency,"
        " loan_id, customer_id, kind, amount, command_id)",
        rows,
    )
