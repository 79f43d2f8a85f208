"""What a worker does beside its loop, every so often: trim the outboxes of idle
partitions, export the gauges, make the journal partitions of the current and the next
period in the cups of its partitions (once a period: DDL locks a cup's commits for a
moment), and hand Kafka its committed offsets (for lag dashboards only: the cups'
next_offset is the truth).

It runs beside the fetch loop, not in it: its queries wait on each cup, and a cup that
hangs must not hold back the records of the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from engine.core.config import WorkerConfig
from engine.core.errors import CupUnavailableError
from engine.core.periods import PERIODS_AHEAD, period_start
from engine.core.records import InputTopics
from engine.core.store import CupStore
from engine.kafka.relay import Relay
from engine.worker.lane import Lane
from engine.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

TICK_SECONDS: Final = 0.1
"""How often housekeeping looks whether one of its intervals is due."""
PRUNE_STATEMENTS_PER_PARTITION_MAX: Final = 10
"""Delete statements one prune pass runs for one partition at most (each removes up to
``prune_rows_max`` records): a partition with a backlog catches up over several passes."""


class Housekeeper:
    def __init__(
        self,
        lanes: Callable[[], Mapping[int, Lane]],
        stores: Mapping[int, CupStore],
        relay: Relay,
        consumer: AIOKafkaConsumer,
        topics: InputTopics,
        metrics: WorkerMetrics,
        limits: WorkerConfig,
        period_seconds: int,
    ):
        self._lanes = lanes
        """The worker's lanes of the partitions it owns, read at each pass."""
        self._stores = stores
        self._relay = relay
        self._consumer = consumer
        self._topics = topics
        self._metrics = metrics
        self._limits = limits
        self._period_seconds = period_seconds
        self._journal_ready_until: dict[int, int] = {}
        """Per cup: the end of the last journal partition this worker knows is made."""
        self._trimmed_at = 0.0
        self._pruned_at = 0.0
        self._offsets_committed_at = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(TICK_SECONDS)
            await self.pass_once()

    async def pass_once(self) -> None:
        now = time.monotonic()
        if now - self._trimmed_at >= self._limits.outbox_trim_interval_seconds:
            self._trimmed_at = now
            await self.trim_outboxes(idle_only=True)
            self._export_positions()
            await self._export_in_flight()
            await self.make_journal_partitions(int(time.time()))
        if now - self._pruned_at >= self._limits.prune_interval_seconds:
            self._pruned_at = now
            await self.prune_expired()
        if now - self._offsets_committed_at >= self._limits.kafka_offsets_commit_interval_seconds:
            self._offsets_committed_at = now
            await self.commit_kafka_offsets()

    async def trim_outboxes(
        self, partitions: Iterable[int] | None = None, *, idle_only: bool = False
    ) -> None:
        """Delete outbox rows the relay has published. ``idle_only`` (the periodic pass):
        only partitions that committed nothing since the last such pass, as a busy one's
        next commit trims its outbox in the same statement."""
        lanes = self._lanes()
        chosen = lanes.keys() if partitions is None else partitions
        for state in [lanes[p].state for p in chosen if p in lanes]:
            if idle_only:
                busy = state.position != state.position_at_last_pass
                state.position_at_last_pass = state.position
                if busy:
                    continue
            acked = self._relay.settle(state.partition)
            if acked > state.trimmed_below:
                try:
                    await state.store.trim_outbox(
                        state.partition, state.epoch, state.trimmed_below, acked
                    )
                    state.trimmed_below = acked
                except CupUnavailableError as error:
                    log.warning("partition %d: outbox trim failed: %s", state.partition, error)

    async def prune_expired(self) -> None:
        """Move each owned partition's idempotency horizon with the clock (in the ledger
        first, so it refuses what the horizon passed, then in the cup: an idle partition
        commits nothing that would carry it), then delete the records the committed horizon
        has passed, in statements of ``prune_rows_max`` rows: each is short, and commits of
        the partition go on between them (engine.core.ledger has the window's rules)."""
        window_start_ms = (
            time.time_ns() // 1_000_000 - self._limits.idempotency_window_seconds * 1000
        )
        for partition, lane in list(self._lanes().items()):
            state = lane.state
            state.ledger.raise_horizon(window_start_ms)
            horizon_ms = state.ledger.horizon_ms
            self._metrics.idempotency_horizon.labels(str(partition)).set(horizon_ms / 1000)
            try:
                await state.store.advance_horizon(partition, state.epoch, horizon_ms)
                await self._prune_partition(state.store, partition)
            except CupUnavailableError as error:
                log.warning("partition %d: pruning failed: %s", partition, error)

    async def _prune_partition(self, store: CupStore, partition: int) -> None:
        rows_max = self._limits.prune_rows_max
        for _ in range(PRUNE_STATEMENTS_PER_PARTITION_MAX):
            pruned = await store.prune_expired(partition, rows_max)
            self._metrics.records_pruned.inc(pruned)
            if pruned < rows_max:
                return

    async def make_journal_partitions(self, now_s: int) -> None:
        """In each cup of this worker's partitions, once it enters the last period made:
        the partitions of the current and the next period."""
        period = self._period_seconds
        cups = {lane.state.store.cup_id for lane in self._lanes().values()}
        for cup_id in sorted(cups):
            if now_s < self._journal_ready_until.get(cup_id, 0) - period:
                continue
            try:
                made = await self._stores[cup_id].make_journal_partitions(now_s, period)
            except CupUnavailableError as error:
                log.warning("cup %d: journal partitions not made: %s", cup_id, error)
                continue
            if made:
                log.info("cup %d: journal partitions made, ending %s", cup_id, made)
            self._journal_ready_until[cup_id] = period_start(now_s, period) + PERIODS_AHEAD * period

    def forget(self, partition: int) -> None:
        """The partition's gauges go with it."""
        for gauge in (
            self._metrics.lag,
            self._metrics.committed_offset,
            self._metrics.idempotency_horizon,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(str(partition))

    async def commit_kafka_offsets(self) -> None:
        offsets = {
            TopicPartition(topic, p): OffsetAndMetadata(offset, "")
            for p, lane in self._lanes().items()
            for topic, offset in zip(self._topics, lane.state.position, strict=True)
            if offset > 0
        }
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as error:
            log.debug("kafka offset commit skipped: %s", error)

    def _export_positions(self) -> None:
        metrics = self._metrics
        lanes = self._lanes()
        metrics.partitions_owned.set(len(lanes))
        assigned = self._consumer.assignment()
        for partition, lane in lanes.items():
            label = str(partition)
            position = lane.state.position
            metrics.committed_offset.labels(label).set(position.commands)
            lag = 0
            for topic, offset in zip(self._topics, position, strict=True):
                tp = TopicPartition(topic, partition)
                highwater = self._consumer.highwater(tp) if tp in assigned else None
                if highwater is None:
                    break
                lag += max(0, highwater - offset)
            else:
                metrics.lag.labels(label).set(lag)

    async def _export_in_flight(self) -> None:
        """Transfers debited by this worker's partitions and not settled (and those stuck),
        per cup."""
        by_cup: dict[int, list[int]] = {}
        for partition, lane in self._lanes().items():
            by_cup.setdefault(lane.state.store.cup_id, []).append(partition)
        for cup_id, partitions in by_cup.items():
            try:
                rows = await self._stores[cup_id].in_flight(
                    partitions, self._limits.transfer_stuck_seconds
                )
            except CupUnavailableError:
                self._metrics.set_cup_up(cup_id, False)
                continue
            label = str(cup_id)
            self._metrics.set_cup_up(cup_id, True)
            self._metrics.legs_in_flight.labels(label).set(sum(r.transfers for r in rows))
            self._metrics.transfers_stuck.labels(label).set(sum(r.stuck for r in rows))
            for row in rows:
                self._metrics.money_in_flight.labels(label, row.currency).set(row.money)
