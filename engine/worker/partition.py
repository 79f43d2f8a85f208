"""One owned partition: its cup, its claim, its cached account book.

The state a worker keeps of a partition it claimed, valid while its epoch is the cup's:
the position it read up to, the ledger with the accounts it cached (all of them when
they fit) and every transfer in flight. The commit round (engine.worker.commit_round)
decides batches with it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from engine.core.authority import Authority
from engine.core.batch import Decoded, Fence, build_commit
from engine.core.book import AccountKey, Incoming, Known
from engine.core.config import WorkerConfig
from engine.core.credit import CreditBook
from engine.core.errors import invariant
from engine.core.ledger import IdempotencyWindow, PartitionLedger
from engine.core.messages import (
    ChangeCreditLine,
    CloseBusinessDay,
    Draw,
    HoldFunds,
    Invalid,
    PostHold,
    RegisterPartner,
    Repay,
    SuspendCreditLine,
    Transfer,
    VoidHold,
)
from engine.core.records import Claim, CommitBatch, Position
from engine.core.store import CupStore


class PartitionState:
    """The worker's hold on one partition, valid while its epoch is the cup's."""

    def __init__(
        self,
        partition: int,
        partitions: int,
        store: CupStore,
        claim: Claim,
        config: WorkerConfig,
        authority: Authority,
        internal_topic: str,
    ):
        invariant(
            claim.epoch >= 1 and claim.next_offset >= 0 and claim.internal_offset >= 0,
            "a claim from the cup",
        )
        self.authority = authority
        self.partition = partition
        self.partitions = partitions
        self.store = store
        self.epoch = claim.epoch
        self.position = claim.position
        """Where the next batch starts, in the commands and the internal topic: the cup's
        next_offset and internal_offset as this worker last read or wrote them."""
        self.internal_topic = internal_topic
        """The topic legs and privileged commands come from (engine.core.batch)."""
        self.config = config
        self.accounts_max = max(1_000, config.accounts_cached_max // partitions)
        self.complete = False
        self.trimmed_below = 0
        self.position_at_last_pass = self.position
        """The position at the worker's last housekeeping pass (an idle partition's
        outbox is trimmed there)."""
        window = IdempotencyWindow(
            config.idempotency_window_seconds * 1000, config.issued_at_skew_max_seconds * 1000
        )
        self.ledger = PartitionLedger(partition, partitions, {}, window)
        self.ledger.raise_horizon(claim.expired_before_ms)

    async def load(self) -> None:
        """Bulk-load the partition's accounts (if they all fit, the book is complete) and
        all its transfers in flight."""
        accounts = await self.store.load_partition(self.partition, self.accounts_max)
        flights = await self.store.load_in_flight(self.partition)
        credit = await self.store.load_credit(self.partition)
        self.ledger.book.accounts = {a.key: a for a in accounts}
        self.ledger.book.load_in_flight(flights)
        self.ledger.credit.load(credit)
        self.complete = len(accounts) < self.accounts_max

    async def _ensure_accounts(self, incoming: Sequence[Incoming]) -> None:
        if self.complete:
            return
        book = self.ledger.book.accounts
        if len(book) > self.accounts_max:
            await self.load()
        credit = self.ledger.credit
        missing = {key for i in incoming for key in _keys(i, credit) if key not in book}
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
        invariant(decoded.end.seq > self.position.seq, "batches move forward")
        await self._ensure_accounts(decoded.incoming)
        outcome = self.ledger.decide_batch(decoded.incoming, known or {}, now_us)
        return build_commit(
            Fence(self.partition, self.epoch, self.position, decoded.end),
            outcome,
            decoded,
            (self.trimmed_below, trim_below),
            self.authority,
            self.config.results_encoding,
        )

    async def reload(self, decoded: Decoded) -> dict[str, Known]:
        """After a commit refused for duplicates: the book again, and the results of the
        batch's command ids that were applied before."""
        await self.load()
        ids = [i.command.id for i in decoded.incoming]
        return await self.store.load_known(self.partition, ids)

    def committed(self, batch: CommitBatch) -> None:
        """The cup took ``batch``: the next one starts where it ended."""
        invariant(batch.partition == self.partition, "a batch of this partition")
        expected = Position(batch.expected_offset, batch.expected_internal)
        end = Position(batch.next_offset, batch.next_internal)
        invariant(expected == self.position, "batches follow each other")
        invariant(
            end.commands >= expected.commands
            and end.internal >= expected.internal
            and end.seq > expected.seq,
            "a batch moves the position forward",
        )
        self.position = end
        self.trimmed_below = max(self.trimmed_below, batch.trim_below_offset)


def _keys(incoming: Incoming, credit: CreditBook) -> list[AccountKey]:
    """The accounts deciding ``incoming`` may read: named by the command, or by the credit
    line or hold it acts on (the credit book is always whole in memory)."""
    command = incoming.command
    match command:
        case Invalid() | CloseBusinessDay() | RegisterPartner():
            return []
        case Transfer() | HoldFunds():
            return [(command.customer, command.account), (command.to_customer, command.to_account)]
        case Draw() | Repay() | ChangeCreditLine() | SuspendCreditLine():
            line = credit.lines.get(command.customer)
            return [] if line is None else [(line.customer, line.account)]
        case PostHold() | VoidHold():
            hold = credit.holds.get(command.hold_id)
            return [] if hold is None else [hold.key, (hold.to_customer, hold.to_account)]
    return [(command.customer, command.account)]


def now_us() -> int:
    return time.time_ns() // 1000
