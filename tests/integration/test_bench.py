"""``smallcups bench`` at tiny sizes: every mode runs, verifies its result, has a rate.

The ratios are reported, not asserted: on a shared 2-core machine they are noise at
these sizes. ``make bench`` runs the full sizes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Final

import msgspec
import pytest

from engine.core.config import Config
from loadtest.bench.options import MODES, PLAINTEXT_SUFFIX
from loadtest.bench.report import BenchReport

pytestmark = pytest.mark.integration

BENCH_TIMEOUT_SECONDS: Final = 420.0
TINY: Final = (
    "--accounts=2000",
    "--partitions=8",
    "--cups=2",
    "--transfers=5000",
    "--seconds-naive=5",
    "--seconds-pgbench=5",
    "--seconds-latency=3",
)


def test_bench_runs_every_mode_and_verifies_each(stack: Config, tmp_path: Path) -> None:
    """The bench on the session's stack (``stack`` brings it up)."""
    report_path = tmp_path / "bench.json"
    command = [sys.executable, "-m", "engine.cli", "bench", *TINY, f"--json={report_path}"]
    ran = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_SECONDS,
        check=False,
    )
    output = f"{ran.stdout}\n{ran.stderr[-4000:]}"
    assert ran.returncode == 0, output
    report = msgspec.json.decode(report_path.read_bytes(), type=BenchReport)
    assert [result.mode for result in report.modes] == list(MODES), output
    for result in report.modes:
        assert result.verified, (result.mode, result.checks)
        assert result.rate_per_second > 0, result
        kinds = {"driver", "workers", "broker", "postgres", "mariadb"}
        if result.mode.endswith(PLAINTEXT_SUFFIX):
            kinds.remove("mariadb")  # the plaintext stack has no MariaDB
        assert set(result.cpu_seconds_per_1k) == kinds, result.mode
    engines = [r for r in report.modes if r.mode.startswith("engine")]
    assert all(r.latency_ms["p99"] > 0 for r in engines), engines
    for engine in engines:
        half, tenth = engine.phases["half"], engine.phases["tenth"]
        assert half.latency_ms == engine.latency_ms, engine.mode
        assert tenth.rate_per_second < half.rate_per_second, engine.mode
        assert tenth.latency_ms["p99"] > 0 and tenth.commands > 0, engine.mode
        assert sum(half.cpu_seconds_per_1k.values()) > 0, engine.mode
        assert sum(tenth.cpu_seconds_per_1k.values()) > 0, engine.mode
    floor = next(r for r in report.modes if r.mode == "kafka_floor")
    faster = max(engines, key=lambda r: r.rate_per_second)
    assert floor.latency_rate_per_second == pytest.approx(faster.latency_rate_per_second, 0.2)
    assert floor.latency_ms["p99"] > 0 and floor.notes["legs"] > 0, floor
    assert set(report.ratios) == {
        "engine/naive",
        "engine/pgbench",
        "engine/min(raw_pipe,db_ceiling)",
        "engine/floor(raw_pipe,db_ceiling)",
    }
    assert "tenth rate/s" in ran.stdout
    assert set(report.backend_ratios) == {"db_ceiling", "engine_1w", "engine_2w"}
    assert all(ratio > 0 for ratio in report.backend_ratios.values())
    by_mode = {r.mode: r for r in report.modes}
    assert by_mode["db_ceiling_mariadb"].cpu_seconds_per_1k["mariadb"] > 0
    assert "per backend" in ran.stdout
    assert set(report.security_ratios) == {"engine_1w", "engine_2w"}
    assert all(ratio > 0 for ratio in report.security_ratios.values())
    assert "on/off" in ran.stdout
    assert set(report.credit_ratios) == {"engine_1w"}
    assert report.credit_ratios["engine_1w"] > 0
    assert "20% credit cmds/s" in ran.stdout
    assert report.ok
    assert "bench: OK" in ran.stdout
