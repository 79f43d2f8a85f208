"""A partner's clearing entries of one business day, from every cup, in one order.

A day's statement is final once every partition closed the day (``open_partitions``):
a partition makes its entries of a day until its close of that day.

Each cup is read with one query (``CupAdmin.clearing_entries``): its entries of the
partner and the day in the partitions the shard map gives it (a move not finished leaves
a copy of a partition in a second cup: the map says which one counts), sorted by the
statement's order (``ClearingRow``) and read in chunks. The cups' streams are merged
on that order with a heap, one chunk per cup in memory at a time, so the day's size does
not change the memory used, and the entries come out in the same order whatever cup
holds which partition. The merge checks the order it gives: every entry after the last.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence

import msgspec

from engine.core.credit import Partner
from engine.core.errors import invariant
from engine.core.records import ShardMap
from shards.cup_admin import ClearingReads, ClearingRow

_partner_decoder = msgspec.msgpack.Decoder(Partner)


async def find_partner(
    cups: Mapping[int, ClearingReads], shard_map: ShardMap, partner: int
) -> Partner | None:
    """The partner as the lowest partition that registered it holds it (None: none did)."""
    found = await asyncio.gather(
        *(cups[cup].partner_body(partner, shard_map.partitions_of(cup)) for cup in sorted(cups))
    )
    rows = sorted(row for row in found if row is not None)
    if not rows:
        return None
    entity = _partner_decoder.decode(rows[0][1])
    invariant(entity.partner == partner, "a partner's row holds that partner")
    return entity


async def open_partitions(
    cups: Mapping[int, ClearingReads], shard_map: ShardMap, day: int
) -> list[int]:
    """The partitions that have not closed ``day`` (a day number) yet: their entries of
    that day may still change."""
    closed: dict[int, int] = {}
    for days in await asyncio.gather(
        *(cups[cup].last_closed(shard_map.partitions_of(cup)) for cup in sorted(cups))
    ):
        closed.update(days)
    return [p for p in range(shard_map.partitions) if closed.get(p, day - 1) < day]


async def day_entries(
    cups: Mapping[int, ClearingReads], shard_map: ShardMap, partner: int, day: int
) -> AsyncGenerator[ClearingRow, None]:
    """The partner's entries of ``day`` (a day number) in every cup, in ClearingRow order."""
    streams: list[AsyncGenerator[list[ClearingRow], None]] = [
        cups[cup].clearing_entries(partner, day, owned)
        for cup in sorted(cups)
        if (owned := shard_map.partitions_of(cup))
    ]
    try:
        async for row in merge(streams):
            yield row
    finally:
        for stream in streams:
            await stream.aclose()


async def merge(streams: Sequence[AsyncIterator[list[ClearingRow]]]) -> AsyncIterator[ClearingRow]:
    """The rows of chunked streams, each sorted, as one sorted stream (a heap of the
    streams' next rows). Each stream holds only its current chunk."""
    chunks = await asyncio.gather(*(anext(stream, None) for stream in streams))
    rows: list[Iterator[ClearingRow]] = [iter(chunk or ()) for chunk in chunks]
    heap: list[tuple[ClearingRow, int]] = []
    for index, current in enumerate(rows):
        first = next(current, None)
        if first is not None:
            heap.append((first, index))
    heapq.heapify(heap)
    last: ClearingRow | None = None
    while heap:
        row, index = heap[0]
        invariant(last is None or last < row, f"clearing entries out of order at {row}")
        last = row
        yield row
        following = next(rows[index], None)
        if following is None:
            chunk = await anext(streams[index], None)
            invariant(chunk != [], "a chunk holds at least one row")
            rows[index] = iter(chunk or ())
            following = next(rows[index], None)
        if following is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (following, index))
