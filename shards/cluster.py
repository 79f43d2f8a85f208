"""Operator actions on the cups: add, drain, remove one, move partitions, rebalance,
recover, inventory.

Each takes an open connection to the control database; the cups are reached by the
DSNs the control database holds. ``smallcups shards`` (engine.admin.shards) prints.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from engine.core.config import ShardsConfig
from engine.core.dsn import redact
from engine.core.errors import ConfigError
from engine.core.placement import plan_drain, plan_rebalance
from engine.core.records import ShardMap
from shards.backends import connect_cup
from shards.control import (
    draining_cups,
    load_shard_map,
    register_cup,
    set_draining,
    unregister_cup,
)
from shards.cup_admin import CupKind
from shards.moves import RESUME_WAIT_SECONDS, Move, Mover, Step, open_moves, plan_move


@dataclass(frozen=True, slots=True)
class CupInventory:
    cup_id: int
    kind: CupKind
    dsn: str
    """Redacted: fit for printing."""
    partitions: list[int]
    accounts: int
    journal_rows: int
    transfers_in_flight: int
    idempotency_records: int
    paused: list[int]
    size_bytes: int
    rows_estimated: int
    draining: bool


async def add_cup(control: asyncpg.Connection, dsn: str, config: ShardsConfig) -> int:
    """Create the cup schema in ``dsn`` (migrations) and register the cup; idempotent."""
    cup = await connect_cup(dsn, config)
    try:
        await cup.migrate()
    finally:
        await cup.close()
    return await register_cup(control, dsn)


async def move_partition(
    control: asyncpg.Connection,
    partition: int,
    target_cup: int,
    config: ShardsConfig,
    stop_after: Step | None = None,
    resume_wait_seconds: float = RESUME_WAIT_SECONDS,
) -> Move:
    """Plan and run a move; ``stop_after`` leaves it at that step (as a crash would).
    Refuses a draining target."""
    if target_cup in await draining_cups(control):
        raise ConfigError(f"cup {target_cup} is draining: `smallcups shards undrain` it first")
    move = await plan_move(control, partition, target_cup)
    async with Mover(control, config, resume_wait_seconds) as mover:
        return await mover.finish(move.move_id, stop_after)


async def rebalance(
    control: asyncpg.Connection,
    config: ShardsConfig,
    on_move: Callable[[Move], None] = lambda move: None,
    resume_wait_seconds: float = RESUME_WAIT_SECONDS,
) -> list[Move]:
    """Move partitions one at a time until every cup that is not draining holds its even
    share (and the draining ones none)."""
    shard_map = await load_shard_map(control)
    draining = await draining_cups(control)
    if not set(shard_map.cups) - draining:
        raise ConfigError("every cup is draining: `smallcups shards undrain` one first")
    done = []
    for partition, target in plan_rebalance(shard_map.cup_of, shard_map.cups, draining):
        move = await move_partition(control, partition, target, config, None, resume_wait_seconds)
        on_move(move)
        done.append(move)
    return done


async def drain(
    control: asyncpg.Connection,
    cup_id: int,
    config: ShardsConfig,
    on_move: Callable[[Move], None] = lambda move: None,
    resume_wait_seconds: float = RESUME_WAIT_SECONDS,
) -> list[Move]:
    """Mark ``cup_id`` draining, then move every partition it holds to the other cups
    that are not draining, one move at a time, evenly. Running it again after a crash
    finishes the move the crash cut short (a move out of this cup) and goes on."""
    shard_map = await load_shard_map(control)
    draining = await draining_cups(control)
    _known(shard_map, cup_id)
    if len(shard_map.cups) == 1:
        raise ConfigError(f"cup {cup_id} is the only cup: its partitions have nowhere to go")
    if not set(shard_map.cups) - draining - {cup_id}:
        raise ConfigError("every other cup is draining: `smallcups shards undrain` one first")
    unfinished = await open_moves(control)
    resumable = [m for m in unfinished if _drains(m, cup_id, draining)]
    for move in unfinished:
        if move not in resumable:
            raise ConfigError(f"unfinished {move.summary()}: `smallcups shards recover` first")
    await set_draining(control, cup_id, draining=True)
    done = []
    async with Mover(control, config, resume_wait_seconds) as mover:
        for move in resumable:
            done.append(await mover.finish(move.move_id))
            on_move(done[-1])
    shard_map = await load_shard_map(control)
    for partition, target in plan_drain(shard_map.cup_of, shard_map.cups, draining, cup_id):
        done.append(
            await move_partition(control, partition, target, config, None, resume_wait_seconds)
        )
        on_move(done[-1])
    arrived = (await load_shard_map(control)).partitions_of(cup_id)
    if arrived:
        raise ConfigError(
            f"partitions {arrived} were moved to cup {cup_id} while it drained (a tool that"
            " read the cups before it was marked): run the drain again"
        )
    return done


def _drains(move: Move, cup_id: int, draining: frozenset[int]) -> bool:
    """Whether ``move`` is one a drain of ``cup_id`` may finish: out of it, to a cup that
    takes partitions."""
    return move.source_cup == cup_id and move.target_cup not in draining


async def undrain(control: asyncpg.Connection, cup_id: int) -> None:
    """Let ``cup_id`` take partitions again (``shards rebalance`` gives it its share)."""
    if not await set_draining(control, cup_id, draining=False):
        raise ConfigError(f"no cup {cup_id}")


async def remove(control: asyncpg.Connection, cup_id: int, config: ShardsConfig) -> None:
    """Unregister an empty cup: no partition mapped to it, no unfinished move naming it,
    and no rows in it but tombstones (frozen state rows of partitions moved away). Its
    database is left as it is, for the operator to archive or drop."""
    shard_map = await load_shard_map(control)
    _known(shard_map, cup_id)
    held = shard_map.partitions_of(cup_id)
    if held:
        raise ConfigError(
            f"cup {cup_id} holds {len(held)} partitions: `smallcups shards drain {cup_id}` first"
        )
    for move in await open_moves(control):
        if cup_id in (move.source_cup, move.target_cup):
            raise ConfigError(f"unfinished {move.summary()}: `smallcups shards recover` first")
    cup = await connect_cup(shard_map.cups[cup_id], config)
    try:
        live = await cup.live_partitions()
    finally:
        await cup.close()
    if live:
        raise ConfigError(
            f"cup {cup_id} still has rows of partitions {live[:20]} that are not tombstones"
            " (`smallcups reconcile` names them)"
        )
    await unregister_cup(control, cup_id)


def _known(shard_map: ShardMap, cup_id: int) -> None:
    if cup_id not in shard_map.cups:
        raise ConfigError(f"no cup {cup_id}: known cups are {sorted(shard_map.cups)}")


async def recover(
    control: asyncpg.Connection,
    config: ShardsConfig,
    *,
    abort: bool,
    resume_wait_seconds: float = RESUME_WAIT_SECONDS,
) -> list[Move]:
    """Finish every unfinished move; with ``abort``, roll back those not flipped yet."""
    recovered = []
    async with Mover(control, config, resume_wait_seconds) as mover:
        for move in await open_moves(control):
            if abort and move.step is not Step.FLIPPED:
                recovered.append(await mover.abort(move.move_id))
            else:
                recovered.append(await mover.finish(move.move_id))
    return recovered


async def inventory(control: asyncpg.Connection, config: ShardsConfig) -> list[CupInventory]:
    """Per cup: its partitions by the map, the rows it holds for them, its size."""
    shard_map = await load_shard_map(control)
    draining = await draining_cups(control)
    return list(
        await asyncio.gather(
            *(_cup_inventory(shard_map, c, config, c in draining) for c in sorted(shard_map.cups))
        )
    )


async def _cup_inventory(
    shard_map: ShardMap, cup_id: int, config: ShardsConfig, draining: bool
) -> CupInventory:
    owned = shard_map.partitions_of(cup_id)
    cup = await connect_cup(shard_map.cups[cup_id], config)
    try:
        held = await cup.holdings(owned)
        footprint = await cup.footprint()
    finally:
        await cup.close()
    return CupInventory(
        cup_id,
        cup.kind,
        redact(shard_map.cups[cup_id]),
        owned,
        held.accounts,
        held.journal_rows,
        held.transfers_in_flight,
        held.idempotency_records,
        sorted(set(owned) & shard_map.paused),
        footprint.size_bytes,
        footprint.rows_estimated,
        draining,
    )
