"""The product's settings for the local stack, filled in explicitly.

Nothing in the product falls back to the local stack: a command that talks to Kafka or a
database needs its settings. The local stack provides them here: ``local_config`` fills
a configuration's empty connection settings (brokers, control and cup DSNs, the folder of
the databases' passwords, key files) with the local stack's, and ``smallcups dev up``
writes them to ``<state_dir>/local.toml`` for commands run by hand
(``export SMALLCUPS_CONFIG=.smallcups/local.toml``). The demo, the bench and the tests
call ``local_config`` themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import msgspec

from deploy.local.credentials import credentials_folder
from deploy.local.roles import Role, stack_kafka
from engine.core.config import (
    LEG_KEYS_FILE,
    RISK_PRIVATE_KEY_FILE,
    RISK_PUBLIC_KEYS_FILE,
    Config,
    StackConfig,
)

LOCAL_CONFIG_FILE: Final = "local.toml"


def local_config(stack: StackConfig, base: Config | None = None, role: Role = Role.ADMIN) -> Config:
    """``base`` (default: all defaults) with the local stack ``stack`` and, where ``base``
    leaves them empty, the local stack's brokers, databases (and the folder of their
    passwords) and key files; it talks to Kafka as the stack's user ``role`` (the
    operator's ``admin`` unless told)."""
    base = base or Config()
    kafka = base.kafka
    if not kafka.bootstrap_servers or not kafka.sasl_username:
        kafka = stack_kafka(stack, role, kafka)
    shards = base.shards
    if not shards.control_dsn:
        shards = msgspec.structs.replace(shards, control_dsn=stack.control_dsn)
    if not shards.cup_dsns:
        shards = msgspec.structs.replace(shards, cup_dsns=stack.cup_dsns)
    if not shards.credentials_dir:
        credentials = str(credentials_folder(stack.secrets_path))
        shards = msgspec.structs.replace(shards, credentials_dir=credentials)
    security = base.security
    secrets = stack.secrets_path
    security = msgspec.structs.replace(
        security,
        leg_keys_file=security.leg_keys_file or str(secrets / LEG_KEYS_FILE),
        risk_public_keys_file=security.risk_public_keys_file
        or str(secrets / RISK_PUBLIC_KEYS_FILE),
        risk_private_key_file=security.risk_private_key_file
        or str(secrets / RISK_PRIVATE_KEY_FILE),
    )
    return msgspec.structs.replace(base, stack=stack, kafka=kafka, shards=shards, security=security)


def write_local_config(stack: StackConfig) -> Path:
    """``<state_dir>/local.toml``: the connection settings of the local stack, as the
    operator (``admin``); ``local-<role>.toml`` beside it for each other role (a worker
    run by hand: ``SMALLCUPS_CONFIG=.smallcups/local-worker.toml smallcups worker``)."""
    for role in Role:
        path = stack.state_path / local_config_file(role)
        path.write_text(_local_toml(stack, role), encoding="utf-8")
    return stack.state_path / LOCAL_CONFIG_FILE


def local_config_file(role: Role) -> str:
    return LOCAL_CONFIG_FILE if role is Role.ADMIN else f"local-{role.value}.toml"


def _local_toml(stack: StackConfig, role: Role) -> str:
    config = local_config(stack, role=role)
    kafka = config.kafka
    document: dict[str, dict[str, str | list[str]]] = {
        "stack": {"state_dir": str(stack.state_path)},
        "kafka": {
            "bootstrap_servers": kafka.bootstrap_servers,
            "security_protocol": kafka.security_protocol.value,
            "sasl_username": kafka.sasl_username,
            "sasl_password_file": kafka.sasl_password_file,
            "ssl_ca_file": kafka.ssl_ca_file,
        },
        "shards": {
            "control_dsn": config.shards.control_dsn,
            "cup_dsns": config.shards.cup_dsns,
            "credentials_dir": config.shards.credentials_dir,
        },
        "security": {
            "leg_keys_file": config.security.leg_keys_file,
            "risk_public_keys_file": config.security.risk_public_keys_file,
            "risk_private_key_file": config.security.risk_private_key_file,
        },
    }
    lines = [
        f"# The local stack's settings as its Kafka user {role.value!r}, written by "
        "`smallcups dev up`:",
        "#   export SMALLCUPS_CONFIG=" + str(stack.state_path / local_config_file(role)),
    ]
    for section, values in document.items():
        lines.append(f"\n[{section}]")
        lines += [f"{name} = {_toml_value(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: str | list[str]) -> str:
    """A TOML string or array of strings (JSON's string escapes are TOML's)."""
    return msgspec.json.encode(value).decode()
