"""The cup store's contract, on both kinds of cup: one suite, each test run against a
Postgres cup and a MariaDB cup of one mixed system (engine.core.store.CupStore).

What goes in comes back the same (integers at their limits, ids byte for byte, bytes of
every value, booleans, timestamps); the fence holds per partition, on the epoch and both
offsets; a frozen partition refuses its claim as a passing fault; trims need the epoch;
the credit book keeps each entity's last state, loads the open ones and moves with its
partition to the other kind; clearing entries are appended as they went in, only by a
batch whose fence held, and move with their partition too; the guards below the ledger
refuse what the ledger never writes; a cup that cannot be reached fails by name without
its password.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

import msgspec
import pytest

from engine.core.book import (
    Account,
    AccountStatus,
    Applied,
    ClearingEntry,
    ClearingKind,
    CreditKind,
    CreditRow,
    Forged,
    InFlight,
    JournalRow,
    Outcome,
)
from engine.core.config import Config
from engine.core.errors import ConfigError, CupUnavailableError, InfrastructureError
from engine.core.messages import (
    AMOUNT_MAX,
    BALANCE_MAX,
    PARTNER_MAX,
    Result,
    Status,
    result_decoder,
)
from engine.core.records import Claim, CommitBatch, CommitStatus, OutboxKind, OutboxRow
from engine.core.store import CupStore
from loadtest.system import System, drop_system, make_system
from shards.backends import cup_kind, open_store
from shards.cup_admin import CupAdmin, CupKind, StateRow
from shards.cups import close_cups, connect_cups, open_cups
from shards.partition_copy import copy_partition

pytestmark = pytest.mark.integration

PARTITIONS = 64
KINDS = [CupKind.POSTGRES, CupKind.MYSQL]

CreditBookRows = dict[tuple[CreditKind, str], CreditRow]
"""Credit rows by kind and key, as Outcome.credit holds them."""


@dataclass
class Cups:
    system: System
    stores: dict[int, CupStore]
    admins: dict[int, CupAdmin]
    unused: dict[CupKind, Iterator[int]]


@dataclass(frozen=True)
class Cup:
    """One cup of the kind under test, and partitions of it no other test touched."""

    kind: CupKind
    store: CupStore
    admin: CupAdmin
    partitions: Iterator[int]

    def partition(self) -> int:
        return next(self.partitions)


@pytest.fixture(scope="module")
async def cups(stack: Config, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cups]:
    log_dir = tmp_path_factory.mktemp("contract")
    system = await make_system(stack, log_dir, partitions=PARTITIONS, cups=1, mysql_cups=1)
    stores = await open_cups(system.shard_map, system.config.shards)
    admins = await connect_cups(system.shard_map, system.config.shards)
    kinds = {cup_kind(dsn): cup for cup, dsn in system.shard_map.cups.items()}
    unused = {kind: iter(system.shard_map.partitions_of(cup)) for kind, cup in kinds.items()}
    try:
        yield Cups(system, stores, admins, unused)
    finally:
        await close_cups(stores)
        await close_cups(admins)
        await drop_system(stack, system)


@pytest.fixture(params=KINDS, ids=[str(k) for k in KINDS])
def cup(cups: Cups, request: pytest.FixtureRequest) -> Cup:
    return _cup_of(cups, request.param)


def _cup_of(cups: Cups, kind: CupKind) -> Cup:
    (cup_id,) = [c for c, dsn in cups.system.shard_map.cups.items() if cup_kind(dsn) is kind]
    return Cup(kind, cups.stores[cup_id], cups.admins[cup_id], cups.unused[kind])


def _result(command_id: str, offset: int, detail: str = "") -> Result:
    return Result(command_id, Status.ACCEPTED, detail=detail, offset=offset)


def _batch(
    partition: int,
    claim: Claim,
    outcome: Outcome,
    *,
    records: int = 1,
    internal_records: int = 0,
    outbox: list[OutboxRow] | None = None,
    trim: tuple[int, int] = (0, 0),
) -> CommitBatch:
    """A batch of ``records`` records of the commands topic and ``internal_records`` of the
    internal topic, from the claim's offsets, writing ``outcome``."""
    applied = [result_encoded(a.result) for a in outcome.applied]
    finals = [result_encoded(f.result) for f in outcome.finals]
    offset = claim.next_offset
    internal = claim.internal_offset
    return CommitBatch(
        partition,
        claim.epoch,
        offset,
        offset + records,
        internal,
        internal + internal_records,
        outcome,
        applied,
        finals,
        outbox or [],
        trim[1],
        trim[0],
    )


def result_encoded(result: Result) -> bytes:
    return msgspec.msgpack.encode(result)


def _applied(command_id: str, offset: int) -> Applied:
    return Applied(command_id, 42, _result(command_id, offset), offset)


async def test_a_stale_epoch_cannot_commit(cup: Cup) -> None:
    partition = cup.partition()
    stale = await cup.store.claim(partition, "stale")
    fresh = await cup.store.claim(partition, "fresh")
    assert fresh == Claim(stale.epoch + 1, stale.next_offset, stale.internal_offset)
    assert await cup.store.commit_many([_batch(partition, stale, Outcome())]) == {
        partition: CommitStatus.FENCED
    }
    assert (await cup.store.states([partition]))[partition] == fresh
    current = _batch(partition, fresh, Outcome(), internal_records=2)
    assert await cup.store.commit_many([current]) == {partition: CommitStatus.COMMITTED}
    assert await cup.store.commit_many([current]) == {partition: CommitStatus.FENCED}
    moved = Claim(fresh.epoch, 1, 2)
    assert (await cup.store.states([partition]))[partition] == moved
    assert await cup.admin.state_row(partition) == StateRow(fresh.epoch, 1, 2, False)
    behind_internally = _batch(partition, moved._replace(internal_offset=1), Outcome())
    assert await cup.store.commit_many([behind_internally]) == {partition: CommitStatus.FENCED}
    assert (await cup.store.states([partition]))[partition] == moved


async def test_one_commit_fences_each_partition_on_its_own(cup: Cup) -> None:
    """A round commits one partition, refuses a stale epoch on another and a command id
    recorded before on a third (also as a refused leg's id); only the first is written."""
    fresh, stale, repeated, leg = (cup.partition() for _ in range(4))
    claims = {p: await cup.store.claim(p, "test") for p in (fresh, stale, repeated, leg)}
    newer = await cup.store.claim(stale, "newer")
    seen = Outcome(applied=[_applied("seen-before", 0), _applied("Leg-1", 0)])
    for p in (repeated, leg):
        first = _batch(p, claims[p], seen, outbox=[_outbox(0, b"first")])
        assert await cup.store.commit_many([first]) == {p: CommitStatus.COMMITTED}
        claims[p] = Claim(claims[p].epoch, 1, 0)
    batches = [
        _batch(fresh, claims[fresh], Outcome(applied=[_applied("fresh-1", 0)]),
               outbox=[_outbox(0, b"fresh")]),
        _batch(stale, claims[stale], Outcome(applied=[_applied("stale-1", 0)]),
               outbox=[_outbox(0, b"stale")]),
        _batch(repeated, claims[repeated], Outcome(applied=[_applied("seen-before", 1)]),
               outbox=[_outbox(1, b"again")]),
        _batch(leg, claims[leg], Outcome(forged=[Forged(1, "credit_leg", "no", "Leg-1")])),
    ]  # fmt: skip
    assert await cup.store.commit_many(batches) == {
        fresh: CommitStatus.COMMITTED,
        stale: CommitStatus.FENCED,
        repeated: CommitStatus.DUPLICATES,
        leg: CommitStatus.DUPLICATES,
    }
    states = await cup.store.states([fresh, stale, repeated, leg])
    assert states == {
        fresh: Claim(claims[fresh].epoch, 1, 0),
        stale: newer,
        repeated: claims[repeated],
        leg: claims[leg],
    }
    assert set(await cup.store.load_known(fresh, ["fresh-1"])) == {"fresh-1"}
    assert await cup.store.load_known(stale, ["stale-1"]) == {}
    assert [r.value for r in await cup.store.unsent(fresh)] == [b"fresh"]
    assert await cup.store.unsent(stale) == []
    assert [r.value for r in await cup.store.unsent(repeated)] == [b"first"]


def _outbox(offset: int, value: bytes, key: bytes | None = b"k", seq: int = 0) -> OutboxRow:
    return OutboxRow(offset, seq, OutboxKind.RESULT, key, value, 0)


async def test_every_value_comes_back_as_it_went_in(cup: Cup) -> None:
    """Integers at their limits, ids that differ only in case, bytes of every value, a
    missing key, booleans and the in-flight figures."""
    partition = cup.partition()
    claim = await cup.store.claim(partition, "owner 'quoted' \\ ü")
    accounts = {
        (0, 1): Account(0, 1, "EUR", BALANCE_MAX, 0, AccountStatus.OPEN),
        (0, 2): Account(0, 2, "EUR", -BALANCE_MAX, 0, AccountStatus.OPEN),
        (7, 2**31 - 1): Account(7, 2**31 - 1, "USD", -(10**15), 10**15, AccountStatus.FROZEN),
        (2**63 - 1, 1): Account(2**63 - 1, 1, "EUR", 5, 0, AccountStatus.CLOSED),
    }
    every_byte = bytes(range(256))
    opened = [
        InFlight("t-1", 7, 2**31 - 1, 2**63 - 1, 1, 10**15, "USD", 0, True, 3),
        InFlight("T-1", 7, 2**31 - 1, 9, 1, 1, "USD", 0, False, -1),
    ]
    outcome = Outcome(
        changed=accounts,
        journal=[JournalRow(0, "a'b", 0, 1, "EUR", BALANCE_MAX)],
        applied=[_applied("Case-1", 0), _applied("case-1", 0)],
        opened=opened,
    )
    outbox = [_outbox(0, every_byte, None, 0), _outbox(0, b"", every_byte, 1)]
    assert await cup.store.commit_many([_batch(partition, claim, outcome, outbox=outbox)]) == {
        partition: CommitStatus.COMMITTED
    }
    loaded = await cup.store.load_partition(partition, 100)
    assert {a.key: a for a in loaded} == accounts
    assert [a.customer for a in loaded] == sorted(a.customer for a in loaded)
    assert await cup.store.load_accounts(partition, [(7, 2**31 - 1), (8, 1)]) == [
        accounts[(7, 2**31 - 1)]
    ]
    known = await cup.store.load_known(partition, ["Case-1", "case-1", "CASE-1"])
    assert {k: v.result.command_id for k, v in known.items()} == {
        "Case-1": "Case-1",
        "case-1": "case-1",
    }
    assert await cup.store.unsent(partition) == outbox
    assert sorted(await cup.store.load_in_flight(partition), key=lambda t: t.transfer_id) == sorted(
        opened, key=lambda t: t.transfer_id
    )
    (figures,) = await cup.store.in_flight([partition], 300.0)
    assert (figures.currency, figures.transfers, figures.money, figures.stuck) == (
        "USD", 2, 10**15 + 1, 0
    )  # fmt: skip
    (now_stuck,) = await cup.store.in_flight([partition], 0.0)
    assert now_stuck.stuck == 2


async def test_finals_replace_results_and_settled_transfers_close(cup: Cup) -> None:
    partition = cup.partition()
    claim = await cup.store.claim(partition, "w")
    opened = InFlight("x-1", 7, 1, 9, 1, 50, "EUR", 0)
    first = Outcome(applied=[_applied("x-1", 0)], opened=[opened])
    assert await cup.store.commit_many([_batch(partition, claim, first)]) == {
        partition: CommitStatus.COMMITTED
    }
    final = Applied("x-1", 42, _result("x-1", 0, "settled"), 1)
    second = Outcome(applied=[_applied("x-1/settle", 1)], finals=[final], settled=["x-1"])
    settled = Claim(claim.epoch, 1, 0)
    batch = _batch(partition, settled, second, outbox=[_outbox(1, b"r")], trim=(0, 1))
    assert await cup.store.commit_many([batch]) == {partition: CommitStatus.COMMITTED}
    known = await cup.store.load_known(partition, ["x-1"])
    assert known["x-1"].result.detail == "settled"
    assert await cup.store.load_in_flight(partition) == []
    assert await cup.store.in_flight([partition], 300.0) == []


async def _three_outbox_rows(cup: Cup) -> tuple[int, Claim]:
    """A claimed partition whose outbox holds rows at input places 0, 1 and 2."""
    partition = cup.partition()
    claim = await cup.store.claim(partition, "w")
    rows = [_outbox(offset, b"v") for offset in range(3)]
    batch = _batch(partition, claim, Outcome(), records=3, outbox=rows)
    assert await cup.store.commit_many([batch]) == {partition: CommitStatus.COMMITTED}
    return partition, claim


async def test_trims_need_the_current_epoch(cup: Cup) -> None:
    partition, claim = await _three_outbox_rows(cup)
    await cup.store.trim_outbox(partition, claim.epoch + 1, 0, 2)
    assert len(await cup.store.unsent(partition)) == 3
    await cup.store.trim_outbox(partition, claim.epoch, 1, 2)
    assert [r.src_offset for r in await cup.store.unsent(partition)] == [0, 2], "from 1"
    await cup.store.trim_outbox(partition, claim.epoch, 0, 2)
    assert [r.src_offset for r in await cup.store.unsent(partition)] == [2]


async def test_a_commit_trims_the_published_range_only(cup: Cup) -> None:
    partition, claim = await _three_outbox_rows(cup)
    moved = Claim(claim.epoch, 3, 0)
    trimming = _batch(partition, moved, Outcome(), records=1, trim=(1, 3))
    assert await cup.store.commit_many([trimming]) == {partition: CommitStatus.COMMITTED}
    assert [r.src_offset for r in await cup.store.unsent(partition)] == [0]


async def test_a_frozen_partition_refuses_claims_as_a_passing_fault(cup: Cup) -> None:
    partition = cup.partition()
    claim = await cup.store.claim(partition, "w")
    fenced = await cup.admin.fence(partition, "a move")
    assert fenced == claim.epoch + 1
    assert await cup.admin.fence(partition, "the move again") == fenced
    with pytest.raises(CupUnavailableError):
        await cup.store.claim(partition, "a worker on an old map")
    batch = _batch(partition, claim, Outcome())
    assert await cup.store.commit_many([batch]) == {partition: CommitStatus.FENCED}
    assert await cup.admin.thaw(partition, forget_owner=True) == 0
    assert (await cup.store.claim(partition, "w")).epoch == fenced + 1


async def test_a_round_of_many_rows_commits_in_one_go(cup: Cup) -> None:
    """Thousands of commands across partitions in one commit (one statement on Postgres,
    two round trips on MariaDB: the statement's size is not a limit)."""
    partitions = [cup.partition() for _ in range(4)]
    batches = []
    for partition in partitions:
        claim = await cup.store.claim(partition, "w")
        ids = [f"bulk-{partition}-{n}" for n in range(2_500)]
        outcome = Outcome(
            changed={(c, 1): Account(c, 1, "EUR", c) for c in range(1, 2_501)},
            applied=[_applied(command_id, n) for n, command_id in enumerate(ids)],
        )
        outbox = [_outbox(n, b"x" * 200) for n in range(2_500)]
        batches.append(_batch(partition, claim, outcome, records=2_500, outbox=outbox))
    statuses = await cup.store.commit_many(batches)
    assert statuses == dict.fromkeys(partitions, CommitStatus.COMMITTED)
    for partition in partitions:
        assert len(await cup.store.load_partition(partition, 10_000)) == 2_500


async def test_results_are_read_back_exactly(cup: Cup) -> None:
    partition = cup.partition()
    claim = await cup.store.claim(partition, "w")
    result = Result("r-1", Status.REJECTED, detail="x" * 200, offset=2**62, partition=partition)
    applied = Applied("r-1", -(2**63), result, 2**62)
    batch = _batch(partition, claim, Outcome(applied=[applied]))
    assert await cup.store.commit_many([batch]) == {partition: CommitStatus.COMMITTED}
    known = (await cup.store.load_known(partition, ["r-1"]))["r-1"]
    assert known.fingerprint == -(2**63)
    assert known.result == result
    assert result_decoder.decode(result_encoded(known.result)) == result


def _credit(kind: CreditKind, key: str, amount: int, *, is_open: bool = True) -> CreditRow:
    """A credit row whose body holds every byte value (the calendar has no customer and
    no currency)."""
    customer, currency = (0, "") if kind is CreditKind.CALENDAR else (2**63 - 1, "EUR")
    body = key.encode() + bytes(range(256))
    return CreditRow(kind, key, customer, currency, amount, is_open, body)


def _credit_book(rows: Iterable[CreditRow]) -> CreditBookRows:
    return {(row.kind, row.key): row for row in rows}


def _open(book: CreditBookRows) -> CreditBookRows:
    return {key: row for key, row in book.items() if row.open}


async def test_the_credit_book_keeps_each_entity_last_state(cup: Cup) -> None:
    """A commit upserts each entity by kind and key (keys byte for byte, up to 64
    characters), every kind; loading returns the open ones: closed loans and holds stay
    unread."""
    partition = cup.partition()
    claim = await cup.store.claim(partition, "w")
    longest = "h" * 64
    first = _credit_book(
        [
            _credit(CreditKind.LINE, str(2**63 - 1), 800),
            _credit(CreditKind.LOAN, "draw-1", 500),
            _credit(CreditKind.LOAN, "Draw-1", 300),
            _credit(CreditKind.LOAN, "draw-0", 0, is_open=False),
            _credit(CreditKind.HOLD, longest, 40),
            _credit(CreditKind.CALENDAR, "", 739_000),
            _credit(CreditKind.PARTNER, str(PARTNER_MAX), 0),
        ]
    )
    batch = _batch(partition, claim, Outcome(credit=first))
    assert await cup.store.commit_many([batch]) == {partition: CommitStatus.COMMITTED}
    assert _credit_book(await cup.store.load_credit(partition)) == _open(first)
    second = _credit_book(
        [
            _credit(CreditKind.LINE, str(2**63 - 1), 300),
            _credit(CreditKind.LOAN, "draw-1", 0, is_open=False),
            _credit(CreditKind.HOLD, longest, 40, is_open=False),
            _credit(CreditKind.CALENDAR, "", 739_001),
        ]
    )
    batch = _batch(partition, Claim(claim.epoch, 1, 0), Outcome(credit=second))
    assert await cup.store.commit_many([batch]) == {partition: CommitStatus.COMMITTED}
    assert _credit_book(await cup.store.load_credit(partition)) == _open(first | second)


async def test_a_refused_batch_writes_no_credit_row_nor_clearing_entry(cup: Cup) -> None:
    """Neither a fenced batch nor one repeating a recorded command id writes its credit
    rows or its clearing entries; the batch committed beside them in the same round
    does."""
    fresh, stale, repeated = (cup.partition() for _ in range(3))
    claims = {p: await cup.store.claim(p, "test") for p in (fresh, stale, repeated)}
    await cup.store.claim(stale, "newer")
    first = _batch(repeated, claims[repeated], Outcome(applied=[_applied("hold-1", 0)]))
    assert await cup.store.commit_many([first]) == {repeated: CommitStatus.COMMITTED}
    claims[repeated] = Claim(claims[repeated].epoch, 1, 0)
    hold = _credit_book([_credit(CreditKind.HOLD, "hold-1", 5)])
    entries = [_entry(0, 0, ClearingKind.FUNDED, -4_000), _entry(0, 1, ClearingKind.FUNDED, -1)]
    batches = [
        _batch(
            p,
            claim,
            Outcome(applied=[_applied("hold-1", claim.next_offset)], credit=hold, clearing=entries),
        )
        for p, claim in claims.items()
    ]
    assert await cup.store.commit_many(batches) == {
        fresh: CommitStatus.COMMITTED,
        stale: CommitStatus.FENCED,
        repeated: CommitStatus.DUPLICATES,
    }
    assert _credit_book(await cup.store.load_credit(fresh)) == hold
    assert await cup.store.load_credit(stale) == []
    assert await cup.store.load_credit(repeated) == []
    assert await _clearing(cup.admin, fresh) == entries
    assert await _clearing(cup.admin, stale) == []
    assert await _clearing(cup.admin, repeated) == []


async def test_a_partition_copy_carries_its_credit_book_to_the_other_kind(
    cups: Cups, cup: Cup
) -> None:
    """A move's copy (shards.partition_copy) takes every credit row, open or closed, and
    every clearing entry to a cup of the other kind; dropping the partition drops them in
    both."""
    partition = cup.partition()
    claim = await cup.store.claim(partition, "w")
    book = _credit_book(
        [
            _credit(CreditKind.LINE, "7", 100),
            _credit(CreditKind.LOAN, "draw-1", 0, is_open=False),
            _credit(CreditKind.CALENDAR, "", 739_000),
        ]
    )
    entries = _statement()
    batch = _batch(partition, claim, Outcome(credit=book, clearing=entries))
    assert await cup.store.commit_many([batch]) == {partition: CommitStatus.COMMITTED}
    (other_kind,) = [kind for kind in KINDS if kind is not cup.kind]
    other = _cup_of(cups, other_kind)
    target_columns = await other.admin.table_columns()
    async with (
        cup.admin.snapshot(partition) as snapshot,
        other.admin.receive(partition) as sink,
    ):
        assert await copy_partition(snapshot, sink, target_columns) == len(book) + len(entries)
    assert _credit_book(await other.store.load_credit(partition)) == _open(book)
    assert await _clearing(other.admin, partition) == entries
    await other.admin.delete_partition(partition, keep_tombstone=False)
    await cup.admin.delete_partition(partition, keep_tombstone=True)
    assert await other.store.load_credit(partition) == []
    assert await cup.store.load_credit(partition) == []
    assert await _clearing(other.admin, partition) == []
    assert await _clearing(cup.admin, partition) == []


CLEARING_COLUMNS = (
    "src_offset",
    "entry",
    "business_day",
    "partner",
    "currency",
    "loan_id",
    "customer_id",
    "kind",
    "amount",
    "command_id",
)
"""A clearing_entries row's columns, in ClearingEntry's order."""
ClearingColumns = tuple[int, int, int, int, str, str, int, ClearingKind, int, str]


def _entry(
    seq: int,
    entry: int,
    kind: ClearingKind,
    amount: int,
    *,
    loan: str = "draw-1",
    partner: int = 7,
    day: int = 739_000,
    customer: int = 42,
    command_id: str = "close-1",
) -> ClearingEntry:
    return ClearingEntry(seq, entry, day, partner, "EUR", loan, customer, kind, amount, command_id)


def _statement() -> list[ClearingEntry]:
    """Entries at the columns' limits: loan and command ids of 64 characters that differ
    only in case, the largest customer, partner and amounts, every kind, a day's net."""
    longest = "L" * 63
    return [
        _entry(0, 0, ClearingKind.FUNDED, -AMOUNT_MAX, loan=longest + "a", customer=2**63 - 1,
               partner=PARTNER_MAX, command_id=longest + "a"),
        _entry(0, 1, ClearingKind.FUNDED, -1, loan=longest + "A", command_id=longest + "A"),
        _entry(2**62, 0, ClearingKind.PRINCIPAL, AMOUNT_MAX, command_id="r.1:x_y-z"),
        _entry(2**62, 1, ClearingKind.INTEREST, 1, command_id="r.1:x_y-z"),
        _entry(2**62 + 1, 0, ClearingKind.NET, BALANCE_MAX, loan="", customer=0, day=3_652_059),
    ]  # fmt: skip


async def _clearing(admin: CupAdmin, partition: int) -> list[ClearingEntry]:
    """The partition's clearing entries as a move's snapshot reads them, in (seq, entry)
    order."""
    entries = []
    async with admin.snapshot(partition) as snapshot:
        async for chunk in snapshot.rows("clearing_entries", CLEARING_COLUMNS):
            entries += [
                ClearingEntry(*row) for row in msgspec.convert(chunk, list[ClearingColumns])
            ]
    return sorted(entries, key=lambda e: (e.seq, e.entry))


async def test_clearing_entries_are_appended_as_they_went_in(cup: Cup) -> None:
    """A commit appends its entries to those of earlier batches, every value as it went
    in."""
    partition = cup.partition()
    claim = await cup.store.claim(partition, "w")
    first, second = _statement()[:2], _statement()[2:]
    batch = _batch(partition, claim, Outcome(clearing=first))
    assert await cup.store.commit_many([batch]) == {partition: CommitStatus.COMMITTED}
    assert await _clearing(cup.admin, partition) == first
    batch = _batch(partition, Claim(claim.epoch, 1, 0), Outcome(clearing=second))
    assert await cup.store.commit_many([batch]) == {partition: CommitStatus.COMMITTED}
    assert await _clearing(cup.admin, partition) == first + second


@pytest.mark.parametrize("kind", KINDS, ids=[str(k) for k in KINDS])
async def test_an_unreachable_cup_fails_by_name_without_its_password(
    stack: Config, kind: CupKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheme = "postgresql" if kind is CupKind.POSTGRES else "mysql"
    monkeypatch.setenv("SMALLCUPS_CREDENTIALS_NOWHERE", "sekret-pw")
    dsn = f"{scheme}://smallcups@127.0.0.1:1/nowhere?credentials=nowhere"
    with pytest.raises(InfrastructureError) as raised:
        await open_store(7, dsn, stack.shards)
    assert "cup 7" in str(raised.value) and "credentials=nowhere" in str(raised.value)
    assert "sekret-pw" not in str(raised.value)
    with pytest.raises(ConfigError) as refused:
        await open_store(7, f"{scheme}://smallcups:sekret-pw@127.0.0.1:1/nowhere", stack.shards)
    assert "sekret-pw" not in str(refused.value) and "***" in str(refused.value)
