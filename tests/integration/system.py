"""What the integration tests read back from a system (loadtest.system makes them):
a topic from its start, a pure-ledger replay of the command topic, the cups' balances.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from asyncmy.errors import MySQLError

from deploy.local.roles import Role, as_role
from engine.admin.scheduler import close_commands
from engine.admin.setup import read_shard_map
from engine.core.authority import Authority, RiskSigner
from engine.core.batch import decode_records, routed
from engine.core.book import Known
from engine.core.config import Config, KafkaConfig, ShardsConfig, WorkerConfig
from engine.core.decoding import decode_command
from engine.core.keyfiles import load_authority
from engine.core.ledger import PartitionLedger
from engine.core.messages import Command, Invalid, Result, Status, Undecodable, result_decoder
from engine.core.records import Position
from engine.core.routing import routing_customers
from engine.core.secrets import read_secret_file
from engine.kafka.client import Client
from engine.kafka.connection import connection
from engine.kafka.topics import end_offsets, read_range
from loadtest.system import System
from shards.backends import cup_kind
from shards.control import connect, login
from shards.cup_admin import CupKind
from shards.cups import close_cups, connect_cups
from shards.mysql.driver import MysqlAddress, run
from shards.mysql.driver import connect as mysql_connect


def upstream_producer(config: Config, **options: Any) -> AIOKafkaProducer:
    """A bare producer as the stack's ``upstream`` user: what any app that may publish
    commands can send."""
    return AIOKafkaProducer(**connection(as_role(config, Role.UPSTREAM).kafka), **options)


def worker_producer(config: Config, **options: Any) -> AIOKafkaProducer:
    """A bare producer as the stack's ``worker`` user (what a relay writes with)."""
    return AIOKafkaProducer(**connection(as_role(config, Role.WORKER).kafka), **options)


def librdkafka_settings(config: Config) -> dict[str, str]:
    """librdkafka's (confluent-kafka's) settings for the stack, as its ``upstream`` user."""
    kafka = as_role(config, Role.UPSTREAM).kafka
    settings = {"bootstrap.servers": kafka.bootstrap_servers}
    if kafka.security_protocol.sasl:
        settings |= {
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": kafka.sasl_mechanism.value,
            "sasl.username": kafka.sasl_username,
            "sasl.password": _password(kafka),
            "ssl.ca.location": kafka.ssl_ca_file,
        }
    return settings


def _password(kafka: KafkaConfig) -> str:
    return read_secret_file(Path(kafka.sasl_password_file), "the upstream user's password")


def java_properties(config: Config) -> str:
    """A Java client's properties file for the stack, as its ``upstream`` user."""
    kafka = as_role(config, Role.UPSTREAM).kafka
    lines = [f"bootstrap.servers={kafka.bootstrap_servers}"]
    if kafka.security_protocol.sasl:
        password = _password(kafka)
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{kafka.sasl_username}" password="{password}";'
        )
        lines += [
            "security.protocol=SASL_SSL",
            f"sasl.mechanism={kafka.sasl_mechanism.value}",
            f"sasl.jaas.config={jaas}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={kafka.ssl_ca_file}",
        ]
    return "\n".join(lines) + "\n"


async def read_topic(kafka: KafkaConfig, topic: str) -> list[Any]:
    """Every record of ``topic`` from the beginning to its current end."""
    return await read_range(kafka, topic, await end_offsets(kafka, topic))


async def final_results(kafka: KafkaConfig) -> dict[str, set[bytes]]:
    """Every distinct result published per command id; a PENDING one fails the test."""
    finals: dict[str, set[bytes]] = {}
    for record in await read_topic(kafka, kafka.results_topic):
        result = result_decoder.decode(record.value)
        assert result.status is not Status.PENDING, f"pending result of {result.command_id}"
        finals.setdefault(result.command_id, set()).add(record.value)
    return finals


def replay(
    records: Sequence[Any],
    partitions: int,
    authority: Authority,
    internal_topic: str = "",
    places: Mapping[tuple[int, str], int] | None = None,
) -> dict[tuple[int, int, int], int]:
    """Balances from the pure ledger fed each partition's input, each record decoded and
    its proofs checked as a worker does (a forged leg changes nothing).

    A partition's input is its commands topic and its internal topic (``internal_topic``),
    in the order its workers took them: ``places`` (the cups' command_results: the input
    place of each recorded command id, ``input_places``) gives that order for every
    record that changed something; the others change nothing wherever they are."""
    ledgers: dict[int, PartitionLedger] = {}
    known: dict[int, dict[str, Known]] = {}
    bytes_max = WorkerConfig().message_bytes_max
    for partition, ordered in _input_order(records, internal_topic, places or {}).items():
        ledger = ledgers.setdefault(partition, PartitionLedger(partition, partitions, {}))
        seen = known.setdefault(partition, {})
        for record in ordered:
            decoded = decode_records(
                [record], bytes_max, authority, partitions, Position(0, 0), internal_topic
            )
            outcome = ledger.decide_batch(decoded.incoming, seen, 0)
            for applied in outcome.applied:
                seen[applied.command_id] = Known(applied.fingerprint, applied.result)
    return {
        (partition, *key): account.balance
        for partition, ledger in ledgers.items()
        for key, account in ledger.book.accounts.items()
    }


def _input_order(
    records: Sequence[Any], internal_topic: str, places: Mapping[tuple[int, str], int]
) -> dict[int, list[Any]]:
    """Each partition's records of both topics merged as its workers took them: each
    topic in offset order; between the two, by the recorded place of the first valid
    record of each recorded id (a record with none changed nothing, and goes first)."""
    topics: dict[int, tuple[list[Any], list[Any]]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        pair = topics.setdefault(record.partition, ([], []))
        pair[record.topic == internal_topic].append(record)
    merged: dict[int, list[Any]] = {}
    for partition, (commands, internal) in sorted(topics.items()):
        taken: set[str] = set()
        placed = [
            [(r, _place(r, r.topic == internal_topic, places, taken)) for r in records]
            for records in (commands, internal)
        ]
        order: list[Any] = []
        first, second = (deque(side) for side in placed)
        while first and second:
            a, b = first[0][1], second[0][1]
            side = first if a is None or (b is not None and a < b) else second
            order.append(side.popleft()[0])
        order += [r for r, _ in (*first, *second)]
        merged[partition] = order
    return merged


def _place(
    record: Any, internal: bool, places: Mapping[tuple[int, str], int], taken: set[str]
) -> int | None:
    command = routed(decode_command(record.value or b""), internal)
    if isinstance(command, Undecodable | Invalid) or command.id in taken:
        return None
    place = places.get((record.partition, command.id))
    if place is not None:
        taken.add(command.id)
    return place


async def input_places(config: Config) -> dict[tuple[int, str], int]:
    """(partition, command id) -> the input place the cups recorded it at."""
    shard_map = await read_shard_map(config)
    places: dict[tuple[int, str], int] = {}
    for dsn in shard_map.cups.values():
        cup = await RawCup.open(dsn, config.shards)
        try:
            for partition, command_id, place in await cup.rows(
                "SELECT {p}, command_id, src_offset FROM command_results"
            ):
                places[(partition, command_id)] = place
        finally:
            await cup.close()
    return places


async def replay_system(config: Config) -> dict[tuple[int, int, int], int]:
    """The replay of everything both input topics hold, in the cups' order."""
    kafka = config.kafka
    records = await read_topic(kafka, kafka.commands_topic)
    records += await read_topic(kafka, kafka.internal_topic)
    return replay(
        records,
        kafka.partitions,
        load_authority(config),
        kafka.internal_topic,
        await input_places(config),
    )


async def cup_balances(system: System) -> dict[tuple[int, int, int], int]:
    """Every account balance in the cups of the current shard map (cups may have moved)."""
    shard_map = await read_shard_map(system.config)
    cups = await connect_cups(shard_map, system.config.shards)
    try:
        parts = await asyncio.gather(*(cup.balances() for cup in cups.values()))
    finally:
        await close_cups(cups)
    return {key: balance for part in parts for key, balance in part.items()}


class RawCup:
    """A hand on the cup's database, below the store: plain SQL in the cup's dialect
    (``{p}`` is the partition column, quoted as the dialect needs)."""

    def __init__(self, kind: CupKind, connection: Any):
        self.kind = kind
        self.connection = connection

    @classmethod
    async def open(cls, dsn: str, shards: ShardsConfig) -> RawCup:
        if cup_kind(dsn) is CupKind.MYSQL:
            credentials = login(dsn, shards)
            address = MysqlAddress.parse(credentials.dsn)
            connection = await mysql_connect(address, credentials.password, 5)
            return cls(CupKind.MYSQL, connection)
        return cls(CupKind.POSTGRES, await connect(dsn, shards))

    async def close(self) -> None:
        if self.kind is CupKind.MYSQL:
            await self.connection.ensure_closed()
        else:
            await self.connection.close()

    def _sql(self, sql: str) -> str:
        return sql.format(p="`partition`" if self.kind is CupKind.MYSQL else "partition")

    async def execute(self, sql: str) -> None:
        if self.kind is CupKind.MYSQL:
            await run(self.connection, self._sql(sql))
        else:
            await self.connection.execute(self._sql(sql))

    async def values(self, sql: str) -> list[Any]:
        """The first column of every row."""
        if self.kind is CupKind.MYSQL:
            return [row[0] for row in (await run(self.connection, self._sql(sql)))[0]]
        return [row[0] for row in await self.connection.fetch(self._sql(sql))]

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.kind is CupKind.MYSQL:
            return [tuple(row) for row in (await run(self.connection, self._sql(sql)))[0]]
        return [tuple(row) for row in await self.connection.fetch(self._sql(sql))]

    async def value(self, sql: str) -> Any:
        if self.kind is CupKind.MYSQL:
            return (await run(self.connection, self._sql(sql)))[0][0][0]
        return await self.connection.fetchval(self._sql(sql))

    @contextlib.asynccontextmanager
    async def tables_locked(self, *tables: str) -> AsyncIterator[None]:
        """Hold exclusive locks on ``tables``: every other session's statement on them
        waits until the block ends."""
        if self.kind is CupKind.MYSQL:
            await self.execute("LOCK TABLES " + ", ".join(f"{t} WRITE" for t in tables))
            try:
                yield
            finally:
                await self.execute("UNLOCK TABLES")
        else:
            async with self.connection.transaction():
                await self.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
                yield

    async def refuses(self, sql: str, postgres: type[Exception], mysql_errno: int) -> None:
        """The statement fails with the guard's error (and changes nothing)."""
        if self.kind is CupKind.MYSQL:
            with pytest.raises(MySQLError) as raised:
                await self.execute(sql)
            assert raised.value.args[0] == mysql_errno, raised.value
        else:
            with pytest.raises(postgres):
                await self.execute(sql)


async def submit_all(
    client: Client, commands: Sequence[Command], timeout_seconds: float = 120.0
) -> list[Result]:
    """Publish ``commands`` and wait for every result (in the commands' order)."""
    futures = [client.expect(c) for c in commands]
    for delivery in [await client.publish(c) for c in commands]:
        await delivery
    return list(await asyncio.wait_for(asyncio.gather(*futures), timeout_seconds))


def signed_closes(signer: RiskSigner, day: dt.date, partitions: int) -> list[Command]:
    """The scheduler's closes of ``day``, one per partition, signed."""
    return [signer.sign(c) for c in close_commands(day, routing_customers(partitions))]
