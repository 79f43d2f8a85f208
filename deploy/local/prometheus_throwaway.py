"""A Prometheus for one test: its own folder, a free port on 127.0.0.1, given targets.

    with ThrowawayPrometheus(tmp_path / "prometheus", ["127.0.0.1:9101"]) as prometheus:
        prometheus.wait_for('up{job="smallcups"} == 1', timeout_seconds=30)
        samples = prometheus.query("smallcups_partitions_owned")

It runs deploy/prometheus/prometheus.yml and the alert rules like the stack's server, with
every interval shortened to ``scrape_interval_seconds``. ``query`` and ``wait_for`` block:
from async code call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from deploy.local import ports, prometheus_server
from deploy.local.prometheus_server import PrometheusPaths
from engine.core.errors import ConfigError, StackError

START_TIMEOUT_SECONDS: Final = 60.0
QUERY_TIMEOUT_SECONDS: Final = 10.0
WAIT_POLL_SECONDS: Final = 0.5
TARGETS_NAME: Final = "smallcups"


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick; another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((ports.HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class ThrowawayPrometheus:
    def __init__(self, folder: Path, targets: Sequence[str], scrape_interval_seconds: int = 1):
        self.paths = PrometheusPaths(folder.resolve())
        self.targets = list(targets)
        self.config_text = prometheus_server.render_config(scrape_interval_seconds)
        self.port = 0
        self.pid: int | None = None

    @property
    def url(self) -> str:
        if not self.port:
            raise ConfigError("the throwaway Prometheus is not started")
        return f"http://{ports.HOST}:{self.port}"

    def start(self) -> str:
        """Start the server and wait until it is ready; return its URL."""
        if self.pid is not None:
            raise ConfigError("the throwaway Prometheus is already started")
        prometheus_server.prepare_folder(self.paths, self.config_text)
        self.set_targets(self.targets)
        self.port = free_port()
        self.pid = prometheus_server.spawn(self.paths, self.port)
        prometheus_server.wait_ready(self.paths, self.pid, self.port, START_TIMEOUT_SECONDS)
        return self.url

    def stop(self) -> None:
        if self.pid is not None:
            prometheus_server.stop(self.paths)
            self.pid = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def set_targets(self, targets: Sequence[str]) -> None:
        """Replace the scraped targets (job ``smallcups``); picked up within seconds."""
        self.targets = list(targets)
        prometheus_server.write_targets(self.paths.targets, TARGETS_NAME, self.targets)

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; return its ``data``, raise StackError on an error answer."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=QUERY_TIMEOUT_SECONDS) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        except (urllib.error.URLError, OSError) as error:
            raise StackError(f"Prometheus at {self.url} does not answer: {error}") from error
        if body.get("status") != "success":
            raise StackError(f"Prometheus refused {path} {params}: {body.get('error')}")
        return body["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector of ``expression`` now: ``[{"metric": {...}, "value": [t, v]}]``."""
        data = self.api("query", query=expression)
        if data["resultType"] != "vector":
            raise StackError(f"{expression!r} is a {data['resultType']}, not an instant vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(self, expression: str, timeout_seconds: float) -> list[dict[str, Any]]:
        """Poll until ``expression`` returns samples; raise StackError after the timeout."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            result = self.query(expression)
            if result:
                return result
            if time.monotonic() >= deadline:
                raise StackError(f"{expression!r} returned nothing within {timeout_seconds} s")
            time.sleep(WAIT_POLL_SECONDS)
