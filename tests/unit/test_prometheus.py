"""The Prometheus assets: config and rules pass promtool, every alert is tested both ways,
and every expression names only metrics that smallcups exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from scripts.metrics_table import main as metrics_table_main
from scripts.metrics_table import series_names
from tests.promtool import output, promtool
from tests.unit.promql import metric_names, rule_expressions

PROMETHEUS_DIR: Final = Path(__file__).parents[2] / "deploy" / "prometheus"
RULES: Final = PROMETHEUS_DIR / "rules" / "smallcups.rules.yml"
RULE_TESTS: Final = PROMETHEUS_DIR / "rules" / "smallcups.rules.test.yml"
RECONCILE_METRICS: Final = frozenset(
    ["smallcups_reconcile_failures_total", "smallcups_reconcile_last_success_timestamp_seconds"]
)
"""Exported by `smallcups reconcile`, not by a worker."""


def test_the_rules_are_valid() -> None:
    done = promtool("check", "rules", str(RULES))

    assert done.returncode == 0, output(done)
    assert f"SUCCESS: {len(rule_expressions(RULES.read_text()))} rules found" in output(done)


def test_the_rule_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(RULE_TESTS))

    assert done.returncode == 0, output(done)
    assert "SUCCESS" in output(done)


def test_the_config_is_valid_with_its_rules() -> None:
    done = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))

    assert done.returncode == 0, output(done)
    assert "SUCCESS: 1 rule files found" in output(done)


def test_every_alert_is_tested_firing_and_quiet() -> None:
    alerts = re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.MULTILINE)
    cases = re.findall(
        r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", RULE_TESTS.read_text(), re.MULTILINE
    )
    firing = {name for name, empty in cases if not empty}
    quiet = {name for name, empty in cases if empty}

    assert len(alerts) == len(set(alerts)) >= 10
    assert set(alerts) - firing == set(), "alerts never tested firing"
    assert set(alerts) - quiet == set(), "alerts never tested quiet"
    assert firing | quiet <= set(alerts), "tests of alerts that do not exist"


def test_rules_use_only_exported_metrics() -> None:
    allowed = series_names() | RECONCILE_METRICS | {"up"}
    expressions = rule_expressions(RULES.read_text())

    assert len(expressions) >= 10
    for name, expression in expressions.items():
        used = metric_names(expression)
        assert used, f"{name}: no metric found in {expression!r}"
        assert used <= allowed, f"{name} uses unknown metrics {sorted(used - allowed)}"


def test_the_promql_reader_finds_metric_names_only() -> None:
    expression = (
        'sum by (le) (rate(a_bucket{x="y{z}", i=~"$instance"}[$__rate_interval] offset 1h))'
        " / on (cup) group_left (currency) b_total > 1e3 and c unless histogram_quantile(0.5, d)"
    )

    assert metric_names(expression) == {"a_bucket", "b_total", "c", "d"}
    rules = "- alert: A\n  expr: up == 0\n- record: r:x\n  expr: |\n    sum(x)\n"
    assert rule_expressions(rules) == {"A": "up == 0", "r:x": "sum(x)"}


def test_the_docs_have_the_current_metrics_table_and_every_alert() -> None:
    document = PROMETHEUS_DIR.parents[1] / "docs" / "observability.md"

    assert metrics_table_main(["--check", str(document)]) == 0, "run `make docs`"
    text = document.read_text()
    for alert in re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.MULTILINE):
        assert f"| {alert} |" in text, f"{alert} is not in the alerts table"
