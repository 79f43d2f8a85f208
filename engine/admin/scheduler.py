"""``smallcups scheduler``: close the business day of every partition, every day.

A partition's calendar moves only when it is told to: ``close_business_day``
(engine.core.credit) accrues the day's interest, makes loans past due overdue and
releases expired holds. The scheduler tells every partition, shortly after each UTC
midnight, to close the day that just ended. It belongs to the bank's back office and
signs with the risk authority's key.

1. Read the partition count from Kafka (the scheduler needs Kafka and the risk key, no
   database), and find each partition's routing
   customer: the smallest customer id (>= 1) that Kafka's partitioner sends there. A
   close is about a partition, but a command record is routed by its customer.
2. Close each day, oldest first: publish one signed close per partition, with the id
   ``close-<YYYY-MM-DD>-p<partition>``, and wait (at most ``timeout_seconds``) for every
   result. Accepted or ``day_already_closed`` counts as closed. Any other rejection, or
   no result in time, stops there: no later day is published before that day is closed.
3. Print one line per day. ``--once`` and ``--through`` then exit (status 1 when a day
   was not closed). Otherwise sleep until ``delay_seconds`` after the next UTC midnight
   (after a failure, a back-off) and close every day that has ended since.

The ids are deterministic, so publishing a day again is harmless: the engine answers a
repeated id with the result it recorded, and a day a later close already caught up
answers ``day_already_closed``.

Each round opens its own Kafka client, so between rounds (a day) the scheduler holds no
connection and reads no results. SIGTERM and SIGINT stop it at once; a round cut short
is published again by the next run, under the same ids.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
import sys
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from aiokafka.errors import KafkaError

from engine.admin.risk import risk_signer
from engine.core.authority import RiskSigner
from engine.core.backoff import Backoff
from engine.core.config import Config
from engine.core.decoding import parse_date
from engine.core.errors import ConfigError, InfrastructureError, invariant
from engine.core.messages import CloseBusinessDay, Privileged, Reason, Result
from engine.core.routing import routing_customers
from engine.kafka.client import Client

log = logging.getLogger(__name__)

T = TypeVar("T")

ONE_DAY: Final = dt.timedelta(days=1)
DAYS_PER_RUN_MAX: Final = 366
"""Most days one run publishes (``--from`` more than a year back is a typo)."""
DELAY_SECONDS_MAX: Final = 3_600.0
TIMEOUT_SECONDS_MAX: Final = 3_600.0
RETRY_FIRST_SECONDS: Final = 10.0
RETRY_MAX_SECONDS: Final = 600.0
"""Back-off of the running scheduler after a round that did not close its days."""
PROBLEMS_SHOWN_MAX: Final = 10
"""Partitions named one by one when a day is not closed; past that, only counted."""
RETRIABLE_ERRORS: Final = (InfrastructureError, KafkaError, OSError, TimeoutError)
"""What makes the running scheduler retry a round instead of stopping."""


def close_command_id(day: dt.date, partition: int) -> str:
    """``close-2026-11-30-p7``: the same day and partition, the same id."""
    return f"close-{day.isoformat()}-p{partition}"


def close_commands(day: dt.date, customers: Sequence[int]) -> list[CloseBusinessDay]:
    """The unsigned closes of ``day``, one per partition (element p: partition p's)."""
    return [
        CloseBusinessDay(close_command_id(day, partition), customer, day.isoformat())
        for partition, customer in enumerate(customers)
    ]


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included, oldest first."""
    count = (last - first).days + 1
    if count > DAYS_PER_RUN_MAX:
        raise ConfigError(
            f"{first}..{last} is {count} days: one run closes at most {DAYS_PER_RUN_MAX}"
        )
    return [first + ONE_DAY * offset for offset in range(max(count, 0))]


def parse_day(text: str, what: str) -> dt.date:
    """A ``YYYY-MM-DD`` argument, read the way the engine reads dates."""
    day = parse_date(text)
    if day is None:
        raise ConfigError(f"{what} must be a date, YYYY-MM-DD; got {text[:80]!r}")
    return dt.date.fromordinal(day)


def yesterday(now: dt.datetime) -> dt.date:
    """The last day that has ended at ``now``, in UTC."""
    invariant(now.tzinfo is not None, "a scheduler's clock is aware of its time zone")
    return now.astimezone(dt.UTC).date() - ONE_DAY


def closable_at(day: dt.date, delay_seconds: float) -> dt.datetime:
    """When the running scheduler closes ``day``: ``delay_seconds`` after it ends (UTC)."""
    midnight = dt.datetime.combine(day + ONE_DAY, dt.time(0), tzinfo=dt.UTC)
    return midnight + dt.timedelta(seconds=delay_seconds)


@dataclass(frozen=True, slots=True)
class Schedule:
    """What ``smallcups scheduler`` was asked to do; the limits are checked here."""

    once: bool
    through: dt.date | None
    first: dt.date | None
    delay_seconds: float
    timeout_seconds: float

    def __post_init__(self) -> None:
        if self.once and self.through is not None:
            raise ConfigError("--once closes through yesterday: give --once or --through")
        if not 0 <= self.delay_seconds <= DELAY_SECONDS_MAX:
            raise ConfigError(f"--delay must be in 0..{DELAY_SECONDS_MAX:g} seconds")
        if not 0 < self.timeout_seconds <= TIMEOUT_SECONDS_MAX:
            raise ConfigError(f"--timeout must be in (0, {TIMEOUT_SECONDS_MAX:g}] seconds")

    @property
    def forever(self) -> bool:
        return not self.once and self.through is None

    def first_round(self, today: dt.date) -> tuple[dt.date, dt.date]:
        """The first and last day of the first round, when it is ``today`` (UTC)."""
        if self.through is not None:
            last = self.through
            first = self.first or last
        else:
            last = today - ONE_DAY
            first = self.first or last
        if first > last:
            raise ConfigError(f"--from {first} is after the last day to close, {last}")
        if last >= today:
            raise ConfigError(f"{last} has not ended yet (UTC): a business day closes after it")
        days_between(first, last)
        return first, last


@dataclass(frozen=True, slots=True)
class DayReport:
    """How the partitions answered one day's closes."""

    day: dt.date
    partitions: int
    accepted: int
    already_closed: int
    rejected: tuple[tuple[int, Result], ...]
    """(partition, result) of every other rejection."""
    unanswered: tuple[int, ...]
    """Partitions whose result did not come in time."""

    def __post_init__(self) -> None:
        answered = self.accepted + self.already_closed + len(self.rejected)
        invariant(answered + len(self.unanswered) == self.partitions, "every partition once")
        invariant(min(self.accepted, self.already_closed) >= 0, "counts are not negative")

    @property
    def closed(self) -> bool:
        return not self.rejected and not self.unanswered

    def line(self) -> str:
        counts = f"{self.accepted} accepted, {self.already_closed} already closed"
        if self.closed:
            return f"closed {self.day} in {self.partitions} partitions ({counts})"
        open_count = len(self.rejected) + len(self.unanswered)
        return (
            f"not closed {self.day} in {open_count} of {self.partitions} partitions"
            f" ({counts}, {len(self.rejected)} rejected, {len(self.unanswered)} no result)"
        )

    def problems(self, timeout_seconds: float) -> list[str]:
        """What went wrong: a line per rejection and one for the partitions that did not
        answer, each naming at most PROBLEMS_SHOWN_MAX partitions."""
        lines = [
            f"{self.day} partition {partition}: rejected {result.reason}: {result.detail}"
            for partition, result in self.rejected[:PROBLEMS_SHOWN_MAX]
        ]
        if len(self.rejected) > PROBLEMS_SHOWN_MAX:
            lines.append(f"{self.day}: and {len(self.rejected) - PROBLEMS_SHOWN_MAX} more rejected")
        if self.unanswered:
            shown = ", ".join(str(p) for p in self.unanswered[:PROBLEMS_SHOWN_MAX])
            rest = len(self.unanswered) - PROBLEMS_SHOWN_MAX
            more = f" and {rest} more" if rest > 0 else ""
            lines.append(
                f"{self.day}: no result within {timeout_seconds:g} s from partition"
                f"{'s' if len(self.unanswered) > 1 else ''} {shown}{more}: is a worker running?"
            )
        return lines


def tally(day: dt.date, partitions: int, results: Mapping[int, Result]) -> DayReport:
    """The report of ``day`` from the results received, by partition. A close's id is the
    scheduler's for that day and partition: ``duplicate_conflict`` says a close of the day
    was recorded under it already (by an earlier run, signed at another time)."""
    invariant(all(0 <= p < partitions for p in results), "results of known partitions")
    accepted = already_closed = 0
    rejected: list[tuple[int, Result]] = []
    unanswered: list[int] = []
    for partition in range(partitions):
        result = results.get(partition)
        if result is None:
            unanswered.append(partition)
        elif result.accepted:
            accepted += 1
        elif result.reason in (Reason.DAY_ALREADY_CLOSED, Reason.DUPLICATE_CONFLICT):
            already_closed += 1
        else:
            rejected.append((partition, result))
    return DayReport(day, partitions, accepted, already_closed, tuple(rejected), tuple(unanswered))


async def publish_per_partition(
    client: Client, commands: Sequence[Privileged], timeout_seconds: float
) -> dict[int, Result]:
    """Publish signed commands, one per partition (element p: partition p's: a day's
    closes, a partner's registrations), and wait for their results, ``timeout_seconds``
    at most; the results that came, by partition."""
    futures = [client.expect(command) for command in commands]
    try:
        delivered = [await client.publish(command) for command in commands]
        await asyncio.gather(*delivered)
        await asyncio.wait(futures, timeout=timeout_seconds)
    finally:
        for command, future in zip(commands, futures, strict=True):
            client.forget(command, future)
    done = {partition: f for partition, f in enumerate(futures) if f.done()}
    errors = [error for f in done.values() if (error := f.exception()) is not None]
    if errors:
        raise errors[0]
    return {partition: future.result() for partition, future in done.items()}


async def close_days(
    config: Config, signer: RiskSigner, days: Sequence[dt.date], timeout_seconds: float
) -> dt.date | None:
    """Close ``days`` in order in every partition of the topics (Kafka says how many: the
    scheduler needs no database); the first day not closed everywhere (None: all closed)."""
    async with Client(config.require_kafka(), client_id="smallcups-scheduler") as client:
        customers = routing_customers(client.partitions)
        for day in days:
            commands = [signer.sign(c) for c in close_commands(day, customers)]
            results = await publish_per_partition(client, commands, timeout_seconds)
            report = tally(day, len(customers), results)
            print(report.line(), flush=True)
            if not report.closed:
                for problem in report.problems(timeout_seconds):
                    print(problem, file=sys.stderr, flush=True)
                return day
    return None


async def unless_stopped(
    stop: asyncio.Event, work: Coroutine[Any, Any, T]
) -> tuple[bool, T | None]:
    """Run ``work`` until it ends or ``stop`` is set (then cancel it): (stopped, its value)."""
    if stop.is_set():
        work.close()
        return True, None
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        return True, None
    return False, task.result()


async def schedule(config: Config, plan: Schedule, stop: asyncio.Event) -> int:
    """Steps 1 to 3 of the module docstring; the exit status."""
    today = dt.datetime.now(dt.UTC).date()
    first, last = plan.first_round(today)
    signer = risk_signer(config)
    if not plan.forever:
        days = days_between(first, last)
        work = close_days(config, signer, days, plan.timeout_seconds)
        stopped, open_day = await unless_stopped(stop, work)
        if stopped:
            print("stopped before every day was closed", file=sys.stderr)
        return 1 if stopped or open_day is not None else 0
    return await _run_forever(config, plan, stop, signer, first)


async def _run_forever(
    config: Config,
    plan: Schedule,
    stop: asyncio.Event,
    signer: RiskSigner,
    next_day: dt.date,
) -> int:
    """Close every day that has ended, from ``next_day`` on, until stopped; 1 if some day
    was not closed at its first try."""
    backoff = Backoff(RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS)
    failed = False
    while not stop.is_set():
        days = days_between(next_day, yesterday(dt.datetime.now(dt.UTC)))
        open_day: dt.date | None = None
        if days:
            try:
                stopped, open_day = await unless_stopped(
                    stop, close_days(config, signer, days, plan.timeout_seconds)
                )
            except RETRIABLE_ERRORS as error:
                log.warning("closing from %s failed, will retry: %s", next_day, error)
                stopped, open_day = False, next_day
            if stopped:
                break
            next_day = open_day or days[-1] + ONE_DAY
        if open_day is None:
            backoff.reset()
            wake = closable_at(next_day, plan.delay_seconds)
            wait_seconds = (wake - dt.datetime.now(dt.UTC)).total_seconds()
        else:
            failed = True
            wait_seconds = backoff.next()
        await unless_stopped(stop, asyncio.sleep(max(wait_seconds, 0.0)))
    return 1 if failed else 0


def run_scheduler(config: Config, plan: Schedule) -> int:
    """``smallcups scheduler``: SIGTERM and SIGINT stop it."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        return await schedule(config, plan, stop)

    return asyncio.run(main())
