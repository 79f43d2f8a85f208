"""The two copies of a move (shards.moves, steps 2 and 5), between two cups of any kinds:
the pre-copy while the partition runs in its source, the catch-up while it is fenced
there. shards.partition_copy says which rows each takes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from engine.core.errors import InfrastructureError, InvariantError, invariant
from shards.cup_admin import CupAdmin, PartitionSink, PartitionSnapshot, StateRow
from shards.partition_copy import catch_up_pass, copy_partition, precopy_pass

if TYPE_CHECKING:
    from shards.moves import Move

PRECOPY_ROUNDS_MAX: Final = 6
PRECOPY_SETTLED_ROWS: Final = 5_000
"""A pre-copy round that copied at most this many rows is the last: what the partition
writes during such a round is what the catch-up copies, paused."""


async def precopy(source: CupAdmin, target: CupAdmin, move: Move) -> tuple[int, int]:
    """p's history and its transfers in flight into the target, in rounds, each from one
    source snapshot in one target transaction, p's state row frozen there: the first
    round copies the history, each next one what p wrote during the last, until a round
    is small (or PRECOPY_ROUNDS_MAX); (the last round's watermark, rows)."""
    columns = await target.table_columns()
    watermark, rows = await _precopy_round(source, target, move, columns, None)
    total = rows
    for _ in range(PRECOPY_ROUNDS_MAX - 1):
        if rows <= PRECOPY_SETTLED_ROWS:
            break
        watermark, rows = await _precopy_round(source, target, move, columns, watermark)
        total += rows
    return watermark, total


async def _precopy_round(
    source: CupAdmin,
    target: CupAdmin,
    move: Move,
    target_columns: dict[str, list[str]],
    since: int | None,
) -> tuple[int, int]:
    """One round after the one at watermark ``since`` (None: the first); (watermark,
    rows)."""
    async with (
        source.snapshot(move.partition) as snapshot,
        target.receive(move.partition) as sink,
    ):
        state = _state_of(snapshot, move, fenced=False)
        watermark = state.next_offset + state.internal_offset
        pending = await sink.pending_transfers() if since is not None else []
        copy = precopy_pass(watermark, since, pending)
        rows = await copy_partition(snapshot, sink, target_columns, copy)
        await _write_state(sink, state, f"move {move.move_id} pre-copy")
    return watermark, rows


async def catch_up(
    source: CupAdmin, target: CupAdmin, move: Move, watermark: int
) -> tuple[int, int]:
    """What changed since a pre-copy at ``watermark`` (0: every row) from one snapshot of
    the fenced source, in one target transaction; (next offset, rows). The transfers in
    flight the target holds are the pre-copy's: their results are taken again."""
    target_columns = await target.table_columns()
    async with (
        source.snapshot(move.partition) as snapshot,
        target.receive(move.partition) as sink,
    ):
        state = _state_of(snapshot, move, fenced=True)
        invariant(state.epoch == move.fence_epoch, "no claim after the fence")
        pending = await sink.pending_transfers() if watermark else []
        copy = catch_up_pass(watermark, pending)
        rows = await copy_partition(snapshot, sink, target_columns, copy)
        await _write_state(sink, state, f"move {move.move_id} from cup {move.source_cup}")
    return state.next_offset, rows


def _state_of(snapshot: PartitionSnapshot, move: Move, *, fenced: bool) -> StateRow:
    """The source's state row of p, frozen (fenced) or not (p still runs there)."""
    state = snapshot.state
    if state is None:
        raise InfrastructureError(
            f"partition {move.partition} has no state row in cup {move.source_cup}"
        )
    if state.frozen is not fenced:
        being = "fenced" if fenced else "running"
        raise InvariantError(f"partition {move.partition} is not {being} in its source")
    return state


async def _write_state(sink: PartitionSink, state: StateRow, owner: str) -> None:
    await sink.write_state(
        state.epoch,
        next_offset=state.next_offset,
        internal_offset=state.internal_offset,
        owner=owner,
        expired_before_ms=state.expired_before_ms,
    )
