"""The saga protocol driven by a model of partitions, logs, commits, crashes and resends.

Each partition has a log (the command topic partition), a durable state (what its cup
holds: accounts, idempotency records, next offset, the outbox) and a volatile ledger
(the worker's cache). A step picks a partition and a batch and then, at random:
crashes before the commit (the cache is rebuilt from the durable state), commits, and
publishes the outbox's legs and results, possibly twice (a relay re-send after a crash).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.book import (
    SYSTEM_CUSTOMER,
    Account,
    AccountKey,
    AccountStatus,
    Incoming,
    InFlight,
    Known,
    SystemAccount,
)
from engine.core.book import system_account_number as system_number
from engine.core.ledger import PartitionLedger
from engine.core.messages import (
    LEG_TYPES,
    CloseAccount,
    Command,
    Deposit,
    FreezeAccount,
    OpenAccount,
    Result,
    Status,
    Transfer,
    fingerprint,
)
from engine.core.routing import partition_of

PARTITIONS = 3
CUSTOMERS = list(range(1, 13))
FUNDS = 1_000


@dataclass
class Partition:
    number: int
    log: list[Command] = field(default_factory=list)
    position: int = 0
    accounts: dict[AccountKey, Account] = field(default_factory=dict)
    known: dict[str, Known] = field(default_factory=dict)
    in_flight: dict[str, InFlight] = field(default_factory=dict)
    outbox: list[tuple[str, Command | Result]] = field(default_factory=list)
    ledger: PartitionLedger | None = None

    def cache(self) -> PartitionLedger:
        if self.ledger is None:
            self.ledger = PartitionLedger(self.number, PARTITIONS, copy.deepcopy(self.accounts))
            self.ledger.book.load_in_flight(self.in_flight.values())
        return self.ledger


@dataclass
class World:
    partitions: list[Partition]
    published: list[Result] = field(default_factory=list)

    def append(self, command: Command) -> None:
        self.partitions[partition_of(command.customer, PARTITIONS)].log.append(command)

    def step(self, number: int, size: int, crash_before: bool, resend: bool) -> None:
        part = self.partitions[number]
        batch = part.log[part.position : part.position + size]
        if not batch:
            return
        ledger = part.cache()
        incoming = [
            Incoming(part.position + i, part.position + i, 0, c, fingerprint(c))
            for i, c in enumerate(batch)
        ]
        outcome = ledger.decide_batch(incoming, part.known, now_us=1)
        if crash_before:
            part.ledger = None
            return
        part.accounts = copy.deepcopy(ledger.book.accounts)
        for applied in outcome.applied:
            part.known[applied.command_id] = Known(applied.fingerprint, applied.result)
        for final in outcome.finals:
            previous = part.known[final.command_id]
            part.known[final.command_id] = Known(previous.fingerprint, final.result)
        part.in_flight.update((flight.transfer_id, flight) for flight in outcome.opened)
        for transfer_id in outcome.settled:
            del part.in_flight[transfer_id]
        assert not outcome.forged, "the engine's own legs are never refused"
        part.position += len(batch)
        part.outbox.extend(("result", p.result) for p in outcome.published)
        part.outbox.extend(("leg", leg.command) for leg in outcome.legs)
        self.relay(part, twice=resend)

    def relay(self, part: Partition, *, twice: bool) -> None:
        for _ in range(2 if twice else 1):
            for kind, message in part.outbox:
                if kind == "leg":
                    assert not isinstance(message, Result)
                    self.append(message)
                else:
                    assert isinstance(message, Result)
                    self.published.append(message)
        part.outbox.clear()

    def drain(self) -> None:
        for _ in range(100):
            for part in self.partitions:
                self.step(part.number, 1_000, crash_before=False, resend=False)
        assert all(p.position == len(p.log) for p in self.partitions)


def commands(draw: st.DrawFn) -> list[Command]:
    opening: list[Command] = []
    for customer in CUSTOMERS:
        opening.append(OpenAccount(f"o{customer}", customer, 1, "EUR"))
        opening.append(Deposit(f"d{customer}", customer, 1, FUNDS, "EUR"))
    load: list[Command] = []
    for n in range(draw(st.integers(min_value=1, max_value=40))):
        payer = draw(st.sampled_from(CUSTOMERS))
        payee = draw(st.sampled_from([*CUSTOMERS, 99]))
        amount = draw(st.integers(min_value=1, max_value=FUNDS))
        load.append(Transfer(f"t{n}", payer, 1, payee, 1, amount, "EUR"))
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            target = draw(st.sampled_from(CUSTOMERS))
            blocker = FreezeAccount if draw(st.booleans()) else CloseAccount
            load.append(blocker(f"b{n}", target, 1))
    return opening + load


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_saga_conserves_money_and_finishes_each_transfer_once(data: st.DataObject) -> None:
    world = World([Partition(p) for p in range(PARTITIONS)])
    sequence = data.draw(st.composite(commands)())
    for command in sequence:
        world.append(command)
    for _ in range(data.draw(st.integers(min_value=0, max_value=60))):
        world.step(
            data.draw(st.integers(min_value=0, max_value=PARTITIONS - 1)),
            data.draw(st.integers(min_value=1, max_value=6)),
            crash_before=data.draw(st.booleans()),
            resend=data.draw(st.booleans()),
        )
        check_books(world)
    world.drain()
    check_books(world)
    clearing = sum(
        a.balance
        for p in world.partitions
        for a in p.accounts.values()
        if a.customer == SYSTEM_CUSTOMER
        and a.number == system_number(SystemAccount.CLEARING, "EUR")
    )
    assert clearing == 0, "nothing is in flight once every log is drained"
    transfers = [c.id for c in sequence if isinstance(c, Transfer)]
    distinct = {r for r in world.published if r.command_id in transfers}
    finals = Counter(r.command_id for r in distinct)
    assert all(finals[t] == 1 for t in transfers), (
        "one final result per transfer (re-sends identical)"
    )
    assert all(r.status is not Status.PENDING for r in world.published)
    assert not any(r.command_id.endswith(("/credit", "/settle")) for r in world.published)
    for part in world.partitions:
        for record in part.log:
            if isinstance(record, LEG_TYPES):
                assert part.known[record.id].result.command_id == record.id


def check_books(world: World) -> None:
    """Every partition's durable books balance; customers never go below zero."""
    deposits = len(CUSTOMERS) * FUNDS
    customer_total = 0
    for part in world.partitions:
        assert sum(a.balance for a in part.accounts.values()) == 0
        for account in part.accounts.values():
            if not account.is_system:
                assert account.balance >= 0
                customer_total += account.balance
    cash = sum(
        a.balance
        for p in world.partitions
        for a in p.accounts.values()
        if a.customer == SYSTEM_CUSTOMER and a.number == system_number(SystemAccount.CASH, "EUR")
    )
    assert -cash <= deposits
    assert customer_total <= -cash
    for part in world.partitions:
        for account in part.accounts.values():
            assert account.status is not AccountStatus.CLOSED or account.balance == 0, (
                "a refund never lands in a closed account"
            )
