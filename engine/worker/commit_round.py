"""The commit round: the next batch of each of a cup's lanes, committed in one statement.

This is the one path from fetched records to committed effects (docs/design.md §3, §5). A round,
for the partitions of one cup whose lanes have records waiting (engine.worker.lane):

1. decode each partition's records (engine.core.batch): commands, rejections to answer,
   dead letters, forwards;
2. decide each batch against its partition's book, loading the accounts it lacks;
3. commit every batch in one statement, the store's fenced commit (compare-and-set of
   epoch, next_offset and internal_offset per partition). A cup that fails for a passing
   reason is tried again, backing off; a commit whose reply was lost is read back per
   partition: moved to the batch's end (committed), still at its start (tried again),
   another epoch (fenced);
4. a batch refused because a command id in it was applied before (a command re-sent
   after the cache was built): reload the book and those results, decide again, and
   commit alone; twice at most;
5. a verdict per partition: committed (with what to publish), fenced, or lost (the cup
   stayed unreachable). The worker only reacts to verdicts: it publishes what
   committed and lets go of, then claims again, what did not.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from engine.core.backoff import Backoff
from engine.core.batch import Decoded, decode_records
from engine.core.book import Known
from engine.core.config import WorkerConfig
from engine.core.errors import CupUnavailableError, invariant
from engine.core.records import CommitBatch, CommitStatus
from engine.core.store import CupStore
from engine.worker.metrics import WorkerMetrics
from engine.worker.partition import PartitionState

log = logging.getLogger(__name__)

COMMIT_BACKOFF_FIRST_SECONDS: Final = 0.05
DUPLICATE_ATTEMPTS_MAX: Final = 2
"""Times a batch refused for duplicates is decided again and committed alone."""


class Verdict(enum.Enum):
    COMMITTED = "committed"
    FENCED = "fenced"
    """Another worker claimed the partition: let it go."""
    LOST = "lost"
    """The cup stayed unreachable (or duplicates persisted): let go, claim again later."""


@dataclass(frozen=True, slots=True)
class RoundInput:
    state: PartitionState
    records: Sequence[Any]
    trim_below: int
    """Outbox rows below this offset are published: the commit deletes them."""


@dataclass(frozen=True, slots=True)
class RoundResult:
    state: PartitionState
    verdict: Verdict
    decoded: Decoded
    batch: CommitBatch | None
    """What committed (its outbox to publish); None unless COMMITTED."""


async def commit_round(
    work: Sequence[RoundInput], limits: WorkerConfig, metrics: WorkerMetrics, now_us: int
) -> list[RoundResult]:
    """Steps 1 to 5 of the module docstring for the batches of one cup; one result per
    input, in order."""
    invariant(len({w.state.partition for w in work}) == len(work), "one batch per partition")
    invariant(len({id(w.state.store) for w in work}) <= 1, "a round commits in one cup")
    decided: list[tuple[RoundInput, Decoded, CommitBatch]] = []
    results: dict[int, RoundResult] = {}
    for item in work:
        state = item.state
        decoded = decode_records(
            item.records,
            limits.message_bytes_max,
            state.authority,
            state.partitions,
            state.position,
            state.internal_topic,
        )
        try:
            batch = await item.state.decide(decoded, now_us, item.trim_below)
        except CupUnavailableError as error:
            log.warning("partition %d: %s; will claim again", item.state.partition, error)
            results[item.state.partition] = RoundResult(item.state, Verdict.LOST, decoded, None)
            continue
        decided.append((item, decoded, batch))
    if decided:
        store = decided[0][0].state.store
        statuses = await commit_batches(store, [b for _, _, b in decided], limits, metrics)
        for item, decoded, batch in decided:
            status = statuses.get(batch.partition)
            results[batch.partition] = await _verdict(
                item, decoded, batch, status, limits, metrics, now_us
            )
    return [results[item.state.partition] for item in work]


async def _verdict(
    item: RoundInput,
    decoded: Decoded,
    batch: CommitBatch,
    status: CommitStatus | None,
    limits: WorkerConfig,
    metrics: WorkerMetrics,
    now_us: int,
) -> RoundResult:
    """Step 4 and 5 for one partition: its batch's fate, retried alone for duplicates."""
    state = item.state
    for _attempt in range(DUPLICATE_ATTEMPTS_MAX):
        match status:
            case CommitStatus.COMMITTED:
                state.committed(batch)
                return RoundResult(state, Verdict.COMMITTED, decoded, batch)
            case CommitStatus.FENCED:
                return RoundResult(state, Verdict.FENCED, decoded, None)
            case None:
                return RoundResult(state, Verdict.LOST, decoded, None)
        try:
            known: dict[str, Known] = await state.reload(decoded)
            batch = await state.decide(decoded, now_us, item.trim_below, known)
            statuses = await commit_batches(state.store, [batch], limits, metrics)
        except CupUnavailableError as error:
            log.warning("partition %d: %s; will claim again", state.partition, error)
            return RoundResult(state, Verdict.LOST, decoded, None)
        status = statuses.get(state.partition)
    log.warning("partition %d: duplicates persisted after reload", state.partition)
    return RoundResult(state, Verdict.LOST, decoded, None)


async def commit_batches(
    store: CupStore,
    batches: Sequence[CommitBatch],
    limits: WorkerConfig,
    metrics: WorkerMetrics,
) -> dict[int, CommitStatus]:
    """Step 3: commit batches of one cup in one statement, retrying a passing fault up to
    ``commit_retry_max`` times. A partition missing from the answer stayed unclear (the
    cup did not answer in time): lost."""
    statuses: dict[int, CommitStatus] = {}
    pending = list(batches)
    backoff = Backoff(COMMIT_BACKOFF_FIRST_SECONDS, limits.retry_backoff_max_seconds)
    cup = str(store.cup_id)
    for attempt in range(1, limits.commit_retry_max + 1):
        started = time.perf_counter()
        try:
            statuses.update(await store.commit_many(pending))
            metrics.commit_duration.labels(cup).observe(time.perf_counter() - started)
            metrics.set_cup_up(store.cup_id, True)
            return statuses
        except CupUnavailableError as error:
            metrics.set_cup_up(store.cup_id, False)
            log.warning("cup %d commit attempt %d failed: %s", store.cup_id, attempt, error)
            await store.renew_connections()
        await asyncio.sleep(backoff.next())
        unclear = await _read_back(store, pending, statuses)
        if not unclear:
            return statuses
        pending = unclear
    log.warning(
        "partitions %s: cup %d unreachable", sorted(b.partition for b in pending), store.cup_id
    )
    return statuses


async def _read_back(
    store: CupStore, pending: list[CommitBatch], statuses: dict[int, CommitStatus]
) -> list[CommitBatch]:
    """After a failed commit: decide what the cup did with each batch from its claim.
    Returns the batches still unclear (the cup did not apply them, or did not answer)."""
    try:
        states = await store.states([b.partition for b in pending])
    except CupUnavailableError:
        return pending
    unclear = []
    for batch in pending:
        state = states.get(batch.partition)
        fence = None if state is None else state.fence
        if fence == (batch.epoch, batch.next_offset, batch.next_internal):
            statuses[batch.partition] = CommitStatus.COMMITTED
        elif fence != (batch.epoch, batch.expected_offset, batch.expected_internal):
            statuses[batch.partition] = CommitStatus.FENCED
        else:
            unclear.append(batch)
    return unclear
