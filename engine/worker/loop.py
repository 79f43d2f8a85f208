"""The worker: consumes the commands and internal topics and applies each command exactly
once.

A worker is one member of the consumer group. For every partition Kafka assigns it (of
both topics together), it claims the partition in the partition's cup (bumping the epoch
fences every earlier owner), seeks both topics to the cup's ``next_offset`` and
``internal_offset`` and loads the partition's accounts. From then
on it is the partition's only writer, until Kafka revokes it or a commit finds it fenced.
Each assigned partition has a phase (engine.worker.phases): owned, waiting to be
claimed again, or parked while a move pauses it.

The shard map can change under a running worker (``smallcups shards``): ``follow`` adopts
each new version at a batch boundary. A paused partition (being moved) is handed over
like a revoke and parked, still assigned, until the map unpauses it; a partition whose
cup changed is handed over and claimed again in its new cup.

``_lock`` serializes what changes the phases and the lanes: the fetch loop's recovery,
the rebalance callbacks and the adoption of a new map. Commit rounds run in the lanes'
tasks without it; the only phase change they make (a partition lost) goes through
``_lose``, which is atomic on the event loop.
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
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError

from engine.core.authority import Authority
from engine.core.config import Config
from engine.core.errors import CupUnavailableError, InvariantError
from engine.core.records import InputTopics, ShardMap
from engine.core.store import CupStore
from engine.kafka.clients import request_rebalance
from engine.kafka.connection import ACCESS_ERRORS, access_denied
from engine.kafka.relay import Relay
from engine.worker.affinity import FlipRebalance
from engine.worker.commit_round import RoundInput, Verdict, commit_round
from engine.worker.housekeeping import Housekeeper
from engine.worker.lane import CupCommits, Lane
from engine.worker.metrics import WorkerMetrics
from engine.worker.observe import record_batch
from engine.worker.partition import PartitionState, now_us
from engine.worker.phases import PartitionPhases, Phase

log = logging.getLogger(__name__)

PUBLISH_RETRY_SECONDS = 1.0
"""After a failed publish, the broker gets this long before the partition is claimed
again (the claim re-sends its outbox)."""


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
        self.limits = config.worker
        self.kafka = config.kafka
        self.topics = InputTopics(config.kafka.commands_topic, config.kafka.internal_topic)
        self.shard_map = shard_map
        self.stores = stores
        self.consumer = consumer
        self.relay = relay
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.phases = PartitionPhases(self.limits.retry_backoff_max_seconds)
        self.lanes: dict[int, Lane] = {}
        """The lane of every OWNED partition, and of no other."""
        metrics.credit.watch(
            lambda: {p: lane.state.ledger.credit for p, lane in self.lanes.items()}
        )
        self._lock = asyncio.Lock()
        self._cups: dict[int, CupCommits] = {}
        """Per cup: the rounds that commit this worker's lanes there (engine.worker.lane)."""
        self.housekeeper = Housekeeper(
            lambda: self.lanes,
            stores,
            relay,
            consumer,
            self.topics,
            metrics,
            self.limits,
            config.archive.period_seconds,
        )
        self._housekeeping: asyncio.Task[None] | None = None
        self.flip_rebalance = FlipRebalance(
            self._request_rebalance,
            enabled=self.limits.rebalance_on_flip,
            quiet_seconds=self.limits.rebalance_on_flip_quiet_seconds,
        )

    def _request_rebalance(self) -> None:
        if self.joined:
            request_rebalance(self.consumer)

    async def run(self, stop: asyncio.Event) -> None:
        """The worker loop, until ``stop`` is set. The loop itself only fetches:

        1. fetch: up to ``fetch_records_max`` records (aiokafka prefetches the next
           ones meanwhile), grouped by partition, each group queued on its partition's
           lane (engine.worker.lane);
        2. each lane, concurrently with the loop and the others, waits for a commit
           round of its cup (engine.worker.commit_round: decode, decide, one fenced
           statement for every lane of the cup that has records) and the worker
           publishes what committed (``_round``): while a round is in flight, the next
           records queue up and form the next batch;
        3. acknowledge: the cup's ``next_offset`` is the truth; Kafka's committed offsets
           follow every few seconds, for lag dashboards only (housekeeping).

        Between two fetches the loop claims again the partitions due (lost ones whose
        back-off passed), and lets go of those whose publish failed.
        """
        self._housekeeping = asyncio.create_task(self.housekeeper.run(stop))
        try:
            while not stop.is_set():
                try:
                    fetched = await self.consumer.getmany(
                        timeout_ms=self.limits.fetch_timeout_ms,
                        max_records=self.limits.fetch_records_max,
                    )
                except ACCESS_ERRORS as error:
                    raise access_denied(self.kafka, error) from None
                async with self._lock:
                    self._raise_failure()
                    await self._recover()
                    for tp, records in fetched.items():
                        lane = self.lanes.get(tp.partition)
                        if lane is not None:
                            lane.offer(tp, records)
        finally:
            self._housekeeping.cancel()
            await asyncio.gather(self._housekeeping, return_exceptions=True)

    def _raise_failure(self) -> None:
        """A bug in a lane, the relay or housekeeping stops the worker."""
        errors = [lane.failure() for lane in self.lanes.values()] + [self.relay.failure()]
        task = self._housekeeping
        if task is not None and task.done() and not task.cancelled():
            errors.append(task.exception())
        for error in errors:
            if error is not None:
                raise error

    async def _round(self, work: list[tuple[PartitionState, list[Any]]]) -> list[bool]:
        """One commit round of a cup (engine.lane.CupCommits), then its reactions: publish
        what committed, let go of what did not. For each partition, whether it is still
        owned."""
        owned = [False] * len(work)
        inputs = []
        for state, records in work:
            if self.relay.failed(state.partition):
                self._lose(state.partition, PUBLISH_RETRY_SECONDS)
            else:
                inputs.append(RoundInput(state, records, self.relay.settle(state.partition)))
        results = await commit_round(inputs, self.limits, self.metrics, now_us())
        positions = {state.partition: index for index, (state, _) in enumerate(work)}
        for result in results:
            partition = result.state.partition
            match result.verdict:
                case Verdict.COMMITTED:
                    batch = result.batch
                    if batch is None:
                        raise InvariantError(f"partition {partition} committed no batch")
                    owned[positions[partition]] = True
                    record_batch(self.metrics, result.decoded, batch, time.time_ns() // 1_000_000)
                    published = [p.result.published_at_ms for p in batch.outcome.published]
                    await self.relay.publish(partition, batch.outbox, published)
                case Verdict.FENCED:
                    log.warning("fenced: partition %d was claimed by another worker", partition)
                    self.metrics.fenced_commits.inc()
                    self._lose(partition)
                case Verdict.LOST:
                    self._lose(partition)
        return owned

    def _lose(self, partition: int, retry_after_seconds: float = 0.0) -> None:
        """The partition is no longer this worker's: its lane ends (a round returns False
        for it), its sends are forgotten, and it waits to be claimed again."""
        self.lanes.pop(partition, None)
        self.relay.forget(partition)
        if self.phases.phase(partition) is Phase.OWNED:
            self.phases.wait(partition, time.monotonic() + retry_after_seconds)

    async def _recover(self) -> None:
        """Give up partitions whose publish failed; claim again those due."""
        for partition in self.relay.failed_partitions:
            lane = self.lanes.get(partition)
            if lane is not None:
                await lane.stop()
                self._lose(partition, PUBLISH_RETRY_SECONDS)
        due = self.phases.due(time.monotonic(), self.shard_map.cup_of, self.shard_map.paused)
        for partition in due:
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
                self.authority,
                self.topics.internal,
            )
            await state.load()
            unsent = await store.unsent(partition)
        except CupUnavailableError as error:
            log.warning("partition %d: claim failed (%s); will retry", partition, error)
            await store.renew_connections()
            self.phases.claim_failed_in(store.cup_id, time.monotonic())
            self.phases.wait(partition)
            return
        self.phases.claimed_in(store.cup_id)
        self.phases.set(partition, Phase.OWNED)
        for topic, offset in zip(self.topics, claim.position, strict=True):
            self.consumer.seek(TopicPartition(topic, partition), offset)
        lane = Lane(
            state, self.consumer, self.topics, self.limits.batch_records_max, self._cup(store)
        )
        self.lanes[partition] = lane
        await self.relay.publish(partition, unsent)
        lane.start()
        log.info(
            "claimed partition %d in cup %d at offsets %d (commands) %d (internal) epoch %d",
            partition,
            store.cup_id,
            claim.next_offset,
            claim.internal_offset,
            claim.epoch,
        )

    def _cup(self, store: CupStore) -> CupCommits:
        commits = self._cups.get(store.cup_id)
        if commits is None:
            limits = self.limits
            commits = self._cups[store.cup_id] = CupCommits(
                limits.commits_per_cup_max, limits.batch_records_max, self._round
            )
        return commits

    async def on_assigned(self, partitions: Sequence[int]) -> None:
        async with self._lock:
            self.joined = True
            self.metrics.rebalances.inc()
            await asyncio.gather(*(self._claim(p) for p in partitions))
            self.metrics.partitions_owned.set(len(self.lanes))
            # The books just loaded live as long as the partitions: keep them out of the
            # cyclic collector's scans (reference counting still frees them on revoke).
            gc.freeze()

    async def on_revoked(self, partitions: Sequence[int]) -> None:
        """Hand partitions over cleanly: publish what is committed, trim, forget."""
        async with self._lock:
            await self._hand_over(partitions)
            self.phases.revoke(partitions)

    async def _hand_over(self, partitions: Sequence[int]) -> None:
        """Stop the lanes (a commit in flight finishes), publish what they committed,
        trim, and forget them; their phase is the caller's to set."""
        lanes = [self.lanes[p] for p in partitions if p in self.lanes]
        await asyncio.gather(*(lane.stop() for lane in lanes))
        await self.relay.flush(self.limits.handover_flush_seconds, partitions)
        await self.housekeeper.trim_outboxes(partitions)
        for partition in partitions:
            self.housekeeper.forget(partition)
            self.lanes.pop(partition, None)
            self.relay.forget(partition)

    async def follow(self, shard_map: ShardMap) -> None:
        """Adopt a new version of the shard map, between two batches.

        For each assigned partition: paused -> hand it over and park it; owned in another
        cup than the map says -> hand it over and claim it in the new cup; parked and no
        longer paused -> claim it (a waiting one keeps its back-off). The stores of new
        cups must be open before.
        """
        async with self._lock:
            if shard_map.version <= self.shard_map.version:
                return
            flipped = _flipped(self.shard_map, shard_map, self.phases.assigned())
            self.shard_map = shard_map
            claims = []
            for partition in sorted(self.phases.assigned()):
                lane = self.lanes.get(partition)
                if partition in shard_map.paused:
                    if lane is not None:
                        await self._hand_over([partition])
                    self._park(partition)
                elif lane is not None and lane.state.store.cup_id != shard_map.cup_of[partition]:
                    await self._hand_over([partition])
                    self.phases.wait(partition)
                    claims.append(partition)
                elif self.phases.phase(partition) is Phase.PARKED:
                    claims.append(partition)
            await asyncio.gather(*(self._claim(p) for p in claims))
            self.metrics.partitions_owned.set(len(self.lanes))
        self.flip_rebalance.map_changed(flipped)

    def _park(self, partition: int) -> None:
        """Leave a paused partition alone: no claim, no fetching, until the map resumes it."""
        self.phases.set(partition, Phase.PARKED)
        with contextlib.suppress(IllegalStateError):  # revoked meanwhile
            self.consumer.pause(*(TopicPartition(topic, partition) for topic in self.topics))

    def readiness(self) -> tuple[bool, str]:
        """Ready: joined the group, owns what it was assigned (or nothing, by design),
        every cup answered its last statement, and the relay publishes. Not ready: every
        reason, the relay's first (a relay that cannot publish also makes partitions wait
        to be claimed again)."""
        if not self.joined:
            return False, "not joined to the consumer group yet"
        reasons = [self._relay_trouble()]
        waiting = self.phases.in_phase(Phase.WAITING)
        if waiting:
            reasons.append(f"partitions {waiting} wait to be claimed again")
        if self.metrics.cups_down:
            reasons.append(f"cups {sorted(self.metrics.cups_down)} unreachable")
        trouble = [reason for reason in reasons if reason]
        if trouble:
            return False, "; ".join(trouble)
        return True, f"owns {len(self.lanes)} partitions"

    def _relay_trouble(self) -> str:
        """Why the relay does not publish ("" when it does): a hand-over task died, or it
        has had rows to send for relay_stall_max_seconds without an acknowledgement."""
        failure = self.relay.failure()
        if failure is not None:
            return f"the relay stopped: {type(failure).__name__}"
        stalled = self.relay.stalled_seconds(time.monotonic())
        if stalled > self.limits.relay_stall_max_seconds:
            return (
                f"the relay has not published for {stalled:.0f} s "
                f"(worker.relay_stall_max_seconds {self.limits.relay_stall_max_seconds:.0f})"
            )
        return ""

    def abandon(self) -> None:
        """The worker is failing: cancel every lane (each cup keeps what it committed)."""
        self.flip_rebalance.cancel()
        for lane in self.lanes.values():
            lane.cancel()

    async def drain(self) -> None:
        """After the loop: publish what is committed, trim, hand Kafka the offsets."""
        async with self._lock:
            await asyncio.gather(*(lane.stop() for lane in self.lanes.values()))
            await self.relay.flush(self.limits.handover_flush_seconds)
            await self.housekeeper.trim_outboxes()
            await self.housekeeper.commit_kafka_offsets()


def _flipped(old: ShardMap, new: ShardMap, assigned: Iterable[int]) -> list[int]:
    """The assigned partitions the new map routes to another cup: a move's flip."""
    return sorted(p for p in assigned if old.cup_of.get(p) != new.cup_of.get(p))
