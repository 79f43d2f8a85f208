"""Drives commands through the client and keeps score: results, latencies, money totals."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from engine.core.messages import Command, Deposit, Result, Withdraw
from engine.core.routing import partition_of
from engine.kafka.client import Client

CHUNK_COMMANDS = 500
"""Commands packed into one publish_many call by send_all."""


@dataclass(slots=True)
class Score:
    published: int = 0
    results: dict[str, Result] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    deposited: int = 0
    withdrawn: int = 0
    publish_errors: int = 0

    @property
    def accepted(self) -> int:
        return sum(1 for r in self.results.values() if r.accepted)

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Driver:
    """Publishes commands with at most ``window`` command ids awaiting their result.

    It takes every result the client reads (``Client.on_result``). A command id is done
    at its first result: a duplicate publish of the same id, or a re-send after a crash,
    adds nothing (a duplicate of a pending transfer gets the one final result only).
    """

    def __init__(self, client: Client, window: int = 5_000, misrouted_percent: int = 0):
        if window < 1:
            raise ValueError("window must be >= 1")
        if not 0 <= misrouted_percent <= 100:
            raise ValueError("misrouted_percent must be in 0..100")
        self.client = client
        self.window = window
        self.misrouted_percent = misrouted_percent
        """Share of commands published to a partition next to their customer's (as by a
        producer whose partitioner is not murmur2): the workers forward them."""
        self.score = Score()
        self._awaited: dict[str, tuple[float, Command]] = {}
        self._room = asyncio.Event()
        self._drained = asyncio.Event()
        client.on_result = self._on_result

    async def send(self, command: Command) -> None:
        await self.send_many([command])

    async def send_many(self, commands: Sequence[Command]) -> None:
        if len(commands) > self.window:
            raise ValueError(f"{len(commands)} commands exceed the window of {self.window}")
        while len(self._awaited) + len(commands) > self.window:
            self._room.clear()
            await self._room.wait()
        started = time.perf_counter()
        for command in commands:
            if command.id not in self._awaited and command.id not in self.score.results:
                self._awaited[command.id] = (started, command)
        if self._awaited:
            self._drained.clear()
        chooser = self._misroute if self.misrouted_percent else None
        for delivery in await self.client.publish_many(commands, chooser):
            delivery.add_done_callback(self._delivered)
        self.score.published += len(commands)

    def _misroute(self, command: Command, partitions: int) -> int:
        home = partition_of(command.customer, partitions)
        if zlib.crc32(command.id.encode()) % 100 < self.misrouted_percent:
            return (home + 1) % partitions
        return home

    def _delivered(self, delivery: asyncio.Future[object]) -> None:
        if delivery.cancelled() or delivery.exception() is not None:
            self.score.publish_errors += 1

    def _on_result(self, result: Result) -> None:
        awaited = self._awaited.pop(result.command_id, None)
        if awaited is None:
            return
        started, command = awaited
        self._record(command, result, started)
        self._room.set()
        if not self._awaited:
            self._drained.set()

    def _record(self, command: Command, result: Result, started: float) -> None:
        score = self.score
        score.results[command.id] = result
        score.latencies_ms.append((time.perf_counter() - started) * 1000)
        if result.accepted:
            if isinstance(command, Deposit):
                score.deposited += command.amount
            elif isinstance(command, Withdraw):
                score.withdrawn += command.amount

    async def send_all(self, commands: Iterable[Command]) -> None:
        chunk: list[Command] = []
        for command in commands:
            chunk.append(command)
            if len(chunk) >= min(CHUNK_COMMANDS, self.window):
                await self.send_many(chunk)
                chunk = []
        if chunk:
            await self.send_many(chunk)

    async def wait_all(self, timeout_seconds: float) -> bool:
        """Wait until every published command id has its result; False on timeout."""
        if not self._awaited:
            return True
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_seconds)
        except TimeoutError:
            return False
        return True
