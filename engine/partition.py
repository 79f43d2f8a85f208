"""One owned partition: its cup, its claim, its cached account book, its batches.

The worker loop hands each partition its slice of a fetch; this module turns the slice
into one fenced commit: decode, load what the cache lacks, decide, commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final

import asyncpg

from engine.book import AccountKey, Incoming, Known, Outcome
from engine.config import WorkerConfig
from engine.errors import FencedError, InfrastructureError, invariant
from engine.ledger import PartitionLedger
from engine.messages import (
    DeadLetter,
    Invalid,
    Result,
    Transfer,
    Undecodable,
    decode_command,
    encode,
    fingerprint,
)
from engine.metrics import WorkerMetrics
from engine.routing import customer_key
from shards.store import Claim, CommitBatch, CommitStatus, CupStore, OutboxKind, OutboxRow

log = logging.getLogger(__name__)

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
closed to connections): retry with back-off. Any other database error is a bug: crash.

InternalClientError ("cannot switch to state 12; another operation (2) is in progress")
is a pooled connection that a dying server left in the middle of its error handling; the
chaos suite met it during an immediate Postgres shutdown. After any such fault the cup's
pool replaces its connections (``CupStore.renew_connections``)."""


@dataclass(slots=True)
class Decoded:
    incoming: list[Incoming] = field(default_factory=list)
    dead: list[OutboxRow] = field(default_factory=list)
    dead_reasons: list[str] = field(default_factory=list)
    last_offset: int = -1


def decode_records(records: Sequence[Any], message_bytes_max: int) -> Decoded:
    """Decode a partition's records; what cannot be answered becomes a DLQ row."""
    decoded = Decoded()
    for record in records:
        decoded.last_offset = record.offset
        value: bytes = record.value or b""
        if len(value) > message_bytes_max:
            parsed: Any = Undecodable(
                "message_too_large", f"{len(value)} > {message_bytes_max} bytes"
            )
            value = value[:message_bytes_max]
        else:
            parsed = decode_command(value)
        if isinstance(parsed, Undecodable):
            decoded.dead_reasons.append(parsed.reason)
            letter = DeadLetter(
                parsed.reason,
                parsed.detail,
                record.topic,
                record.partition,
                record.offset,
                record.key,
                value,
            )
            decoded.dead.append(
                OutboxRow(
                    record.offset,
                    0,
                    OutboxKind.DEAD_LETTER,
                    record.key,
                    encode(letter),
                    record.partition,
                )
            )
            continue
        digest = 0 if isinstance(parsed, Invalid) else fingerprint(parsed)
        decoded.incoming.append(Incoming(record.offset, record.timestamp, parsed, digest))
    return decoded


class PartitionState:
    """The worker's hold on one partition, valid while its epoch is the cup's."""

    def __init__(
        self,
        partition: int,
        partitions: int,
        store: CupStore,
        claim: Claim,
        config: WorkerConfig,
        metrics: WorkerMetrics,
    ):
        self.metrics = metrics
        self.partition = partition
        self.store = store
        self.epoch = claim.epoch
        self.position = claim.next_offset
        self.config = config
        self.accounts_max = max(1_000, config.accounts_cached_max // partitions)
        self.complete = False
        self.trimmed_below = 0
        self.position_at_last_pass = self.position
        """The position at the worker's last housekeeping pass (an idle partition's
        outbox is trimmed there)."""
        self.ledger = PartitionLedger(partition, partitions, {})

    async def load(self) -> None:
        """Bulk-load the partition's accounts; if they all fit, the book is complete."""
        accounts = await self.store.load_partition(self.partition, self.accounts_max)
        self.ledger.accounts = {a.key: a for a in accounts}
        self.complete = len(accounts) < self.accounts_max

    async def _ensure_accounts(self, incoming: Sequence[Incoming]) -> None:
        if self.complete:
            return
        book = self.ledger.accounts
        if len(book) > self.accounts_max:
            await self.load()
        missing = {key for i in incoming for key in _keys(i) if key not in book}
        if missing:
            for account in await self.store.load_accounts(self.partition, sorted(missing)):
                book[account.key] = account

    async def decide(
        self,
        decoded: Decoded,
        now_us: int,
        trim_below: int,
        known: dict[str, Known] | None = None,
    ) -> CommitBatch:
        """Decide one batch against the book (loading what it lacks): what to commit.

        Deciding changes the cached book; a batch that does not commit leaves it wrong,
        so the partition is then either lost or reloaded (``reload``)."""
        invariant(decoded.last_offset >= self.position, "batches move forward")
        await self._ensure_accounts(decoded.incoming)
        outcome = self.ledger.decide_batch(decoded.incoming, known or {}, now_us)
        return build_commit(
            self.partition,
            self.epoch,
            self.position,
            decoded.last_offset + 1,
            outcome,
            decoded.dead,
            trim_below,
        )

    async def reload(self, decoded: Decoded) -> dict[str, Known]:
        """After a commit refused for duplicates: the book again, and the results of the
        batch's command ids that were applied before."""
        await self.load()
        ids = [i.command.id for i in decoded.incoming]
        return await self.store.load_known(self.partition, ids)

    async def process(
        self,
        decoded: Decoded,
        now_us: int,
        trim_below: int,
        known: dict[str, Known] | None = None,
    ) -> CommitBatch:
        """Decide and commit one batch alone; returns what was committed (with its outbox).

        ``known``: the results ``reload`` found, when a commit was refused for duplicates."""
        for _attempt in range(2):
            batch = await self.decide(decoded, now_us, trim_below, known)
            statuses = await commit_batches(self.store, [batch], self.config, self.metrics)
            status = statuses[self.partition]
            if status is CommitStatus.COMMITTED:
                self.position = batch.next_offset
                return batch
            if status is CommitStatus.FENCED:
                raise FencedError(f"partition {self.partition} was claimed by another worker")
            known = await self.reload(decoded)
        raise InfrastructureError(f"partition {self.partition}: duplicates persisted after reload")


async def commit_batches(
    store: CupStore,
    batches: Sequence[CommitBatch],
    config: WorkerConfig,
    metrics: WorkerMetrics,
) -> dict[int, CommitStatus]:
    """Commit batches of one cup in one statement, retrying infrastructure faults.

    When a reply is lost the outcome is read back per partition: moved to the batch's
    end (committed), still at its start (not applied: tried again) or another epoch
    (fenced). InfrastructureError once ``commit_retry_max`` attempts failed."""
    statuses: dict[int, CommitStatus] = {}
    pending = list(batches)
    delay = 0.05
    cup = str(store.cup_id)
    for attempt in range(1, config.commit_retry_max + 1):
        started = time.perf_counter()
        try:
            statuses.update(await store.commit_many(pending))
            metrics.commit_duration.labels(cup).observe(time.perf_counter() - started)
            metrics.set_cup_up(store.cup_id, True)
            return statuses
        except RETRIABLE as error:
            metrics.set_cup_up(store.cup_id, False)
            log.warning(
                "cup %d commit attempt %d failed: %s", store.cup_id, attempt, type(error).__name__
            )
            await store.renew_connections()
        await asyncio.sleep(delay)
        delay = min(delay * 2, config.retry_backoff_max_seconds)
        try:
            states = await store.states([b.partition for b in pending])
        except RETRIABLE:
            continue
        unclear = []
        for batch in pending:
            state = states.get(batch.partition)
            if state == Claim(batch.epoch, batch.next_offset):
                statuses[batch.partition] = CommitStatus.COMMITTED
            elif state != Claim(batch.epoch, batch.expected_offset):
                statuses[batch.partition] = CommitStatus.FENCED
            else:
                unclear.append(batch)
        if not unclear:
            return statuses
        pending = unclear
    partitions = sorted(b.partition for b in pending)
    raise InfrastructureError(f"partitions {partitions}: cup {store.cup_id} unreachable")


def build_commit(
    partition: int,
    epoch: int,
    expected_offset: int,
    next_offset: int,
    outcome: Outcome,
    dead: Sequence[OutboxRow],
    trim_below: int,
) -> CommitBatch:
    """Encode what a decided batch commits; each result is encoded once however often used."""
    encoded: dict[int, bytes] = {}

    def encoded_result(result: Result) -> bytes:
        value = encoded.get(id(result))
        if value is None:
            value = encoded[id(result)] = encode(result)
        return value

    rows: list[tuple[int, OutboxKind, bytes | None, bytes, int]] = [
        (d.src_offset, d.kind, d.key, d.value, d.target_partition) for d in dead
    ]
    for publish in outcome.published:
        key = customer_key(publish.customer)
        value = encoded_result(publish.result)
        rows.append((publish.offset, OutboxKind.RESULT, key, value, partition))
    for leg in outcome.legs:
        key = customer_key(leg.command.customer)
        value = encode(leg.command)
        rows.append((leg.offset, OutboxKind.LEG, key, value, leg.partition))
    return CommitBatch(
        partition=partition,
        epoch=epoch,
        expected_offset=expected_offset,
        next_offset=next_offset,
        outcome=outcome,
        applied_results=[encoded_result(a.result) for a in outcome.applied],
        final_results=[encoded_result(f.result) for f in outcome.finals],
        outbox=_numbered(rows),
        trim_below_offset=trim_below,
    )


def _numbered(rows: list[tuple[int, OutboxKind, bytes | None, bytes, int]]) -> list[OutboxRow]:
    """Order rows by source offset and number them within it (the outbox's key)."""
    rows.sort(key=itemgetter(0))
    numbered = []
    previous, seq = -1, 0
    for src_offset, kind, key, value, target in rows:
        seq = seq + 1 if src_offset == previous else 0
        previous = src_offset
        numbered.append(OutboxRow(src_offset, seq, kind, key, value, target))
    return numbered


def _keys(incoming: Incoming) -> list[AccountKey]:
    command = incoming.command
    if isinstance(command, Invalid):
        return []
    if isinstance(command, Transfer):
        return [(command.customer, command.account), (command.to_customer, command.to_account)]
    return [(command.customer, command.account)]


def now_us() -> int:
    return time.time_ns() // 1000
