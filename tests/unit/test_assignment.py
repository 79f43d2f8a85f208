"""Cup-affinity assignment: whole cups while workers <= cups, an even spread beyond,
sticky across members joining and leaving; and the rebalance plan of the cups."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from hypothesis import given
from hypothesis import strategies as st

from engine.core.assignment import assign
from engine.core.placement import cup_quotas, plan_rebalance
from engine.core.records import ShardMap
from engine.kafka.assignor import CupAffinityAssignor


def cups_per_member(
    assignment: Mapping[str, Sequence[int]], cup_of: Mapping[int, int]
) -> dict[str, set[int]]:
    """Which cups each member talks to under ``assignment``."""
    return {m: {cup_of[p] for p in ps} for m, ps in assignment.items()}


def round_robin(partitions: int, cups: int) -> dict[int, int]:
    return {p: p % cups for p in range(partitions)}


def members(count: int) -> list[str]:
    return [f"worker-{i}" for i in range(count)]


def moved(before: dict[str, list[int]], after: dict[str, list[int]]) -> int:
    """Partitions whose member changed (a member gone counts all its partitions)."""
    owner = {p: m for m, ps in before.items() for p in ps}
    return sum(1 for m, ps in after.items() for p in ps if owner.get(p) != m)


def test_four_cups_two_workers_each_worker_talks_to_exactly_two_cups() -> None:
    cup_of = round_robin(64, 4)
    result = assign(members(2), cup_of)
    assert [len(cups) for cups in cups_per_member(result, cup_of).values()] == [2, 2]
    assert sorted(len(ps) for ps in result.values()) == [32, 32]


def test_four_cups_four_workers_one_cup_each() -> None:
    cup_of = round_robin(64, 4)
    talks = cups_per_member(assign(members(4), cup_of), cup_of)
    assert sorted(cup for cups in talks.values() for cup in cups) == [0, 1, 2, 3]


def test_eight_workers_spread_evenly_two_per_cup() -> None:
    cup_of = round_robin(64, 4)
    result = assign(members(8), cup_of)
    assert sorted(len(ps) for ps in result.values()) == [8] * 8
    assert all(len(c) == 1 for c in cups_per_member(result, cup_of).values())


def test_more_workers_than_cups_uneven_sizes_still_even() -> None:
    cup_of = round_robin(64, 5)
    result = assign(members(7), cup_of)
    sizes = [len(ps) for ps in result.values()]
    assert max(sizes) - min(sizes) <= 1
    assert max(len(c) for c in cups_per_member(result, cup_of).values()) <= 2


def test_a_member_joining_moves_one_cup_only() -> None:
    cup_of = round_robin(64, 4)
    before = assign(members(2), cup_of)
    after = assign(members(3), cup_of, before)
    assert moved(before, after) == 16
    assert [len(c) for c in cups_per_member(after, cup_of).values()].count(1) == 2


def test_growing_one_member_at_a_time_stays_even_and_sticky() -> None:
    cup_of = round_robin(16, 4)
    assignment = assign(members(2), cup_of)
    for count in range(3, 9):
        grown = assign(members(count), cup_of, assignment)
        sizes = sorted(len(ps) for ps in grown.values())
        assert sizes[-1] - sizes[0] <= 1 or count <= 4
        assert moved(assignment, grown) <= len(cup_of) // 2
        assignment = grown
    assert sorted(len(ps) for ps in assignment.values()) == [2] * 8
    assert max(len(c) for c in cups_per_member(assignment, cup_of).values()) <= 2


def test_a_member_leaving_moves_only_its_partitions() -> None:
    cup_of = round_robin(64, 4)
    before = assign(members(8), cup_of)
    survivors = members(8)[:-1]
    after = assign(survivors, cup_of, {m: before[m] for m in survivors})
    assert moved({m: before[m] for m in survivors}, after) == len(before["worker-7"])


@given(
    st.integers(1, 128),
    st.integers(1, 9),
    st.integers(1, 12),
    st.integers(1, 12),
)
def test_every_partition_once_and_spread_within_the_regime(
    partitions: int, cups: int, workers: int, joined: int
) -> None:
    cup_of = round_robin(partitions, cups)
    first = assign(members(workers), cup_of)
    second = assign(members(joined), cup_of, first)
    for result, count in ((first, workers), (second, joined)):
        owned = sorted(p for ps in result.values() for p in ps)
        assert owned == sorted(cup_of)
        in_use = len(set(cup_of.values()))
        if count > in_use:
            sizes = [len(ps) for ps in result.values()]
            assert max(sizes) - min(sizes) <= 1
        else:
            talks = [len(c) for c in cups_per_member(result, cup_of).values()]
            assert max(talks) - min(talks) <= 1


def test_the_assignor_sends_what_it_held_and_assigns_by_its_map() -> None:
    cup_of = round_robin(8, 2)
    shard_map = ShardMap(1, 8, "t", {0: "a", 1: "b"}, cup_of)
    assignor = CupAffinityAssignor(shard_map)
    metadata = assignor.metadata(["t.commands"])
    assert metadata.subscription == ["t.commands"]

    class Cluster:
        def partitions_for_topic(self, topic: str) -> set[int]:
            return set(range(8))

    result = assignor.assign(Cluster(), {"m1": metadata, "m2": metadata})
    assignor.on_assignment(result["m1"])
    assert {cup_of[p] for p in assignor.held} in ({0}, {1})
    assert assignor.metadata(["t.commands"]).user_data != b""


def test_rebalance_gives_a_new_cup_its_even_share() -> None:
    cup_of = round_robin(64, 4)
    plan = plan_rebalance(cup_of, [0, 1, 2, 3, 4])
    assert len(plan) == 12
    assert {target for _, target in plan} == {4}
    after = {**cup_of, **dict(plan)}
    assert sorted(Counter(after.values()).values()) == [12, 13, 13, 13, 13]
    assert plan_rebalance(after, [0, 1, 2, 3, 4]) == []


@given(st.dictionaries(st.integers(0, 99), st.integers(0, 5), min_size=1), st.integers(1, 8))
def test_rebalance_reaches_the_quotas_with_the_fewest_moves(
    cup_of: dict[int, int], extra_cups: int
) -> None:
    cups = sorted(set(cup_of.values()) | set(range(6, 6 + extra_cups)))
    plan = plan_rebalance(cup_of, cups)
    quotas = cup_quotas(cup_of, cups)
    after = {**cup_of, **dict(plan)}
    assert Counter(after.values()) == Counter({c: q for c, q in quotas.items() if q})
    surplus = sum(max(0, n - quotas[c]) for c, n in Counter(cup_of.values()).items())
    assert len(plan) == surplus
    assert len({p for p, _ in plan}) == len(plan)


def test_a_partition_is_assigned_with_both_its_topics_to_one_member() -> None:
    cup_of = round_robin(8, 2)
    assignor = CupAffinityAssignor(ShardMap(1, 8, "t", {0: "a", 1: "b"}, cup_of))
    metadata = assignor.metadata(["t.commands", "t.internal"])

    class Cluster:
        def partitions_for_topic(self, topic: str) -> set[int]:
            return set(range(8))

    result = assignor.assign(Cluster(), {"m1": metadata, "m2": metadata, "m3": metadata})
    owners: dict[int, set[str]] = {}
    for member, assignment in result.items():
        by_topic = dict(assignment.assignment)
        assert by_topic["t.commands"] == by_topic["t.internal"], member
        for partition in by_topic["t.commands"]:
            owners.setdefault(partition, set()).add(member)
    assert sorted(owners) == list(range(8))
    assert all(len(members) == 1 for members in owners.values())
    assignor.on_assignment(result["m1"])
    assert assignor.held == sorted(dict(result["m1"].assignment)["t.commands"])
