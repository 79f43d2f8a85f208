"""What a bench run is asked for (sizes, modes, time bounds) and what each mode reports."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec

from engine.core.config import Config
from engine.core.errors import ConfigError
from engine.core.messages import Command, Deposit, Privileged, Transfer, Withdraw
from loadtest.system import System, make_system
from loadtest.workload import Workload, WorkloadShape
from shards.cup_admin import CupKind

MARIADB_SUFFIX: Final = "_mariadb"
"""A mode of this suffix runs on MariaDB cups; every other mode on Postgres cups."""
PLAINTEXT_SUFFIX: Final = "_plaintext"
"""A mode of this suffix runs on a second local stack with security off (plaintext Kafka
and Postgres, no passwords): the same engine, to measure what TLS and SCRAM cost."""
MODES: Final = (
    "raw_pipe",
    "db_ceiling",
    "db_ceiling_mariadb",
    "engine_1w",
    "engine_2w",
    "engine_1w_mariadb",
    "engine_2w_mariadb",
    "engine_1w_plaintext",
    "engine_2w_plaintext",
    "engine_1w_credit",
    "kafka_floor",
    "naive",
    "pgbench",
)
MODE_ALIASES: Final = {
    "engine": ("engine_1w", "engine_2w"),
    "mariadb": ("db_ceiling_mariadb", "engine_1w_mariadb", "engine_2w_mariadb"),
    "security": ("engine_1w", "engine_2w", "engine_1w_plaintext", "engine_2w_plaintext"),
    "credit": ("engine_1w", "engine_1w_credit"),
    "all": MODES,
}
ENGINE_WORKERS: Final = {
    "engine_1w": 1,
    "engine_2w": 2,
    "engine_1w_mariadb": 1,
    "engine_2w_mariadb": 2,
    "engine_1w_plaintext": 1,
    "engine_2w_plaintext": 2,
    "engine_1w_credit": 1,
}
BACKEND_PAIRS: Final = (
    ("db_ceiling", "db_ceiling_mariadb"),
    ("engine_1w", "engine_1w_mariadb"),
    ("engine_2w", "engine_2w_mariadb"),
)
"""Modes measured on each kind of cup in one run: the report sets them side by side."""
CREDIT_SUFFIX: Final = "_credit"
"""A mode of this suffix runs the engine on a load with draws and repayments in it
(``--credit`` percent of the commands), every customer holding a credit line."""
CREDIT_PAIRS: Final = (("engine_1w", "engine_1w_credit"),)
"""The transfers-only engine and the same engine with credit in the mix, side by side."""
SECURITY_PAIRS: Final = (
    ("engine_1w", "engine_1w_plaintext"),
    ("engine_2w", "engine_2w_plaintext"),
)
"""Modes measured with security on and off in one run, set side by side too."""


def backend_of(mode: str) -> CupKind:
    return CupKind.MYSQL if mode.endswith(MARIADB_SUFFIX) else CupKind.POSTGRES


COMMANDS_MAX: Final = 5_000_000
"""Most load commands one run publishes (memory: every command is held in the driver)."""
RUN_PREFIX: Final = "b"
"""Command ids are ``b-<kind>-<n>``: the same ids in every mode (each has fresh topics)."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    accounts: int = 100_000
    partitions: int = 64
    cups: int = 4
    transfers: int = 300_000
    """Commands of the measured load (transfers, plus deposits/withdrawals if shares > 0)."""
    cross_percent: int = 20
    deposit_percent: int = 0
    withdraw_percent: int = 0
    seed: int = 7
    modes: tuple[str, ...] = MODES
    naive_seconds: float = 30.0
    pgbench_seconds: float = 30.0
    pgbench_clients: int = 8
    latency_seconds: float = 10.0
    ceiling_batch_records: int = 500
    """Records per partition batch fed to the fenced commit by ``db_ceiling``."""
    results_timeout_seconds: float = 600.0
    """Longest wait for the results of one load phase before the mode fails."""
    runs: int = 1
    """Times every mode runs; the report gives each run and the medians."""
    misrouted_percent: int = 0
    """Share of the engine modes' commands published to a partition next to their
    customer's: what a producer with another partitioner costs (each is forwarded)."""
    credit_percent: int = 20
    """Share of the credit modes' commands that are draws or repayments."""

    def __post_init__(self) -> None:
        if self.accounts < 2:
            raise ConfigError("--accounts must be >= 2")
        if not 1 <= self.transfers <= COMMANDS_MAX:
            raise ConfigError(f"--transfers must be in 1..{COMMANDS_MAX}")
        if not 1 <= self.cups <= self.partitions:
            raise ConfigError("--cups must be in 1..partitions")
        for name in ("naive_seconds", "pgbench_seconds", "latency_seconds"):
            if not 1.0 <= getattr(self, name) <= 3_600.0:
                raise ConfigError(f"{name} must be in 1..3600 seconds")
        if not 1 <= self.runs <= 10:
            raise ConfigError("--runs must be in 1..10")
        if not 1 <= self.pgbench_clients <= 64:
            raise ConfigError("--pgbench-clients must be in 1..64")
        if not 0 <= self.misrouted_percent <= 100:
            raise ConfigError("--misrouted must be in 0..100")
        if not 0 <= self.credit_percent <= 100 - self.deposit_percent - self.withdraw_percent:
            raise ConfigError("--credit must be in 0..100 less the deposits and withdrawals")
        if not 1 <= self.ceiling_batch_records <= 100_000:
            raise ConfigError("--ceiling-batch must be in 1..100000")
        unknown = [mode for mode in self.modes if mode not in MODES]
        if unknown or not self.modes:
            raise ConfigError(f"unknown modes {unknown}; choose from {', '.join(MODES)}")

    def shape(self, *, credit: bool = False) -> WorkloadShape:
        return WorkloadShape(
            customers=self.accounts,
            partitions=self.partitions,
            deposit_share_percent=self.deposit_percent,
            withdraw_share_percent=self.withdraw_percent,
            cross_share_percent=self.cross_percent,
            credit_share_percent=self.credit_percent if credit else 0,
            seed=self.seed,
            run=RUN_PREFIX,
        )


def parse_modes(text: str) -> tuple[str, ...]:
    """``raw_pipe,engine`` -> the modes in run order (aliases: MODE_ALIASES)."""
    wanted: set[str] = set()
    for name in (part.strip() for part in text.split(",")):
        if name:
            wanted.update(MODE_ALIASES.get(name, (name,)))
    unknown = sorted(wanted - set(MODES))
    if unknown:
        names = ", ".join([*MODES, *MODE_ALIASES])
        raise ConfigError(f"unknown modes {unknown}; choose from {names}")
    return tuple(mode for mode in MODES if mode in wanted)


@dataclass(slots=True)
class Load:
    """The seeded workload: the set-up (open and fund), the measured load, and more to come."""

    setup: list[Command]
    commands: list[Command]
    workload: Workload
    """Continues after ``commands`` (the open-loop latency phases draw from it)."""
    initial_total: int = 0
    """Money the set-up deposits (minor units)."""
    privileged: list[Privileged] = field(default_factory=list)
    """The risk authority's part of the set-up, unsigned (each system signs it with its
    own key): credit lines and the first business day, for a credit mode."""
    credit: Load | None = None
    """The load of the credit modes, when one runs."""


def make_load(options: BenchOptions) -> Load:
    load = _load(options, credit=False)
    if any(mode.endswith(CREDIT_SUFFIX) for mode in options.modes):
        load.credit = _load(options, credit=True)
    return load


def _load(options: BenchOptions, *, credit: bool) -> Load:
    workload = Workload(options.shape(credit=credit))
    setup = list(workload.opening())
    privileged = list(workload.credit_opening()) if credit else []
    commands = [workload.next_command() for _ in range(options.transfers)]
    initial = sum(c.amount for c in setup if isinstance(c, Deposit))
    return Load(setup, commands, workload, initial, privileged)


def transferred(commands: list[Command]) -> int:
    """A checksum of a command list: the sum of its amounts."""
    return sum(c.amount for c in commands if isinstance(c, Transfer | Deposit | Withdraw))


class Phase(msgspec.Struct, kw_only=True):
    """An open-loop latency phase: its rate, its publish-to-result percentiles and the CPU
    every process kind spent per 1,000 of its commands."""

    rate_per_second: float = 0.0
    commands: int = 0
    latency_ms: dict[str, float] = msgspec.field(default_factory=dict)
    cpu_seconds_per_1k: dict[str, float] = msgspec.field(default_factory=dict)


class ModeResult(msgspec.Struct, kw_only=True):
    """One mode's measurement, as printed and as written to the JSON report."""

    mode: str
    commands: int = 0
    seconds: float = 0.0
    rate_per_second: float = 0.0
    cpu_seconds_per_1k: dict[str, float] = msgspec.field(default_factory=dict)
    latency_ms: dict[str, float] = msgspec.field(default_factory=dict)
    """The half-rate phase's percentiles (``phases["half"]``), kept at the top for the
    tables that compare modes."""
    latency_rate_per_second: float = 0.0
    phases: dict[str, Phase] = msgspec.field(default_factory=dict)
    """The engines' open-loop phases after the maximum: ``half`` and ``tenth`` of it
    (kafka_floor: ``half``, at the engine's half rate)."""
    verified: bool = False
    checks: list[str] = msgspec.field(default_factory=list)
    """What was verified, or why the mode failed."""
    notes: dict[str, float] = msgspec.field(default_factory=dict)


@dataclass(slots=True)
class Checks:
    """A mode's verifications: each passes or names what it found."""

    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def expect(self, condition: bool, what: str, found: object = "") -> None:
        if condition:
            self.passed.append(what)
        else:
            self.failed.append(f"FAILED {what}: {found}")

    def apply(self, result: ModeResult) -> ModeResult:
        result.verified = not self.failed and bool(self.passed)
        result.checks = self.failed + self.passed
        return result


async def fresh_system(base: Config, options: BenchOptions, mode: str, log_dir: Path) -> System:
    """New databases and topics for one mode, named ``b<mode><milliseconds>``, its cups
    of the mode's kind."""
    run = f"b{mode.replace('_', '')}{time.time_ns() // 1_000_000 % 10**10}"
    mysql = backend_of(mode) is CupKind.MYSQL
    return await make_system(
        base,
        log_dir,
        partitions=options.partitions,
        cups=0 if mysql else options.cups,
        mysql_cups=options.cups if mysql else 0,
        run=run,
    )


def rate_of(commands: int, seconds: float) -> float:
    return commands / seconds if seconds > 0 and math.isfinite(seconds) else 0.0
