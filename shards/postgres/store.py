"""The store of one cup: claiming partitions, loading accounts, the fenced batch commit.

The fenced batch commit (docs/design.md §3) is ONE SQL statement, so one round trip and one
implicit transaction, for the batches of any number of partitions of the cup (a worker
commits what all its lanes of a cup hold at once; see engine.worker.lane). Each row of every
table names its partition, and each partition's fence holds or fails on its own:

1. ``fence``: for each batch, move ``next_offset`` (the commands topic) and
   ``internal_offset`` (the internal topic) from the values this worker last read or
   wrote to the batch's ends, only while ``epoch`` is still the one this worker claimed
   and none of the batch's new command ids (nor the ids of the legs the ledger refused)
   is recorded yet (a compare-and-set on epoch and both offsets);
2. every other part writes only the rows of partitions whose fence held: upsert the
   changed accounts, append the journal rows, record the idempotency keys with their
   results, append the outbox rows (results, dead letters, saga legs), trim outbox rows
   the relay has published, replace PENDING transfer results by their final ones,
   open or close transfers in flight, upsert the credit book's changed entities, and
   append the clearing entries (movements with partner banks);
3. the statement returns the partitions whose fence held. For each other one, a second
   query tells why: another worker owns the partition now (fenced), or a command id in
   its batch was applied before (duplicates: re-decide that batch with those results).

Lookups by command id are ``LATERAL ... LIMIT 1``: one primary-key probe per id. On a
young cup the statistics lag the table's growth, and a plain ``= ANY`` or join was
planned as a scan of the partition's whole history, so each commit got slower as the
partition grew (docs/performance.md). A probe's cost does not depend on the
statistics. The pools also pin generic plans (``plan_cache_mode``), so
Postgres does not plan this statement again at every execution.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Final, cast

import asyncpg
import msgspec

from engine.core.book import (
    Account,
    AccountKey,
    AccountStatus,
    CreditKind,
    CreditRow,
    InFlight,
    Known,
)
from engine.core.errors import invariant
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
from shards.postgres.journal_periods import PostgresJournalPeriods

_COMMIT: Final = """
WITH batch AS (
    SELECT * FROM unnest($1::text::integer[], $2::text::bigint[], $3::text::bigint[],
                         $4::text::bigint[], $5::text::bigint[], $50::text::bigint[],
                         $51::text::bigint[], $52::text::bigint[], $73::text::bigint[])
                  AS b (partition, epoch, expected_offset, next_offset, trim_below,
                        expected_internal, next_internal, trim_from, horizon)
), seen AS (
    SELECT DISTINCT n.partition
    FROM (SELECT * FROM unnest($6::text::integer[], $7::text::text[])
          UNION ALL
          SELECT * FROM unnest($48::text::integer[], $49::text::text[]))
         AS n (partition, command_id)
    CROSS JOIN LATERAL (SELECT 1 FROM command_results AS c
                        WHERE c.partition = n.partition AND c.command_id = n.command_id
                        LIMIT 1) AS found
), fence AS (
    UPDATE partition_state AS s
    SET next_offset = b.next_offset, internal_offset = b.next_internal, updated_at = now(),
        expired_before_ms = greatest(s.expired_before_ms, b.horizon)
    FROM batch AS b
    WHERE s.partition = b.partition AND s.epoch = b.epoch
      AND s.next_offset = b.expected_offset AND s.internal_offset = b.expected_internal
      AND b.partition NOT IN (SELECT partition FROM seen)
    RETURNING s.partition
), upserted AS (
    INSERT INTO accounts (partition, customer_id, account_no, currency, balance,
                          credit_limit, status)
    SELECT a.* FROM unnest($11::text::integer[], $12::text::bigint[], $13::text::bigint[],
                           $14::text::text[], $15::text::bigint[], $16::text::bigint[],
                           $17::text::smallint[])
                    AS a (partition, customer_id, account_no, currency, balance,
                          credit_limit, status)
    WHERE a.partition IN (SELECT partition FROM fence)
    ON CONFLICT (partition, customer_id, account_no)
    DO UPDATE SET balance = EXCLUDED.balance, status = EXCLUDED.status,
                  credit_limit = EXCLUDED.credit_limit
), journaled AS (
    INSERT INTO journal (partition, src_offset, command_id, customer_id, account_no,
                         currency, amount)
    SELECT j.* FROM unnest($18::text::integer[], $19::text::bigint[], $20::text::text[],
                           $21::text::bigint[], $22::text::bigint[], $23::text::text[],
                           $24::text::bigint[])
                    AS j (partition, src_offset, command_id, customer_id, account_no,
                          currency, amount)
    WHERE j.partition IN (SELECT partition FROM fence)
), recorded AS (
    INSERT INTO command_results (partition, command_id, fingerprint, src_offset, result,
                                 issued_at_ms)
    SELECT r.* FROM unnest($6::text::integer[], $7::text::text[], $8::text::bigint[],
                           $9::text::bigint[], $10::bytea[], $72::text::bigint[])
                    AS r (partition, command_id, fingerprint, src_offset, result, issued_at_ms)
    WHERE r.partition IN (SELECT partition FROM fence)
), queued AS (
    INSERT INTO outbox (partition, src_offset, seq, kind, key, value, target_partition)
    SELECT o.* FROM unnest($25::text::integer[], $26::text::bigint[], $27::text::integer[],
                           $28::text::smallint[], $29::bytea[], $30::bytea[],
                           $31::text::integer[])
                    AS o (partition, src_offset, seq, kind, key, value, target_partition)
    WHERE o.partition IN (SELECT partition FROM fence)
), trimmed AS (
    DELETE FROM outbox AS o USING batch AS b
    WHERE o.partition = b.partition
      AND o.src_offset >= b.trim_from AND o.src_offset < b.trim_below
      AND b.partition IN (SELECT partition FROM fence)
), finalized AS (
    UPDATE command_results AS c SET result = f.result
    FROM (SELECT found.row_id, u.result
          FROM unnest($32::text::integer[], $33::text::text[], $34::bytea[])
               AS u (partition, command_id, result)
          CROSS JOIN LATERAL (SELECT ctid AS row_id FROM command_results
                              WHERE partition = u.partition AND command_id = u.command_id
                              LIMIT 1) AS found
          WHERE u.partition IN (SELECT partition FROM fence)) AS f
    WHERE c.ctid = f.row_id
), opened AS (
    INSERT INTO transfers_in_flight (partition, transfer_id, from_customer, from_account,
                                     to_customer, to_account, amount, currency, src_offset,
                                     answer_json, forwarded_from)
    SELECT t.* FROM unnest($35::text::integer[], $36::text::text[], $37::text::bigint[],
                           $38::text::bigint[], $39::text::bigint[], $40::text::bigint[],
                           $41::text::bigint[], $42::text::text[], $43::text::bigint[],
                           $44::text::boolean[], $45::text::integer[])
                    AS t (partition, transfer_id, from_customer, from_account, to_customer,
                          to_account, amount, currency, src_offset, answer_json,
                          forwarded_from)
    WHERE t.partition IN (SELECT partition FROM fence)
), settled AS (
    DELETE FROM transfers_in_flight AS t
    USING unnest($46::text::integer[], $47::text::text[]) AS s (partition, transfer_id)
    WHERE t.partition = s.partition AND t.transfer_id = s.transfer_id
      AND s.partition IN (SELECT partition FROM fence)
), credited AS (
    INSERT INTO credit_book (partition, kind, entity_key, customer_id, currency, amount,
                             is_open, body)
    SELECT k.* FROM unnest($53::text::integer[], $54::text::smallint[], $55::text::text[],
                           $56::text::bigint[], $57::text::text[], $58::text::bigint[],
                           $59::text::boolean[], $60::bytea[])
                    AS k (partition, kind, entity_key, customer_id, currency, amount,
                          is_open, body)
    WHERE k.partition IN (SELECT partition FROM fence)
    ON CONFLICT (partition, kind, entity_key)
    DO UPDATE SET customer_id = EXCLUDED.customer_id, currency = EXCLUDED.currency,
                  amount = EXCLUDED.amount, is_open = EXCLUDED.is_open, body = EXCLUDED.body
), cleared AS (
    INSERT INTO clearing_entries (partition, src_offset, entry, business_day, partner,
                                  currency, loan_id, customer_id, kind, amount, command_id)
    SELECT e.* FROM unnest($61::text::integer[], $62::text::bigint[], $63::text::integer[],
                           $64::text::integer[], $65::text::integer[], $66::text::text[],
                           $67::text::text[], $68::text::bigint[], $69::text::smallint[],
                           $70::text::bigint[], $71::text::text[])
                    AS e (partition, src_offset, entry, business_day, partner, currency,
                          loan_id, customer_id, kind, amount, command_id)
    WHERE e.partition IN (SELECT partition FROM fence)
)
SELECT coalesce(array_agg(partition), '{}') FROM fence
"""

_COMMIT_PARAMETERS: Final = 73
"""$1 to $73 of ``_COMMIT``. Checked before the statement is sent: asyncpg reports a
count that does not match as an InterfaceError, which would pass as a cup fault."""

_ACCOUNT_COLUMNS: Final = "customer_id, account_no, currency, balance, credit_limit, status"


RETRIABLE: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,
    asyncpg.InternalClientError,
)
"""Faults of a cup that pass (restarts, shutdowns, refused or lost connections, a database
closed to connections, a partition frozen by a move): raised as CupUnavailableError. Any other
database error is a bug: InvariantError, which crashes the worker.

InternalClientError ("cannot switch to state 12; another operation (2) is in progress")
is a pooled connection that a dying server left in the middle of its error handling
(the chaos suite met it during an immediate shutdown): ``renew_connections`` replaces
such connections."""


def _passing(error: BaseException) -> bool:
    return isinstance(error, RETRIABLE)


_cup_faults = cup_faults(_passing, (asyncpg.PostgresError,))


class PostgresCupStore:
    """The SQL of one Postgres cup (engine.core.store.CupStore). Every method is one round
    trip, and raises CupUnavailableError for a passing fault."""

    def __init__(self, cup_id: int, pool: asyncpg.Pool):
        self.cup_id = cup_id
        self.pool = pool

    async def close(self) -> None:
        await self.pool.close()

    async def renew_connections(self) -> None:
        """After a fault of this cup: replace every pooled connection at its next use (one
        the server left mid-protocol would fail every statement given to it)."""
        await self.pool.expire_connections()

    @_cup_faults
    async def make_journal_partitions(self, now_s: int, period_seconds: int) -> list[int]:
        async with self.pool.acquire() as connection:
            periods = PostgresJournalPeriods(connection)
            return await periods.make_partitions(now_s, period_seconds)

    @_cup_faults
    async def claim(self, partition: int, owner: str) -> Claim:
        """Become the partition's writer: bump its epoch, fencing every earlier owner."""
        row = await self.pool.fetchrow(
            "INSERT INTO partition_state (partition, epoch, owner) VALUES ($1, 1, $2)"
            " ON CONFLICT (partition) DO UPDATE"
            " SET epoch = partition_state.epoch + 1, owner = $2, updated_at = now()"
            " RETURNING epoch, next_offset, internal_offset, expired_before_ms",
            partition,
            owner,
        )
        return Claim(
            row["epoch"], row["next_offset"], row["internal_offset"], row["expired_before_ms"]
        )

    @_cup_faults
    async def state(self, partition: int) -> Claim | None:
        return (await self.states([partition])).get(partition)

    @_cup_faults
    async def states(self, partitions: Sequence[int]) -> dict[int, Claim]:
        """The claim of each partition that has a state row here."""
        rows = await self.pool.fetch(
            "SELECT partition, epoch, next_offset, internal_offset, expired_before_ms"
            " FROM partition_state WHERE partition = ANY($1::integer[])",
            list(partitions),
        )
        return {
            r["partition"]: Claim(
                r["epoch"], r["next_offset"], r["internal_offset"], r["expired_before_ms"]
            )
            for r in rows
        }

    @_cup_faults
    async def next_offsets(self) -> dict[int, int]:
        """The next offset of the commands topic of every partition this cup holds state
        for."""
        rows = await self.pool.fetch("SELECT partition, next_offset FROM partition_state")
        return {r["partition"]: r["next_offset"] for r in rows}

    @_cup_faults
    async def load_partition(self, partition: int, limit: int) -> list[Account]:
        """Up to ``limit`` accounts of the partition, system accounts first."""
        rows = await self.pool.fetch(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE partition = $1"
            " ORDER BY customer_id LIMIT $2",
            partition,
            limit,
        )
        return [_account(row) for row in rows]

    @_cup_faults
    async def load_accounts(self, partition: int, keys: Sequence[AccountKey]) -> list[Account]:
        rows = await self.pool.fetch(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE partition = $1"
            " AND (customer_id, account_no) IN"
            " (SELECT * FROM unnest($2::bigint[], $3::bigint[]))",
            partition,
            [key[0] for key in keys],
            [key[1] for key in keys],
        )
        return [_account(row) for row in rows]

    @_cup_faults
    async def load_known(self, partition: int, command_ids: Sequence[str]) -> dict[str, Known]:
        rows = await self.pool.fetch(
            "SELECT command_id, fingerprint, result FROM command_results"
            " WHERE partition = $1 AND command_id = ANY($2::text[])",
            partition,
            list(command_ids),
        )
        return {
            row["command_id"]: Known(row["fingerprint"], result_decoder.decode(row["result"]))
            for row in rows
        }

    @_cup_faults
    async def commit(self, batch: CommitBatch) -> CommitStatus:
        """The fenced commit of one partition batch."""
        return (await self.commit_many([batch]))[batch.partition]

    @_cup_faults
    async def commit_many(self, batches: Sequence[CommitBatch]) -> dict[int, CommitStatus]:
        """The fenced commit of batches of distinct partitions in one statement (see the
        module docstring); each partition's fence holds or fails on its own."""
        committed = set(await self.pool.fetchval(_COMMIT, *_commit_arguments(batches)))
        statuses = {
            b.partition: CommitStatus.COMMITTED for b in batches if b.partition in committed
        }
        refused = [b for b in batches if b.partition not in committed]
        if refused:
            states = await self.states([b.partition for b in refused])
            for batch in refused:
                expected = (batch.epoch, batch.expected_offset, batch.expected_internal)
                state = states.get(batch.partition)
                held = state is not None and state.fence == expected
                statuses[batch.partition] = CommitStatus.DUPLICATES if held else CommitStatus.FENCED
        return statuses

    @_cup_faults
    async def unsent(self, partition: int) -> list[OutboxRow]:
        rows = await self.pool.fetch(
            "SELECT src_offset, seq, kind, key, value, target_partition FROM outbox"
            " WHERE partition = $1 ORDER BY src_offset, seq",
            partition,
        )
        return [
            OutboxRow(
                r["src_offset"],
                r["seq"],
                OutboxKind(r["kind"]),
                r["key"],
                r["value"],
                r["target_partition"],
            )
            for r in rows
        ]

    @_cup_faults
    async def load_in_flight(self, partition: int) -> list[InFlight]:
        """Every transfer in flight out of ``partition`` (at most
        IN_FLIGHT_PER_PARTITION_MAX: the ledger opens no more)."""
        rows = await self.pool.fetch(
            "SELECT transfer_id, from_customer, from_account, to_customer, to_account,"
            " amount, currency, src_offset, answer_json, forwarded_from"
            " FROM transfers_in_flight WHERE partition = $1",
            partition,
        )
        return [
            InFlight(
                r["transfer_id"],
                r["from_customer"],
                r["from_account"],
                r["to_customer"],
                r["to_account"],
                r["amount"],
                r["currency"],
                r["src_offset"],
                r["answer_json"],
                r["forwarded_from"],
            )
            for r in rows
        ]

    @_cup_faults
    async def load_credit(self, partition: int) -> list[CreditRow]:
        """The partition's open credit rows: lines, open loans, open holds, its calendar."""
        rows = await self.pool.fetch(
            "SELECT kind, entity_key, customer_id, currency, amount, is_open, body"
            " FROM credit_book WHERE partition = $1 AND is_open",
            partition,
        )
        return [
            CreditRow(
                CreditKind(r["kind"]),
                r["entity_key"],
                r["customer_id"],
                r["currency"],
                r["amount"],
                r["is_open"],
                r["body"],
            )
            for r in rows
        ]

    @_cup_faults
    async def in_flight(
        self, partitions: Sequence[int], stuck_after_seconds: float
    ) -> list[InFlightFigures]:
        """Transfers debited in ``partitions`` and not settled, by currency: how many, the
        money, and how many for longer than ``stuck_after_seconds``."""
        rows = await self.pool.fetch(
            "SELECT currency, count(*) AS transfers, coalesce(sum(amount), 0) AS money,"
            " count(*) FILTER (WHERE opened_at < now() - make_interval(secs => $2)) AS stuck"
            " FROM transfers_in_flight WHERE partition = ANY($1::integer[]) GROUP BY currency",
            list(partitions),
            stuck_after_seconds,
        )
        return [
            InFlightFigures(r["currency"], r["transfers"], int(r["money"]), r["stuck"])
            for r in rows
        ]

    @_cup_faults
    async def trim_outbox(
        self, partition: int, epoch: int, from_offset: int, below_offset: int
    ) -> None:
        """Delete published outbox rows, while this worker still owns the partition."""
        await self.pool.execute(
            "DELETE FROM outbox WHERE partition = $1 AND src_offset >= $3 AND src_offset < $4"
            " AND EXISTS (SELECT 1 FROM partition_state WHERE partition = $1 AND epoch = $2)",
            partition,
            epoch,
            from_offset,
            below_offset,
        )

    @_cup_faults
    async def advance_horizon(self, partition: int, epoch: int, horizon_ms: int) -> None:
        await self.pool.execute(
            "UPDATE partition_state SET expired_before_ms = $3"
            " WHERE partition = $1 AND epoch = $2 AND expired_before_ms < $3",
            partition,
            epoch,
            horizon_ms,
        )

    @_cup_faults
    async def prune_expired(self, partition: int, rows_max: int) -> int:
        """See engine.core.store.CupStore.prune_expired: one probe of the issue-time index,
        then a delete by row address."""
        status = await self.pool.execute(_PRUNE, partition, rows_max)
        return int(status.rsplit(" ", 1)[1])


_PRUNE: Final = """
DELETE FROM command_results WHERE ctid = ANY(ARRAY(
    SELECT r.ctid FROM partition_state AS s
    JOIN command_results AS r
      ON r.partition = s.partition AND r.issued_at_ms < s.expired_before_ms
    WHERE s.partition = $1
      AND NOT EXISTS (SELECT 1 FROM transfers_in_flight AS t
                      WHERE t.partition = r.partition AND t.transfer_id = r.command_id)
    LIMIT $2))
"""


_ints_json: Final = msgspec.json.Encoder()
"""Writes an integer list as JSON, ``[1,-2]``: the array literal between its brackets."""


def _account(row: asyncpg.Record) -> Account:
    return Account(
        row["customer_id"],
        row["account_no"],
        row["currency"],
        row["balance"],
        row["credit_limit"],
        AccountStatus(row["status"]),
    )


def _commit_arguments(batches: Sequence[CommitBatch]) -> list[object]:
    """The statement's parameters: $1 to $5, $50 to $52 and $73 one element per batch (the
    positions in both topics, the trim's bounds, the idempotency horizon); every other one
    a column of ``_rows``, the concatenation of every batch's rows (each row naming its
    partition)."""
    invariant(len({b.partition for b in batches}) == len(batches), "one batch per partition")
    arguments: dict[int, object] = {
        1: ints_literal([b.partition for b in batches]),
        2: ints_literal([b.epoch for b in batches]),
        3: ints_literal([b.expected_offset for b in batches]),
        4: ints_literal([b.next_offset for b in batches]),
        5: ints_literal([b.trim_below_offset for b in batches]),
        50: ints_literal([b.expected_internal for b in batches]),
        51: ints_literal([b.next_internal for b in batches]),
        52: ints_literal([b.trim_from_offset for b in batches]),
        73: ints_literal([b.outcome.horizon_ms for b in batches]),
    }
    by_batch = [_rows(batch) for batch in batches]
    for position, (number, kind) in enumerate(zip(_ROW_PARAMETERS, _ROW_KINDS, strict=True)):
        column = list(chain.from_iterable(rows[position] for rows in by_batch))
        if kind is int or kind is bool:  # msgspec writes booleans as true/false: both parse
            arguments[number] = ints_literal(cast("list[int]", column))
        elif kind is str:
            arguments[number] = texts_literal(cast("list[str]", column))
        else:
            arguments[number] = column
    numbers = range(1, _COMMIT_PARAMETERS + 1)
    invariant(sorted(arguments) == list(numbers), "one argument per parameter of _COMMIT")
    return [arguments[number] for number in numbers]


def _rows(batch: CommitBatch) -> tuple[Sequence[object], ...]:
    """One batch's columns for $6 to $49 and $53 to $72, in the statement's order."""
    outcome = batch.outcome
    partition = batch.partition
    applied = outcome.applied
    accounts = list(outcome.changed.values())
    journal = outcome.journal
    outbox = batch.outbox
    finals = outcome.finals
    opened = outcome.opened
    forged_ids = [f.leg_id for f in outcome.forged if f.leg_id]
    credit = list(outcome.credit.values())
    clearing = outcome.clearing
    return (
        [partition] * len(applied),
        [a.command_id for a in applied],
        [a.fingerprint for a in applied],
        [a.seq for a in applied],
        batch.applied_results,
        [partition] * len(accounts),
        [a.customer for a in accounts],
        [a.number for a in accounts],
        [a.currency for a in accounts],
        [a.balance for a in accounts],
        [a.credit_limit for a in accounts],
        [a.status for a in accounts],
        [partition] * len(journal),
        [j.seq for j in journal],
        [j.command_id for j in journal],
        [j.customer for j in journal],
        [j.account for j in journal],
        [j.currency for j in journal],
        [j.amount for j in journal],
        [partition] * len(outbox),
        [o.src_offset for o in outbox],
        [o.seq for o in outbox],
        [o.kind for o in outbox],
        [o.key for o in outbox],
        [o.value for o in outbox],
        [o.target_partition for o in outbox],
        [partition] * len(finals),
        [f.command_id for f in finals],
        batch.final_results,
        [partition] * len(opened),
        [t.transfer_id for t in opened],
        [t.customer for t in opened],
        [t.account for t in opened],
        [t.to_customer for t in opened],
        [t.to_account for t in opened],
        [t.amount for t in opened],
        [t.currency for t in opened],
        [t.offset for t in opened],
        [t.json for t in opened],
        [t.forwarded_from for t in opened],
        [partition] * len(outcome.settled),
        outcome.settled,
        [partition] * len(forged_ids),
        forged_ids,
        [partition] * len(credit),
        [c.kind for c in credit],
        [c.key for c in credit],
        [c.customer for c in credit],
        [c.currency for c in credit],
        [c.amount for c in credit],
        [c.open for c in credit],
        [c.body for c in credit],
        [partition] * len(clearing),
        [e.seq for e in clearing],
        [e.entry for e in clearing],
        [e.day for e in clearing],
        [e.partner for e in clearing],
        [e.currency for e in clearing],
        [e.loan for e in clearing],
        [e.customer for e in clearing],
        [e.kind for e in clearing],
        [e.amount for e in clearing],
        [e.command_id for e in clearing],
        [a.issued_at_ms for a in applied],
    )


_ROW_KINDS: Final = (
    *(int, str, int, int, bytes),
    *(int, int, int, str, int, int, int),
    *(int, int, str, int, int, str, int),
    *(int, int, int, int, bytes, bytes, int),
    *(int, str, bytes),
    *(int, str, int, int, int, int, int, str, int, bool, int),
    *(int, str),
    *(int, str),
    *(int, int, str, int, str, int, bool, bytes),
    *(int, int, int, int, int, str, str, int, int, int, str),
    int,
)
"""The element type of each column of ``_rows``: ints, booleans and texts go as array
literals, bytes as lists."""

_ROW_PARAMETERS: Final = (*range(6, 50), *range(53, _COMMIT_PARAMETERS))
"""The parameter of ``_COMMIT`` that takes each column of ``_rows``."""


def ints_literal(values: Sequence[int]) -> str:
    """An integer array as Postgres's text literal (``{1,-2}``).

    asyncpg encodes a list parameter element by element, with two ``isinstance`` checks
    against collections.abc per element, for the commit's ~30 values per command;
    msgspec writes the digits in C, and Postgres parses the literal in C
    (docs/performance.md has the costs). Bytes columns stay lists (no escaping to do in
    Python).
    """
    return "{" + _ints_json.encode(values)[1:-1].decode() + "}"


def texts_literal(values: list[str]) -> str:
    """A text array as Postgres's literal: every element quoted (so never NULL), with
    backslashes and double quotes escaped.

    The commit's texts are command ids and currency codes, which hold neither: one scan
    of them all decides, and two joins in C write the literal."""
    if not values:
        return "{}"
    everything = "".join(values)
    if "\\" in everything or '"' in everything:
        return "{" + ",".join(map(_quoted, values)) + "}"
    return '{"' + '","'.join(values) + '"}'


def _quoted(value: str) -> str:
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + value + '"'
