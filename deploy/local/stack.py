"""``smallcups dev up | down | status``: the local stack, Kafka (one broker, or
``stack.kafka_brokers``: ``dev up --brokers 3``), a Postgres cluster
and, when ``stack.mysql_cups`` > 0 (env SMALLCUPS_STACK_MYSQL_CUPS), a MariaDB server, plus
a Prometheus server when ``stack.prometheus`` is true (env SMALLCUPS_STACK_PROMETHEUS).

The cups are the Postgres cluster's ``stack.postgres_cups`` databases, then the MariaDB
server's ``stack.mysql_cups`` ones (``StackConfig.cup_dsns``, named apart per kind).

``up`` is idempotent: what runs already (pid file, live process, answering port) is
reused, what is missing is started (Debian's mariadb-server installed first when root
and it is missing), missing accounts and databases are created, and missing keys
(the workers' leg key, the risk authority's key pair: engine.core.keyfiles) are made in
``<state_dir>/secrets``. The brokers are spawned first and warm up while Postgres and
MariaDB start. ``down`` stops every server of the state folder (MariaDB and Prometheus
too, whatever their settings say now) and waits until their ports are closed.
``status`` prints the endpoints and each server's health. A lock file in the state folder
makes two ``up`` or ``down`` at once (two shells, a shell and a test session) take turns
instead of racing.

The functions are synchronous (they run their own short event loops for the Kafka and
database probes): call them from plain code or sync fixtures, not inside a running loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from deploy.local import (
    kafka_broker,
    kafka_quorum,
    mariadb_databases,
    mariadb_server,
    ports,
    postgres_cluster,
    postgres_databases,
    prometheus_server,
)
from deploy.local.config import LOCAL_CONFIG_FILE, write_local_config
from deploy.local.processes import exclusive_lock
from deploy.local.roles import ensure_stack_secrets
from engine.core.config import KAFKA_NODE_PORT_STEP, StackConfig
from engine.core.errors import ConfigError, StackError
from engine.core.keyfiles import ensure_local_keys

PORTS_CLOSE_TIMEOUT_SECONDS = 15.0
LOCK_FILE = "stack.lock"


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One server of the stack: its pid when running, whether it answers, and why not."""

    name: str
    pid: int | None
    answering: bool
    detail: str = ""

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def healthy(self) -> bool:
        return self.running and self.answering


@dataclass(frozen=True, slots=True)
class StackStatus:
    kafka: ServiceStatus
    """Kafka's node 1 (the only one by default)."""
    postgres: ServiceStatus
    prometheus: ServiceStatus | None = None
    """None when Prometheus is neither configured nor running."""
    mariadb: ServiceStatus | None = None
    """None when MariaDB is neither configured (stack.mysql_cups = 0) nor running."""
    more_kafka: tuple[ServiceStatus, ...] = ()
    """Kafka's nodes 2 and up, configured or running."""

    @property
    def services(self) -> list[ServiceStatus]:
        optional = [self.mariadb, self.prometheus]
        kafka = [self.kafka, *self.more_kafka]
        return [*kafka, self.postgres, *(s for s in optional if s is not None)]

    @property
    def healthy(self) -> bool:
        return all(service.healthy for service in self.services)


def stack_ports(config: StackConfig) -> dict[str, int]:
    """Every port the stack listens on, by configuration knob; they must differ."""
    by_knob = {
        "stack.kafka_port": config.kafka_port,
        "stack.kafka_controller_port": config.kafka_controller_port,
        "stack.postgres_port": config.postgres_port,
    }
    if config.mysql_cups > 0:
        by_knob["stack.mariadb_port"] = config.mariadb_port
    if config.prometheus:
        by_knob["stack.prometheus_port"] = config.prometheus_port
    if config.kafka_proxied_port:
        by_knob["stack.kafka_proxied_port"] = config.kafka_proxied_port
    for node in kafka_quorum.node_ids(config)[1:]:
        by_knob[f"stack.kafka_port (node {node})"] = kafka_quorum.client_port(config, node)
        port = kafka_quorum.controller_port(config, node)
        by_knob[f"stack.kafka_controller_port (node {node})"] = port
    if len(set(by_knob.values())) != len(by_knob):
        raise ConfigError(f"the stack's ports must all differ: {by_knob}")
    return by_knob


def stack_up(config: StackConfig) -> StackStatus:
    """Start whatever is not running, create missing databases, wait until all answer."""
    stack_ports(config)
    with exclusive_lock(config.state_path / LOCK_FILE):
        if config.mysql_cups > 0:
            mariadb_server.ensure_installed()
        ensure_local_keys(config.secrets_path)
        if config.security:
            ensure_stack_secrets(config)
        write_local_config(config)
        formatted_again = kafka_broker.storage_outdated(config)
        nodes = kafka_quorum.node_ids(config)
        kafka_pids = [kafka_broker.start_broker(config, node) for node in nodes]
        postgres_cluster.start_postgres(config)
        if formatted_again:
            _say_dropped(postgres_databases.drop_every_database(config), "Postgres")
        postgres_databases.ensure_databases(config)
        if config.mysql_cups > 0:
            mariadb_server.start_mariadb(config)
            if formatted_again:
                _say_dropped(mariadb_databases.drop_every_mysql_database(config), "MariaDB")
            mariadb_databases.ensure_mysql_databases(config)
        if config.prometheus:
            prometheus_pid = prometheus_server.start_prometheus(config)
            prometheus_server.wait_prometheus_ready(config, prometheus_pid)
        for node, pid in zip(nodes, kafka_pids, strict=True):
            kafka_broker.wait_broker_ready(config, pid, node)
    status = stack_status(config)
    if not status.healthy:
        raise StackError(f"the stack started but is not healthy:\n{format_status(config, status)}")
    return status


def _say_dropped(names: list[str], server: str) -> None:
    """Databases dropped because the broker was formatted again (its users changed:
    security turned on or off): its topics are gone, and a cup's next_offset must never
    point into a topic that started over."""
    if names:
        print(f"Kafka's storage was formatted again: dropped {len(names)} {server} databases")


def stack_down(config: StackConfig) -> None:
    """Stop every server of the state folder; raise StackError if a port stays taken."""
    if not config.state_path.is_dir():
        return  # never started here: nothing of ours can run
    knobs = stack_ports(config)
    for optional in ("stack.prometheus_port", "stack.mariadb_port"):
        knobs.pop(optional, None)  # waited for only when ours was running
    knobs = {k: p for k, p in knobs.items() if "(node" not in k}
    with exclusive_lock(config.state_path / LOCK_FILE):
        knobs |= _running_node_ports(config)
        if prometheus_server.running_prometheus_pid(config) is not None:
            knobs["stack.prometheus_port"] = config.prometheus_port
        if mariadb_server.running_mariadb_pid(config) is not None:
            knobs["stack.mariadb_port"] = config.mariadb_port
        prometheus_server.stop_prometheus(config)
        kafka_broker.stop_brokers(config)
        postgres_cluster.stop_postgres(config)
        mariadb_server.stop_mariadb(config)
    for knob, port in knobs.items():
        if not ports.wait_port_closed(port, PORTS_CLOSE_TIMEOUT_SECONDS):
            raise StackError(f"port {port} ({knob}) is still taken after `dev down`")


def _running_node_ports(config: StackConfig) -> dict[str, int]:
    """The ports of Kafka's running nodes 2 and up, as ``dev up`` placed them (the settings
    may name fewer nodes now)."""
    by_knob = {}
    for node in kafka_broker.running_nodes(config):
        if node > kafka_quorum.FIRST_NODE_ID:
            shift = KAFKA_NODE_PORT_STEP * (node - kafka_quorum.FIRST_NODE_ID)
            by_knob[f"stack.kafka_port (node {node})"] = config.kafka_port + shift
            by_knob[f"stack.kafka_controller_port (node {node})"] = (
                config.kafka_controller_port + shift
            )
    return by_knob


def _kafka_status(config: StackConfig, node: int) -> ServiceStatus:
    pid = kafka_broker.running_broker_pid(config, node)
    answering = pid is not None and kafka_broker.broker_answers(config, node)
    name = "kafka" if node == kafka_quorum.FIRST_NODE_ID else f"kafka-{node}"
    return ServiceStatus(name, pid, answering)


def stack_status(config: StackConfig) -> StackStatus:
    """Probe every server without starting or stopping anything (every Kafka node that
    runs too, when ``dev up --brokers N`` started more than the settings say now)."""
    brokers = max([config.kafka_brokers, *kafka_broker.running_nodes(config)])
    nodes = msgspec.structs.replace(config, kafka_brokers=brokers)
    kafka, *more_kafka = (_kafka_status(nodes, node) for node in kafka_quorum.node_ids(nodes))
    postgres_pid = postgres_cluster.running_postgres_pid(config)
    missing = postgres_databases.missing_databases(config) if postgres_pid else None
    detail = f"missing databases: {', '.join(missing)}" if missing else ""
    postgres = ServiceStatus("postgres", postgres_pid, missing == [], detail)
    return StackStatus(
        kafka,
        postgres,
        _prometheus_status(config),
        _mariadb_status(config),
        tuple(more_kafka),
    )


def _mariadb_status(config: StackConfig) -> ServiceStatus | None:
    """Answering means every MariaDB cup database exists and the account gets in."""
    pid = mariadb_server.running_mariadb_pid(config)
    if pid is None and config.mysql_cups == 0:
        return None
    missing = mariadb_databases.missing_mysql_databases(config) if pid else None
    detail = f"missing databases: {', '.join(missing)}" if missing else ""
    return ServiceStatus("mariadb", pid, missing == [], detail)


def _prometheus_status(config: StackConfig) -> ServiceStatus | None:
    pid = prometheus_server.running_prometheus_pid(config)
    if pid is None and not config.prometheus:
        return None
    answering = pid is not None and prometheus_server.answers(config.prometheus_port)
    return ServiceStatus("prometheus", pid, answering)


def format_status(config: StackConfig, status: StackStatus) -> str:
    """Endpoints and health as aligned text. DSNs never carry a password: with security
    they name their credentials (files in ``<state_dir>/secrets/credentials``)."""
    lines = []
    for service in status.services:
        state = f"running (pid {service.pid})" if service.running else "stopped"
        answer = "answering" if service.answering else "not answering"
        extra = f"  {service.detail}" if service.detail else ""
        lines.append(f"{service.name:<10} {state}, {answer}{extra}")
    nodes = msgspec.structs.replace(config, kafka_brokers=1 + len(status.more_kafka))
    lines.append(f"{'bootstrap':<10} {kafka_broker.bootstrap_servers(nodes)}")
    lines.append(f"{'control':<10} {config.control_dsn}")
    for index, dsn in enumerate(config.cup_dsns):
        kind = "postgres" if index < config.postgres_cups else "mariadb"
        lines.append(f"cup {index} ({kind}) {dsn}")
    if status.prometheus is not None:
        lines.append(f"{'prom url':<10} {prometheus_server.prometheus_url(config)}")
        targets = prometheus_server.PrometheusPaths.of(config).targets
        lines.append(f"{'targets':<10} {targets}/*.json")
    lines.append(f"{'secrets':<10} {config.secrets_path}")
    lines.append(
        f"{'settings':<10} export SMALLCUPS_CONFIG={config.state_path / LOCAL_CONFIG_FILE}"
    )
    lines.append(f"{'state':<10} {config.state_path}")
    lines.append(f"{'health':<10} {'healthy' if status.healthy else 'UNHEALTHY'}")
    return "\n".join(lines)


def run_dev(action: str, config: StackConfig) -> int:
    """The ``smallcups dev <action>`` command: 0 when the stack ends up as asked, else 1."""
    match action:
        case "up":
            status = stack_up(config)
        case "down":
            stack_down(config)
            print(f"stopped the stack of {config.state_path}")
            return 0
        case "status":
            status = stack_status(config)
        case _:
            raise ConfigError(f"unknown dev action {action!r}; use up, down or status")
    print(format_status(config, status))
    return 0 if status.healthy else 1
