"""Reconcile's checkpoint in the control database (migration 0005): per partition, the
offsets the last clean run read to in the commands, internal and results topics, and the
ids it carried forward (consumed, result not out yet: transfers in flight).

A checkpoint is trusted only while it still describes the topics: ``why_unusable`` says
why not (another partition count, a partition missing, a topic whose end went back below
a saved offset: the topics were recreated or truncated). An unusable checkpoint is
ignored (the run is a full one) and replaced after the next clean run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple

import asyncpg
import msgspec

from engine.core.errors import invariant

CARRIED_IDS_MAX: Final = 10_000
"""Most ids a partition carries forward to the next run (commands consumed whose result
is not out yet). Past it, no checkpoint is saved: the next run is a full one."""


class Mark(NamedTuple):
    """Where a partition's next incremental run starts."""

    commands_offset: int
    internal_offset: int
    results_offset: int
    unanswered: tuple[str, ...] = ()


Checkpoint = dict[int, Mark]


def why_unusable(
    checkpoint: Checkpoint, partitions: int, ends: Mapping[str, Mapping[int, int]]
) -> str | None:
    """Why the checkpoint cannot be continued from, or None when it can. ``ends``: each
    topic's end offsets ("commands", "internal", "results")."""
    if sorted(checkpoint) != list(range(partitions)):
        return f"it covers {len(checkpoint)} partitions, the topics have {partitions}"
    for partition, mark in sorted(checkpoint.items()):
        saved = {
            "commands": mark.commands_offset,
            "internal": mark.internal_offset,
            "results": mark.results_offset,
        }
        for topic, offset in saved.items():
            end = ends[topic].get(partition, 0)
            if end < offset:
                return (
                    f"the {topic} topic's partition {partition} ends at {end}, "
                    f"before the saved offset {offset} (recreated or truncated)"
                )
    return None


async def load_checkpoint(control: asyncpg.Connection, topics: str) -> Checkpoint:
    rows = await control.fetch(
        "SELECT partition, commands_offset, internal_offset, results_offset, unanswered"
        " FROM reconcile_checkpoints WHERE topics = $1",
        topics,
    )
    return {
        r["partition"]: Mark(
            r["commands_offset"],
            r["internal_offset"],
            r["results_offset"],
            tuple(msgspec.msgpack.decode(r["unanswered"], type=list[str])),
        )
        for r in rows
    }


async def save_checkpoint(control: asyncpg.Connection, topics: str, checkpoint: Checkpoint) -> None:
    """Replace the topics' checkpoint, in one transaction."""
    for partition, mark in checkpoint.items():
        invariant(
            len(mark.unanswered) <= CARRIED_IDS_MAX, f"partition {partition} carries too many"
        )
        invariant(min(mark[:3]) >= 0, f"partition {partition}: a negative offset")
    async with control.transaction():
        await control.execute("DELETE FROM reconcile_checkpoints WHERE topics = $1", topics)
        await control.executemany(
            "INSERT INTO reconcile_checkpoints (topics, partition, commands_offset,"
            " internal_offset, results_offset, unanswered) VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (
                    topics,
                    p,
                    m.commands_offset,
                    m.internal_offset,
                    m.results_offset,
                    msgspec.msgpack.encode(list(m.unanswered)),
                )
                for p, m in sorted(checkpoint.items())
            ],
        )
