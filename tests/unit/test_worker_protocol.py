"""Deterministic simulation of the worker protocol: the real commit round over a model cup.

A hypothesis RuleBasedStateMachine plays one partition: commands are appended to its
log, workers claim it (each claim bumps the epoch), commit batches from their own
position, crash (their memory is gone), go stale (a later claim fenced them), have a
commit's reply lost after it was applied, and publish their outbox late, twice or never
(the next owner re-sends what is unsent). The code under test is the worker's one commit
path, engine.worker.commit_round (decode, decide with the pure ledger, the fenced
commit, the read-back of an unclear outcome, a batch refused for duplicates decided
again); the cup is SimulatedCup, a model of the store protocol's fenced commit
(compare-and-set on epoch and next_offset, refused on a recorded id).

After every step:

1. the cup's balances equal a pure-ledger replay of the log up to its next_offset, so
   every consumed command took effect exactly once whatever crashed;
2. money is conserved: all balances (customers and the system's cash account) sum to
   zero, and every balance equals the sum of its journal rows;
3. each command id has at most one distinct published result (re-sends are identical).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from engine.admin.answers import answer_of
from engine.core.authority import fresh_authority
from engine.core.book import (
    SYSTEM_CUSTOMER,
    Account,
    AccountKey,
    CreditKind,
    CreditRow,
    InFlight,
    Known,
)
from engine.core.config import WorkerConfig
from engine.core.errors import CupUnavailableError
from engine.core.messages import (
    Command,
    Deposit,
    OpenAccount,
    Reason,
    SetCreditLimit,
    Transfer,
    Withdraw,
    encode,
    issued,
    result_decoder,
)
from engine.core.records import (
    Claim,
    CommitBatch,
    CommitStatus,
    InFlightFigures,
    OutboxKind,
    OutboxRow,
    Position,
)
from engine.worker.commit_round import RoundInput, Verdict, commit_round
from engine.worker.metrics import WorkerMetrics
from engine.worker.partition import PartitionState
from tests.integration.system import replay

PARTITION = 0
PARTITIONS = 1
CUSTOMERS = (11, 12, 13)
TOPIC = "sim.commands"
LIMITS = WorkerConfig(commit_retry_max=3)
AUTHORITY, RISK = fresh_authority(TOPIC)
LOSE_ONE_IN = 5
"""One commit in this many loses its reply (each costs the worker's 50 ms back-off)."""


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: int
    headers: tuple[tuple[str, bytes], ...] = ()


class SimulatedCup:
    """The state of one cup for one partition, with the store's commit semantics
    (engine.core.store.CupStore)."""

    cup_id = 0

    def __init__(self) -> None:
        self.claim_state = Claim(0, 0, 0)
        self.accounts: dict[AccountKey, Account] = {}
        self.journal: list[tuple[AccountKey, int]] = []
        self.known: dict[str, tuple[int, bytes]] = {}
        self.issued_at_ms: dict[str, int] = {}
        self.outbox: dict[tuple[int, int], OutboxRow] = {}
        self.flights: dict[str, InFlight] = {}
        self.credit: dict[tuple[CreditKind, str], CreditRow] = {}
        self.lose_next_reply = False

    async def claim(self, partition: int, owner: str) -> Claim:
        state = self.claim_state
        self.claim_state = state._replace(epoch=state.epoch + 1)
        return self.claim_state

    async def states(self, partitions: Sequence[int]) -> dict[int, Claim]:
        return {partition: self.claim_state for partition in partitions}

    async def renew_connections(self) -> None:
        """A simulated cup has no pooled connections to replace."""

    async def advance_horizon(self, partition: int, epoch: int, horizon_ms: int) -> None:
        state = self.claim_state
        if state.epoch == epoch and state.expired_before_ms < horizon_ms:
            self.claim_state = state._replace(expired_before_ms=horizon_ms)

    async def prune_expired(self, partition: int, rows_max: int) -> int:
        horizon_ms = self.claim_state.expired_before_ms
        expired = [
            command_id
            for command_id, issued_at_ms in self.issued_at_ms.items()
            if issued_at_ms < horizon_ms and command_id not in self.flights
        ][:rows_max]
        for command_id in expired:
            del self.known[command_id], self.issued_at_ms[command_id]
        return len(expired)

    async def close(self) -> None:
        """Nothing to close."""

    async def next_offsets(self) -> dict[int, int]:
        return {PARTITION: self.claim_state.next_offset}

    async def in_flight(
        self, partitions: Sequence[int], stuck_after_seconds: float
    ) -> list[InFlightFigures]:
        return []

    async def load_partition(self, partition: int, limit: int) -> list[Account]:
        return [dataclasses.replace(a) for a in list(self.accounts.values())[:limit]]

    async def load_accounts(self, partition: int, keys: Sequence[AccountKey]) -> list[Account]:
        return [dataclasses.replace(self.accounts[k]) for k in keys if k in self.accounts]

    async def load_in_flight(self, partition: int) -> list[InFlight]:
        return list(self.flights.values())

    async def load_credit(self, partition: int) -> list[CreditRow]:
        return [row for row in self.credit.values() if row.open]

    async def load_known(self, partition: int, command_ids: Sequence[str]) -> dict[str, Known]:
        found = {i: self.known[i] for i in command_ids if i in self.known}
        return {i: Known(fp, result_decoder.decode(raw)) for i, (fp, raw) in found.items()}

    async def commit_many(self, batches: Sequence[CommitBatch]) -> dict[int, CommitStatus]:
        return {batch.partition: self._commit(batch) for batch in batches}

    def _commit(self, batch: CommitBatch) -> CommitStatus:
        expected = (batch.epoch, batch.expected_offset, batch.expected_internal)
        if self.claim_state.fence != expected:
            return CommitStatus.FENCED
        probed = [a.command_id for a in batch.outcome.applied]
        probed += [f.leg_id for f in batch.outcome.forged]
        if any(command_id in self.known for command_id in probed):
            return CommitStatus.DUPLICATES
        horizon_ms = max(self.claim_state.expired_before_ms, batch.outcome.horizon_ms)
        self.claim_state = Claim(batch.epoch, batch.next_offset, batch.next_internal, horizon_ms)
        for account in batch.outcome.changed.values():
            self.accounts[account.key] = dataclasses.replace(account)
        self.journal += [((j.customer, j.account), j.amount) for j in batch.outcome.journal]
        for applied, raw in zip(batch.outcome.applied, batch.applied_results, strict=True):
            self.known[applied.command_id] = (applied.fingerprint, raw)
            self.issued_at_ms[applied.command_id] = applied.issued_at_ms
        for final, raw in zip(batch.outcome.finals, batch.final_results, strict=True):
            self.known[final.command_id] = (self.known[final.command_id][0], raw)
        self.flights.update((t.transfer_id, t) for t in batch.outcome.opened)
        self.credit.update(batch.outcome.credit)
        for transfer_id in batch.outcome.settled:
            del self.flights[transfer_id]
        self.outbox.update({(r.src_offset, r.seq): r for r in batch.outbox})
        trimmed = range(batch.trim_from_offset, batch.trim_below_offset)
        self.outbox = {k: r for k, r in self.outbox.items() if k[0] not in trimmed}
        if self.lose_next_reply:
            self.lose_next_reply = False
            raise CupUnavailableError("the commit was applied, its reply lost")
        return CommitStatus.COMMITTED

    async def unsent(self, partition: int) -> list[OutboxRow]:
        return [self.outbox[k] for k in sorted(self.outbox)]

    async def trim_outbox(
        self, partition: int, epoch: int, from_offset: int, below_offset: int
    ) -> None:
        if epoch == self.claim_state.epoch:
            trimmed = range(from_offset, below_offset)
            self.outbox = {k: r for k, r in self.outbox.items() if k[0] not in trimmed}

    async def make_journal_partitions(self, now_s: int, period_seconds: int) -> list[int]:
        return []


class WorkerProtocol(RuleBasedStateMachine):
    workers = Bundle("workers")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.cup = SimulatedCup()
        self.log: list[Record] = []
        self.commands: list[Command] = []
        self.results: dict[str, set[bytes]] = defaultdict(set)
        self.states: dict[int, PartitionState] = {}
        self.metrics = WorkerMetrics()
        self.sequence = 0
        for customer in CUSTOMERS:
            self._append(OpenAccount(f"open-{customer}", customer, 1, "EUR"))
            self._append(RISK.sign(SetCreditLimit(f"limit-{customer}", customer, 1, 50)))

    def teardown(self) -> None:
        self.loop.close()

    def _append(self, command: Command) -> None:
        command = issued(command, time.time_ns() // 1_000_000)
        self.commands.append(command)
        value = encode(command)
        self.log.append(Record(TOPIC, PARTITION, len(self.log), b"k", value, 0))

    def _id(self) -> str:
        self.sequence += 1
        return f"c-{self.sequence}"

    @rule(
        kind=st.sampled_from(["deposit", "withdraw", "transfer"]),
        customer=st.sampled_from(CUSTOMERS),
        other=st.sampled_from(CUSTOMERS),
        amount=st.integers(-1, 120),
    )
    def publish(self, kind: str, customer: int, other: int, amount: int) -> None:
        """A new command (amount -1 and 0 are rejected, large ones may overdraw)."""
        command: Command
        match kind:
            case "deposit":
                command = Deposit(self._id(), customer, 1, amount, "EUR")
            case "withdraw":
                command = Withdraw(self._id(), customer, 1, amount, "EUR")
            case _:
                command = Transfer(self._id(), customer, 1, other, 1, amount, "EUR")
        self._append(command)

    @rule(data=st.data(), conflicting=st.booleans())
    def publish_again(self, data: st.DataObject, conflicting: bool) -> None:
        """A command id sent again: the same command, or another one under its id."""
        command = data.draw(st.sampled_from(self.commands))
        if conflicting and isinstance(command, Deposit):
            command = msgspec.structs.replace(command, amount=command.amount + 1)
        self._append(command)

    @rule(target=workers)
    def claim(self) -> int:
        """A worker is assigned the partition: bump the epoch, load, re-send the outbox."""
        claim = self._run(self.cup.claim(PARTITION, "sim"))
        state = PartitionState(
            PARTITION, PARTITIONS, self.cup, claim, LIMITS, AUTHORITY, f"{TOPIC}.internal"
        )
        self._run(state.load())
        self._publish(self._run(self.cup.unsent(PARTITION)))
        self.states[claim.epoch] = state
        epoch: int = claim.epoch
        return epoch

    @rule(
        epoch=workers,
        size=st.integers(1, 6),
        publish=st.booleans(),
        lose=st.integers(0, LOSE_ONE_IN - 1).map(lambda n: n == 0),
    )
    def process(self, epoch: int, size: int, publish: bool, lose: bool) -> None:
        """A worker commits its next batch; a stale one must be fenced and change nothing."""
        state = self.states.get(epoch)
        if state is None:
            return
        start = state.position.commands
        records = self.log[start : start + size]
        if not records:
            return
        stale = epoch != self.cup.claim_state.epoch
        before = (self.cup.claim_state, dict(self.cup.known), len(self.cup.journal))
        self.cup.lose_next_reply = lose and not stale
        round_input = RoundInput(state, records, 0)
        (result,) = self._run(
            commit_round([round_input], LIMITS, self.metrics, time.time_ns() // 1000)
        )
        if result.verdict is Verdict.FENCED:
            assert stale, "only a stale owner is fenced"
            assert before == (self.cup.claim_state, dict(self.cup.known), len(self.cup.journal))
            event("a stale owner was fenced")
            del self.states[epoch]
            return
        assert not stale, "a stale owner never commits"
        assert result.verdict is Verdict.COMMITTED and result.batch is not None
        batch = result.batch
        if lose:
            event("a commit's reply was lost")
        if publish:
            self._publish(batch.outbox)
            end = Position(batch.next_offset, batch.next_internal)
            self._run(self.cup.trim_outbox(PARTITION, epoch, 0, end.seq))

    @rule(epoch=consumes(workers))
    def crash(self, epoch: int) -> None:
        """The worker dies: its cache and unpublished outbox are gone with it."""
        self.states.pop(epoch, None)

    def _publish(self, rows: Sequence[OutboxRow]) -> None:
        for row in rows:
            if row.kind is OutboxKind.RESULT:
                result = result_decoder.decode(row.value)
                if result.reason is not Reason.DUPLICATE_CONFLICT:
                    self.results[result.command_id].add(answer_of(result))

    def _run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    @invariant()
    def exactly_once(self) -> None:
        consumed = self.log[: self.cup.claim_state.next_offset]
        replayed = replay(consumed, PARTITIONS, AUTHORITY).items()
        expected = {k: v for k, v in replayed if k[1] != SYSTEM_CUSTOMER or v != 0}
        actual = {
            (PARTITION, *key): a.balance
            for key, a in self.cup.accounts.items()
            if a.customer != SYSTEM_CUSTOMER or a.balance != 0
        }
        assert actual == expected

    @invariant()
    def money_conserved(self) -> None:
        assert sum(a.balance for a in self.cup.accounts.values()) == 0
        journal: dict[AccountKey, int] = defaultdict(int)
        for key, amount in self.cup.journal:
            journal[key] += amount
        assert all(a.balance == journal[k] for k, a in self.cup.accounts.items())

    @invariant()
    def one_result_per_command(self) -> None:
        assert all(len(variants) == 1 for variants in self.results.values())


WorkerProtocol.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, derandomize=True
)
TestWorkerProtocol = WorkerProtocol.TestCase
