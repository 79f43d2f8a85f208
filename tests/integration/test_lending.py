"""Joint lending on the real stack (Postgres and MariaDB cups): two partner banks fund
lines, a day of draws and a day of repayments close, and each partner's clearing
statements are the same bytes whether or not a worker was SIGKILLed while the days
closed and a partition of joint loans moved to the other kind of cup between them."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from deploy.local.roles import Role, as_role
from engine.admin.reconcile import reconcile
from engine.admin.setup import read_shard_map
from engine.core.authority import RiskSigner
from engine.core.config import Config, to_environ
from engine.core.keyfiles import read_risk_private_key
from engine.core.messages import (
    Command,
    Deposit,
    Draw,
    GrantCreditLine,
    OpenAccount,
    RegisterPartner,
    Repay,
    Result,
)
from engine.core.routing import partition_of, routing_customers
from engine.kafka.client import Client
from loadtest.system import System, drop_system, make_system
from shards import cluster
from shards.control import connect
from shards.moves import Step
from tests.integration.system import (
    cup_balances,
    final_results,
    replay_system,
    signed_closes,
    submit_all,
)

pytestmark = pytest.mark.integration

PARTITIONS = 8
RESULTS_TIMEOUT_SECONDS = 120.0
FIRST_DAY = dt.date(2026, 5, 1)
CUSTOMERS = list(range(100, 140))
PARTNERS = {7: (8_000, 1_000), 8: (5_000, 500)}
"""partner -> (its share of each draw, its rate), in basis points."""


@pytest.fixture
async def systems(stack: Config, tmp_path: Path) -> AsyncIterator[list[System]]:
    made = [
        await make_system(stack, tmp_path / name, partitions=PARTITIONS, cups=1, mysql_cups=1)
        for name in ("calm", "killed")
    ]
    yield made
    for system in made:
        await drop_system(stack, system)


def _date(day: int) -> str:
    return (FIRST_DAY + dt.timedelta(days=day)).isoformat()


def _partner_of(customer: int) -> int:
    """Half the lines are partner 7's, a quarter partner 8's, the rest the bank's own."""
    return {0: 7, 1: 7, 2: 8}.get(customer % 4, 0)


def _closes(signer: RiskSigner, day: int) -> list[Command]:
    return signed_closes(signer, FIRST_DAY + dt.timedelta(days=day), PARTITIONS)


def _registrations(signer: RiskSigner) -> list[Command]:
    return [
        signer.sign(
            RegisterPartner(f"partner-{n}-p{p}", customer, n, f"Partner Bank {n}", "EUR", f"PB{n}")
        )
        for n in PARTNERS
        for p, customer in enumerate(routing_customers(PARTITIONS))
    ]


def _grants(signer: RiskSigner) -> list[Command]:
    grants: list[Command] = []
    for customer in CUSTOMERS:
        partner = _partner_of(customer)
        share, rate = PARTNERS.get(partner, (0, 0))
        grants.append(
            signer.sign(
                GrantCreditLine(
                    f"line-{customer}", customer, 1, "EUR", 1_000_000, 1_825, 3_650, 400_000,
                    30, partner=partner, partner_share_bp=share, partner_rate_bp=rate,
                )
            )
        )  # fmt: skip
    return grants


async def _move_a_joint_partition(system: System) -> str:
    """Move the partition of the first joint line to the other cup (Postgres <->
    MariaDB), loans, partner accounts and clearing entries with it."""
    shard_map = await read_shard_map(system.config)
    customer = next(c for c in CUSTOMERS if _partner_of(c))
    partition = partition_of(customer, PARTITIONS)
    (target,) = [cup for cup in shard_map.cups if cup != shard_map.cup_of[partition]]
    control = await connect(system.config.control_dsn, system.config.shards)
    try:
        move = await cluster.move_partition(control, partition, target, system.config.shards)
    finally:
        await control.close()
    assert move.step is Step.DONE
    return f"partition {partition} moved to cup {target}: {move.summary()}"


async def _run_days(system: System, kill: bool) -> list[Command]:
    """Two business days of joint lending; with ``kill``, the first worker is SIGKILLed
    right after each day's closes are published, and a partition holding joint loans
    moves to the other cup between the days. Every command sent."""
    system.start_worker()
    system.start_worker()
    config = system.config
    key_id, key = read_risk_private_key(config.risk_private_key_path)
    signer = RiskSigner(config.kafka.commands_topic, key_id, key)
    sent: list[Command] = []
    async with (
        Client(as_role(config, Role.UPSTREAM).kafka) as customers,
        Client(as_role(config, Role.RISK).kafka) as risk,
    ):

        async def send(client: Client, commands: Sequence[Command]) -> list[Result]:
            sent.extend(commands)
            return await submit_all(client, commands)

        opening: list[Command] = [OpenAccount(f"open-{c}", c, 1, "EUR") for c in CUSTOMERS]
        opening += [Deposit(f"fund-{c}", c, 1, 10_000_000, "EUR") for c in CUSTOMERS]
        assert all(r.accepted for r in await send(customers, opening))
        setup = _closes(signer, 0) + _registrations(signer)
        assert all(r.accepted for r in await send(risk, setup))
        assert all(r.accepted for r in await send(risk, _grants(signer)))
        draws = [Draw(f"loan-{c}-{n}", c, 10_000 * n + c, "EUR") for c in CUSTOMERS for n in (1, 2)]
        assert all(r.accepted for r in await send(customers, draws))
        for day, after in ((1, "repay"), (2, "")):
            closes = _closes(signer, day)
            sent.extend(closes)
            futures = [risk.expect(c) for c in closes]
            for command in closes:
                await risk.publish(command)
            if kill:
                await asyncio.sleep(0.05)
                system.workers[-2].kill()
                system.start_worker()
            results = await asyncio.wait_for(asyncio.gather(*futures), RESULTS_TIMEOUT_SECONDS)
            assert all(r.accepted for r in results), results
            if kill and after:
                print(f"\n{await _move_a_joint_partition(system)}")
            if after:
                repays = [Repay(f"repay-{c}", c, 15_000 + c, "EUR") for c in CUSTOMERS]
                assert all(r.accepted for r in await send(customers, repays))
    return sent


def _statement(system: System, partner: int, day: int, path: Path) -> bytes:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "clearing", "report", "--partner", str(partner),
         "--date", _date(day), "--format", "csv", "--output", str(path)],
        env={**to_environ(system.config), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return path.read_bytes()


async def test_statements_are_the_same_with_a_worker_killed_while_days_close(
    systems: list[System], tmp_path: Path
) -> None:
    calm, killed = systems
    sent = {name: await _run_days(system, kill) for name, system, kill in (
        ("calm", calm, False), ("killed", killed, True))}  # fmt: skip
    for name, system in (("calm", calm), ("killed", killed)):
        report = await reconcile(system.config, topics=True)
        assert not any(report.problems.values()), dict(report.problems)
        finals = await final_results(system.config.kafka)
        assert all(len(finals[c.id]) == 1 for c in sent[name]), "one result per command"
        assert await cup_balances(system) == await replay_system(system.config)
    lines = 0
    for partner in PARTNERS:
        for day in (1, 2):
            ours = _statement(calm, partner, day, tmp_path / f"calm-{partner}-{day}.csv")
            theirs = _statement(killed, partner, day, tmp_path / f"killed-{partner}-{day}.csv")
            assert ours == theirs, (partner, day)
            assert b"# sha256 " in ours and b"net=" in ours
            lines += ours.count(b"\n")
    print(
        f"\nlending: {len(PARTNERS)} partners, {len(CUSTOMERS)} lines, two days closed with"
        f" and without SIGKILLs; {lines} statement lines identical, reconcile clean"
    )
