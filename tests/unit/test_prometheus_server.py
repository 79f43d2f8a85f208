"""Pure parts of the local Prometheus: rendered config, target files, stack wiring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.local import prometheus_server
from deploy.local.prometheus_server import PrometheusPaths, render_config, write_targets
from deploy.local.stack import ServiceStatus, StackStatus, format_status, stack_ports
from engine.core.config import StackConfig, load_config
from engine.core.errors import ConfigError

CONFIG = StackConfig(state_dir="/state", prometheus=True, prometheus_port=29090)


def test_the_config_is_the_deployed_file_with_its_relative_paths() -> None:
    text = render_config()

    assert text == prometheus_server.CONFIG_TEMPLATE.read_text()
    assert "  - rules/smallcups.rules.yml" in text
    assert "targets/*.json" in text
    assert "job_name: smallcups" in text


def test_a_scrape_interval_rewrites_every_global_interval() -> None:
    text = render_config(1)

    assert "  scrape_interval: 1s\n" in text
    assert "  scrape_timeout: 1s\n" in text
    assert "  evaluation_interval: 1s\n" in text
    changed = [
        (old, new)
        for old, new in zip(render_config().splitlines(), text.splitlines(), strict=True)
        if old != new
    ]
    assert len(changed) == 3
    with pytest.raises(ConfigError):
        render_config(0)


def test_target_files_list_loopback_addresses(tmp_path: Path) -> None:
    path = write_targets(tmp_path / "targets", "workers", ["127.0.0.1:9101"], {"stack": "local"})

    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:9101"], "labels": {"stack": "local"}}
    ]
    assert [p.name for p in path.parent.iterdir()] == ["workers.json"]
    write_targets(tmp_path / "targets", "workers", [])
    assert not path.exists()
    for bad in ("10.0.0.5:9101", "127.0.0.1", "127.0.0.1:0", "example.com:80"):
        with pytest.raises(ConfigError, match=r"127\.0\.0\.1:PORT"):
            write_targets(tmp_path, "workers", [bad])
    with pytest.raises(ConfigError, match="file name"):
        write_targets(tmp_path, "../escape", ["127.0.0.1:9101"])


def test_the_stack_folder_layout() -> None:
    paths = PrometheusPaths.of(CONFIG)

    assert paths.root == Path("/state/prometheus")
    assert paths.rules == Path("/state/prometheus/rules/smallcups.rules.yml")
    assert paths.targets == Path("/state/prometheus/targets")
    assert prometheus_server.prometheus_url(CONFIG) == "http://127.0.0.1:29090"


def test_prometheus_is_opt_in_and_its_port_joins_the_stack() -> None:
    assert "stack.prometheus_port" not in stack_ports(StackConfig())
    assert stack_ports(CONFIG)["stack.prometheus_port"] == 29090
    with pytest.raises(ConfigError, match="must all differ"):
        stack_ports(StackConfig(prometheus=True, prometheus_port=19092))
    with pytest.raises(ConfigError, match="prometheus_port"):
        StackConfig(prometheus_port=80)

    environment = {"SMALLCUPS_STACK_PROMETHEUS": "true", "SMALLCUPS_STACK_PROMETHEUS_PORT": "19191"}
    loaded = load_config(environ=environment).stack
    assert (loaded.prometheus, loaded.prometheus_port) == (True, 19191)
    assert not load_config(environ={}).stack.prometheus


def test_status_prints_the_prometheus_url_and_its_health() -> None:
    up = ServiceStatus("kafka", 1, True)
    status = StackStatus(
        up, ServiceStatus("postgres", 2, True), ServiceStatus("prometheus", None, False)
    )
    text = format_status(CONFIG, status)

    assert "prometheus stopped, not answering" in text
    assert "http://127.0.0.1:29090" in text
    assert "/state/prometheus/targets/*.json" in text
    assert not status.healthy
    assert StackStatus(up, ServiceStatus("postgres", 2, True)).healthy
