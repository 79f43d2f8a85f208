"""A partner's clearing statement: the writer's bytes, the hash, the merge of the cups'
streams, the reader of both formats, the reconcile comparison, register-partner's
commands and summary. No servers: the cups are fakes holding rows."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncGenerator, Sequence

import msgspec
import pytest

from engine.admin.clearing import (
    partner_command_id,
    registered_lines,
    registrations,
    statement_lines,
)
from engine.admin.statement import (
    Comparison,
    Header,
    Line,
    StatementWriter,
    Theirs,
    Totals,
    read_statement,
)
from engine.cli import parser
from engine.core.book import ClearingKind
from engine.core.credit import Partner
from engine.core.errors import ConfigError, InvariantError
from engine.core.messages import Reason, RegisterPartner, Result, Status
from engine.core.records import ShardMap
from engine.core.routing import routing_customers
from shards.clearing_query import day_entries, find_partner, merge, open_partitions
from shards.cup_admin import ClearingReads, ClearingRow

PARTNER = 7
DAY = 740_000
HEADER = Header(PARTNER, "Bank 7, Ltd.", "DE44500105", "2027-01-01", "EUR")
FUNDED, PRINCIPAL, INTEREST, NET = (int(kind) for kind in ClearingKind)
ROWS = [
    ClearingRow("d-1", FUNDED, "d-1", 0, 10, 0, 42, -8_000, "EUR"),
    ClearingRow("d-1", PRINCIPAL, "r-1", 0, 12, 1, 42, 1_000, "EUR"),
    ClearingRow("d-1", INTEREST, "r-1", 0, 12, 0, 42, 25, "EUR"),
    ClearingRow("d-2", FUNDED, "d-2", 1, 3, 0, 77, -4_000, "EUR"),
    ClearingRow("", NET, "close-2027-01-01-p0", 0, 20, 0, 0, -6_975, "EUR"),
    ClearingRow("", NET, "close-2027-01-01-p1", 1, 9, 0, 0, -4_000, "EUR"),
]
GOLDEN_CSV = (
    b'# clearing statement partner=7 name="Bank 7, Ltd." funding_account=DE44500105'
    b" date=2027-01-01 currency=EUR\n"
    b"loan,customer,kind,amount,command\n"
    b",0,net,-6975,close-2027-01-01-p0\n"
    b",0,net,-4000,close-2027-01-01-p1\n"
    b"d-1,42,funded,-8000,d-1\n"
    b"d-1,42,principal,1000,r-1\n"
    b"d-1,42,interest,25,r-1\n"
    b"d-2,77,funded,-4000,d-2\n"
    b"# totals funded=-12000,principal=1000,interest=25,net=-10975"
    b" (net = funded + principal + interest)\n"
)
GOLDEN_CSV_SHA256 = "08581b06dedf78609fe3060f1449b71520de10e87a1499850fad3b0ec99e7503"
GOLDEN_JSON = (
    b'{"partner":7,"name":"Bank 7, Ltd.","funding_account":"DE44500105",'
    b'"date":"2027-01-01","currency":"EUR"}\n'
    b'{"loan":"","customer":0,"kind":"net","amount":-6975,"command":"close-2027-01-01-p0"}\n'
    b'{"loan":"","customer":0,"kind":"net","amount":-4000,"command":"close-2027-01-01-p1"}\n'
    b'{"loan":"d-1","customer":42,"kind":"funded","amount":-8000,"command":"d-1"}\n'
    b'{"loan":"d-1","customer":42,"kind":"principal","amount":1000,"command":"r-1"}\n'
    b'{"loan":"d-1","customer":42,"kind":"interest","amount":25,"command":"r-1"}\n'
    b'{"loan":"d-2","customer":77,"kind":"funded","amount":-4000,"command":"d-2"}\n'
    b'{"totals":{"funded":-12000,"principal":1000,"interest":25,"net":-10975},'
    b'"check":"net = funded + principal + interest"}\n'
)


class FakeCup:
    """A cup holding clearing rows and partner rows: it answers like a real one, each
    query's rows sorted, in chunks of ``chunk_rows``."""

    def __init__(self, rows: Sequence[ClearingRow], partitions: Sequence[int], chunk_rows: int):
        self.rows = list(rows)
        self.partitions = list(partitions)
        self.chunk_rows = chunk_rows
        self.closed = dict.fromkeys(partitions, DAY)

    async def clearing_entries(
        self, partner: int, day: int, partitions: Sequence[int]
    ) -> AsyncGenerator[list[ClearingRow], None]:
        assert (partner, day) == (PARTNER, DAY)
        wanted = sorted(row for row in self.rows if row.partition in partitions)
        for start in range(0, len(wanted), self.chunk_rows):
            await asyncio.sleep(0)
            yield wanted[start : start + self.chunk_rows]

    async def partner_body(
        self, partner: int, partitions: Sequence[int]
    ) -> tuple[int, bytes] | None:
        held = sorted(set(self.partitions) & set(partitions))
        if partner != PARTNER or not held:
            return None
        name = f"{HEADER.name} (as partition {held[0]} has it)"
        partner_row = Partner(partner, name, HEADER.currency, HEADER.funding_account)
        return held[0], msgspec.msgpack.encode(partner_row)

    async def last_closed(self, partitions: Sequence[int]) -> dict[int, int]:
        return {p: day for p, day in self.closed.items() if p in partitions}


def cluster(
    rows: Sequence[ClearingRow], cups: int, partitions: int, rng: random.Random
) -> tuple[dict[int, ClearingReads], ShardMap]:
    """``rows`` over ``cups`` fake cups, the partitions dealt at random; each cup also
    holds a stale copy of a partition it does not own (a move not finished)."""
    cup_of = {p: rng.randrange(cups) for p in range(partitions)}
    shard_map = ShardMap(1, partitions, "t", {c: f"cup{c}" for c in range(cups)}, cup_of)
    fakes: dict[int, ClearingReads] = {}
    for cup in range(cups):
        owned = shard_map.partitions_of(cup)
        stale = [p for p in range(partitions) if p not in owned][:1]
        held = [row for row in rows if row.partition in owned]
        held += [row._replace(amount=row.amount + 1) for row in rows if row.partition in stale]
        rng.shuffle(held)
        fakes[cup] = FakeCup(held, owned + stale, rng.randint(1, 4))
    return fakes, shard_map


def write(form: str, lines: Sequence[Line], header: Header = HEADER) -> bytes:
    written: list[bytes] = []
    writer = StatementWriter(written.append, form, header)
    for line in lines:
        writer.add(line)
    digest = writer.finish()
    assert writer.digest == digest
    return b"".join(written)


async def our_lines(cups: dict[int, ClearingReads], shard_map: ShardMap) -> list[Line]:
    return [line async for line in statement_lines(HEADER, day_entries(cups, shard_map, 7, DAY))]


def lines_of(rows: Sequence[ClearingRow]) -> list[Line]:
    names = {int(kind): kind.name.lower() for kind in ClearingKind}
    return [Line(r.loan, r.customer, names[r.kind], r.amount, r.command) for r in sorted(rows)]


def test_the_writer_bytes_are_golden_and_hashed() -> None:
    csv = write("csv", lines_of(ROWS))
    assert csv == GOLDEN_CSV + f"# sha256 {GOLDEN_CSV_SHA256}\n".encode()
    assert hashlib.sha256(GOLDEN_CSV).hexdigest() == GOLDEN_CSV_SHA256
    json = write("json", lines_of(ROWS))
    digest = hashlib.sha256(GOLDEN_JSON).hexdigest()
    assert json == GOLDEN_JSON + b'{"sha256":"' + digest.encode() + b'"}\n'


def test_an_empty_day_is_a_statement_too() -> None:
    csv = write("csv", [])
    assert csv.count(b"\n") == 4
    assert b"# totals funded=0,principal=0,interest=0,net=0" in csv
    assert read_statement(csv).problems == []


def test_a_day_that_does_not_balance_is_refused() -> None:
    writer = StatementWriter(lambda data: None, "csv", HEADER)
    writer.add(Line("d-1", 42, "funded", -8_000, "d-1"))
    with pytest.raises(ConfigError, match="does not balance"):
        writer.finish()
    with pytest.raises(ConfigError, match="--format"):
        StatementWriter(lambda data: None, "xml", HEADER)
    with pytest.raises(InvariantError):
        StatementWriter(lambda data: None, "csv", HEADER).add(Line("a,b", 1, "net", 1, "c"))


@pytest.mark.parametrize("seed", range(8))
async def test_the_same_day_gives_the_same_bytes_whatever_the_cups(seed: int) -> None:
    rng = random.Random(seed)
    rows = generated_rows(rng, partitions=6, loans=40)
    expected = {form: write(form, lines_of(rows)) for form in ("csv", "json")}
    for cups in (1, 2, 3):
        fakes, shard_map = cluster(rows, cups, 6, rng)
        lines = await our_lines(fakes, shard_map)
        assert write("csv", lines) == expected["csv"]
        assert write("json", lines) == expected["json"]


def generated_rows(rng: random.Random, partitions: int, loans: int) -> list[ClearingRow]:
    """Draws and repayments over ``partitions``, and each partition's net."""
    rows: list[ClearingRow] = []
    offsets = [0] * partitions
    for number in range(loans):
        partition = rng.randrange(partitions)
        loan = f"d-{rng.randrange(loans // 2)}"  # ids shared between partitions too
        customer = partition * 1_000 + number
        offsets[partition] += 1
        rows.append(
            ClearingRow(loan, FUNDED, loan, partition, offsets[partition], 0, customer, -100, "EUR")
        )
        if rng.random() < 0.5:
            offsets[partition] += 1
            at = offsets[partition]
            rows.append(
                ClearingRow(loan, INTEREST, f"r-{number}", partition, at, 0, customer, 3, "EUR")
            )
            rows.append(
                ClearingRow(loan, PRINCIPAL, f"r-{number}", partition, at, 1, customer, 40, "EUR")
            )
    for partition in range(partitions):
        net = sum(r.amount for r in rows if r.partition == partition)
        command = f"close-2027-01-01-p{partition}"
        rows.append(
            ClearingRow("", NET, command, partition, offsets[partition] + 1, 0, 0, net, "EUR")
        )
    return rows


async def test_a_partition_whose_day_is_not_closed_stops_the_statement() -> None:
    rows = [row for row in ROWS if row.command != "close-2027-01-01-p1"]
    fakes, shard_map = cluster(rows, 2, 2, random.Random(1))
    with pytest.raises(ConfigError, match="does not net to zero in partitions 1: not closed"):
        await our_lines(fakes, shard_map)
    other = [row._replace(currency="USD") if row.partition == 1 else row for row in ROWS]
    fakes, shard_map = cluster(other, 2, 2, random.Random(1))
    with pytest.raises(ConfigError, match="partition 1: partner 7 settles in EUR, not USD"):
        await our_lines(fakes, shard_map)


async def test_a_day_is_final_once_every_partition_closed_it() -> None:
    fakes, shard_map = cluster(ROWS, 2, 4, random.Random(2))
    assert await open_partitions(fakes, shard_map, DAY) == []
    assert await open_partitions(fakes, shard_map, DAY + 1) == [0, 1, 2, 3]
    owner = fakes[shard_map.cup_of[2]]
    assert isinstance(owner, FakeCup)
    del owner.closed[2]
    copy = next(cup for cup in fakes.values() if cup is not owner)
    assert isinstance(copy, FakeCup)
    copy.closed[2] = DAY  # a stale copy's calendar does not count
    assert await open_partitions(fakes, shard_map, DAY) == [2]


async def test_the_partner_comes_from_the_lowest_partition_of_the_map() -> None:
    fakes, shard_map = cluster(ROWS, 3, 4, random.Random(3))
    found = await find_partner(fakes, shard_map, PARTNER)
    assert found is not None
    assert found.name == f"{HEADER.name} (as partition 0 has it)"
    assert await find_partner(fakes, shard_map, 8) is None


async def test_the_merge_checks_its_order() -> None:
    async def stream(*chunks: list[ClearingRow]) -> AsyncGenerator[list[ClearingRow], None]:
        for chunk in chunks:
            yield chunk

    a, b, c = sorted(ROWS)[:3]
    assert [row async for row in merge([stream([a], [c]), stream([b])])] == [a, b, c]
    assert [row async for row in merge([stream(), stream([a, b])])] == [a, b]
    with pytest.raises(InvariantError, match="out of order"):
        [row async for row in merge([stream([c], [a]), stream([b])])]


@pytest.mark.parametrize("form", ["csv", "json"])
def test_both_formats_read_back(form: str) -> None:
    theirs = read_statement(write(form, lines_of(ROWS)))
    assert theirs.header == HEADER
    assert theirs.totals == Totals(-12_000, 1_000, 25, -10_975)
    assert theirs.entries == {line.key: line.amount for line in lines_of(ROWS)}
    assert theirs.problems == []
    without_hash = write(form, lines_of(ROWS)).rsplit(b"\n", 2)[0] + b"\n"
    assert read_statement(without_hash).problems == []


def compare(theirs: Theirs, ours: Sequence[Line] = ()) -> list[str]:
    comparison = Comparison(theirs)
    totals = Totals()
    for line in ours or lines_of(ROWS):
        totals.add(line)
        comparison.ours(line)
    comparison.finish(HEADER, totals)
    assert comparison.count == len(comparison.shown)
    return comparison.shown


@pytest.mark.parametrize("form", ["csv", "json"])
def test_reconcile_lists_every_difference(form: str) -> None:
    assert compare(read_statement(write(form, lines_of(ROWS)))) == []
    lines = lines_of(ROWS)
    changed = [
        *lines[:2],
        Line("d-1", 42, "funded", -7_999, "d-1"),
        *lines[4:],
        Line("d-9", 5, "funded", -1, "d-9"),
        Line("", 0, "net", -1_000, "close-x"),
    ]
    theirs = read_statement(write(form, changed, msgspec.structs.replace(HEADER, name="Bank")))
    assert compare(theirs) == [
        "amount of d-1 customer 42 funded d-1: ours -8000, theirs -7999",
        "only in ours: d-1 customer 42 principal r-1 1000",
        "only in theirs: d-9 customer 5 funded d-9 -1",
        "only in theirs: (net) customer 0 net close-x -1000",
        "header name: ours Bank 7, Ltd., theirs Bank",
        "totals principal: ours 1000, theirs 0",
        "totals net: ours -10975, theirs -11975",
    ]


@pytest.mark.parametrize("form", ["csv", "json"])
def test_a_tampered_statement_is_told(form: str) -> None:
    original = write(form, lines_of(ROWS))
    tampered = original.replace(b"-8000", b"-8001", 1)
    assert compare(read_statement(tampered)) == [
        "amount of d-1 customer 42 funded d-1: ours -8000, theirs -8001",
        "sha256: the hash line is not the hash of the bytes before it",
    ]
    lines = original.splitlines(keepends=True)
    at = next(n for n, line in enumerate(lines) if b"close-2027-01-01-p1" in line)
    twice = b"".join([*lines[: at + 1], lines[at], *lines[at + 1 :]])
    assert compare(read_statement(twice)) == [
        "sha256: the hash line is not the hash of the bytes before it",
        "listed twice in theirs: (net) customer 0 net close-2027-01-01-p1 -4000",
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "starts with its header"),
        (b"loan,customer\n", "starts with its header"),
        (b"# clearing statement partner=7\n", "line 1: not a statement's header"),
        (GOLDEN_CSV.replace(b"loan,customer", b"loan,client"), "line 2: not the columns"),
        (GOLDEN_CSV.replace(b"d-2,77,funded", b"d-2,77,lent"), "line 8: not an entry"),
        (GOLDEN_CSV.replace(b",-4000,d-2", b",-4e3,d-2"), "line 8: not an entry"),
        (GOLDEN_CSV.replace(b"d-2,77", b"d 2,77"), "line 8: not an entry"),
        (GOLDEN_CSV + b"d-3,1,funded,-1,d-3\n", "line 10: a line after the totals"),
        (GOLDEN_CSV.replace(b"net=-10975", b"net=x"), "line 9: not a totals line"),
        (GOLDEN_JSON.replace(b'"customer":42', b'"customer":"42"', 1), "line 4: Expected `int`"),
        (GOLDEN_JSON + b"{}\n", "line 9: a line after the totals"),
        (GOLDEN_JSON.replace(b'"kind":"net"', b'"kind":"fee"', 1), "line 2: not an entry"),
        (GOLDEN_JSON.replace(b"\n{", b"\n\xff{", 1), "line 2: not UTF-8"),
    ],
)
def test_a_statement_is_read_strictly(data: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_statement(data)


def test_a_statement_without_totals_is_a_difference() -> None:
    data = GOLDEN_CSV.rsplit(b"\n", 2)[0] + b"\n"
    assert compare(read_statement(data))[-1] == "theirs has no totals line"


def register_args(*extra: str, partner: str = "7") -> list[RegisterPartner]:
    argv = ["clearing", "register-partner", partner, "--name", "Bank 7", "--currency", "EUR"]
    args = parser().parse_args([*argv, "--funding-account", "DE44500105", *extra])
    return registrations(args, routing_customers(4))


def test_register_partner_makes_one_command_per_partition() -> None:
    commands = register_args()
    assert [c.id for c in commands] == [partner_command_id(7, p) for p in range(4)]
    assert [c.customer for c in commands] == list(routing_customers(4))
    assert {(c.partner, c.name, c.currency, c.funding_account) for c in commands} == {
        (7, "Bank 7", "EUR", "DE44500105")
    }
    with pytest.raises(ConfigError, match="not a valid partner: bad_partner"):
        register_args("--name", "Bank <7>")
    with pytest.raises(ConfigError, match=r"a partner is 1\.\.9999"):
        register_args(partner="0")


def result(partition: int, reason: Reason = Reason.NONE) -> Result:
    status = Status.ACCEPTED if reason is Reason.NONE else Status.REJECTED
    return Result(partner_command_id(7, partition), status, reason, "why", partition=partition)


def test_register_partner_counts_partner_exists_as_done() -> None:
    done = {0: result(0), 1: result(1, Reason.PARTNER_EXISTS), 2: result(2)}
    assert registered_lines(7, 3, done) == [
        "registered partner 7 in 3 partitions (2 accepted, 1 registered before)"
    ]
    failed = {0: result(0), 1: result(1, Reason.DUPLICATE_CONFLICT)}
    assert registered_lines(7, 3, failed) == [
        "partner 7 not registered in 2 of 3 partitions (1 accepted, 0 registered before)",
        "partition 1: rejected duplicate_conflict: why",
        "partition 2: no result",
    ]
