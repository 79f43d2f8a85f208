"""Locust load test of smallcups: upstream apps publishing commands through engine.kafka.client.

    locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 20s     # console only
    locust -f loadtest/locustfile.py                                  # web UI, 127.0.0.1:8089

Each user is one upstream app in a closed loop: publish a command, wait for the broker's
acknowledgement (event ``publish <name>``), wait for the result (event ``result <name>``,
publish-to-result latency), repeat. The mix opens and funds accounts, deposits,
withdraws, transfers within a partition, a few across partitions, and a few invalid
commands that must come back rejected with their reason (a success when they do).
Configuration is the usual SMALLCUPS_* environment (engine.core.config.load_config): the
broker and the topic prefix. Every user stops after USER_COMMANDS_MAX commands or
USER_SECONDS_MAX seconds, whatever ``-t`` says.
"""

from __future__ import annotations

import random
import secrets
import time
from typing import Any, Final

import gevent
from gevent import GreenletExit
from gevent.event import AsyncResult
from locust import User, constant, events, task
from locust.env import Environment
from locust.exception import StopUser

from engine.core.config import load_config
from engine.core.messages import Result, encode
from loadtest.bridge import START_TIMEOUT_SECONDS, Bridge, BridgeClosedError, Outcome
from loadtest.mix import Directory, Mix, Planned

USER_COMMANDS_MAX: Final = 1_000_000
USER_SECONDS_MAX: Final = 3_600.0
USER_CUSTOMERS_MAX: Final = 50
RESULT_OVERDUE_SECONDS: Final = 5.0
"""A result still missing this long after publishing, when the test stops, is a failure."""
REQUEST_TYPE: Final = "kafka"


class UnexpectedOutcomeError(Exception):
    """A command whose acknowledgement or result was not the expected one."""


class Shared:
    """What the users of one locust process share: one Bridge (one Client) and the payees."""

    def __init__(self) -> None:
        self.run = f"lc{secrets.token_hex(4)}"
        self.users = 0
        self.bridge: Bridge | None = None
        self.directory: Directory | None = None
        self._connected: Any = None

    def connect(self) -> tuple[Bridge, Directory]:
        """Start the bridge once (the first user does it, the others wait for it)."""
        if self._connected is None:
            self._connected = AsyncResult()
            try:
                bridge = Bridge(load_config().require_kafka())
                self.directory = Directory(bridge.start())
                self.bridge = bridge
                self._connected.set(True)
            except Exception as error:
                self._connected.set_exception(error)
                raise
        self._connected.get(timeout=START_TIMEOUT_SECONDS)
        if self.bridge is None or self.directory is None:
            raise RuntimeError("the bridge did not start")
        return self.bridge, self.directory

    def stop(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None


SHARED: Final = Shared()


def _refresh_clock(environment: Environment, **_: object) -> None:
    """gevent timers count from the hub's cached time, stale by the seconds this file's
    imports took; refresh it, or ``-t`` would end the run that much early."""
    gevent.get_hub().loop.update_now()


def _close_bridge(environment: Environment, **_: object) -> None:
    """Locust quits: stop the users first (they may still be running), then the client."""
    if environment.runner is not None:
        environment.runner.stop()
    SHARED.stop()


events.init.add_listener(_refresh_clock)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_close_bridge)  # type: ignore[no-untyped-call]


class SmallcupsUser(User):
    """One upstream app: its own customers (two in one partition to start), closed loop."""

    wait_time = constant(0)

    def on_start(self) -> None:
        try:
            self.bridge, self.directory = SHARED.connect()
        except Exception as error:
            self._record("connect", Outcome(0.0), 0, str(error))
            raise
        SHARED.users += 1
        self.mix = Mix(random.Random(secrets.randbits(64)), self.directory, self._user_run())
        self.customers: list[int] = []
        self.commands = 0
        self.deadline = time.monotonic() + USER_SECONDS_MAX
        for customer in self.mix.first_customers():
            self._open(customer)
        if len(self.customers) < 2:
            raise StopUser()

    def _user_run(self) -> str:
        return f"{SHARED.run}-u{SHARED.users}"

    def _open(self, customer: int) -> None:
        """Open and fund an account; once both succeed it can pay and be paid."""
        results = [self._run(planned) for planned in self.mix.opening(customer)]
        if all(result is not None and result.accepted for result in results):
            self.customers.append(customer)
            self.directory.add(customer)

    def _payer(self) -> int:
        return self.mix.rng.choice(self.customers)

    def _run(self, planned: Planned) -> Result | None:
        """Publish, record both events, return the Result (None when there was none)."""
        if self.commands >= USER_COMMANDS_MAX or time.monotonic() >= self.deadline:
            raise StopUser()
        self.commands += 1
        sent_at = time.perf_counter()
        try:
            ticket = self.bridge.send(planned.command)
        except BridgeClosedError:
            raise StopUser() from None
        acknowledged = ticket.wait_acknowledged()
        length = len(encode(planned.command))
        self._record(f"publish {planned.name}", acknowledged, length, acknowledged.error)
        if acknowledged.error:
            return None
        try:
            answered = ticket.wait_answered()
        except GreenletExit:
            self._record_overdue(planned, time.perf_counter() - sent_at)
            raise
        problem = answered.error
        if answered.result is not None:
            problem = planned.expectation.failure(answered.result)
        self._record(f"result {planned.name}", answered, 0, problem)
        return answered.result

    def _record_overdue(self, planned: Planned, waited_seconds: float) -> None:
        """The test stops this user while it awaits a result: a failure if long overdue."""
        if waited_seconds >= RESULT_OVERDUE_SECONDS:
            problem = f"no result {waited_seconds:.1f} s after publishing, when the test stopped"
            self._record(f"result {planned.name}", Outcome(waited_seconds), 0, problem)

    def _record(self, name: str, outcome: Outcome, length: int, problem: str) -> None:
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=outcome.elapsed_seconds * 1000.0,
            response_length=length,
            exception=UnexpectedOutcomeError(problem) if problem else None,
            context={},
        )

    @task(55)
    def transfer(self) -> None:
        pair = (self.customers[0], self.customers[1])
        self._run(self.mix.same_partition_transfer(self._payer(), pair))

    @task(15)
    def deposit(self) -> None:
        self._run(self.mix.deposit(self._payer()))

    @task(10)
    def withdraw(self) -> None:
        self._run(self.mix.withdraw(self._payer()))

    @task(5)
    def open_account(self) -> None:
        if len(self.customers) >= USER_CUSTOMERS_MAX:
            self.deposit()
            return
        self._open(self.mix.new_customer())

    @task(5)
    def cross_partition_transfer(self) -> None:
        if self.directory.partitions > 1:
            self._run(self.mix.cross_partition_transfer(self._payer()))

    @task(3)
    def hold_and_void(self) -> None:
        pair = (self.customers[0], self.customers[1])
        payer = self._payer()
        payee = pair[1] if payer == pair[0] else pair[0]
        for planned in self.mix.hold_and_void(payer, payee):
            self._run(planned)

    @task(2)
    def draw_without_line(self) -> None:
        self._run(self.mix.draw_without_line(self._payer()))

    @task(5)
    def invalid_amount(self) -> None:
        self._run(self.mix.invalid_amount(self._payer()))

    @task(5)
    def invalid_currency(self) -> None:
        self._run(self.mix.invalid_currency(self._payer()))
