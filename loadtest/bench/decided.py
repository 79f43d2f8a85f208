"""Batches decided in memory by the pure ledger, ready for the store's fenced commit.

A ``Simulation`` plays the engine without Kafka: one virtual command log per partition
(offsets from 0), cut into batches of at most ``batch_records`` records, each decided by
the partition's ``PartitionLedger``. Saga legs are appended to their target partition's
log, as the relay would publish them, and decided in later batches. The outcome is one
chain of ``CommitBatch`` per partition, to commit in order (each batch's
``expected_offset`` is the previous one's ``next_offset``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from engine.core.authority import fresh_authority
from engine.core.batch import Decoded, Fence, build_commit
from engine.core.book import Incoming
from engine.core.errors import invariant
from engine.core.ledger import PartitionLedger
from engine.core.messages import Command, fingerprint
from engine.core.records import CommitBatch, CommitStatus, Position
from engine.core.routing import partition_of
from engine.core.store import CupStore

Chains = dict[int, list[CommitBatch]]


@dataclass(slots=True)
class Decided:
    """What a simulation decided for one set of commands."""

    chains: Chains = field(default_factory=dict)
    journal_rows: int = 0
    results: int = 0
    """Results published (the final one of each client command)."""


class Simulation:
    def __init__(self, partitions: int, epochs: Mapping[int, int], batch_records: int, now_us: int):
        invariant(batch_records >= 1, "batches hold at least one record")
        invariant(len(epochs) == partitions, "every partition is claimed")
        self.partitions = partitions
        self.epochs = dict(epochs)
        self.batch_records = batch_records
        self.now_us = now_us
        self.ledgers = {p: PartitionLedger(p, partitions, {}) for p in range(partitions)}
        self.authority, _ = fresh_authority("bench.commands")
        self.positions = dict.fromkeys(range(partitions), 0)
        self.trimmed = dict.fromkeys(range(partitions), 0)
        """Per partition: each batch trims the outbox rows of the ones before it (as if
        published), from where the previous trim stopped."""
        self._logs: dict[int, deque[Incoming]] = {p: deque() for p in range(partitions)}

    def decide(self, commands: Iterable[Command]) -> Decided:
        """Log ``commands``, then decide batches until every log, legs included, is empty."""
        for command in commands:
            self._append(partition_of(command.customer, self.partitions), command)
        decided = Decided()
        while any(self._logs.values()):
            for partition, log in self._logs.items():
                if log:
                    batch = self._decide_batch(partition, log)
                    decided.chains.setdefault(partition, []).append(batch)
                    decided.journal_rows += len(batch.outcome.journal)
                    decided.results += len(batch.outcome.published)
        return decided

    def customer_total(self) -> int:
        """Money held by customers over every partition (minor units)."""
        return sum(
            account.balance
            for ledger in self.ledgers.values()
            for account in ledger.book.accounts.values()
            if not account.is_system
        )

    def _append(self, partition: int, command: Command) -> None:
        log = self._logs[partition]
        offset = self.positions[partition] + len(log)
        log.append(Incoming(offset, offset, 0, command, fingerprint(command)))

    def _decide_batch(self, partition: int, log: deque[Incoming]) -> CommitBatch:
        incoming = [log.popleft() for _ in range(min(self.batch_records, len(log)))]
        outcome = self.ledgers[partition].decide_batch(incoming, {}, self.now_us)
        expected = self.positions[partition]
        # Legs take offsets after every record already logged, in the same input: the
        # ceiling measures the cup's commits, not which topic legs travel on.
        self.positions[partition] = incoming[-1].offset + 1
        for leg in outcome.legs:
            target_log = self._logs[leg.partition]
            offset = self.positions[leg.partition] + len(target_log)
            signed = self.authority.sign_leg(leg.command, leg.partition)
            target_log.append(Incoming(offset, offset, 0, signed, fingerprint(signed)))
        end = Position(incoming[-1].offset + 1, 0)
        fence = Fence(partition, self.epochs[partition], Position(expected, 0), end)
        trim = (self.trimmed[partition], expected)
        self.trimmed[partition] = expected
        return build_commit(fence, outcome, Decoded(end), trim, self.authority)


async def commit_chains(
    stores: Mapping[int, CupStore], chains: Chains, rounds_per_cup: int = 1
) -> list[str]:
    """Commit every partition's chain in order, as a worker's rounds do: each cup's
    partitions are dealt into ``rounds_per_cup`` groups, and each group commits the next
    batch of all its partitions in one statement, all groups of all cups at once. The
    problems found, empty when all committed."""
    by_cup: dict[int, list[int]] = {}
    for partition in sorted(chains):
        by_cup.setdefault(stores[partition].cup_id, []).append(partition)
    groups = [
        partitions[start::rounds_per_cup]
        for partitions in by_cup.values()
        for start in range(min(rounds_per_cup, len(partitions)))
    ]

    async def commit_group(partitions: list[int]) -> list[str]:
        store = stores[partitions[0]]
        for index in range(max(len(chains[p]) for p in partitions)):
            batches = [chains[p][index] for p in partitions if index < len(chains[p])]
            statuses = await store.commit_many(batches)
            refused = [b for b in batches if statuses[b.partition] is not CommitStatus.COMMITTED]
            if refused:
                return [
                    f"partition {b.partition} at offset {b.expected_offset}: "
                    f"{statuses[b.partition].value}"
                    for b in refused
                ]
        return []

    found = await asyncio.gather(*(commit_group(group) for group in groups))
    return [problem for problems in found for problem in problems]
