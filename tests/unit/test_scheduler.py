"""The scheduler's pure parts: a routing customer per partition, the days to close, the
command ids, the report of a day; and its command line. No servers."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.admin.scheduler import (
    DAYS_PER_RUN_MAX,
    PROBLEMS_SHOWN_MAX,
    Schedule,
    closable_at,
    close_command_id,
    close_commands,
    days_between,
    parse_day,
    tally,
    unless_stopped,
    yesterday,
)
from engine.cli import parser
from engine.core.authority import fresh_authority
from engine.core.decoding import decode_command
from engine.core.errors import ConfigError, InvariantError
from engine.core.messages import CloseBusinessDay, Reason, Result, Status, encode
from engine.core.routing import partition_of, routing_customers

DAY = dt.date(2026, 11, 30)
REJECTED = Status.REJECTED


def plan(
    *, once: bool = False, through: dt.date | None = None, first: dt.date | None = None
) -> Schedule:
    return Schedule(once, through, first, delay_seconds=60.0, timeout_seconds=60.0)


@pytest.mark.parametrize("partitions", [1, 2, 3, 16, 64, 100, 257])
def test_each_partition_gets_its_smallest_routing_customer(partitions: int) -> None:
    customers = routing_customers(partitions)
    assert len(customers) == partitions
    for partition, customer in enumerate(customers):
        assert customer >= 1
        assert partition_of(customer, partitions) == partition
    for smaller in range(1, max(customers)):
        assert smaller >= customers[partition_of(smaller, partitions)]


def test_routing_customers_of_the_largest_deployment() -> None:
    customers = routing_customers(4096)
    assert all(partition_of(c, 4096) == p for p, c in enumerate(customers))
    assert routing_customers(4096) == customers, "deterministic"
    assert routing_customers(1) == (1,)


def test_routing_customers_need_a_partition() -> None:
    with pytest.raises(InvariantError):
        routing_customers(0)


def test_close_ids_are_deterministic_and_valid_command_ids() -> None:
    assert close_command_id(DAY, 7) == "close-2026-11-30-p7"
    assert close_command_id(dt.date(2027, 1, 2), 4095) == "close-2027-01-02-p4095"
    _, signer = fresh_authority("prod.commands")
    commands = close_commands(DAY, routing_customers(64))
    assert len(commands) == 64
    for partition, command in enumerate(commands):
        assert command.id == close_command_id(DAY, partition)
        assert command.date == "2026-11-30"
        assert partition_of(command.customer, 64) == partition
        decoded = decode_command(encode(signer.sign(command)))
        assert isinstance(decoded, CloseBusinessDay), decoded


def test_days_between_is_inclusive_oldest_first_and_bounded() -> None:
    assert days_between(DAY, DAY) == [DAY]
    assert days_between(dt.date(2026, 12, 30), dt.date(2027, 1, 2)) == [
        dt.date(2026, 12, 30),
        dt.date(2026, 12, 31),
        dt.date(2027, 1, 1),
        dt.date(2027, 1, 2),
    ]
    assert days_between(DAY, DAY - dt.timedelta(days=1)) == []
    last = DAY + dt.timedelta(days=DAYS_PER_RUN_MAX - 1)
    assert len(days_between(DAY, last)) == DAYS_PER_RUN_MAX
    with pytest.raises(ConfigError, match="at most"):
        days_between(DAY, last + dt.timedelta(days=1))


def test_yesterday_is_the_last_day_ended_in_utc() -> None:
    utc = dt.UTC
    assert yesterday(dt.datetime(2026, 12, 1, 0, 0, 0, tzinfo=utc)) == DAY
    assert yesterday(dt.datetime(2026, 12, 1, 23, 59, 59, tzinfo=utc)) == DAY
    tokyo = dt.timezone(dt.timedelta(hours=9))
    assert yesterday(dt.datetime(2026, 12, 2, 8, 0, tzinfo=tokyo)) == DAY
    with pytest.raises(InvariantError):
        yesterday(dt.datetime(2026, 12, 1, 12, 0))


@given(st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2100, 1, 1)))
def test_a_day_is_closable_after_it_ends(day: dt.date) -> None:
    wake = closable_at(day, 90.0)
    assert wake == dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 1, 30), dt.UTC)
    assert yesterday(wake) == day


def test_the_first_round() -> None:
    today = dt.date(2026, 12, 1)
    assert plan(once=True).first_round(today) == (DAY, DAY)
    assert plan().first_round(today) == (DAY, DAY)
    assert plan(through=DAY).first_round(today) == (DAY, DAY)
    with pytest.raises(ConfigError, match="has not ended yet"):
        plan(through=today).first_round(today)
    week = dt.date(2026, 11, 24)
    assert plan(through=DAY, first=week).first_round(today) == (week, DAY)
    assert plan(once=True, first=week).first_round(today) == (week, DAY)
    with pytest.raises(ConfigError, match="after the last day"):
        plan(once=True, first=today).first_round(today)
    with pytest.raises(ConfigError, match="at most"):
        plan(through=DAY, first=dt.date(2020, 1, 1)).first_round(today)


def test_a_schedule_checks_its_limits() -> None:
    with pytest.raises(ConfigError, match="--once or --through"):
        plan(once=True, through=DAY)
    for delay in (-1.0, 3_601.0):
        with pytest.raises(ConfigError, match="--delay"):
            Schedule(False, None, None, delay_seconds=delay, timeout_seconds=60.0)
    for timeout in (0.0, 3_601.0):
        with pytest.raises(ConfigError, match="--timeout"):
            Schedule(False, None, None, delay_seconds=60.0, timeout_seconds=timeout)
    assert plan().forever
    assert not plan(once=True).forever
    assert not plan(through=DAY).forever


def test_days_are_read_strictly() -> None:
    assert parse_day("2026-11-30", "--through") == DAY
    for bad in (
        "2026-11-31",
        "2026-1-30",
        "30.11.2026",
        "2026-11-30T00:00",
        "",
        "\uff12\uff10\uff12\uff16-11-30",
    ):
        with pytest.raises(ConfigError, match="--through must be a date"):
            parse_day(bad, "--through")


def result(partition: int, status: Status, reason: Reason = Reason.NONE) -> Result:
    return Result(close_command_id(DAY, partition), status, reason, "why", partition=partition)


def test_a_day_closed_everywhere() -> None:
    results = {p: result(p, Status.ACCEPTED) for p in range(64)}
    report = tally(DAY, 64, results)
    assert report.closed
    assert report.line() == "closed 2026-11-30 in 64 partitions (64 accepted, 0 already closed)"
    results[5] = result(5, REJECTED, Reason.DAY_ALREADY_CLOSED)
    report = tally(DAY, 64, results)
    assert report.closed
    assert report.line() == "closed 2026-11-30 in 64 partitions (63 accepted, 1 already closed)"
    assert report.problems(60.0) == []


def test_a_day_not_closed_everywhere() -> None:
    results = {p: result(p, Status.ACCEPTED) for p in range(4)}
    results[1] = result(1, REJECTED, Reason.BAD_SIGNATURE)
    del results[3]
    report = tally(DAY, 4, results)
    assert not report.closed
    assert report.line() == (
        "not closed 2026-11-30 in 2 of 4 partitions"
        " (2 accepted, 0 already closed, 1 rejected, 1 no result)"
    )
    assert report.problems(2.5) == [
        "2026-11-30 partition 1: rejected bad_signature: why",
        "2026-11-30: no result within 2.5 s from partition 3: is a worker running?",
    ]
    with pytest.raises(InvariantError):
        tally(DAY, 2, results)


def test_problems_are_bounded() -> None:
    silent = tally(DAY, 64, {}).problems(60.0)
    assert silent == [
        "2026-11-30: no result within 60 s from partitions 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"
        " and 54 more: is a worker running?"
    ]
    refused = {p: result(p, REJECTED, Reason.BAD_DATE) for p in range(64)}
    problems = tally(DAY, 64, refused).problems(60.0)
    assert len(problems) == PROBLEMS_SHOWN_MAX + 1
    assert problems[0] == "2026-11-30 partition 0: rejected bad_date: why"
    assert problems[-1] == f"2026-11-30: and {64 - PROBLEMS_SHOWN_MAX} more rejected"


async def test_a_stop_cuts_the_work_short() -> None:
    stop = asyncio.Event()
    assert await unless_stopped(stop, asyncio.sleep(0, "done")) == (False, "done")
    sleeping = asyncio.ensure_future(unless_stopped(stop, asyncio.sleep(3_600)))
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(sleeping, 5) == (True, None)
    assert await unless_stopped(stop, asyncio.sleep(0, "late")) == (True, None)


async def test_an_error_of_the_work_is_raised() -> None:
    async def broken() -> None:
        raise ConfigError("broken")

    with pytest.raises(ConfigError, match="broken"):
        await unless_stopped(asyncio.Event(), broken())


def test_the_command_line() -> None:
    args = parser().parse_args(["scheduler", "--through", "2026-11-30", "--from", "2026-11-01"])
    assert (args.once, args.through, args.first) == (False, "2026-11-30", "2026-11-01")
    assert (args.delay, args.timeout) == (60.0, 60.0)
    args = parser().parse_args(["scheduler", "--once", "--delay", "5", "--timeout", "9"])
    assert (args.once, args.through, args.delay, args.timeout) == (True, None, 5.0, 9.0)
    with pytest.raises(SystemExit):
        parser().parse_args(["scheduler", "--once", "--through", "2026-11-30"])
