"""The store of one cup: claiming partitions, loading accounts, the fenced batch commit.

The fenced batch commit (DESIGN.md §3) is ONE SQL statement, so one round trip and one
implicit transaction per partition batch:

1. ``fence``: move ``next_offset`` from the value this worker last read or wrote to the
   batch's end, only while ``epoch`` is still the one this worker claimed and none of
   the batch's new command ids is recorded yet (a compare-and-set);
2. every other part runs only ``WHERE EXISTS (SELECT 1 FROM fence)``: upsert the changed
   accounts, append the journal rows, record the idempotency keys with their results,
   append the outbox rows (results, dead letters, saga legs), trim outbox rows the relay
   has published, replace PENDING transfer results by their final ones, and open or
   close transfers in flight;
3. the statement returns whether the fence held. When it did not, a second query tells
   why: another worker owns the partition now (fenced), or a command id in the batch was
   applied before (duplicates: re-decide the batch with those results).

Lookups by command id are ``LATERAL ... LIMIT 1``: one primary-key probe per id. On a
young cup the statistics lag the table's growth, and a plain ``= ANY`` or join was
planned as a scan of the partition's whole history, so each commit got slower as the
partition grew (1.9 ms of a 2.5 ms statement at 3,000 rows). A probe's cost does not
depend on the statistics. The pools also pin generic plans (``plan_cache_mode``), so
Postgres does not plan this statement again at every execution.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

import asyncpg

from engine.book import Account, AccountKey, AccountStatus, Known, Outcome
from engine.messages import result_decoder


class OutboxKind(enum.IntEnum):
    RESULT = 1
    DEAD_LETTER = 2
    LEG = 3


class OutboxRow(NamedTuple):
    """A message to publish after the commit: to which topic kind and partition."""

    src_offset: int
    seq: int
    kind: OutboxKind
    key: bytes | None
    value: bytes
    target_partition: int


class Claim(NamedTuple):
    epoch: int
    next_offset: int


class CommitStatus(enum.Enum):
    COMMITTED = "committed"
    FENCED = "fenced"
    DUPLICATES = "duplicates"


@dataclass(frozen=True, slots=True)
class CommitBatch:
    """Everything one partition batch writes, already decided."""

    partition: int
    epoch: int
    expected_offset: int
    next_offset: int
    outcome: Outcome
    applied_results: Sequence[bytes]
    final_results: Sequence[bytes]
    outbox: Sequence[OutboxRow]
    trim_below_offset: int


_COMMIT: Final = """
WITH fence AS (
    UPDATE partition_state SET next_offset = $4, updated_at = now()
    WHERE partition = $1 AND epoch = $2 AND next_offset = $3
      AND NOT EXISTS (SELECT 1 FROM unnest($5::text::text[]) AS n (command_id)
                      CROSS JOIN LATERAL (SELECT 1 FROM command_results AS c
                                          WHERE c.partition = $1
                                            AND c.command_id = n.command_id
                                          LIMIT 1) AS seen)
    RETURNING partition
), upserted AS (
    INSERT INTO accounts (partition, customer_id, account_no, currency, balance,
                          credit_limit, status)
    SELECT $1, a.* FROM unnest($6::text::bigint[], $7::text::bigint[], $8::text::text[],
                               $9::text::bigint[], $10::text::bigint[],
                               $11::text::smallint[]) AS a
    WHERE EXISTS (SELECT 1 FROM fence)
    ON CONFLICT (partition, customer_id, account_no)
    DO UPDATE SET balance = EXCLUDED.balance, status = EXCLUDED.status
), journaled AS (
    INSERT INTO journal (partition, src_offset, command_id, customer_id, account_no,
                         currency, amount)
    SELECT $1, j.* FROM unnest($12::text::bigint[], $13::text::text[], $14::text::bigint[],
                               $15::text::bigint[], $16::text::text[],
                               $17::text::bigint[]) AS j
    WHERE EXISTS (SELECT 1 FROM fence)
), recorded AS (
    INSERT INTO command_results (partition, command_id, fingerprint, src_offset, result)
    SELECT $1, r.* FROM unnest($5::text::text[], $18::text::bigint[], $19::text::bigint[],
                               $20::bytea[]) AS r
    WHERE EXISTS (SELECT 1 FROM fence)
), queued AS (
    INSERT INTO outbox (partition, src_offset, seq, kind, key, value, target_partition)
    SELECT $1, o.* FROM unnest($21::text::bigint[], $22::text::integer[],
                               $23::text::smallint[], $24::bytea[], $25::bytea[],
                               $27::text::integer[]) AS o
    WHERE EXISTS (SELECT 1 FROM fence)
), trimmed AS (
    DELETE FROM outbox
    WHERE partition = $1 AND src_offset < $26 AND EXISTS (SELECT 1 FROM fence)
), finalized AS (
    UPDATE command_results AS c SET result = f.result
    FROM (SELECT found.row_id, u.result
          FROM unnest($28::text::text[], $29::bytea[]) AS u (command_id, result)
          CROSS JOIN LATERAL (SELECT ctid AS row_id FROM command_results
                              WHERE partition = $1 AND command_id = u.command_id
                              LIMIT 1) AS found) AS f
    WHERE c.ctid = f.row_id AND EXISTS (SELECT 1 FROM fence)
), opened AS (
    INSERT INTO transfers_in_flight (partition, transfer_id, to_customer, to_account,
                                     amount, currency, src_offset)
    SELECT $1, t.* FROM unnest($30::text::text[], $31::text::bigint[], $32::text::bigint[],
                               $33::text::bigint[], $34::text::text[],
                               $35::text::bigint[]) AS t
    WHERE EXISTS (SELECT 1 FROM fence)
), settled AS (
    DELETE FROM transfers_in_flight
    WHERE partition = $1 AND transfer_id = ANY($36::text::text[])
      AND EXISTS (SELECT 1 FROM fence)
)
SELECT count(*) FROM fence
"""

_ACCOUNT_COLUMNS: Final = "customer_id, account_no, currency, balance, credit_limit, status"


class CupStore:
    """The SQL of one Postgres cup. Every method is one round trip."""

    def __init__(self, cup_id: int, pool: asyncpg.Pool):
        self.cup_id = cup_id
        self.pool = pool

    async def renew_connections(self) -> None:
        """After a fault of this cup: replace every pooled connection at its next use (one
        the server left mid-protocol would fail every statement given to it)."""
        await self.pool.expire_connections()

    async def claim(self, partition: int, owner: str) -> Claim:
        """Become the partition's writer: bump its epoch, fencing every earlier owner."""
        row = await self.pool.fetchrow(
            "INSERT INTO partition_state (partition, epoch, owner) VALUES ($1, 1, $2)"
            " ON CONFLICT (partition) DO UPDATE"
            " SET epoch = partition_state.epoch + 1, owner = $2, updated_at = now()"
            " RETURNING epoch, next_offset",
            partition,
            owner,
        )
        return Claim(row["epoch"], row["next_offset"])

    async def state(self, partition: int) -> Claim | None:
        row = await self.pool.fetchrow(
            "SELECT epoch, next_offset FROM partition_state WHERE partition = $1", partition
        )
        return None if row is None else Claim(row["epoch"], row["next_offset"])

    async def next_offsets(self) -> dict[int, int]:
        """The next offset of every partition this cup holds state for."""
        rows = await self.pool.fetch("SELECT partition, next_offset FROM partition_state")
        return {r["partition"]: r["next_offset"] for r in rows}

    async def load_partition(self, partition: int, limit: int) -> list[Account]:
        """Up to ``limit`` accounts of the partition, system accounts first."""
        rows = await self.pool.fetch(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE partition = $1"
            " ORDER BY customer_id LIMIT $2",
            partition,
            limit,
        )
        return [_account(row) for row in rows]

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

    async def commit(self, batch: CommitBatch) -> CommitStatus:
        """The fenced batch commit (see the module docstring)."""
        committed = await self.pool.fetchval(_COMMIT, *_commit_arguments(batch))
        if committed == 1:
            return CommitStatus.COMMITTED
        state = await self.state(batch.partition)
        if state == Claim(batch.epoch, batch.expected_offset):
            return CommitStatus.DUPLICATES
        return CommitStatus.FENCED

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

    async def in_flight(self, partitions: Sequence[int]) -> list[tuple[str, int, int]]:
        """(currency, transfers, money) debited here and not settled, for ``partitions``."""
        rows = await self.pool.fetch(
            "SELECT currency, count(*) AS legs, coalesce(sum(amount), 0) AS money"
            " FROM transfers_in_flight WHERE partition = ANY($1::integer[]) GROUP BY currency",
            list(partitions),
        )
        return [(r["currency"], r["legs"], int(r["money"])) for r in rows]

    async def trim_outbox(self, partition: int, epoch: int, below_offset: int) -> None:
        """Delete published outbox rows, while this worker still owns the partition."""
        await self.pool.execute(
            "DELETE FROM outbox WHERE partition = $1 AND src_offset < $3"
            " AND EXISTS (SELECT 1 FROM partition_state WHERE partition = $1 AND epoch = $2)",
            partition,
            epoch,
            below_offset,
        )


def _account(row: asyncpg.Record) -> Account:
    return Account(
        row["customer_id"],
        row["account_no"],
        row["currency"],
        row["balance"],
        row["credit_limit"],
        AccountStatus(row["status"]),
    )


def _commit_arguments(batch: CommitBatch) -> list[object]:
    outcome = batch.outcome
    accounts = list(outcome.changed.values())
    journal = outcome.journal
    applied = outcome.applied
    outbox = batch.outbox
    opened = outcome.opened
    return [
        batch.partition,
        batch.epoch,
        batch.expected_offset,
        batch.next_offset,
        texts_literal([a.command_id for a in applied]),
        ints_literal([a.customer for a in accounts]),
        ints_literal([a.number for a in accounts]),
        texts_literal([a.currency for a in accounts]),
        ints_literal([a.balance for a in accounts]),
        ints_literal([a.credit_limit for a in accounts]),
        ints_literal([a.status for a in accounts]),
        ints_literal([j.offset for j in journal]),
        texts_literal([j.command_id for j in journal]),
        ints_literal([j.customer for j in journal]),
        ints_literal([j.account for j in journal]),
        texts_literal([j.currency for j in journal]),
        ints_literal([j.amount for j in journal]),
        ints_literal([a.fingerprint for a in applied]),
        ints_literal([a.result.offset for a in applied]),
        batch.applied_results,
        ints_literal([o.src_offset for o in outbox]),
        ints_literal([o.seq for o in outbox]),
        ints_literal([o.kind for o in outbox]),
        [o.key for o in outbox],
        [o.value for o in outbox],
        batch.trim_below_offset,
        ints_literal([o.target_partition for o in outbox]),
        texts_literal([f.command_id for f in outcome.finals]),
        batch.final_results,
        texts_literal([t.transfer_id for t in opened]),
        ints_literal([t.to_customer for t in opened]),
        ints_literal([t.to_account for t in opened]),
        ints_literal([t.amount for t in opened]),
        texts_literal([t.currency for t in opened]),
        ints_literal([t.offset for t in opened]),
        texts_literal(outcome.settled),
    ]


def ints_literal(values: Iterable[int]) -> str:
    """An integer array as Postgres's text literal (``{1,-2}``).

    asyncpg encodes a list parameter element by element, with two ``isinstance`` checks
    against collections.abc per element: py-spy put that at 22% of a worker's CPU for
    the commit's ~30 values per command. Joining a literal costs a tenth of it and
    Postgres parses it in C. Bytes columns stay lists (no escaping to do in Python).
    """
    return "{" + ",".join(map(str, values)) + "}"


def texts_literal(values: Iterable[str]) -> str:
    """A text array as Postgres's literal: every element quoted (so never NULL), with
    backslashes and double quotes escaped."""
    return "{" + ",".join(map(_quoted, values)) + "}"


def _quoted(value: str) -> str:
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + value + '"'
