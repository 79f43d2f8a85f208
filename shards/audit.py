"""Reconciliation: prove the books balance, per cup and across the system.

Checks (each failure names the account, transfer or command):

1. every balance equals the sum of its journal rows;
2. every cup's journal sums to zero per currency (double entry);
3. the clearing accounts of all cups net to the money in flight: transfers debited on
   the payer's side whose credit leg has not been applied on the payee's side yet
   (or was refused and awaits its refund);
4. sum(customer balances) + in flight == deposits - withdrawals (the CASH accounts);
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
    in the books, and it is left out of check 6.

Checks 1 to 5 read each cup's rows of the partitions the map gives it, so a partition
copied by an unfinished move is counted once, in the cup the map names.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from engine.core.book import SystemAccount, system_account_number
from engine.core.messages import Status, credit_leg_id, result_decoder
from engine.core.records import ShardMap
from engine.core.routing import partition_of
from shards.store import PostgresCupStore

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
    cash_total: dict[str, int] = field(default_factory=dict)


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


_TOTALS = """
SELECT currency,
       coalesce(sum(balance) FILTER (WHERE customer_id <> 0), 0) AS customers,
       coalesce(sum(balance) FILTER (WHERE customer_id = 0 AND account_no = ANY($1)), 0)
           AS clearing,
       coalesce(sum(balance) FILTER (WHERE customer_id = 0 AND account_no = ANY($2)), 0)
           AS cash,
       count(*) AS accounts
FROM accounts WHERE partition = ANY($3::integer[]) GROUP BY currency
"""

_OFF_JOURNAL = """
WITH sums AS (SELECT partition, customer_id, account_no, sum(amount) AS total
              FROM journal WHERE partition = ANY($1::integer[])
              GROUP BY partition, customer_id, account_no)
SELECT a.partition, a.customer_id, a.account_no, a.balance, coalesce(s.total, 0) AS total
FROM accounts a LEFT JOIN sums s USING (partition, customer_id, account_no)
WHERE a.partition = ANY($1::integer[]) AND a.balance <> coalesce(s.total, 0)
UNION ALL
SELECT s.partition, s.customer_id, s.account_no, NULL, s.total
FROM sums s LEFT JOIN accounts a USING (partition, customer_id, account_no)
WHERE a.partition IS NULL
LIMIT 1000
"""

_UNBALANCED = (
    "SELECT currency, sum(amount) AS total FROM journal WHERE partition = ANY($1::integer[])"
    " GROUP BY currency HAVING sum(amount) <> 0"
)

_TWICE = """
SELECT partition, command_id FROM journal WHERE partition = ANY($1::integer[])
GROUP BY partition, command_id HAVING count(DISTINCT src_offset) > 1 LIMIT 1000
"""


def _system_numbers(kind: SystemAccount, currencies: Iterable[str]) -> list[int]:
    return [system_account_number(kind, c) for c in currencies]


_CLOSED_WITH_MONEY = """
SELECT partition, customer_id, account_no, balance FROM accounts
WHERE partition = ANY($1::integer[]) AND status = 2 AND balance <> 0 LIMIT 1000
"""

_STUCK = """
SELECT partition, transfer_id, amount, currency,
       extract(epoch FROM now() - opened_at)::bigint AS age_seconds
FROM transfers_in_flight
WHERE partition = ANY($1::integer[]) AND opened_at < now() - make_interval(secs => $2)
ORDER BY opened_at LIMIT 1000
"""

_STRAY = """
SELECT DISTINCT partition FROM (
    SELECT partition FROM partition_state WHERE NOT frozen
    UNION ALL SELECT partition FROM accounts
    UNION ALL SELECT partition FROM command_results) AS held
WHERE partition <> ALL($1::integer[])
"""


async def audit_cup(
    store: PostgresCupStore,
    partitions: list[int],
    currencies: Iterable[str],
    report: Report,
    moving: frozenset[int] = frozenset(),
    stuck_after_seconds: float = 300.0,
) -> CupFigures:
    """Checks 1, 2, 5, 7, 8 and 9 on one cup (its ``partitions`` by the map); its totals."""
    figures = CupFigures(store.cup_id)
    clearing = _system_numbers(SystemAccount.CLEARING, currencies)
    cash = _system_numbers(SystemAccount.CASH, currencies)
    for row in await store.pool.fetch(_STRAY, partitions):
        if row["partition"] not in moving:
            report.add(
                "one_cup",
                f"cup {store.cup_id} holds rows of partition {row['partition']}, "
                "which the shard map puts elsewhere and no move is copying",
            )
    for row in await store.pool.fetch(_TOTALS, clearing, cash, partitions):
        currency = row["currency"]
        figures.customer_total[currency] = int(row["customers"])
        figures.clearing_total[currency] = int(row["clearing"])
        figures.cash_total[currency] = int(row["cash"])
        figures.accounts += row["accounts"]
    figures.journal_rows = await store.pool.fetchval(
        "SELECT count(*) FROM journal WHERE partition = ANY($1::integer[])", partitions
    )
    for row in await store.pool.fetch(_OFF_JOURNAL, partitions):
        account = f"{row['customer_id']}/{row['account_no']} (partition {row['partition']})"
        report.add(
            "balance_equals_journal",
            f"cup {store.cup_id} account {account}: balance {row['balance']} "
            f"but journal sums to {row['total']}",
        )
    for row in await store.pool.fetch(_UNBALANCED, partitions):
        report.add(
            "journal_balanced",
            f"cup {store.cup_id}: {row['currency']} journal sums to {row['total']}",
        )
    for row in await store.pool.fetch(_TWICE, partitions):
        report.add(
            "applied_once",
            f"cup {store.cup_id}: command {row['command_id']} applied by two records "
            f"of partition {row['partition']}",
        )
    await _audit_saga_edges(store, partitions, report, stuck_after_seconds)
    return figures


async def _audit_saga_edges(
    store: PostgresCupStore, partitions: list[int], report: Report, stuck_after_seconds: float
) -> None:
    """Checks 8 and 9: money in closed accounts, transfers stuck in flight."""
    for row in await store.pool.fetch(_CLOSED_WITH_MONEY, partitions):
        report.add(
            "no_money_in_closed_accounts",
            f"cup {store.cup_id} account {row['customer_id']}/{row['account_no']} "
            f"(partition {row['partition']}) is closed and holds {row['balance']}",
        )
    for row in await store.pool.fetch(_STUCK, partitions, stuck_after_seconds):
        report.add(
            "no_stuck_transfers",
            f"cup {store.cup_id} partition {row['partition']}: transfer "
            f"{row['transfer_id']} ({row['currency']} {row['amount']}) in flight for "
            f"{row['age_seconds']} s",
        )


async def transfers_in_flight(
    stores: Mapping[int, PostgresCupStore], shard_map: ShardMap
) -> tuple[set[tuple[int, str]], list[tuple[int, str, int, str]]]:
    """(payer partition, id) of unsettled transfers, and (payer cup, id, amount, currency)
    of those whose money is in flight: from the debit until the payee's side applied the
    credit; when the credit was refused, until the payer's side applied the refund.
    """
    flights: list[Flight] = []
    for cup_id, store in stores.items():
        rows = await store.pool.fetch(
            "SELECT partition, transfer_id, from_customer, to_customer, amount, currency"
            " FROM transfers_in_flight WHERE partition = ANY($1::integer[])",
            shard_map.partitions_of(cup_id),
        )
        flights.extend(Flight(cup_id, *r.values()) for r in rows)
    by_cup: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for flight in flights:
        payee_partition = partition_of(flight.payee, shard_map.partitions)
        leg = credit_leg_id(flight.transfer_id, flight.payer)
        by_cup[shard_map.cup_of[payee_partition]].append((payee_partition, leg))
    credited: set[tuple[int, str]] = set()
    for cup_id, legs in by_cup.items():
        rows = await stores[cup_id].pool.fetch(
            "SELECT partition, command_id, result FROM command_results"
            " WHERE (partition, command_id) IN"
            " (SELECT * FROM unnest($1::integer[], $2::text[]))",
            [partition for partition, _ in legs],
            [leg for _, leg in legs],
        )
        credited.update(
            (r["partition"], r["command_id"])
            for r in rows
            if result_decoder.decode(r["result"]).status is Status.ACCEPTED
        )
    moving = [
        (f.cup, f.transfer_id, f.amount, f.currency)
        for f in flights
        if (
            partition_of(f.payee, shard_map.partitions),
            credit_leg_id(f.transfer_id, f.payer),
        )
        not in credited
    ]
    return {(f.partition, f.transfer_id) for f in flights}, moving


class Flight(NamedTuple):
    """A transfer in flight as reconcile reads it: where it was debited, who pays whom."""

    cup: int
    partition: int
    transfer_id: str
    payer: int
    payee: int
    amount: int
    currency: str


async def reconcile_cups(
    stores: Mapping[int, PostgresCupStore],
    shard_map: ShardMap,
    currencies: Iterable[str],
    moving: frozenset[int] = frozenset(),
    stuck_after_seconds: float = 300.0,
) -> Report:
    """Checks 1 to 5 and 7 to 9 over every cup of the shard map (``moving``: open moves)."""
    report = Report()
    currencies = sorted(currencies)
    audits = (
        audit_cup(
            store, shard_map.partitions_of(cup), currencies, report, moving, stuck_after_seconds
        )
        for cup, store in stores.items()
    )
    report.cups = list(await asyncio.gather(*audits))
    report.pending_ids, flights = await transfers_in_flight(stores, shard_map)
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
    """Checks 3 and 4: clearing == in flight; customers + in flight == -cash."""
    currencies = {c for f in report.cups for c in f.customer_total}
    for currency in sorted(currencies):
        customers = sum(f.customer_total.get(currency, 0) for f in report.cups)
        clearing = sum(f.clearing_total.get(currency, 0) for f in report.cups)
        cash = sum(f.cash_total.get(currency, 0) for f in report.cups)
        flight = report.in_flight.get(currency, 0)
        if clearing != flight:
            report.add(
                "clearing_equals_in_flight",
                f"{currency}: clearing accounts sum to {clearing}, in flight {flight}",
            )
        if customers + flight != -cash:
            report.add(
                "money_conserved",
                f"{currency}: balances {customers} + in flight {flight} != deposits - "
                f"withdrawals {-cash}",
            )
