"""The local stack's several-node Kafka: ports, folders, properties, the quorum's format."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from deploy.local import kafka_quorum
from deploy.local.kafka_broker import BrokerPaths, render_server_properties
from deploy.local.roles import Role, stack_kafka
from deploy.local.stack import ServiceStatus, StackStatus, format_status, stack_ports
from engine.core.config import StackConfig
from engine.core.errors import ConfigError

THREE = StackConfig(
    kafka_port=29092,
    kafka_controller_port=29093,
    postgres_port=25432,
    mariadb_port=23306,
    kafka_brokers=3,
    security=False,
)


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def test_each_node_has_its_own_ports_and_folder(tmp_path: Path) -> None:
    three = msgspec.structs.replace(THREE, state_dir=str(tmp_path))

    assert three.kafka_ports == [29092, 29192, 29292]
    assert three.kafka_controller_ports == [29093, 29193, 29293]
    assert three.kafka_bootstrap_servers == "127.0.0.1:29092,127.0.0.1:29192,127.0.0.1:29292"
    assert stack_kafka(three, Role.WORKER).bootstrap_servers == three.kafka_bootstrap_servers
    roots = [BrokerPaths.of(three, node).root for node in kafka_quorum.node_ids(three)]
    assert roots == [tmp_path / "kafka", tmp_path / "kafka-2", tmp_path / "kafka-3"]
    assert three.kafka_heap_per_broker_mb == 341
    assert msgspec.structs.replace(three, kafka_heap_mb=256).kafka_heap_per_broker_mb == 256


def test_a_node_knows_every_controller_and_replicates_the_internal_topics() -> None:
    settings = _properties(render_server_properties(THREE, Path("/state/kafka-2/data"), 2))

    assert settings["node.id"] == "2"
    assert settings["listeners"] == "BROKER://127.0.0.1:29192,CONTROLLER://127.0.0.1:29193"
    assert settings["advertised.listeners"] == "BROKER://127.0.0.1:29192"
    controllers = "127.0.0.1:29093,127.0.0.1:29193,127.0.0.1:29293"
    assert settings["controller.quorum.bootstrap.servers"] == controllers
    assert settings["offsets.topic.replication.factor"] == "3"
    assert settings["transaction.state.log.replication.factor"] == "3"
    assert settings["transaction.state.log.min.isr"] == "2"
    two = msgspec.structs.replace(THREE, kafka_brokers=2)
    settings = _properties(render_server_properties(two, Path("/state/kafka/data"), 1))
    assert settings["offsets.topic.replication.factor"] == "2"
    assert settings["transaction.state.log.min.isr"] == "1"


def test_every_node_is_formatted_with_the_same_cluster_and_voters(tmp_path: Path) -> None:
    three = msgspec.structs.replace(THREE, state_dir=str(tmp_path))
    assert kafka_quorum.format_mark(three) == "quorum=none\n"

    first = kafka_quorum.format_arguments(three)
    again = kafka_quorum.format_arguments(three)

    quorum = kafka_quorum.read_quorum(three)
    assert quorum is not None
    assert first == again
    assert first[:2] == ["-t", quorum.cluster_id]
    voters = first[3].split(",")
    assert [v.rsplit(":", 1)[0] for v in voters] == [
        "1@127.0.0.1:29093",
        "2@127.0.0.1:29193",
        "3@127.0.0.1:29293",
    ]
    assert len({v.rsplit(":", 1)[1] for v in voters}) == 3
    assert kafka_quorum.format_mark(three) == f"quorum={first[1]}\n"
    one = msgspec.structs.replace(three, kafka_brokers=1)
    assert kafka_quorum.format_mark(one) == ""
    assert kafka_quorum.format_arguments(one)[2:] == ["--standalone"]
    assert kafka_quorum.read_quorum(msgspec.structs.replace(three, kafka_brokers=2)) is None


def test_the_stack_checks_every_nodes_ports_and_shows_every_node() -> None:
    ports = stack_ports(THREE)

    assert ports["stack.kafka_port (node 3)"] == 29292
    assert ports["stack.kafka_controller_port (node 2)"] == 29193
    with pytest.raises(ConfigError, match="must all differ"):
        stack_ports(msgspec.structs.replace(THREE, postgres_port=29192))
    more = (ServiceStatus("kafka-2", 2, True), ServiceStatus("kafka-3", None, False))
    status = StackStatus(ServiceStatus("kafka", 1, True), ServiceStatus("postgres", 3, True))
    status = StackStatus(status.kafka, status.postgres, more_kafka=more)
    text = format_status(THREE, status)
    assert "kafka-3    stopped" in text
    assert "bootstrap  127.0.0.1:29092,127.0.0.1:29192,127.0.0.1:29292" in text
    assert not status.healthy


def test_one_proxy_cannot_stand_for_several_brokers() -> None:
    with pytest.raises(ConfigError, match="kafka_brokers = 1"):
        msgspec.structs.replace(
            THREE, kafka_proxied_port=29100, kafka_proxied_advertised_port=29101
        ).check()
