"""Revolving credit and holds on the real stack (Postgres and MariaDB cups): a credit
scenario over several business days with a worker SIGKILLed while days are closing, and
what a producer without the risk key can and cannot do to a credit line."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import pytest
from aiokafka.errors import TopicAuthorizationFailedError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deploy.local.prometheus_throwaway import free_port
from deploy.local.roles import Role, as_role
from engine.admin.reconcile import reconcile
from engine.core.authority import RiskSigner
from engine.core.config import Config, to_environ
from engine.core.keyfiles import read_risk_private_key
from engine.core.messages import (
    Command,
    Deposit,
    Draw,
    GrantCreditLine,
    HoldFunds,
    OpenAccount,
    PostHold,
    Reason,
    Repay,
    Result,
    Status,
    VoidHold,
    encode,
)
from engine.core.routing import customer_key
from engine.kafka.client import Client
from loadtest.bench.scrape import totals, wait_owning
from loadtest.system import System, drop_system, make_system
from tests.integration.system import (
    cup_balances,
    final_results,
    replay_system,
    signed_closes,
    submit_all,
    upstream_producer,
)

pytestmark = pytest.mark.integration

PARTITIONS = 8
RESULTS_TIMEOUT_SECONDS = 120.0
FIRST_DAY = dt.date(2026, 3, 1)
CUSTOMERS = list(range(1, 61))
BORROWERS = [c for c in CUSTOMERS if c % 3]
"""Two customers in three have a line; the others are refused ``no_credit_line``."""
SHORT_TERM = BORROWERS[:6]
"""Their loans fall due after 2 days and are left unpaid: overdue."""


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    made = await make_system(stack, tmp_path, partitions=PARTITIONS, cups=1, mysql_cups=1)
    yield made
    await drop_system(stack, made)


def _closes(signer: RiskSigner, day: int) -> list[Command]:
    return signed_closes(signer, FIRST_DAY + dt.timedelta(days=day), PARTITIONS)


def _by_id(results: Sequence[Result]) -> dict[str, Result]:
    return {r.command_id: r for r in results}


async def test_a_credit_book_over_five_days_with_a_kill_while_closing(system: System) -> None:
    ports = [free_port() for _ in range(3)]
    system.start_worker(_metrics_on(ports[0]))
    system.start_worker(_metrics_on(ports[1]))
    config = system.config
    key_id, key = read_risk_private_key(config.risk_private_key_path)
    signer = RiskSigner(config.kafka.commands_topic, key_id, key)
    sent: list[Command] = []
    async with (
        Client(as_role(config, Role.UPSTREAM).kafka) as customers,
        Client(as_role(config, Role.RISK).kafka) as risk,
    ):

        async def client_side(commands: Sequence[Command]) -> dict[str, Result]:
            sent.extend(commands)
            return _by_id(await submit_all(customers, commands))

        async def risk_side(commands: Sequence[Command]) -> dict[str, Result]:
            sent.extend(commands)
            return _by_id(await submit_all(risk, commands))

        opened = await client_side(
            [OpenAccount(f"open-{c}", c, 1, "EUR") for c in CUSTOMERS]
            + [Deposit(f"fund-{c}", c, 1, 20_000, "EUR") for c in CUSTOMERS]
        )
        assert all(r.accepted for r in opened.values()), system.worker_logs()
        early = await client_side([Draw("too-early", BORROWERS[0], 100, "EUR")])
        assert early["too-early"].reason is Reason.NO_CREDIT_LINE
        started = await risk_side(_closes(signer, 0))
        assert all(r.accepted for r in started.values())
        assert all(r.accepted for r in (await risk_side(_grants(signer))).values())

        draws = await client_side(
            [Draw(f"loan-a-{c}", c, 40_000 + c, "EUR") for c in CUSTOMERS]
            + [Draw(f"loan-b-{c}", c, 30_000, "EUR") for c in BORROWERS]
        )
        for c in CUSTOMERS:
            expected = Reason.NONE if c in BORROWERS else Reason.NO_CREDIT_LINE
            assert draws[f"loan-a-{c}"].reason is expected, draws[f"loan-a-{c}"]
        over = await client_side([Draw(f"over-{c}", c, 30_001, "EUR") for c in BORROWERS[:3]])
        assert {r.reason for r in over.values()} == {Reason.CREDIT_LIMIT_EXCEEDED}

        holds = await client_side(_holds())
        assert all(r.accepted for r in holds.values())

        for day in (1, 2, 3):
            closed = await risk_side(_closes(signer, day))
            assert all(r.accepted for r in closed.values()), closed
            if day == 2:
                posts = await client_side(
                    [PostHold(f"post-{c}", c, f"hold-{c}", 4_000) for c in BORROWERS[::2]]
                    + [VoidHold(f"void-{c}", c, f"hold-{c}") for c in BORROWERS[1::4]]
                )
                assert all(r.status is not Status.REJECTED for r in posts.values()), posts
        repaid = await client_side(
            [Repay(f"repay-{c}", c, 50_000, "EUR") for c in BORROWERS if c not in SHORT_TERM]
        )
        assert all(r.accepted for r in repaid.values()), repaid
        assert all(r.detail.startswith("paid interest ") for r in repaid.values())

        # Days 4 and 5 close while a worker dies: SIGKILL right after they are published.
        closes = _closes(signer, 4) + _closes(signer, 5)
        sent.extend(closes)
        late = await _close_with_a_kill(system, risk, closes, ports[2])
        assert all(r.accepted for r in late), late

        overdue = await client_side([Draw(f"again-{c}", c, 1, "EUR") for c in SHORT_TERM])
        assert {r.reason for r in overdue.values()} == {Reason.LOAN_OVERDUE}

    await _check_gauges(ports[1:])
    report = await reconcile(config, topics=True)
    assert not any(report.problems.values()), dict(report.problems)
    finals = await final_results(config.kafka)
    assert all(len(finals[c.id]) == 1 for c in sent), "one final result per command"
    assert await cup_balances(system) == await replay_system(config)
    print(
        f"\ncredit: {len(BORROWERS)} lines, {len(BORROWERS) * 2} loans drawn, "
        f"{2 * len(SHORT_TERM)} left overdue, 6 business days closed in {PARTITIONS} partitions "
        f"(one SIGKILL while closing), {len(sent)} commands, one result each, reconcile clean,"
        " balances equal the pure replay"
    )


_OVERDUE = "smallcups_credit_overdue_loans"
_OPEN = "smallcups_credit_loans_open"
_OUTSTANDING = "smallcups_loans_outstanding_minor_units"


async def _close_with_a_kill(
    system: System, risk: Client, closes: Sequence[Command], port: int
) -> list[Result]:
    """Publish ``closes``, SIGKILL the first worker right after, start another (its
    metrics on ``port``): every close's result."""
    futures = [risk.expect(c) for c in closes]
    for command in closes:
        await risk.publish(command)
    await asyncio.sleep(0.05)
    system.workers[0].kill()
    system.start_worker(_metrics_on(port))
    return list(await asyncio.wait_for(asyncio.gather(*futures), RESULTS_TIMEOUT_SECONDS))


async def _check_gauges(ports: list[int]) -> None:
    """The live workers' credit gauges, once they own every partition between them."""
    await wait_owning(ports, PARTITIONS, 60)
    gauges = await totals(ports, [_OVERDUE, _OPEN, _OUTSTANDING])
    # Every short-term borrower left both loans unpaid; the others repaid the first one.
    assert gauges[_OVERDUE] == 2 * len(SHORT_TERM)
    assert gauges[_OPEN] == len(BORROWERS) + len(SHORT_TERM)
    assert gauges[_OUTSTANDING] > 0


def _metrics_on(port: int) -> dict[str, str]:
    return {"SMALLCUPS_WORKER_METRICS_PORT": str(port)}


def _grants(signer: RiskSigner) -> list[Command]:
    return [
        signer.sign(
            GrantCreditLine(
                f"grant-{c}",
                c,
                1,
                "EUR",
                100_000,
                1_825,
                3_650,
                60_000,
                2 if c in SHORT_TERM else 30,
            )
        )
        for c in BORROWERS
    ]


def _holds() -> list[Command]:
    """A hold of 5,000 by every borrower for a customer without a line (in any partition)."""
    payees = [c for c in CUSTOMERS if c not in BORROWERS]
    return [
        HoldFunds(f"hold-{c}", c, 1, payees[i % len(payees)], 1, 5_000, "EUR", _date(3))
        for i, c in enumerate(BORROWERS)
    ]


def _date(day: int) -> str:
    return (FIRST_DAY + dt.timedelta(days=day)).isoformat()


async def test_only_the_risk_key_grants_or_closes_days(system: System) -> None:
    """A grant or a close without the risk key, or copied onto the commands topic, is
    refused, and a customer can touch neither another's line nor another's hold."""
    system.start_worker()
    config = system.config
    key_id, key = read_risk_private_key(config.risk_private_key_path)
    signer = RiskSigner(config.kafka.commands_topic, key_id, key)
    stranger = RiskSigner(config.kafka.commands_topic, key_id, Ed25519PrivateKey.generate())
    grant = GrantCreditLine("g-1", 7, 1, "EUR", 10**15, 0, 0, 10**15, 3_650)
    async with (
        Client(as_role(config, Role.UPSTREAM).kafka) as customers,
        Client(as_role(config, Role.RISK).kafka) as risk,
    ):
        setup = await submit_all(
            customers,
            [
                OpenAccount("o-7", 7, 1, "EUR"),
                OpenAccount("o-8", 8, 1, "EUR"),
                Deposit("d-8", 8, 1, 1_000, "EUR"),
            ],
        )
        assert all(r.accepted for r in setup)
        refused = await submit_all(
            risk,
            [
                grant,
                stranger.sign(msgspec.structs.replace(grant, id="g-2")),
                msgspec.structs.replace(signer.sign(grant), id="g-3"),
            ],
        )
        assert [r.reason for r in refused] == [
            Reason.NOT_SIGNED,
            Reason.BAD_SIGNATURE,
            Reason.BAD_SIGNATURE,
        ]
        started = await submit_all(risk, _closes(signer, 0))
        assert all(r.accepted for r in started)
        stolen = await submit_all(
            customers,
            [
                Draw("steal", 7, 1_000, "EUR"),
                HoldFunds("h-8", 8, 1, 7, 1, 900, "EUR", _date(2)),
                PostHold("p-by-7", 7, "h-8", 900),
                VoidHold("v-by-7", 7, "h-8"),
            ],
        )
        assert [r.reason for r in stolen] == [
            Reason.NO_CREDIT_LINE,
            Reason.NONE,
            Reason.HOLD_NOT_FOUND,
            Reason.HOLD_NOT_FOUND,
        ]
        signed_close = _closes(signer, 1)[0]
        with pytest.raises(TopicAuthorizationFailedError):
            await customers.submit(signed_close, 30)
        copied = customers.expect(signed_close)
        producer = upstream_producer(config)
        await producer.start()
        try:
            await producer.send_and_wait(
                config.kafka.commands_topic,
                encode(signed_close),
                key=customer_key(signed_close.customer),
            )
        finally:
            await producer.stop()
        misrouted = await asyncio.wait_for(copied, RESULTS_TIMEOUT_SECONDS)
        assert misrouted.reason is Reason.MISROUTED
    report = await reconcile(config, topics=True)
    assert not any(report.problems.values()), dict(report.problems)


def _cli(system: System, role: Role, *args: str) -> subprocess.CompletedProcess[str]:
    """``smallcups ARGS`` as ``role`` (its Kafka user; the risk key comes with the stack)."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env={**to_environ(as_role(system.config, role)), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_credit_commands_and_the_scheduler_from_the_command_line(
    system: System,
) -> None:
    system.start_worker()
    async with Client(as_role(system.config, Role.UPSTREAM).kafka) as client:
        opened = await client.submit(OpenAccount("cli-open", 9, 1, "EUR"), 60)
        funded = await client.submit(Deposit("cli-fund", 9, 1, 1_000, "EUR"), 60)
    assert opened.accepted and funded.accepted
    started = _cli(system, Role.RISK, "scheduler", "--through", _date(0))
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"closed {_date(0)} in {PARTITIONS} partitions ({PARTITIONS} accepted" in started.stdout
    terms = ["--rate-bp", "3650", "--overdue-rate-bp", "7300", "--loan-max", "50000"]
    granted = _cli(
        system, Role.RISK, "credit", "grant", "9/1", "--currency", "EUR", "--limit", "100000",
        *terms, "--term-days", "30",
    )  # fmt: skip
    assert granted.returncode == 0, granted.stdout + granted.stderr
    drawn = _cli(system, Role.UPSTREAM, "credit", "draw", "9", "36500", "--currency", "EUR")
    assert drawn.returncode == 0 and '"status":"accepted"' in drawn.stdout, drawn
    days = _cli(system, Role.RISK, "scheduler", "--from", _date(1), "--through", _date(3))
    assert days.returncode == 0, days.stdout + days.stderr
    assert [line.split()[1] for line in days.stdout.splitlines()] == [_date(d) for d in (1, 2, 3)]
    repaid = _cli(system, Role.UPSTREAM, "credit", "repay", "9", "100000", "--currency", "EUR")
    # 10% a day on 36,500 is 36.5: 36, 37, 36 with the half carried
    assert '"detail":"paid interest 109, principal 36500; 63391 more than owed' in repaid.stdout
    refused = _cli(system, Role.UPSTREAM, "credit", "draw", "9", "1.5", "--currency", "EUR")
    assert refused.returncode == 2, refused
    today = dt.datetime.now(dt.UTC).date().isoformat()
    early = _cli(system, Role.RISK, "scheduler", "--through", today)
    assert early.returncode == 2 and "has not ended yet" in early.stderr, early
    report = await reconcile(system.config, topics=True)
    assert not any(report.problems.values()), dict(report.problems)
