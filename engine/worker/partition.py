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
from typing import Any, Final, NamedTuple

import asyncpg

from engine.core.authority import Authority
from engine.core.book import AccountKey, Incoming, Known, Outcome
from engine.core.config import ResultsEncoding, WorkerConfig
from engine.core.decoding import decode_command, forwarded_partition, looks_like_json, says_json
from engine.core.errors import FencedError, InfrastructureError, invariant
from engine.core.ledger import PartitionLedger
from engine.core.messages import (
    LEG_TYPES,
    PRIVILEGED_TYPES,
    Command,
    DeadLetter,
    Forwarded,
    Invalid,
    Reason,
    Result,
    Transfer,
    Undecodable,
    encode,
    encode_json,
    fingerprint,
    type_tag,
)
from engine.core.records import Claim, CommitBatch, CommitStatus, OutboxKind, OutboxRow
from engine.core.routing import customer_key, partition_of
from engine.worker.metrics import WorkerMetrics
from shards.store import CupStore

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
    forged_legs: list[str] = field(default_factory=list)
    """The type tag of every leg refused as forged when decoded (the ledger's refusals are
    in its Outcome.forged)."""
    forwards: list[OutboxRow] = field(default_factory=list)
    """Commands published to another partition than their customer's, to forward."""
    legs: dict[int, tuple[str, bytes | None, bytes]] = field(default_factory=dict)
    """(topic, key, value) of the legs by offset: a leg the ledger refuses goes to the DLQ
    as it came."""
    last_offset: int = -1


def decode_records(
    records: Sequence[Any], message_bytes_max: int, authority: Authority, partitions: int
) -> Decoded:
    """Decode a partition's records and check their proofs. What cannot be answered, or is
    a leg no worker made, becomes a DLQ row; a client command published to another
    partition than its customer's becomes a forward to that one (once: a forwarded record
    that is still misrouted is rejected by the ledger, so no record goes round)."""
    decoded = Decoded()
    for record in records:
        decoded.last_offset = record.offset
        value: bytes = record.value or b""
        headers = record.headers or ()
        json = says_json(headers) or looks_like_json(value)
        forwarded_from = forwarded_partition(headers, partitions)
        if len(value) > message_bytes_max:
            parsed: Any = Undecodable(
                "message_too_large", f"{len(value)} > {message_bytes_max} bytes"
            )
            value = value[:message_bytes_max]
        else:
            parsed = authenticate(decode_command(value, json=json), record.partition, authority)
        if isinstance(parsed, Undecodable):
            decoded.dead.append(
                _dead_letter(
                    parsed, record.topic, record.partition, record.offset, record.key, value
                )
            )
            decoded.dead_reasons.append(parsed.reason)
            if parsed.leg:
                decoded.forged_legs.append(parsed.leg)
            continue
        if isinstance(parsed, LEG_TYPES):
            decoded.legs[record.offset] = (record.topic, record.key, value)
        elif not isinstance(parsed, Invalid) and forwarded_from < 0:
            home = partition_of(parsed.customer, partitions)
            if home != record.partition:
                forward = Forwarded(value, record.timestamp, json)
                key = customer_key(parsed.customer)
                row = OutboxRow(record.offset, 0, OutboxKind.FORWARD, key, encode(forward), home)
                decoded.forwards.append(row)
                continue
        digest = 0 if isinstance(parsed, Invalid) else fingerprint(parsed)
        decoded.incoming.append(
            Incoming(record.offset, record.timestamp, parsed, digest, json, forwarded_from)
        )
    return decoded


def authenticate(
    parsed: Command | Invalid | Undecodable, partition: int, authority: Authority
) -> Command | Invalid | Undecodable:
    """A leg without a worker's MAC for ``partition`` is forged (DLQ); a privileged
    command without the risk authority's signature is rejected (answered, unrecorded)."""
    if isinstance(parsed, LEG_TYPES):
        problem = authority.leg_problem(parsed, partition)
        if problem:
            return Undecodable("forged_leg", problem, type_tag(type(parsed)))
    elif isinstance(parsed, PRIVILEGED_TYPES):
        reason, detail = authority.privileged_problem(parsed)
        if reason is not Reason.NONE:
            return Invalid(parsed.id, parsed.customer, reason, detail)
    return parsed


def _dead_letter(
    parsed: Undecodable, topic: str, partition: int, offset: int, key: bytes | None, value: bytes
) -> OutboxRow:
    letter = DeadLetter(parsed.reason, parsed.detail, topic, partition, offset, key, value)
    return OutboxRow(offset, 0, OutboxKind.DEAD_LETTER, key, encode(letter), partition)


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
        authority: Authority,
    ):
        self.metrics = metrics
        self.authority = authority
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
        """Bulk-load the partition's accounts (if they all fit, the book is complete) and
        all its transfers in flight."""
        accounts = await self.store.load_partition(self.partition, self.accounts_max)
        flights = await self.store.load_in_flight(self.partition)
        self.ledger.accounts = {a.key: a for a in accounts}
        self.ledger.load_in_flight(flights)
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
            Fence(self.partition, self.epoch, self.position, decoded.last_offset + 1),
            outcome,
            decoded,
            trim_below,
            self.authority,
            self.config.results_encoding,
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


class Fence(NamedTuple):
    """Where a batch commits: its partition, the claim's epoch, and the offsets it moves
    ``next_offset`` from and to."""

    partition: int
    epoch: int
    expected_offset: int
    next_offset: int


def build_commit(
    fence: Fence,
    outcome: Outcome,
    decoded: Decoded,
    trim_below: int,
    authority: Authority,
    results_as: ResultsEncoding = ResultsEncoding.COMMAND,
) -> CommitBatch:
    """Encode what a decided batch commits: each result is encoded once however often
    used (msgpack in the cup; on the results topic in the command's encoding, or as
    ``results_as`` says); each leg gets the workers' MAC for the partition it goes to;
    each leg the ledger refused goes to the DLQ as it came; forwards go as they came."""
    encoded: dict[tuple[int, bool], bytes] = {}

    def encoded_result(result: Result, json: bool = False) -> bytes:
        value = encoded.get((id(result), json))
        if value is None:
            value = encoded[(id(result), json)] = (encode_json if json else encode)(result)
        return value

    partition = fence.partition
    rows: list[tuple[int, OutboxKind, bytes | None, bytes, int]] = [
        (d.src_offset, d.kind, d.key, d.value, d.target_partition)
        for d in (*decoded.dead, *decoded.forwards)
    ]
    for forged in outcome.forged:
        topic, key, value = decoded.legs[forged.offset]
        letter = Undecodable("forged_leg", forged.detail, forged.leg)
        row = _dead_letter(letter, topic, partition, forged.offset, key, value)
        rows.append((row.src_offset, row.kind, row.key, row.value, row.target_partition))
    for publish in outcome.published:
        key = customer_key(publish.customer)
        json = publish.json if results_as is ResultsEncoding.COMMAND else results_as.json
        value = encoded_result(publish.result, json)
        rows.append((publish.offset, OutboxKind.RESULT, key, value, partition))
    for leg in outcome.legs:
        key = customer_key(leg.command.customer)
        value = encode(authority.sign_leg(leg.command, leg.partition))
        rows.append((leg.offset, OutboxKind.LEG, key, value, leg.partition))
    return CommitBatch(
        partition=partition,
        epoch=fence.epoch,
        expected_offset=fence.expected_offset,
        next_offset=fence.next_offset,
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
