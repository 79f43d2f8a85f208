"""What the integration tests read back from a system (loadtest.system makes them):
a topic from its start, a pure-ledger replay of the command topic, the cups' balances.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from engine.admin.setup import read_shard_map
from engine.core.authority import Authority
from engine.core.batch import decode_records
from engine.core.book import Known
from engine.core.config import KafkaConfig, WorkerConfig
from engine.core.ledger import PartitionLedger
from engine.core.messages import Status, result_decoder
from engine.kafka.topics import end_offsets, read_range
from loadtest.system import System
from shards.cups import close_cups, open_cups
from shards.store import PostgresCupStore


async def read_topic(kafka: KafkaConfig, topic: str) -> list[Any]:
    """Every record of ``topic`` from the beginning to its current end."""
    return await read_range(kafka, topic, await end_offsets(kafka, topic))


async def final_results(kafka: KafkaConfig) -> dict[str, set[bytes]]:
    """Every distinct result published per command id; a PENDING one fails the test."""
    finals: dict[str, set[bytes]] = {}
    for record in await read_topic(kafka, kafka.results_topic):
        result = result_decoder.decode(record.value)
        assert result.status is not Status.PENDING, f"pending result of {result.command_id}"
        finals.setdefault(result.command_id, set()).add(record.value)
    return finals


def replay(
    records: Sequence[Any], partitions: int, authority: Authority
) -> dict[tuple[int, int, int], int]:
    """Balances from the pure ledger fed the command topic in offset order, each record
    decoded and its proofs checked as a worker does (a forged leg changes nothing)."""
    ledgers: dict[int, PartitionLedger] = {}
    known: dict[int, dict[str, Known]] = {}
    bytes_max = WorkerConfig().message_bytes_max
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        decoded = decode_records([record], bytes_max, authority, partitions)
        ledger = ledgers.setdefault(
            record.partition, PartitionLedger(record.partition, partitions, {})
        )
        seen = known.setdefault(record.partition, {})
        outcome = ledger.decide_batch(decoded.incoming, seen, 0)
        for applied in outcome.applied:
            seen[applied.command_id] = Known(applied.fingerprint, applied.result)
    return {
        (partition, *key): account.balance
        for partition, ledger in ledgers.items()
        for key, account in ledger.book.accounts.items()
    }


async def cup_balances(system: System) -> dict[tuple[int, int, int], int]:
    """Every account balance in the cups of the current shard map (cups may have moved)."""
    stores = await open_cups(await read_shard_map(system.config), system.config.shards)
    try:
        rows = await asyncio.gather(*(_balances(store) for store in stores.values()))
    finally:
        await close_cups(stores)
    return {key: balance for part in rows for key, balance in part.items()}


async def _balances(store: PostgresCupStore) -> dict[tuple[int, int, int], int]:
    rows = await store.pool.fetch(
        "SELECT partition, customer_id, account_no, balance FROM accounts"
    )
    return {(r["partition"], r["customer_id"], r["account_no"]): r["balance"] for r in rows}
