"""`make demo`'s command, short, on the local stack: it starts its workers with the local
stack's settings (nothing falls back to them), moves money, and finds the books balanced."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine.core.config import Config, to_environ

pytestmark = pytest.mark.integration


def test_the_demo_runs_and_balances_its_books(stack: Config) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SMALLCUPS_")}
    environ["SMALLCUPS_STACK_STATE_DIR"] = to_environ(stack)["SMALLCUPS_STACK_STATE_DIR"]
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--seconds", "3", "--workers", "1",
         "--customers", "300", "--window", "500"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "books: " in done.stdout and "-> OK" in done.stdout
    assert "0 discrepancies -> OK" in done.stdout
    assert "credit: 60 customers invited" in done.stdout
    assert "loans open (" in done.stdout and "last business day closed: " in done.stdout
    assert "partner 7's clearing statement of " in done.stdout
    assert "  # sha256 " in done.stdout and "  # totals funded=-" in done.stdout
    assert "draw rejected loan_overdue" not in done.stdout or "overdue)" in done.stdout
