"""The generated metrics table and its place in a document."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.metrics_table import (
    END_MARKER,
    START_MARKER,
    main,
    metric_docs,
    metrics_table,
    render_document,
    series_names,
)


def test_every_worker_metric_has_a_row_with_its_exposed_name() -> None:
    table = metrics_table()
    docs = metric_docs()

    assert len(table.splitlines()) == 2 + len(docs)
    assert "| `smallcups_commands_total` | counter | `type`, `outcome` |" in table
    assert "| `smallcups_publish_to_result_seconds` | histogram | - |" in table
    assert {"smallcups_batch_commands_bucket", "smallcups_cup_up"} <= series_names()
    assert all(doc.help for doc in docs)


def test_the_table_replaces_only_what_is_between_the_markers(tmp_path: Path) -> None:
    document = tmp_path / "doc.md"
    document.write_text(f"# Title\n{START_MARKER}\nold table\n{END_MARKER}\ntail\n")

    assert main(["--check", str(document)]) == 1
    assert main(["--write", str(document)]) == 0
    assert main(["--check", str(document)]) == 0
    text = document.read_text()
    assert text.startswith(f"# Title\n{START_MARKER}\n| Metric |")
    assert text.endswith(f"{END_MARKER}\ntail\n") and "old table" not in text
    with pytest.raises(ValueError, match="lacks"):
        render_document("no markers", "table")
