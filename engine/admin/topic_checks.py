"""Reconcile's topic checks (6 and 10), streamed: the commands, internal and results topics
are read partition by partition in chunks of ``RECORDS_PER_CHUNK`` and matched on disk
(engine.admin.result_match), so memory does not grow with the history; from a checkpoint
(shards.reconcile_checkpoint) only the records after it are read.

Every consumed command has its result; results of an id agree (at most one of them
changed something: a rejection decided from the record alone is ``retried_after_rejection``
when the id came again right); a result record answers the command at the partition and
offset it names, else it is a notice (``results_well_formed``).

A result naming an offset before the run's start (a re-send of an older command, a
transfer settled after the checkpoint) is checked against its cup's record instead:
equal, it is authentic; other, two different results (what a full run, which reads both,
finds). With no record (pruned below the idempotency horizon, or a rejection that records
nothing) it can be checked to be well-formed and of its own partition, but not to name
its command, nor against the result the command first got: counted as
``results_unverified``, not reported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final, NamedTuple, Protocol

from engine.admin.answers import NOTHING_CHANGED_PREFIX, answer_of
from engine.admin.result_match import ResultMatcher, ResultRow, Unmatched
from engine.core.batch import routed
from engine.core.config import KafkaConfig
from engine.core.decoding import decode_command, decode_result, forwarded_partition, says_json
from engine.core.messages import LEG_TYPES, Invalid, Status, Undecodable, result_decoder
from engine.core.records import Position, ShardMap
from engine.core.routing import partition_of
from engine.kafka.topics import read_chunks
from shards.audit import Report
from shards.reconcile_checkpoint import CARRIED_IDS_MAX, Checkpoint, Mark

RECORDS_PER_CHUNK: Final = 5_000
"""Records read from a topic at a time."""


class Topics(NamedTuple):
    commands: str
    internal: str
    results: str


class TopicSource(Protocol):
    """Where the records come from: Kafka (``KafkaSource``), or a test's lists."""

    def chunks(self, topic: str, spans: dict[int, tuple[int, int]]) -> AsyncIterator[list[Any]]:
        """The records of ``topic`` in ``spans`` (partition: [start, end)), in chunks."""
        ...


class RecordReads(Protocol):
    """What the topic checks read of a cup (shards.cup_admin.CupAdmin has it)."""

    async def results_of(self, ids: Sequence[tuple[int, str]]) -> list[tuple[int, str, bytes]]: ...


class KafkaSource:
    def __init__(self, kafka: KafkaConfig) -> None:
        self.kafka = kafka
        self.topics = Topics(kafka.commands_topic, kafka.internal_topic, kafka.results_topic)

    def chunks(self, topic: str, spans: dict[int, tuple[int, int]]) -> AsyncIterator[list[Any]]:
        return read_chunks(self.kafka, topic, spans, RECORDS_PER_CHUNK)


async def check_topics(
    source: TopicSource,
    topics: Topics,
    positions: dict[int, Position],
    results_end: dict[int, int],
    bytes_max: int,
    shard_map: ShardMap,
    cups: Mapping[int, RecordReads],
    report: Report,
    since: Checkpoint,
) -> Checkpoint | None:
    """Checks 6 and 10 over the records after ``since`` (empty: all) up to ``positions``
    (commands and internal topic) and ``results_end``; the checkpoint that continues from
    here, or None when a partition would carry more than CARRIED_IDS_MAX."""
    starts = {p: since.get(p, Mark(0, 0, 0)) for p in positions}
    read = 0
    with ResultMatcher() as matcher:
        for topic in (topics.commands, topics.internal):
            internal = topic == topics.internal
            spans = {
                p: (_start(starts[p], internal), pos.of(internal)) for p, pos in positions.items()
            }
            async for chunk in source.chunks(topic, spans):
                read += len(chunk)
                _commands(matcher, chunk, bytes_max, shard_map.partitions, internal)
        matcher.consumed((p, c, -1) for p, mark in starts.items() for c in mark.unanswered)
        spans = {p: (starts[p].results_offset, end) for p, end in results_end.items()}
        async for chunk in source.chunks(topics.results, spans):
            read += len(chunk)
            matcher.results(_results(chunk, report))
        for unmatched in matcher.unmatched():
            await _unmatched(matcher, unmatched, starts, shard_map, cups, report)
        carried = _unanswered(matcher, report)
        for partition, command_id, count in (row for c in matcher.disagreeing() for row in c):
            report.add(
                "one_result",
                f"command {command_id} (partition {partition}): {count} different results",
            )
        report.counts.update(matcher.counts())
    report.counts["topic_records_read"] = read
    if any(len(ids) > CARRIED_IDS_MAX for ids in carried.values()):
        return None
    return {
        p: Mark(
            pos.commands,
            pos.internal,
            results_end.get(p, 0),
            tuple(sorted(carried.get(p, ()))),
        )
        for p, pos in positions.items()
    }


def _commands(
    matcher: ResultMatcher, records: list[Any], bytes_max: int, partitions: int, internal: bool
) -> None:
    consumed: list[tuple[int, str, int]] = []
    located: list[tuple[int, int, str, int]] = []
    for record in records:
        answered_in = _answered_in(record, bytes_max, partitions, internal)
        if answered_in is None:
            continue
        command_id, partition, forward, issued_at_ms = answered_in
        if not forward:  # a forward is the second hop of a command counted already
            consumed.append((partition, command_id, record.offset))
        if partition == record.partition:
            located.append((record.partition, record.offset, command_id, issued_at_ms))
    matcher.consumed(consumed)
    matcher.located(located)


def _answered_in(
    record: Any, bytes_max: int, partitions: int, internal: bool
) -> tuple[str, int, bool, int] | None:
    """(id, partition whose result answers it, whether the record is a worker's forward,
    its issue time: 0 for a record rejected from itself) of a command record of the
    commands or the ``internal`` topic; None when it owes no result (a dead letter, a
    leg). A record over ``bytes_max`` went to the DLQ undecoded."""
    value = record.value or b""
    if len(value) > bytes_max:
        return None
    headers = record.headers or ()
    command = routed(decode_command(value, json=says_json(headers) or None), internal)
    if isinstance(command, (Undecodable, *LEG_TYPES)):
        return None
    forward = forwarded_partition(headers, partitions) >= 0
    if isinstance(command, Invalid):
        return command.id, record.partition, forward, 0
    if forward:
        return command.id, record.partition, forward, command.issued_at_ms
    return command.id, partition_of(command.customer, partitions), False, command.issued_at_ms


def _results(records: list[Any], report: Report) -> list[ResultRow]:
    """The well-formed results of their own partition (others are notices); a conflict
    answers another command with the same id, so it is left out of the matching."""
    rows: list[ResultRow] = []
    for record in records:
        where = f"results partition {record.partition} offset {record.offset}"
        result = decode_result(record.value)
        if isinstance(result, Undecodable):
            report.notice("results_well_formed", f"{where}: not a result ({result.detail[:80]})")
            continue
        if result.partition != record.partition:
            report.notice(
                "results_well_formed", f"{where}: names partition {result.partition}, not its own"
            )
            continue
        if result.status is Status.PENDING:
            report.add("one_result", f"command {result.command_id}: a pending result was published")
        answer = answer_of(result)
        real = not answer.startswith(NOTHING_CHANGED_PREFIX)
        rows.append(
            ResultRow(
                record.partition, record.offset, result.command_id, result.offset, answer, real
            )
        )
    return rows


async def _unmatched(
    matcher: ResultMatcher,
    rows: list[Unmatched],
    starts: dict[int, Mark],
    shard_map: ShardMap,
    cups: Mapping[int, RecordReads],
    report: Report,
) -> None:
    """Results naming no record read: before the run's start (checked against the cup's
    record), else a notice."""
    old: list[Unmatched] = []
    for row in rows:
        start = starts.get(row.partition, Mark(0, 0, 0))
        if row.offset < max(start.commands_offset, start.internal_offset):
            old.append(row)
        else:
            report.notice(
                "results_well_formed",
                f"results partition {row.partition} offset {row.result_offset}: answers "
                f"{row.command_id[:80]!r}, but offset {row.offset} holds another command",
            )
    records: dict[tuple[int, str], bytes] = {}
    for cup_id in {shard_map.cup_of[row.partition] for row in old}:
        wanted = [
            (r.partition, r.command_id) for r in old if shard_map.cup_of[r.partition] == cup_id
        ]
        for partition, command_id, result in await cups[cup_id].results_of(wanted):
            records[(partition, command_id)] = answer_of(result_decoder.decode(result))
    accepted: list[int] = []
    unverified = 0
    for row in old:
        record = records.get((row.partition, row.command_id))
        if record is None or record == row.answer or not row.real:
            unverified += record is None
            accepted.append(row.row_id)
            continue
        report.add(
            "one_result",
            f"command {row.command_id} (partition {row.partition}): the result at results "
            f"offset {row.result_offset} is not the one recorded",
        )
    matcher.accept(accepted)
    report.counts["results_unverified"] = report.counts.get("results_unverified", 0) + unverified


def _unanswered(matcher: ResultMatcher, report: Report) -> dict[int, list[str]]:
    """Report the commands consumed without a result, except transfers in flight: those
    are carried forward, by partition."""
    carried: dict[int, list[str]] = {}
    for chunk in matcher.unanswered():
        for partition, command_id, _ in chunk:
            if (partition, command_id) in report.pending_ids:
                carried.setdefault(partition, []).append(command_id)
            else:
                report.add(
                    "one_result",
                    f"command {command_id} (partition {partition}): consumed, no result",
                )
    return carried


def _start(mark: Mark, internal: bool) -> int:
    return mark.internal_offset if internal else mark.commands_offset
