"""``smallcups clearing``: partner banks and their clearing statements (docs/lending.md).

- ``register-partner`` makes a partner known to every partition: one RegisterPartner
  per partition, signed with the risk key, addressed to the partition's routing
  customer, with the id ``partner-<P>-p<partition>`` (a re-run is answered with the
  recorded results). Accepted or ``partner_exists`` counts as registered.
- ``report`` writes a partner's statement of one business day, streamed from the cups
  (shards.clearing_query): the same day, the same bytes.
- ``reconcile`` reads a partner's statement (loaded: the operator chose the file, of at
  most STATEMENT_BYTES_MAX), builds ours as a stream and lists every difference.

The statement's format is engine.admin.statement. Each partition's day nets to zero (its
NET entry clears its movements), so the day's net is funded + principal + interest: a
partition where it is not (its day not closed yet) stops the statement before its
totals.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Final

from engine.admin.risk import risk_signer, whole_number
from engine.admin.scheduler import parse_day, publish_per_partition
from engine.admin.statement import (
    DIFFERENCES_SHOWN_MAX,
    KIND_NAMES,
    Comparison,
    Header,
    Line,
    StatementWriter,
    Totals,
    read_statement,
)
from engine.core.book import ClearingKind
from engine.core.config import Config
from engine.core.credit import day_text
from engine.core.decoding import decode_command
from engine.core.errors import ConfigError
from engine.core.messages import (
    PARTNER_MAX,
    Invalid,
    Reason,
    RegisterPartner,
    Result,
    Undecodable,
    encode,
)
from engine.core.routing import routing_customers
from engine.kafka.client import Client
from shards.clearing_query import day_entries, find_partner, open_partitions
from shards.control import connect, load_shard_map
from shards.cup_admin import ClearingRow
from shards.cups import close_cups, connect_cups

STATEMENT_BYTES_MAX: Final = 256 * 1024 * 1024
"""Largest statement ``reconcile`` reads (it holds the partner's entries in memory)."""


def partner_command_id(partner: int, partition: int) -> str:
    """``partner-7-p3``: the same partner and partition, the same id."""
    return f"partner-{partner}-p{partition}"


def partner_number(text: str) -> int:
    partner = whole_number(text, "PARTNER")
    if not 1 <= partner <= PARTNER_MAX:
        raise ConfigError(f"a partner is 1..{PARTNER_MAX}, not {partner}")
    return partner


def registrations(args: argparse.Namespace, customers: tuple[int, ...]) -> list[RegisterPartner]:
    """The unsigned registrations of ``register-partner`` (element p: partition p's),
    checked as the engine reads them."""
    partner = partner_number(args.partner)
    commands = [
        RegisterPartner(
            partner_command_id(partner, p),
            customer,
            partner,
            args.name,
            args.currency,
            args.account,
        )
        for p, customer in enumerate(customers)
    ]
    for command in commands:
        decoded = decode_command(encode(command), json=False)
        if isinstance(decoded, Invalid | Undecodable):
            raise ConfigError(f"not a valid partner: {decoded.reason}: {decoded.detail}")
    return commands


def registered_lines(partner: int, partitions: int, results: dict[int, Result]) -> list[str]:
    """The summary line of ``register-partner``, then one line per partition not done."""
    accepted = sum(result.accepted for result in results.values())
    exists = sum(result.reason is Reason.PARTNER_EXISTS for result in results.values())
    counts = f"{accepted} accepted, {exists} registered before"
    problems = [
        f"partition {p}: rejected {result.reason}: {result.detail}"
        for p, result in sorted(results.items())
        if not result.accepted and result.reason is not Reason.PARTNER_EXISTS
    ]
    problems += [f"partition {p}: no result" for p in range(partitions) if p not in results]
    if not problems:
        return [f"registered partner {partner} in {partitions} partitions ({counts})"]
    head = f"partner {partner} not registered in {len(problems)} of {partitions} partitions"
    return [f"{head} ({counts})", *problems[:DIFFERENCES_SHOWN_MAX]]


def run_register_partner(config: Config, args: argparse.Namespace) -> int:
    """``smallcups clearing register-partner``: exit 1 unless every partition has it."""
    if not args.timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    registrations(args, (1,))
    signer = risk_signer(config)

    async def register() -> tuple[int, dict[int, Result]]:
        async with Client(config.require_kafka(), client_id="smallcups-clearing") as client:
            commands = registrations(args, routing_customers(client.partitions))
            signed = [signer.sign(command) for command in commands]
            return len(signed), await publish_per_partition(client, signed, args.timeout)

    partitions, results = asyncio.run(register())
    head, *problems = registered_lines(partner_number(args.partner), partitions, results)
    print(head)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


@contextlib.asynccontextmanager
async def our_statement(
    config: Config, partner: int, day: int
) -> AsyncIterator[tuple[Header, AsyncIterator[Line]]]:
    """Our statement of ``partner`` for ``day`` (a day number): its header and its
    entries, streamed from the cups while the context is open."""
    control = await connect(config.control_dsn, config.shards)
    try:
        shard_map = await load_shard_map(control)
    finally:
        await control.close()
    async with contextlib.AsyncExitStack() as stack:
        cups = await connect_cups(shard_map, config.shards)
        stack.push_async_callback(close_cups, cups)
        found = await find_partner(cups, shard_map, partner)
        if found is None:
            raise ConfigError(
                f"partner {partner} is not registered (smallcups clearing register-partner)"
            )
        header = Header(partner, found.name, found.funding_account, day_text(day), found.currency)
        open_days = await open_partitions(cups, shard_map, day)
        if open_days:
            shown = ", ".join(map(str, open_days[:DIFFERENCES_SHOWN_MAX]))
            detail = f"{header.date} is not closed yet in partitions {shown}"
            raise ConfigError(f"{detail}: its entries may still change")
        rows = day_entries(cups, shard_map, partner, day)
        lines = await stack.enter_async_context(contextlib.aclosing(statement_lines(header, rows)))
        yield header, lines


async def statement_lines(
    header: Header, rows: AsyncGenerator[ClearingRow, None]
) -> AsyncGenerator[Line, None]:
    """The statement's entries; ends with an error when a partition's day does not net
    to zero (its NET entry clears its movements: a day not closed there has none)."""
    unbalanced: dict[int, int] = {}
    async with contextlib.aclosing(rows):
        async for row in rows:
            if row.currency != header.currency:
                detail = (
                    f"partner {header.partner} settles in {header.currency}, not {row.currency}"
                )
                raise ConfigError(f"partition {row.partition}: {detail}")
            sign = -1 if row.kind == ClearingKind.NET else 1
            unbalanced[row.partition] = unbalanced.get(row.partition, 0) + sign * row.amount
            yield Line(row.loan, row.customer, KIND_NAMES[row.kind], row.amount, row.command)
    open_days = sorted(p for p, left in unbalanced.items() if left)
    if open_days:
        shown = ", ".join(map(str, open_days[:DIFFERENCES_SHOWN_MAX]))
        raise ConfigError(f"{header.date} does not net to zero in partitions {shown}: not closed?")


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[Callable[[bytes], object]]:
    """Where a statement goes: stdout, or ``path`` once it is whole (written beside it,
    then renamed; removed when the statement fails)."""
    if path is None:
        yield sys.stdout.buffer.write
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    part = target.with_name(target.name + ".part")
    try:
        with part.open("wb") as file:
            yield file.write
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def run_report(config: Config, args: argparse.Namespace) -> int:
    """``smallcups clearing report``: the statement, then a summary line (stderr when the
    statement goes to stdout)."""
    partner = partner_number(args.partner)
    day = parse_day(args.date, "--date").toordinal()

    async def report(out: Callable[[bytes], object]) -> StatementWriter:
        async with our_statement(config, partner, day) as (header, lines):
            writer = StatementWriter(out, args.format, header)
            async for line in lines:
                writer.add(line)
        writer.finish()
        return writer

    with _output(args.output) as out:
        writer = asyncio.run(report(out))
    totals = writer.totals
    print(
        f"statement of partner {partner} for {args.date}: {writer.entries} entries,"
        f" net {totals.net}, sha256 {writer.digest}",
        file=sys.stdout if args.output else sys.stderr,
    )
    return 0


def run_reconcile_statement(config: Config, args: argparse.Namespace) -> int:
    """``smallcups clearing reconcile``: every difference, then a summary; exit 1 if any."""
    partner = partner_number(args.partner)
    day = parse_day(args.date, "--date").toordinal()
    path = Path(args.statement)
    if path.stat().st_size > STATEMENT_BYTES_MAX:
        raise ConfigError(f"{path} is over {STATEMENT_BYTES_MAX} bytes: not a statement")
    comparison = Comparison(read_statement(path.read_bytes()))

    async def compare() -> tuple[Header, Totals]:
        totals = Totals()
        async with our_statement(config, partner, day) as (header, lines):
            async for line in lines:
                totals.add(line)
                comparison.ours(line)
        return header, totals

    header, totals = asyncio.run(compare())
    comparison.finish(header, totals)
    for difference in comparison.shown:
        print(difference)
    if comparison.count > len(comparison.shown):
        print(f"and {comparison.count - len(comparison.shown)} more differences")
    verdict = f"{comparison.count} differences" if comparison.count else "identical"
    print(f"statement of partner {partner} for {args.date}: {verdict} (ours: net {totals.net})")
    return 1 if comparison.count else 0
