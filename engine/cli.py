"""The ``smallcups`` command line: wiring only.

Each product command is registered here and runs a function of ``engine.admin`` or
``engine.service``. The tools register their own commands (``dev`` from deploy.local,
``demo`` and ``bench`` from loadtest) through the ``smallcups.commands`` entry point
group: the product never imports its tools. docs/cli.md lists every command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Final, TypeAlias

import asyncpg
from aiokafka.errors import KafkaError
from asyncmy.errors import MySQLError

from engine.core.config import Config, load_config
from engine.core.errors import SmallcupsError

log = logging.getLogger("smallcups")

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
TOOLS_GROUP: Final = "smallcups.commands"
"""Entry point group of the tools' commands: each is ``register(subcommands) -> None``,
adding a parser whose ``run`` default is ``(args, config) -> exit status``."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="smallcups",
        description="Exactly-once money movement from Kafka into many small SQL cups.",
    )
    top.add_argument("--config", help="TOML configuration file (else SMALLCUPS_CONFIG)")
    top.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    commands = top.add_subparsers(dest="command", required=True)
    for register in (
        _system_commands,
        _account_commands,
        _reconcile_command,
        _archive_command,
        _shards_command,
        _security_commands,
        _credit_command,
        _clearing_command,
        _scheduler_command,
    ):
        register(commands)
    for entry in sorted(entry_points(group=TOOLS_GROUP), key=lambda e: e.name):
        entry.load()(commands)
    return top


def _system_commands(commands: Subcommands) -> None:
    init = commands.add_parser("init", help="create topics, cup schemas and the shard map")
    init.add_argument("--partitions", type=int, help="partitions of the command topic")
    init.add_argument(
        "--replication-factor",
        type=int,
        help="replicas of each new topic's partitions (default: the brokers, at most 3)",
    )
    init.add_argument(
        "--min-insync-replicas",
        type=int,
        help="min.insync.replicas of each new topic (default: replication factor - 1, >= 1)",
    )
    init.set_defaults(run=_init)
    worker = commands.add_parser("worker", help="run a worker (SIGTERM/SIGINT stop it cleanly)")
    worker.set_defaults(run=_worker)


def _init(args: argparse.Namespace, config: Config) -> int:
    from engine.admin.setup import init

    return init(config, args.partitions, args.replication_factor, args.min_insync_replicas)


def _worker(args: argparse.Namespace, config: Config) -> int:
    from engine.service import run_worker

    return run_worker(config)


def _account_commands(commands: Subcommands) -> None:
    publish = commands.add_parser("publish", help="publish one command (JSON), print its result")
    publish.add_argument(
        "message",
        metavar="COMMAND",
        help='e.g. \'{"type":"deposit","id":"d1",...}\' or - for stdin',
    )
    publish.add_argument("--no-wait", action="store_true", help="do not wait for the result")
    publish.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    publish.set_defaults(run=_publish)
    balance = commands.add_parser("balance", help="an account as its cup holds it")
    balance.add_argument("account", help="CUSTOMER/ACCOUNT, e.g. 42/1")
    balance.set_defaults(run=_balance)


def _publish(args: argparse.Namespace, config: Config) -> int:
    from engine.admin.accounts import publish

    return publish(config, args.message, wait=not args.no_wait, timeout_seconds=args.timeout)


def _balance(args: argparse.Namespace, config: Config) -> int:
    from engine.admin.accounts import balance

    return balance(config, args.account)


def _reconcile_command(commands: Subcommands) -> None:
    reconcile = commands.add_parser("reconcile", help="prove the books balance; exit 1 if not")
    reconcile.add_argument("--json", action="store_true", help="print the report as JSON")
    reconcile.add_argument(
        "--no-topics", action="store_true", help="skip reading the topics (check 6)"
    )
    reconcile.add_argument(
        "--full",
        action="store_true",
        help="read the topics from the start, ignoring the checkpoint of the last clean run",
    )
    reconcile.add_argument(
        "--metrics-file", help="also write the outcome as Prometheus text (textfile collector)"
    )
    reconcile.set_defaults(run=_reconcile)


def _reconcile(args: argparse.Namespace, config: Config) -> int:
    from engine.admin.reconcile import run_reconcile

    return run_reconcile(
        config,
        as_json=args.json,
        topics=not args.no_topics,
        full=args.full,
        metrics_file=args.metrics_file,
    )


def _archive_command(commands: Subcommands) -> None:
    archive = commands.add_parser(
        "archive", help="export closed journal periods to files, carry their sums, drop them"
    )
    archive.add_argument(
        "--before",
        required=True,
        metavar="DATE",
        help="archive the periods that end at or before this date (2026-12-01, midnight UTC) "
        "or time (2026-12-01T12:00:00Z); never the current period",
    )
    archive.add_argument(
        "--dir", default=".", metavar="PATH", help="where the files and manifests go"
    )
    archive.set_defaults(run=_archive)


def _archive(args: argparse.Namespace, config: Config) -> int:
    from engine.admin.archive import run_archive

    return run_archive(config, args.before, args.dir)


def _shards_command(commands: Subcommands) -> None:
    shards = commands.add_parser(
        "shards", help="cups and the shard map: list, add, move, drain, remove"
    )
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
    add.add_argument(
        "dsn",
        metavar="DSN",
        help="postgresql://user@host:port/db?credentials=NAME or "
        "mysql://user@host:port/db?credentials=NAME (never a password: docs/security.md)",
    )
    add.add_argument("--rebalance", action="store_true", help="then move its share to it")
    move = actions.add_parser("move", help="move one partition to another cup, online")
    move.add_argument("partition", type=int, metavar="PARTITION")
    move.add_argument("--to", type=int, required=True, metavar="CUP", help="target cup id")
    actions.add_parser("rebalance", help="move partitions until cups hold even shares")
    drain = actions.add_parser(
        "drain", help="take no more partitions in CUP and move all it holds away, online"
    )
    drain.add_argument("cup", type=int, metavar="CUP", help="cup id (`shards list`)")
    undrain = actions.add_parser("undrain", help="let a drained cup take partitions again")
    undrain.add_argument("cup", type=int, metavar="CUP", help="cup id")
    remove = actions.add_parser("remove", help="unregister an empty cup (drain it first)")
    remove.add_argument("cup", type=int, metavar="CUP", help="cup id")
    recover = actions.add_parser("recover", help="finish interrupted moves (or roll back)")
    recover.add_argument(
        "--abort", action="store_true", help="roll back moves not flipped yet instead"
    )
    shards.set_defaults(run=_shards)


def _shards(args: argparse.Namespace, config: Config) -> int:
    from engine.admin.shards import run_shards

    return run_shards(config, args)


def _security_commands(commands: Subcommands) -> None:
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
    risk.set_defaults(run=_risk)
    keys = commands.add_parser("keys", help="make a new key file (never overwrites one)")
    keys.add_argument("kind", choices=["leg", "risk"], help="a workers' leg key, a risk key pair")
    keys.add_argument("path", metavar="PATH", help="the file (risk: the private key; PATH.pub)")
    keys.add_argument("--id", default="key-1", help="the key id written in the file")
    keys.set_defaults(run=_keys)

    access = commands.add_parser("access", help="Kafka users and ACLs (as a super user)")
    access_actions = access.add_subparsers(dest="action", required=True)
    access_actions.add_parser("grant", help="grant each role its ACLs on the deployment")
    password = access_actions.add_parser("set-password", help="make a user or change its password")
    password.add_argument("user", metavar="USER")
    password.add_argument(
        "--password-file", required=True, help="a file holding the password (never argv)"
    )
    revoke = access_actions.add_parser("revoke", help="delete a user's ACLs and credentials")
    revoke.add_argument("user", metavar="USER")
    access.set_defaults(run=_access)


def _access(args: argparse.Namespace, config: Config) -> int:
    from engine.admin.access import run_access

    user = getattr(args, "user", "")
    return run_access(config, args.action, user, getattr(args, "password_file", ""))


def _risk(args: argparse.Namespace, config: Config) -> int:
    from engine.admin.risk import run_risk

    amount = getattr(args, "amount", None)
    return run_risk(config, args.action, args.account, amount, args.id, args.timeout)


def _keys(args: argparse.Namespace, config: Config) -> int:
    from engine.admin.risk import make_keys

    return make_keys(args.kind, args.path, args.id)


def _credit_command(commands: Subcommands) -> None:
    credit = commands.add_parser(
        "credit", help="revolving credit: lines (the risk authority), draws, repayments, holds"
    )
    actions = credit.add_subparsers(dest="action", required=True)
    grant = actions.add_parser("grant", help="risk authority: open a customer's credit line")
    grant.add_argument(
        "account", metavar="CUSTOMER/ACCOUNT", help="draws are paid to it, repaid from it"
    )
    grant.add_argument("--currency", required=True, help="the account's currency, e.g. EUR")
    grant.add_argument("--partner", help="a registered partner bank funding the line jointly")
    grant.add_argument("--partner-share-bp", help="the partner's share of every draw, bp")
    grant.add_argument("--partner-rate-bp", help="the partner's annual rate, bp (<= --rate-bp)")
    change = actions.add_parser("change", help="risk authority: new terms for a customer's line")
    change.add_argument("customer", metavar="CUSTOMER")
    for terms in (grant, change):
        terms.add_argument("--limit", required=True, help="most principal open, minor units")
        terms.add_argument("--rate-bp", required=True, help="annual rate, basis points")
        terms.add_argument("--overdue-rate-bp", required=True, help="annual rate once overdue")
        terms.add_argument("--loan-max", required=True, help="largest draw, minor units")
        terms.add_argument("--term-days", required=True, help="a loan is due this many days on")
    suspend = actions.add_parser("suspend", help="risk authority: no new draws on the line")
    suspend.add_argument("customer", metavar="CUSTOMER")
    suspend.add_argument("--lift", action="store_true", help="lift the suspension instead")
    for action in (grant, change, suspend, *_credit_client_actions(actions)):
        action.add_argument("--id", help="the command id (default: made unique)")
        action.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    credit.set_defaults(run=_credit)


def _credit_client_actions(actions: Subcommands) -> list[argparse.ArgumentParser]:
    """The customer's side of ``smallcups credit``: plain client commands."""
    draw = actions.add_parser("draw", help="borrow on the customer's line: a new loan")
    repay = actions.add_parser("repay", help="pay back, interest first, oldest loan first")
    for money in (draw, repay):
        money.add_argument("customer", metavar="CUSTOMER")
        money.add_argument("amount", metavar="AMOUNT", help="minor units (1050 for 10.50)")
        money.add_argument("--currency", required=True, help="the line's currency")
    hold = actions.add_parser("hold", help="reserve an amount of an account for a payee")
    hold.add_argument("account", metavar="CUSTOMER/ACCOUNT", help="the payer's account")
    hold.add_argument("to_account", metavar="TO_CUSTOMER/TO_ACCOUNT", help="the payee's")
    hold.add_argument("amount", metavar="AMOUNT", help="minor units (1050 for 10.50)")
    hold.add_argument("--currency", required=True, help="the account's currency")
    hold.add_argument(
        "--expires-on", required=True, metavar="YYYY-MM-DD", help="released at this day's close"
    )
    post = actions.add_parser("post", help="pay all or part of a hold; release the rest")
    post.add_argument("customer", metavar="CUSTOMER", help="the payer")
    post.add_argument("hold_id", metavar="HOLD_ID", help="the id of the hold command")
    post.add_argument("amount", metavar="AMOUNT", help="minor units, at most the hold's")
    void = actions.add_parser("void", help="release a hold without paying")
    void.add_argument("customer", metavar="CUSTOMER", help="the payer")
    void.add_argument("hold_id", metavar="HOLD_ID", help="the id of the hold command")
    return [draw, repay, hold, post, void]


def _credit(args: argparse.Namespace, config: Config) -> int:
    from engine.admin.credit import run_credit

    return run_credit(config, args)


def _clearing_command(commands: Subcommands) -> None:
    clearing = commands.add_parser(
        "clearing", help="partner banks: register one, a day's statement, check theirs"
    )
    actions = clearing.add_subparsers(dest="action", required=True)
    register = actions.add_parser(
        "register-partner", help="risk authority: make a partner bank known to every partition"
    )
    register.add_argument("partner", metavar="PARTNER", help="its number, 1..9999")
    register.add_argument("--name", required=True, help="its name, as statements show it")
    register.add_argument("--currency", required=True, help="the currency it settles in")
    register.add_argument(
        "--funding-account", dest="account", required=True, help="its account reference"
    )
    register.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    report = actions.add_parser("report", help="a partner's clearing statement of one day")
    report.add_argument("--format", choices=["csv", "json"], default="csv")
    report.add_argument("--output", metavar="FILE", help="write it there (default: stdout)")
    reconcile = actions.add_parser(
        "reconcile", help="compare a partner's statement with ours; exit 1 if they differ"
    )
    reconcile.add_argument("--statement", required=True, metavar="FILE", help="CSV or JSON")
    for day in (report, reconcile):
        day.add_argument("--partner", required=True, metavar="PARTNER")
        day.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="the business day")
    clearing.set_defaults(run=_clearing)


def _clearing(args: argparse.Namespace, config: Config) -> int:
    from engine.admin.clearing import run_reconcile_statement, run_register_partner, run_report

    match args.action:
        case "register-partner":
            return run_register_partner(config, args)
        case "report":
            return run_report(config, args)
    return run_reconcile_statement(config, args)


def _scheduler_command(commands: Subcommands) -> None:
    scheduler = commands.add_parser(
        "scheduler",
        help="close every partition's business day after each UTC midnight (risk key); "
        "SIGTERM/SIGINT stop it",
    )
    until = scheduler.add_mutually_exclusive_group()
    until.add_argument("--once", action="store_true", help="close through yesterday, then exit")
    until.add_argument(
        "--through", metavar="YYYY-MM-DD", help="close every day up to this one, then exit"
    )
    scheduler.add_argument(
        "--from",
        dest="first",
        metavar="YYYY-MM-DD",
        help="the first day to publish (default: the day before --through, else yesterday)",
    )
    scheduler.add_argument(
        "--delay",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long after UTC midnight the day before is closed",
    )
    scheduler.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="wait for a day's results"
    )
    scheduler.set_defaults(run=_scheduler)


def _scheduler(args: argparse.Namespace, config: Config) -> int:
    from engine.admin.scheduler import Schedule, parse_day, run_scheduler

    plan = Schedule(
        once=args.once,
        through=None if args.through is None else parse_day(args.through, "--through"),
        first=None if args.first is None else parse_day(args.first, "--from"),
        delay_seconds=args.delay,
        timeout_seconds=args.timeout,
    )
    return run_scheduler(config, plan)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.log_level.upper() != "DEBUG":
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
        status: int = args.run(args, config)
        return status
    except SmallcupsError as error:
        print(f"smallcups: {error}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError, MySQLError, KafkaError) as error:
        print(f"smallcups: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
