"""Which assigned partitions a new shard map flipped to another cup, and the rebalance
the worker asks for them once the map is quiet (worker.rebalance_on_flip)."""

from __future__ import annotations

import asyncio

from engine.core.records import ShardMap
from engine.worker.affinity import FlipRebalance
from engine.worker.loop import _flipped


def shard_map(
    version: int, cup_of: dict[int, int], paused: frozenset[int] = frozenset()
) -> ShardMap:
    return ShardMap(version, len(cup_of), "t", {0: "a", 1: "b", 2: "c"}, cup_of, paused)


def test_a_flip_of_an_assigned_partition_is_seen() -> None:
    before = shard_map(1, {0: 0, 1: 1, 2: 0})
    after = shard_map(2, {0: 1, 1: 1, 2: 0})
    assert _flipped(before, after, [0, 2]) == [0]


def test_a_pause_a_flip_elsewhere_and_a_removed_cup_are_not_flips_here() -> None:
    before = shard_map(1, {0: 0, 1: 1, 2: 0})
    paused = shard_map(2, {0: 0, 1: 1, 2: 0}, frozenset({0}))
    assert _flipped(before, paused, [0, 2]) == []
    elsewhere = shard_map(3, {0: 0, 1: 0, 2: 0})
    assert _flipped(before, elsewhere, [0, 2]) == []
    removed = ShardMap(4, 3, "t", {0: "a", 1: "b"}, {0: 0, 1: 1, 2: 0})
    assert _flipped(before, removed, [0, 1, 2]) == []


async def test_a_series_of_moves_asks_one_rebalance_once_the_map_is_quiet() -> None:
    asked: list[int] = []
    trigger = FlipRebalance(lambda: asked.append(1), enabled=True, quiet_seconds=0.05)
    trigger.map_changed([])
    assert not trigger.pending, "no flip of ours, nothing to ask"
    trigger.map_changed([3])
    for _ in range(4):  # the next moves' pauses and flips keep it waiting
        await asyncio.sleep(0.02)
        trigger.map_changed([])
    assert asked == [] and trigger.pending
    await asyncio.sleep(0.1)
    assert asked == [1] and not trigger.pending


async def test_no_rebalance_when_disabled_or_stopped() -> None:
    asked: list[int] = []
    off = FlipRebalance(lambda: asked.append(1), enabled=False, quiet_seconds=0.01)
    off.map_changed([1])
    stopped = FlipRebalance(lambda: asked.append(2), enabled=True, quiet_seconds=0.01)
    stopped.map_changed([1])
    stopped.cancel()
    await asyncio.sleep(0.05)
    assert asked == []
