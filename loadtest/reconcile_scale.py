"""Reconcile against a long history: peak memory of a full run, and the time of an
incremental run after a little more load against a full run (docs/operations.md).

    python -m loadtest.reconcile_scale --commands 300000 --extra 2000 [--baseline /work/main]

Makes a fresh system on the running local stack (loadtest.system), starts one worker,
publishes ``--commands`` commands (accounts opened, then deposits), waits until every
one is answered, then runs ``smallcups reconcile`` as child processes and reads each
one's peak RSS from the kernel (``wait4``): a full run, the load of ``--extra`` more
commands, an incremental run, a full run again. With ``--baseline PATH``, also a full run
of the reconcile found under PATH (another checkout: the one before streaming). Prints one
JSON document; drops the system at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from deploy.local.config import local_config
from deploy.local.roles import Role, as_role
from engine.core.config import Config, load_config, to_environ
from engine.core.messages import Deposit, OpenAccount, encode
from engine.core.routing import customer_key
from engine.kafka.connection import connection
from engine.kafka.topics import end_offsets
from loadtest.system import System, drop_system, make_system

CUSTOMERS = 10_000
WAIT_SECONDS_MAX = 1_800.0
CHECKOUT = str(Path(__file__).resolve().parents[1])


async def _publish(config: Config, start: int, count: int) -> None:
    """``count`` commands numbered from ``start``: the customers' accounts first (on the
    first call), then deposits to them."""
    producer = AIOKafkaProducer(
        **connection(as_role(config, Role.UPSTREAM).kafka), linger_ms=20, acks="all"
    )
    await producer.start()
    try:
        sent = []
        for n in range(start, start + count):
            customer = 1 + n % CUSTOMERS
            command = (
                OpenAccount(f"o{n}", customer, 1, "EUR")
                if n < CUSTOMERS
                else Deposit(f"d{n}", customer, 1, 1 + n % 97, "EUR")
            )
            sent.append(
                await producer.send(
                    config.kafka.commands_topic, encode(command), key=customer_key(customer)
                )
            )
            if len(sent) >= 10_000:
                await asyncio.gather(*sent)
                sent.clear()
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _answered(config: Config, total: int) -> float:
    """Seconds until the results topic holds ``total`` results."""
    began = time.monotonic()
    while time.monotonic() - began < WAIT_SECONDS_MAX:
        if sum((await end_offsets(config.kafka, config.kafka.results_topic)).values()) >= total:
            return time.monotonic() - began
        await asyncio.sleep(2.0)
    raise TimeoutError(f"{total} results not out after {WAIT_SECONDS_MAX} s")


def _reconcile(config: Config, *arguments: str, path: str) -> dict[str, Any]:
    """One ``smallcups reconcile --json`` child: its seconds, peak RSS and report."""
    environment = {**os.environ, **to_environ(config), "PYTHONPATH": path}
    command = [sys.executable, "-m", "engine.cli", "reconcile", "--json", *arguments]
    began = time.monotonic()
    child = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, cwd=path)
    output = child.stdout.read() if child.stdout else b""
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - began
    report = msgspec.json.decode(output) if output else {}
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "exit": os.waitstatus_to_exitcode(status),
        "ok": report.get("ok"),
        "records_read": report.get("counts", {}).get("topic_records_read"),
        "checkpoint": report.get("checkpoint"),
    }


async def measure(base: Config, commands: int, extra: int, baseline: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as logs:
        system: System = await make_system(base, Path(logs), partitions=8, cups=2)
        try:
            system.start_worker()
            figures: dict[str, Any] = {"commands": commands, "extra": extra}
            await _publish(system.config, 0, commands)
            figures["load_seconds"] = round(await _answered(system.config, commands), 1)
            if baseline:
                figures["baseline_full"] = _reconcile(system.config, path=baseline)
            figures["full"] = _reconcile(system.config, "--full", path=CHECKOUT)
            await _publish(system.config, commands, extra)
            await _answered(system.config, commands + extra)
            figures["incremental"] = _reconcile(system.config, path=CHECKOUT)
            figures["full_again"] = _reconcile(system.config, "--full", path=CHECKOUT)
            return figures
        finally:
            await drop_system(base, system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=300_000)
    parser.add_argument("--extra", type=int, default=2_000)
    parser.add_argument("--baseline", help="a checkout whose reconcile to measure as well")
    args = parser.parse_args()
    config = load_config()
    base = local_config(config.stack, config)
    figures = asyncio.run(measure(base, args.commands, args.extra, args.baseline))
    print(msgspec.json.encode(figures).decode())


if __name__ == "__main__":
    main()
