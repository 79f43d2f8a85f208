"""Pure helpers of the local stack: no broker, no database."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest

from deploy.local import kafka_jars, mariadb_server, ports, processes
from deploy.local.kafka_broker import render_server_properties
from deploy.local.kafka_quorum import new_cluster_id
from deploy.local.mariadb_databases import create_mysql_databases
from deploy.local.postgres_auth import render_hba, scram_verifier
from deploy.local.postgres_cluster import ClusterPaths, find_bin_dir, render_settings
from deploy.local.postgres_databases import CONTROL_DATABASE, wanted_databases
from deploy.local.stack import ServiceStatus, StackStatus, format_status, stack_ports
from engine.core.config import StackConfig
from engine.core.errors import ConfigError, StackError

CONFIG = StackConfig(
    kafka_port=29092,
    kafka_controller_port=29093,
    postgres_port=25432,
    mariadb_port=23306,
    postgres_cups=3,
    mysql_cups=2,
)


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def test_server_properties_make_a_single_node_on_loopback() -> None:
    plaintext = msgspec.structs.replace(CONFIG, security=False)
    settings = _properties(render_server_properties(plaintext, Path("/state/kafka/data")))

    assert settings["process.roles"] == "broker,controller"
    assert settings["listeners"] == "BROKER://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert settings["advertised.listeners"] == "BROKER://127.0.0.1:29092"
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
    text = render_settings(CONFIG, ClusterPaths(Path("/state/it's")))

    assert "fsync = on" in text
    assert "synchronous_commit = on" in text
    assert "listen_addresses = '127.0.0.1'" in text
    assert "port = 25432" in text
    assert "unix_socket_directories = '/state/it''s/sockets'" in text
    assert "ssl = on" in text and "ssl_key_file = '/state/it''s/tls/server-key.pem'" in text
    assert "password_encryption = 'scram-sha-256'" in text
    plain = render_settings(
        msgspec.structs.replace(CONFIG, security=False), ClusterPaths(Path("/"))
    )
    assert "ssl" not in plain


def test_postgres_lets_in_only_tls_and_scram_from_loopback_when_secure() -> None:
    rules = [line for line in render_hba(True).splitlines() if not line.startswith("#")]
    assert rules == ["hostssl all all 127.0.0.1/32 scram-sha-256"]
    assert "trust" in render_hba(False) and "hostssl" not in render_hba(False)


def test_the_scram_verifier_answers_rfc_7677s_exchange() -> None:
    """RFC 7677's example (user "user", password "pencil"): the client's proof must be
    valid for the verifier's StoredKey and the server's signature must come out of its
    ServerKey, so Postgres accepts the password the verifier was made from."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = scram_verifier("pencil", salt)
    head, keys = verifier.split("$", 1)[1].split("$")
    assert head == "4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = (
        f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        f"c=biws,r={nonce}"
    ).encode()
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    signature = hmac.digest(stored_key, auth_message, "sha256")
    client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    server_signature = hmac.digest(server_key, auth_message, "sha256")
    assert base64.b64encode(server_signature) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def _mysqld_group(text: str) -> dict[str, str]:
    """The ``[mysqld]`` options of a my.cnf, a bare flag mapped to ""."""
    lines = [line for line in text.splitlines() if line and line[0] != "#"]
    assert lines[0] == "[mysqld]"
    assert not any(line.startswith("[") for line in lines[1:])
    return {key: value for key, _, value in (line.partition("=") for line in lines[1:])}


def test_mariadb_settings_keep_durability_and_loopback() -> None:
    paths = mariadb_server.ServerPaths(Path("/state/mariadb"))
    settings = _mysqld_group(mariadb_server.render_settings(CONFIG, paths, as_root=False))

    assert settings["bind-address"] == "127.0.0.1"
    assert settings["port"] == "23306"
    assert settings["innodb_flush_log_at_trx_commit"] == "1"
    assert settings["sync_binlog"] == "1"
    assert settings["log_bin"] == "/state/mariadb/binlog/mariadb-bin"
    assert settings["binlog_format"] == "ROW"
    assert settings["server_id"] == "1"
    assert settings["max_allowed_packet"] == str(64 * 1024 * 1024)
    assert settings["collation-server"] == "utf8mb4_bin"
    assert "skip-name-resolve" in settings
    assert settings["socket"] == "/state/mariadb/run/mysqld.sock"
    assert settings["datadir"] == "/state/mariadb/data"
    assert settings["log-error"] == "/state/mariadb/mariadb.log"
    assert "user" not in settings
    assert "0.0.0.0" not in "".join(settings.values())


def test_mariadb_runs_as_the_mysql_user_under_root() -> None:
    paths = mariadb_server.ServerPaths(Path("/state/mariadb"))
    settings = _mysqld_group(mariadb_server.render_settings(CONFIG, paths, as_root=True))

    assert settings["user"] == "mysql"


def test_mariadb_settings_follow_the_config() -> None:
    paths = mariadb_server.ServerPaths(Path("/state/mariadb"))
    other = msgspec.structs.replace(CONFIG, mariadb_port=24306)

    before = mariadb_server.render_settings(CONFIG, paths, as_root=False)
    after = mariadb_server.render_settings(other, paths, as_root=False)
    assert before != after and "port=24306" in after.splitlines()


def test_mariadb_layout_under_the_state_folder() -> None:
    paths = mariadb_server.ServerPaths.of(StackConfig(state_dir="/state"))

    assert paths.config == Path("/state/mariadb/my.cnf")
    assert paths.pid_file.parent == paths.socket.parent == Path("/state/mariadb/run")
    assert paths.installed.parent == paths.data


def test_package_install_refuses_service_starts_and_leaves_policy_as_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = tmp_path / "policy-rc.d"
    monkeypatch.setattr(mariadb_server, "POLICY_RC_D", policy)

    with mariadb_server._service_starts_refused():
        refused = subprocess.run([str(policy), "mariadb", "start"], check=False)
        assert refused.returncode == 101
    assert not policy.exists()

    policy.write_text("#!/bin/sh\nexit 0\n")
    with mariadb_server._service_starts_refused():
        assert policy.read_text() == "#!/bin/sh\nexit 0\n"
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"


def test_mysql_database_names_are_checked_before_any_connection() -> None:
    with pytest.raises(StackError, match="database name"):
        create_mysql_databases(CONFIG, ["cup`; DROP DATABASE mysql; --"])
    with pytest.raises(StackError, match="database name"):
        create_mysql_databases(CONFIG, ["x" * 65])


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
        "stack.mariadb_port": 23306,
    }
    without_mariadb = msgspec.structs.replace(CONFIG, mysql_cups=0)
    assert "stack.mariadb_port" not in stack_ports(without_mariadb)
    with pytest.raises(ConfigError, match="must all differ"):
        stack_ports(StackConfig(kafka_port=25432, postgres_port=25432))
    with pytest.raises(ConfigError, match="must all differ"):
        stack_ports(StackConfig(mariadb_port=25432, postgres_port=25432))


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
    assert urlsplit(CONFIG.control_dsn).path == "/" + CONTROL_DATABASE


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
    assert "cup 2 (postgres) postgresql://smallcups@127.0.0.1:25432/smallcups_cup_2" in text
    mysql_dsn = CONFIG.mysql_dsn(CONFIG.mysql_cup_databases[1])
    assert mysql_dsn.startswith("mysql://smallcups@127.0.0.1:23306/")
    assert f"cup 4 (mariadb) {mysql_dsn}" in text
    assert "missing databases: smallcups_cup_2" in text
    assert "UNHEALTHY" in text and ":@" not in text and "password" not in text


def test_status_lists_mariadb_only_when_configured_or_running() -> None:
    kafka, postgres = ServiceStatus("kafka", 1, True), ServiceStatus("postgres", 2, True)
    mariadb = ServiceStatus("mariadb", 3, False, "missing databases: smallcups_mysql_cup_1")
    without = StackStatus(kafka, postgres)
    with_mariadb = StackStatus(kafka, postgres, mariadb=mariadb)

    assert without.healthy and [s.name for s in without.services] == ["kafka", "postgres"]
    assert not with_mariadb.healthy
    assert [s.name for s in with_mariadb.services] == ["kafka", "postgres", "mariadb"]
    assert "mariadb    running (pid 3), not answering" in format_status(CONFIG, with_mariadb)
