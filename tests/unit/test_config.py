"""The configuration: limits checked however a section is built, no fallback to the local
stack, and a reference table generated from the types."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.local.config import local_config, write_local_config
from engine.core.config import (
    Config,
    ResultsEncoding,
    StackConfig,
    WorkerConfig,
    load_config,
    to_environ,
)
from engine.core.errors import ConfigError
from scripts.config_table import main as config_table_main

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_reference_table_is_current() -> None:
    assert config_table_main(["--check", str(DOCUMENT)]) == 0, "run `make docs`"


def test_limits_hold_when_a_section_is_built_in_code_or_loaded() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("worker.batch_records_max must be >= 1, got 0")
    ):
        WorkerConfig(batch_records_max=0)
    with pytest.raises(ConfigError, match=re.escape("stack.kafka_port must be >= 1024")):
        StackConfig(kafka_port=80)
    with pytest.raises(ConfigError, match="batch_records_max"):
        load_config(environ={"SMALLCUPS_WORKER_BATCH_RECORDS_MAX": "0"})
    loaded = load_config(environ={"SMALLCUPS_WORKER_RESULTS_ENCODING": "json"})
    assert loaded.worker.results_encoding is ResultsEncoding.JSON


Read = Callable[[Config], object]


@pytest.mark.parametrize(
    "read",
    [
        lambda c: c.control_dsn,
        lambda c: c.cup_dsns,
        lambda c: c.leg_keys_path,
        lambda c: c.risk_public_keys_path,
        lambda c: c.risk_private_key_path,
        lambda c: c.require_kafka(),
    ],
)
def test_no_setting_falls_back_to_the_local_stack(read: Read) -> None:
    with pytest.raises(ConfigError, match=re.escape("SMALLCUPS_CONFIG=.smallcups/local.toml")):
        read(load_config(environ={}))


def test_the_local_stack_fills_in_its_settings_explicitly(tmp_path: Path) -> None:
    stack = StackConfig(state_dir=str(tmp_path), kafka_port=29092, postgres_port=25432)
    config = local_config(stack)
    assert config.require_kafka().bootstrap_servers == "127.0.0.1:29092"
    assert ":25432/smallcups_control?sslmode=verify-full&" in config.control_dsn
    assert config.shards.credentials_dir == str(tmp_path / "secrets" / "credentials")
    assert config.leg_keys_path == tmp_path / "secrets" / "leg-keys"
    path = write_local_config(stack)
    loaded = load_config(environ={"SMALLCUPS_CONFIG": str(path)})
    assert (loaded.kafka, loaded.shards, loaded.security) == (
        config.kafka,
        config.shards,
        config.security,
    )
    assert load_config(environ=to_environ(config)) == config
    elsewhere = "postgresql://ledger@db.example/control"
    chosen = local_config(stack, Config(shards=config.shards.__class__(control_dsn=elsewhere)))
    assert chosen.control_dsn == elsewhere, "what a configuration sets is kept"
