"""Pure helpers of the local stack: no broker, no database."""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path

import pytest

from deploy.local import kafka_jars, ports, processes
from deploy.local.kafka_broker import new_cluster_id, render_server_properties
from deploy.local.postgres_cluster import find_bin_dir, render_settings
from deploy.local.postgres_databases import CONTROL_DATABASE, wanted_databases
from deploy.local.stack import ServiceStatus, StackStatus, format_status, stack_ports
from engine.core.config import StackConfig
from engine.core.errors import ConfigError, StackError

CONFIG = StackConfig(kafka_port=29092, kafka_controller_port=29093, postgres_port=25432, cups=3)


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def test_server_properties_make_a_single_node_on_loopback() -> None:
    settings = _properties(render_server_properties(CONFIG, Path("/state/kafka/data")))

    assert settings["process.roles"] == "broker,controller"
    assert settings["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert settings["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert settings["controller.quorum.bootstrap.servers"] == "127.0.0.1:29093"
    assert settings["log.dirs"] == "/state/kafka/data"
    assert settings["auto.create.topics.enable"] == "false"
    assert settings["offsets.topic.replication.factor"] == "1"
    assert "0.0.0.0" not in "".join(settings.values())


def test_cluster_id_is_16_random_bytes_in_unpadded_base64url() -> None:
    ids = {new_cluster_id() for _ in range(200)}

    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert "=" not in cluster_id and not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_postgres_settings_keep_durability_and_loopback() -> None:
    text = render_settings(CONFIG, Path("/state/it's/sockets"))

    assert "fsync = on" in text
    assert "synchronous_commit = on" in text
    assert "listen_addresses = '127.0.0.1'" in text
    assert "port = 25432" in text
    assert "unix_socket_directories = '/state/it''s/sockets'" in text


def test_kafka_version_comes_from_the_pom() -> None:
    assert kafka_jars.pom_property("kafka.version") == kafka_jars.KAFKA_VERSION
    assert kafka_jars.KAFKA_VERSION.startswith("4.")
    libs = kafka_jars.libs_path(Path("/cache"))
    assert libs == Path(f"/cache/kafka-{kafka_jars.KAFKA_VERSION}/libs")
    assert not kafka_jars.libs_complete(libs)


def test_a_taken_port_names_the_port_and_the_knob() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        assert not ports.port_is_free(port)
        assert ports.port_answers(port)
        with pytest.raises(StackError, match=rf"port {port}.*SMALLCUPS_STACK_KAFKA_PORT"):
            ports.ensure_port_free(port, "stack.kafka_port")

    assert ports.port_is_free(port)
    assert not ports.port_answers(port)
    assert ports.wait_port_closed(port, timeout_seconds=1.0)


def test_stack_ports_must_differ() -> None:
    assert stack_ports(CONFIG) == {
        "stack.kafka_port": 29092,
        "stack.kafka_controller_port": 29093,
        "stack.postgres_port": 25432,
    }
    with pytest.raises(ConfigError, match="must all differ"):
        stack_ports(StackConfig(kafka_port=25432, postgres_port=25432))


def test_pid_files_and_process_identity(tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    assert processes.read_pid_file(pid_file) is None
    pid_file.write_text("not a pid\n")
    assert processes.read_pid_file(pid_file) is None
    processes.write_pid_file(pid_file, os.getpid())
    assert processes.read_pid_file(pid_file) == os.getpid()

    own_marker = processes.command_line(os.getpid()).split()[0]
    assert processes.process_is_ours(os.getpid(), own_marker)
    assert not processes.process_is_ours(os.getpid(), "no-such-marker-in-argv")
    assert not processes.process_is_ours(None, own_marker)


def test_failure_ends_with_the_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))

    assert processes.tail_lines(log, 3) == "line 97\nline 98\nline 99"
    empty = tmp_path / "empty.log"
    empty.touch()
    error = processes.failure("broker exited", tmp_path / "missing.log", empty, log)
    text = str(error)
    assert text.startswith("broker exited")
    assert "no log at" in text and "empty.log" not in text
    assert "line 69" not in text and "line 70" in text and text.endswith("line 99")


def test_databases_are_the_control_one_then_each_cup() -> None:
    names = wanted_databases(CONFIG)

    assert names == [CONTROL_DATABASE, "smallcups_cup_0", "smallcups_cup_1", "smallcups_cup_2"]
    assert CONFIG.control_dsn.endswith("/" + CONTROL_DATABASE)


def test_missing_postgres_binaries_name_the_knob(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"stack\.postgres_bin_dir"):
        find_bin_dir(str(tmp_path))


def test_status_text_has_endpoints_and_health_but_no_password() -> None:
    stopped = StackStatus(
        ServiceStatus("kafka", None, False),
        ServiceStatus("postgres", 42, False, "missing databases: smallcups_cup_2"),
    )
    text = format_status(CONFIG, stopped)

    assert "127.0.0.1:29092" in text
    assert "postgresql://smallcups@127.0.0.1:25432/smallcups_cup_2" in text
    assert "missing databases: smallcups_cup_2" in text
    assert "UNHEALTHY" in text and ":@" not in text and "password" not in text
