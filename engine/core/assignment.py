"""Cup affinity: which worker consumes which partitions, knowing each partition's cup.

Pure (no Kafka): members, the partitions' cups and what each member held before in, an
assignment out. Two regimes:

- workers <= cups: whole cups are assigned, ``C // W`` or one more per worker, so a
  worker talks to as few cups as possible ("each worker owns a cup") and a cup's
  partitions are written through one worker's pool;
- workers > cups: partitions are spread evenly (``P // W`` or one more per worker);
  a worker keeps what it held in its home cup (where it held most), and the rest is
  dealt cup by cup, so a worker's partitions come from as few cups as possible.

Both are sticky: a cup (or a partition) stays with the member that held it before when
the quotas allow, so a member joining or leaving moves little.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from engine.core.errors import invariant


def assign(
    members: Sequence[str],
    cup_of: Mapping[int, int],
    previous: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, list[int]]:
    """Partitions per member; every partition of ``cup_of`` to exactly one member."""
    invariant(len(members) > 0, "at least one member")
    invariant(len(set(members)) == len(members), "member ids are unique")
    ordered = sorted(members)
    held = _previous_owners(ordered, cup_of, previous or {})
    cups = sorted(set(cup_of.values()))
    if len(ordered) <= len(cups):
        result = _by_cup(ordered, cup_of, held)
    else:
        result = _by_partition(ordered, cup_of, held)
    invariant(
        sorted(p for ps in result.values() for p in ps) == sorted(cup_of), "each partition once"
    )
    return result


def _previous_owners(
    members: Sequence[str], cup_of: Mapping[int, int], previous: Mapping[str, Sequence[int]]
) -> dict[int, str]:
    """partition -> the member that held it, for members still here (first claim wins)."""
    owners: dict[int, str] = {}
    for member in members:
        for partition in previous.get(member, ()):
            if partition in cup_of and partition not in owners:
                owners[partition] = member
    return owners


def _quotas(members: Sequence[str], units: int, weight: Mapping[str, int]) -> dict[str, int]:
    """``units // W`` each; the ``units % W`` extra ones to the members holding most now."""
    base, extra = divmod(units, len(members))
    favoured = sorted(members, key=lambda m: (-weight.get(m, 0), m))[:extra]
    return {m: base + (1 if m in favoured else 0) for m in members}


def _by_cup(
    members: Sequence[str], cup_of: Mapping[int, int], held: Mapping[int, str]
) -> dict[str, list[int]]:
    partitions_of: dict[int, list[int]] = {}
    for partition, cup in sorted(cup_of.items()):
        partitions_of.setdefault(cup, []).append(partition)
    holder: dict[int, str] = {}
    for cup, partitions in partitions_of.items():
        votes = Counter(held[p] for p in partitions if p in held)
        if votes:
            holder[cup] = min(votes, key=lambda m: (-votes[m], m))
    quota = _quotas(members, len(partitions_of), Counter(holder.values()))
    cups_of: dict[str, list[int]] = {m: [] for m in members}
    load = dict.fromkeys(members, 0)
    biggest_first = sorted(partitions_of, key=lambda c: (-len(partitions_of[c]), c))
    homeless = []
    for cup in biggest_first:
        member = holder.get(cup)
        if member is not None and len(cups_of[member]) < quota[member]:
            cups_of[member].append(cup)
            load[member] += len(partitions_of[cup])
        else:
            homeless.append(cup)
    for cup in homeless:
        open_members = [m for m in members if len(cups_of[m]) < quota[m]]
        member = min(open_members, key=lambda m: (load[m], m))
        cups_of[member].append(cup)
        load[member] += len(partitions_of[cup])
    return {m: sorted(p for c in cups_of[m] for p in partitions_of[c]) for m in members}


def _by_partition(
    members: Sequence[str], cup_of: Mapping[int, int], held: Mapping[int, str]
) -> dict[str, list[int]]:
    quota = _quotas(members, len(cup_of), Counter(held.values()))
    taken: dict[str, list[int]] = {m: [] for m in members}
    kept: dict[str, list[int]] = {m: [] for m in members}
    for partition in sorted(cup_of):
        if partition in held:
            kept[held[partition]].append(partition)
    for member, partitions in kept.items():
        if partitions:
            held_in = Counter(cup_of[p] for p in partitions)
            home = min(held_in, key=lambda cup: (-held_in[cup], cup))
            taken[member] = [p for p in partitions if cup_of[p] == home][: quota[member]]
    placed = {p for ps in taken.values() for p in ps}
    for partition in sorted(cup_of, key=lambda p: (cup_of[p], p)):
        if partition in placed:
            continue
        cup = cup_of[partition]
        open_members = [m for m in members if len(taken[m]) < quota[m]]
        member = min(
            open_members,
            key=lambda m: (
                -sum(1 for p in taken[m] if cup_of[p] == cup),
                len(taken[m]) == 0,
                len(taken[m]) - quota[m],
                m,
            ),
        )
        taken[member].append(partition)
    return {m: sorted(ps) for m, ps in taken.items()}
