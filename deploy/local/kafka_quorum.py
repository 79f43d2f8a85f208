"""The local stack's KRaft quorum: which nodes there are, where each listens and keeps its
files, and how each node's storage is formatted.

Every node is a broker and a controller in one JVM, node id n (1..``stack.kafka_brokers``)
listening on the first node's ports + KAFKA_NODE_PORT_STEP x (n - 1), its files in
``<state_dir>/kafka`` (node 1, as when the stack had one node) or ``<state_dir>/kafka-<n>``.

One node is formatted ``--standalone``: a quorum of itself, with a new cluster id. Several
nodes are formatted with the same cluster id and ``--initial-controllers`` naming every
voter (id, controller address, directory id): KIP-853's dynamic quorum, found through
``controller.quorum.bootstrap.servers``. The cluster id and the directory ids are made once
and kept in ``<state_dir>/kafka-quorum.json``, so a node formatted again later joins the
same cluster.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Final

import msgspec

from deploy.local import ports
from engine.core.config import KafkaConfig, StackConfig
from engine.core.errors import invariant
from engine.kafka.topics import Replication, replication_for

QUORUM_FILE: Final = "kafka-quorum.json"
FIRST_NODE_ID: Final = 1


class Quorum(msgspec.Struct, frozen=True):
    """The identities every node of a several-node quorum is formatted with."""

    cluster_id: str
    directory_ids: list[str]
    """Node n's metadata log directory id at index n - 1."""


def new_cluster_id() -> str:
    """A random KRaft id (a cluster's, a directory's): 16 bytes, base64url, no padding,
    never starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-"):
            return cluster_id


def node_ids(config: StackConfig) -> list[int]:
    return list(range(FIRST_NODE_ID, FIRST_NODE_ID + config.kafka_brokers))


def client_port(config: StackConfig, node: int) -> int:
    invariant(FIRST_NODE_ID <= node <= config.kafka_brokers, f"no Kafka node {node}")
    return config.kafka_ports[node - FIRST_NODE_ID]


def controller_port(config: StackConfig, node: int) -> int:
    invariant(FIRST_NODE_ID <= node <= config.kafka_brokers, f"no Kafka node {node}")
    return config.kafka_controller_ports[node - FIRST_NODE_ID]


def node_root(config: StackConfig, node: int) -> Path:
    invariant(node >= FIRST_NODE_ID, f"no Kafka node {node}")
    name = "kafka" if node == FIRST_NODE_ID else f"kafka-{node}"
    return config.state_path / name


def controller_servers(config: StackConfig) -> str:
    """Every node's controller listener: controller.quorum.bootstrap.servers."""
    return ",".join(f"{ports.HOST}:{port}" for port in config.kafka_controller_ports)


def replication(config: StackConfig) -> Replication:
    """The replication of the brokers' internal topics: what ``smallcups init`` gives the
    project's topics on this many brokers (a replica per node up to three, one fewer in
    sync, at least one)."""
    return replication_for(KafkaConfig(), config.kafka_brokers)


def read_quorum(config: StackConfig) -> Quorum | None:
    """The quorum file when it exists and names as many voters as the stack has nodes."""
    try:
        quorum = msgspec.json.decode((config.state_path / QUORUM_FILE).read_bytes(), type=Quorum)
    except (OSError, msgspec.DecodeError):
        return None
    return quorum if len(quorum.directory_ids) == config.kafka_brokers else None


def ensure_quorum(config: StackConfig) -> Quorum:
    """The quorum file's identities, made (and every node's storage then outdated) when it
    is missing or names another number of voters."""
    invariant(config.kafka_brokers > 1, "one node is formatted --standalone, with no quorum file")
    quorum = read_quorum(config)
    if quorum is None:
        ids = [new_cluster_id() for _ in node_ids(config)]
        quorum = Quorum(new_cluster_id(), ids)
        (config.state_path / QUORUM_FILE).write_bytes(msgspec.json.encode(quorum))
    return quorum


def format_mark(config: StackConfig) -> str:
    """What a node's storage was formatted as, beyond its users: nothing for one node (so a
    single node's mark is what it always was), the cluster id for several."""
    if config.kafka_brokers == 1:
        return ""
    quorum = read_quorum(config)
    return f"quorum={quorum.cluster_id if quorum else 'none'}\n"


def format_arguments(config: StackConfig) -> list[str]:
    """StorageTool's cluster and quorum arguments for any node of the stack."""
    if config.kafka_brokers == 1:
        return ["-t", new_cluster_id(), "--standalone"]
    quorum = ensure_quorum(config)
    voters = [
        f"{node}@{ports.HOST}:{controller_port(config, node)}:{directory}"
        for node, directory in zip(node_ids(config), quorum.directory_ids, strict=True)
    ]
    return ["-t", quorum.cluster_id, "--initial-controllers", ",".join(voters)]
