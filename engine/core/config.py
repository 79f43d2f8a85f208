"""One frozen, typed configuration for every smallcups process.

Loaded once at start-up from an optional TOML file and the environment (the
environment wins), then passed down: each component receives only its own part.

Environment variables are ``SMALLCUPS_<SECTION>_<FIELD>`` in upper case, for example
``SMALLCUPS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092`` or ``SMALLCUPS_STACK_CUPS=8``.
List fields take comma-separated values. The TOML file is named by ``--config`` or
``SMALLCUPS_CONFIG`` and has one table per section (``[kafka]``, ``[stack]``, ...).
"""

from __future__ import annotations

import enum
import os
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from engine.core.errors import ConfigError

ENV_PREFIX = "SMALLCUPS_"


class StackConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The local development stack started by ``smallcups dev up``."""

    state_dir: str = ".smallcups"
    cache_dir: str = "~/.cache/smallcups"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_heap_mb: int = 1024
    postgres_port: int = 15432
    postgres_bin_dir: str = ""
    postgres_user: str = "smallcups"
    cups: int = 4
    start_timeout_seconds: float = 90.0
    prometheus: bool = False
    """Also run a Prometheus server (Debian's ``prometheus``) that scrapes the workers."""
    prometheus_port: int = 19090
    kafka_proxied_port: int = 0
    """A second broker listener (0: none) whose address is advertised as
    ``kafka_proxied_advertised_port``: clients that bootstrap through a TCP proxy on that
    port keep talking through it (the chaos suite's network faults)."""
    kafka_proxied_advertised_port: int = 0

    def __post_init__(self) -> None:
        for name in ("kafka_port", "kafka_controller_port", "postgres_port", "prometheus_port"):
            port = getattr(self, name)
            if not 1024 <= port <= 65535:
                raise ConfigError(f"stack.{name} must be in 1024..65535, got {port}")
        proxied = (self.kafka_proxied_port, self.kafka_proxied_advertised_port)
        if any(proxied) and not all(1024 <= port <= 65535 for port in proxied):
            raise ConfigError(
                "stack.kafka_proxied_port and kafka_proxied_advertised_port are set together, "
                f"each in 1024..65535, got {proxied}"
            )
        if not 1 <= self.cups <= 64:
            raise ConfigError(f"stack.cups must be in 1..64, got {self.cups}")
        if self.kafka_heap_mb < 256:
            raise ConfigError(f"stack.kafka_heap_mb must be >= 256, got {self.kafka_heap_mb}")

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

    def database_dsn(self, database: str) -> str:
        return f"postgresql://{self.postgres_user}@127.0.0.1:{self.postgres_port}/{database}"

    @property
    def cup_dsns(self) -> list[str]:
        return [self.database_dsn(self.cup_database(i)) for i in range(self.cups)]


class KafkaConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the broker is and how the topics are named (empty servers: the local stack's)."""

    bootstrap_servers: str = ""
    topic_prefix: str = "smallcups"
    partitions: int = 64
    group_id: str = "smallcups-workers"
    request_timeout_ms: int = 30_000

    def __post_init__(self) -> None:
        if not 1 <= self.partitions <= 4096:
            raise ConfigError(f"kafka.partitions must be in 1..4096, got {self.partitions}")
        if not self.topic_prefix or any(c not in _TOPIC_CHARS for c in self.topic_prefix):
            raise ConfigError(f"kafka.topic_prefix {self.topic_prefix!r} is not a valid topic name")

    @property
    def commands_topic(self) -> str:
        return f"{self.topic_prefix}.commands"

    @property
    def results_topic(self) -> str:
        return f"{self.topic_prefix}.results"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic_prefix}.dlq"


_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class ShardsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The control database and the cups. Empty values mean: the local stack's."""

    control_dsn: str = ""
    cup_dsns: list[str] = msgspec.field(default_factory=list)
    pool_size_max: int = 4
    connect_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.pool_size_max <= 64:
            raise ConfigError(f"shards.pool_size_max must be in 1..64, got {self.pool_size_max}")


class ResultsEncoding(enum.StrEnum):
    """How results go on the results topic."""

    COMMAND = "command"
    """In the encoding the command came in (JSON for JSON, msgpack for msgpack)."""
    MSGPACK = "msgpack"
    JSON = "json"

    @property
    def json(self) -> bool:
        return self is ResultsEncoding.JSON


class WorkerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Limits of one worker process (see the README's configuration table)."""

    fetch_records_max: int = 5000
    fetch_timeout_ms: int = 100
    batch_records_max: int = 2000
    """Most records of one partition in one commit, and of all partitions in one commit
    round (a lane pauses fetching at 4x this)."""
    commits_per_cup_max: int = 2
    """Most commit rounds one worker has in flight in one cup; a round is one statement
    carrying the next batch of every lane of the cup that waits (engine.worker.lane). Lanes
    waiting for a round take in more records, so their batches are larger: fewer, bigger
    commits when many partitions trickle in, instead of one tiny transaction each."""
    accounts_cached_max: int = 1_000_000
    message_bytes_max: int = 65_536
    commit_retry_max: int = 20
    retry_backoff_max_seconds: float = 5.0
    kafka_offsets_commit_interval_seconds: float = 5.0
    outbox_trim_interval_seconds: float = 1.0
    handover_flush_seconds: float = 10.0
    metrics_port: int = 0
    """Port of /metrics, /healthz, /readyz on 127.0.0.1 (0: any free port, logged)."""
    metrics_targets_dir: str = ""
    """If set, the worker writes a Prometheus file_sd target there (the local stack's)."""
    shard_map_poll_seconds: float = 2.0
    """How often a worker checks the shard map's version when no NOTIFY arrives."""
    results_encoding: ResultsEncoding = ResultsEncoding.COMMAND
    """Results in the command's encoding (``command``), or all in ``msgpack`` or ``json``."""
    transfer_stuck_seconds: float = 300.0
    """A transfer in flight longer than this is stuck: counted in
    ``smallcups_transfers_stuck`` (alert SmallcupsTransferStuck) and reported by
    ``smallcups reconcile``."""

    def __post_init__(self) -> None:
        if not 1 <= self.fetch_records_max <= 100_000:
            raise ConfigError("worker.fetch_records_max must be in 1..100000")
        if not 1 <= self.batch_records_max <= 100_000:
            raise ConfigError("worker.batch_records_max must be in 1..100000")
        if not 1 <= self.commits_per_cup_max <= 1_000:
            raise ConfigError("worker.commits_per_cup_max must be in 1..1000")
        if self.accounts_cached_max < 1_000:
            raise ConfigError("worker.accounts_cached_max must be >= 1000")
        if not 256 <= self.message_bytes_max <= 1_048_576:
            raise ConfigError("worker.message_bytes_max must be in 256..1048576")
        if self.commit_retry_max < 1:
            raise ConfigError("worker.commit_retry_max must be >= 1")
        if not 0.05 <= self.shard_map_poll_seconds <= 60:
            raise ConfigError("worker.shard_map_poll_seconds must be in 0.05..60")
        if not 1 <= self.transfer_stuck_seconds <= 86_400:
            raise ConfigError("worker.transfer_stuck_seconds must be in 1..86400")


class SecurityConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the keys are (files, never the keys themselves; empty: the local stack's).

    See docs/security.md for the file formats, who holds which key and how to rotate."""

    leg_keys_file: str = ""
    """Workers: the shared secrets that MAC saga legs, one ``<key id> <hex>`` per line;
    the first signs, all verify."""
    risk_public_keys_file: str = ""
    """Workers: the risk authority's Ed25519 public keys, ``<key id> <hex>`` per line."""
    risk_private_key_file: str = ""
    """The risk authority only (``smallcups risk``): its Ed25519 private key."""


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    stack: StackConfig = msgspec.field(default_factory=StackConfig)
    kafka: KafkaConfig = msgspec.field(default_factory=KafkaConfig)
    shards: ShardsConfig = msgspec.field(default_factory=ShardsConfig)
    worker: WorkerConfig = msgspec.field(default_factory=WorkerConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)

    @property
    def control_dsn(self) -> str:
        return self.shards.control_dsn or self.stack.control_dsn

    @property
    def cup_dsns(self) -> list[str]:
        return list(self.shards.cup_dsns) or self.stack.cup_dsns

    @property
    def leg_keys_path(self) -> Path:
        return _path_or(self.security.leg_keys_file, self.stack.secrets_path / LEG_KEYS_FILE)

    @property
    def risk_public_keys_path(self) -> Path:
        default = self.stack.secrets_path / RISK_PUBLIC_KEYS_FILE
        return _path_or(self.security.risk_public_keys_file, default)

    @property
    def risk_private_key_path(self) -> Path:
        default = self.stack.secrets_path / RISK_PRIVATE_KEY_FILE
        return _path_or(self.security.risk_private_key_file, default)


LEG_KEYS_FILE = "leg-keys"
RISK_PUBLIC_KEYS_FILE = "risk-public-keys"
RISK_PRIVATE_KEY_FILE = "risk-private-key"
"""The key files the local stack writes in ``<state_dir>/secrets`` (``smallcups dev up``)."""


def _path_or(configured: str, default: Path) -> Path:
    return Path(configured).expanduser() if configured else default


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "stack": StackConfig,
    "kafka": KafkaConfig,
    "shards": ShardsConfig,
    "worker": WorkerConfig,
    "security": SecurityConfig,
}


def load_config(path: str | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read the TOML file (if any), overlay the environment, validate, freeze."""
    env = dict(os.environ if environ is None else environ)
    raw: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    path = path or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open(path, "rb") as file:
                document = tomllib.load(file)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"cannot read config file {path}: {error}") from error
        for section, values in document.items():
            if section not in _SECTIONS or not isinstance(values, dict):
                raise ConfigError(f"config file {path}: unknown section [{section}]")
            raw[section].update(values)
    for section, struct in _SECTIONS.items():
        for field in struct.__struct_fields__:
            value = env.get(f"{ENV_PREFIX}{section}_{field}".upper())
            if value is not None:
                raw[section][field] = _env_value(value, struct, field)
    try:
        config = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as error:
        raise ConfigError(f"invalid configuration: {error}") from error
    if not config.kafka.bootstrap_servers:
        local = f"127.0.0.1:{config.stack.kafka_port}"
        kafka = msgspec.structs.replace(config.kafka, bootstrap_servers=local)
        config = msgspec.structs.replace(config, kafka=kafka)
    return config


def _env_value(value: str, struct: type[msgspec.Struct], field: str) -> Any:
    default = getattr(struct(), field)
    if isinstance(default, list):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def to_environ(config: Config) -> dict[str, str]:
    """The environment that makes a child process load this same configuration."""
    env: dict[str, str] = {}
    for section in _SECTIONS:
        part = getattr(config, section)
        for field in part.__struct_fields__:
            value = getattr(part, field)
            text = ",".join(value) if isinstance(value, list) else str(value)
            env[f"{ENV_PREFIX}{section}_{field}".upper()] = text
    return env
