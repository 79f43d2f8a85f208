"""Apache Kafka in KRaft mode on 127.0.0.1: ``stack.kafka_brokers`` nodes (one by default),
each a broker and a controller in one JVM (deploy.local.kafka_quorum: ids, ports, folders,
the quorum).

Layout under ``<state_dir>/kafka`` (node 1; node n's under ``<state_dir>/kafka-<n>``):
``server.properties`` (mode 0600: it holds the broker's own passwords), ``data/``
(formatted once), ``logs/server.log`` (log4j2), ``kafka.out`` (the JVM's stdout and
stderr), ``kafka.pid``.

Secure by default (``stack.security``): every listener speaks SASL_SSL with the stack's
certificate (deploy.local.tls). Clients and the broker itself (inter-broker) authenticate
with SCRAM-SHA-512; the users of deploy.local.roles are made when the storage is
formatted. The controller listener takes SASL/PLAIN with one user, ``admin``, set in its
JAAS entry (SCRAM credentials live in the metadata the controller serves, so they cannot
authenticate the controller's own listener). KRaft's StandardAuthorizer refuses whatever
no ACL allows; ``admin`` is the only super user (engine.kafka.acls grants the rest).
With ``stack.security`` false the listeners are PLAINTEXT with no authorizer.

Each node's heap is ``stack.kafka_heap_mb`` shared among them. The brokers' own topics
(consumer offsets, transactions) get a replica per node up to three, one fewer in sync.

A node is spawned in its own session so it outlives the ``smallcups`` process that
started it; it is ours while its command line names our ``server.properties``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgspec
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from deploy.local import kafka_quorum, ports
from deploy.local.credentials import read_password
from deploy.local.kafka_jars import LOG4J2_PATH, ensure_kafka_jars
from deploy.local.kafka_quorum import FIRST_NODE_ID
from deploy.local.processes import (
    ensure_same_settings,
    failure,
    process_is_ours,
    read_pid_file,
    remove_file,
    stop_process,
    wait_exec_settled,
    write_pid_file,
)
from deploy.local.roles import Role, stack_kafka
from deploy.local.tls import tls_files
from engine.core.config import KAFKA_BROKERS_MAX, KafkaConfig, StackConfig
from engine.core.errors import StackError
from engine.core.keyfiles import write_secret
from engine.kafka.connection import connection

STOP_GRACE_SECONDS = 30.0
PROBE_TIMEOUT_SECONDS = 5.0
READY_POLL_SECONDS = 0.5
NODE_ID = FIRST_NODE_ID
"""The node a single-node stack has, and the one the functions below act on unless told."""
SCRAM = "SCRAM-SHA-512"
SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM_ITERATIONS = 8192
FORMAT_MARK = "formatted-with"
"""A file beside ``data/`` saying which users the storage was formatted with: a state
folder formatted another way (before security, or without it) is formatted again."""


@dataclass(frozen=True, slots=True)
class BrokerPaths:
    root: Path

    @classmethod
    def of(cls, config: StackConfig, node: int = NODE_ID) -> BrokerPaths:
        return cls(kafka_quorum.node_root(config, node))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    @property
    def stdout(self) -> Path:
        return self.root / "kafka.out"

    @property
    def pid_file(self) -> Path:
        return self.root / "kafka.pid"

    @property
    def properties(self) -> Path:
        return self.root / "server.properties"


def bootstrap_servers(config: StackConfig) -> str:
    return config.kafka_bootstrap_servers


def render_server_properties(config: StackConfig, data_dir: Path, node: int = NODE_ID) -> str:
    """Node ``node``'s configuration, 127.0.0.1 only: one of ``stack.kafka_brokers`` voters,
    the internal topics replicated as deploy.local.kafka_quorum.replication says."""
    host = ports.HOST
    port = kafka_quorum.client_port(config, node)
    controller = kafka_quorum.controller_port(config, node)
    replication = kafka_quorum.replication(config)
    replicas, min_isr = str(replication.factor), str(replication.min_insync)
    listeners = [f"BROKER://{host}:{port}", f"CONTROLLER://{host}:{controller}"]
    advertised = [f"BROKER://{host}:{port}"]
    names = ["BROKER", "CONTROLLER"]
    if config.kafka_proxied_port:
        # Clients connect to the advertised address of the listener they bootstrapped
        # through: this one advertises the proxy, so proxied clients never bypass it.
        listeners.append(f"PROXIED://{host}:{config.kafka_proxied_port}")
        advertised.append(f"PROXIED://{host}:{config.kafka_proxied_advertised_port}")
        names.append("PROXIED")
    protocol = "SASL_SSL" if config.security else "PLAINTEXT"
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node),
        "controller.quorum.bootstrap.servers": kafka_quorum.controller_servers(config),
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": ",".join(f"{n}:{protocol}" for n in names),
        "inter.broker.listener.name": "BROKER",
        **(_security_settings(config, names) if config.security else {}),
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
    }
    lines = ["# Written by `smallcups dev up`; rewritten on every start."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _security_settings(config: StackConfig, names: list[str]) -> dict[str, str]:
    """TLS on every listener, SCRAM-SHA-512 for clients and the broker, PLAIN (one user,
    admin) on the controller's listener, the StandardAuthorizer with admin its only super
    user."""
    secrets = config.secrets_path
    files = tls_files(secrets)
    admin = read_password(secrets, Role.ADMIN.password_name)
    scram = f'{SCRAM_MODULE} required username="admin" password="{admin}";'
    plain = f'{PLAIN_MODULE} required username="admin" password="{admin}" user_admin="{admin}";'
    settings = {
        "sasl.enabled.mechanisms": SCRAM,
        "sasl.mechanism.inter.broker.protocol": SCRAM,
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(files.keystore),
        "ssl.keystore.password": files.keystore_password.read_text(encoding="utf-8"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(files.ca),
        "ssl.endpoint.identification.algorithm": "https",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{Role.ADMIN.username}",
        "allow.everyone.if.no.acl.found": "false",
    }
    for name in names:
        if name != "CONTROLLER":
            settings[f"listener.name.{name.lower()}.scram-sha-512.sasl.jaas.config"] = scram
    return settings


def running_broker_pid(config: StackConfig, node: int = NODE_ID) -> int | None:
    """The pid of this state folder's node ``node`` when it runs, else None."""
    paths = BrokerPaths.of(config, node)
    pid = read_pid_file(paths.pid_file)
    return pid if process_is_ours(pid, str(paths.properties)) else None


def _java_command(config: StackConfig, libs: Path, main_class: str, node: int) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise StackError("java is not on PATH; the Kafka broker needs Java 17 or newer")
    paths = BrokerPaths.of(config, node)
    return [
        java,
        f"-Xmx{config.kafka_heap_per_broker_mb}m",
        "-Djava.awt.headless=true",
        f"-XX:ErrorFile={paths.root / 'hs_err_pid%p.log'}",
        f"-Dkafka.logs.dir={paths.logs}",
        f"-Dlog4j2.configurationFile={LOG4J2_PATH}",
        "-cp",
        f"{libs}/*",
        main_class,
    ]


def _format_mark(config: StackConfig) -> str:
    users = ",".join(role.username for role in Role) if config.security else "none"
    return f"scram-users={users}\n{kafka_quorum.format_mark(config)}"


def storage_outdated(config: StackConfig) -> bool:
    """True when any node's data folder was formatted with other users or another quorum
    than the settings ask for: the next start formats it again, and every topic is lost."""
    return any(_node_outdated(config, node) for node in kafka_quorum.node_ids(config))


def _node_outdated(config: StackConfig, node: int) -> bool:
    paths = BrokerPaths.of(config, node)
    mark = paths.root / FORMAT_MARK
    if not (paths.data / "meta.properties").is_file():
        return False
    return not mark.is_file() or mark.read_text(encoding="utf-8") != _format_mark(config)


def _format_storage(config: StackConfig, libs: Path, node: int) -> None:
    """Format node ``node``'s data folder once, as one voter of the stack's KRaft quorum
    (deploy.local.kafka_quorum) with the stack's SCRAM users; a folder formatted with other
    users or another quorum is wiped and formatted again.

    The arguments go in an argument file (java's ``@file``, mode 0600, removed after), so
    the users' passwords never appear on a command line.
    """
    paths = BrokerPaths.of(config, node)
    if (paths.data / "meta.properties").is_file():
        if not _node_outdated(config, node):
            return
        shutil.rmtree(paths.data)
        paths.data.mkdir(parents=True)
    arguments = ["kafka.tools.StorageTool", "format", "-c", str(paths.properties)]
    arguments += kafka_quorum.format_arguments(config)
    if config.security:
        for role in Role:
            password = read_password(config.secrets_path, role.password_name)
            credential = f"name={role.username},iterations={SCRAM_ITERATIONS},password={password}"
            arguments += ["--add-scram", f"{SCRAM}=[{credential}]"]
    argument_file = paths.root / "format.args"
    write_secret(argument_file, "\n".join(_java_quoted(a) for a in arguments) + "\n", replace=True)
    command = [*_java_command(config, libs, f"@{argument_file}", node)]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=config.start_timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise failure("formatting Kafka's storage timed out", paths.server_log) from error
    finally:
        argument_file.unlink(missing_ok=True)
    if done.returncode != 0:
        raise StackError(f"formatting Kafka's storage failed:\n{done.stdout}{done.stderr}")
    (paths.root / FORMAT_MARK).write_text(_format_mark(config), encoding="utf-8")


def _java_quoted(argument: str) -> str:
    """One argument of a java @file: in double quotes, backslashes and quotes escaped."""
    return '"' + argument.replace("\\", "\\\\").replace('"', '\\"') + '"'


def start_broker(config: StackConfig, node: int = NODE_ID) -> int:
    """Spawn node ``node`` unless it runs already; return its pid (not yet ready: with
    several nodes, none is until a majority of the quorum runs)."""
    paths = BrokerPaths.of(config, node)
    settings = render_server_properties(config, paths.data, node)
    pid = running_broker_pid(config, node)
    if pid is not None:
        ensure_same_settings(paths.properties, settings, "Kafka broker")
        return pid
    remove_file(paths.pid_file)
    ports.ensure_port_free(kafka_quorum.client_port(config, node), "stack.kafka_port")
    port = kafka_quorum.controller_port(config, node)
    ports.ensure_port_free(port, "stack.kafka_controller_port")
    libs = ensure_kafka_jars(config.cache_path)
    for folder in (paths.data, paths.logs):
        folder.mkdir(parents=True, exist_ok=True)
    write_secret(paths.properties, settings, replace=True)
    _format_storage(config, libs, node)
    command = [*_java_command(config, libs, "kafka.Kafka", node), str(paths.properties)]
    output_flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    pid = os.posix_spawn(
        command[0],
        command,
        dict(os.environ),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(paths.stdout), output_flags, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )
    write_pid_file(paths.pid_file, pid)
    wait_exec_settled(pid)
    return pid


def wait_broker_ready(config: StackConfig, pid: int, node: int = NODE_ID) -> None:
    """Poll until node ``node`` is listed among the cluster's brokers; on failure stop it."""
    paths = BrokerPaths.of(config, node)
    deadline = time.monotonic() + config.start_timeout_seconds
    while True:
        if not process_is_ours(pid, str(paths.properties)):
            remove_file(paths.pid_file)
            raise failure(f"the Kafka broker (pid {pid}) exited", paths.server_log, paths.stdout)
        if broker_answers(config, node):
            return
        if time.monotonic() >= deadline:
            stop_broker(config, node)
            raise failure(
                f"the Kafka broker did not answer within {config.start_timeout_seconds:.0f} s",
                paths.server_log,
                paths.stdout,
            )
        time.sleep(READY_POLL_SECONDS)


def broker_answers(config: StackConfig, node: int = NODE_ID) -> bool:
    """True when node ``node``'s port accepts connections and the metadata it serves lists
    it among the brokers."""
    port = kafka_quorum.client_port(config, node)
    if not ports.port_answers(port):
        return False
    kafka = stack_kafka(config, Role.ADMIN)
    kafka = msgspec.structs.replace(kafka, bootstrap_servers=f"{ports.HOST}:{port}")
    return asyncio.run(_broker_listed(kafka, node, PROBE_TIMEOUT_SECONDS))


async def _broker_listed(kafka: KafkaConfig, node: int, timeout_seconds: float) -> bool:
    admin = AIOKafkaAdminClient(**connection(kafka), request_timeout_ms=int(timeout_seconds * 1000))
    try:
        async with asyncio.timeout(timeout_seconds):
            await admin.start()
            cluster = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return any(broker.get("node_id") == node for broker in cluster.get("brokers", []))


def stop_broker(config: StackConfig, node: int = NODE_ID) -> None:
    """SIGTERM node ``node``, SIGKILL it after STOP_GRACE_SECONDS, forget its pid."""
    paths = BrokerPaths.of(config, node)
    pid = running_broker_pid(config, node)
    if pid is not None:
        stop_process(pid, str(paths.properties), STOP_GRACE_SECONDS)
    remove_file(paths.pid_file)


def running_nodes(config: StackConfig) -> list[int]:
    """Every node of the state folder that runs, whatever ``stack.kafka_brokers`` says now
    (the settings may have changed since ``dev up``)."""
    nodes = range(FIRST_NODE_ID, FIRST_NODE_ID + KAFKA_BROKERS_MAX)
    return [node for node in nodes if running_broker_pid(config, node) is not None]


def stop_brokers(config: StackConfig) -> None:
    """Stop every running node of the state folder, all at once: a node stopped after a
    majority of the quorum has gone cannot finish its controlled shutdown, and would wait
    STOP_GRACE_SECONDS for its SIGKILL."""
    nodes = running_nodes(config)
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        list(pool.map(functools.partial(stop_broker, config), nodes))
    remove_file(BrokerPaths.of(config).pid_file)
