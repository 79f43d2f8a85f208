"""The local stack end to end: Kafka carries messages, every cup takes writes, up/down behave."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncmy
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy.local.kafka_broker import bootstrap_servers
from deploy.local.mariadb_auth import client_arguments
from deploy.local.mariadb_databases import create_mysql_databases, drop_mysql_databases
from deploy.local.mariadb_server import SYSTEM_USER, running_mariadb_pid
from deploy.local.ports import port_is_free
from deploy.local.stack import run_dev, stack_down, stack_status, stack_up
from engine.core.config import MARIADB_CREDENTIALS, Config, KafkaConfig, StackConfig
from engine.kafka.connection import connection
from loadtest.system import delete_topics
from shards.control import connect

pytestmark = pytest.mark.integration

PARTITIONS = 6
MESSAGES = 600
CONSUME_TIMEOUT_SECONDS = 30.0
SECOND_UP_SECONDS_MAX = 5.0


async def _create_topic(kafka: KafkaConfig, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(**connection(kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, replication_factor=1)])
    finally:
        await admin.close()


async def _produce(kafka: KafkaConfig, topic: str) -> dict[bytes, int]:
    """Send MESSAGES keyed records; return each value's partition as the broker placed it."""
    producer = AIOKafkaProducer(**connection(kafka), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        values = [str(i).encode() for i in range(MESSAGES)]
        pending = [await producer.send(topic, value, key=b"customer-" + value) for value in values]
        placed = await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return {value: meta.partition for value, meta in zip(values, placed, strict=True)}


async def _consume(kafka: KafkaConfig, topic: str, count: int) -> dict[bytes, int]:
    """Read ``count`` records as a fresh consumer group; return each value's partition."""
    consumer = AIOKafkaConsumer(
        topic,
        **connection(kafka),
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: dict[bytes, int] = {}
    try:
        async with asyncio.timeout(CONSUME_TIMEOUT_SECONDS):
            while len(received) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    received.update((record.value, record.partition) for record in records)
        await consumer.commit()
    finally:
        await consumer.stop()
    return received


async def test_producer_and_consumer_group_exchange_messages(stack: Config) -> None:
    topic = f"stack-test-{uuid.uuid4().hex[:12]}"
    await _create_topic(stack.kafka, topic, PARTITIONS)
    try:
        sent = await _produce(stack.kafka, topic)
        received = await _consume(stack.kafka, topic, len(sent))
    finally:
        await delete_topics(stack, [topic])

    assert received == sent
    assert set(received.values()) == set(range(PARTITIONS))


async def test_every_cup_and_the_control_database_accept_writes(stack: Config) -> None:
    dsns = [stack.stack.control_dsn, *stack.stack.cup_dsns]
    assert len(dsns) == stack.stack.postgres_cups + stack.stack.mysql_cups + 1
    for dsn in dsns:
        database = urlsplit(dsn).path.lstrip("/")
        if dsn.startswith("mysql://"):
            await _write_to_mysql_cup(stack.stack, database)
            continue
        connection = await connect(dsn, stack.shards)
        try:
            assert await connection.fetchval("SELECT current_database()") == database
            await connection.execute("CREATE TEMP TABLE probe (id bigint, amount bigint)")
            await connection.executemany("INSERT INTO probe VALUES ($1, $2)", [(1, 100), (2, -40)])
            assert await connection.fetchval("SELECT sum(amount) FROM probe") == 60
            assert await connection.fetchval("SHOW fsync") == "on"
            assert await connection.fetchval("SHOW synchronous_commit") == "on"
        finally:
            await connection.close()


async def _mariadb_connect(
    stack: StackConfig, database: str | None, *, autocommit: bool
) -> asyncmy.Connection:
    """The stack's account over 127.0.0.1 (TLS and its password when secure)."""
    return await asyncmy.connect(
        host="127.0.0.1",
        port=stack.mariadb_port,
        user=stack.mariadb_user,
        database=database,
        autocommit=autocommit,
        **client_arguments(stack, MARIADB_CREDENTIALS),
    )


async def _mariadb_rows(stack: StackConfig, sql: str, database: str | None = None) -> list[Any]:
    """The rows of ``sql`` run as the stack's account over 127.0.0.1."""
    connection = await _mariadb_connect(stack, database, autocommit=True)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(sql)
            return list(await cursor.fetchall())
    finally:
        await connection.ensure_closed()


async def _write_to_mysql_cup(stack: StackConfig, database: str) -> None:
    """A temporary table of the cup's database takes a transaction's rows."""
    connection = await _mariadb_connect(stack, database, autocommit=False)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT DATABASE(), @@collation_database")
            assert await cursor.fetchone() == (database, "utf8mb4_bin")
            await cursor.execute("CREATE TEMPORARY TABLE probe (id BIGINT, amount BIGINT)")
            await cursor.execute("INSERT INTO probe VALUES (1, 100), (2, -40)")
            await connection.commit()
            await cursor.execute("SELECT SUM(amount) FROM probe")
            assert await cursor.fetchone() == (60,)
    finally:
        await connection.ensure_closed()


async def _table_with_a_trigger(stack: StackConfig, database: str) -> list[Any]:
    """Rows inserted into a table whose trigger rewrites them (the store's migrations make
    triggers: with the binary log on, that needs the account's privileges)."""
    await _mariadb_rows(
        stack, "CREATE TABLE probe (id BIGINT PRIMARY KEY, amount BIGINT)", database
    )
    await _mariadb_rows(
        stack,
        "CREATE TRIGGER probe_positive_id BEFORE INSERT ON probe FOR EACH ROW "
        "SET NEW.id = ABS(NEW.id)",
        database,
    )
    await _mariadb_rows(stack, "INSERT INTO probe VALUES (-1, 100), (2, -40)", database)
    return await _mariadb_rows(stack, "SELECT id, amount FROM probe ORDER BY id", database)


def test_a_fresh_mysql_database_takes_a_table_with_a_trigger(stack: Config) -> None:
    if stack.stack.mysql_cups == 0:
        pytest.skip("the stack runs no MariaDB server (stack.mysql_cups = 0)")
    database = f"stack_test_{uuid.uuid4().hex[:12]}"
    create_mysql_databases(stack.stack, [database])
    try:
        rows = asyncio.run(_table_with_a_trigger(stack.stack, database))
    finally:
        drop_mysql_databases(stack.stack, [database])

    assert rows == [(1, 100), (2, -40)]
    databases = asyncio.run(_mariadb_rows(stack.stack, "SHOW DATABASES"))
    assert (database,) not in databases


async def test_mariadb_answers_as_the_stack_account_with_durable_settings(stack: Config) -> None:
    if stack.stack.mysql_cups == 0:
        pytest.skip("the stack runs no MariaDB server (stack.mysql_cups = 0)")
    rows = await _mariadb_rows(
        stack.stack,
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('innodb_flush_log_at_trx_commit', "
        "'sync_binlog', 'log_bin', 'binlog_format', 'bind_address', 'port')",
    )
    assert dict(rows) == {
        "innodb_flush_log_at_trx_commit": "1",
        "sync_binlog": "1",
        "log_bin": "ON",
        "binlog_format": "ROW",
        "bind_address": "127.0.0.1",
        "port": str(stack.stack.mariadb_port),
    }
    assert await _mariadb_rows(stack.stack, "SELECT CURRENT_USER()") == [
        (f"{stack.stack.mariadb_user}@127.0.0.1",)
    ]


def test_mariadb_runs_as_the_mysql_user_under_root(stack: Config) -> None:
    if stack.stack.mysql_cups == 0 or os.geteuid() != 0:
        pytest.skip("no MariaDB server, or the tests do not run as root")
    pid = running_mariadb_pid(stack.stack)
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines()
    uids = next(line.split()[1:] for line in status if line.startswith("Uid:"))
    assert set(uids) == {str(pwd.getpwnam(SYSTEM_USER).pw_uid)}


def test_second_up_reuses_the_running_servers(stack: Config) -> None:
    before = stack_status(stack.stack)
    started = time.monotonic()
    after = stack_up(stack.stack)
    elapsed_seconds = time.monotonic() - started

    assert before.healthy and after.healthy
    assert after.kafka.pid == before.kafka.pid
    assert after.postgres.pid == before.postgres.pid
    assert after.mariadb == before.mariadb
    assert elapsed_seconds < SECOND_UP_SECONDS_MAX


def test_status_prints_endpoints_and_succeeds(
    stack: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_dev("status", stack.stack) == 0
    printed = capsys.readouterr().out
    assert bootstrap_servers(stack.stack) in printed
    assert stack.stack.control_dsn in printed
    assert all(dsn in printed for dsn in stack.stack.cup_dsns)
    first_mysql_cup = stack.stack.postgres_cups
    for offset, database in enumerate(stack.stack.mysql_cup_databases):
        line = f"cup {first_mysql_cup + offset} (mariadb) {stack.stack.mysql_dsn(database)}"
        assert line in printed.splitlines()
    if stack.stack.mysql_cups:
        assert "mariadb    running" in printed


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


@pytest.fixture
def side_state_dir() -> Iterator[Path]:
    """A state folder outside pytest's private tmp (the postgres user must traverse it)."""
    path = Path(tempfile.mkdtemp(prefix="smallcups-side-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_down_closes_every_port_of_a_second_stack(stack: Config, side_state_dir: Path) -> None:
    """A second stack (other ports, own state, shared jar cache) grows by a cup of each
    kind, then stops."""
    kafka_port, controller_port, postgres_port, mariadb_port = _free_ports(4)
    side = StackConfig(
        state_dir=str(side_state_dir),
        cache_dir=stack.stack.cache_dir,
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        postgres_port=postgres_port,
        mariadb_port=mariadb_port,
        kafka_heap_mb=256,
        postgres_cups=1,
        mysql_cups=1,
    )
    grown = msgspec.structs.replace(side, postgres_cups=2, mysql_cups=2)
    every_port = (kafka_port, controller_port, postgres_port, mariadb_port)
    try:
        assert stack_up(side).healthy
        grown_status = stack_up(grown)
        assert grown_status.healthy and grown_status.mariadb is not None
        stack_down(grown)

        assert all(port_is_free(port) for port in every_port)
        assert not (side_state_dir / "kafka" / "kafka.pid").exists()
        assert not (side_state_dir / "postgres" / "data" / "postmaster.pid").exists()
        assert not (side_state_dir / "mariadb" / "run" / "mariadb.pid").exists()
        status = stack_status(grown)
        assert not status.kafka.running and not status.postgres.running
        assert status.mariadb is not None and not status.mariadb.running
        assert run_dev("status", grown) == 1
    finally:
        stack_down(side)
    assert stack_status(stack.stack).healthy
