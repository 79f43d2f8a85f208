"""Moving one partition to another cup, online, in steps that survive being killed.

A move is a row of the control database's ``moves`` table; its ``step`` says how far it
got. Each step is one transaction in one database, followed by the bookkeeping of the
step in the control database, and each step can run again after a crash:

1. ``planned``: the row exists (one unfinished move per partition, by a unique index);
2. ``precopied``: while p keeps running in the source, its history (journal, clearing
   entries and idempotency records below the *watermark*, the input place of one
   REPEATABLE READ snapshot of the source) and its transfers in flight are written to
   the target, with p's state row there frozen: nothing can claim p in the target. Then
   again what p wrote meanwhile, in rounds, until a round is small
   (shards.move_copy). The move row records the last watermark (shards.partition_copy
   says why it splits the history exactly). The mover holds the history lock of both
   cups from here to the end (shards.history_lock). A pre-copy is trusted only by the
   mover session that made it (a session ends with the tool call that opened it: Mover
   is an async context manager): a move resumed at this step makes it again, one resumed
   at a later step makes a whole copy at step 5 (its pause then grows with the
   history, as before pre-copies);
3. ``paused``: the map marks p paused (new version, NOTIFY). Workers following the map
   hand p over at their next batch boundary (publish what is committed, trim, forget)
   and do not claim it while it is paused;
4. ``fenced``: the source's state row of p gets a new epoch and ``frozen``. A commit
   still in flight from the old owner either committed before this (row lock) or fails
   the epoch compare-and-set; a claim from a worker holding an older map is refused by
   the frozen row's trigger. From here the source is read-only for p;
5. ``copied`` (the catch-up): from one REPEATABLE READ snapshot of the source, in one
   transaction of the target, what changed since the pre-copy replaces what the target
   holds: the history at or above the watermark, the idempotency records of the
   transfers that were in flight at the pre-copy (PENDING then, final now), every other
   table whole (accounts, outbox, transfers in flight, the credit book: state), and the
   state row with both offsets, still frozen. Its cost is what p wrote during the last
   pre-copy round and the hand-over, not the partition's age. The journal moves with
   the accounts: "a balance equals the sum of its journal rows" is checked per cup, and
   the journal is the audit trail of the accounts it explains;
6. ``flipped``: the target's state row is thawed, then the map points p at the target
   and unpauses it (new version, NOTIFY). The owner of p re-claims it in the target
   (bumping the epoch) and seeks Kafka to the copied ``next_offset`` (commands topic)
   and ``internal_offset`` (internal topic);
7. ``done``: p's rows are deleted from the source, all but its frozen state row: that
   tombstone refuses a claim from a worker still holding an older map (a claim of a
   missing row would insert a fresh one, at offset 0). Moving p back replaces it.

Why p is never writable in two cups: before the flip the map routes p to the source,
whose row is frozen from step 4; the target is reachable only through the map, and the
flip happens after the catch-up. After the flip the source stays frozen for good. Rolling
back (``abort``) is allowed only before the flip: it deletes the target's copy (pre-copied
or caught up), thaws the source and unpauses p. After the flip a move only goes forward.

The pause a move causes is from step 3 to the first claim in the target, which the mover
waits for (bounded) and records as ``resumed_at``; the pre-copy's time is recorded too.
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
from engine.core.errors import ConfigError, InfrastructureError, invariant
from engine.core.records import ShardMap
from shards.backends import connect_cup
from shards.control import load_shard_map, publish_version
from shards.cup_admin import CupAdmin
from shards.history_lock import lock_histories, unlock_history
from shards.move_copy import catch_up, precopy

log = logging.getLogger(__name__)

RESUME_WAIT_SECONDS: Final = 5.0
"""How long the mover waits, by default, for a worker to claim p in the target: the end
of the pause it measures. With no worker running there is nothing to wait for (0)."""

RESUME_POLL_SECONDS: Final = 0.01

_MOVE_LOCK: Final = 0x5C0FF00
"""Advisory lock namespace (with the move id): one tool drives a given move at a time."""

HISTORY_LOCK_WAIT_SECONDS: Final = 60.0
"""How long a move waits for its cups' history locks (another move or an archive)."""


class Step(enum.StrEnum):
    PLANNED = "planned"
    PRECOPIED = "precopied"
    PAUSED = "paused"
    FENCED = "fenced"
    COPIED = "copied"
    FLIPPED = "flipped"
    DONE = "done"
    ABORTED = "aborted"


OPEN_STEPS: Final = (
    Step.PLANNED,
    Step.PRECOPIED,
    Step.PAUSED,
    Step.FENCED,
    Step.COPIED,
    Step.FLIPPED,
)
ABORTABLE_STEPS: Final = (Step.PLANNED, Step.PRECOPIED, Step.PAUSED, Step.FENCED, Step.COPIED)
UNFENCED_STEPS: Final = (Step.PLANNED, Step.PRECOPIED)
"""Steps before the source's state row may have been frozen."""


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
    precopy_rows: int | None = None
    precopy_seconds: float | None = None
    """The last pre-copy's time (None: not made)."""
    precopy_watermark: int | None = None
    catch_up_watermark: int | None = None
    """The watermark the catch-up copied from (0: a whole copy)."""

    def summary(self) -> str:
        """One line for an operator: where from and to, how far, how long it paused."""
        pause = "not measured" if self.pause_seconds is None else f"{self.pause_seconds:.3f} s"
        rows = "-" if self.rows_copied is None else f"{self.rows_copied:,}"
        precopy = (
            "no pre-copy"
            if self.precopy_rows is None or self.precopy_seconds is None
            else f"{self.precopy_rows:,} rows pre-copied in {self.precopy_seconds:.3f} s"
        )
        return (
            f"move {self.move_id}: partition {self.partition} cup {self.source_cup} -> "
            f"cup {self.target_cup}: {self.step}, {precopy}, {rows} rows copied paused, "
            f"offset {self.copied_offset}, pause {pause}"
        )


_MOVE_COLUMNS: Final = (
    "move_id, partition, source_cup, target_cup, step, fence_epoch, copied_offset,"
    " rows_copied, extract(epoch FROM resumed_at - paused_at)::float8 AS pause_seconds,"
    " precopy_rows, extract(epoch FROM precopied_at - precopy_started_at)::float8"
    " AS precopy_seconds, precopy_watermark, catch_up_watermark"
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
        row["precopy_rows"],
        row["precopy_seconds"],
        row["precopy_watermark"],
        row["catch_up_watermark"],
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
    """Drives moves through their steps, with the control database and the cups' DSNs.

    A Mover is a mover session: it holds the history locks of the cups of the moves it
    drives, from their pre-copy until they are done or aborted (or ``close``, or its
    control connection ends), and trusts only the pre-copies it made itself."""

    def __init__(
        self,
        control: asyncpg.Connection,
        config: ShardsConfig,
        resume_wait_seconds: float = RESUME_WAIT_SECONDS,
        history_lock_wait_seconds: float = HISTORY_LOCK_WAIT_SECONDS,
    ):
        if not 0 <= resume_wait_seconds <= 600:
            raise ConfigError(f"resume wait must be in 0..600 s, got {resume_wait_seconds}")
        self.control = control
        self.config = config
        self.resume_wait_seconds = resume_wait_seconds
        self.history_lock_wait_seconds = history_lock_wait_seconds
        self._cups: dict[int, CupAdmin] = {}
        """One connection per cup while a move is driven: connecting costs more than a step."""
        self._histories: dict[int, list[int]] = {}
        """The cups whose history lock this session holds, by move."""
        self._precopied: dict[int, int] = {}
        """The watermark of each move pre-copied in this session."""

    async def __aenter__(self) -> Mover:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """End the session: release the history locks, forget the pre-copies (a move left
        unfinished is pre-copied again by the next session)."""
        held, self._histories, self._precopied = self._histories, {}, {}
        for cups in held.values():
            await unlock_history(self.control, cups)

    async def _cup(self, shard_map: ShardMap, cup_id: int) -> CupAdmin:
        cup = self._cups.get(cup_id)
        if cup is None:
            cup = await connect_cup(shard_map.cups[cup_id], self.config)
            self._cups[cup_id] = cup
        return cup

    async def _locked(self, move_id: int) -> Move:
        """The move, locked for this call, with its cups' histories once it is open."""
        taken = await self.control.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)", _MOVE_LOCK, move_id
        )
        if not taken:
            raise ConfigError(f"move {move_id} is being driven by another tool right now")
        move = await read_move(self.control, move_id)
        try:
            if move.step in OPEN_STEPS and move_id not in self._histories:
                self._histories[move_id] = await lock_histories(
                    self.control,
                    (move.source_cup, move.target_cup),
                    self.history_lock_wait_seconds,
                )
        except BaseException:
            await self._unlock(move)
            raise
        return move

    async def _unlock(self, move: Move) -> None:
        """Release the move and the cup connections (a later move may use other cups);
        once the move has ended, its histories too."""
        cups, self._cups = list(self._cups.values()), {}
        await asyncio.gather(*(c.close() for c in cups), return_exceptions=True)
        ended = await read_move(self.control, move.move_id)
        if ended.step not in OPEN_STEPS:
            self._precopied.pop(move.move_id, None)
            await unlock_history(self.control, self._histories.pop(move.move_id, []))
        await self.control.execute("SELECT pg_advisory_unlock($1, $2)", _MOVE_LOCK, move.move_id)

    async def finish(self, move_id: int, stop_after: Step | None = None) -> Move:
        """Run the remaining steps of a move (all of them, or up to ``stop_after``)."""
        move = await self._locked(move_id)
        try:
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
            await self._unlock(move)

    async def abort(self, move_id: int) -> Move:
        """Roll a move back (before the flip only): drop the copy, thaw, unpause.

        The target keeps p's state row, frozen: it may be the tombstone of an earlier move
        out of that cup, which a worker on an old map could otherwise claim past. Before
        the pause, the source was never fenced: it is left as it runs.
        """
        move = await self._locked(move_id)
        try:
            if move.step not in ABORTABLE_STEPS:
                raise ConfigError(
                    f"move {move_id} is {move.step}: after the flip a move only goes forward"
                )
            shard_map = await load_shard_map(self.control)
            invariant(shard_map.cup_of[move.partition] == move.source_cup, "abort before flip")
            target = await self._cup(shard_map, move.target_cup)
            await target.delete_partition(move.partition, keep_tombstone=True)
            await target.freeze(move.partition)
            if move.step not in UNFENCED_STEPS:
                source = await self._cup(shard_map, move.source_cup)
                await source.thaw(move.partition, forget_owner=True)
            async with self.control.transaction():
                await self._set_paused(move.partition, paused=False)
                await self._advance(move, Step.ABORTED, "finished_at")
            return await read_move(self.control, move_id)
        finally:
            await self._unlock(move)

    async def _next_step(self, move: Move) -> Move:
        shard_map = await load_shard_map(self.control)
        match move.step:
            case Step.PLANNED:
                await self._precopy(shard_map, move)
            case Step.PRECOPIED if move.move_id not in self._precopied:
                await self._precopy(shard_map, move)  # made by an earlier session: again
            case Step.PRECOPIED:
                for cup in (move.source_cup, move.target_cup):
                    await self._cup(shard_map, cup)  # connect before the pause, not in it
                async with self.control.transaction():
                    await self._set_paused(move.partition, paused=True)
                    await self._advance(move, Step.PAUSED, "paused_at")
            case Step.PAUSED:
                epoch = await self._fence(shard_map, move)
                await self._advance(move, Step.FENCED, fence_epoch=epoch)
            case Step.FENCED:
                offset, rows, watermark = await self._catch_up(shard_map, move)
                await self._advance(
                    move,
                    Step.COPIED,
                    copied_offset=offset,
                    rows_copied=rows,
                    catch_up_watermark=watermark,
                )
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
        self, move: Move, step: Step, stamp: str = "", **figures: int | None
    ) -> None:
        """Record the step reached, only from the step it was at (a rerun changes nothing),
        with the figures given (columns of ``moves``; None keeps a column as it is)."""
        stamped = f", {stamp} = clock_timestamp()" if stamp else ""
        recorded = "".join(
            f", {column} = coalesce(${index}, {column})"
            for index, column in enumerate(figures, start=4)
        )
        await self.control.execute(
            f"UPDATE moves SET step = $2{stamped}{recorded} WHERE move_id = $1 AND step = $3",
            move.move_id,
            str(step),
            str(move.step),
            *figures.values(),
        )

    async def _set_paused(self, partition: int, *, paused: bool) -> None:
        version = await publish_version(self.control)
        await self.control.execute(
            "UPDATE shard_map SET paused = $2, version = $3 WHERE partition = $1",
            partition,
            paused,
            version,
        )

    async def _precopy(self, shard_map: ShardMap, move: Move) -> None:
        """Step 2: p's history below the snapshot's watermark into the target, p running."""
        await self.control.execute(
            "UPDATE moves SET precopy_started_at = clock_timestamp() WHERE move_id = $1",
            move.move_id,
        )
        source = await self._cup(shard_map, move.source_cup)
        target = await self._cup(shard_map, move.target_cup)
        watermark, rows = await precopy(source, target, move)
        await target.analyze()  # the catch-up's plans see the rows that just arrived
        self._precopied[move.move_id] = watermark
        await self._advance(
            move, Step.PRECOPIED, "precopied_at", precopy_watermark=watermark, precopy_rows=rows
        )

    async def _fence(self, shard_map: ShardMap, move: Move) -> int:
        """Step 4: a new epoch, frozen, in the source; a rerun finds it frozen already."""
        source = await self._cup(shard_map, move.source_cup)
        epoch = await source.fence(move.partition, f"move {move.move_id} to cup {move.target_cup}")
        if epoch is None:
            raise InfrastructureError(
                f"partition {move.partition} has no state row in cup {move.source_cup}"
            )
        return epoch

    async def _catch_up(self, shard_map: ShardMap, move: Move) -> tuple[int, int, int]:
        """Step 5: what changed since this session's pre-copy (or, without one, every row);
        (next offset, rows, watermark copied from)."""
        source = await self._cup(shard_map, move.source_cup)
        target = await self._cup(shard_map, move.target_cup)
        watermark = self._precopied.get(move.move_id, 0)
        offset, rows = await catch_up(source, target, move, watermark)
        return offset, rows, watermark

    async def _flip(self, shard_map: ShardMap, move: Move) -> None:
        """Step 6: thaw the target's copy, then route p there (one control transaction)."""
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
