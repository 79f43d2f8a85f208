"""The consumer group's partition assignment strategy: cup affinity (engine.core.assignment).

A partition number is assigned once, to one member, with every topic of it the member
subscribes (the commands and the internal topic): a partition's input is both, and one
worker owns it.

aiokafka asks every member for its metadata when it joins (we send the partitions it
held, for stickiness) and asks the elected leader to assign; the leader knows each
partition's cup from its own shard map, which the map follower keeps current. A stale
map only makes the affinity worse for one generation, never the ownership wrong: the
cups' epochs decide who may write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import msgspec
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from engine.core.assignment import assign
from engine.core.records import ShardMap

log = logging.getLogger(__name__)

_HELD = msgspec.msgpack.Decoder(list[int])
UNMAPPED_CUP = -1
"""Cup of a topic partition missing from the shard map (there should be none)."""


class CupAffinityAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """One instance per worker: it remembers its last assignment and the current map."""

    name = "smallcups-cup-affinity"
    version = 0

    def __init__(self, shard_map: ShardMap):
        self.shard_map = shard_map
        self.held: list[int] = []

    def follow(self, shard_map: ShardMap) -> None:
        self.shard_map = shard_map

    def assign(
        self,
        cluster: ClusterMetadata,
        members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = {topic for metadata in members.values() for topic in metadata.subscription}
        partitions: set[int] = set()
        for topic in topics:
            partitions |= cluster.partitions_for_topic(topic) or set()
        cup_of = {p: self.shard_map.cup_of.get(p, UNMAPPED_CUP) for p in partitions}
        previous = {m: _decode_held(data.user_data) for m, data in members.items()}
        chosen_by = assign(sorted(members), cup_of, previous)
        assignments: dict[str, list[tuple[str, list[int]]]] = {m: [] for m in members}
        for member, chosen in chosen_by.items():
            for topic in sorted(members[member].subscription):
                present = cluster.partitions_for_topic(topic) or set()
                assignments[member].append((topic, [p for p in chosen if p in present]))
        log.info(
            "assigned %d members over %d cups (map version %d)",
            len(members),
            len(self.shard_map.cups),
            self.shard_map.version,
        )
        return {
            member: ConsumerProtocolMemberAssignment(self.version, chosen, b"")
            for member, chosen in assignments.items()
        }

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        held = msgspec.msgpack.encode(sorted(self.held))
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), held)

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self.held = sorted({p for _, partitions in assignment.assignment for p in partitions})


def _decode_held(user_data: bytes) -> list[int]:
    """The partitions a member held; an empty or foreign payload counts as none."""
    if not user_data:
        return []
    try:
        return _HELD.decode(user_data)
    except msgspec.DecodeError:
        return []
