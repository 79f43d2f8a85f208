"""Reconciliation: prove the books balance, per cup and across the system.

Checks (each failure names the account, transfer or command):

1. every balance equals its openings (the sums of its archived journal periods) plus
   the journal rows booked since;
2. every cup's journal sums to zero per currency (double entry);
3. the clearing accounts of all cups net to the money in flight: transfers debited on
   the payer's side whose credit leg has not been applied on the payee's side yet
   (or was refused and awaits its refund);
4. sum(customer balances) + in flight == deposits - withdrawals + principal outstanding
   - interest paid (minus the CASH and the credit accounts: LOANS, INTEREST_RECEIVABLE
   and INTEREST_INCOME, and the partner banks' accounts);
5. no command id was applied by two different records of its partition;
6. (with the topics) every consumed command has a result, and one result only:
   re-sends are identical; no pending result was ever published;
7. every partition's rows live in one cup: a cup holding rows of a partition the shard
   map puts elsewhere is a discrepancy, unless that partition has an unfinished move
   (a frozen state row left by a finished move is a tombstone, not data);
8. no closed account holds money;
9. no transfer has been in flight longer than the stuck threshold (its money sits in
   clearing: a payee cup unreachable for that long, or a bug);
10. (with the topics) every result record is well-formed and answers the command at the
    partition and offset it names (engine.admin.reconcile). One that does not was not
    written by a worker: a notice (someone writes the results topic), not a difference
    in the books, and it is left out of check 6;
11. revolving credit, per partition and currency (shards.credit_audit): the credit_book
    rows agree with their bodies, the lines with their loans, the LOANS and interest
    accounts with the lines and loans, and open holds are payable; per partner bank and
    currency, its accounts agree with its loans' shares and its clearing entries, and
    each closed day's net with that day's entries. While it streams the rows it
    tallies the credit book (``Report.credit``, ``Report.partners``,
    ``Report.calendars``).

Checks 1 to 5 and 11 read each cup's rows of the partitions the map gives it, so a
partition copied by an unfinished move is counted once, in the cup the map names. Check 11
reads one partition at a time from one snapshot of its cup (its credit rows, its clearing
entries and its accounts agree), streamed: memory holds one partition's open credit, never
its accounts. It runs first: the partner banks' accounts it finds join check 4's.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from engine.core.book import SystemAccount, system_account_number
from engine.core.errors import invariant
from engine.core.messages import Status, credit_leg_id, result_decoder
from engine.core.records import ShardMap
from engine.core.routing import partition_of
from shards.credit_audit import CREDIT_SYSTEM_ACCOUNTS, CreditFigures, PartitionCredit, audit_credit
from shards.cup_admin import CupAdmin, FlightRow
from shards.partner_audit import PartnerFigures, PartnerKey, partner_account_numbers

FINDINGS_MAX = 50
"""Most discrepancies listed per check (the count is always complete)."""


@dataclass(slots=True)
class CupFigures:
    cup: int
    accounts: int = 0
    journal_rows: int = 0
    legs_in_flight: int = 0
    money_in_flight: dict[str, int] = field(default_factory=dict)
    customer_total: dict[str, int] = field(default_factory=dict)
    clearing_total: dict[str, int] = field(default_factory=dict)
    funding_total: dict[str, int] = field(default_factory=dict)
    """The system accounts customers' money comes from: CASH, whose balance is minus
    (deposits - withdrawals), and the credit and partner banks' accounts, whose balances
    sum to minus (principal outstanding - interest paid)."""


@dataclass(slots=True)
class Report:
    cups: list[CupFigures] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    transfers_in_flight: int = 0
    pending_ids: set[tuple[int, str]] = field(default_factory=set)
    """(partition, id) of transfers debited and not yet settled: their final result is
    not out yet."""
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    notices: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    """Findings that do not make the books wrong (records on the results topic that no
    worker wrote): reported, but ``ok`` stays true."""
    counts: dict[str, int] = field(default_factory=dict)
    credit: dict[str, CreditFigures] = field(default_factory=dict)
    """The credit book by currency, over every cup and partition (check 11)."""
    partners: dict[PartnerKey, PartnerFigures] = field(default_factory=dict)
    """Each partner bank's position by currency, over every cup and partition."""
    calendars: dict[int, int] = field(default_factory=dict)
    """Each partition's last closed business day (a ``date.toordinal`` day number), for
    the partitions whose calendar has started."""
    checkpoint: str = "not used"
    """How the topic checks started: from a checkpoint ("continued"), from the start
    ("none", or "ignored: why" when the saved one no longer matches the topics)."""

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def add(self, check: str, finding: str) -> None:
        self._list(self.problems, check, finding, "problems")

    def notice(self, check: str, finding: str) -> None:
        self._list(self.notices, check, finding, "notices")

    def _list(self, lists: dict[str, list[str]], check: str, finding: str, kind: str) -> None:
        found = lists[check]
        if len(found) < FINDINGS_MAX:
            found.append(finding)
        self.counts[f"{check}_{kind}"] = self.counts.get(f"{check}_{kind}", 0) + 1

    def add_credit(self, partition: int, credit: PartitionCredit) -> None:
        """Merge one partition's credit book into the system's."""
        invariant(
            partition not in self.calendars, f"partition {partition}'s calendar counted twice"
        )
        for currency, figures in credit.figures.items():
            self.credit.setdefault(currency, CreditFigures()).add(figures)
        for key, partner in credit.partners.items():
            self.partners.setdefault(key, PartnerFigures()).add(partner)
        if credit.last_closed is not None:
            self.calendars[partition] = credit.last_closed


def _system_numbers(kind: SystemAccount, currencies: Iterable[str]) -> list[int]:
    return [system_account_number(kind, c) for c in currencies]


async def audit_cup(
    cup_id: int,
    cup: CupAdmin,
    partitions: list[int],
    currencies: Iterable[str],
    report: Report,
    moving: frozenset[int] = frozenset(),
    stuck_after_seconds: float = 300.0,
) -> CupFigures:
    """Checks 1, 2, 5, 7, 8, 9 and 11 on one cup (its ``partitions`` by the map); its
    totals."""
    figures = CupFigures(cup_id)
    partners: set[PartnerKey] = set()
    for partition in partitions:
        partners.update(await _audit_credit(cup_id, cup, partition, currencies, report))
    clearing = _system_numbers(SystemAccount.CLEARING, currencies)
    funding = [
        number
        for kind in (SystemAccount.CASH, *CREDIT_SYSTEM_ACCOUNTS)
        for number in _system_numbers(kind, currencies)
    ]
    funding += partner_account_numbers(partners)
    for partition in await cup.stray_partitions(partitions):
        if partition not in moving:
            report.add(
                "one_cup",
                f"cup {cup_id} holds rows of partition {partition}, "
                "which the shard map puts elsewhere and no move is copying",
            )
    for totals in await cup.currency_totals(partitions, clearing, funding):
        figures.customer_total[totals.currency] = totals.customers
        figures.clearing_total[totals.currency] = totals.clearing
        figures.funding_total[totals.currency] = totals.cash
        figures.accounts += totals.accounts
    figures.journal_rows = await cup.journal_rows(partitions)
    for off in await cup.off_journal(partitions):
        account = f"{off.customer}/{off.account} (partition {off.partition})"
        report.add(
            "balance_equals_journal",
            f"cup {cup_id} account {account}: balance {off.balance} "
            f"but journal sums to {off.journal_total}",
        )
    for currency, total in await cup.unbalanced_journal(partitions):
        report.add("journal_balanced", f"cup {cup_id}: {currency} journal sums to {total}")
    for partition, command_id in await cup.applied_twice(partitions):
        report.add(
            "applied_once",
            f"cup {cup_id}: command {command_id} applied by two records of partition {partition}",
        )
    await _audit_saga_edges(cup_id, cup, partitions, report, stuck_after_seconds)
    return figures


async def _audit_saga_edges(
    cup_id: int, cup: CupAdmin, partitions: list[int], report: Report, stuck_after_seconds: float
) -> None:
    """Checks 8 and 9: money in closed accounts, transfers stuck in flight."""
    for closed in await cup.closed_with_money(partitions):
        report.add(
            "no_money_in_closed_accounts",
            f"cup {cup_id} account {closed.customer}/{closed.account} "
            f"(partition {closed.partition}) is closed and holds {closed.balance}",
        )
    for stuck in await cup.stuck_transfers(partitions, stuck_after_seconds):
        report.add(
            "no_stuck_transfers",
            f"cup {cup_id} partition {stuck.partition}: transfer "
            f"{stuck.transfer_id} ({stuck.currency} {stuck.amount}) in flight for "
            f"{stuck.age_seconds} s",
        )


async def transfers_in_flight(
    cups: Mapping[int, CupAdmin], shard_map: ShardMap
) -> tuple[set[tuple[int, str]], list[tuple[int, str, int, str]]]:
    """(payer partition, id) of unsettled transfers, and (payer cup, id, amount, currency)
    of those whose money is in flight: from the debit until the payee's side applied the
    credit; when the credit was refused, until the payer's side applied the refund.
    """
    flights: list[tuple[int, FlightRow]] = []
    for cup_id, cup in cups.items():
        flights.extend((cup_id, row) for row in await cup.flights(shard_map.partitions_of(cup_id)))
    legs = {(cup_id, f): _credit_leg(f, shard_map.partitions) for cup_id, f in flights}
    by_cup: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for leg in legs.values():
        by_cup[shard_map.cup_of[leg[0]]].append(leg)
    credited: set[tuple[int, str]] = set()
    for cup_id, wanted in by_cup.items():
        credited.update(
            (partition, command_id)
            for partition, command_id, result in await cups[cup_id].results_of(wanted)
            if result_decoder.decode(result).status is Status.ACCEPTED
        )
    moving = [
        (cup_id, f.transfer_id, f.amount, f.currency)
        for cup_id, f in flights
        if legs[(cup_id, f)] not in credited
    ]
    return {(f.partition, f.transfer_id) for _, f in flights}, moving


def _credit_leg(flight: FlightRow, partitions: int) -> tuple[int, str]:
    """(payee partition, id) of a transfer's credit leg."""
    return partition_of(flight.payee, partitions), credit_leg_id(flight.transfer_id, flight.payer)


async def reconcile_cups(
    cups: Mapping[int, CupAdmin],
    shard_map: ShardMap,
    currencies: Iterable[str],
    moving: frozenset[int] = frozenset(),
    stuck_after_seconds: float = 300.0,
) -> Report:
    """Checks 1 to 5, 7 to 9 and 11 over every cup of the shard map (``moving``: open
    moves)."""
    report = Report()
    currencies = sorted(currencies)
    audits = (
        audit_cup(
            cup_id,
            cup,
            shard_map.partitions_of(cup_id),
            currencies,
            report,
            moving,
            stuck_after_seconds,
        )
        for cup_id, cup in cups.items()
    )
    report.cups = list(await asyncio.gather(*audits))
    report.pending_ids, flights = await transfers_in_flight(cups, shard_map)
    report.transfers_in_flight = len(flights)
    by_cup = {figures.cup: figures for figures in report.cups}
    for cup, _, amount, currency in flights:
        report.in_flight[currency] = report.in_flight.get(currency, 0) + amount
        figures = by_cup[cup]
        figures.legs_in_flight += 1
        figures.money_in_flight[currency] = figures.money_in_flight.get(currency, 0) + amount
    _check_system_totals(report)
    return report


def _check_system_totals(report: Report) -> None:
    """Checks 3 and 4: clearing == in flight; customers + in flight == -funding."""
    currencies = {c for f in report.cups for c in f.customer_total}
    for currency in sorted(currencies):
        customers = sum(f.customer_total.get(currency, 0) for f in report.cups)
        clearing = sum(f.clearing_total.get(currency, 0) for f in report.cups)
        funding = sum(f.funding_total.get(currency, 0) for f in report.cups)
        flight = report.in_flight.get(currency, 0)
        if clearing != flight:
            report.add(
                "clearing_equals_in_flight",
                f"{currency}: clearing accounts sum to {clearing}, in flight {flight}",
            )
        if customers + flight != -funding:
            report.add(
                "money_conserved",
                f"{currency}: balances {customers} + in flight {flight} != deposits - "
                f"withdrawals + principal outstanding - interest paid {-funding}",
            )


async def _audit_credit(
    cup_id: int, cup: CupAdmin, partition: int, currencies: Iterable[str], report: Report
) -> list[PartnerKey]:
    """Check 11 on one partition, from one snapshot of its cup; the partners and
    currencies it found."""

    def found(check: str, finding: str) -> None:
        report.add(check, f"cup {cup_id} partition {partition}: {finding}")

    async with cup.snapshot(partition) as snapshot:
        credit = await audit_credit(snapshot, currencies, found)
    report.add_credit(partition, credit)
    return list(credit.partners)
