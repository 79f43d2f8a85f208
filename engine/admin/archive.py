"""``smallcups archive --before DATE``: export each cup's closed journal periods to files,
carry their sums forward, drop them.

For each cup, under the control database's advisory lock of its history (class 2024, the
cup's id: a move's pre-copy of the cup and an archive never interleave; a cup whose lock
is taken is skipped, and the run exits 1), for each journal partition ending at or before
the bound (never the current period's):

1. export: its rows, in a fixed order, to ``cup<C>-journal-<END>.partial.jsonl.gz``
   (gzip, one JSON object per line), flushed to disk (fsync);
2. name it by its content (``cup<C>-journal-<END>-<SHA12>.jsonl.gz``) and write its
   manifest beside it (``...-<SHA12>.manifest.json``: the cup, the period's end, the row
   count, the file's sha256, each account's sum and rows), both fsynced;
3. carry and drop: the per-account sums go into the cup's journal_openings (a sum
   recorded already stays, and must be equal) and the partition is dropped: one
   transaction on Postgres; two steps on MariaDB, each safe to repeat
   (shards.mysql.journal_periods).

A crash anywhere leaves the partition (then the next run exports the same rows to the
same file and finishes) or leaves it dropped with its sums carried. A period archived is
gone from the cup: running again does nothing for it.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from engine.core.config import ArchiveConfig, Config
from engine.core.periods import (
    Manifest,
    PeriodTotals,
    check_bound,
    closed_ends,
    file_sha256,
    iso,
    parse_bound,
)
from shards.backends import connect_cup, cup_kind, journal_periods
from shards.control import connect, load_shard_map
from shards.cup_admin import CupKind
from shards.journal_periods import JournalPeriods, JournalRow

HISTORY_LOCK_CLASS: Final = 2024
"""pg_advisory_lock(2024, cup id) in the control database: the cup's history is being
copied (a move's pre-copy) or archived."""
READ_CHUNK_BYTES: Final = 1024 * 1024

Step = Callable[[int, str, int], None]
"""Called after each step of a period with the cup, the step ("exported", "carried") and
the period's end: the tests fail there as a crash would."""


def _no_step(cup_id: int, step: str, end: int) -> None:
    """Production runs every step."""


def run_archive(config: Config, before: str, directory: str) -> int:
    before_s = parse_bound(before)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    return asyncio.run(archive(config, before_s, folder, int(time.time())))


async def archive(
    config: Config, before_s: int, directory: Path, now_s: int, step: Step = _no_step
) -> int:
    """Archive every cup's periods ending at or before ``before_s``; 0, or 1 when a cup
    was skipped (its history lock taken)."""
    check_bound(before_s, now_s, config.archive.period_seconds)
    control = await connect(config.control_dsn, config.shards)
    status = 0
    try:
        shard_map = await load_shard_map(control)
        for cup_id, dsn in sorted(shard_map.cups.items()):
            locked = await control.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", HISTORY_LOCK_CLASS, cup_id
            )
            if not locked:
                print(f"cup {cup_id}: skipped: a move is copying its history (run again later)")
                status = 1
                continue
            try:
                admin = await connect_cup(archive_dsn(dsn, config.archive), config.shards)
                try:
                    periods = journal_periods(admin)
                    await _archive_cup(cup_id, periods, config, before_s, directory, now_s, step)
                finally:
                    await admin.close()
            finally:
                await control.execute(
                    "SELECT pg_advisory_unlock($1, $2)", HISTORY_LOCK_CLASS, cup_id
                )
    finally:
        await control.close()
    return status


def archive_dsn(dsn: str, settings: ArchiveConfig) -> str:
    """The DSN archive reaches a cup with: a MariaDB cup's as archive.mysql_user, whose
    password is the credentials archive.mysql_credentials (DROP PARTITION needs DROP)."""
    if not settings.mysql_user or cup_kind(dsn) is not CupKind.MYSQL:
        return dsn
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "credentials"]
    query.append(("credentials", settings.mysql_credentials))
    return urlunsplit(
        parts._replace(netloc=f"{settings.mysql_user}@{host}", query=urlencode(query))
    )


async def _archive_cup(
    cup_id: int,
    periods: JournalPeriods,
    config: Config,
    before_s: int,
    directory: Path,
    now_s: int,
    step: Step,
) -> None:
    strays = await periods.adopt_strays()
    if strays:
        print(f"cup {cup_id}: {strays:,} rows of archived periods (a move's) given a partition")
    ends = await periods.partition_ends()
    closed = closed_ends(ends, before_s, now_s, config.archive.period_seconds)
    if not closed:
        print(f"cup {cup_id}: no period ends at or before {iso(before_s)}")
    for end in closed:
        manifest = await export(cup_id, periods, end, directory)
        step(cup_id, "exported", end)
        await periods.carry_and_drop(
            end, manifest.rows, manifest.sums, functools.partial(step, cup_id, "carried", end)
        )
        print(
            f"cup {cup_id}: period ending {iso(end)}: {manifest.rows:,} rows,"
            f" {len(manifest.sums):,} accounts -> {manifest.file}"
        )
    waiting = await periods.catch_all_rows()
    if waiting:
        print(f"cup {cup_id}: {waiting:,} rows wait in the catch-all for their period's partition")


def _line(row: JournalRow) -> bytes:
    document = row._asdict()
    document["booked_at"] = row.booked_at.isoformat().replace("+00:00", "Z")
    return msgspec.json.encode(document) + b"\n"


class _ArchiveFile:
    """A gzip JSON-lines file written in full, then flushed to disk (blocking writes: the
    archive command's loop has nothing else to run)."""

    def __init__(self, path: Path):
        self.raw = open(path, "wb")  # noqa: SIM115 (closed by close())
        self.packed = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, mtime=0)

    def write(self, rows: list[JournalRow]) -> None:
        self.packed.write(b"".join(_line(row) for row in rows))

    def close(self) -> None:
        self.packed.close()
        self.raw.flush()
        os.fsync(self.raw.fileno())
        self.raw.close()


async def export(cup_id: int, periods: JournalPeriods, end: int, directory: Path) -> Manifest:
    """Steps 1 and 2: the partition's rows to a gzip JSON-lines file and its manifest."""
    stem = f"cup{cup_id}-journal-{end}"
    partial = directory / f"{stem}.partial.jsonl.gz"
    totals = PeriodTotals()
    file = _ArchiveFile(partial)
    try:
        async for chunk in periods.rows(end):
            file.write(chunk)
            for r in chunk:
                totals.add(r.partition, r.customer_id, r.account_no, r.currency, r.amount)
    finally:
        file.close()
    sha256 = file_sha256(_chunks(partial))
    name = f"{stem}-{sha256[:12]}"
    os.replace(partial, directory / f"{name}.jsonl.gz")
    manifest = Manifest(cup_id, end, f"{name}.jsonl.gz", totals.rows, sha256, totals.sums())
    document = msgspec.json.format(msgspec.json.encode(manifest.document()), indent=2)
    _write_durably(directory / f"{name}.manifest.json", document)
    return manifest


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as file:
        while chunk := file.read(READ_CHUNK_BYTES):
            yield chunk


def _write_durably(path: Path, content: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
