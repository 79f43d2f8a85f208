"""Where partitions should live: the even share of each cup, and the moves to reach it;
the moves that empty a draining cup.

Pure: a shard map's ``cup_of`` in, a list of (partition, target cup) out. A draining
cup is never a target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from engine.core.errors import invariant


def cup_quotas(cup_of: Mapping[int, int], cups: Iterable[int]) -> dict[int, int]:
    """Each cup's even share: P // C, one more for P % C cups, those holding most now."""
    chosen = sorted(set(cups))
    invariant(bool(chosen), "at least one cup")
    held = {cup: 0 for cup in chosen}
    for cup in cup_of.values():
        held[cup] = held.get(cup, 0) + 1
    base, extra = divmod(len(cup_of), len(chosen))
    fullest = sorted(chosen, key=lambda cup: (-held[cup], cup))
    return {cup: base + (1 if cup in fullest[:extra] else 0) for cup in chosen}


def plan_rebalance(
    cup_of: Mapping[int, int], cups: Iterable[int], draining: Iterable[int] = ()
) -> list[tuple[int, int]]:
    """The fewest moves that give every cup its quota: (partition, target cup), in order.

    A draining cup's quota is 0: it only gives. Donors give their highest partitions
    first; moves alternate between donors so no single cup carries all the copying.
    """
    closed = set(draining)
    quotas = cup_quotas(cup_of, set(cups) - closed) | {cup: 0 for cup in closed}
    invariant(all(cup in quotas for cup in cup_of.values()), "every owner is a cup")
    owned: dict[int, list[int]] = {cup: [] for cup in quotas}
    for partition in sorted(cup_of):
        owned[cup_of[partition]].append(partition)
    surplus = {cup: owned[cup][quotas[cup] :] for cup in quotas if len(owned[cup]) > quotas[cup]}
    room = {cup: quotas[cup] - len(owned[cup]) for cup in quotas if len(owned[cup]) < quotas[cup]}
    invariant(sum(len(v) for v in surplus.values()) == sum(room.values()), "surplus fills the room")
    givers = [sorted(partitions, reverse=True) for _, partitions in sorted(surplus.items())]
    order: list[int] = []
    while any(givers):
        for partitions in givers:
            if partitions:
                order.append(partitions.pop(0))
    plan = []
    for partition in order:
        target = min(room, key=lambda cup: (-room[cup], cup))
        plan.append((partition, target))
        room[target] -= 1
        if room[target] == 0:
            del room[target]
    return plan


def plan_drain(
    cup_of: Mapping[int, int], cups: Iterable[int], draining: Iterable[int], cup: int
) -> list[tuple[int, int]]:
    """Every partition of ``cup`` to the other cups that are not draining: (partition,
    target cup), in partition order, each to the cup holding fewest at that point (the
    lowest id on a tie), so the drained partitions spread evenly over the rest."""
    closed = set(draining) | {cup}
    targets = sorted(set(cups) - closed)
    invariant(cup in set(cups), "the drained cup is a cup")
    invariant(bool(targets), "a cup that is not draining takes the partitions")
    held = {target: 0 for target in targets}
    for owner in cup_of.values():
        if owner in held:
            held[owner] += 1
    plan = []
    for partition in sorted(p for p, owner in cup_of.items() if owner == cup):
        target = min(targets, key=lambda t: (held[t], t))
        plan.append((partition, target))
        held[target] += 1
    invariant(all(target not in closed for _, target in plan), "never onto a draining cup")
    return plan
