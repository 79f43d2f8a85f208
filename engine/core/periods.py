"""The journal's periods, pure: which partitions a cup's journal needs ahead of time,
which ones are closed and may be archived, and what an archive's manifest says.

A cup's journal is partitioned by booking time (``booked_at``). A partition is named by
its end, in whole seconds since the epoch (UTC): it holds the rows booked from the
previous partition's end up to its own. Ends are multiples of the period length
(``archive.period_seconds``), except the first partition's, made by the migration at
its own time. Times are arguments, never read from a clock here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from engine.core.errors import ConfigError, invariant

PERIOD_MIN_SECONDS: Final = 60
PERIODS_AHEAD: Final = 2
"""Partitions made ahead: the current period's and the next one's."""


def period_start(at_s: int, period_seconds: int) -> int:
    """The start of the period holding ``at_s``."""
    invariant(period_seconds >= PERIOD_MIN_SECONDS, "a period is at least a minute")
    return at_s - at_s % period_seconds


def ends_to_make(existing_ends: Sequence[int], now_s: int, period_seconds: int) -> list[int]:
    """The ends of the partitions to make so the current and the next period have one:
    after the last existing end, in order (a partition's range starts at its
    predecessor's end)."""
    current_end = period_start(now_s, period_seconds) + period_seconds
    wanted = [current_end + i * period_seconds for i in range(PERIODS_AHEAD)]
    last = max(existing_ends, default=0)
    made = [end for end in wanted if end > last]
    invariant(all(end > now_s for end in made), "partitions are made ahead of their rows")
    return made


def check_bound(before_s: int, now_s: int, period_seconds: int) -> None:
    """Refuse an archive bound after the current period's start: its period is open."""
    current_start = period_start(now_s, period_seconds)
    if before_s > current_start:
        raise ConfigError(
            f"--before {iso(before_s)} is in the current period (which started "
            f"{iso(current_start)}) or later: only closed periods are archived"
        )


def closed_ends(
    existing_ends: Sequence[int], before_s: int, now_s: int, period_seconds: int
) -> list[int]:
    """The ends of the partitions to archive for ``--before before_s``: every partition
    that ends at or before the bound, which is at or before the current period's start
    (``check_bound``), so all their rows are of closed periods."""
    check_bound(before_s, now_s, period_seconds)
    closed = sorted(end for end in existing_ends if end <= before_s)
    invariant(all(end <= now_s for end in closed), "a closed partition ends in the past")
    return closed


def iso(at_s: int) -> str:
    return datetime.fromtimestamp(at_s, UTC).isoformat().replace("+00:00", "Z")


def parse_bound(text: str) -> int:
    """``--before`` as seconds since the epoch: a date (its midnight, UTC) or a date and
    time (UTC unless it names its offset)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--before {text!r} is not a date (2026-12-01) or a date and time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


class AccountSum(NamedTuple):
    """What one account's rows of an archived period add up to."""

    partition: int
    customer: int
    account: int
    currency: str
    amount: int
    rows: int


class PeriodTotals:
    """Per account, the sum and count of an archived period's rows, added as they are
    read (one entry per account, not per row)."""

    def __init__(self) -> None:
        self._totals: dict[tuple[int, int, int, str], list[int]] = {}
        self.rows = 0

    def add(self, partition: int, customer: int, account: int, currency: str, amount: int) -> None:
        invariant(amount != 0, "a journal row moves money")
        total = self._totals.setdefault((partition, customer, account, currency), [0, 0])
        total[0] += amount
        total[1] += 1
        self.rows += 1

    def sums(self) -> list[AccountSum]:
        """In key order."""
        return [AccountSum(*key, amount, n) for key, (amount, n) in sorted(self._totals.items())]


class Manifest(NamedTuple):
    """The manifest of one archived partition (a JSON file beside its rows' file)."""

    cup: int
    period_end: int
    file: str
    rows: int
    sha256: str
    sums: list[AccountSum]

    def document(self) -> dict[str, object]:
        invariant(self.rows == sum(s.rows for s in self.sums), "the sums count every row")
        invariant(len(self.sha256) == 64, "a sha256 is 64 hex digits")
        return {
            "format": "smallcups-journal-archive/1",
            "cup": self.cup,
            "period_end": iso(self.period_end),
            "period_end_s": self.period_end,
            "file": self.file,
            "rows": self.rows,
            "sha256": self.sha256,
            "sums": [s._asdict() for s in self.sums],
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Manifest:
        """A manifest read back (what a data team's loader checks a file against)."""
        return cls(
            int(document["cup"]),
            int(document["period_end_s"]),
            str(document["file"]),
            int(document["rows"]),
            str(document["sha256"]),
            [AccountSum(**s) for s in document["sums"]],
        )


def file_sha256(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()
