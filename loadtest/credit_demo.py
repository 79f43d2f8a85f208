"""The demo's credit scenario: invitation-only lines, loans, repayments, holds, business
days and an overdue loan, on the running workers (docs/credit.md).

1. the risk authority registers partner bank ``PARTNER`` in every partition and grants
   a line to one customer in ``SHARE`` (one of them with a one-day term, so its loan
   falls overdue), and a line funded jointly with the partner (it funds
   ``PARTNER_SHARE_BP`` of each draw and earns ``PARTNER_RATE_BP``) to another one in
   ``SHARE``;
2. the first business day is closed in every partition (the next day after the last one
   closed, when an earlier demo started the calendar);
3. every borrower repays what an earlier demo left owing (so a re-run draws within its
   line), draws twice and places a hold for a customer without a line (in any
   partition); then ``DAYS`` business days close one by one, with repayments, posts and
   voids between them;
4. the result of every command is counted by its status and reason;
5. (``partner_statement``, once the books are checked) the partner's clearing statement
   of the day of the draws.

Re-running it on the same stack is safe: lines granted before are kept (``credit_line_exists``),
the calendar goes on from where it stopped, and new ids are used for everything else.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from deploy.local.roles import Role, as_role
from engine.admin.clearing import our_statement
from engine.admin.statement import StatementWriter
from engine.core.authority import RiskSigner
from engine.core.config import Config
from engine.core.keyfiles import read_risk_private_key
from engine.core.messages import (
    CloseBusinessDay,
    Command,
    Draw,
    GrantCreditLine,
    HoldFunds,
    PostHold,
    RegisterPartner,
    Repay,
    Result,
    VoidHold,
)
from engine.core.routing import routing_customers
from engine.kafka.client import Client
from loadtest.driver import Driver

SHARE: Final = 10
"""One customer in this many is granted a line."""
BORROWERS_MAX: Final = 500
DAYS: Final = 4
"""Business days closed after the first one."""
LIMIT: Final = 500_000
LOAN_MAX: Final = 200_000
RATE_BP: Final = 1_825
OVERDUE_RATE_BP: Final = 3_650
TERM_DAYS: Final = 30
RESULTS_TIMEOUT_SECONDS: Final = 120.0
FIRST_DAY_DEFAULT: Final = dt.date(2026, 1, 1)
PARTNER: Final = 7
PARTNER_SHARE_BP: Final = 8_000
PARTNER_RATE_BP: Final = 1_000
STATEMENT_LINES_SHOWN: Final = 4
SETTLE_ALL: Final = 10**9
"""A repayment larger than any demo's loans: it pays what is owed and takes no more."""


@dataclass(slots=True)
class CreditRun:
    """What the scenario sent and how it was answered."""

    first_day: dt.date
    last_day: dt.date
    borrowers: int
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def draw_day(self) -> dt.date:
        """The business day of the scenario's draws (the first day after its start)."""
        return self.first_day + dt.timedelta(days=1)

    def summary(self) -> str:
        answers = ", ".join(f"{name} {count:,}" for name, count in sorted(self.outcomes.items()))
        return (
            f"credit: {self.borrowers} customers invited, business days "
            f"{self.first_day}..{self.last_day} closed; answers: {answers}"
        )


async def partner_statement(config: Config, day: dt.date) -> tuple[bytes, int]:
    """Partner ``PARTNER``'s clearing statement of ``day`` (CSV; a demo's is small) and
    its number of entries."""
    chunks: list[bytes] = []
    async with our_statement(config, PARTNER, day.toordinal()) as (header, entries):
        writer = StatementWriter(chunks.append, "csv", header)
        async for entry in entries:
            writer.add(entry)
    writer.finish()
    return b"".join(chunks), writer.entries


def statement_excerpt(statement: bytes, entries: int) -> list[str]:
    """A statement's header, its first entries, its totals and its hash."""
    text = statement.decode().splitlines()
    lines = text[: 2 + STATEMENT_LINES_SHOWN]
    if entries > STATEMENT_LINES_SHOWN:
        lines.append(f"... {entries - STATEMENT_LINES_SHOWN} more entries")
    return lines + text[-2:]


def first_day(calendars: dict[int, int]) -> dt.date:
    """The day after the latest business day any partition closed (a default to start)."""
    if not calendars:
        return FIRST_DAY_DEFAULT
    return dt.date.fromordinal(max(calendars.values()) + 1)


def borrowers_of(customers: Sequence[int]) -> list[int]:
    """The customers with a line of the bank's own money, then those with a joint line."""
    return list(customers[::SHARE][:BORROWERS_MAX]) + joint_borrowers(customers)


def joint_borrowers(customers: Sequence[int]) -> list[int]:
    return list(customers[SHARE // 2 :: SHARE][:BORROWERS_MAX])


async def run_credit(
    config: Config, customers: Sequence[int], calendars: dict[int, int], run: str
) -> CreditRun:
    key_id, key = read_risk_private_key(config.risk_private_key_path)
    signer = RiskSigner(config.kafka.commands_topic, key_id, key)
    borrowers = borrowers_of(customers)
    payees = [c for c in customers if c not in set(borrowers)]
    start = first_day(calendars)
    scenario = CreditRun(start, start + dt.timedelta(days=DAYS), len(borrowers))
    partitions = config.kafka.partitions
    async with (
        Client(as_role(config, Role.UPSTREAM).kafka) as upstream,
        Client(as_role(config, Role.RISK).kafka) as risk,
    ):

        async def send(client: Client, commands: Sequence[Command]) -> list[Result]:
            driver = Driver(client, window=5_000)
            await driver.send_all(commands)
            if not await driver.wait_all(RESULTS_TIMEOUT_SECONDS):
                raise RuntimeError("credit results missing: are the workers up?")
            results = [driver.score.results[c.id] for c in commands]
            scenario.outcomes.update(_outcome(c, r) for c, r in zip(commands, results, strict=True))
            return results

        def closes(day: dt.date) -> list[Command]:
            date = day.isoformat()
            return [
                signer.sign(CloseBusinessDay(f"close-{date}-p{p}", customer, date))
                for p, customer in enumerate(routing_customers(partitions))
            ]

        await send(risk, closes(start) + _registrations(signer, partitions))
        joint = set(joint_borrowers(customers))
        grants = [_grant(c, c == borrowers[0], joint=c in joint) for c in borrowers]
        await send(risk, [signer.sign(grant) for grant in grants])
        # What an earlier demo lent is repaid first (at most what is owed is taken), so
        # every run draws within its lines: answered nothing_owed the first time.
        await send(upstream, [Repay(f"{run}-settle-{c}", c, SETTLE_ALL, "EUR") for c in borrowers])
        await send(
            upstream,
            [
                Draw(f"{run}-loan-{n}-{c}", c, 50_000 + c % 90_000, "EUR")
                for c in borrowers
                for n in (1, 2)
            ]
            + [
                HoldFunds(
                    f"{run}-hold-{c}",
                    c,
                    1,
                    payees[i % len(payees)],
                    1,
                    7_500,
                    "EUR",
                    _iso(start, 2),
                )
                for i, c in enumerate(borrowers)
            ],
        )
        for day in range(1, DAYS + 1):
            await send(risk, closes(start + dt.timedelta(days=day)))
            if day == 1:
                await send(
                    upstream,
                    [
                        PostHold(f"{run}-post-{c}", c, f"{run}-hold-{c}", 5_000)
                        for c in borrowers[1::2]
                    ]
                    + [VoidHold(f"{run}-void-{c}", c, f"{run}-hold-{c}") for c in borrowers[2::4]],
                )
            if day == 2:
                await send(
                    upstream,
                    [Repay(f"{run}-repay-{c}", c, 60_000, "EUR") for c in borrowers[1:]],
                )
    return scenario


def _grant(customer: int, short: bool, *, joint: bool) -> GrantCreditLine:
    term = 1 if short else TERM_DAYS
    return GrantCreditLine(
        f"line-{customer}", customer, 1, "EUR", LIMIT, RATE_BP, OVERDUE_RATE_BP, LOAN_MAX, term,
        partner=PARTNER if joint else 0,
        partner_share_bp=PARTNER_SHARE_BP if joint else 0,
        partner_rate_bp=PARTNER_RATE_BP if joint else 0,
    )  # fmt: skip


def _registrations(signer: RiskSigner, partitions: int) -> list[Command]:
    """Partner ``PARTNER`` in every partition (the ids of ``smallcups clearing
    register-partner``: a second demo gets the recorded answers)."""
    return [
        signer.sign(
            RegisterPartner(
                f"partner-{PARTNER}-p{p}", customer, PARTNER, "Partner Bank 7", "EUR", "PB7"
            )
        )
        for p, customer in enumerate(routing_customers(partitions))
    ]


def _iso(start: dt.date, days: int) -> str:
    return (start + dt.timedelta(days=days)).isoformat()


def _outcome(command: Command, result: Result) -> str:
    tag = type(command).__struct_config__.tag
    return f"{tag} {result.status.value}" + (f" {result.reason.value}" if result.reason else "")
