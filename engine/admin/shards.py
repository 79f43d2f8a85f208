"""``smallcups shards``: list, add, move, rebalance, drain, undrain, remove, recover.
Printing only; the logic is in shards.cluster and shards.moves."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from engine.core.config import Config
from engine.core.errors import ConfigError
from shards import cluster
from shards.control import connect
from shards.moves import Move, Step, open_moves

T = TypeVar("T")


def _with_control(config: Config, action: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def run() -> T:
        control = await connect(config.control_dsn, config.shards)
        try:
            return await action(control)
        finally:
            await control.close()

    return asyncio.run(run())


def list_cups(config: Config) -> int:
    shards = config.shards

    async def read(control: asyncpg.Connection) -> tuple[list[cluster.CupInventory], list[Move]]:
        return await cluster.inventory(control, shards), await open_moves(control)

    cups, moves = _with_control(config, read)
    print(
        f"{'cup':>4} {'kind':<8} {'partitions':>10} {'accounts':>10} {'journal':>10} "
        f"{'in flight':>9} {'records':>10} {'size':>9} {'rows (est.)':>12}  dsn"
    )
    for cup in cups:
        paused = f"  paused: {cup.paused}" if cup.paused else ""
        draining = "  draining" if cup.draining else ""
        print(
            f"{cup.cup_id:>4} {cup.kind:<8} {len(cup.partitions):>10} {cup.accounts:>10,} "
            f"{cup.journal_rows:>10,} {cup.transfers_in_flight:>9,} "
            f"{cup.idempotency_records:>10,} "
            f"{_size(cup.size_bytes):>9} {cup.rows_estimated:>12,}  {cup.dsn}{draining}{paused}"
        )
    for move in moves:
        print(f"unfinished {move.summary()}")
    return 1 if moves else 0


def _size(size_bytes: int) -> str:
    """A size on disk for a person: 812 B, 1.5 MiB, 12.0 GiB."""
    size = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def add(config: Config, dsn: str, then_rebalance: bool, resume_wait_seconds: float) -> int:
    cup_id = _with_control(config, lambda c: cluster.add_cup(c, dsn, config.shards))
    print(f"cup {cup_id} added; it holds no partitions until `smallcups shards rebalance`")
    return rebalance(config, resume_wait_seconds) if then_rebalance else 0


def move(config: Config, partition: int, target_cup: int, resume_wait_seconds: float) -> int:
    done = _with_control(
        config,
        lambda c: cluster.move_partition(
            c, partition, target_cup, config.shards, None, resume_wait_seconds
        ),
    )
    print(done.summary())
    return 0 if done.step is Step.DONE else 1


def rebalance(config: Config, resume_wait_seconds: float) -> int:
    moves = _with_control(
        config,
        lambda c: cluster.rebalance(
            c, config.shards, lambda m: print(m.summary()), resume_wait_seconds
        ),
    )
    pauses = [m.pause_seconds for m in moves if m.pause_seconds is not None]
    if pauses:
        print(
            f"rebalanced: {len(moves)} partitions moved, pause per partition "
            f"mean {sum(pauses) / len(pauses):.3f} s, max {max(pauses):.3f} s"
        )
    else:
        print(f"rebalanced: {len(moves)} partitions moved")
    return 0


def drain(config: Config, cup_id: int, resume_wait_seconds: float) -> int:
    moves = _with_control(
        config,
        lambda c: cluster.drain(
            c, cup_id, config.shards, lambda m: print(m.summary()), resume_wait_seconds
        ),
    )
    unfinished = [m for m in moves if m.step is not Step.DONE]
    print(
        f"cup {cup_id} drained: {len(moves)} partitions moved away; it takes none until "
        f"`smallcups shards undrain {cup_id}`"
        if not unfinished
        else f"cup {cup_id} not drained: {len(unfinished)} moves unfinished"
    )
    return 1 if unfinished else 0


def undrain(config: Config, cup_id: int) -> int:
    _with_control(config, lambda c: cluster.undrain(c, cup_id))
    print(f"cup {cup_id} takes partitions again (`smallcups shards rebalance` gives it its share)")
    return 0


def remove(config: Config, cup_id: int) -> int:
    _with_control(config, lambda c: cluster.remove(c, cup_id, config.shards))
    print(f"cup {cup_id} removed from the shard map; its database is left as it is")
    return 0


def recover(config: Config, abort: bool, resume_wait_seconds: float) -> int:
    moves = _with_control(
        config,
        lambda c: cluster.recover(
            c, config.shards, abort=abort, resume_wait_seconds=resume_wait_seconds
        ),
    )
    for recovered in moves:
        print(recovered.summary())
    print(f"recovered {len(moves)} unfinished moves")
    return 0


def run_shards(config: Config, args: argparse.Namespace) -> int:
    """``smallcups shards ACTION``."""
    match args.action:
        case "list":
            return list_cups(config)
        case "add":
            return add(config, args.dsn, args.rebalance, args.resume_wait)
        case "move":
            return move(config, args.partition, args.to, args.resume_wait)
        case "rebalance":
            return rebalance(config, args.resume_wait)
        case "drain":
            return drain(config, args.cup, args.resume_wait)
        case "undrain":
            return undrain(config, args.cup)
        case "remove":
            return remove(config, args.cup)
        case "recover":
            return recover(config, args.abort, args.resume_wait)
    raise ConfigError(f"unknown shards action {args.action!r}")
