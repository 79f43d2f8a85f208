"""A batch of records in, what its commit writes out: the pure half of a commit round.

1. ``decode_records``: every record becomes a command to decide, a rejection to answer,
   a dead letter, or a forward to its customer's partition; proofs are checked here
   (engine.core.authority);
2. the ledger decides the commands (engine.core.ledger);
3. ``build_commit``: the decisions become one ``CommitBatch``: rows to write and outbox
   rows to publish, results encoded once, legs signed.

No I/O: the worker's commit round (engine.worker.commit_round) does the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

from engine.core.authority import Authority
from engine.core.book import Incoming, Outcome
from engine.core.config import ResultsEncoding
from engine.core.decoding import decode_command, forwarded_partition, looks_like_json, says_json
from engine.core.messages import (
    LEG_TYPES,
    PRIVILEGED_TYPES,
    Command,
    DeadLetter,
    Forwarded,
    Invalid,
    Reason,
    Result,
    Undecodable,
    encode,
    encode_json,
    fingerprint,
    type_tag,
)
from engine.core.records import CommitBatch, OutboxKind, OutboxRow, Position
from engine.core.routing import customer_key, partition_of


@dataclass(slots=True)
class Decoded:
    end: Position
    """Where the partition's input stands after the batch."""
    incoming: list[Incoming] = field(default_factory=list)
    dead: list[OutboxRow] = field(default_factory=list)
    dead_reasons: list[str] = field(default_factory=list)
    forged_legs: list[str] = field(default_factory=list)
    """The type tag of every leg refused as forged when decoded (the ledger's refusals are
    in its Outcome.forged)."""
    forwards: list[OutboxRow] = field(default_factory=list)
    """Commands published to another partition than their customer's, to forward."""
    legs: dict[int, tuple[str, int, bytes | None, bytes]] = field(default_factory=dict)
    """(topic, offset, key, value) of the legs by input place: a leg the ledger refuses
    goes to the DLQ as it came."""


def decode_records(
    records: Sequence[Any],
    message_bytes_max: int,
    authority: Authority,
    partitions: int,
    start: Position,
    internal_topic: str,
) -> Decoded:
    """Decode a partition's records and check their proofs. What cannot be answered, or is
    a leg no worker made, becomes a DLQ row; a client command published to another
    partition than its customer's becomes a forward to that one (once: a forwarded record
    that is still misrouted is rejected by the ledger, so no record goes round).

    ``records`` come from the commands topic and the internal topic (``internal_topic``),
    in the order the worker took them, each topic's after ``start``; each gets its input
    place: its offset plus the other topic's position (``Position.seq`` just before it,
    when its topic has no hole there). Legs and privileged commands are taken from the
    internal topic only, client commands from the commands topic only: Kafka's ACLs let
    only workers and the risk authority write the internal topic, and a record off its
    topic is refused as misrouted without its proofs being read."""
    decoded = Decoded(start)
    commands, internal = start
    for record in records:
        from_internal = record.topic == internal_topic
        if from_internal:
            seq = commands + record.offset
            internal = record.offset + 1
        else:
            seq = record.offset + internal
            commands = record.offset + 1
        value: bytes = record.value or b""
        headers = record.headers or ()
        json = says_json(headers) or looks_like_json(value)
        forwarded_from = forwarded_partition(headers, partitions)
        if len(value) > message_bytes_max:
            parsed: Any = Undecodable(
                "message_too_large", f"{len(value)} > {message_bytes_max} bytes"
            )
            value = value[:message_bytes_max]
        else:
            parsed = decode_command(value, json=json)
            parsed = authenticate(routed(parsed, from_internal), record.partition, authority)
        if isinstance(parsed, Undecodable):
            decoded.dead.append(
                _dead_letter(
                    parsed, seq, record.topic, record.partition, record.offset, record.key, value
                )
            )
            decoded.dead_reasons.append(parsed.reason)
            if parsed.leg:
                decoded.forged_legs.append(parsed.leg)
            continue
        if isinstance(parsed, LEG_TYPES):
            decoded.legs[seq] = (record.topic, record.offset, record.key, value)
        elif not isinstance(parsed, Invalid) and forwarded_from < 0:
            home = partition_of(parsed.customer, partitions)
            if home != record.partition:
                forward = Forwarded(value, record.timestamp, json)
                key = customer_key(parsed.customer)
                row = OutboxRow(seq, 0, OutboxKind.FORWARD, key, encode(forward), home)
                decoded.forwards.append(row)
                continue
        digest = 0 if isinstance(parsed, Invalid) else fingerprint(parsed)
        decoded.incoming.append(
            Incoming(record.offset, seq, record.timestamp, parsed, digest, json, forwarded_from)
        )
    decoded.end = Position(commands, internal)
    return decoded


def routed(
    parsed: Command | Invalid | Undecodable, from_internal: bool
) -> Command | Invalid | Undecodable:
    """A command off its topic is misrouted: a leg (even a malformed one) is
    dead-lettered, a privileged or client command rejected (answered, unrecorded)."""
    if isinstance(parsed, Invalid) or (isinstance(parsed, Undecodable) and not parsed.leg):
        return parsed
    internal_kind = isinstance(parsed, (Undecodable, *LEG_TYPES, *PRIVILEGED_TYPES))
    if internal_kind == from_internal:
        return parsed
    if isinstance(parsed, (Undecodable, *LEG_TYPES)):
        detail = "a saga leg on the commands topic: workers send legs on the internal topic"
        return Undecodable(Reason.MISROUTED.value, detail)
    if internal_kind:
        detail = "a privileged command is taken from the internal topic only"
    else:
        detail = "a client command is taken from the commands topic only"
    return Invalid(parsed.id, parsed.customer, Reason.MISROUTED, detail)


def authenticate(
    parsed: Command | Invalid | Undecodable, partition: int, authority: Authority
) -> Command | Invalid | Undecodable:
    """A leg without a worker's MAC for ``partition`` is forged (DLQ); a privileged
    command without the risk authority's signature is rejected (answered, unrecorded)."""
    if isinstance(parsed, LEG_TYPES):
        problem = authority.leg_problem(parsed, partition)
        if problem:
            return Undecodable("forged_leg", problem, type_tag(type(parsed)))
    elif isinstance(parsed, PRIVILEGED_TYPES):
        reason, detail = authority.privileged_problem(parsed)
        if reason is not Reason.NONE:
            return Invalid(parsed.id, parsed.customer, reason, detail)
    return parsed


def _dead_letter(
    parsed: Undecodable,
    seq: int,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
) -> OutboxRow:
    letter = DeadLetter(parsed.reason, parsed.detail, topic, partition, offset, key, value)
    return OutboxRow(seq, 0, OutboxKind.DEAD_LETTER, key, encode(letter), partition)


class Fence(NamedTuple):
    """Where a batch commits: its partition, the claim's epoch, and the input positions
    it moves the cup's ``next_offset`` and ``internal_offset`` from and to."""

    partition: int
    epoch: int
    expected: Position
    end: Position


def build_commit(
    fence: Fence,
    outcome: Outcome,
    decoded: Decoded,
    trim: tuple[int, int],
    authority: Authority,
    results_as: ResultsEncoding = ResultsEncoding.COMMAND,
) -> CommitBatch:
    """Encode what a decided batch commits: each result is encoded once however often
    used (msgpack in the cup; on the results topic in the command's encoding, or as
    ``results_as`` says); each leg gets the workers' MAC for the partition it goes to;
    each leg the ledger refused goes to the DLQ as it came; forwards go as they came.
    ``trim``: the published outbox rows the commit deletes, by input place (from, below).
    """
    encoded: dict[tuple[int, bool], bytes] = {}

    def encoded_result(result: Result, json: bool = False) -> bytes:
        value = encoded.get((id(result), json))
        if value is None:
            value = encoded[(id(result), json)] = (encode_json if json else encode)(result)
        return value

    partition = fence.partition
    rows: list[tuple[int, OutboxKind, bytes | None, bytes, int]] = [
        (d.src_offset, d.kind, d.key, d.value, d.target_partition)
        for d in (*decoded.dead, *decoded.forwards)
    ]
    for forged in outcome.forged:
        topic, offset, key, value = decoded.legs[forged.seq]
        letter = Undecodable("forged_leg", forged.detail, forged.leg)
        row = _dead_letter(letter, forged.seq, topic, partition, offset, key, value)
        rows.append((row.src_offset, row.kind, row.key, row.value, row.target_partition))
    for publish in outcome.published:
        key = customer_key(publish.customer)
        json = publish.json if results_as is ResultsEncoding.COMMAND else results_as.json
        value = encoded_result(publish.result, json)
        rows.append((publish.seq, OutboxKind.RESULT, key, value, partition))
    for leg in outcome.legs:
        key = customer_key(leg.command.customer)
        value = encode(authority.sign_leg(leg.command, leg.partition))
        rows.append((leg.seq, OutboxKind.LEG, key, value, leg.partition))
    return CommitBatch(
        partition=partition,
        epoch=fence.epoch,
        expected_offset=fence.expected.commands,
        next_offset=fence.end.commands,
        expected_internal=fence.expected.internal,
        next_internal=fence.end.internal,
        outcome=outcome,
        applied_results=[encoded_result(a.result) for a in outcome.applied],
        final_results=[encoded_result(f.result) for f in outcome.finals],
        outbox=_numbered(rows),
        trim_from_offset=trim[0],
        trim_below_offset=trim[1],
    )


def _numbered(rows: list[tuple[int, OutboxKind, bytes | None, bytes, int]]) -> list[OutboxRow]:
    """Order rows by input place and number them within it (the outbox's key; the
    outbox's ``src_offset`` column holds the input place)."""
    rows.sort(key=itemgetter(0))
    numbered = []
    previous, seq = -1, 0
    for src_offset, kind, key, value, target in rows:
        seq = seq + 1 if src_offset == previous else 0
        previous = src_offset
        numbered.append(OutboxRow(src_offset, seq, kind, key, value, target))
    return numbered
