"""Observability on real processes: a locust run through the pipeline, promtool on a
scrape of the health server, a real Prometheus scraping it and evaluating every
dashboard and alert expression, and the dev stack's Prometheus."""

from __future__ import annotations

import asyncio
import collections
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import pytest

from deploy.local import ports, prometheus_server
from deploy.local.processes import command_line
from deploy.local.prometheus_throwaway import ThrowawayPrometheus, free_port
from deploy.local.roles import Role, as_role
from deploy.local.stack import format_status, stack_status
from engine.core.config import Config, StackConfig, to_environ
from engine.core.messages import Result, result_decoder
from engine.worker.health import HealthServer
from engine.worker.metrics import WorkerMetrics
from loadtest.system import System, drop_system, make_system
from tests.integration.system import read_topic
from tests.promtool import output, promtool
from tests.unit.promql import rule_expressions

pytestmark = pytest.mark.integration

REPO: Final = Path(__file__).parents[2]
LOCUST: Final = Path(sys.executable).parent / "locust"
LOCUST_USERS: Final = 10
LOCUST_SECONDS: Final = 20
LOCUST_KINDS: Final = (
    "open_account",
    "deposit",
    "withdraw",
    "transfer",
    "transfer (cross-partition)",
    "deposit (amount_not_positive)",
    "deposit (unknown_currency)",
)
SCRAPE_TIMEOUT_SECONDS: Final = 30.0


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=8, cups=2)
    yield made
    await drop_system(stack, made)


class LocustRun:
    """A finished headless locust run: its exit code, output and CSV statistics."""

    def __init__(self, system: System, prefix: Path):
        done = _run_locust(system, prefix)
        self.returncode = done.returncode
        self.stderr = done.stderr
        self.failures = Path(f"{prefix}_failures.csv").read_text()
        with open(f"{prefix}_stats.csv", newline="") as file:
            self.stats = {row["Name"]: row for row in csv.DictReader(file)}


def _run_locust(system: System, prefix: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(LOCUST), "-f", str(REPO / "loadtest" / "locustfile.py"), "--headless",
        "-u", str(LOCUST_USERS), "-r", "5", "-t", f"{LOCUST_SECONDS}s", "--stop-timeout", "10",
        "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    return subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, **to_environ(as_role(system.config, Role.UPSTREAM))},
        capture_output=True,
        text=True,
        timeout=LOCUST_SECONDS + 90,
        check=False,
    )


async def test_locust_drives_the_pipeline_and_invalid_commands_are_rejected(
    system: System, tmp_path: Path
) -> None:
    system.start_worker()
    system.start_worker()
    prefix = tmp_path / "locust"

    run = await asyncio.to_thread(LocustRun, system, prefix)

    problems = f"{run.failures}\n{run.stderr[-3000:]}\n{system.worker_logs()}"
    assert run.returncode == 0, problems
    stats = run.stats
    counts = {name: int(row["Request Count"]) for name, row in stats.items()}
    assert all(row["Failure Count"] == "0" for row in stats.values()), stats
    for kind in LOCUST_KINDS:
        assert counts[f"result {kind}"] > 0, kind
        assert 0 <= counts[f"publish {kind}"] - counts[f"result {kind}"] <= LOCUST_USERS, kind
    assert counts["result transfer"] >= 100

    kafka = system.config.kafka
    results = [result_decoder.decode(r.value) for r in await read_topic(kafka, kafka.results_topic)]
    unique: dict[str, Result] = {result.command_id: result for result in results}
    reasons = collections.Counter(result.reason.value for result in unique.values())
    for reason in ("amount_not_positive", "unknown_currency"):
        assert reasons[reason] >= counts[f"result deposit ({reason})"], reasons


def _sample_metrics() -> WorkerMetrics:
    """A worker registry with a value in every metric."""
    metrics = WorkerMetrics()
    metrics.commands.labels(type="transfer", outcome="accepted").inc(90)
    metrics.commands.labels(type="transfer", outcome="rejected").inc(10)
    metrics.rejections.labels(reason="insufficient_funds").inc(10)
    metrics.dead_letters.labels(reason="undecodable").inc()
    metrics.batch_commands.observe(250)
    metrics.commit_duration.labels(cup="0").observe(0.004)
    metrics.publish_to_commit.observe_many([0.012])
    metrics.publish_to_result.observe_many([0.03])
    metrics.lag.labels(partition="3").set(7)
    metrics.committed_offset.labels(partition="3").set(1200)
    metrics.partitions_owned.set(4)
    metrics.fenced_commits.inc()
    metrics.rebalances.inc(2)
    metrics.outbox_backlog.set(12)
    metrics.cup_up.labels(cup="0").set(1)
    metrics.legs_in_flight.labels(cup="0").set(3)
    metrics.money_in_flight.labels(cup="0", currency="EUR").set(4500)
    return metrics


@pytest.fixture
async def health_server() -> AsyncIterator[HealthServer]:
    server = HealthServer(_sample_metrics().registry, lambda: (True, ""))
    await server.start()
    yield server
    await server.stop()


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


async def test_promtool_finds_no_naming_problem_in_a_scrape(health_server: HealthServer) -> None:
    scrape = await asyncio.to_thread(_fetch, f"{health_server.url}/metrics")
    assert b"smallcups_money_in_flight_minor_units" in scrape

    done = await asyncio.to_thread(promtool, "check", "metrics", stdin=scrape)

    assert done.returncode == 0, output(done)
    assert output(done).strip() == ""


def _grafana_expressions() -> list[str]:
    dashboard = json.loads((REPO / "deploy" / "grafana" / "smallcups.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return [e.replace("$__rate_interval", "1m").replace("$instance", ".*") for e in expressions]


def _check_with_prometheus(folder: Path, target: str) -> None:
    with ThrowawayPrometheus(folder, [target]) as prometheus:
        up = prometheus.wait_for('up{job="smallcups"} == 1', SCRAPE_TIMEOUT_SECONDS)
        assert [sample["metric"]["instance"] for sample in up] == [target]
        owned = prometheus.wait_for("smallcups_partitions_owned", SCRAPE_TIMEOUT_SECONDS)
        assert owned[0]["value"][1] == "4"
        rules = prometheus.api("rules")["groups"]
        loaded = [rule for group in rules for rule in group["rules"]]
        assert len(loaded) == len(rule_expressions(prometheus_server.RULES.read_text()))
        assert all(rule["health"] in ("ok", "unknown") for rule in loaded), loaded
        for expression in [*_grafana_expressions(), *(r["query"] for r in loaded)]:
            prometheus.query(expression)


async def test_a_real_prometheus_scrapes_the_health_server_and_runs_every_query(
    health_server: HealthServer, tmp_path: Path
) -> None:
    target = f"127.0.0.1:{health_server.port}"

    await asyncio.to_thread(_check_with_prometheus, tmp_path / "prometheus", target)

    assert not (tmp_path / "prometheus" / "prometheus.pid").exists()


@pytest.fixture
def side_stack() -> Iterator[StackConfig]:
    """A stack configuration of its own state folder and ports; only Prometheus runs."""
    state = Path(tempfile.mkdtemp(prefix="smallcups-prometheus-"))
    config = StackConfig(
        state_dir=str(state),
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        postgres_port=free_port(),
        prometheus=True,
        prometheus_port=free_port(),
        start_timeout_seconds=60,
    )
    yield config
    prometheus_server.stop_prometheus(config)
    shutil.rmtree(state, ignore_errors=True)


def test_the_dev_stack_runs_its_prometheus_on_loopback(side_stack: StackConfig) -> None:
    pid = prometheus_server.start_prometheus(side_stack)
    prometheus_server.wait_prometheus_ready(side_stack, pid)

    assert prometheus_server.start_prometheus(side_stack) == pid
    status = stack_status(side_stack)
    assert status.prometheus is not None and status.prometheus.healthy
    assert prometheus_server.prometheus_url(side_stack) in format_status(side_stack, status)
    paths = prometheus_server.PrometheusPaths.of(side_stack)
    assert paths.config.read_text() == prometheus_server.render_config()
    assert paths.targets.is_dir()
    listen = f"--web.listen-address=127.0.0.1:{side_stack.prometheus_port}"
    assert listen in command_line(pid)

    prometheus_server.stop_prometheus(side_stack)

    assert prometheus_server.running_prometheus_pid(side_stack) is None
    assert ports.wait_port_closed(side_stack.prometheus_port, timeout_seconds=10)
    status = stack_status(side_stack)
    assert status.prometheus is not None and not status.prometheus.running
