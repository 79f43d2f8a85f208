"""The bench's table, its ratios, and the same as one JSON document."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from loadtest.bench.cpu import KINDS
from loadtest.bench.options import (
    BACKEND_PAIRS,
    CREDIT_PAIRS,
    CREDIT_SUFFIX,
    ENGINE_WORKERS,
    PLAINTEXT_SUFFIX,
    SECURITY_PAIRS,
    BenchOptions,
    ModeResult,
    Phase,
    backend_of,
)
from shards.cup_admin import CupKind


class BenchReport(msgspec.Struct, kw_only=True):
    options: dict[str, Any]
    modes: list[ModeResult]
    engine_mode: str
    """The engine mode the ratios use: the fastest one."""
    ratios: dict[str, float]
    backend_ratios: dict[str, float] = msgspec.field(default_factory=dict)
    """Per mode measured on both kinds of cup: its MariaDB rate / its Postgres rate."""
    security_ratios: dict[str, float] = msgspec.field(default_factory=dict)
    """Per engine mode measured with security on and off: secure rate / plaintext rate."""
    credit_ratios: dict[str, float] = msgspec.field(default_factory=dict)
    """Per engine mode measured with credit in the mix too: credit-mix rate / its rate."""
    ok: bool
    runs: list[BenchReport] = msgspec.field(default_factory=list)
    """With ``--runs N`` > 1: every run's report; the fields above are their medians."""


def build_report(options: BenchOptions, results: Sequence[ModeResult]) -> BenchReport:
    rates = {r.mode: r.rate_per_second for r in results if r.rate_per_second > 0}
    engines = [
        m
        for m in ENGINE_WORKERS
        if m in rates
        and backend_of(m) is CupKind.POSTGRES
        and not m.endswith((PLAINTEXT_SUFFIX, CREDIT_SUFFIX))
    ]
    engine_mode = max(engines, key=lambda mode: rates[mode]) if engines else ""
    ratios: dict[str, float] = {}
    if engine_mode:
        engine = rates[engine_mode]
        for baseline in ("naive", "pgbench"):
            if baseline in rates:
                ratios[f"engine/{baseline}"] = round(engine / rates[baseline], 2)
        if "raw_pipe" in rates and "db_ceiling" in rates:
            pipe, ceiling = rates["raw_pipe"], rates["db_ceiling"]
            ratios["engine/min(raw_pipe,db_ceiling)"] = round(engine / min(pipe, ceiling), 3)
            combined = 1 / (1 / pipe + 1 / ceiling)
            ratios["engine/floor(raw_pipe,db_ceiling)"] = round(engine / combined, 3)
    backend_ratios = {
        postgres: round(rates[mariadb] / rates[postgres], 3)
        for postgres, mariadb in BACKEND_PAIRS
        if postgres in rates and mariadb in rates
    }
    security_ratios = {
        secure: round(rates[secure] / rates[plaintext], 3)
        for secure, plaintext in SECURITY_PAIRS
        if secure in rates and plaintext in rates
    }
    credit_ratios = {
        plain: round(rates[credit] / rates[plain], 3)
        for plain, credit in CREDIT_PAIRS
        if plain in rates and credit in rates
    }
    return BenchReport(
        options={**dataclasses.asdict(options), "modes": list(options.modes)},
        modes=list(results),
        engine_mode=engine_mode,
        ratios=ratios,
        backend_ratios=backend_ratios,
        security_ratios=security_ratios,
        credit_ratios=credit_ratios,
        ok=bool(results) and all(r.verified for r in results),
    )


def median_report(runs: Sequence[BenchReport]) -> BenchReport:
    """Per mode, the median of each figure over the runs; the median of each ratio."""
    modes = []
    for mode in dict.fromkeys(r.mode for run in runs for r in run.modes):
        results = [r for run in runs for r in run.modes if r.mode == mode]
        modes.append(
            ModeResult(
                mode=mode,
                commands=int(statistics.median(r.commands for r in results)),
                seconds=round(statistics.median(r.seconds for r in results), 3),
                rate_per_second=round(statistics.median(r.rate_per_second for r in results), 1),
                cpu_seconds_per_1k=_medians([r.cpu_seconds_per_1k for r in results], 4),
                latency_ms=_medians([r.latency_ms for r in results], 2),
                latency_rate_per_second=round(
                    statistics.median(r.latency_rate_per_second for r in results), 1
                ),
                phases=_median_phases([r.phases for r in results]),
                verified=all(r.verified for r in results),
                checks=[c for r in results for c in r.checks if c.startswith("FAILED")],
                notes=_medians([r.notes for r in results], 1),
            )
        )
    return BenchReport(
        options=runs[0].options,
        modes=modes,
        engine_mode=statistics.mode(run.engine_mode for run in runs),
        ratios=_medians([run.ratios for run in runs], 3),
        backend_ratios=_medians([run.backend_ratios for run in runs], 3),
        security_ratios=_medians([run.security_ratios for run in runs], 3),
        credit_ratios=_medians([run.credit_ratios for run in runs], 3),
        ok=all(run.ok for run in runs),
        runs=list(runs),
    )


def _median_phases(values: Sequence[dict[str, Phase]]) -> dict[str, Phase]:
    names = dict.fromkeys(name for value in values for name in value)
    phases = {}
    for name in names:
        runs = [value[name] for value in values if name in value]
        phases[name] = Phase(
            rate_per_second=round(statistics.median(p.rate_per_second for p in runs), 1),
            commands=int(statistics.median(p.commands for p in runs)),
            latency_ms=_medians([p.latency_ms for p in runs], 2),
            cpu_seconds_per_1k=_medians([p.cpu_seconds_per_1k for p in runs], 4),
        )
    return phases


def _medians(values: Sequence[dict[str, float]], digits: int) -> dict[str, float]:
    names = dict.fromkeys(name for value in values for name in value)
    return {
        name: round(statistics.median(v[name] for v in values if name in v), digits)
        for name in names
    }


def format_report(report: BenchReport) -> str:
    header = ["mode", "cmds/s", "commands"] + [f"cpu {k}" for k in KINDS]
    header += ["cpu total", "p50 ms", "p99 ms", "p999 ms", "@ rate/s", "verified"]
    rows = [header]
    for result in report.modes:
        cpu = result.cpu_seconds_per_1k
        latency = result.latency_ms
        rows.append(
            [
                result.mode,
                f"{result.rate_per_second:,.0f}",
                f"{result.commands:,}",
                *(_number(cpu.get(kind)) for kind in KINDS),
                _number(sum(cpu.values()) if cpu else None),
                *(_number(latency.get(p), 1) for p in ("p50", "p99", "p999")),
                f"{result.latency_rate_per_second:,.0f}" if latency else "-",
                "yes" if result.verified else "NO",
            ]
        )
    lines = _aligned(rows)
    if report.runs:
        lines.insert(0, f"median of {len(report.runs)} runs:")
    lines.append("cpu: CPU seconds per 1,000 commands, by process kind")
    for result in report.modes:
        if result.notes:
            notes = ", ".join(f"{name} {value:,.6g}" for name, value in result.notes.items())
            lines.append(f"{result.mode}: {notes}")
    for name, value in report.ratios.items():
        lines.append(f"{name.replace('engine', report.engine_mode, 1)} = {value:,}")
    lines += format_phases(report)
    lines += format_backends(report)
    lines += format_security(report)
    lines += format_credit(report)
    for result in report.modes:
        failed = [check for check in result.checks if check.startswith("FAILED")]
        for check in failed or ([] if result.verified else ["no check passed"]):
            lines.append(f"{result.mode}: {check}")
    lines.append("bench: OK" if report.ok else "bench: FAILED")
    return "\n".join(lines)


def format_phases(report: BenchReport) -> list[str]:
    """The open-loop phases of each mode that ran them: rate, latency, and total CPU per
    1,000 commands, with the half-rate phase's CPU against the maximum's."""
    measured = [result for result in report.modes if result.phases]
    if not measured:
        return []
    header = ["latency", "half rate/s", "p50", "p99", "p999", "cpu", "cpu half/max"]
    header += ["tenth rate/s", "p50", "p99", "cpu"]
    rows = [header]
    for result in measured:
        half, tenth = result.phases.get("half", Phase()), result.phases.get("tenth", Phase())
        full_cpu = sum(result.cpu_seconds_per_1k.values())
        half_cpu = sum(half.cpu_seconds_per_1k.values())
        rows.append(
            [
                result.mode,
                f"{half.rate_per_second:,.0f}",
                *(_number(half.latency_ms.get(p), 1) for p in ("p50", "p99", "p999")),
                _number(half_cpu or None),
                _number(half_cpu / full_cpu if full_cpu and half_cpu else None, 2),
                f"{tenth.rate_per_second:,.0f}" if tenth.commands else "-",
                *(_number(tenth.latency_ms.get(p), 1) for p in ("p50", "p99")),
                _number(sum(tenth.cpu_seconds_per_1k.values()) or None),
            ]
        )
    lines = _aligned(rows)
    lines.append(
        "latency: the open-loop phases at a half and a tenth of the mode's maximum (kafka_floor:"
        " the engine's half); ms publish-to-result; cpu: total CPU seconds per 1,000 commands"
    )
    return lines


def format_backends(report: BenchReport) -> list[str]:
    """The modes measured on both kinds of cup, side by side: commands/s and the database
    server's CPU seconds per 1,000 commands (its own kind: postgres or mariadb)."""
    by_mode = {result.mode: result for result in report.modes}
    pairs = [(p, m) for p, m in BACKEND_PAIRS if p in by_mode and m in by_mode]
    if not pairs:
        return []
    header = ["per backend", "postgres cmds/s", "db cpu", "mariadb cmds/s", "db cpu", "ratio"]
    rows = [header]
    for postgres, mariadb in pairs:
        left, right = by_mode[postgres], by_mode[mariadb]
        rows.append(
            [
                postgres,
                f"{left.rate_per_second:,.0f}",
                _number(left.cpu_seconds_per_1k.get("postgres")),
                f"{right.rate_per_second:,.0f}",
                _number(right.cpu_seconds_per_1k.get("mariadb")),
                _number(report.backend_ratios.get(postgres), 2),
            ]
        )
    lines = _aligned(rows)
    lines.append(
        "db cpu: the database server's CPU seconds per 1,000 commands; ratio: mariadb/postgres"
    )
    return lines


def format_security(report: BenchReport) -> list[str]:
    """The engine with security on (TLS and SCRAM to Kafka and Postgres) and off, side by
    side: commands/s and total CPU seconds per 1,000 commands."""
    by_mode = {result.mode: result for result in report.modes}
    pairs = [(s, p) for s, p in SECURITY_PAIRS if s in by_mode and p in by_mode]
    if not pairs:
        return []
    header = ["security", "on cmds/s", "cpu", "off cmds/s", "cpu", "on/off", "p99 on", "p99 off"]
    rows = [header]
    for secure, plaintext in pairs:
        on, off = by_mode[secure], by_mode[plaintext]
        rows.append(
            [
                secure,
                f"{on.rate_per_second:,.0f}",
                _number(sum(on.cpu_seconds_per_1k.values()) or None),
                f"{off.rate_per_second:,.0f}",
                _number(sum(off.cpu_seconds_per_1k.values()) or None),
                _number(report.security_ratios.get(secure), 2),
                _number(on.latency_ms.get("p99"), 1),
                _number(off.latency_ms.get("p99"), 1),
            ]
        )
    lines = _aligned(rows)
    lines.append("cpu: total CPU seconds per 1,000 commands; on/off: the rates' ratio")
    return lines


def format_credit(report: BenchReport) -> list[str]:
    """The engine on transfers only and on a load with draws and repayments in it, side by
    side: commands/s, total CPU seconds per 1,000 commands, p99 at half rate."""
    by_mode = {result.mode: result for result in report.modes}
    pairs = [(p, c) for p, c in CREDIT_PAIRS if p in by_mode and c in by_mode]
    if not pairs:
        return []
    share = report.options.get("credit_percent", 0)
    header = ["credit", "transfers cmds/s", "cpu", f"{share}% credit cmds/s", "cpu", "ratio"]
    rows = [header]
    for plain, credit in pairs:
        left, right = by_mode[plain], by_mode[credit]
        rows.append(
            [
                plain,
                f"{left.rate_per_second:,.0f}",
                _number(sum(left.cpu_seconds_per_1k.values()) or None),
                f"{right.rate_per_second:,.0f}",
                _number(sum(right.cpu_seconds_per_1k.values()) or None),
                _number(report.credit_ratios.get(plain), 2),
            ]
        )
    lines = _aligned(rows)
    lines.append(
        "credit: draws and repayments (half each) in that share of the load, every customer"
        " holding a line; ratio: with credit / transfers only"
    )
    return lines


def _aligned(rows: list[list[str]]) -> list[str]:
    """Rows of cells as lines, each column right-aligned to its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def write_json(report: BenchReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
