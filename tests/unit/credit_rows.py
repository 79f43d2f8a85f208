"""What the tests of reconcile's check 11 share (test_credit_reconcile.py,
test_clearing_audit.py): a partition's rows as a real ledger writes them, check 11 on
them, a cup's snapshot streaming them, and check 4 (money_conserved) counting them."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import msgspec

from engine.core.book import (
    SYSTEM_CUSTOMER,
    AccountKey,
    ClearingEntry,
    CreditKind,
    CreditRow,
    Incoming,
    Known,
    SystemAccount,
    system_account_number,
)
from engine.core.ledger import PartitionLedger
from engine.core.messages import CloseBusinessDay, Command, fingerprint
from engine.core.routing import partition_of
from shards.audit import CupFigures, Report, _check_system_totals
from shards.credit_audit import (
    ACCOUNT_COLUMNS,
    CREDIT_COLUMNS,
    CREDIT_SYSTEM_ACCOUNTS,
    AccountColumns,
    CreditAudit,
    PartitionCredit,
)
from shards.cup_admin import Row, StateRow
from shards.partner_audit import CLEARING_COLUMNS

PARTITIONS: Final = 4
BORROWER, OTHER, ROUTE = [c for c in range(1, 400) if partition_of(c, PARTITIONS) == 0][:3]
"""Customers of partition 0; ROUTE closes its business days."""
START: Final = dt.date(2026, 1, 1)
FUNDING: Final = frozenset(
    system_account_number(kind, "EUR") for kind in (*CREDIT_SYSTEM_ACCOUNTS, SystemAccount.CASH)
)
"""The EUR system accounts customers' money comes from, the partner banks' left out."""

Entity = TypeVar("Entity", bound=msgspec.Struct)


def close(offset: int) -> CloseBusinessDay:
    """Closes the business day ``offset`` days after START."""
    date = (START + dt.timedelta(days=offset)).isoformat()
    return CloseBusinessDay(f"close-{date}", ROUTE, date)


@dataclass
class Book:
    """A partition's rows as its cup holds them: the credit book by kind and key, the
    clearing entries, the accounts by (customer, number); and the ledger that wrote them."""

    ledger: PartitionLedger
    rows: dict[tuple[CreditKind, str], CreditRow]
    clearing: list[ClearingEntry]
    accounts: dict[AccountKey, AccountColumns]

    def set_balance(self, key: AccountKey, balance: int) -> None:
        customer, number, currency, _, limit = self.accounts[key]
        self.accounts[key] = (customer, number, currency, balance, limit)

    def body(self, key: tuple[CreditKind, str], kind: type[Entity]) -> Entity:
        """What the row of ``key`` says in its body."""
        return msgspec.msgpack.decode(self.rows[key].body, type=kind)

    def set_body(self, key: tuple[CreditKind, str], entity: msgspec.Struct) -> None:
        """The row of ``key`` says ``entity`` in its body, its columns unchanged."""
        body = msgspec.msgpack.encode(entity)
        self.rows[key] = msgspec.structs.replace(self.rows[key], body=body)


def book_of(commands: Iterable[Command]) -> Book:
    """Partition 0's rows once its ledger decided ``commands``, each accepted."""
    ledger = PartitionLedger(0, PARTITIONS, {})
    rows: dict[tuple[CreditKind, str], CreditRow] = {}
    clearing: list[ClearingEntry] = []
    known: dict[str, Known] = {}
    for seq, command in enumerate(commands):
        incoming = Incoming(seq, seq, 0, command, fingerprint(command))
        outcome = ledger.decide_batch([incoming], known, now_us=1)
        assert outcome.results[0].accepted, outcome.results[0]
        known.update({a.command_id: Known(a.fingerprint, a.result) for a in outcome.applied})
        rows.update(outcome.credit)
        clearing += outcome.clearing
    accounts = {
        key: (a.customer, a.number, a.currency, a.balance, a.credit_limit)
        for key, a in ledger.book.accounts.items()
    }
    return Book(ledger, rows, clearing, accounts)


def audit(book: Book) -> tuple[list[tuple[str, str]], PartitionCredit]:
    """Check 11 on the book, its rows in the cup's order: (check, finding) pairs, and
    what it tallied."""
    found: list[tuple[str, str]] = []
    credit = CreditAudit(["EUR", "USD"], lambda check, finding: found.append((check, finding)))
    for row in book.rows.values():
        credit.add_credit(row)
    for e in book.clearing:
        credit.add_clearing((e.day, e.partner, e.currency, e.kind, e.amount))
    for account in book.accounts.values():
        credit.add_account(account)
    credit.finish()
    return found, credit.credit


def merged_twice(book: Book) -> tuple[PartitionCredit, Report]:
    """The book audited as partition 0 and as partition 1 (its calendar not started),
    merged into a report; partition 0's tally."""
    _, one = audit(book)
    _, two = audit(book)
    two.last_closed = None
    report = Report()
    report.add_credit(0, one)
    report.add_credit(1, two)
    return one, report


def money_conserved(book: Book, funding: Iterable[int]) -> Report:
    """Check 4 on the book's accounts as one cup's, with the EUR accounts numbered in
    ``funding`` where customers' money comes from."""
    numbers = set(funding)
    accounts = book.accounts.values()
    customers = sum(a[3] for a in accounts if a[0] != SYSTEM_CUSTOMER)
    funded = sum(a[3] for a in accounts if a[1] in numbers)
    figures = CupFigures(
        0,
        customer_total={"EUR": customers},
        clearing_total={"EUR": 0},
        funding_total={"EUR": funded},
    )
    report = Report(cups=[figures])
    _check_system_totals(report)
    return report


class Snapshot:
    """A partition's rows as a cup's snapshot streams them: tuples, in chunks."""

    def __init__(self, tables: dict[str, list[Row]], chunk_rows: int):
        self.state: StateRow | None = None
        self.columns = {
            "credit_book": list(CREDIT_COLUMNS),
            "clearing_entries": list(CLEARING_COLUMNS),
            "accounts": list(ACCOUNT_COLUMNS),
        }
        self.tables = tables
        self.chunk_rows = chunk_rows

    async def rows(self, table: str, columns: Sequence[str]) -> AsyncIterator[list[Row]]:
        assert list(columns) == self.columns[table]
        rows = self.tables[table]
        for start in range(0, len(rows), self.chunk_rows):
            yield rows[start : start + self.chunk_rows]


def tables(book: Book) -> dict[str, list[Row]]:
    """The book's rows as the cup's tables hold them (the kinds as smallints)."""
    return {
        "credit_book": [
            (int(r.kind), r.key, r.customer, r.currency, r.amount, r.open, r.body)
            for r in book.rows.values()
        ],
        "clearing_entries": [
            (e.day, e.partner, e.currency, int(e.kind), e.amount) for e in book.clearing
        ],
        "accounts": [tuple(account) for account in book.accounts.values()],
    }
