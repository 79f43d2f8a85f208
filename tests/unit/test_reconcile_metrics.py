"""The reconcile outcome file for a Prometheus textfile collector carries over runs."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from engine.admin.reconcile import write_reconcile_metrics


def _values(path: Path) -> dict[str, float]:
    text = path.read_text(encoding="utf-8")
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_failures_accumulate_and_last_success_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    write_reconcile_metrics(path, ok=True, now=100.0)
    assert _values(path)["smallcups_reconcile_failures_total"] == 0
    assert _values(path)["smallcups_reconcile_last_success_timestamp_seconds"] == 100.0
    write_reconcile_metrics(path, ok=False, now=200.0)
    write_reconcile_metrics(path, ok=False, now=300.0)
    assert _values(path)["smallcups_reconcile_failures_total"] == 2
    assert _values(path)["smallcups_reconcile_last_success_timestamp_seconds"] == 100.0
    write_reconcile_metrics(path, ok=True, now=400.0)
    assert _values(path)["smallcups_reconcile_failures_total"] == 2
    assert _values(path)["smallcups_reconcile_last_success_timestamp_seconds"] == 400.0
