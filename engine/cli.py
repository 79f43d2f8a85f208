"""The ``smallcups`` command line: wiring only, every command lives in its own module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import asyncpg
from aiokafka.errors import KafkaError

from engine.config import Config, load_config
from engine.errors import SmallcupsError

log = logging.getLogger("smallcups")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smallcups", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (else SMALLCUPS_CONFIG)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="the local stack: Kafka broker and Postgres cups")
    dev.add_argument("action", choices=["up", "down", "status"])

    init = commands.add_parser("init", help="create topics, cup schemas and the shard map")
    init.add_argument("--partitions", type=int, help="partitions of the command topic")

    commands.add_parser("worker", help="run a worker (SIGTERM/SIGINT stop it cleanly)")

    publish = commands.add_parser("publish", help="publish one command (JSON), print its result")
    publish.add_argument(
        "message",
        metavar="COMMAND",
        help='e.g. \'{"type":"deposit","id":"d1",...}\' or - for stdin',
    )
    publish.add_argument("--no-wait", action="store_true", help="do not wait for the result")
    publish.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")

    balance = commands.add_parser("balance", help="an account as its cup holds it")
    balance.add_argument("account", help="CUSTOMER/ACCOUNT, e.g. 42/1")

    reconcile = commands.add_parser("reconcile", help="prove the books balance; exit 1 if not")
    reconcile.add_argument("--json", action="store_true", help="print the report as JSON")
    reconcile.add_argument(
        "--no-topics", action="store_true", help="skip reading the topics (check 6)"
    )
    reconcile.add_argument(
        "--metrics-file", help="also write the outcome as Prometheus text (textfile collector)"
    )

    _shards_parser(commands)
    _security_parsers(commands)

    demo = commands.add_parser("demo", help="the demo job on the local stack")
    demo.add_argument("--seconds", type=float, default=30.0, help="duration of the load")
    demo.add_argument("--workers", type=int, default=2, help="worker processes to start")
    demo.add_argument("--customers", type=int, default=2_000, help="customers to open")
    demo.add_argument("--rate", type=int, default=0, help="commands/s cap (0: as fast as possible)")
    demo.add_argument("--cross", type=int, default=20, help="%% of transfers to another partition")
    demo.add_argument("--window", type=int, default=2_000, help="commands awaiting results at once")
    demo.add_argument(
        "--cups", type=int, default=0, help="add cups (and rebalance) up to this many (0: as is)"
    )
    _bench_parser(commands)
    return parser


def _shards_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    shards = commands.add_parser("shards", help="cups and the shard map: list, add, move")
    shards.add_argument(
        "--resume-wait",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="after a flip, wait this long for a worker to claim the partition (the end of "
        "the measured pause); 0 when no worker runs",
    )
    actions = shards.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="cups, partitions, rows, in flight; unfinished moves")
    add = actions.add_parser("add", help="create the cup schema in DSN and register the cup")
    add.add_argument("dsn", metavar="DSN", help="postgresql://user[:password]@host:port/db")
    add.add_argument("--rebalance", action="store_true", help="then move its share to it")
    move = actions.add_parser("move", help="move one partition to another cup, online")
    move.add_argument("partition", type=int, metavar="PARTITION")
    move.add_argument("--to", type=int, required=True, metavar="CUP", help="target cup id")
    actions.add_parser("rebalance", help="move partitions until cups hold even shares")
    recover = actions.add_parser("recover", help="finish interrupted moves (or roll back)")
    recover.add_argument(
        "--abort", action="store_true", help="roll back moves not flipped yet instead"
    )


def _security_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    risk = commands.add_parser(
        "risk", help="the risk authority: sign and publish a privileged command"
    )
    actions = risk.add_subparsers(dest="action", required=True)
    limit = actions.add_parser("set-credit-limit", help="grant or change an account's limit")
    limit.add_argument("account", metavar="CUSTOMER/ACCOUNT")
    limit.add_argument("amount", type=int, metavar="AMOUNT", help="the limit, in minor units")
    unfreeze = actions.add_parser("unfreeze", help="open a frozen account again")
    unfreeze.add_argument("account", metavar="CUSTOMER/ACCOUNT")
    for action in (limit, unfreeze):
        action.add_argument("--id", help="the command id (default: made unique)")
        action.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    keys = commands.add_parser("keys", help="make a new key file (never overwrites one)")
    keys.add_argument("kind", choices=["leg", "risk"], help="a workers' leg key, a risk key pair")
    keys.add_argument("path", metavar="PATH", help="the file (risk: the private key; PATH.pub)")
    keys.add_argument("--id", default="key-1", help="the key id written in the file")


def _keys(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.keyfiles import new_leg_key_line, new_risk_key_lines, write_secret

    path = Path(args.path)
    if args.kind == "leg":
        write_secret(path, new_leg_key_line(args.id))
        print(f"wrote leg key {args.id} to {path}")
        return 0
    private, public = new_risk_key_lines(args.id)
    write_secret(path, private)
    public_path = path.with_name(path.name + ".pub")
    write_secret(public_path, public)
    print(f"wrote risk key {args.id}: private {path}, public {public_path}")
    return 0


def _shards(args: argparse.Namespace, config: Config) -> int:
    from engine import shard_commands

    match args.action:
        case "list":
            return shard_commands.list_cups(config)
        case "add":
            return shard_commands.add(config, args.dsn, args.rebalance, args.resume_wait)
        case "move":
            return shard_commands.move(config, args.partition, args.to, args.resume_wait)
        case "rebalance":
            return shard_commands.rebalance(config, args.resume_wait)
        case "recover":
            return shard_commands.recover(config, args.abort, args.resume_wait)
    raise SmallcupsError(f"unknown shards action {args.action}")


def _bench_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = commands.add_parser(
        "bench", help="the engine beside its baselines, in one run; exit 1 if a mode fails"
    )
    bench.add_argument("--accounts", type=int, default=100_000, help="customers, one account each")
    bench.add_argument("--partitions", type=int, default=64, help="partitions of the topics")
    bench.add_argument("--cups", type=int, default=4, help="cup databases")
    bench.add_argument("--transfers", type=int, default=300_000, help="commands of the load")
    bench.add_argument("--cross", type=int, default=20, help="%% of transfers to another partition")
    bench.add_argument("--deposits", type=int, default=0, help="%% of the load that are deposits")
    bench.add_argument("--withdrawals", type=int, default=0, help="%% that are withdrawals")
    bench.add_argument("--seed", type=int, default=7, help="seed of the workload")
    bench.add_argument(
        "--misrouted",
        type=int,
        default=0,
        help="%% of the engine's commands published to the wrong partition (forwarded)",
    )
    bench.add_argument(
        "--modes",
        default="all",
        help="comma-separated: raw_pipe, db_ceiling, engine_1w, engine_2w (or engine), "
        "kafka_floor, naive, pgbench, all",
    )
    bench.add_argument("--seconds-naive", type=float, default=30.0, help="naive mode's bound")
    bench.add_argument("--seconds-pgbench", type=float, default=30.0, help="pgbench duration")
    bench.add_argument("--pgbench-clients", type=int, default=8, help="pgbench clients")
    bench.add_argument(
        "--seconds-latency", type=float, default=10.0, help="open-loop latency phase duration"
    )
    bench.add_argument(
        "--ceiling-batch", type=int, default=500, help="records per batch fed to db_ceiling"
    )
    bench.add_argument(
        "--runs", type=int, default=1, help="run every mode N times; report each and the medians"
    )
    bench.add_argument("--json", metavar="PATH", help="also write the report as JSON")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.log_level.upper() != "DEBUG":
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
        return _dispatch(args, config)
    except SmallcupsError as error:
        print(f"smallcups: {error}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError, KafkaError) as error:
        print(f"smallcups: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, config: Config) -> int:
    match args.command:
        case "dev":
            from deploy.local.stack import run_dev

            return run_dev(args.action, config.stack)
        case "init":
            from engine import commands

            return commands.init(config, args.partitions)
        case "worker":
            from engine.service import run_worker

            return run_worker(config)
        case "publish":
            from engine import commands

            return commands.publish(
                config, args.message, wait=not args.no_wait, timeout_seconds=args.timeout
            )
        case "balance":
            from engine import commands

            return commands.balance(config, args.account)
        case "reconcile":
            from engine import commands

            return commands.reconcile(
                config,
                as_json=args.json,
                topics=not args.no_topics,
                metrics_file=args.metrics_file,
            )
        case "shards":
            return _shards(args, config)
        case "risk":
            from engine.risk import run_risk

            amount = getattr(args, "amount", None)
            return run_risk(config, args.action, args.account, amount, args.id, args.timeout)
        case "keys":
            return _keys(args)
        case "demo":
            from loadtest.demo import DemoOptions, run_demo

            options = DemoOptions(
                args.seconds,
                args.workers,
                args.customers,
                args.rate,
                args.cross,
                args.window,
                args.cups,
            )
            return run_demo(config, options)
        case "bench":
            from loadtest.bench.options import BenchOptions, parse_modes
            from loadtest.bench.run import run_bench

            bench = BenchOptions(
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
            )
            return run_bench(config, bench, args.json)
    raise SmallcupsError(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
