"""Kafka secured, on the real broker: TLS and SCRAM-SHA-512 on every listener, ACLs per
role (engine.kafka.acls). What the ``upstream`` user may and may not do, what a wrong
password, plaintext or an untrusted certificate get, and a worker whose credentials are
revoked while it works.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from deploy.local.prometheus_throwaway import free_port
from deploy.local.roles import Role, as_role
from deploy.local.tls import ensure_certificates
from engine.admin.reconcile import reconcile
from engine.core.config import Config, KafkaConfig, KafkaSecurityProtocol
from engine.core.errors import AccessDeniedError
from engine.core.keyfiles import write_secret
from engine.core.messages import Deposit, OpenAccount, SetCreditLimit
from engine.kafka.acls import deployment_grants, grant, revoke
from engine.kafka.client import Client
from engine.kafka.connection import connection
from engine.kafka.topics import end_offsets, ensure_topics, partition_counts
from engine.kafka.users import delete_credentials, set_password
from loadtest.bench.scrape import wait_owning
from loadtest.driver import Driver
from loadtest.system import System, drop_system, make_system
from tests.integration.system import upstream_producer

pytestmark = pytest.mark.integration

PARTITIONS = 4
CUSTOMERS = 40
CONNECT_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 60.0
RESULTS_TIMEOUT_SECONDS = 120.0


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=PARTITIONS, cups=1)
    yield made
    await drop_system(stack, made)


def _as(system: System, role: Role) -> KafkaConfig:
    return as_role(system.config, role).kafka


def test_the_stack_is_secure_by_default(stack: Config) -> None:
    assert stack.stack.security
    assert stack.kafka.security_protocol is KafkaSecurityProtocol.SASL_SSL
    assert stack.kafka.sasl_username == Role.ADMIN.username


async def test_upstream_publishes_commands_and_reads_results(system: System) -> None:
    system.start_worker()
    async with Client(_as(system, Role.UPSTREAM)) as client:
        result = await client.submit(OpenAccount("sec-open", 5, 1, "EUR"), 60)
    assert result.accepted, result


@pytest.mark.parametrize("topic", ["results", "dlq", "internal"])
async def test_upstream_cannot_write_the_workers_topics(system: System, topic: str) -> None:
    """Not results, not dead letters, and not the internal topic: the only one workers
    take saga legs and privileged commands from."""
    admin = system.config.kafka
    name = {
        "results": admin.results_topic,
        "dlq": admin.dlq_topic,
        "internal": admin.internal_topic,
    }[topic]
    before = await end_offsets(admin, name)
    producer = upstream_producer(system.config)
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(name, b"forged", partition=0)
    finally:
        await producer.stop()
    assert await end_offsets(admin, name) == before, "nothing written"


async def test_upstream_reads_its_own_groups_offsets_not_the_workers(system: System) -> None:
    upstream = _as(system, Role.UPSTREAM)
    reader = AIOKafkaAdminClient(**connection(upstream))
    await reader.start()
    try:
        own = f"{upstream.upstream_group_prefix}-app"
        assert await reader.list_consumer_group_offsets(own) == {}
        with pytest.raises(GroupAuthorizationFailedError):
            await reader.list_consumer_group_offsets(upstream.group_id)
    finally:
        await reader.close()


@pytest.mark.parametrize("role", [Role.UPSTREAM, Role.WORKER, Role.RISK])
async def test_only_the_admin_creates_topics(system: System, role: Role) -> None:
    kafka = msgspec.structs.replace(
        _as(system, role), topic_prefix=f"{system.config.kafka.topic_prefix}-by-{role.value}"
    )
    with pytest.raises(AccessDeniedError, match=f"Kafka refused '{role.value}'"):
        await ensure_topics(kafka, 1)
    assert await partition_counts(system.config.kafka, [kafka.commands_topic]) == {}


async def test_upstream_publishing_a_privileged_command_is_refused_by_kafka(
    system: System,
) -> None:
    """The client sends privileged commands to the internal topic: as ``upstream`` the
    broker refuses it, signed or not, and nothing is written."""
    admin = system.config.kafka
    before = await end_offsets(admin, admin.internal_topic)
    async with Client(_as(system, Role.UPSTREAM)) as client:
        with pytest.raises(TopicAuthorizationFailedError):
            await client.submit(SetCreditLimit("sec-grant", 5, 1, 10**15), 30)
    assert await end_offsets(admin, admin.internal_topic) == before, "nothing written"


async def test_risk_writes_the_internal_topic_only(system: System) -> None:
    risk = _as(system, Role.RISK)
    producer = AIOKafkaProducer(**connection(risk))
    await producer.start()
    try:
        await producer.send_and_wait(risk.internal_topic, b"\x90", partition=0)
        for topic in (risk.commands_topic, risk.results_topic):
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(topic, b"forged", partition=0)
    finally:
        await producer.stop()


async def test_a_wrong_password_is_refused(system: System, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-password"
    write_secret(wrong, "not-the-password\n")
    kafka = msgspec.structs.replace(_as(system, Role.UPSTREAM), sasl_password_file=str(wrong))
    await _refused(kafka)


async def test_plaintext_is_refused(system: System) -> None:
    kafka = msgspec.structs.replace(
        _as(system, Role.ADMIN), security_protocol=KafkaSecurityProtocol.PLAINTEXT
    )
    await _refused(kafka)


async def test_a_broker_certificate_from_another_ca_is_refused(
    system: System, tmp_path: Path
) -> None:
    other_ca = ensure_certificates(tmp_path).ca
    kafka = msgspec.structs.replace(_as(system, Role.ADMIN), ssl_ca_file=str(other_ca))
    await _refused(kafka)


async def _refused(kafka: KafkaConfig) -> None:
    """A producer with these settings cannot connect (bounded)."""
    producer = AIOKafkaProducer(**connection(kafka), request_timeout_ms=5_000)
    try:
        with pytest.raises(KafkaError):
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                await producer.start()
    finally:
        await producer.stop()


async def test_a_revoked_worker_stops_and_its_partitions_move(
    system: System, tmp_path: Path
) -> None:
    """Two workers, the second as a user of its own; the second's ACLs and credentials
    are revoked under load: it stops with a clear error, the first takes its partitions,
    every command gets its result and the books reconcile."""
    admin = system.config.kafka
    user = f"{admin.topic_prefix}-worker-b"
    password = tmp_path / "worker-b.password"
    write_secret(password, "worker-b-secret-" + admin.topic_prefix + "\n")
    await set_password(admin, user, password.read_text().strip())
    own = msgspec.structs.replace(
        admin, acl_worker_users=[user], acl_upstream_users=[], acl_risk_users=[]
    )
    await grant(admin, deployment_grants(own))
    ports = [free_port(), free_port()]
    first = system.start_worker({"SMALLCUPS_WORKER_METRICS_PORT": str(ports[0])})
    second = system.start_worker(
        {
            "SMALLCUPS_WORKER_METRICS_PORT": str(ports[1]),
            "SMALLCUPS_KAFKA_SASL_USERNAME": user,
            "SMALLCUPS_KAFKA_SASL_PASSWORD_FILE": str(password),
        }
    )
    try:
        await wait_owning(ports, PARTITIONS, 60)
        async with Client(_as(system, Role.UPSTREAM)) as client:
            driver = Driver(client, window=500)
            await driver.send_all(
                OpenAccount(f"o{c}", c, 1, "EUR") for c in range(1, CUSTOMERS + 1)
            )
            for round_ in range(20):
                await driver.send_all(
                    Deposit(f"d{round_}-{c}", c, 1, 10, "EUR") for c in range(1, CUSTOMERS + 1)
                )
                if round_ == 5:
                    await revoke(admin, deployment_grants(own))
                    await delete_credentials(admin, user)
            assert await driver.wait_all(RESULTS_TIMEOUT_SECONDS), system.worker_logs()
        assert second.process is not None
        returned = await asyncio.to_thread(second.process.wait, STOP_TIMEOUT_SECONDS)
        assert returned != 0, "the revoked worker stops with an error"
        log = second.log_path.read_text(errors="replace")
        assert f"Kafka refused {user!r}" in log, log[-3000:]
        assert first.alive()
        await wait_owning(ports[:1], PARTITIONS, 60)
    finally:
        system.stop_all()
    assert driver.score.accepted == CUSTOMERS * 21
    report = await reconcile(system.config, topics=True)
    assert report.ok, dict(report.problems)
