"""Which assigned partitions a new shard map flipped to another cup: the worker asks the
group to rebalance for those (worker.rebalance_on_flip)."""

from __future__ import annotations

from engine.core.records import ShardMap
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
