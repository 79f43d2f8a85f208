"""``smallcups init``: the topics, the control database and shard map, the cup schemas."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

import msgspec

from engine.core.book import Account
from engine.core.config import Config
from engine.core.records import ShardMap
from engine.core.routing import partition_of
from engine.kafka.acls import deployment_grants, grant, revoke, superseded_grants
from engine.kafka.topics import ensure_topics
from shards.control import connect, initialize_control, load_shard_map
from shards.cups import close_cups, initialize_cups, open_cups


@dataclass(frozen=True, slots=True)
class InitReport:
    topics: dict[str, int]
    shard_map: ShardMap
    acls: int
    """ACL bindings granted to the roles (0 when Kafka has no SASL users to grant to)."""


async def initialize(config: Config) -> InitReport:
    """Topics, control schema and shard map, cup schemas: all idempotent."""
    partitions = config.kafka.partitions
    kafka = config.require_kafka()
    topics = await ensure_topics(kafka, partitions)
    grants = deployment_grants(kafka) if kafka.security_protocol.sasl else []
    await grant(kafka, grants)
    if grants:
        await revoke(kafka, superseded_grants(kafka))
    control = await connect(config.control_dsn, config.shards)
    try:
        shard_map = await initialize_control(
            control, config.cup_dsns, partitions, config.kafka.topic_prefix
        )
    finally:
        await control.close()
    await initialize_cups(shard_map, config.shards)
    return InitReport(topics, shard_map, len(grants))


async def read_shard_map(config: Config) -> ShardMap:
    control = await connect(config.control_dsn, config.shards)
    try:
        return await load_shard_map(control)
    finally:
        await control.close()


async def read_account(config: Config, customer: int, number: int) -> tuple[int, Account | None]:
    """The partition of ``customer`` and the account as its cup holds it (None: no such)."""
    shard_map = await read_shard_map(config)
    partition = partition_of(customer, shard_map.partitions)
    cup = shard_map.cup_of[partition]
    only_cup = dataclasses.replace(shard_map, cups={cup: shard_map.cups[cup]})
    stores = await open_cups(only_cup, config.shards)
    try:
        found = await stores[cup].load_accounts(partition, [(customer, number)])
    finally:
        await close_cups(stores)
    return partition, (found[0] if found else None)


def init(
    config: Config,
    partitions: int | None,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
) -> int:
    """``smallcups init``: the options given override the configuration's."""
    given = {
        "partitions": partitions,
        "replication_factor": replication_factor,
        "min_insync_replicas": min_insync_replicas,
    }
    overrides = {name: value for name, value in given.items() if value is not None}
    if overrides:
        kafka = msgspec.structs.replace(config.kafka, **overrides)
        config = msgspec.structs.replace(config, kafka=kafka)
    report = asyncio.run(initialize(config))
    for topic, count in sorted(report.topics.items()):
        print(f"topic {topic}: {count} partitions")
    if report.acls:
        print(f"ACLs: {report.acls} bindings for the roles (docs/security.md)")
    shard_map = report.shard_map
    for cup_id in sorted(shard_map.cups):
        owned = shard_map.partitions_of(cup_id)
        print(f"cup {cup_id}: {len(owned)} partitions")
    print(f"shard map version {shard_map.version}: {shard_map.partitions} partitions")
    return 0
