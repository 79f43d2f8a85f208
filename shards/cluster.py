"""Operator actions on the cups: add one, move partitions, rebalance, recover, inventory.

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
from engine.core.placement import plan_rebalance
from engine.core.records import ShardMap
from shards.backends import connect_cup
from shards.control import load_shard_map, register_cup
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
    paused: list[int]


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
    """Plan and run a move; ``stop_after`` leaves it at that step (as a crash would)."""
    move = await plan_move(control, partition, target_cup)
    mover = Mover(control, config, resume_wait_seconds)
    return await mover.finish(move.move_id, stop_after)


async def rebalance(
    control: asyncpg.Connection,
    config: ShardsConfig,
    on_move: Callable[[Move], None] = lambda move: None,
    resume_wait_seconds: float = RESUME_WAIT_SECONDS,
) -> list[Move]:
    """Move partitions one at a time until every cup holds its even share."""
    shard_map = await load_shard_map(control)
    done = []
    for partition, target in plan_rebalance(shard_map.cup_of, shard_map.cups):
        move = await move_partition(control, partition, target, config, None, resume_wait_seconds)
        on_move(move)
        done.append(move)
    return done


async def recover(
    control: asyncpg.Connection,
    config: ShardsConfig,
    *,
    abort: bool,
    resume_wait_seconds: float = RESUME_WAIT_SECONDS,
) -> list[Move]:
    """Finish every unfinished move; with ``abort``, roll back those not flipped yet."""
    mover = Mover(control, config, resume_wait_seconds)
    recovered = []
    for move in await open_moves(control):
        if abort and move.step is not Step.FLIPPED:
            recovered.append(await mover.abort(move.move_id))
        else:
            recovered.append(await mover.finish(move.move_id))
    return recovered


async def inventory(control: asyncpg.Connection, config: ShardsConfig) -> list[CupInventory]:
    """Per cup: its partitions by the map and the rows it holds for them."""
    shard_map = await load_shard_map(control)
    return list(
        await asyncio.gather(
            *(_cup_inventory(shard_map, c, config) for c in sorted(shard_map.cups))
        )
    )


async def _cup_inventory(shard_map: ShardMap, cup_id: int, config: ShardsConfig) -> CupInventory:
    owned = shard_map.partitions_of(cup_id)
    cup = await connect_cup(shard_map.cups[cup_id], config)
    try:
        held = await cup.holdings(owned)
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
        sorted(set(owned) & shard_map.paused),
    )
