"""``smallcups dev up | down | status``: the local stack's command, registered by this tool
through the ``smallcups.commands`` entry point (the product does not import it)."""

from __future__ import annotations

import argparse

from deploy.local.stack import run_dev
from engine.core.config import Config


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = commands.add_parser("dev", help="the local stack: Kafka broker and Postgres cups")
    dev.add_argument("action", choices=["up", "down", "status"])
    dev.set_defaults(run=_dev)


def _dev(args: argparse.Namespace, config: Config) -> int:
    return run_dev(args.action, config.stack)
