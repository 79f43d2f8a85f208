"""Running the bench: every chosen mode in turn, then the table, the ratios, the JSON.

A mode that raises is reported as failed (with the error) and the run goes on with the
next one; the run's exit status is 1 unless every mode verified its result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import uvloop

from engine.core.config import Config
from loadtest.bench.ceiling import run_db_ceiling
from loadtest.bench.engine_mode import run_engine
from loadtest.bench.kafka_floor import FLOOR_RATE_DEFAULT, run_kafka_floor
from loadtest.bench.naive import run_naive
from loadtest.bench.options import (
    ENGINE_WORKERS,
    PLAINTEXT_SUFFIX,
    BenchOptions,
    Load,
    ModeResult,
    make_load,
)
from loadtest.bench.pgbench import run_pgbench
from loadtest.bench.plaintext import plaintext_base, stop_plaintext
from loadtest.bench.raw_pipe import run_raw_pipe
from loadtest.bench.report import build_report, format_report, median_report, write_json

log = logging.getLogger(__name__)


async def run_mode(
    mode: str,
    base: Config,
    options: BenchOptions,
    load: Load,
    log_dir: Path,
    earlier: Sequence[ModeResult],
) -> ModeResult:
    match mode:
        case "kafka_floor":
            return await run_kafka_floor(base, options, load, log_dir, _floor_rate(earlier))
        case "raw_pipe":
            return await run_raw_pipe(base, options, load, log_dir)
        case "db_ceiling" | "db_ceiling_mariadb":
            return await run_db_ceiling(base, options, load, log_dir, mode)
        case "naive":
            return await run_naive(base, options, load, log_dir)
        case "pgbench":
            return await run_pgbench(base, options, log_dir)
    if mode.endswith(PLAINTEXT_SUFFIX):
        base = await plaintext_base(base)
    return await run_engine(base, options, load, log_dir, mode, ENGINE_WORKERS[mode])


def _floor_rate(earlier: Sequence[ModeResult]) -> float:
    """The latency phase's rate of the faster engine that ran before, if any."""
    engines = [r for r in earlier if r.mode in ENGINE_WORKERS and r.latency_rate_per_second]
    if not engines:
        return FLOOR_RATE_DEFAULT
    return max(engines, key=lambda r: r.rate_per_second).latency_rate_per_second


async def _run_all(base: Config, options: BenchOptions, log_dir: Path) -> list[ModeResult]:
    started = time.monotonic()
    load = make_load(options)
    print(
        f"workload: {options.accounts:,} accounts over {options.partitions} partitions and "
        f"{options.cups} cups; {len(load.setup):,} set-up and {len(load.commands):,} load "
        f"commands ({options.cross_percent}% of transfers cross partitions); seed {options.seed}",
        flush=True,
    )
    results: list[ModeResult] = []
    for mode in options.modes:
        mode_started = time.monotonic()
        try:
            result = await run_mode(mode, base, options, load, log_dir, results)
        except Exception as error:  # any failure fails this mode, reported; the run goes on
            log.exception("mode %s failed", mode)
            result = ModeResult(mode=mode, checks=[f"FAILED {type(error).__name__}: {error}"])
        results.append(result)
        print(
            f"{mode}: {result.rate_per_second:,.0f} commands/s, "
            f"{'verified' if result.verified else 'NOT verified'} "
            f"({time.monotonic() - mode_started:.0f} s)",
            flush=True,
        )
    print(f"bench took {time.monotonic() - started:.0f} s", flush=True)
    return results


def run_bench(base: Config, options: BenchOptions, json_path: str | None) -> int:
    """Every mode, ``options.runs`` times; with several runs, each table then the medians."""
    log_dir = base.stack.state_path / "logs" / f"bench-{int(time.time())}"
    runs = []
    try:
        for number in range(1, options.runs + 1):
            run_dir = log_dir / f"run-{number}" if options.runs > 1 else log_dir
            run_dir.mkdir(parents=True, exist_ok=True)
            if options.runs > 1:
                print(f"run {number} of {options.runs}", flush=True)
            runs.append(build_report(options, uvloop.run(_run_all(base, options, run_dir))))
            print(format_report(runs[-1]), flush=True)
    finally:
        if any(mode.endswith(PLAINTEXT_SUFFIX) for mode in options.modes):
            stop_plaintext(base)
    report = runs[0] if len(runs) == 1 else median_report(runs)
    if len(runs) > 1:
        print(format_report(report))
    if json_path:
        write_json(report, Path(json_path))
    return 0 if report.ok else 1
