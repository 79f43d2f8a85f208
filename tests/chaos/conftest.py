"""The chaos suite's own stack: a Kafka broker, a Postgres cluster and a MariaDB server it
may break.

Scenarios restart the servers, so they never touch the shared stack of the integration
tests: a dedicated stack runs in ``<state_dir>/chaos`` on the shared stack's ports + 10,
started once per session and stopped at its end. Each system has one Postgres cup and
one MariaDB cup. Workers reach the stack only through three fault proxies
(``tests.chaos.proxy``): the broker's proxied listener, the Postgres cluster and the
MariaDB server. The tests' own clients, reconcile and the checks talk to the broker
directly and to the databases through the proxies while they pass everything.

The broker failover scenario (test_brokers.py) has a stack of its own, for its module
only: three brokers (``<state_dir>/chaos-brokers``, the shared stack's ports + 20), which
the workers reach directly (one proxy cannot stand for three brokers), and the same two
database proxies.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from deploy.local.config import local_config
from deploy.local.roles import ensure_stack_secrets
from deploy.local.stack import stack_down, stack_up
from deploy.local.tls import tls_files
from engine.core.config import Config, StackConfig, load_config
from loadtest.system import drop_system, make_system
from tests.chaos.harness import FIGURES, ChaosSystem
from tests.chaos.proxy import FaultProxy

PORT_SHIFT = 10
"""The chaos stack listens on the shared stack's ports plus this."""
BROKERS_PORT_SHIFT = 20
"""The three-broker chaos stack listens on the shared stack's ports plus this (its nodes 2
and 3 a further 100 and 200 up: stack.kafka_brokers)."""
BROKERS = 3
BROKERS_HEAP_MB = 960
"""320 MB for each of the three brokers."""
PARTITIONS = 8


@dataclass(frozen=True, slots=True)
class ChaosStack:
    config: Config
    """Direct addresses of the chaos stack (the tests' clients)."""
    kafka_proxy: FaultProxy | None
    """None on the three-broker stack."""
    postgres_proxy: FaultProxy
    mariadb_proxy: FaultProxy


def chaos_stack_config(shared: StackConfig) -> StackConfig:
    kafka_port = shared.kafka_port + PORT_SHIFT
    return msgspec.structs.replace(
        shared,
        state_dir=str(shared.state_path / "chaos"),
        kafka_port=kafka_port,
        kafka_controller_port=shared.kafka_controller_port + PORT_SHIFT,
        postgres_port=shared.postgres_port + PORT_SHIFT,
        mariadb_port=shared.mariadb_port + PORT_SHIFT,
        kafka_proxied_port=kafka_port + 3,
        kafka_proxied_advertised_port=kafka_port + 4,
        kafka_heap_mb=512,
        postgres_cups=1,
        mysql_cups=1,
        prometheus=False,
    )


def brokers_stack_config(shared: StackConfig) -> StackConfig:
    return msgspec.structs.replace(
        shared,
        state_dir=str(shared.state_path / "chaos-brokers"),
        kafka_port=shared.kafka_port + BROKERS_PORT_SHIFT,
        kafka_controller_port=shared.kafka_controller_port + BROKERS_PORT_SHIFT,
        postgres_port=shared.postgres_port + BROKERS_PORT_SHIFT,
        mariadb_port=shared.mariadb_port + BROKERS_PORT_SHIFT,
        kafka_proxied_port=0,
        kafka_proxied_advertised_port=0,
        kafka_brokers=BROKERS,
        kafka_heap_mb=BROKERS_HEAP_MB,
        postgres_cups=1,
        mysql_cups=1,
        prometheus=False,
    )


@contextlib.contextmanager
def _running(stack: StackConfig, kafka_proxy: FaultProxy | None) -> Iterator[ChaosStack]:
    """Start ``stack`` (after stopping one an interrupted run left behind) and the proxies;
    stop them all at the end."""
    postgres_proxy = FaultProxy("postgres", stack.postgres_port + 1, stack.postgres_port)
    mariadb_proxy = FaultProxy("mariadb", stack.mariadb_port + 1, stack.mariadb_port)
    proxies = [p for p in (kafka_proxy, postgres_proxy, mariadb_proxy) if p is not None]
    for proxy in proxies:
        proxy.start()
    try:
        stack_down(stack)
        status = stack_up(stack)
        assert status.healthy, status
        yield ChaosStack(local_config(stack), kafka_proxy, postgres_proxy, mariadb_proxy)
    finally:
        for proxy in proxies:
            proxy.stop()
        stack_down(stack)


@pytest.fixture(scope="session")
def chaos_stack() -> Iterator[ChaosStack]:
    """The dedicated single-broker stack, for the whole session."""
    stack = chaos_stack_config(load_config().stack)
    if stack.security:
        ensure_stack_secrets(stack)
    kafka_proxy = FaultProxy(
        "kafka",
        stack.kafka_proxied_advertised_port,
        stack.kafka_proxied_port,
        kafka=True,
        tls=tls_files(stack.secrets_path) if stack.security else None,
    )
    with _running(stack, kafka_proxy) as running:
        yield running


@pytest.fixture(scope="module")
def brokers_stack() -> Iterator[ChaosStack]:
    """The three-broker stack, for one module (its JVMs are not kept for the others)."""
    with _running(brokers_stack_config(load_config().stack), None) as running:
        yield running


@pytest.fixture
async def chaos(chaos_stack: ChaosStack, tmp_path: Path) -> AsyncIterator[ChaosSystem]:
    """A fresh system (databases, topics, group) whose two cups, one Postgres and one
    MariaDB, are reached through the proxies."""
    async with _system(chaos_stack, tmp_path) as made:
        yield made


@pytest.fixture
async def chaos_brokers(brokers_stack: ChaosStack, tmp_path: Path) -> AsyncIterator[ChaosSystem]:
    """The same on the three-broker stack: its topics replicated three times, two in sync."""
    async with _system(brokers_stack, tmp_path) as made:
        yield made


@contextlib.asynccontextmanager
async def _system(chaos_stack: ChaosStack, tmp_path: Path) -> AsyncIterator[ChaosSystem]:
    stack = chaos_stack.config.stack
    through_proxies = msgspec.structs.replace(
        stack,
        postgres_port=chaos_stack.postgres_proxy.listen_port,
        mariadb_port=chaos_stack.mariadb_proxy.listen_port,
    )
    through_proxy = msgspec.structs.replace(chaos_stack.config, stack=through_proxies)
    system = await make_system(through_proxy, tmp_path, partitions=PARTITIONS, cups=1, mysql_cups=1)
    made = ChaosSystem(
        system,
        chaos_stack.config,
        chaos_stack.kafka_proxy,
        chaos_stack.postgres_proxy,
        chaos_stack.mariadb_proxy,
    )
    try:
        yield made
    finally:
        made.clear_faults()
        system.stop_all()
        await drop_system(through_proxy, system)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Every scenario's one-line figure, together at the end of the run."""
    if FIGURES:
        terminalreporter.section("chaos figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
