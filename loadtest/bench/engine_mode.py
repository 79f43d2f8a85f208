"""``engine_1w`` / ``engine_2w``: the real pipeline with 1 or 2 worker processes (on
Postgres cups; the ``_mariadb`` modes on MariaDB cups).

1. a fresh system; the workers start and own every partition between them;
2. set-up (not measured): open and fund the accounts through the engine (a ``_credit``
   mode also grants every customer a credit line and closes the first business day,
   signed with the system's risk key and published as the risk authority);
3. maximum rate: publish the whole load through the driver (at most
   ``WINDOW_COMMANDS`` awaiting their result) and time it from the first publish until
   every command's result has been read from the results topic;
4. latency: an open-loop load at half that rate for ``latency_seconds`` (the publisher
   keeps its schedule whatever the results do), then one at a tenth of it:
   publish-to-result p50/p99/p999 and CPU per 1,000 commands of each phase;
5. verify: every command answered, no publish refused, the workers stop cleanly, and
   ``reconcile`` (cups and topics) is clean with every consumed command answered once.
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from deploy.local.prometheus_throwaway import free_port
from deploy.local.roles import Role, as_role
from engine.admin.reconcile import reconcile
from engine.core.authority import RiskSigner
from engine.core.config import Config
from engine.core.errors import InvariantError
from engine.core.keyfiles import read_risk_private_key
from engine.kafka.client import Client
from loadtest.bench.cpu import CpuMeter
from loadtest.bench.options import (
    CREDIT_SUFFIX,
    BenchOptions,
    Checks,
    Load,
    ModeResult,
    Phase,
    fresh_system,
    rate_of,
)
from loadtest.bench.scrape import totals, wait_owning
from loadtest.driver import CHUNK_COMMANDS, Driver
from loadtest.system import System, drop_system

WINDOW_COMMANDS: Final = 100_000
"""Most commands the driver has published and not yet seen answered."""
OWNING_TIMEOUT_SECONDS: Final = 120.0
TICK_SECONDS: Final = 0.005
PHASES: Final = {"half": 0.5, "tenth": 0.1}
"""The open-loop phases after the maximum, by their share of it."""
LATE_FACTOR: Final = 2.0
"""The open-loop phase stops publishing at LATE_FACTOR x its duration, whatever is left."""
_BATCH_SUM: Final = "smallcups_batch_commands_sum"
_BATCH_COUNT: Final = "smallcups_batch_commands_count"


@dataclass(slots=True)
class Measured:
    answered: int
    complete: bool
    seconds: float
    cpu_seconds_per_1k: dict[str, float]
    batch_records_mean: float


@dataclass(slots=True)
class Latency:
    sent: int
    complete: bool
    rate_per_second: float
    percentiles_ms: dict[str, float]
    cpu_seconds_per_1k: dict[str, float]

    def phase(self) -> Phase:
        return Phase(
            rate_per_second=round(self.rate_per_second, 1),
            commands=self.sent,
            latency_ms=self.percentiles_ms,
            cpu_seconds_per_1k=self.cpu_seconds_per_1k,
        )


async def run_engine(
    base: Config, options: BenchOptions, load: Load, log_dir: Path, mode: str, workers: int
) -> ModeResult:
    system = await fresh_system(base, options, mode, log_dir / mode)
    if mode.endswith(CREDIT_SUFFIX):
        if load.credit is None:
            raise InvariantError("make_load builds the credit load of a credit mode")
        load = load.credit
    try:
        ports = [free_port() for _ in range(workers)]
        for port in ports:
            system.start_worker({"SMALLCUPS_WORKER_METRICS_PORT": str(port)})
        await wait_owning(ports, options.partitions, OWNING_TIMEOUT_SECONDS)
        async with Client(as_role(system.config, Role.UPSTREAM).kafka) as client:
            driver = Driver(client, WINDOW_COMMANDS, options.misrouted_percent)
            await driver.send_all(load.setup)
            if not await driver.wait_all(options.results_timeout_seconds):
                raise RuntimeError(f"the set-up was not answered:\n{system.worker_logs()}")
            if load.privileged:
                await _privileged_setup(system, load, options)
            gc.collect()
            gc.freeze()  # the set-up's objects live on: keep them out of the collector's scans
            pids = [worker.pid for worker in system.workers]
            try:
                measured = await _maximum(driver, load, system, ports, options)
                rate = rate_of(measured.answered, measured.seconds)
                phases = {
                    name: await open_loop(
                        driver, load, rate * share, options, CpuMeter(system.config.stack, pids)
                    )
                    for name, share in PHASES.items()
                }
            finally:
                gc.unfreeze()
            publish_errors = driver.score.publish_errors
        exit_codes = system.stop_all()
        report = await reconcile(system.config, topics=True)
    finally:
        await drop_system(base, system)
    checks = Checks()
    checks.expect(measured.complete, "every load command answered", measured.answered)
    for name, phase in phases.items():
        checks.expect(phase.complete, f"every {name}-rate command answered", phase.sent)
    checks.expect(publish_errors == 0, "no publish refused", publish_errors)
    checks.expect(not any(exit_codes), "workers stopped cleanly", exit_codes)
    checks.expect(report.ok, "reconcile (cups and topics) clean", dict(report.problems))
    consumed = report.counts.get("commands_consumed", 0)
    wanted = len(load.setup) + len(load.privileged) + len(load.commands)
    wanted += sum(p.sent for p in phases.values())
    checks.expect(consumed == wanted, f"{wanted} commands consumed", consumed)
    checks.expect(report.transfers_in_flight == 0, "no transfer left in flight")
    result = ModeResult(
        mode=mode,
        commands=measured.answered,
        seconds=round(measured.seconds, 3),
        rate_per_second=round(rate, 1),
        cpu_seconds_per_1k=measured.cpu_seconds_per_1k,
        latency_ms=phases["half"].percentiles_ms,
        latency_rate_per_second=round(phases["half"].rate_per_second, 1),
        phases={name: phase.phase() for name, phase in phases.items()},
        notes={"batch_records_mean": round(measured.batch_records_mean, 1)},
    )
    return checks.apply(result)


async def _privileged_setup(system: System, load: Load, options: BenchOptions) -> None:
    """The risk authority's part of the set-up: signed with the system's key, every
    command accepted."""
    config = system.config
    key_id, key = read_risk_private_key(config.risk_private_key_path)
    signer = RiskSigner(config.kafka.commands_topic, key_id, key)
    async with Client(as_role(config, Role.RISK).kafka) as client:
        driver = Driver(client, WINDOW_COMMANDS)
        await driver.send_all([signer.sign(command) for command in load.privileged])
        if not await driver.wait_all(options.results_timeout_seconds):
            raise RuntimeError(f"the credit set-up was not answered:\n{system.worker_logs()}")
        if driver.score.accepted != len(load.privileged):
            raise RuntimeError("the credit set-up was not accepted in full")


async def _maximum(
    driver: Driver, load: Load, system: System, ports: list[int], options: BenchOptions
) -> Measured:
    """Step 3: the whole load as fast as it goes, timed to its last result."""
    meter = CpuMeter(system.config.stack, [worker.pid for worker in system.workers])
    before = len(driver.score.results)
    batches = await totals(ports, [_BATCH_SUM, _BATCH_COUNT])
    meter.start()
    started = time.perf_counter()
    await driver.send_all(load.commands)
    complete = await driver.wait_all(options.results_timeout_seconds)
    seconds = time.perf_counter() - started
    meter.stop()
    after = await totals(ports, [_BATCH_SUM, _BATCH_COUNT])
    answered = len(driver.score.results) - before
    count = after[_BATCH_COUNT] - batches[_BATCH_COUNT]
    mean = (after[_BATCH_SUM] - batches[_BATCH_SUM]) / count if count else 0.0
    return Measured(answered, complete, seconds, meter.per_thousand(answered), mean)


async def open_loop(
    driver: Driver, load: Load, rate: float, options: BenchOptions, meter: CpuMeter
) -> Latency:
    """Step 4: publish on a fixed schedule at ``rate`` commands/s; latency of each, and the
    CPU the phase cost (until its last result) per 1,000 of its commands."""
    total = max(1, int(rate * options.latency_seconds))
    driver.score.latencies_ms.clear()
    meter.start()
    started = time.monotonic()
    sent = 0
    while sent < total and time.monotonic() - started < options.latency_seconds * LATE_FACTOR:
        due = min(total, int((time.monotonic() - started) * rate) + 1) - sent
        if due > 0:
            chunk = [load.workload.next_command() for _ in range(min(due, CHUNK_COMMANDS))]
            await driver.send_many(chunk)
            sent += len(chunk)
        await asyncio.sleep(TICK_SECONDS)
    elapsed = time.monotonic() - started
    complete = await driver.wait_all(options.results_timeout_seconds)
    meter.stop()
    score = driver.score
    percentiles = {
        name: round(score.percentile_ms(fraction), 2)
        for name, fraction in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))
    }
    return Latency(sent, complete, rate_of(sent, elapsed), percentiles, meter.per_thousand(sent))
