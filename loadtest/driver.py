"""Drives commands through the client and keeps score: results, latencies, money totals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.client import Client
from engine.messages import Command, Deposit, Result, Withdraw


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
    """Publishes commands with at most ``window`` awaiting their result."""

    def __init__(self, client: Client, window: int = 5_000):
        if window < 1:
            raise ValueError("window must be >= 1")
        self.client = client
        self.score = Score()
        self._slots = asyncio.Semaphore(window)
        self._outstanding: set[asyncio.Future[Result]] = set()

    async def send(self, command: Command) -> None:
        await self._slots.acquire()
        started = time.perf_counter()
        future = self.client.expect(command.id)
        self._outstanding.add(future)

        def done(f: asyncio.Future[Result]) -> None:
            self._slots.release()
            self._outstanding.discard(f)
            if f.cancelled() or f.exception() is not None:
                return
            self._record(command, f.result(), started)

        future.add_done_callback(done)
        delivery = await self.client.publish(command)
        delivery.add_done_callback(self._delivered)
        self.score.published += 1

    def _delivered(self, delivery: asyncio.Future[object]) -> None:
        if delivery.cancelled() or delivery.exception() is not None:
            self.score.publish_errors += 1

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
        for command in commands:
            await self.send(command)

    async def wait_all(self, timeout_seconds: float) -> bool:
        """Wait until every published command has its result; False on timeout."""
        deadline = time.monotonic() + timeout_seconds
        while self._outstanding and time.monotonic() < deadline:
            await asyncio.wait(list(self._outstanding), timeout=deadline - time.monotonic())
        return not self._outstanding
