"""``pgbench``: TPC-B (pgbench's default script) on the local stack's Postgres.

1. a fresh database, ``pgbench -i -s <clients>`` (one branch per client);
2. measure: ``pgbench -n -c <clients> -j 2 -T <seconds>``, default durability
   (synchronous_commit on, the cluster's settings);
3. verify: pgbench exits 0, no failed transaction, some processed, and the TPC-B books
   agree: sum(accounts) == sum(branches) == sum(tellers) == sum(history).

The rate is pgbench's own tps (without connection set-up); a missing pgbench fails the
mode with the reason.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from deploy.local.postgres_cluster import find_bin_dir
from engine.core.config import Config, ShardsConfig
from engine.core.dsn import DatabaseLogin
from engine.core.errors import StackError
from loadtest.bench.cpu import CpuMeter
from loadtest.bench.options import BenchOptions, Checks, ModeResult
from loadtest.system import create_databases, drop_databases
from shards.control import connect, login

INIT_TIMEOUT_SECONDS: Final = 300.0
RUN_GRACE_SECONDS: Final = 60.0
THREADS: Final = 2
_TPS: Final = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")
_PROCESSED: Final = re.compile(r"number of transactions actually processed: (\d+)")
_FAILED: Final = re.compile(r"number of failed transactions: (\d+)")
_SUMS: Final = """
SELECT (SELECT sum(abalance) FROM pgbench_accounts) AS accounts,
       (SELECT sum(bbalance) FROM pgbench_branches) AS branches,
       (SELECT sum(tbalance) FROM pgbench_tellers) AS tellers,
       (SELECT coalesce(sum(delta), 0) FROM pgbench_history) AS history
"""


def pgbench_path(config: Config) -> Path:
    """pgbench of the stack's Postgres binaries, else the one on PATH."""
    try:
        candidate = find_bin_dir(config.stack.postgres_bin_dir) / "pgbench"
    except StackError:
        candidate = None
    if candidate is not None and candidate.is_file():
        return candidate
    found = shutil.which("pgbench")
    if found is None:
        raise StackError("pgbench is not installed (Debian: postgresql-contrib / postgresql)")
    return Path(found)


async def run_pgbench(base: Config, options: BenchOptions, log_dir: Path) -> ModeResult:
    program = pgbench_path(base)
    database = f"bpgbench{time.time_ns() // 1_000_000 % 10**10}"
    stack = base.stack
    connection = ["-h", "127.0.0.1", "-p", str(stack.postgres_port), "-U", stack.postgres_user]
    environment = libpq_environment(login(stack.database_dsn(database), base.shards))
    scale = options.pgbench_clients
    await create_databases(base, [database])
    try:
        init = [str(program), "-i", "-q", "-s", str(scale), *connection, database]
        initialized = await asyncio.to_thread(_run, init, environment, INIT_TIMEOUT_SECONDS)
        if initialized.returncode != 0:
            raise StackError(f"pgbench -i failed: {initialized.stderr[-500:]}")
        meter = CpuMeter(stack)
        meter.start()
        command = [
            str(program),
            "-n",
            "-c",
            str(options.pgbench_clients),
            "-j",
            str(THREADS),
            "-T",
            str(int(options.pgbench_seconds)),
            *connection,
            database,
        ]
        timeout = options.pgbench_seconds + RUN_GRACE_SECONDS
        ran = await asyncio.to_thread(_run, command, environment, timeout)
        meter.stop()
        sums = await _sums(base.stack.database_dsn(database), base.shards)
    finally:
        await drop_databases(base, [database])
    (log_dir / "pgbench.out").write_text(ran.stdout + ran.stderr)
    return _result(ran, sums, meter, options)


def _result(
    ran: subprocess.CompletedProcess[str], sums: list[int], meter: CpuMeter, options: BenchOptions
) -> ModeResult:
    tps = _TPS.search(ran.stdout)
    processed = _PROCESSED.search(ran.stdout)
    failed = _FAILED.search(ran.stdout)
    count = int(processed.group(1)) if processed else 0
    checks = Checks()
    checks.expect(ran.returncode == 0, "pgbench exited 0", ran.stderr[-500:])
    checks.expect(count > 0, "transactions processed", count)
    checks.expect(failed is not None and failed.group(1) == "0", "no failed transaction", failed)
    checks.expect(len(set(sums)) == 1, "TPC-B books agree", sums)
    result = ModeResult(
        mode="pgbench",
        commands=count,
        seconds=options.pgbench_seconds,
        rate_per_second=float(tps.group(1)) if tps else 0.0,
        cpu_seconds_per_1k=meter.per_thousand(count),
        notes={"clients": options.pgbench_clients, "scale": options.pgbench_clients},
    )
    return checks.apply(result)


def libpq_environment(credentials: DatabaseLogin) -> dict[str, str]:
    """This process's environment and libpq's settings for the DSN's TLS and password:
    through the environment (PGSSLMODE, PGSSLROOTCERT, PGPASSWORD), never argv, which
    every user of the machine can read."""
    query = dict(parse_qsl(urlsplit(credentials.dsn).query))
    environment = dict(os.environ)
    for parameter, variable in (("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT")):
        if parameter in query:
            environment[variable] = query[parameter]
    if credentials.password is not None:
        environment["PGPASSWORD"] = credentials.password
    return environment


def _run(
    command: list[str], environment: dict[str, str], timeout_seconds: float
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise StackError(f"{command[0]} did not finish in {timeout_seconds:.0f} s") from error


async def _sums(dsn: str, shards: ShardsConfig) -> list[int]:
    connection = await connect(dsn, shards)
    try:
        row = await connection.fetchrow(_SUMS)
    finally:
        await connection.close()
    return [int(row[name] or 0) for name in ("accounts", "branches", "tellers", "history")]
