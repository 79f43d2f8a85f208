"""Reconcile's streamed topic checks (engine.admin.topic_checks) and its checkpoint
(shards.reconcile_checkpoint), on histories held in lists: the same findings from one
full run as from a run continuing a checkpoint saved at any point of the history."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.admin.topic_checks import Topics, check_topics
from engine.core.messages import Balance, Deposit, Reason, Result, Status
from engine.core.records import Position, ShardMap
from engine.core.routing import partition_of
from shards.audit import Report
from shards.reconcile_checkpoint import Checkpoint, Mark, why_unusable

PARTITIONS = 2
TOPICS = Topics("c", "i", "r")


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    value: bytes
    headers: tuple[()] = ()


@dataclass
class History:
    """Topics as lists, and the cup's records, built command by command."""

    topics: dict[str, dict[int, list[Record]]] = field(
        default_factory=lambda: {t: {p: [] for p in range(PARTITIONS)} for t in TOPICS}
    )
    records: dict[tuple[int, str], bytes] = field(default_factory=dict)
    pending: set[tuple[int, str]] = field(default_factory=set)

    def append(self, topic: str, partition: int, value: bytes) -> int:
        log = self.topics[topic][partition]
        log.append(Record(partition, len(log), value))
        return len(log) - 1

    def command(self, customer: int, command_id: str, issued_at_ms: int = 1) -> tuple[int, int]:
        partition = partition_of(customer, PARTITIONS)
        deposit = Deposit(command_id, customer, 1, 5, "EUR", issued_at_ms=issued_at_ms)
        value = msgspec.msgpack.encode(deposit)
        return partition, self.append("c", partition, value)

    def answer(self, partition: int, command_id: str, offset: int, amount: int = 5) -> None:
        result = Result(
            command_id,
            Status.ACCEPTED,
            balances=(Balance(1, 1, amount),),
            partition=partition,
            offset=offset,
        )
        encoded = msgspec.msgpack.encode(result)
        self.records.setdefault((partition, command_id), encoded)
        self.append("r", partition, encoded)

    def ends(self) -> tuple[dict[int, Position], dict[int, int]]:
        positions = {
            p: Position(len(self.topics["c"][p]), len(self.topics["i"][p]))
            for p in range(PARTITIONS)
        }
        return positions, {p: len(self.topics["r"][p]) for p in range(PARTITIONS)}


class Source:
    def __init__(self, history: History) -> None:
        self.history = history

    async def chunks(
        self, topic: str, spans: dict[int, tuple[int, int]]
    ) -> AsyncIterator[list[Any]]:
        for partition, (start, end) in sorted(spans.items()):
            log = self.history.topics[topic][partition]
            for at in range(start, end, 3):
                yield log[at : min(at + 3, end)]


class Cup:
    def __init__(self, history: History) -> None:
        self.history = history

    async def results_of(self, ids: Sequence[tuple[int, str]]) -> list[tuple[int, str, bytes]]:
        return [
            (p, c, self.history.records[(p, c)]) for p, c in ids if (p, c) in self.history.records
        ]


SHARD_MAP = ShardMap(1, PARTITIONS, "t", {0: "cup"}, {p: 0 for p in range(PARTITIONS)})


async def run(
    history: History, since: Checkpoint, upto: tuple[dict[int, Position], dict[int, int]]
) -> tuple[Report, Checkpoint | None]:
    report = Report(pending_ids=set(history.pending))
    positions, results_end = upto
    following = await check_topics(
        Source(history),
        TOPICS,
        positions,
        results_end,
        1 << 20,
        SHARD_MAP,
        {0: Cup(history)},
        report,
        since,
    )
    return report, following


def findings(report: Report) -> set[tuple[str, str]]:
    return {
        (check, match.group(1) if (match := re.search(r"command (\S+)", f)) else f)
        for check, found in report.problems.items()
        for f in found
    }


async def test_a_clean_history_saves_where_it_stopped() -> None:
    history = History()
    for n in range(10):
        partition, offset = history.command(n, f"d{n}")
        history.answer(partition, f"d{n}", offset)
    report, following = await run(history, {}, history.ends())
    assert report.ok, report.problems
    assert report.counts["commands_consumed"] == 10
    assert report.counts["topic_records_read"] == 20
    positions, results_end = history.ends()
    assert following == {
        p: Mark(positions[p].commands, 0, results_end[p]) for p in range(PARTITIONS)
    }


async def test_a_missing_and_a_second_result_are_found() -> None:
    history = History()
    partition, offset = history.command(1, "lost")
    partition, offset = history.command(2, "twice")
    history.answer(partition, "twice", offset)
    history.answer(partition, "twice", offset, amount=6)
    report, following = await run(history, {}, history.ends())
    assert findings(report) == {("one_result", "lost"), ("one_result", "twice")}
    assert following is not None


async def test_an_id_used_again_after_its_window_is_another_command() -> None:
    """Two answers of one id agree when their commands were issued at one time: an id
    issued again (its first record expired) is answered on its own."""
    history = History()
    partition, first = history.command(2, "again", issued_at_ms=1)
    history.answer(partition, "again", first)
    partition, second = history.command(2, "again", issued_at_ms=2)
    history.answer(partition, "again", second, amount=6)
    report, _ = await run(history, {}, history.ends())
    assert report.ok, report.problems
    partition, third = history.command(2, "again", issued_at_ms=2)
    history.answer(partition, "again", third, amount=7)
    report, _ = await run(history, {}, history.ends())
    assert findings(report) == {("one_result", "again")}


async def test_a_conflict_after_the_checkpoint_answers_its_record() -> None:
    """The id's command answered before the checkpoint, a record with other content after
    it answered ``duplicate_conflict`` only: answered, no finding."""
    history = History()
    partition, offset = history.command(2, "grant")
    history.answer(partition, "grant", offset)
    _, following = await run(history, {}, history.ends())
    assert following is not None
    partition, again = history.command(2, "grant", issued_at_ms=2)
    conflict = Result(
        "grant",
        Status.REJECTED,
        Reason.DUPLICATE_CONFLICT,
        "command id grant was used before for another command",
        partition=partition,
        offset=again,
    )
    history.append("r", partition, msgspec.msgpack.encode(conflict))
    report, _ = await run(history, following, history.ends())
    assert report.ok, report.problems
    assert report.counts["topic_records_read"] == 2


async def test_a_transfer_in_flight_is_carried_then_answered() -> None:
    history = History()
    partition, offset = history.command(3, "flight")
    history.pending.add((partition, "flight"))
    first, following = await run(history, {}, history.ends())
    assert first.ok and following is not None
    assert following[partition].unanswered == ("flight",)
    history.pending.clear()
    history.answer(partition, "flight", offset)
    second, _ = await run(history, following, history.ends())
    assert second.ok, second.problems
    assert second.counts["topic_records_read"] == 1
    history.command(4, "later")
    third, _ = await run(history, following, history.ends())
    assert findings(third) == {("one_result", "later")}


def test_a_checkpoint_past_the_topics_end_is_refused() -> None:
    checkpoint = {0: Mark(5, 0, 5), 1: Mark(2, 0, 2)}
    ends = {"commands": {0: 5, 1: 2}, "internal": {0: 0, 1: 0}, "results": {0: 5, 1: 2}}
    assert why_unusable(checkpoint, 2, ends) is None
    assert "have 3" in (why_unusable(checkpoint, 3, ends) or "")
    ends["results"] = {0: 4, 1: 2}
    assert "results topic's partition 0 ends at 4" in (why_unusable(checkpoint, 2, ends) or "")


Step = tuple[int, int]
"""(customer, what happens): 0 answered, 1 no result, 2 re-sent, 3 re-sent and answered
otherwise, 4 in flight (answered later), 5 a result naming another command."""


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 5)), max_size=30), st.data())
async def test_a_run_from_any_checkpoint_finds_what_a_full_run_finds(
    steps: list[Step], data: st.DataObject
) -> None:
    history = History()
    split = data.draw(st.integers(0, len(steps)))
    since: Checkpoint = {}
    flying: list[tuple[int, str, int]] = []
    for n, (customer, fate) in enumerate(steps):
        if n == split:
            report, following = await run(history, since, history.ends())
            since = following if report.ok and following is not None else {}
            for partition, command_id, offset in flying:
                history.pending.discard((partition, command_id))
                history.answer(partition, command_id, offset)
            flying.clear()
        _play(history, f"x{n}", customer, fate, flying)
    for partition, command_id, offset in flying:
        history.pending.discard((partition, command_id))
        history.answer(partition, command_id, offset)
    full, _ = await run(history, {}, history.ends())
    continued, _ = await run(history, since, history.ends())
    assert findings(continued) == findings(full)


def _play(history: History, command_id: str, customer: int, fate: int, flying: list[Any]) -> None:
    partition, offset = history.command(customer, command_id)
    if fate == 1:
        return
    if fate == 4:
        history.pending.add((partition, command_id))
        flying.append((partition, command_id, offset))
        return
    history.answer(partition, command_id, offset)
    if fate in (2, 3):
        history.command(customer, command_id)
        history.answer(partition, command_id, offset, amount=5 if fate == 2 else 7)
    if fate == 5:
        history.answer(partition, "forged", offset)


async def test_a_pruned_record_is_not_missed_and_its_result_not_checked() -> None:
    history = History()
    partition, offset = history.command(5, "old")
    history.answer(partition, "old", offset)
    first, following = await run(history, {}, history.ends())
    assert first.ok and following is not None
    history.command(5, "old")  # re-sent: answered with the first result, naming offset 0
    history.answer(partition, "old", offset, amount=8)  # (not the first: nothing can tell)
    del history.records[(partition, "old")]  # pruned below the idempotency horizon
    second, _ = await run(history, following, history.ends())
    assert second.ok, second.problems
    assert second.counts["results_unverified"] == 1
    assert not second.notices


async def test_no_checkpoint_when_a_partition_carries_too_many(monkeypatch: Any) -> None:
    monkeypatch.setattr("engine.admin.topic_checks.CARRIED_IDS_MAX", 1)
    history = History()
    for n in range(2):
        partition, _ = history.command(7, f"flight{n}")
        history.pending.add((partition, f"flight{n}"))
    report, following = await run(history, {}, history.ends())
    assert report.ok
    assert following is None
