"""How every Kafka client of smallcups reaches the brokers: the addresses and, from the
configuration, TLS (the brokers' certificates verified against ``kafka.ssl_ca_file``,
names included) and the SASL user this process is, its password read from a file or an
environment variable (engine.core.secrets), never from argv.

``connection(kafka)`` is the keyword arguments every aiokafka client takes; every
producer, consumer and admin client the project makes starts from it, so no client can
be made that skips the security settings.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)

from engine.core.config import KafkaConfig
from engine.core.errors import AccessDeniedError, ConfigError
from engine.core.secrets import secret_from

ACCESS_ERRORS: Final = (
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    SaslAuthenticationFailed,
    AuthenticationFailedError,
)
"""What the broker answers a client whose credentials or rights are wrong or revoked."""


def connection(kafka: KafkaConfig, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """aiokafka's connection arguments for ``kafka``; ConfigError when a setting is
    missing or a file cannot be read (never with a secret in it)."""
    if not kafka.bootstrap_servers:
        raise ConfigError("kafka.bootstrap_servers is not set")
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol.value,
    }
    if kafka.security_protocol.tls:
        options["ssl_context"] = ssl_context(kafka)
    if kafka.security_protocol.sasl:
        if not kafka.sasl_username:
            raise ConfigError(
                f"kafka.sasl_username is not set (kafka.security_protocol is "
                f"{kafka.security_protocol.value})"
            )
        password = secret_from(
            kafka.sasl_password_file,
            kafka.sasl_password_env,
            f"the Kafka password of {kafka.sasl_username!r}",
            os.environ if environ is None else environ,
        )
        options.update(
            sasl_mechanism=kafka.sasl_mechanism.value,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=password,
        )
    return options


def ssl_context(kafka: KafkaConfig) -> ssl.SSLContext:
    """Verifies the brokers' chain and names; presents the client certificate if set."""
    ca = kafka.ssl_ca_file
    try:
        context = ssl.create_default_context(cafile=str(Path(ca).expanduser()) if ca else None)
        if kafka.ssl_cert_file:
            context.load_cert_chain(
                str(Path(kafka.ssl_cert_file).expanduser()),
                str(Path(kafka.ssl_key_file).expanduser()),
            )
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            f"cannot load Kafka's TLS files (kafka.ssl_ca_file {ca!r}, kafka.ssl_cert_file "
            f"{kafka.ssl_cert_file!r}): {type(error).__name__}: {error.strerror or error}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def access_denied(kafka: KafkaConfig, error: BaseException) -> AccessDeniedError:
    """The error that stops a process the broker refused (``error`` in ACCESS_ERRORS)."""
    who = kafka.sasl_username or "this client"
    return AccessDeniedError(
        f"Kafka refused {who!r}: {type(error).__name__}: {error}; its credentials or ACLs "
        "were revoked or never granted (docs/security.md lists each role's rights)"
    )
