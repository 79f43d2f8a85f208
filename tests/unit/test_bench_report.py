"""The bench's median of several runs: per figure, per ratio, verified only if all were."""

from __future__ import annotations

from loadtest.bench.options import BenchOptions, ModeResult
from loadtest.bench.report import build_report, format_report, median_report


def run(engine_rate: float, naive_rate: float, p99: float, verified: bool = True) -> ModeResult:
    return ModeResult(
        mode="engine_2w",
        commands=1000,
        rate_per_second=engine_rate,
        cpu_seconds_per_1k={"workers": engine_rate / 10_000},
        latency_ms={"p99": p99},
        verified=verified,
        checks=[] if verified else ["FAILED reconcile"],
    )


def naive(rate: float) -> ModeResult:
    return ModeResult(mode="naive", commands=100, rate_per_second=rate, verified=True)


def test_the_median_report_takes_each_figure_and_ratio_median() -> None:
    options = BenchOptions(modes=("engine_2w", "naive"), runs=3)
    runs = [
        build_report(options, [run(4000, 400, 90), naive(400)]),
        build_report(options, [run(6000, 300, 300), naive(300)]),
        build_report(options, [run(5000, 500, 120), naive(500)]),
    ]
    report = median_report(runs)
    engine = report.modes[0]
    assert engine.rate_per_second == 5000
    assert engine.latency_ms == {"p99": 120}
    assert engine.cpu_seconds_per_1k == {"workers": 0.5}
    assert report.ratios["engine/naive"] == 10  # runs: 10, 20, 10
    assert report.ok and len(report.runs) == 3
    assert format_report(report).startswith("median of 3 runs:")


def test_one_failed_run_fails_the_median() -> None:
    options = BenchOptions(modes=("engine_2w",), runs=2)
    runs = [
        build_report(options, [run(4000, 0, 90)]),
        build_report(options, [run(5000, 0, 90, verified=False)]),
    ]
    report = median_report(runs)
    assert not report.ok
    assert not report.modes[0].verified
    assert report.modes[0].checks == ["FAILED reconcile"]
