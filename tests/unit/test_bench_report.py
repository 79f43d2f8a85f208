"""The bench's median of several runs: per figure, per ratio, verified only if all were."""

from __future__ import annotations

from engine.core.messages import CloseBusinessDay, Draw, GrantCreditLine, Repay
from engine.core.routing import partition_of
from loadtest.bench.options import BenchOptions, ModeResult, Phase, make_load
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


def phased(rate: float, half_p99: float, tenth_p99: float) -> ModeResult:
    result = run(rate, 0, half_p99)
    result.cpu_seconds_per_1k = {"workers": 0.1, "broker": 0.1}
    result.phases = {
        "half": Phase(
            rate_per_second=rate / 2,
            commands=100,
            latency_ms={"p50": 5, "p99": half_p99},
            cpu_seconds_per_1k={"workers": 0.2, "broker": 0.06},
        ),
        "tenth": Phase(
            rate_per_second=rate / 10,
            commands=20,
            latency_ms={"p50": 3, "p99": tenth_p99},
            cpu_seconds_per_1k={"workers": 0.5},
        ),
    }
    return result


def test_the_phases_are_reported_with_their_cpu_against_the_maximum() -> None:
    options = BenchOptions(modes=("engine_2w",), runs=3)
    runs = [build_report(options, [phased(4000, p99, p99 / 2)]) for p99 in (90, 300, 120)]
    report = median_report(runs)
    (engine,) = report.modes
    assert engine.phases["half"].latency_ms["p99"] == 120
    assert engine.phases["tenth"].latency_ms["p99"] == 60
    assert engine.phases["tenth"].rate_per_second == 400
    table = format_report(report)
    lines = table.splitlines()
    row = lines[next(i for i, line in enumerate(lines) if "half rate/s" in line) + 1]
    assert row.split() == [
        *("engine_2w", "2,000", "5.0", "120.0", "-", "0.260", "1.30"),
        *("400", "3.0", "60.0", "0.500"),
    ]


def test_the_engine_is_set_against_the_combined_floor_of_the_pipe_and_the_database() -> None:
    options = BenchOptions(modes=("raw_pipe", "db_ceiling", "engine_2w"))
    results = [
        ModeResult(mode="raw_pipe", rate_per_second=30_000, verified=True),
        ModeResult(mode="db_ceiling", rate_per_second=20_000, verified=True),
        run(9_000, 0, 50),
    ]
    ratios = build_report(options, results).ratios
    assert ratios["engine/min(raw_pipe,db_ceiling)"] == 0.45
    assert ratios["engine/floor(raw_pipe,db_ceiling)"] == 0.75  # floor 12,000/s


def test_the_credit_mix_is_set_beside_transfers_only_and_never_picked_as_the_engine() -> None:
    options = BenchOptions(modes=("engine_1w", "engine_1w_credit"))
    plain = run(6000, 0, 90)
    plain.mode = "engine_1w"
    credit = run(9000, 0, 90)
    credit.mode = "engine_1w_credit"
    report = build_report(options, [plain, credit])
    assert report.engine_mode == "engine_1w"
    assert report.credit_ratios == {"engine_1w": 1.5}
    text = format_report(report)
    assert "20% credit cmds/s" in text
    assert "1.50" in text.split("20% credit cmds/s")[1]


def test_the_credit_load_grants_lines_starts_calendars_and_mixes_draws_and_repayments() -> None:
    load = make_load(
        BenchOptions(accounts=50, partitions=8, transfers=2_000, modes=("engine_1w_credit",))
    )
    credit = load.credit
    assert credit is not None and not any(isinstance(c, Draw | Repay) for c in load.commands)
    grants = [c for c in credit.privileged if isinstance(c, GrantCreditLine)]
    closes = [c for c in credit.privileged if isinstance(c, CloseBusinessDay)]
    assert len(grants) == 50 and len(closes) == 8
    assert sorted(partition_of(c.customer, 8) for c in closes) == list(range(8))
    share = sum(isinstance(c, Draw | Repay) for c in credit.commands) / len(credit.commands)
    assert 0.15 < share < 0.25
