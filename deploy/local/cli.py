"""``smallcups dev up | down | status``: the local stack's command, registered by this tool
through the ``smallcups.commands`` entry point (the product does not import it)."""

from __future__ import annotations

import argparse

import msgspec

from deploy.local.stack import run_dev
from engine.core.config import KAFKA_BROKERS_MAX, Config


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = commands.add_parser("dev", help="the local stack: Kafka brokers and Postgres cups")
    dev.add_argument("action", choices=["up", "down", "status"])
    dev.add_argument(
        "--brokers",
        type=int,
        choices=range(1, KAFKA_BROKERS_MAX + 1),
        metavar="N",
        help="Kafka nodes (default: stack.kafka_brokers, env SMALLCUPS_STACK_KAFKA_BROKERS)",
    )
    dev.set_defaults(run=_dev)


def _dev(args: argparse.Namespace, config: Config) -> int:
    stack = config.stack
    if args.brokers is not None:
        stack = msgspec.structs.replace(stack, kafka_brokers=args.brokers)
        stack.check()
    return run_dev(args.action, stack)
