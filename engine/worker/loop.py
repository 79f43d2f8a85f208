"""The worker: consumes the command topic and applies each command exactly once.

A worker is one member of the consumer group. For every partition Kafka assigns it, it
claims the partition in the partition's cup (bumping the epoch fences every earlier
owner), seeks to the cup's ``next_offset`` and loads the partition's accounts. From then
on it is the partition's only writer, until Kafka revokes it or a commit finds it fenced.

The shard map can change under a running worker (``smallcups shards``): ``follow`` adopts
each new version at a batch boundary. A paused partition (being moved) is handed over
like a revoke and parked, still assigned, until the map unpauses it; a partition whose
cup changed is handed over and claimed again in its new cup.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from engine.core.authority import Authority
from engine.core.config import Config
from engine.core.errors import FencedError, InfrastructureError, invariant
from engine.core.records import CommitBatch, CommitStatus, ShardMap
from engine.kafka.relay import Relay
from engine.worker.lane import CupCommits, Lane
from engine.worker.metrics import WorkerMetrics
from engine.worker.observe import record_batch
from engine.worker.partition import (
    RETRIABLE,
    Decoded,
    PartitionState,
    commit_batches,
    decode_records,
    now_us,
)
from shards.store import CupStore

log = logging.getLogger(__name__)

FETCH_LIMITS: Final = {"max_partition_fetch_bytes": 1_048_576, "fetch_max_bytes": 16_777_216}
"""The worker consumer's fetch sizes (the bench's Kafka-only readers use them too)."""
HOUSEKEEPING_TICK_SECONDS: Final = 0.1
"""How often housekeeping looks whether one of its intervals is due."""
RECORD_BATCH_BYTES_MAX: Final = 524_288
"""The relay's record batches: a round's results for one partition fit one. aiokafka
appends a partition's next batch only once the previous one is drained, and drains one
produce request at a time, so with its 16 KiB default a round waited a produce round trip
per batch before its next commit: 16-22 ms to publish 2,000 results, against 3 ms now.
Below the broker's message.max.bytes (1 MiB by default)."""

CLAIM_RETRY_SECONDS = 1.0
"""Back-off before re-claiming partitions of a cup whose claim just failed."""


class _Decided(NamedTuple):
    """A partition's batch of a commit round, decided and not yet committed."""

    position: int
    """Its place in the round's work."""
    state: PartitionState
    decoded: Decoded
    batch: CommitBatch


class Worker:
    def __init__(
        self,
        config: Config,
        shard_map: ShardMap,
        stores: Mapping[int, CupStore],
        consumer: AIOKafkaConsumer,
        relay: Relay,
        metrics: WorkerMetrics,
        authority: Authority,
    ):
        self.metrics = metrics
        self.authority = authority
        self.joined = False
        self.config = config
        self.limits = config.worker
        self.topic = config.kafka.commands_topic
        self.shard_map = shard_map
        self.stores = stores
        self.consumer = consumer
        self.relay = relay
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.owned: dict[int, Lane] = {}
        self.assigned: set[int] = set()
        self.lost: set[int] = set()
        self._lock = asyncio.Lock()
        self._offsets_committed_at = 0.0
        self._cup_retry_at: dict[int, float] = {}
        """When a failed claim may be tried again, per cup: the loop never sleeps on it."""
        self._partition_retry_at: dict[int, float] = {}
        """When a partition given up after a failed publish may be claimed again."""
        self._trimmed_at = 0.0
        self._cups: dict[int, CupCommits] = {}
        """Per cup: the rounds that commit this worker's lanes there (see engine.worker.lane)."""
        self._housekeeper: asyncio.Task[None] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """The worker loop, until ``stop`` is set. The loop itself only fetches:

        1. fetch: up to ``fetch_records_max`` records (aiokafka prefetches the next
           ones meanwhile), grouped by partition, each group queued on its partition's
           lane (engine.worker.lane). Each lane, concurrently with the loop and the others:
        2. decode: msgspec, one reused decoder; what cannot be answered becomes a DLQ row,
           what is invalid becomes a rejected result;
        3. decide: the pure ledger, against the partition's cached account book;
        4. commit: one fenced statement per partition batch; while it is in flight the
           next records queue up and form the next batch (fetch, decide and commit are
           pipelined; every cup commits concurrently);
        5. publish: the committed results and dead letters go to the relay;
        6. acknowledge: the cup's ``next_offset`` is the truth; Kafka's committed offsets
           follow every few seconds, for lag dashboards only.

        Housekeeping (outbox trims of idle partitions, gauges, Kafka's offsets) runs
        beside the loop, not in it: its queries wait on each cup, and a cup that hangs
        must not hold back the records of the others.
        """
        self._housekeeper = asyncio.create_task(self._housekeep(stop))
        try:
            while not stop.is_set():
                fetched = await self.consumer.getmany(
                    timeout_ms=self.limits.fetch_timeout_ms,
                    max_records=self.limits.fetch_records_max,
                )
                async with self._lock:
                    self._raise_failure()
                    await self._recover()
                    for tp, records in fetched.items():
                        lane = self.owned.get(tp.partition)
                        if lane is not None:
                            lane.offer(records)
        finally:
            self._housekeeper.cancel()
            await asyncio.gather(self._housekeeper, return_exceptions=True)

    async def _housekeep(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(HOUSEKEEPING_TICK_SECONDS)
            await self._housekeeping()

    def _raise_failure(self) -> None:
        errors = [lane.failure() for lane in self.owned.values()] + [self.relay.failure()]
        housekeeper = self._housekeeper
        if housekeeper is not None and housekeeper.done() and not housekeeper.cancelled():
            errors.append(housekeeper.exception())
        for error in errors:
            if error is not None:
                raise error

    async def _commit_round(self, work: list[tuple[PartitionState, list[Any]]]) -> list[bool]:
        """One round of a cup (engine.worker.lane.CupCommits): decide each partition's batch,
        commit them all in one statement, publish what committed. For each partition,
        False when it was lost (fenced, a fault, or a failed publish)."""
        owned = [False] * len(work)
        decided: list[_Decided] = []
        now = now_us()
        for index, (state, records) in enumerate(work):
            partition = state.partition
            if self.relay.failed(partition):
                self._lose_to_publish(partition)
                continue
            decoded = decode_records(
                records, self.limits.message_bytes_max, self.authority, self.shard_map.partitions
            )
            try:
                batch = await state.decide(decoded, now, self.relay.acked_below(partition))
            except RETRIABLE as error:
                log.warning("partition %d: %s; will re-claim", partition, error)
                self._lose(partition)
                continue
            decided.append(_Decided(index, state, decoded, batch))
        if not decided:
            return owned
        store = decided[0].state.store
        invariant(all(d.state.store is store for d in decided), "a round commits in one cup")
        try:
            statuses = await commit_batches(
                store, [d.batch for d in decided], self.limits, self.metrics
            )
        except InfrastructureError as error:
            log.warning("%s; will re-claim", error)
            for d in decided:
                self._lose(d.state.partition)
            return owned
        for index, state, decoded, batch in decided:
            status = statuses[state.partition]
            committed = await self._committed(state, decoded, batch, status, now)
            if committed is None:
                continue
            owned[index] = True
            state.trimmed_below = committed.trim_below_offset
            record_batch(self.metrics, decoded, committed, time.time_ns() // 1_000_000)
            published = [p.result.published_at_ms for p in committed.outcome.published]
            await self.relay.publish(state.partition, committed.outbox, published)
        return owned

    async def _committed(
        self,
        state: PartitionState,
        decoded: Decoded,
        batch: CommitBatch,
        status: CommitStatus,
        now: int,
    ) -> CommitBatch | None:
        """What a partition committed of its batch in a round; None when it was lost."""
        match status:
            case CommitStatus.COMMITTED:
                state.position = batch.next_offset
                return batch
            case CommitStatus.FENCED:
                self._fenced(state.partition)
                return None
        return await self._commit_alone(state, decoded, now, batch.trim_below_offset)

    async def _commit_alone(
        self, state: PartitionState, decoded: Decoded, now: int, trim_below: int
    ) -> CommitBatch | None:
        """A batch refused for duplicates: decided again with the results found and
        committed alone. None when the partition was lost meanwhile."""
        try:
            known = await state.reload(decoded)
            return await state.process(decoded, now, trim_below, known)
        except FencedError:
            self._fenced(state.partition)
        except (InfrastructureError, *RETRIABLE) as error:
            log.warning("partition %d: %s; will re-claim", state.partition, error)
            self._lose(state.partition)
        return None

    def _fenced(self, partition: int) -> None:
        log.warning("fenced: partition %d was claimed by another worker; re-claiming", partition)
        self.metrics.fenced_commits.inc()
        self._lose(partition)

    def _lose_to_publish(self, partition: int) -> None:
        """A send failed: claim the partition again (which re-sends its outbox) once the
        broker had a moment; the same back-off as a failed claim."""
        backoff = min(CLAIM_RETRY_SECONDS, self.limits.retry_backoff_max_seconds)
        self._partition_retry_at[partition] = time.monotonic() + backoff
        self._lose(partition)

    def _lose(self, partition: int) -> None:
        self.owned.pop(partition, None)
        self.relay.forget(partition)
        if partition in self.assigned:
            self.lost.add(partition)

    async def _recover(self) -> None:
        """Give up partitions whose publish failed; re-claim those lost to a fence or a
        fault (the claim re-sends the unsent outbox)."""
        for partition in self.relay.failed_partitions:
            lane = self.owned.get(partition)
            if lane is not None:
                await lane.stop()
                self._lose_to_publish(partition)
        now = time.monotonic()
        for partition in sorted(self.lost & self.assigned - self.shard_map.paused):
            cup_at = self._cup_retry_at.get(self.shard_map.cup_of[partition], 0.0)
            if now >= max(cup_at, self._partition_retry_at.get(partition, 0.0)):
                await self._claim(partition)

    async def _claim(self, partition: int) -> None:
        """Claim in the partition's cup and seek there; a paused partition stays parked."""
        if partition in self.shard_map.paused:
            self._park(partition)
            return
        store = self.stores[self.shard_map.cup_of[partition]]
        try:
            claim = await store.claim(partition, self.owner)
            state = PartitionState(
                partition,
                self.shard_map.partitions,
                store,
                claim,
                self.limits,
                self.metrics,
                self.authority,
            )
            await state.load()
            unsent = await store.unsent(partition)
        except RETRIABLE as error:
            log.warning("partition %d: claim failed (%s); will retry", partition, error)
            await store.renew_connections()
            self.lost.add(partition)
            backoff = min(CLAIM_RETRY_SECONDS, self.limits.retry_backoff_max_seconds)
            self._cup_retry_at[store.cup_id] = time.monotonic() + backoff
            return
        self.lost.discard(partition)
        self.consumer.seek(TopicPartition(self.topic, partition), claim.next_offset)
        lane = Lane(
            state,
            self.consumer,
            self.topic,
            self.limits.batch_records_max,
            self._cup_commits(store.cup_id),
        )
        self.owned[partition] = lane
        await self.relay.publish(partition, unsent)
        lane.start()
        log.info(
            "claimed partition %d in cup %d at offset %d epoch %d",
            partition,
            store.cup_id,
            claim.next_offset,
            claim.epoch,
        )

    def _cup_commits(self, cup_id: int) -> CupCommits:
        commits = self._cups.get(cup_id)
        if commits is None:
            limits = self.limits
            commits = self._cups[cup_id] = CupCommits(
                limits.commits_per_cup_max, limits.batch_records_max, self._commit_round
            )
        return commits

    async def on_assigned(self, partitions: Sequence[int]) -> None:
        async with self._lock:
            self.joined = True
            self.metrics.rebalances.inc()
            self.assigned |= set(partitions)
            await asyncio.gather(*(self._claim(p) for p in partitions))
            self.metrics.partitions_owned.set(len(self.owned))
            # The books just loaded live as long as the partitions: keep them out of the
            # cyclic collector's scans (reference counting still frees them on revoke).
            gc.freeze()

    async def on_revoked(self, partitions: Sequence[int]) -> None:
        """Hand partitions over cleanly: publish what is committed, trim, forget."""
        async with self._lock:
            await self._hand_over(partitions)
            self.assigned -= set(partitions)

    async def _hand_over(self, partitions: Sequence[int]) -> None:
        await self._stop_lanes(partitions)
        await self.relay.flush(self.limits.handover_flush_seconds, partitions)
        await self.trim_outboxes(partitions)
        for partition in partitions:
            self._forget_series(partition)
            self.lost.discard(partition)
            self.owned.pop(partition, None)
            self.relay.forget(partition)

    async def follow(self, shard_map: ShardMap) -> None:
        """Adopt a new version of the shard map, between two batches.

        For each assigned partition: paused -> hand it over and park it; owned in another
        cup than the map says -> hand it over and claim it in the new cup; parked and no
        longer paused -> claim it (a lost one waits for its back-off). The stores of new
        cups must be open before.
        """
        async with self._lock:
            if shard_map.version <= self.shard_map.version:
                return
            self.shard_map = shard_map
            claims = []
            for partition in sorted(self.assigned):
                lane = self.owned.get(partition)
                if partition in shard_map.paused:
                    if lane is not None:
                        await self._hand_over([partition])
                    self._park(partition)
                elif lane is None or lane.state.store.cup_id != shard_map.cup_of[partition]:
                    if lane is not None:
                        await self._hand_over([partition])
                    if partition not in self.lost:
                        claims.append(partition)
            await asyncio.gather(*(self._claim(p) for p in claims))
            self.metrics.partitions_owned.set(len(self.owned))

    def _park(self, partition: int) -> None:
        """Leave a paused partition alone: no claim, no fetching, until a claim resumes it."""
        self.lost.discard(partition)
        with contextlib.suppress(IllegalStateError):  # revoked meanwhile
            self.consumer.pause(TopicPartition(self.topic, partition))

    def readiness(self) -> tuple[bool, str]:
        """Ready: joined the group, owns what it was assigned (or nothing, by design),
        and every cup answered its last statement."""
        if not self.joined:
            return False, "not joined to the consumer group yet"
        if self.lost:
            return False, f"partitions {sorted(self.lost)} wait to be re-claimed"
        if self.metrics.cups_down:
            return False, f"cups {sorted(self.metrics.cups_down)} unreachable"
        return True, f"owns {len(self.owned)} partitions"

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._trimmed_at >= self.limits.outbox_trim_interval_seconds:
            self._trimmed_at = now
            await self.trim_outboxes(idle_only=True)
            self._export_positions()
            await self._export_in_flight()
        if now - self._offsets_committed_at >= self.limits.kafka_offsets_commit_interval_seconds:
            self._offsets_committed_at = now
            await self._commit_kafka_offsets()

    def _export_positions(self) -> None:
        metrics = self.metrics
        metrics.partitions_owned.set(len(self.owned))
        assigned = self.consumer.assignment()
        for partition, lane in self.owned.items():
            state = lane.state
            label = str(partition)
            metrics.committed_offset.labels(label).set(state.position)
            tp = TopicPartition(self.topic, partition)
            highwater = self.consumer.highwater(tp) if tp in assigned else None
            if highwater is not None:
                metrics.lag.labels(label).set(max(0, highwater - state.position))

    async def _export_in_flight(self) -> None:
        """Transfers debited by this worker's partitions and not settled (and those stuck),
        per cup."""
        by_cup: dict[int, list[int]] = {}
        for partition, lane in self.owned.items():
            by_cup.setdefault(lane.state.store.cup_id, []).append(partition)
        for cup_id, partitions in by_cup.items():
            store = self.stores[cup_id]
            try:
                rows = await store.in_flight(partitions, self.limits.transfer_stuck_seconds)
            except RETRIABLE:
                self.metrics.set_cup_up(cup_id, False)
                continue
            label = str(cup_id)
            self.metrics.set_cup_up(cup_id, True)
            self.metrics.legs_in_flight.labels(label).set(sum(r.transfers for r in rows))
            self.metrics.transfers_stuck.labels(label).set(sum(r.stuck for r in rows))
            for row in rows:
                self.metrics.money_in_flight.labels(label, row.currency).set(row.money)

    def _forget_series(self, partition: int) -> None:
        for gauge in (self.metrics.lag, self.metrics.committed_offset):
            with contextlib.suppress(KeyError):
                gauge.remove(str(partition))

    async def trim_outboxes(
        self, partitions: Iterable[int] | None = None, *, idle_only: bool = False
    ) -> None:
        """Delete outbox rows the relay has published. ``idle_only`` (housekeeping): only
        partitions that committed nothing since the last such pass, as a busy one's next
        commit trims its outbox in the same statement."""
        chosen = self.owned.keys() if partitions is None else partitions
        for state in [self.owned[p].state for p in chosen if p in self.owned]:
            if idle_only:
                busy = state.position != state.position_at_last_pass
                state.position_at_last_pass = state.position
                if busy:
                    continue
            acked = self.relay.acked_below(state.partition)
            if acked > state.trimmed_below:
                try:
                    await state.store.trim_outbox(state.partition, state.epoch, acked)
                    state.trimmed_below = acked
                except RETRIABLE as error:
                    log.warning("partition %d: outbox trim failed: %s", state.partition, error)

    def abandon(self) -> None:
        """The worker is failing: cancel every lane (each cup keeps what it committed)."""
        for lane in self.owned.values():
            lane.cancel()

    async def _stop_lanes(self, partitions: Iterable[int]) -> None:
        """Let each lane finish the batch it has in flight; queued records are dropped
        (the next owner fetches them again from the cup's ``next_offset``)."""
        lanes = [self.owned[p] for p in partitions if p in self.owned]
        await asyncio.gather(*(lane.stop() for lane in lanes))

    async def _commit_kafka_offsets(self) -> None:
        offsets = {
            TopicPartition(self.topic, p): OffsetAndMetadata(lane.state.position, "")
            for p, lane in self.owned.items()
            if lane.state.position > 0
        }
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as error:
            log.debug("kafka offset commit skipped: %s", error)

    async def drain(self) -> None:
        """After the loop: publish what is committed, trim, hand Kafka the offsets."""
        async with self._lock:
            await self._stop_lanes(list(self.owned))
            await self.relay.flush(self.limits.handover_flush_seconds)
            await self.trim_outboxes()
            await self._commit_kafka_offsets()


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker):
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self.worker.on_revoked([tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        await self.worker.on_assigned([tp.partition for tp in assigned])


def make_producer(config: Config) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=config.kafka.bootstrap_servers,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=RECORD_BATCH_BYTES_MAX,
        request_timeout_ms=config.kafka.request_timeout_ms,
    )


def make_consumer(config: Config, assignor: AbstractPartitionAssignor) -> AIOKafkaConsumer:
    """The group member; when it leads the group, ``assignor`` assigns (cup affinity)."""
    return AIOKafkaConsumer(
        partition_assignment_strategy=(assignor,),
        bootstrap_servers=config.kafka.bootstrap_servers,
        group_id=config.kafka.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **FETCH_LIMITS,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        request_timeout_ms=config.kafka.request_timeout_ms,
    )
