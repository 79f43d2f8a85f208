"""A Prometheus server on 127.0.0.1 that scrapes smallcups processes (Debian's binary).

Two users:

- ``smallcups dev up`` with ``stack.prometheus = true``: one server per state folder, on
  ``stack.prometheus_port``, kept running like the broker and the cluster;
- tests: ``ThrowawayPrometheus`` (deploy/local/prometheus_throwaway.py), on a free port.

Layout of a server's folder (``<state_dir>/prometheus`` for the stack): ``prometheus.yml``
and ``rules/`` copied from deploy/prometheus, ``targets/`` (file-based discovery: drop a
``*.json`` there, see ``write_targets``), ``data/``, ``prometheus.log``, ``prometheus.pid``.
The configuration is deploy/prometheus/prometheus.yml itself: its relative paths resolve
against the folder it is copied to, so only the scrape interval is ever rewritten.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from deploy.local import ports
from deploy.local.processes import (
    ensure_same_settings,
    failure,
    process_is_ours,
    read_pid_file,
    remove_file,
    stop_process,
    wait_exec_settled,
    write_pid_file,
)
from engine.core.config import StackConfig
from engine.core.errors import ConfigError, StackError

ASSETS: Final = Path(__file__).parents[1] / "prometheus"
CONFIG_TEMPLATE: Final = ASSETS / "prometheus.yml"
RULES: Final = ASSETS / "rules" / "smallcups.rules.yml"
RETENTION: Final = "7d"
STOP_GRACE_SECONDS: Final = 30.0
PROBE_TIMEOUT_SECONDS: Final = 2.0
READY_POLL_SECONDS: Final = 0.25
LOOPBACK_HOSTS: Final = frozenset(["127.0.0.1", "localhost"])
_INTERVAL_KEYS: Final = ("scrape_interval", "scrape_timeout", "evaluation_interval")


@dataclass(frozen=True, slots=True)
class PrometheusPaths:
    root: Path

    @classmethod
    def of(cls, config: StackConfig) -> PrometheusPaths:
        return cls(config.state_path / "prometheus")

    @property
    def config(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def rules(self) -> Path:
        return self.root / "rules" / RULES.name

    @property
    def targets(self) -> Path:
        return self.root / "targets"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "prometheus.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "prometheus.pid"


def render_config(scrape_interval_seconds: int | None = None) -> str:
    """deploy/prometheus/prometheus.yml, with every global interval set to the one given."""
    text = CONFIG_TEMPLATE.read_text(encoding="utf-8")
    if scrape_interval_seconds is None:
        return text
    if not 1 <= scrape_interval_seconds <= 300:
        raise ConfigError(f"scrape interval must be in 1..300 s, got {scrape_interval_seconds}")
    for key in _INTERVAL_KEYS:
        pattern = re.compile(rf"^(  {key}:) \S+$", re.MULTILINE)
        text, count = pattern.subn(rf"\g<1> {scrape_interval_seconds}s", text)
        if count != 1:
            raise StackError(f"{CONFIG_TEMPLATE} must set global {key} exactly once")
    return text


def write_targets(
    targets_dir: Path, name: str, addresses: Sequence[str], labels: Mapping[str, str] | None = None
) -> Path:
    """Write ``<targets_dir>/<name>.json`` for file-based discovery, atomically.

    Addresses are ``host:port`` on the loopback interface (the local stack never scrapes
    another machine). An empty list removes the file.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise ConfigError(f"target file name {name!r} must be 1..64 of [A-Za-z0-9_.-]")
    for address in addresses:
        host, _, port = address.rpartition(":")
        if host not in LOOPBACK_HOSTS or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"scrape target {address!r} is not 127.0.0.1:PORT")
    path = targets_dir / f"{name}.json"
    if not addresses:
        remove_file(path)
        return path
    targets_dir.mkdir(parents=True, exist_ok=True)
    document = [{"targets": list(addresses), "labels": dict(labels or {})}]
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def find_prometheus() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        raise StackError(
            "prometheus is not on PATH: run `make prometheus-tools` (Debian's prometheus package)"
        )
    return binary


def prepare_folder(paths: PrometheusPaths, config_text: str) -> None:
    """Write the configuration and the rules; create the targets and data folders."""
    for folder in (paths.rules.parent, paths.targets, paths.data):
        folder.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(config_text, encoding="utf-8")
    shutil.copyfile(RULES, paths.rules)


def spawn(paths: PrometheusPaths, port: int) -> int:
    """Start Prometheus in its own session (it outlives its starter); return its pid."""
    binary = find_prometheus()
    command = [
        binary,
        f"--config.file={paths.config}",
        f"--storage.tsdb.path={paths.data}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address={ports.HOST}:{port}",
    ]
    output_flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    pid = os.posix_spawn(
        binary,
        command,
        dict(os.environ),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(paths.log), output_flags, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )
    write_pid_file(paths.pid_file, pid)
    wait_exec_settled(pid)
    return pid


def answers(port: int) -> bool:
    """True when the server on 127.0.0.1:``port`` says it is ready to serve queries."""
    url = f"http://{ports.HOST}:{port}/-/ready"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_SECONDS) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(paths: PrometheusPaths, pid: int, port: int, timeout_seconds: float) -> None:
    """Poll until the server is ready; on failure stop it and raise with its log's tail."""
    deadline = time.monotonic() + timeout_seconds
    while not answers(port):
        if not process_is_ours(pid, str(paths.config)):
            remove_file(paths.pid_file)
            raise failure(f"Prometheus (pid {pid}) exited", paths.log)
        if time.monotonic() >= deadline:
            stop_process(pid, str(paths.config), STOP_GRACE_SECONDS)
            remove_file(paths.pid_file)
            raise failure(f"Prometheus did not get ready within {timeout_seconds:.0f} s", paths.log)
        time.sleep(READY_POLL_SECONDS)


def stop(paths: PrometheusPaths) -> None:
    pid = read_pid_file(paths.pid_file)
    if pid is not None and process_is_ours(pid, str(paths.config)):
        stop_process(pid, str(paths.config), STOP_GRACE_SECONDS)
    remove_file(paths.pid_file)


def running_prometheus_pid(config: StackConfig) -> int | None:
    """The pid of this state folder's Prometheus when it runs, else None."""
    paths = PrometheusPaths.of(config)
    pid = read_pid_file(paths.pid_file)
    return pid if process_is_ours(pid, str(paths.config)) else None


def prometheus_url(config: StackConfig) -> str:
    return f"http://{ports.HOST}:{config.prometheus_port}"


def start_prometheus(config: StackConfig) -> int:
    """Start the stack's Prometheus unless it runs already; return its pid (not yet ready)."""
    paths = PrometheusPaths.of(config)
    settings = render_config()
    pid = running_prometheus_pid(config)
    if pid is not None:
        ensure_same_settings(paths.config, settings, "Prometheus server")
        ensure_same_settings(paths.rules, RULES.read_text(encoding="utf-8"), "Prometheus server")
        return pid
    remove_file(paths.pid_file)
    find_prometheus()
    ports.ensure_port_free(config.prometheus_port, "stack.prometheus_port")
    prepare_folder(paths, settings)
    return spawn(paths, config.prometheus_port)


def wait_prometheus_ready(config: StackConfig, pid: int) -> None:
    paths = PrometheusPaths.of(config)
    wait_ready(paths, pid, config.prometheus_port, config.start_timeout_seconds)


def stop_prometheus(config: StackConfig) -> None:
    """SIGTERM the stack's Prometheus (it flushes its head block), SIGKILL after a grace."""
    stop(PrometheusPaths.of(config))
