"""Moving one partition to another cup, online, in steps that survive being killed.

A move is a row of the control database's ``moves`` table; its ``step`` says how far it
got. Each step is one transaction in one database, followed by the bookkeeping of the
step in the control database, and each step can run again after a crash:

1. ``planned``: the row exists (one unfinished move per partition, by a unique index);
2. ``paused``: the map marks p paused (new version, NOTIFY). Workers following the map
   hand p over at their next batch boundary (publish what is committed, trim, forget)
   and do not claim it while it is paused;
3. ``fenced``: the source's state row of p gets a new epoch and ``frozen``. A commit
   still in flight from the old owner either committed before this (row lock) or fails
   the epoch compare-and-set; a claim from a worker holding an older map is refused by
   the frozen row's trigger. From here the source is read-only for p;
4. ``copied``: p's rows (state row with both offsets, accounts, journal, idempotency
   records, transfers in flight, unsent outbox) are read in one REPEATABLE READ
   snapshot of the source and written to the target in one transaction, the target's
   state row frozen too. The journal moves with the accounts: "a balance equals the sum
   of its journal rows" is checked per cup, and the journal is the audit trail of the
   accounts it explains;
5. ``flipped``: the target's state row is thawed, then the map points p at the target
   and unpauses it (new version, NOTIFY). The owner of p re-claims it in the target
   (bumping the epoch) and seeks Kafka to the copied ``next_offset`` (commands topic)
   and ``internal_offset`` (internal topic);
6. ``done``: p's rows are deleted from the source, all but its frozen state row: that
   tombstone refuses a claim from a worker still holding an older map (a claim of a
   missing row would insert a fresh one, at offset 0). Moving p back replaces it.

Why p is never writable in two cups: before the flip the map routes p to the source,
whose row is frozen from step 3; the target is reachable only through the map, and the
flip happens after the copy. After the flip the source stays frozen for good. Rolling
back (``abort``) is allowed only before the flip: it deletes the target's copy, thaws
the source and unpauses p. After the flip a move only goes forward.

The pause a move causes is from step 2 to the first claim in the target, which the mover
waits for (bounded) and records as ``resumed_at``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass
from typing import Final

import asyncpg

from engine.core.config import ShardsConfig
from engine.core.errors import ConfigError, InfrastructureError, InvariantError, invariant
from engine.core.records import ShardMap
from shards.backends import connect_cup
from shards.control import load_shard_map, publish_version
from shards.cup_admin import CupAdmin
from shards.partition_copy import copy_partition

log = logging.getLogger(__name__)

RESUME_WAIT_SECONDS: Final = 5.0
"""How long the mover waits, by default, for a worker to claim p in the target: the end
of the pause it measures. With no worker running there is nothing to wait for (0)."""

RESUME_POLL_SECONDS: Final = 0.01

_MOVE_LOCK: Final = 0x5C0FF00
"""Advisory lock namespace (with the move id): one tool drives a given move at a time."""


class Step(enum.StrEnum):
    PLANNED = "planned"
    PAUSED = "paused"
    FENCED = "fenced"
    COPIED = "copied"
    FLIPPED = "flipped"
    DONE = "done"
    ABORTED = "aborted"


OPEN_STEPS: Final = (Step.PLANNED, Step.PAUSED, Step.FENCED, Step.COPIED, Step.FLIPPED)
ABORTABLE_STEPS: Final = (Step.PLANNED, Step.PAUSED, Step.FENCED, Step.COPIED)


@dataclass(frozen=True, slots=True)
class Move:
    move_id: int
    partition: int
    source_cup: int
    target_cup: int
    step: Step
    fence_epoch: int | None
    copied_offset: int | None
    rows_copied: int | None
    pause_seconds: float | None
    """From the pause to the first claim in the target (None: not measured)."""

    def summary(self) -> str:
        """One line for an operator: where from and to, how far, how long it paused."""
        pause = "not measured" if self.pause_seconds is None else f"{self.pause_seconds:.3f} s"
        rows = "-" if self.rows_copied is None else f"{self.rows_copied:,}"
        return (
            f"move {self.move_id}: partition {self.partition} cup {self.source_cup} -> "
            f"cup {self.target_cup}: {self.step}, {rows} rows copied, "
            f"offset {self.copied_offset}, pause {pause}"
        )


_MOVE_COLUMNS: Final = (
    "move_id, partition, source_cup, target_cup, step, fence_epoch, copied_offset,"
    " rows_copied, extract(epoch FROM resumed_at - paused_at)::float8 AS pause_seconds"
)


def _move(row: asyncpg.Record) -> Move:
    return Move(
        row["move_id"],
        row["partition"],
        row["source_cup"],
        row["target_cup"],
        Step(row["step"]),
        row["fence_epoch"],
        row["copied_offset"],
        row["rows_copied"],
        row["pause_seconds"],
    )


async def open_moves(control: asyncpg.Connection) -> list[Move]:
    rows = await control.fetch(
        f"SELECT {_MOVE_COLUMNS} FROM moves WHERE step = ANY($1::text[]) ORDER BY move_id",
        [str(s) for s in OPEN_STEPS],
    )
    return [_move(r) for r in rows]


async def read_move(control: asyncpg.Connection, move_id: int) -> Move:
    row = await control.fetchrow(f"SELECT {_MOVE_COLUMNS} FROM moves WHERE move_id = $1", move_id)
    if row is None:
        raise ConfigError(f"no move {move_id}")
    return _move(row)


async def plan_move(control: asyncpg.Connection, partition: int, target_cup: int) -> Move:
    """Record a move of ``partition`` to ``target_cup`` (step 1); refuse nonsense."""
    shard_map = await load_shard_map(control)
    if partition not in shard_map.cup_of:
        raise ConfigError(f"no partition {partition} (the topic has {shard_map.partitions})")
    if target_cup not in shard_map.cups:
        raise ConfigError(f"no cup {target_cup}: known cups are {sorted(shard_map.cups)}")
    source_cup = shard_map.cup_of[partition]
    if source_cup == target_cup:
        raise ConfigError(f"partition {partition} already lives in cup {target_cup}")
    try:
        move_id = await control.fetchval(
            "INSERT INTO moves (partition, source_cup, target_cup) VALUES ($1, $2, $3)"
            " RETURNING move_id",
            partition,
            source_cup,
            target_cup,
        )
    except asyncpg.UniqueViolationError:
        raise ConfigError(
            f"partition {partition} has an unfinished move: `smallcups shards recover`"
        ) from None
    return await read_move(control, move_id)


class Mover:
    """Drives moves through their steps, with the control database and the cups' DSNs."""

    def __init__(
        self,
        control: asyncpg.Connection,
        config: ShardsConfig,
        resume_wait_seconds: float = RESUME_WAIT_SECONDS,
    ):
        if not 0 <= resume_wait_seconds <= 600:
            raise ConfigError(f"resume wait must be in 0..600 s, got {resume_wait_seconds}")
        self.control = control
        self.config = config
        self.resume_wait_seconds = resume_wait_seconds
        self._cups: dict[int, CupAdmin] = {}
        """One connection per cup while a move is driven: connecting costs more than a step."""

    async def _cup(self, shard_map: ShardMap, cup_id: int) -> CupAdmin:
        cup = self._cups.get(cup_id)
        if cup is None:
            cup = await connect_cup(shard_map.cups[cup_id], self.config)
            self._cups[cup_id] = cup
        return cup

    async def _locked(self, move_id: int) -> None:
        taken = await self.control.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)", _MOVE_LOCK, move_id
        )
        if not taken:
            raise ConfigError(f"move {move_id} is being driven by another tool right now")

    async def _unlock(self, move_id: int) -> None:
        """Release the move and the cup connections (a later move may use other cups)."""
        cups, self._cups = list(self._cups.values()), {}
        await asyncio.gather(*(c.close() for c in cups), return_exceptions=True)
        await self.control.execute("SELECT pg_advisory_unlock($1, $2)", _MOVE_LOCK, move_id)

    async def finish(self, move_id: int, stop_after: Step | None = None) -> Move:
        """Run the remaining steps of a move (all of them, or up to ``stop_after``)."""
        await self._locked(move_id)
        try:
            move = await read_move(self.control, move_id)
            while move.step in OPEN_STEPS and move.step != stop_after:
                started = time.monotonic()
                move = await self._next_step(move)
                log.info(
                    "move %d of partition %d: %s in %.3f s",
                    move_id,
                    move.partition,
                    move.step,
                    time.monotonic() - started,
                )
            return move
        finally:
            await self._unlock(move_id)

    async def abort(self, move_id: int) -> Move:
        """Roll a move back (before the flip only): drop the copy, thaw, unpause.

        The target keeps p's state row, frozen: it may be the tombstone of an earlier move
        out of that cup, which a worker on an old map could otherwise claim past.
        """
        await self._locked(move_id)
        try:
            move = await read_move(self.control, move_id)
            if move.step not in ABORTABLE_STEPS:
                raise ConfigError(
                    f"move {move_id} is {move.step}: after the flip a move only goes forward"
                )
            shard_map = await load_shard_map(self.control)
            invariant(shard_map.cup_of[move.partition] == move.source_cup, "abort before flip")
            target = await self._cup(shard_map, move.target_cup)
            await target.delete_partition(move.partition, keep_tombstone=True)
            await target.freeze(move.partition)
            source = await self._cup(shard_map, move.source_cup)
            await source.thaw(move.partition, forget_owner=True)
            async with self.control.transaction():
                await self._set_paused(move.partition, paused=False)
                await self._advance(move, Step.ABORTED, "finished_at")
            return await read_move(self.control, move_id)
        finally:
            await self._unlock(move_id)

    async def _next_step(self, move: Move) -> Move:
        shard_map = await load_shard_map(self.control)
        match move.step:
            case Step.PLANNED:
                for cup in (move.source_cup, move.target_cup):
                    await self._cup(shard_map, cup)  # connect before the pause, not in it
                async with self.control.transaction():
                    await self._set_paused(move.partition, paused=True)
                    await self._advance(move, Step.PAUSED, "paused_at")
            case Step.PAUSED:
                epoch = await self._fence(shard_map, move)
                await self._advance(move, Step.FENCED, fence_epoch=epoch)
            case Step.FENCED:
                offset, rows = await self._copy(shard_map, move)
                await self._advance(move, Step.COPIED, copied_offset=offset, rows_copied=rows)
            case Step.COPIED:
                await self._flip(shard_map, move)
                await self._await_resume(shard_map, move)
            case Step.FLIPPED:
                source = await self._cup(shard_map, move.source_cup)
                await source.delete_partition(move.partition, keep_tombstone=True)
                await (await self._cup(shard_map, move.target_cup)).analyze()
                await self._advance(move, Step.DONE, "finished_at")
        return await read_move(self.control, move.move_id)

    async def _advance(
        self,
        move: Move,
        step: Step,
        stamp: str = "",
        *,
        fence_epoch: int | None = None,
        copied_offset: int | None = None,
        rows_copied: int | None = None,
    ) -> None:
        """Record the step reached, only from the step it was at (a rerun changes nothing)."""
        stamped = f", {stamp} = clock_timestamp()" if stamp else ""
        await self.control.execute(
            f"UPDATE moves SET step = $2{stamped},"
            " fence_epoch = coalesce($4, fence_epoch),"
            " copied_offset = coalesce($5, copied_offset),"
            " rows_copied = coalesce($6, rows_copied)"
            " WHERE move_id = $1 AND step = $3",
            move.move_id,
            str(step),
            str(move.step),
            fence_epoch,
            copied_offset,
            rows_copied,
        )

    async def _set_paused(self, partition: int, *, paused: bool) -> None:
        version = await publish_version(self.control)
        await self.control.execute(
            "UPDATE shard_map SET paused = $2, version = $3 WHERE partition = $1",
            partition,
            paused,
            version,
        )

    async def _fence(self, shard_map: ShardMap, move: Move) -> int:
        """Step 3: a new epoch, frozen, in the source; a rerun finds it frozen already."""
        source = await self._cup(shard_map, move.source_cup)
        epoch = await source.fence(move.partition, f"move {move.move_id} to cup {move.target_cup}")
        if epoch is None:
            raise InfrastructureError(
                f"partition {move.partition} has no state row in cup {move.source_cup}"
            )
        return epoch

    async def _copy(self, shard_map: ShardMap, move: Move) -> tuple[int, int]:
        """Step 4: p's rows from one source snapshot into the target, in one transaction."""
        source = await self._cup(shard_map, move.source_cup)
        target = await self._cup(shard_map, move.target_cup)
        target_columns = await target.table_columns()
        async with (
            source.snapshot(move.partition) as snapshot,
            target.receive(move.partition) as sink,
        ):
            state = snapshot.state
            if state is None or not state.frozen:
                raise InvariantError(f"partition {move.partition} is not fenced in its source")
            invariant(state.epoch == move.fence_epoch, "no claim after the fence")
            rows = await copy_partition(snapshot, sink, target_columns)
            await sink.write_state(
                state.epoch,
                next_offset=state.next_offset,
                internal_offset=state.internal_offset,
                owner=f"move {move.move_id} from cup {move.source_cup}",
            )
        return state.next_offset, rows

    async def _flip(self, shard_map: ShardMap, move: Move) -> None:
        """Step 5: thaw the target's copy, then route p there (one control transaction)."""
        target = await self._cup(shard_map, move.target_cup)
        offset = await target.thaw(move.partition, forget_owner=False)
        invariant(offset == move.copied_offset, "the target holds the copied offset")
        async with self.control.transaction():
            version = await publish_version(self.control)
            await self.control.execute(
                "UPDATE shard_map SET cup_id = $2, paused = false, version = $3"
                " WHERE partition = $1",
                move.partition,
                move.target_cup,
                version,
            )
            await self._advance(move, Step.FLIPPED, "flipped_at")

    async def _await_resume(self, shard_map: ShardMap, move: Move) -> None:
        """Wait (bounded) until a worker claimed p in the target: the end of the pause."""
        target = await self._cup(shard_map, move.target_cup)
        deadline = time.monotonic() + self.resume_wait_seconds
        while time.monotonic() < deadline:
            state = await target.state_row(move.partition)
            fenced = move.fence_epoch
            if state is not None and fenced is not None and state.epoch > fenced:
                await self.control.execute(
                    "UPDATE moves SET resumed_at = clock_timestamp() WHERE move_id = $1",
                    move.move_id,
                )
                return
            await asyncio.sleep(RESUME_POLL_SECONDS)
