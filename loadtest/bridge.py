"""engine.kafka.client's asyncio Client, driven from gevent greenlets (locust users).

Locust monkey-patches threading, sockets and select for gevent, and an asyncio client
cannot run inside a greenlet. So, once per process:

1. a native thread (the patch's original ``start_new_thread``) runs a uvloop event loop
   with one shared Client (uvloop does its I/O in libuv, untouched by the patch);
2. a greenlet hands a command over with ``loop.call_soon_threadsafe``;
3. the loop publishes it, awaits the broker's acknowledgement, then the result, and
   posts each outcome to the Mailbox: a deque plus one gevent "async" watcher, whose
   ``send()`` is gevent's thread-safe way to wake its hub;
4. the hub drains the deque and sets each waiting greenlet's AsyncResult.

Nothing else crosses the threads: no concurrent.futures (after the patch their locks
are gevent locks, unsafe from a foreign thread), no gevent object used by the loop.
Limits: IN_FLIGHT_MAX commands awaiting their result, per-step timeouts on both sides.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from dataclasses import dataclass
from typing import Any, Final

import gevent
import uvloop
from gevent import monkey
from gevent.event import AsyncResult

from engine.core.config import KafkaConfig
from engine.core.messages import Command, Result
from engine.kafka.client import Client
from engine.kafka.topics import partition_counts

log = logging.getLogger(__name__)

IN_FLIGHT_MAX: Final = 10_000
PUBLISH_TIMEOUT_SECONDS: Final = 30.0
RESULT_TIMEOUT_SECONDS: Final = 30.0
START_TIMEOUT_SECONDS: Final = 60.0
STOP_TIMEOUT_SECONDS: Final = 30.0
WAIT_MARGIN_SECONDS: Final = 5.0
"""Extra time a greenlet waits beyond the loop's own timeout (which always answers)."""


class BridgeClosedError(RuntimeError):
    """The bridge is stopped (or never started): no more commands."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One step of one command: how long since it was handed over, and how it ended."""

    elapsed_seconds: float
    result: Result | None = None
    error: str = ""


class Mailbox:
    """Carries (AsyncResult, value) pairs from the loop thread to the gevent hub."""

    def __init__(self) -> None:
        self._items: collections.deque[tuple[Any, object]] = collections.deque()
        self._watcher = gevent.get_hub().loop.async_()
        self._watcher.start(self._deliver)

    def post(self, slot: Any, value: object) -> None:
        """Any thread: queue ``value`` for ``slot`` and wake the hub."""
        self._items.append((slot, value))
        self._watcher.send()

    def _deliver(self) -> None:
        while self._items:
            slot, value = self._items.popleft()
            slot.set(value)

    def close(self) -> None:
        self._deliver()
        self._watcher.stop()
        self._watcher.close()


class Ticket:
    """A greenlet's handle on one command in flight."""

    def __init__(self) -> None:
        self.acknowledged = AsyncResult()
        self.answered = AsyncResult()

    def wait_acknowledged(self) -> Outcome:
        return _wait(self.acknowledged, PUBLISH_TIMEOUT_SECONDS, "broker acknowledgement")

    def wait_answered(self) -> Outcome:
        return _wait(self.answered, RESULT_TIMEOUT_SECONDS, "result")


def _wait(slot: Any, timeout_seconds: float, what: str) -> Outcome:
    waited_seconds = timeout_seconds + WAIT_MARGIN_SECONDS
    try:
        outcome = slot.get(timeout=waited_seconds, block=True)
    except gevent.Timeout:
        return Outcome(waited_seconds, error=f"the client thread gave no {what} in time")
    if not isinstance(outcome, Outcome):
        raise TypeError(f"the loop posted {outcome!r} as a {what}")
    return outcome


class InlineExecutor(concurrent.futures.Executor):
    """The loop thread's executor: runs each call at once, in the loop thread.

    aiokafka hands its SASL steps (a SCRAM proof: PBKDF2, milliseconds, once per
    connection) to the loop's default executor. Under gevent's monkey-patching a
    ThreadPoolExecutor's workers are greenlets of this thread's hub, which never runs
    while the loop does: the handshake would wait for good.
    """

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:
            future.set_exception(error)
        return future


class Bridge:
    """One Client in a loop thread, for every greenlet of this process."""

    def __init__(self, kafka: KafkaConfig):
        self.kafka = kafka
        self.partitions = 0
        self.in_flight = 0
        self._mailbox: Mailbox | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Client | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = AsyncResult()
        self._stopped = AsyncResult()

    def start(self) -> int:
        """Start the loop thread and connect (greenlet side); return the partition count."""
        if self._mailbox is not None:
            raise RuntimeError("the bridge is already started")
        self._mailbox = Mailbox()
        start_new_thread = monkey.get_original("_thread", "start_new_thread")
        start_new_thread(self._run_loop, ())
        try:
            error = self._ready.get(timeout=START_TIMEOUT_SECONDS)
        except gevent.Timeout:
            error = f"not connected within {START_TIMEOUT_SECONDS:.0f} s"
        if error:
            raise RuntimeError(f"cannot start the Kafka client: {error}")
        return self.partitions

    def stop(self) -> None:
        """Close the client and end the loop thread; wait at most STOP_TIMEOUT_SECONDS."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
            try:
                self._stopped.get(timeout=STOP_TIMEOUT_SECONDS)
            except gevent.Timeout:
                log.warning("the client thread did not stop within %.0f s", STOP_TIMEOUT_SECONDS)
        if self._mailbox is not None:
            self._mailbox.close()

    def send(self, command: Command) -> Ticket:
        """Hand ``command`` to the loop; its outcomes arrive on the returned ticket."""
        loop = self._loop
        if loop is None or self._mailbox is None or loop.is_closed():
            raise BridgeClosedError("the bridge is not running")
        if self.in_flight >= IN_FLIGHT_MAX:
            raise RuntimeError(f"more than {IN_FLIGHT_MAX} commands in flight")
        ticket = Ticket()
        started = time.perf_counter()
        try:
            loop.call_soon_threadsafe(self._launch, command, ticket, started)
        except RuntimeError as error:
            raise BridgeClosedError("the bridge stopped") from error
        self.in_flight += 1
        ticket.answered.rawlink(self._landed)
        return ticket

    def _landed(self, _: object) -> None:
        self.in_flight -= 1

    # --- the loop thread -----------------------------------------------------------

    def _post(self, slot: Any, value: object) -> None:
        if self._mailbox is None:
            raise RuntimeError("the bridge has no mailbox")
        self._mailbox.post(slot, value)

    def _run_loop(self) -> None:
        loop = uvloop.new_event_loop()
        loop.set_default_executor(InlineExecutor())
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()
            self._post(self._stopped, True)

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        client = Client(self.kafka, client_id="smallcups-locust")
        try:
            topics = [self.kafka.commands_topic, self.kafka.results_topic]
            counts = await partition_counts(self.kafka, topics)
            if missing := [topic for topic in topics if topic not in counts]:
                raise RuntimeError(f"no topic {', '.join(missing)}: run smallcups init")
            self.partitions = counts[self.kafka.commands_topic]
            await client.start()
        except Exception as error:
            await client.close()
            self._post(self._ready, f"{type(error).__name__}: {error}")
            return
        self._client = client
        self._post(self._ready, "")
        try:
            await self._stopping.wait()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await client.close()

    def _launch(self, command: Command, ticket: Ticket, started: float) -> None:
        task = asyncio.get_running_loop().create_task(self._follow(command, ticket, started))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, command: Command, ticket: Ticket, started: float) -> None:
        """Publish, post the acknowledgement, await and post the result; always post both."""
        client = self._client
        if client is None:
            raise RuntimeError("the bridge's client is not connected")
        future = client.expect(command)
        acknowledged = False
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                await (await client.publish(command))
            acknowledged = True
            self._post(ticket.acknowledged, Outcome(time.perf_counter() - started))
            async with asyncio.timeout(RESULT_TIMEOUT_SECONDS):
                result = await asyncio.shield(future)
            self._post(ticket.answered, Outcome(time.perf_counter() - started, result))
        except (Exception, asyncio.CancelledError) as error:
            failed = Outcome(time.perf_counter() - started, error=_describe(error))
            if not acknowledged:
                self._post(ticket.acknowledged, failed)
            self._post(ticket.answered, failed)
            if isinstance(error, asyncio.CancelledError):
                raise
        finally:
            client.forget(command, future)


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled: the bridge stopped"
    return f"{type(error).__name__}: {error}"
