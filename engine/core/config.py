"""One frozen, typed configuration for every smallcups process.

Loaded once at start-up from an optional TOML file and the environment (the
environment wins), then passed down: each component receives only its own part.

Environment variables are ``SMALLCUPS_<SECTION>_<FIELD>`` in upper case, for example
``SMALLCUPS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092`` or ``SMALLCUPS_STACK_POSTGRES_CUPS=8``.
List fields take comma-separated values. The TOML file is named by ``--config`` or
``SMALLCUPS_CONFIG`` and has one table per section (``[kafka]``, ``[stack]``, ...).

Every field says what it is and its limits (``Annotated[..., Meta(...)]``): a section
checks them when it is built, however it is built, and docs/configuration.md is
generated from them (scripts/config_table.py). Nothing falls back to the local dev
stack: ``smallcups dev up`` writes the local stack's settings to a file of their own.
"""

from __future__ import annotations

import enum
import functools
import operator
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final
from urllib.parse import quote

import msgspec
from msgspec import Meta

from engine.core.dsn import refuse_password
from engine.core.errors import ConfigError

ENV_PREFIX = "SMALLCUPS_"


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A section of the configuration: its fields' limits are checked when it is built."""

    NAME: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for field, check in _limits(type(self)):
            problem = check(getattr(self, field))
            if problem:
                raise ConfigError(f"{self.NAME}.{field} must be {problem}")
        self.check()

    def check(self) -> None:
        """Checks across fields (a section with none has nothing to add)."""


@functools.cache
def _limits(kind: type[Section]) -> list[tuple[str, Any]]:
    """(field, check) for each field of ``kind`` with limits; a check returns "" or what
    the value must be."""
    checks = []
    info = msgspec.inspect.type_info(kind)
    if not isinstance(info, msgspec.inspect.StructType):
        raise ConfigError(f"{kind.__name__} is not a configuration section")
    for field in info.fields:
        bounds = _bounds(field.type)
        if bounds:
            checks.append((field.name, functools.partial(_check_bounds, bounds)))
    return checks


def _bounds(info: Any) -> dict[str, Any]:
    inner = getattr(info, "type", info)
    names = ("ge", "gt", "le", "lt", "min_length", "max_length")
    return {n: getattr(inner, n) for n in names if getattr(inner, n, None) is not None}


_COMPARISONS: Final[dict[str, tuple[Callable[[Any, Any], bool], str]]] = {
    "ge": (operator.ge, ">="),
    "gt": (operator.gt, ">"),
    "le": (operator.le, "<="),
    "lt": (operator.lt, "<"),
    "min_length": (operator.ge, "of length >="),
    "max_length": (operator.le, "of length <="),
}


def _check_bounds(bounds: dict[str, Any], value: Any) -> str:
    failed = []
    for name, bound in bounds.items():
        holds, words = _COMPARISONS[name]
        measured = len(value) if name.endswith("_length") else value
        if not holds(measured, bound):
            failed.append(f"{words} {bound}")
    return f"{' and '.join(failed)}, got {value!r}" if failed else ""


KAFKA_BROKERS_MAX: Final = 5
KAFKA_NODE_PORT_STEP: Final = 100
"""The local stack's Kafka node n listens on the first node's ports + this x (n - 1)."""
KAFKA_HEAP_MIN_MB: Final = 256


class StackConfig(Section, frozen=True):
    """The local development stack started by ``smallcups dev up`` (a tool's settings: no
    product setting is taken from here)."""

    NAME: ClassVar[str] = "stack"

    state_dir: Annotated[
        str, Meta(min_length=1, description="the local stack's data, logs, pid files and secrets")
    ] = ".smallcups"
    cache_dir: Annotated[str, Meta(min_length=1, description="Maven repository and Kafka jars")] = (
        "~/.cache/smallcups"
    )
    kafka_port: Annotated[
        int, Meta(ge=1024, le=65535, description="the broker's client listener on 127.0.0.1")
    ] = 19092
    kafka_controller_port: Annotated[
        int, Meta(ge=1024, le=65535, description="the KRaft controller's listener")
    ] = 19093
    kafka_brokers: Annotated[
        int,
        Meta(
            ge=1,
            le=KAFKA_BROKERS_MAX,
            description=(
                "KRaft nodes (broker and controller each) on 127.0.0.1; node n > 1 listens on "
                "the first node's ports + 100 x (n - 1)"
            ),
        ),
    ] = 1
    kafka_heap_mb: Annotated[
        int,
        Meta(
            ge=256,
            le=65536,
            description="the brokers' JVM heap, shared equally among them (at least 256 MB each)",
        ),
    ] = 1024
    postgres_port: Annotated[
        int, Meta(ge=1024, le=65535, description="the Postgres cluster on 127.0.0.1")
    ] = 15432
    postgres_bin_dir: Annotated[
        str, Meta(description="Postgres's binaries (empty: Debian's newest)")
    ] = ""
    postgres_user: Annotated[str, Meta(min_length=1, description="the cluster's superuser")] = (
        "smallcups"
    )
    postgres_cups: Annotated[
        int, Meta(ge=1, le=64, description="Postgres cup databases of the local stack")
    ] = 4
    mysql_cups: Annotated[
        int,
        Meta(
            ge=0,
            le=64,
            description=("MariaDB cup databases of the local stack (0: no MariaDB server)"),
        ),
    ] = 2
    mariadb_port: Annotated[
        int, Meta(ge=1024, le=65535, description="the MariaDB server on 127.0.0.1")
    ] = 13306
    mariadb_user: Annotated[
        str, Meta(min_length=1, description="the MariaDB account the cups are reached as")
    ] = "smallcups"
    start_timeout_seconds: Annotated[
        float, Meta(gt=0, le=3600, description="longest wait for a server to answer")
    ] = 90.0
    prometheus: Annotated[
        bool,
        Meta(
            description=(
                "also run a Prometheus server (Debian's prometheus) that scrapes the workers"
            )
        ),
    ] = False
    prometheus_port: Annotated[int, Meta(ge=1024, le=65535, description="the local Prometheus")] = (
        19090
    )
    kafka_proxied_port: Annotated[
        int,
        Meta(
            ge=0,
            le=65535,
            description=(
                "a second broker listener (0: none) advertised as kafka_proxied_advertised_port: "
                "clients that bootstrap through a TCP proxy there keep talking through it (the "
                "chaos suite's network faults)"
            ),
        ),
    ] = 0
    kafka_proxied_advertised_port: Annotated[
        int, Meta(ge=0, le=65535, description="the port the second listener advertises")
    ] = 0
    security: Annotated[
        bool,
        Meta(
            description=(
                "TLS and passwords on every server of the stack, Kafka ACLs per role (false: "
                "plaintext and no passwords, for anyone who needs them)"
            )
        ),
    ] = True

    def check(self) -> None:
        if self.kafka_brokers > 1 and self.kafka_proxied_port:
            raise ConfigError(
                "stack.kafka_proxied_port needs stack.kafka_brokers = 1: one proxy cannot "
                "stand for several brokers"
            )
        proxied = (self.kafka_proxied_port, self.kafka_proxied_advertised_port)
        if any(proxied) and not all(1024 <= port <= 65535 for port in proxied):
            raise ConfigError(
                "stack.kafka_proxied_port and kafka_proxied_advertised_port are set together, "
                f"each in 1024..65535, got {proxied}"
            )

    @property
    def kafka_ports(self) -> list[int]:
        """Each Kafka node's client listener, node 1 first."""
        return [self.kafka_port + KAFKA_NODE_PORT_STEP * n for n in range(self.kafka_brokers)]

    @property
    def kafka_controller_ports(self) -> list[int]:
        """Each Kafka node's controller listener, node 1 first."""
        step = KAFKA_NODE_PORT_STEP
        return [self.kafka_controller_port + step * n for n in range(self.kafka_brokers)]

    @property
    def kafka_bootstrap_servers(self) -> str:
        """Every node of the stack's Kafka, so a client finds the cluster with any one down."""
        return ",".join(f"127.0.0.1:{port}" for port in self.kafka_ports)

    @property
    def kafka_heap_per_broker_mb(self) -> int:
        return max(KAFKA_HEAP_MIN_MB, self.kafka_heap_mb // self.kafka_brokers)

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser().resolve()

    @property
    def secrets_path(self) -> Path:
        """Where ``dev up`` keeps the local stack's keys (mode 0700)."""
        return self.state_path / "secrets"

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser().resolve()

    @property
    def control_dsn(self) -> str:
        return self.database_dsn("smallcups_control")

    def cup_database(self, index: int) -> str:
        return f"smallcups_cup_{index}"

    @property
    def tls_ca_path(self) -> Path:
        """The local stack's CA certificate, which its clients trust (deploy.local.tls)."""
        return self.secrets_path / "tls" / "ca.pem"

    def database_dsn(self, database: str) -> str:
        """A Postgres database of the stack; with security, over TLS (the server verified:
        chain and name) as the role whose password is the credentials ``postgres``."""
        dsn = f"postgresql://{self.postgres_user}@127.0.0.1:{self.postgres_port}/{database}"
        if not self.security:
            return dsn
        ca = quote(str(self.tls_ca_path))
        return f"{dsn}?sslmode=verify-full&sslrootcert={ca}&credentials={POSTGRES_CREDENTIALS}"

    def mysql_dsn(self, database: str) -> str:
        """A MariaDB database of the stack; with security, over TLS (verified as above) as
        the account whose password is the credentials ``mariadb``."""
        dsn = f"mysql://{self.mariadb_user}@127.0.0.1:{self.mariadb_port}/{database}"
        if not self.security:
            return dsn
        return f"{dsn}?ssl_ca={quote(str(self.tls_ca_path))}&credentials={MARIADB_CREDENTIALS}"

    @property
    def postgres_cup_databases(self) -> list[str]:
        return [self.cup_database(i) for i in range(self.postgres_cups)]

    @property
    def mysql_cup_databases(self) -> list[str]:
        """Named apart from the Postgres ones: growing one kind never renames the other."""
        return [f"smallcups_mysql_cup_{i}" for i in range(self.mysql_cups)]

    @property
    def cup_dsns(self) -> list[str]:
        """The Postgres cups, then the MariaDB ones."""
        return [self.database_dsn(name) for name in self.postgres_cup_databases] + [
            self.mysql_dsn(name) for name in self.mysql_cup_databases
        ]


class KafkaSecurityProtocol(enum.StrEnum):
    """How a client talks to the brokers (Kafka's security.protocol)."""

    SASL_SSL = "SASL_SSL"
    """TLS, and a SASL user and password: the default."""
    SSL = "SSL"
    """TLS; the client is known by its certificate (ssl_cert_file), if the broker asks."""
    PLAINTEXT = "PLAINTEXT"
    """Neither: for brokers on a trusted network only."""

    @property
    def tls(self) -> bool:
        return self is not KafkaSecurityProtocol.PLAINTEXT

    @property
    def sasl(self) -> bool:
        return self is KafkaSecurityProtocol.SASL_SSL


class SaslMechanism(enum.StrEnum):
    SCRAM_SHA_512 = "SCRAM-SHA-512"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    PLAIN = "PLAIN"


class KafkaConfig(Section, frozen=True):
    """Where the broker is, who this process is to it, and how the topics are named."""

    NAME: ClassVar[str] = "kafka"

    bootstrap_servers: Annotated[
        str,
        Meta(description="brokers, host:port,...; required by every command that talks to Kafka"),
    ] = ""
    topic_prefix: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=200,
            description="the topics are <prefix>.commands, .results, .dlq",
        ),
    ] = "smallcups"
    partitions: Annotated[
        int,
        Meta(ge=1, le=4096, description="partitions of the topics, set by init; fixed for good"),
    ] = 64
    replication_factor: Annotated[
        int,
        Meta(
            ge=0,
            le=16,
            description="replicas of each topic partition init creates; 0: as many as the"
            " cluster has brokers, at most 3",
        ),
    ] = 0
    min_insync_replicas: Annotated[
        int,
        Meta(
            ge=0,
            le=16,
            description="min.insync.replicas of the topics init creates (acks=all waits for"
            " them); 0: one less than the replication factor, at least 1",
        ),
    ] = 0
    group_id: Annotated[str, Meta(min_length=1, description="the workers' consumer group")] = (
        "smallcups-workers"
    )
    request_timeout_ms: Annotated[
        int, Meta(ge=1000, le=600_000, description="Kafka clients' request timeout")
    ] = 30_000
    security_protocol: Annotated[
        KafkaSecurityProtocol,
        Meta(description="SASL_SSL (TLS and a SASL user), SSL (TLS only) or PLAINTEXT"),
    ] = KafkaSecurityProtocol.SASL_SSL
    sasl_mechanism: Annotated[
        SaslMechanism, Meta(description="SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN")
    ] = SaslMechanism.SCRAM_SHA_512
    sasl_username: Annotated[
        str, Meta(max_length=255, description="the SASL user this process is (its role)")
    ] = ""
    sasl_password_file: Annotated[
        str, Meta(description="a file holding the SASL user's password (never on argv)")
    ] = ""
    sasl_password_env: Annotated[
        str,
        Meta(
            max_length=255,
            description="else: the environment variable holding it (its name, not the password)",
        ),
    ] = ""
    ssl_ca_file: Annotated[
        str, Meta(description="CA certificates (PEM) the brokers' must chain to (empty: system's)")
    ] = ""
    ssl_cert_file: Annotated[
        str, Meta(description="a client certificate (PEM) for brokers that ask for one")
    ] = ""
    ssl_key_file: Annotated[str, Meta(description="the client certificate's key (PEM)")] = ""
    acl_worker_users: Annotated[
        list[str],
        Meta(description="init grants these SASL users the workers' rights (docs/security.md)"),
    ] = msgspec.field(default_factory=lambda: ["worker"])
    acl_upstream_users: Annotated[
        list[str], Meta(description="init grants these SASL users the upstream apps' rights")
    ] = msgspec.field(default_factory=lambda: ["upstream"])
    acl_risk_users: Annotated[
        list[str], Meta(description="init grants these SASL users the risk authority's rights")
    ] = msgspec.field(default_factory=lambda: ["risk"])

    def check(self) -> None:
        if any(c not in _TOPIC_CHARS for c in self.topic_prefix):
            raise ConfigError(f"kafka.topic_prefix {self.topic_prefix!r} is not a valid topic name")
        if bool(self.ssl_cert_file) != bool(self.ssl_key_file):
            raise ConfigError("kafka.ssl_cert_file and kafka.ssl_key_file are set together")
        if self.ssl_cert_file and not self.security_protocol.tls:
            raise ConfigError("kafka.ssl_cert_file needs kafka.security_protocol SSL or SASL_SSL")

    @property
    def upstream_group_prefix(self) -> str:
        """Consumer groups of upstream apps start with this (their ACL is on the prefix)."""
        return f"{self.topic_prefix}.upstream"

    @property
    def commands_topic(self) -> str:
        return f"{self.topic_prefix}.commands"

    @property
    def internal_topic(self) -> str:
        """Saga legs and privileged commands: written only by workers and the risk
        authority, read by workers beside the commands topic (docs/design.md §3)."""
        return f"{self.topic_prefix}.internal"

    @property
    def results_topic(self) -> str:
        return f"{self.topic_prefix}.results"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic_prefix}.dlq"


_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class ShardsConfig(Section, frozen=True):
    """The control database and the cups."""

    NAME: ClassVar[str] = "shards"

    control_dsn: Annotated[
        str,
        Meta(
            description=(
                "the control database (shard map, cups, moves); required by every command that "
                "reads the shard map"
            )
        ),
    ] = ""
    cup_dsns: Annotated[
        list[str],
        Meta(
            description=(
                "the cups' databases, used by init (afterwards the control database knows them)"
            )
        ),
    ] = msgspec.field(default_factory=list)
    pool_size_max: Annotated[
        int, Meta(ge=1, le=64, description="connections per cup and worker")
    ] = 4
    connect_timeout_seconds: Annotated[
        float, Meta(gt=0, le=600, description="longest wait for a database connection")
    ] = 10.0
    credentials_dir: Annotated[
        str,
        Meta(
            description=(
                "a folder of password files, one per credentials name a DSN names "
                "(credentials=NAME); $SMALLCUPS_CREDENTIALS_<NAME> wins"
            )
        ),
    ] = ""

    def check(self) -> None:
        refuse_password(self.control_dsn, "shards.control_dsn")
        for dsn in self.cup_dsns:
            refuse_password(dsn, "a DSN of shards.cup_dsns")


class ResultsEncoding(enum.StrEnum):
    """How results go on the results topic."""

    COMMAND = "command"
    """In the encoding the command came in (JSON for JSON, msgpack for msgpack)."""
    MSGPACK = "msgpack"
    JSON = "json"

    @property
    def json(self) -> bool:
        return self is ResultsEncoding.JSON


class WorkerConfig(Section, frozen=True):
    """Limits of one worker process."""

    NAME: ClassVar[str] = "worker"

    fetch_records_max: Annotated[int, Meta(ge=1, le=100_000, description="records per fetch")] = (
        5000
    )
    fetch_timeout_ms: Annotated[
        int, Meta(ge=1, le=60_000, description="longest wait of a fetch for records")
    ] = 100
    batch_records_max: Annotated[
        int,
        Meta(
            ge=1,
            le=100_000,
            description=(
                "records of one partition in one commit, and of all partitions in one commit "
                "round; a partition holding 4x this waiting pauses its fetching"
            ),
        ),
    ] = 2000
    commits_per_cup_max: Annotated[
        int,
        Meta(
            ge=1,
            le=1000,
            description=(
                "commit rounds one worker has in flight in one cup; a round is one statement "
                "carrying the next batch of every lane of the cup that has records, and lanes "
                "waiting for a round gather more records into their batch"
            ),
        ),
    ] = 2
    accounts_cached_max: Annotated[
        int,
        Meta(
            ge=1000,
            le=100_000_000,
            description=(
                "accounts cached per worker, split over its partitions (a partition whose accounts"
                " all fit is loaded whole)"
            ),
        ),
    ] = 1_000_000
    message_bytes_max: Annotated[
        int, Meta(ge=256, le=1_048_576, description="larger records go to the DLQ undecoded")
    ] = 65_536
    commit_retry_max: Annotated[
        int,
        Meta(
            ge=1,
            le=1000,
            description="attempts of a commit before its partitions are let go and claimed again",
        ),
    ] = 20
    retry_backoff_max_seconds: Annotated[
        float,
        Meta(ge=0.05, le=600, description="the longest back-off between tries (commits, claims)"),
    ] = 5.0
    kafka_offsets_commit_interval_seconds: Annotated[
        float,
        Meta(
            gt=0,
            le=3600,
            description="how often Kafka is told the cups' positions (for lag dashboards only)",
        ),
    ] = 5.0
    outbox_trim_interval_seconds: Annotated[
        float,
        Meta(
            gt=0,
            le=3600,
            description="how often idle partitions' published outbox rows are deleted",
        ),
    ] = 1.0
    handover_flush_seconds: Annotated[
        float,
        Meta(
            gt=0,
            le=600,
            description=(
                "on revoke or stop: the longest wait for committed results to be acknowledged"
            ),
        ),
    ] = 10.0
    metrics_host: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=255,
            description=(
                "address /metrics, /healthz, /readyz listen on (0.0.0.0: every interface, as "
                "in a container)"
            ),
        ),
    ] = "127.0.0.1"
    metrics_port: Annotated[
        int,
        Meta(
            ge=0,
            le=65535,
            description="port of /metrics, /healthz, /readyz (0: any free port, logged)",
        ),
    ] = 0
    metrics_targets_dir: Annotated[
        str, Meta(description="if set, the worker writes a Prometheus file_sd target there")
    ] = ""
    shard_map_poll_seconds: Annotated[
        float,
        Meta(
            ge=0.05,
            le=60,
            description="how often a worker checks the shard map's version when no NOTIFY arrives",
        ),
    ] = 2.0
    results_encoding: Annotated[
        ResultsEncoding,
        Meta(description="results in the command's encoding (command), or all in msgpack or json"),
    ] = ResultsEncoding.COMMAND
    transfer_stuck_seconds: Annotated[
        float,
        Meta(
            ge=1,
            le=86_400,
            description=(
                "a transfer in flight longer is stuck: smallcups_transfers_stuck, alert "
                "SmallcupsTransferStuck, reconcile's no_stuck_transfers"
            ),
        ),
    ] = 300.0
    idempotency_window_seconds: Annotated[
        int,
        Meta(
            ge=1,
            le=10 * 366 * 86_400,
            description=(
                "how long after a command's issued_at_ms its idempotency record is kept; a "
                "command issued earlier is answered id_expired, never applied "
                "(docs/messages.md, Idempotency window)"
            ),
        ),
    ] = 7 * 86_400
    issued_at_skew_max_seconds: Annotated[
        int,
        Meta(
            ge=0,
            le=86_400,
            description="how far in the future of its record's time a command may be issued",
        ),
    ] = 300
    prune_interval_seconds: Annotated[
        float,
        Meta(
            gt=0,
            le=3600,
            description="how often a worker deletes the expired idempotency records of its cups",
        ),
    ] = 1.0
    prune_rows_max: Annotated[
        int,
        Meta(
            ge=1,
            le=100_000,
            description=(
                "expired idempotency records one delete statement removes (small: a delete "
                "never holds a commit back for long); a pass runs a few per partition"
            ),
        ),
    ] = 1000
    relay_stall_max_seconds: Annotated[
        float,
        Meta(
            ge=1,
            le=3600,
            description=(
                "/readyz fails when the relay has had results to publish this long without "
                "getting any through (its oldest unacknowledged send, or failing sends with "
                "no acknowledgement since); longer than kafka.request_timeout_ms, so one slow "
                "request does not flip it"
            ),
        ),
    ] = 60.0
    rebalance_on_flip: Annotated[
        bool,
        Meta(
            description=(
                "the worker that owned a moved partition asks the consumer group to rebalance "
                "after the move's flip, so cup affinity is restored within seconds instead of "
                "at the next membership change (docs/operations.md: what it costs the others)"
            ),
        ),
    ] = True
    rebalance_on_flip_quiet_seconds: Annotated[
        float,
        Meta(
            ge=0,
            le=600,
            description=(
                "after a flip, the rebalance is asked once the shard map has not changed for "
                "this long, so a series of moves (shards rebalance, shards drain) costs one "
                "rebalance at its end, not one inside every later move's pause (moves further "
                "apart than this each get one)"
            ),
        ),
    ] = 5.0


class ArchiveConfig(Section, frozen=True):
    """The journal's periods and ``smallcups archive`` (docs/operations.md, archiving)."""

    NAME: ClassVar[str] = "archive"

    period_seconds: Annotated[
        int,
        Meta(
            ge=60,
            le=366 * 86_400,
            description=(
                "length of a journal period (a partition of each cup's journal), aligned on "
                "multiples of it since the epoch; workers make the current and the next "
                "period's partitions; archive exports and drops whole closed periods"
            ),
        ),
    ] = 86_400
    mysql_user: Annotated[
        str,
        Meta(
            description=(
                "MariaDB cups: the account archive connects as instead of the DSN's, one with "
                "the DROP privilege on the journal (DROP PARTITION needs it; the cups' account "
                "has none); empty: the DSN's account"
            )
        ),
    ] = ""
    mysql_credentials: Annotated[
        str, Meta(description="the credentials name of archive.mysql_user's password")
    ] = ""

    def check(self) -> None:
        if bool(self.mysql_user) != bool(self.mysql_credentials):
            raise ConfigError("archive.mysql_user and archive.mysql_credentials go together")


class SecurityConfig(Section, frozen=True):
    """Where the keys are: files, never the keys themselves (docs/security.md: formats,
    who holds which key, how to rotate)."""

    NAME: ClassVar[str] = "security"

    leg_keys_file: Annotated[
        str,
        Meta(
            description=(
                "workers: the shared secrets that MAC saga legs, one '<key id> <hex>' per line; "
                "the first signs, all verify"
            )
        ),
    ] = ""
    risk_public_keys_file: Annotated[
        str,
        Meta(
            description=(
                "workers: the risk authority's Ed25519 public keys, one '<key id> <hex>' per line"
            )
        ),
    ] = ""
    risk_private_key_file: Annotated[
        str, Meta(description="the risk authority only (smallcups risk): its Ed25519 private key")
    ] = ""


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    stack: StackConfig = msgspec.field(default_factory=StackConfig)
    kafka: KafkaConfig = msgspec.field(default_factory=KafkaConfig)
    shards: ShardsConfig = msgspec.field(default_factory=ShardsConfig)
    worker: WorkerConfig = msgspec.field(default_factory=WorkerConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    archive: ArchiveConfig = msgspec.field(default_factory=ArchiveConfig)

    @property
    def control_dsn(self) -> str:
        return _required(self.shards.control_dsn, "shards.control_dsn")

    @property
    def cup_dsns(self) -> list[str]:
        _required(",".join(self.shards.cup_dsns), "shards.cup_dsns")
        return list(self.shards.cup_dsns)

    @property
    def leg_keys_path(self) -> Path:
        return Path(_required(self.security.leg_keys_file, "security.leg_keys_file")).expanduser()

    @property
    def risk_public_keys_path(self) -> Path:
        path = _required(self.security.risk_public_keys_file, "security.risk_public_keys_file")
        return Path(path).expanduser()

    @property
    def risk_private_key_path(self) -> Path:
        path = _required(self.security.risk_private_key_file, "security.risk_private_key_file")
        return Path(path).expanduser()

    def require_kafka(self) -> KafkaConfig:
        """The Kafka section, for a command that talks to Kafka."""
        _required(self.kafka.bootstrap_servers, "kafka.bootstrap_servers")
        return self.kafka


LOCAL_HINT = (
    "for the local stack, use the settings `smallcups dev up` wrote: "
    "export SMALLCUPS_CONFIG=.smallcups/local.toml"
)


def _required(value: str, name: str) -> str:
    if not value:
        raise ConfigError(f"{name} is not set ({LOCAL_HINT})")
    return value


POSTGRES_CREDENTIALS: Final = "postgres"
MARIADB_CREDENTIALS: Final = "mariadb"
MARIADB_ADMIN_CREDENTIALS: Final = "mariadb-admin"
"""The credentials names of the local stack's database accounts (with stack.security): the
Postgres role, MariaDB's cup account and its administrator (deploy.local.credentials)."""

LEG_KEYS_FILE = "leg-keys"
RISK_PUBLIC_KEYS_FILE = "risk-public-keys"
RISK_PRIVATE_KEY_FILE = "risk-private-key"
"""The key files the local stack writes in ``<state_dir>/secrets`` (``smallcups dev up``)."""


SECTIONS: dict[str, type[Section]] = {
    "stack": StackConfig,
    "kafka": KafkaConfig,
    "shards": ShardsConfig,
    "worker": WorkerConfig,
    "security": SecurityConfig,
    "archive": ArchiveConfig,
}


def load_config(path: str | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read the TOML file (if any), overlay the environment, validate, freeze."""
    env = dict(os.environ if environ is None else environ)
    raw: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    path = path or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open(path, "rb") as file:
                document = tomllib.load(file)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"cannot read config file {path}: {error}") from error
        for section, values in document.items():
            if section not in SECTIONS or not isinstance(values, dict):
                raise ConfigError(f"config file {path}: unknown section [{section}]")
            raw[section].update(values)
    for section, struct in SECTIONS.items():
        for field in struct.__struct_fields__:
            value = env.get(f"{ENV_PREFIX}{section}_{field}".upper())
            if value is not None:
                raw[section][field] = _env_value(value, struct, field)
    try:
        return msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as error:
        raise ConfigError(f"invalid configuration: {error}") from error


def _env_value(value: str, struct: type[msgspec.Struct], field: str) -> Any:
    default = getattr(struct(), field)
    if isinstance(default, list):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def to_environ(config: Config) -> dict[str, str]:
    """The environment that makes a child process load this same configuration."""
    env: dict[str, str] = {}
    for section in SECTIONS:
        part = getattr(config, section)
        for field in part.__struct_fields__:
            value = getattr(part, field)
            text = ",".join(value) if isinstance(value, list) else str(value)
            env[f"{ENV_PREFIX}{section}_{field}".upper()] = text
    return env
