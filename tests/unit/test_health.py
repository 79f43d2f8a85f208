"""The health server over real loopback sockets: endpoints, status codes, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from engine.core.errors import ConfigError
from engine.worker import health
from engine.worker.health import HealthServer
from engine.worker.metrics import WorkerMetrics


class Readiness:
    """A ready callback the test flips."""

    def __init__(self) -> None:
        self.ready = True
        self.reason = ""

    def __call__(self) -> tuple[bool, str]:
        return self.ready, self.reason


class Response:
    def __init__(self, raw: bytes):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {
            name.lower(): value.strip()
            for name, value in (line.split(":", 1) for line in lines[1:])
        }


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def _get(port: int, path: str, method: str = "GET") -> Response:
    request = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    return Response(await _exchange(port, request))


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
def metrics() -> WorkerMetrics:
    sample = WorkerMetrics()
    sample.commands.labels(type="deposit", outcome="accepted").inc(3)
    sample.lag.labels(partition="7").set(12)
    sample.publish_to_result.observe_many([0.02])
    return sample


@pytest.fixture
async def server(metrics: WorkerMetrics, readiness: Readiness) -> AsyncIterator[HealthServer]:
    served = HealthServer(metrics.registry, readiness)
    await served.start()
    yield served
    await served.stop()


async def test_metrics_are_served_in_the_prometheus_text_format(server: HealthServer) -> None:
    response = await _get(server.port, "/metrics")

    assert response.status == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert int(response.headers["content-length"]) == len(response.body)
    text = response.body.decode()
    assert 'smallcups_commands_total{outcome="accepted",type="deposit"} 3.0' in text
    assert 'smallcups_consumer_lag_records{partition="7"} 12.0' in text
    assert "smallcups_publish_to_result_seconds_count 1.0" in text


async def test_healthz_answers_ok_and_ignores_the_query(server: HealthServer) -> None:
    for path in ("/healthz", "/healthz?verbose=1"):
        response = await _get(server.port, path)
        assert (response.status, response.body) == (200, b"ok\n")


async def test_readyz_follows_the_callback_and_names_the_reason(
    server: HealthServer, readiness: Readiness
) -> None:
    assert (await _get(server.port, "/readyz")).status == 200

    readiness.ready, readiness.reason = False, "no partitions assigned yet"
    response = await _get(server.port, "/readyz")
    assert response.status == 503
    assert response.body == b"not ready: no partitions assigned yet\n"


async def test_a_failing_ready_callback_means_not_ready(metrics: WorkerMetrics) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    server = HealthServer(metrics.registry, broken)
    port = await server.start()
    try:
        response = await _get(port, "/readyz")
        assert response.status == 503
        assert b"RuntimeError" in response.body
        assert (await _get(port, "/healthz")).status == 200
    finally:
        await server.stop()


async def test_unknown_paths_methods_and_garbage(server: HealthServer) -> None:
    assert (await _get(server.port, "/")).status == 404
    assert (await _get(server.port, "/metrics/extra")).status == 404
    post = await _get(server.port, "/metrics", method="POST")
    assert post.status == 405
    assert post.headers["allow"] == "GET, HEAD"
    garbage = Response(await _exchange(server.port, b"hello there\r\n\r\n"))
    assert garbage.status == 400


async def test_head_sends_the_headers_only(server: HealthServer) -> None:
    response = await _get(server.port, "/healthz", method="HEAD")

    assert response.status == 200
    assert response.headers["content-length"] == "3"
    assert response.body == b""


async def test_an_oversized_request_is_refused(server: HealthServer) -> None:
    request = b"GET /healthz HTTP/1.1\r\nX-Padding: " + b"a" * 2 * health.REQUEST_BYTES_MAX
    response = Response(await _exchange(server.port, request + b"\r\n\r\n"))

    assert response.status == 431


async def test_a_silent_client_is_dropped_after_the_timeout(
    server: HealthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "REQUEST_TIMEOUT_SECONDS", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        async with asyncio.timeout(5):
            assert await reader.read() == b""
    finally:
        writer.close()


async def test_connections_past_the_limit_get_503(
    server: HealthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "CONNECTIONS_MAX", 2)
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
    try:
        await asyncio.sleep(0.05)
        assert (await _get(server.port, "/healthz")).status == 503
    finally:
        for _, writer in idle:
            writer.close()
    await asyncio.sleep(0.05)
    assert (await _get(server.port, "/healthz")).status == 200


async def test_binds_loopback_on_a_free_port_and_stop_closes_it(metrics: WorkerMetrics) -> None:
    server = HealthServer(metrics.registry, Readiness())
    with pytest.raises(ConfigError, match="not started"):
        _ = server.port
    port = await server.start()
    assert port > 0 and server.url == f"http://127.0.0.1:{port}"
    with pytest.raises(ConfigError, match="already started"):
        await server.start()
    held = [await asyncio.open_connection("127.0.0.1", port)]
    await server.stop()
    await server.stop()
    for _, writer in held:
        writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)

    again = HealthServer(metrics.registry, Readiness(), port=port)
    assert await again.start() == port
    await again.stop()


def test_ports_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"0\.\.65535"):
        HealthServer(WorkerMetrics().registry, Readiness(), port=70_000)


async def test_it_listens_on_the_configured_address(readiness: Readiness) -> None:
    """worker.metrics_host: every interface (a container's), still answered on loopback."""
    server = HealthServer(WorkerMetrics().registry, readiness, host="0.0.0.0")
    port = await server.start()
    try:
        assert server.url == f"http://0.0.0.0:{port}"
        assert (await _get(port, "/healthz")).status == 200
    finally:
        await server.stop()
