"""The chaos suite's own stack: a Kafka broker, a Postgres cluster and a MariaDB server it
may break.

Scenarios restart the servers, so they never touch the shared stack of the integration
tests: a dedicated stack runs in ``<state_dir>/chaos`` on the shared stack's ports + 10,
started once per session and stopped at its end. Each system has one Postgres cup and
one MariaDB cup. Workers reach the stack only through three fault proxies
(``tests.chaos.proxy``): the broker's proxied listener, the Postgres cluster and the
MariaDB server. The tests' own clients, reconcile and the checks talk to the broker
directly and to the databases through the proxies while they pass everything.
"""

from __future__ import annotations

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
PARTITIONS = 8


@dataclass(frozen=True, slots=True)
class ChaosStack:
    config: Config
    """Direct addresses of the chaos stack (the tests' clients)."""
    kafka_proxy: FaultProxy
    postgres_proxy: FaultProxy
    mariadb_proxy: FaultProxy

    @property
    def proxied_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_proxy.listen_port}"


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


@pytest.fixture(scope="session")
def chaos_stack() -> Iterator[ChaosStack]:
    """Start the dedicated stack (after stopping one an interrupted run left behind)."""
    shared = load_config()
    stack = chaos_stack_config(shared.stack)
    if stack.security:
        ensure_stack_secrets(stack)
    kafka_proxy = FaultProxy(
        "kafka",
        stack.kafka_proxied_advertised_port,
        stack.kafka_proxied_port,
        kafka=True,
        tls=tls_files(stack.secrets_path) if stack.security else None,
    )
    postgres_proxy = FaultProxy("postgres", stack.postgres_port + 1, stack.postgres_port)
    mariadb_proxy = FaultProxy("mariadb", stack.mariadb_port + 1, stack.mariadb_port)
    proxies = (kafka_proxy, postgres_proxy, mariadb_proxy)
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


@pytest.fixture
async def chaos(chaos_stack: ChaosStack, tmp_path: Path) -> AsyncIterator[ChaosSystem]:
    """A fresh system (databases, topics, group) whose two cups, one Postgres and one
    MariaDB, are reached through the proxies."""
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
