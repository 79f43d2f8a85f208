"""Run Debian's promtool from tests; a missing promtool fails the test, it never skips."""

from __future__ import annotations

import shutil
import subprocess
from typing import Final

import pytest

PROMTOOL_TIMEOUT_SECONDS: Final = 120.0


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH: run `make prometheus-tools` (Debian's prometheus package)"
        )
    return subprocess.run(
        [path, *args],
        input=stdin,
        capture_output=True,
        timeout=PROMTOOL_TIMEOUT_SECONDS,
        check=False,
    )


def output(done: subprocess.CompletedProcess[bytes]) -> str:
    return (done.stdout + done.stderr).decode(errors="replace")
