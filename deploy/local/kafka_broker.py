"""One Apache Kafka broker in KRaft mode (broker and controller in one JVM) on 127.0.0.1.

Layout under ``<state_dir>/kafka``: ``server.properties``, ``data/`` (formatted once),
``logs/server.log`` (log4j2), ``kafka.out`` (the JVM's stdout and stderr), ``kafka.pid``.

The broker is spawned in its own session so it outlives the ``smallcups`` process that
started it; it is ours while its command line names our ``server.properties``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from deploy.local import ports
from deploy.local.kafka_jars import LOG4J2_PATH, ensure_kafka_jars
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
from engine.core.config import StackConfig
from engine.core.errors import StackError

STOP_GRACE_SECONDS = 30.0
PROBE_TIMEOUT_SECONDS = 5.0
READY_POLL_SECONDS = 0.5
NODE_ID = 1


@dataclass(frozen=True, slots=True)
class BrokerPaths:
    root: Path

    @classmethod
    def of(cls, config: StackConfig) -> BrokerPaths:
        return cls(config.state_path / "kafka")

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
    return f"{ports.HOST}:{config.kafka_port}"


def render_server_properties(config: StackConfig, data_dir: Path) -> str:
    """The broker's configuration: a single node, replication factor 1, 127.0.0.1 only."""
    host, port, controller = ports.HOST, config.kafka_port, config.kafka_controller_port
    listeners = [f"PLAINTEXT://{host}:{port}", f"CONTROLLER://{host}:{controller}"]
    advertised = [f"PLAINTEXT://{host}:{port}"]
    protocols = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
    if config.kafka_proxied_port:
        # Clients connect to the advertised address of the listener they bootstrapped
        # through: this one advertises the proxy, so proxied clients never bypass it.
        listeners.append(f"PROXIED://{host}:{config.kafka_proxied_port}")
        advertised.append(f"PROXIED://{host}:{config.kafka_proxied_advertised_port}")
        protocols.append("PROXIED:PLAINTEXT")
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.bootstrap.servers": f"{host}:{controller}",
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": ",".join(protocols),
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    lines = ["# Written by `smallcups dev up`; rewritten on every start."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes, base64url, no padding, never starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-"):
            return cluster_id


def running_broker_pid(config: StackConfig) -> int | None:
    """The pid of this state folder's broker when it runs, else None."""
    paths = BrokerPaths.of(config)
    pid = read_pid_file(paths.pid_file)
    return pid if process_is_ours(pid, str(paths.properties)) else None


def _java_command(config: StackConfig, libs: Path, main_class: str) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise StackError("java is not on PATH; the Kafka broker needs Java 17 or newer")
    paths = BrokerPaths.of(config)
    return [
        java,
        f"-Xmx{config.kafka_heap_mb}m",
        "-Djava.awt.headless=true",
        f"-XX:ErrorFile={paths.root / 'hs_err_pid%p.log'}",
        f"-Dkafka.logs.dir={paths.logs}",
        f"-Dlog4j2.configurationFile={LOG4J2_PATH}",
        "-cp",
        f"{libs}/*",
        main_class,
    ]


def _format_storage(config: StackConfig, libs: Path) -> None:
    """Format the data folder once, as a standalone KRaft controller quorum."""
    paths = BrokerPaths.of(config)
    if (paths.data / "meta.properties").is_file():
        return
    command = [
        *_java_command(config, libs, "kafka.tools.StorageTool"),
        *("format", "-t", new_cluster_id(), "-c", str(paths.properties), "--standalone"),
    ]
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
    if done.returncode != 0:
        raise StackError(f"formatting Kafka's storage failed:\n{done.stdout}{done.stderr}")


def start_broker(config: StackConfig) -> int:
    """Spawn the broker unless it runs already; return its pid (not yet ready)."""
    paths = BrokerPaths.of(config)
    settings = render_server_properties(config, paths.data)
    pid = running_broker_pid(config)
    if pid is not None:
        ensure_same_settings(paths.properties, settings, "Kafka broker")
        return pid
    remove_file(paths.pid_file)
    ports.ensure_port_free(config.kafka_port, "stack.kafka_port")
    ports.ensure_port_free(config.kafka_controller_port, "stack.kafka_controller_port")
    libs = ensure_kafka_jars(config.cache_path)
    for folder in (paths.data, paths.logs):
        folder.mkdir(parents=True, exist_ok=True)
    paths.properties.write_text(settings, encoding="utf-8")
    _format_storage(config, libs)
    command = [*_java_command(config, libs, "kafka.Kafka"), str(paths.properties)]
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


def wait_broker_ready(config: StackConfig, pid: int) -> None:
    """Poll until the broker lists itself in a metadata response; on failure stop it."""
    paths = BrokerPaths.of(config)
    deadline = time.monotonic() + config.start_timeout_seconds
    while True:
        if not process_is_ours(pid, str(paths.properties)):
            remove_file(paths.pid_file)
            raise failure(f"the Kafka broker (pid {pid}) exited", paths.server_log, paths.stdout)
        if broker_answers(config):
            return
        if time.monotonic() >= deadline:
            stop_broker(config)
            raise failure(
                f"the Kafka broker did not answer within {config.start_timeout_seconds:.0f} s",
                paths.server_log,
                paths.stdout,
            )
        time.sleep(READY_POLL_SECONDS)


def broker_answers(config: StackConfig) -> bool:
    """True when the port accepts connections and metadata lists at least one broker."""
    if not ports.port_answers(config.kafka_port):
        return False
    return asyncio.run(_broker_listed(bootstrap_servers(config), PROBE_TIMEOUT_SECONDS))


async def _broker_listed(bootstrap: str, timeout_seconds: float) -> bool:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_seconds * 1000)
    )
    try:
        async with asyncio.timeout(timeout_seconds):
            await admin.start()
            cluster = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return bool(cluster.get("brokers"))


def stop_broker(config: StackConfig) -> None:
    """SIGTERM the broker, SIGKILL it after STOP_GRACE_SECONDS, forget its pid."""
    paths = BrokerPaths.of(config)
    pid = running_broker_pid(config)
    if pid is not None:
        stop_process(pid, str(paths.properties), STOP_GRACE_SECONDS)
    remove_file(paths.pid_file)
