"""The Grafana dashboard: valid JSON, a datasource variable, and PromQL over real metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from scripts.metrics_table import series_names
from tests.unit.promql import metric_names, rule_expressions

DEPLOY: Final = Path(__file__).parents[2] / "deploy"
DASHBOARD: Final = DEPLOY / "grafana" / "smallcups.json"
RULES: Final = DEPLOY / "prometheus" / "rules" / "smallcups.rules.yml"


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _graph_panels() -> list[dict[str, Any]]:
    return [panel for panel in _dashboard()["panels"] if panel["type"] != "row"]


def test_panels_query_only_metrics_that_smallcups_exports() -> None:
    allowed = series_names() | {"up"}
    for panel in _graph_panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = metric_names(target["expr"])
            assert used, f"{panel['title']}: no metric in {target['expr']!r}"
            assert used <= allowed, f"{panel['title']}: unknown {sorted(used - allowed)}"


def test_every_panel_reads_the_datasource_variable() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}

    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["definition"] == 'label_values(up{job="smallcups"}, instance)'
    for panel in _graph_panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_the_dashboard_covers_what_operators_watch() -> None:
    used = {name for p in _graph_panels() for t in p["targets"] for name in metric_names(t["expr"])}
    expressions = " ".join(t["expr"] for p in _graph_panels() for t in p["targets"])

    assert {
        "smallcups_commands_total",
        "smallcups_publish_to_commit_seconds_bucket",
        "smallcups_publish_to_result_seconds_bucket",
        "smallcups_consumer_lag_records",
        "smallcups_commit_duration_seconds_bucket",
        "smallcups_legs_in_flight",
        "smallcups_money_in_flight_minor_units",
        "smallcups_dead_letters_total",
        "smallcups_fenced_commits_total",
        "smallcups_partitions_owned",
        "smallcups_loans_outstanding_minor_units",
        "smallcups_credit_loans_open",
        "smallcups_credit_overdue_loans",
        "smallcups_credit_holds_open_minor_units",
        "smallcups_credit_business_day_timestamp_seconds",
    } <= used
    assert "histogram_quantile(0.5," in expressions
    assert "histogram_quantile(0.99," in expressions


def test_the_credit_row_shows_the_business_day_lag_its_alert_watches() -> None:
    panels = _dashboard()["panels"]
    rows = [panel["title"] for panel in panels if panel["type"] == "row"]
    (lag,) = [panel for panel in panels if panel["title"] == "Business day lag by partition"]
    alert = rule_expressions(RULES.read_text())["SmallcupsBusinessDayNotClosed"]

    assert rows[-1] == "Credit"
    (expression,) = [target["expr"] for target in lag["targets"]]
    assert alert.startswith(expression.replace('{instance=~"$instance"}', "") + " > ")
    assert lag["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 26 * 3600


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
