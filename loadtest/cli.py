"""``smallcups demo`` and ``smallcups bench``: the load tools' commands, registered through
the ``smallcups.commands`` entry point (the product does not import its tools)."""

from __future__ import annotations

import argparse
from typing import TypeAlias

from deploy.local.config import local_config
from engine.core.config import Config
from loadtest.bench.options import MODES, BenchOptions, parse_modes

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register_demo(commands: Subcommands) -> None:
    demo = commands.add_parser("demo", help="the demo job on the local stack")
    demo.add_argument("--seconds", type=float, default=30.0, help="duration of the load")
    demo.add_argument("--workers", type=int, default=2, help="worker processes to start")
    demo.add_argument("--customers", type=int, default=2_000, help="customers to open")
    demo.add_argument("--rate", type=int, default=0, help="commands/s cap (0: as fast as possible)")
    demo.add_argument("--cross", type=int, default=20, help="%% of transfers to another partition")
    demo.add_argument("--window", type=int, default=2_000, help="commands awaiting results at once")
    demo.add_argument(
        "--cups",
        type=int,
        default=0,
        help="add Postgres cups (and rebalance) up to this many (0: as configured)",
    )
    demo.set_defaults(run=_demo)


def _demo(args: argparse.Namespace, config: Config) -> int:
    from loadtest.demo import DemoOptions, run_demo

    options = DemoOptions(
        args.seconds, args.workers, args.customers, args.rate, args.cross, args.window, args.cups
    )
    return run_demo(local_config(config.stack, config), options)


def register_bench(commands: Subcommands) -> None:
    defaults = BenchOptions()
    bench = commands.add_parser(
        "bench", help="the engine beside its baselines, in one run; exit 1 if a mode fails"
    )
    add = bench.add_argument
    add("--accounts", type=int, default=defaults.accounts, help="customers, one account each")
    add("--partitions", type=int, default=defaults.partitions, help="partitions of the topics")
    add("--cups", type=int, default=defaults.cups, help="cup databases")
    add("--transfers", type=int, default=defaults.transfers, help="commands of the load")
    add("--cross", type=int, default=defaults.cross_percent, help="%% of transfers crossing")
    add("--deposits", type=int, default=0, help="%% of the load that are deposits")
    add("--withdrawals", type=int, default=0, help="%% that are withdrawals")
    add("--seed", type=int, default=defaults.seed, help="seed of the workload")
    add(
        "--credit",
        type=int,
        default=defaults.credit_percent,
        help="%% of the credit mode's load that are draws and repayments",
    )
    add(
        "--misrouted",
        type=int,
        default=0,
        help="%% of the engine's commands published to the wrong partition (forwarded)",
    )
    add(
        "--modes",
        default="all",
        help=f"comma-separated: {', '.join(MODES)}; engine (both Postgres engines), "
        "mariadb (the three MariaDB modes), security (the Postgres engines with security "
        "on and off), credit (engine_1w on transfers only and with credit), all",
    )
    add("--seconds-naive", type=float, default=defaults.naive_seconds, help="naive's bound")
    add("--seconds-pgbench", type=float, default=defaults.pgbench_seconds, help="pgbench's")
    add("--pgbench-clients", type=int, default=defaults.pgbench_clients, help="pgbench clients")
    add(
        "--seconds-latency",
        type=float,
        default=defaults.latency_seconds,
        help="open-loop latency phase duration",
    )
    add(
        "--ceiling-batch",
        type=int,
        default=defaults.ceiling_batch_records,
        help="records per batch fed to db_ceiling",
    )
    add("--runs", type=int, default=1, help="run every mode N times; report each and the medians")
    add("--json", metavar="PATH", help="also write the report as JSON")
    bench.set_defaults(run=_bench)


def _bench(args: argparse.Namespace, config: Config) -> int:
    from loadtest.bench.run import run_bench

    options = BenchOptions(
        accounts=args.accounts,
        partitions=args.partitions,
        cups=args.cups,
        transfers=args.transfers,
        cross_percent=args.cross,
        deposit_percent=args.deposits,
        withdraw_percent=args.withdrawals,
        seed=args.seed,
        modes=parse_modes(args.modes),
        naive_seconds=args.seconds_naive,
        pgbench_seconds=args.seconds_pgbench,
        pgbench_clients=args.pgbench_clients,
        latency_seconds=args.seconds_latency,
        ceiling_batch_records=args.ceiling_batch,
        runs=args.runs,
        misrouted_percent=args.misrouted,
        credit_percent=args.credit,
    )
    return run_bench(local_config(config.stack, config), options, args.json)
