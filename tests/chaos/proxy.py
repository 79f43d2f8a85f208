"""A small TCP fault proxy between worker processes and a server (the broker or Postgres).

It runs its own event loop in a daemon thread, so the test's loop may block (waiting for
a process, restarting a server) without stalling the traffic it forwards. The fault is
switched from the test's thread; every connection obeys the fault of the moment:

- ``Fault.NONE``: bytes pass unchanged;
- ``Fault.DELAY``: every chunk waits ``delay_ms`` before it is forwarded;
- ``Fault.BLACKHOLE``: nothing passes either way and new connections are held
  unanswered; connections stay open, so clients see silence, not a reset, until their
  own timeouts fire; when the fault ends the held bytes flow again;
- ``Fault.HOLD_PRODUCE`` (Kafka only): a connection that sends a Produce request
  (API key 0) is silenced for good, everything else passes. The worker's consumer keeps
  fetching while its relay cannot publish: commits reach the cup, results stay in the
  outbox.

``drop_connections()`` resets every open connection (both sides), like a failing link.

``hold_requests(ports)`` singles out clients (by their source port, see
``tests.chaos.harness.connected_ports``): what they send waits at the proxy, in order,
while replies to them and every other client's traffic pass; ``release()`` lets the held
bytes go on. A request the server has not read yet is one it executes only then, so a
worker's commit can be made to reach its cup after another worker took the partition.

A secure broker (``stack.security``) speaks TLS: the Kafka proxy then ends the clients'
TLS with the stack's own server certificate (which they trust: it chains to the stack's
CA and names 127.0.0.1) and opens its own TLS connection to the broker, so it still sees
Kafka's frames. The Postgres and MariaDB proxies pass bytes: their TLS runs through them.

Why a proxy on the broker's own listener would not do: a Kafka client connects to the
bootstrap address once, then to the address the broker *advertises* for that listener.
The chaos broker therefore has a second listener (``stack.kafka_proxied_port``) that
advertises this proxy's port (``stack.kafka_proxied_advertised_port``): workers that
bootstrap through the proxy are sent back through it for every later connection, while
the test's own clients use the plain listener and are not faulted.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
import threading
from collections.abc import Iterable
from typing import Final

from deploy.local.tls import TlsFiles

HOST: Final = "127.0.0.1"
CHUNK_BYTES_MAX: Final = 65_536
START_TIMEOUT_SECONDS: Final = 10.0
HOLD_POLL_SECONDS: Final = 0.05
HOLD_SECONDS_MAX: Final = 600.0
"""Longest a connection waits out a blackhole before the proxy gives up on it."""
CONNECT_TIMEOUT_SECONDS: Final = 5.0
KAFKA_PRODUCE_API_KEY: Final = 0
KAFKA_FRAME_BYTES_MAX: Final = 100 * 1024 * 1024


class Fault(enum.Enum):
    NONE = "none"
    DELAY = "delay"
    BLACKHOLE = "blackhole"
    HOLD_PRODUCE = "hold_produce"


class FaultProxy:
    """Forwards 127.0.0.1:``listen_port`` to 127.0.0.1:``upstream_port`` with faults."""

    def __init__(
        self,
        name: str,
        listen_port: int,
        upstream_port: int,
        *,
        kafka: bool = False,
        tls: TlsFiles | None = None,
    ):
        if listen_port == upstream_port:
            raise ValueError("a proxy cannot forward to its own port")
        if tls is not None and not kafka:
            raise ValueError("only the Kafka proxy ends TLS (it reads Kafka's frames)")
        self.name = name
        contexts = _contexts(tls) if tls else None
        self._server_tls: ssl.SSLContext | None = contexts[0] if contexts else None
        self._client_tls: ssl.SSLContext | None = contexts[1] if contexts else None
        self.listen_port = listen_port
        self.upstream_port = upstream_port
        self.kafka = kafka
        self.fault = Fault.NONE
        self.delay_ms = 0
        self.connections_accepted = 0
        self.held_bytes = 0
        """Bytes of held clients' requests that waited at the proxy (see ``hold_requests``)."""
        self._held_ports: frozenset[int] = frozenset()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"proxy-{name}", daemon=True)
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._failure: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_SECONDS) or self._server is None:
            raise RuntimeError(f"proxy {self.name} did not start: {self._failure!r}")

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_SECONDS)

    def set_fault(self, fault: Fault, delay_ms: int = 0) -> None:
        """Switch the fault for every connection, open or future."""
        if fault is Fault.HOLD_PRODUCE and not self.kafka:
            raise ValueError("HOLD_PRODUCE understands Kafka's framing only")
        if fault is Fault.DELAY and not 0 < delay_ms <= 10_000:
            raise ValueError("a delay is 1..10000 ms")
        self.delay_ms = delay_ms
        self.fault = fault

    def clear(self) -> None:
        """No fault and no client held."""
        self.set_fault(Fault.NONE)
        self.release()

    def hold_requests(self, client_ports: Iterable[int]) -> None:
        """Hold what the clients at ``client_ports`` send, from now until ``release``
        (``held_bytes`` counts from the first call after a release)."""
        if not self._held_ports:
            self.held_bytes = 0
        self._held_ports = frozenset(client_ports)

    def release(self) -> None:
        self._held_ports = frozenset()

    def drop_connections(self) -> None:
        """Reset every open connection through the proxy (new ones are accepted)."""
        done = threading.Event()

        def abort_all() -> None:
            for writer in list(self._writers):
                writer.transport.abort()
            done.set()

        self._loop.call_soon_threadsafe(abort_all)
        done.wait(START_TIMEOUT_SECONDS)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._accept, HOST, self.listen_port, ssl=self._server_tls)
            )
        except OSError as error:
            self._failure = error
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            self._loop.close()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        self._writers.add(client_w)
        try:
            if not await self._pass_gate(None, 0):
                return
            client_port: int = client_w.get_extra_info("peername")[1]
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    server_r, server_w = await asyncio.open_connection(
                        HOST,
                        self.upstream_port,
                        ssl=self._client_tls,
                        server_hostname=HOST if self._client_tls else None,
                    )
            except (OSError, TimeoutError):
                return
            self._writers.add(server_w)
            try:
                upstream = self._forward_frames if self.kafka else self._forward
                await asyncio.gather(
                    upstream(client_r, server_w, client_port),
                    self._forward(server_r, client_w, None),
                    return_exceptions=True,
                )
            finally:
                self._writers.discard(server_w)
                server_w.transport.abort()
        finally:
            self._writers.discard(client_w)
            client_w.transport.abort()

    async def _pass_gate(self, client_port: int | None, size: int) -> bool:
        """Wait out a blackhole or a hold of ``client_port``'s requests (bounded), then a
        delay; False when the wait timed out. ``size``: the bytes waiting to pass."""
        polls_max = int(HOLD_SECONDS_MAX / HOLD_POLL_SECONDS)
        counted = False
        for _ in range(polls_max):
            held = client_port in self._held_ports
            if self.fault is not Fault.BLACKHOLE and not held:
                break
            if held and not counted:
                self.held_bytes += size
                counted = True
            await asyncio.sleep(HOLD_POLL_SECONDS)
        else:
            return False
        if self.fault is Fault.DELAY:
            await asyncio.sleep(self.delay_ms / 1000)
        return True

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_port: int | None
    ) -> None:
        """Copy bytes until either side closes; the other side is closed with it.
        ``client_port``: the client that sends them (None for replies)."""
        try:
            while chunk := await reader.read(CHUNK_BYTES_MAX):
                if not await self._pass_gate(client_port, len(chunk)):
                    return
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.transport.abort()

    async def _forward_frames(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_port: int
    ) -> None:
        """Copy Kafka requests one frame (4-byte size, then the request) at a time."""
        silenced = False
        try:
            while True:
                size_bytes = await reader.readexactly(4)
                size = int.from_bytes(size_bytes, "big", signed=True)
                if not 2 <= size <= KAFKA_FRAME_BYTES_MAX:
                    return
                frame = await reader.readexactly(size)
                api_key = int.from_bytes(frame[:2], "big", signed=True)
                if self.fault is Fault.HOLD_PRODUCE and api_key == KAFKA_PRODUCE_API_KEY:
                    silenced = True
                if silenced:
                    continue
                if not await self._pass_gate(client_port, 4 + size):
                    return
                writer.write(size_bytes + frame)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.transport.abort()


def _contexts(tls: TlsFiles) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(the proxy as a TLS server, with the stack's certificate; as a TLS client of the
    server behind it, verifying it against the stack's CA)."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(tls.server_cert), str(tls.server_key))
    client = ssl.create_default_context(cafile=str(tls.ca))
    return server, client
