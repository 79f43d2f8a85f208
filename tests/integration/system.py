"""A fresh smallcups system on the running local stack, for one test.

Fresh databases (a control database and N cups), a fresh topic prefix and consumer
group; worker processes started as real ``smallcups worker`` children.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.admin import initialize
from engine.book import Incoming, Known
from engine.config import Config, KafkaConfig, ShardsConfig, to_environ
from engine.ledger import PartitionLedger
from engine.messages import Command, Invalid, decode_command, fingerprint
from engine.topics import partition_counts
from loadtest.workers import WorkerProcess
from shards.control import ShardMap
from shards.cups import close_cups, open_cups
from shards.store import CupStore


@dataclass
class System:
    config: Config
    shard_map: ShardMap
    log_dir: Path
    databases: list[str]
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(
            f"w{len(self.workers)}",
            self.log_dir / f"worker-{len(self.workers)}.log",
            env={**to_environ(self.config), **(env or {})},
        )
        worker.start()
        self.workers.append(worker)
        return worker

    def stop_all(self) -> list[int]:
        return [worker.stop() for worker in self.workers]

    def worker_logs(self) -> str:
        return "\n".join(w.log_path.read_text(errors="replace")[-3000:] for w in self.workers)


async def make_system(base: Config, tmp_path: Path, *, partitions: int, cups: int) -> System:
    run = uuid.uuid4().hex[:10]
    names = [f"t{run}_control"] + [f"t{run}_cup_{i}" for i in range(cups)]
    admin = await asyncpg.connect(base.stack.control_dsn)
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsns = [base.stack.database_dsn(name) for name in names]
    kafka = msgspec.structs.replace(
        base.kafka, topic_prefix=f"t{run}", group_id=f"t{run}-workers", partitions=partitions
    )
    shards = ShardsConfig(control_dsn=dsns[0], cup_dsns=dsns[1:])
    config = msgspec.structs.replace(base, kafka=kafka, shards=shards)
    report = await initialize(config)
    return System(config, report.shard_map, tmp_path, names)


async def drop_system(base: Config, system: System) -> None:
    system.stop_all()
    admin = await asyncpg.connect(base.stack.control_dsn)
    try:
        for name in system.databases:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def read_topic(kafka: KafkaConfig, topic: str) -> list[Any]:
    """Every record of ``topic`` from the beginning to its current end."""
    count = (await partition_counts(kafka, [topic]))[topic]
    tps = [TopicPartition(topic, p) for p in range(count)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        records: list[Any] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            fetched = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, batch in fetched.items():
                records.extend(r for r in batch if r.offset < ends[tp])
                if batch and batch[-1].offset >= ends[tp] - 1:
                    remaining.discard(tp)
        return records
    finally:
        await consumer.stop()


def replay(records: Sequence[Any], partitions: int) -> dict[tuple[int, int, int], int]:
    """Balances from the pure ledger fed the command topic in offset order."""
    ledgers: dict[int, PartitionLedger] = {}
    known: dict[int, dict[str, Known]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        parsed = decode_command(record.value)
        if not isinstance(parsed, Command | Invalid):
            continue
        ledger = ledgers.setdefault(
            record.partition, PartitionLedger(record.partition, partitions, {})
        )
        seen = known.setdefault(record.partition, {})
        digest = 0 if isinstance(parsed, Invalid) else fingerprint(parsed)
        outcome = ledger.decide_batch([Incoming(record.offset, 0, parsed, digest)], seen, 0)
        for applied in outcome.applied:
            seen[applied.command_id] = Known(applied.fingerprint, applied.result)
    return {
        (partition, *key): account.balance
        for partition, ledger in ledgers.items()
        for key, account in ledger.accounts.items()
    }


async def cup_balances(system: System) -> dict[tuple[int, int, int], int]:
    stores = await open_cups(system.shard_map, system.config.shards)
    try:
        rows = await asyncio.gather(*(_balances(store) for store in stores.values()))
    finally:
        await close_cups(stores)
    return {key: balance for part in rows for key, balance in part.items()}


async def _balances(store: CupStore) -> dict[tuple[int, int, int], int]:
    rows = await store.pool.fetch(
        "SELECT partition, customer_id, account_no, balance FROM accounts"
    )
    return {(r["partition"], r["customer_id"], r["account_no"]): r["balance"] for r in rows}
