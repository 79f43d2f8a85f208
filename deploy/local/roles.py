"""The local stack's Kafka users, one per role of docs/security.md. Each is a SCRAM-SHA-512
user made when the broker's storage is formatted, named after its role, with its password
in the stack's credentials folder (``kafka-<role>``)."""

from __future__ import annotations

import enum

import msgspec

from deploy.local.credentials import ensure_password, password_file
from deploy.local.tls import ensure_certificates, tls_files
from engine.core.config import (
    MARIADB_ADMIN_CREDENTIALS,
    MARIADB_CREDENTIALS,
    POSTGRES_CREDENTIALS,
    Config,
    KafkaConfig,
    KafkaSecurityProtocol,
    SaslMechanism,
    StackConfig,
)


class Role(enum.StrEnum):
    ADMIN = "admin"
    """Topics and ACLs: the broker's only super user (init, shards, reconcile, the stack)."""
    WORKER = "worker"
    UPSTREAM = "upstream"
    """The apps that publish commands and read results."""
    RISK = "risk"
    """The risk authority, which publishes privileged commands."""

    @property
    def username(self) -> str:
        return self.value

    @property
    def password_name(self) -> str:
        return f"kafka-{self.value}"


def stack_kafka(stack: StackConfig, role: Role, base: KafkaConfig | None = None) -> KafkaConfig:
    """``base`` (default: all defaults) talking to the local stack's brokers as ``role``:
    every node's address where ``base`` has none, and, when the stack is secure, SASL_SSL
    as the role's user with the stack's CA; plaintext when it is not."""
    kafka = base or KafkaConfig()
    bootstrap = kafka.bootstrap_servers or stack.kafka_bootstrap_servers
    if not stack.security:
        return msgspec.structs.replace(
            kafka, bootstrap_servers=bootstrap, security_protocol=KafkaSecurityProtocol.PLAINTEXT
        )
    return msgspec.structs.replace(
        kafka,
        bootstrap_servers=bootstrap,
        security_protocol=KafkaSecurityProtocol.SASL_SSL,
        sasl_mechanism=SaslMechanism.SCRAM_SHA_512,
        sasl_username=role.username,
        sasl_password_file=str(password_file(stack.secrets_path, role.password_name)),
        sasl_password_env="",
        ssl_ca_file=str(tls_files(stack.secrets_path).ca),
    )


def as_role(config: Config, role: Role) -> Config:
    """``config``, a local stack's, as the stack's user ``role`` (a worker started by the
    demo or a test is a ``worker``, its load generator an ``upstream``)."""
    kafka = stack_kafka(config.stack, role, config.kafka)
    return msgspec.structs.replace(config, kafka=kafka)


def ensure_stack_secrets(stack: StackConfig) -> None:
    """The certificates, every Kafka role's password and the databases' passwords, made
    where missing."""
    ensure_certificates(stack.secrets_path)
    names = [role.password_name for role in Role]
    names += [POSTGRES_CREDENTIALS, MARIADB_CREDENTIALS, MARIADB_ADMIN_CREDENTIALS]
    for name in names:
        ensure_password(stack.secrets_path, name)
