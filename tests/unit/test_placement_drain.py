"""Draining a cup: every partition it holds goes to the cups that are not draining,
evenly; a rebalance never chooses a draining cup."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from engine.core.errors import InvariantError
from engine.core.placement import plan_drain, plan_rebalance


def round_robin(partitions: int, cups: int) -> dict[int, int]:
    return {p: p % cups for p in range(partitions)}


def test_drain_spreads_the_cup_over_the_others() -> None:
    cup_of = round_robin(64, 4)
    plan = plan_drain(cup_of, [0, 1, 2, 3], [], 3)
    assert [p for p, _ in plan] == [p for p in range(64) if p % 4 == 3]
    after = {**cup_of, **dict(plan)}
    assert Counter(after.values()) == Counter({0: 22, 1: 21, 2: 21})


def test_drain_skips_the_draining_cups() -> None:
    cup_of = round_robin(12, 3)
    plan = plan_drain(cup_of, [0, 1, 2], [1], 2)
    assert {target for _, target in plan} == {0}


def test_drain_refuses_when_no_cup_takes_the_partitions() -> None:
    with pytest.raises(InvariantError):
        plan_drain(round_robin(8, 2), [0, 1], [0], 1)


def test_an_empty_cup_has_nothing_to_drain() -> None:
    assert plan_drain({0: 0, 1: 0}, [0, 1], [], 1) == []


@given(
    st.dictionaries(st.integers(0, 99), st.integers(0, 5), min_size=1),
    st.integers(0, 5),
    st.sets(st.integers(0, 5), max_size=3),
)
def test_drain_empties_the_cup_and_keeps_the_rest_even(
    cup_of: dict[int, int], cup: int, draining: set[int]
) -> None:
    cups = sorted(set(cup_of.values()) | set(range(6)))
    closed = draining | {cup}
    assume(len(closed) < len(cups))
    plan = plan_drain(cup_of, cups, draining, cup)
    after = {**cup_of, **dict(plan)}
    assert cup not in after.values()
    assert all(target not in closed for _, target in plan)
    assert sorted(p for p, _ in plan) == sorted(p for p, c in cup_of.items() if c == cup)
    targets = [c for c in cups if c not in closed]
    before, held = Counter(cup_of.values()), Counter(after.values())
    spread_before = max(before[c] for c in targets) - min(before[c] for c in targets)
    spread_after = max(held[c] for c in targets) - min(held[c] for c in targets)
    assert spread_after <= max(spread_before, 1)


@given(
    st.dictionaries(st.integers(0, 99), st.integers(0, 5), min_size=1),
    st.sets(st.integers(0, 5), min_size=1, max_size=5),
)
def test_rebalance_empties_the_draining_cups(cup_of: dict[int, int], draining: set[int]) -> None:
    cups = range(6)
    plan = plan_rebalance(cup_of, cups, draining)
    after = {**cup_of, **dict(plan)}
    assert not set(after.values()) & draining
    assert all(target not in draining for _, target in plan)
    held = Counter(after.values())
    assert max(held.values()) - min(held.get(c, 0) for c in cups if c not in draining) <= 1
