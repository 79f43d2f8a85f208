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
from engine.core.config import (
    LEG_KEYS_FILE,
    RISK_PRIVATE_KEY_FILE,
    RISK_PUBLIC_KEYS_FILE,
    Config,
    StackConfig,
)

LOCAL_CONFIG_FILE: Final = "local.toml"


def local_config(stack: StackConfig, base: Config | None = None) -> Config:
    """``base`` (default: all defaults) with the local stack ``stack`` and, where ``base``
    leaves them empty, the local stack's brokers, databases (and the folder of their
    passwords) and key files."""
    base = base or Config()
    kafka = base.kafka
    if not kafka.bootstrap_servers:
        kafka = msgspec.structs.replace(kafka, bootstrap_servers=f"127.0.0.1:{stack.kafka_port}")
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
    """``<state_dir>/local.toml``: the connection settings of the local stack."""
    config = local_config(stack)
    document: dict[str, dict[str, str | list[str]]] = {
        "stack": {"state_dir": str(stack.state_path)},
        "kafka": {"bootstrap_servers": config.kafka.bootstrap_servers},
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
        "# The local stack's settings, written by `smallcups dev up`:",
        "#   export SMALLCUPS_CONFIG=" + str(stack.state_path / LOCAL_CONFIG_FILE),
    ]
    for section, values in document.items():
        lines.append(f"\n[{section}]")
        lines += [f"{name} = {_toml_value(value)}" for name, value in values.items()]
    path = stack.state_path / LOCAL_CONFIG_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml_value(value: str | list[str]) -> str:
    """A TOML string or array of strings (JSON's string escapes are TOML's)."""
    return msgspec.json.encode(value).decode()
