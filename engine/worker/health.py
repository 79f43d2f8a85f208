"""The operator endpoints of a process: ``/metrics``, ``/healthz``, ``/readyz``.

A deliberately tiny HTTP/1.1 server on asyncio streams (no framework, no new
dependency), bound to 127.0.0.1 unless told otherwise. One request per connection
(``Connection: close``), which is all Prometheus and a Kubernetes probe need.

- ``GET /metrics``: the registry in the Prometheus text format;
- ``GET /healthz``: 200 ``ok`` while the event loop runs (an answer proves it);
- ``GET /readyz``: 200 when the ``ready`` callback says so, else 503 with its reason;
- anything else: 404, or 405 for a method other than GET and HEAD.

Limits: the request head is at most REQUEST_BYTES_MAX bytes (431 past it), a client has
REQUEST_TIMEOUT_SECONDS to send it, at most CONNECTIONS_MAX are served at once (503
past it), and writing the answer gives up after WRITE_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from engine.core.errors import ConfigError, InvariantError

log = logging.getLogger(__name__)

REQUEST_BYTES_MAX: Final = 8_192
REQUEST_TIMEOUT_SECONDS: Final = 5.0
WRITE_TIMEOUT_SECONDS: Final = 10.0
CONNECTIONS_MAX: Final = 64
READY_REASON_BYTES_MAX: Final = 1_024
LINGER_SECONDS: Final = 1.0
LINGER_READS_MAX: Final = 16
TEXT_PLAIN: Final = "text/plain; charset=utf-8"

ReadyCheck = Callable[[], tuple[bool, str]]
"""Returns (ready, reason); the reason is shown when not ready."""


class HealthServer:
    """Serves the three endpoints until ``stop()``; ``start()`` returns the bound port."""

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: ReadyCheck,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        if not 0 <= port <= 65535:
            raise ConfigError(f"health server port must be in 0..65535 (0: any free), got {port}")
        self.registry = registry
        self.ready = ready
        self.host = host
        self.requested_port = port
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def port(self) -> int:
        """The port actually bound (known after ``start()``)."""
        if self._server is None or not self._server.sockets:
            raise ConfigError("the health server is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> int:
        if self._server is not None:
            raise ConfigError("the health server is already started")
        self._server = await asyncio.start_server(
            self._accept, self.host, self.requested_port, limit=REQUEST_BYTES_MAX
        )
        log.info("health server listening on %s", self.url)
        return self.port

    async def stop(self) -> None:
        """Stop listening and end every connection still being served."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in self._connections.values():
            writer.transport.abort()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None:
            raise InvariantError("start_server runs every connection in a task")
        self._connections[task] = writer
        try:
            await self._serve(reader, writer, crowded=len(self._connections) > CONNECTIONS_MAX)
        finally:
            del self._connections[task]
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                    await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, crowded: bool
    ) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await _send(writer, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"request too large\n")
            await _discard_input(reader, writer)
            return
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return
        method, path = _request_line(head)
        if crowded:
            await _send(writer, HTTPStatus.SERVICE_UNAVAILABLE, b"too many connections\n")
        elif not method:
            await _send(writer, HTTPStatus.BAD_REQUEST, b"bad request\n")
        elif method not in ("GET", "HEAD"):
            allow = "Allow: GET, HEAD\r\n"
            await _send(writer, HTTPStatus.METHOD_NOT_ALLOWED, b"use GET\n", headers=allow)
        else:
            status, content_type, body = self._answer(path)
            await _send(writer, status, body, content_type, head_only=method == "HEAD")

    def _answer(self, path: str) -> tuple[HTTPStatus, str, bytes]:
        match path:
            case "/metrics":
                return HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self.registry)
            case "/healthz":
                return HTTPStatus.OK, TEXT_PLAIN, b"ok\n"
            case "/readyz":
                ready, reason = self._check_ready()
                if ready:
                    return HTTPStatus.OK, TEXT_PLAIN, b"ready\n"
                text = reason.encode("utf-8", "replace")[:READY_REASON_BYTES_MAX]
                return HTTPStatus.SERVICE_UNAVAILABLE, TEXT_PLAIN, b"not ready: " + text + b"\n"
        return HTTPStatus.NOT_FOUND, TEXT_PLAIN, b"not found\n"

    def _check_ready(self) -> tuple[bool, str]:
        try:
            return self.ready()
        except Exception as error:
            log.exception("the readiness check failed")
            return False, f"readiness check failed: {type(error).__name__}"


async def _discard_input(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read what the client still sends (bounded) so that closing does not reset the answer."""
    with contextlib.suppress(TimeoutError, ConnectionError):
        writer.write_eof()
        async with asyncio.timeout(LINGER_SECONDS):
            for _ in range(LINGER_READS_MAX):
                if not await reader.read(REQUEST_BYTES_MAX):
                    return


def _request_line(head: bytes) -> tuple[str, str]:
    """(method, path without query) of the request line; ("", "") when it is malformed."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        return "", ""
    return parts[0], parts[1].split("?", 1)[0]


async def _send(
    writer: asyncio.StreamWriter,
    status: HTTPStatus,
    body: bytes,
    content_type: str = TEXT_PLAIN,
    *,
    headers: str = "",
    head_only: bool = False,
) -> None:
    """Write one response (``headers``: extra CRLF-ended lines); the caller closes."""
    header = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        f"Connection: close\r\n{headers}\r\n"
    )
    writer.write(header.encode("latin-1") + (b"" if head_only else body))
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await writer.drain()
