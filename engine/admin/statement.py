"""A partner's clearing statement as a document: what ``smallcups clearing report``
writes and ``reconcile`` reads (engine.admin.clearing runs both; docs/lending.md).

The statement (CSV or JSON Lines) holds a header, one line per entry in the order of
shards.cup_admin.ClearingRow, the totals, and the SHA-256 of every byte before its last
line. ``StatementWriter`` writes one, ``read_statement`` reads one (``Theirs``), and
``Comparison`` lists every difference between ours, streamed, and theirs. No I/O: the
writer hands its bytes to a callable, the reader takes bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Final

import msgspec

from engine.core.book import ClearingKind
from engine.core.errors import ConfigError, invariant

FORMATS: Final = ("csv", "json")
DIFFERENCES_SHOWN_MAX: Final = 1_000
"""Differences printed one by one; past that, only counted."""
COLUMNS: Final = b"loan,customer,kind,amount,command\n"
NET_IS: Final = "net = funded + principal + interest"
KIND_NAMES: Final = {int(kind): kind.name.lower() for kind in ClearingKind}
_KIND_ORDER: Final = tuple(KIND_NAMES.values())
_KINDS: Final = frozenset(_KIND_ORDER)
_ID: Final = re.compile(r"[A-Za-z0-9_.:\-]{0,64}")
_INTEGER: Final = re.compile(r"-?[0-9]{1,19}")
_CUSTOMER: Final = re.compile(r"[0-9]{1,19}")
_CSV_HEADER: Final = re.compile(
    r'# clearing statement partner=([0-9]{1,4}) name="([^"]*)" funding_account=(\S*)'
    r" date=([0-9]{4}-[0-9]{2}-[0-9]{2}) currency=([A-Z]{3})"
)
_CSV_TOTALS: Final = re.compile(
    r"# totals funded=(-?[0-9]+),principal=(-?[0-9]+),interest=(-?[0-9]+),net=(-?[0-9]+)"
    r"(?: \(.*\))?"
)
_CSV_HASH: Final = re.compile(r"# sha256 ([0-9a-f]{64})")

EntryKey = tuple[str, int, str, str]
"""An entry as ``reconcile`` matches it: loan, customer, kind, command (a loan's id is
its draw's command id, unique in its partition only: the customer tells two apart)."""


class Header(msgspec.Struct, frozen=True):
    partner: int
    name: str
    funding_account: str
    date: str
    currency: str


class Line(msgspec.Struct, frozen=True):
    """One entry of a statement."""

    loan: str
    customer: int
    kind: str
    amount: int
    command: str

    @property
    def key(self) -> EntryKey:
        return (self.loan, self.customer, self.kind, self.command)

    def text(self) -> str:
        return f"{self.loan or '(net)'} customer {self.customer} {self.kind} {self.command}"


class Totals(msgspec.Struct):
    funded: int = 0
    principal: int = 0
    interest: int = 0
    net: int = 0

    def add(self, line: Line) -> None:
        setattr(self, line.kind, getattr(self, line.kind) + line.amount)

    @property
    def balanced(self) -> bool:
        return self.net == self.funded + self.principal + self.interest


class TotalsLine(msgspec.Struct, frozen=True):
    totals: Totals
    check: str = NET_IS


class HashLine(msgspec.Struct, frozen=True):
    sha256: str


class StatementWriter:
    """Writes one statement to ``out``, hashing every byte but the hash line's."""

    def __init__(self, out: Callable[[bytes], object], form: str, header: Header):
        if form not in FORMATS:
            raise ConfigError(f"--format is one of {', '.join(FORMATS)}, not {form!r}")
        self.out = out
        self.json = form == "json"
        self.totals = Totals()
        self.entries = 0
        self.digest = ""
        self._hash = hashlib.sha256()
        if self.json:
            self._put(msgspec.json.encode(header) + b"\n")
        else:
            self._put(csv_header(header).encode() + b"\n" + COLUMNS)

    def _put(self, data: bytes) -> None:
        self._hash.update(data)
        self.out(data)

    def add(self, line: Line) -> None:
        ids = bool(_ID.fullmatch(line.loan) and _ID.fullmatch(line.command))
        invariant(ids and line.kind in _KINDS, f"entries hold plain ids and a kind: {line}")
        self.totals.add(line)
        self.entries += 1
        if self.json:
            self._put(msgspec.json.encode(line) + b"\n")
        else:
            text = f"{line.loan},{line.customer},{line.kind},{line.amount},{line.command}\n"
            self._put(text.encode())

    def finish(self) -> str:
        """The totals line and the hash line; the hash."""
        totals = self.totals
        if not totals.balanced:
            raise ConfigError(f"the day does not balance: {NET_IS} fails, totals {totals}")
        if self.json:
            self._put(msgspec.json.encode(TotalsLine(totals)) + b"\n")
        else:
            figures = ",".join(f"{name}={getattr(totals, name)}" for name in _KIND_ORDER)
            self._put(f"# totals {figures} ({NET_IS})\n".encode())
        self.digest = self._hash.hexdigest()
        if self.json:
            self.out(msgspec.json.encode(HashLine(self.digest)) + b"\n")
        else:
            self.out(f"# sha256 {self.digest}\n".encode())
        return self.digest


def csv_header(header: Header) -> str:
    return (
        f'# clearing statement partner={header.partner} name="{header.name}"'
        f" funding_account={header.funding_account} date={header.date}"
        f" currency={header.currency}"
    )


class Theirs:
    """A statement as read, for ``reconcile``: its entries by key (the first of a key
    that is listed twice) and what is wrong with it as a document."""

    def __init__(self, header: Header):
        self.header = header
        self.entries: dict[EntryKey, int] = {}
        self.totals: Totals | None = None
        self.problems: list[str] = []

    def add(self, line: Line, number: int) -> None:
        if not (line.kind in _KINDS and _ID.fullmatch(line.loan) and _ID.fullmatch(line.command)):
            raise _bad(number, "not an entry (loan, customer, kind, amount, command)")
        if line.key in self.entries:
            self.problems.append(f"listed twice in theirs: {line.text()} {line.amount}")
        else:
            self.entries[line.key] = line.amount


def read_statement(data: bytes) -> Theirs:
    """A statement in either format (its first byte tells which); its hash line, when it
    has one (the last line), is checked against the bytes before it."""
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    start = data.rfind(b"\n", 0, end) + 1
    is_json = data.startswith(b"{")
    digest = _hash_line(data[start:end], is_json)
    body = data if digest is None else data[:start]
    lines = [_text(raw, number) for number, raw in enumerate(body.splitlines(), 1)]
    if not lines or not (is_json or data.startswith(b"#")):
        raise ConfigError("a statement starts with its header: '#' (CSV) or '{' (JSON Lines)")
    theirs = Theirs(_json_header(lines[0]) if is_json else _csv_header(lines[0]))
    if digest is not None and digest != hashlib.sha256(body).hexdigest():
        theirs.problems.append("sha256: the hash line is not the hash of the bytes before it")
    take = _json_line if is_json else _csv_line
    for number, text in enumerate(lines[1:], 2):
        take(theirs, number, text)
    if theirs.totals is None:
        theirs.problems.append("theirs has no totals line")
    return theirs


def _bad(number: int, what: str) -> ConfigError:
    return ConfigError(f"the statement's line {number}: {what}")


def _text(raw: bytes, number: int) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise _bad(number, "not UTF-8") from None


def _hash_line(raw: bytes, is_json: bool) -> str | None:
    if not is_json:
        found = _CSV_HASH.fullmatch(raw.decode(errors="replace"))
        return found[1] if found else None
    try:
        return msgspec.json.decode(raw, type=HashLine).sha256
    except msgspec.DecodeError:
        return None


def _csv_header(text: str) -> Header:
    found = _CSV_HEADER.fullmatch(text)
    if not found:
        raise _bad(1, "not a statement's header")
    return Header(int(found[1]), found[2], found[3], found[4], found[5])


def _json_header(text: str) -> Header:
    try:
        return msgspec.json.decode(text, type=Header)
    except msgspec.DecodeError as error:
        raise _bad(1, f"not a statement's header: {error}") from None


def _csv_line(theirs: Theirs, number: int, text: str) -> None:
    if number == 2:
        if text.encode() != COLUMNS.rstrip(b"\n"):
            raise _bad(number, f"not the columns {COLUMNS.decode().strip()}")
    elif theirs.totals is not None:
        raise _bad(number, "a line after the totals")
    elif text.startswith("# totals"):
        found = _CSV_TOTALS.fullmatch(text)
        if not found:
            raise _bad(number, "not a totals line")
        theirs.totals = Totals(*(int(figure) for figure in found.groups()))
    else:
        fields = text.split(",")
        valid = (
            len(fields) == 5 and _CUSTOMER.fullmatch(fields[1]) and _INTEGER.fullmatch(fields[3])
        )
        if not valid:
            raise _bad(number, "not an entry (loan, customer, kind, amount, command)")
        loan, customer, kind, amount, command = fields
        theirs.add(Line(loan, int(customer), kind, int(amount), command), number)


def _json_line(theirs: Theirs, number: int, text: str) -> None:
    if theirs.totals is not None:
        raise _bad(number, "a line after the totals")
    try:
        value = msgspec.json.decode(text)
        if isinstance(value, dict) and "totals" in value:
            theirs.totals = msgspec.convert(value, TotalsLine).totals
        else:
            theirs.add(msgspec.convert(value, Line), number)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise _bad(number, str(error)) from None


class Comparison:
    """Our entries, streamed, against theirs: every difference, DIFFERENCES_SHOWN_MAX of
    them kept to show, all of them counted."""

    def __init__(self, theirs: Theirs):
        self.theirs = theirs
        self.shown: list[str] = []
        self.count = 0

    def differ(self, text: str) -> None:
        self.count += 1
        if len(self.shown) < DIFFERENCES_SHOWN_MAX:
            self.shown.append(text)

    def ours(self, line: Line) -> None:
        amount = self.theirs.entries.pop(line.key, None)
        if amount is None:
            self.differ(f"only in ours: {line.text()} {line.amount}")
        elif amount != line.amount:
            self.differ(f"amount of {line.text()}: ours {line.amount}, theirs {amount}")

    def finish(self, header: Header, totals: Totals) -> None:
        """What is left once our last entry went by: theirs' other entries, the header,
        the totals and what is wrong with their document."""
        for (loan, customer, kind, command), amount in self.theirs.entries.items():
            line = Line(loan, customer, kind, amount, command)
            self.differ(f"only in theirs: {line.text()} {amount}")
        self.theirs.entries = {}
        for field in Header.__struct_fields__:
            mine, other = getattr(header, field), getattr(self.theirs.header, field)
            if mine != other:
                self.differ(f"header {field}: ours {mine}, theirs {other}")
        if self.theirs.totals is not None:
            for field in _KIND_ORDER:
                mine, other = getattr(totals, field), getattr(self.theirs.totals, field)
                if mine != other:
                    self.differ(f"totals {field}: ours {mine}, theirs {other}")
        for problem in self.theirs.problems:
            self.differ(problem)
