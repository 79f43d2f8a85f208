"""Reading the workers' ``/metrics`` (127.0.0.1): partitions owned, batch sizes."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Sequence
from typing import Final

SCRAPE_TIMEOUT_SECONDS: Final = 5.0
POLL_SECONDS: Final = 0.25


def _metrics_text(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_SECONDS) as answer:
            return str(answer.read().decode())
    except OSError:
        return ""


def metric_total(text: str, name: str) -> float:
    """Sum of every series of ``name`` (all label sets) in a Prometheus text page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def totals(ports: Sequence[int], names: Sequence[str]) -> dict[str, float]:
    """Each metric of ``names`` summed over the workers listening on ``ports``."""
    pages = await asyncio.gather(*(asyncio.to_thread(_metrics_text, p) for p in ports))
    return {name: sum(metric_total(page, name) for page in pages) for name in names}


async def wait_owning(ports: Sequence[int], partitions: int, timeout_seconds: float) -> None:
    """Wait until the workers own every partition between them, each some of them."""
    deadline = time.monotonic() + timeout_seconds
    owned: list[float] = []
    while time.monotonic() < deadline:
        pages = await asyncio.gather(*(asyncio.to_thread(_metrics_text, p) for p in ports))
        owned = [metric_total(page, "smallcups_partitions_owned") for page in pages]
        if all(pages) and sum(owned) == partitions and all(owned):
            return
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"workers own {owned} of {partitions} partitions after {timeout_seconds} s")
