"""``make clearing-scale``: one partner's clearing statement out of a day of 1,000,000
loans, timed, with the peak memory of the process that writes it. Not part of
``make test``: it runs on the local stack (``SMALLCUPS_CONFIG``) and takes a minute.

1. A throwaway system (loadtest.system): CUPS Postgres cups, PARTITIONS partitions.
2. In each cup: the calendar (the day closed) and every partner's row in the credit
   book of each partition it owns, then with SQL (generate_series) the day's clearing
   entries of its share of the LOANS loans, spread over its partitions: each loan funded
   by partner ``1 + loan % PARTNERS`` (one FUNDED entry), every third one repaid the same
   day (an INTEREST and a PRINCIPAL entry); then each partition's NET per partner, as its
   close would make it.
3. ``smallcups clearing report`` of partner REPORTED, in each format, as a child process
   (the system's configuration in its environment), timed and killed past
   REPORT_SECONDS_MAX; its peak RSS read while it runs (``high_water_kib``). The
   statement is read back: its hash and totals must hold.
4. One line of figures; the system dropped, whatever happened.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

import msgspec

from engine.admin.statement import read_statement
from engine.core.book import ClearingKind, CreditKind
from engine.core.config import Config, load_config, to_environ
from engine.core.credit import Calendar, Partner
from loadtest.system import System, drop_system, make_system
from shards.control import connect

CUPS: Final = 4
PARTITIONS: Final = 16
PARTNERS: Final = 50
LOANS: Final = 1_000_000
REPORTED: Final = 7
DAY: Final = dt.date(2026, 11, 30)
REPORT_SECONDS_MAX: Final = 600.0
POLL_SECONDS: Final = 0.005
"""How often the report's peak memory is read while it runs."""
FILL_SECONDS_MAX: Final = 600.0
"""Longest a cup's SQL may take to make its share of the day."""

_ENTRIES: Final = f"""
WITH loan AS (
    SELECT n, n * {CUPS} + $4::integer AS i,
           ($1::integer[])[1 + n % cardinality($1::integer[])] AS partition
    FROM generate_series(0, $3::integer - 1) AS n
)
INSERT INTO clearing_entries (partition, src_offset, entry, business_day, partner, currency,
                              loan_id, customer_id, kind, amount, command_id)
SELECT partition, n, 0, $2::integer, 1 + i % {PARTNERS}, 'EUR', 'd-' || i, 1000 + i,
       {int(ClearingKind.FUNDED)}, -(10000 + i % 90000), 'd-' || i
FROM loan
UNION ALL
SELECT partition, $3::integer + n, paid.entry, $2::integer, 1 + i % {PARTNERS}, 'EUR',
       'd-' || i, 1000 + i, paid.kind, paid.amount, 'r-' || i
FROM loan, LATERAL (VALUES (0, {int(ClearingKind.INTEREST)}, 1 + i % 97),
                           (1, {int(ClearingKind.PRINCIPAL)}, 100 + i % 1000))
           AS paid(entry, kind, amount)
WHERE n % 3 = 0
"""
_NETS: Final = f"""
INSERT INTO clearing_entries (partition, src_offset, entry, business_day, partner, currency,
                              loan_id, customer_id, kind, amount, command_id)
SELECT partition, 3 * $2::bigint, partner, $1::integer, partner, 'EUR', '', 0,
       {int(ClearingKind.NET)}, sum(amount), 'close-{DAY.isoformat()}-p' || partition
FROM clearing_entries WHERE business_day = $1::integer GROUP BY partition, partner
"""


async def fill_cup(config: Config, dsn: str, partitions: list[int], cup: int) -> int:
    """The calendars (the day closed), the partners' rows and cup ``cup``'s share of the
    day; the entries it holds."""
    loans = LOANS // CUPS
    connection = await connect(dsn, config.shards)
    try:
        day = DAY.toordinal()
        calendar = msgspec.msgpack.encode(Calendar(day))
        book = [(p, int(CreditKind.CALENDAR), "", 0, "", day, True, calendar) for p in partitions]
        book += [
            (p, int(CreditKind.PARTNER), str(n), 0, "EUR", 0, True, partner_body(n))
            for p in partitions
            for n in range(1, PARTNERS + 1)
        ]
        await connection.executemany(
            "INSERT INTO credit_book (partition, kind, entity_key, customer_id, currency,"
            " amount, is_open, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            book,
        )
        await connection.execute(_ENTRIES, partitions, day, loans, cup, timeout=FILL_SECONDS_MAX)
        await connection.execute(_NETS, day, loans, timeout=FILL_SECONDS_MAX)
        await connection.execute("ANALYZE clearing_entries")
        count: int = await connection.fetchval("SELECT count(*) FROM clearing_entries")
        return count
    finally:
        await connection.close()


def partner_body(partner: int) -> bytes:
    return msgspec.msgpack.encode(Partner(partner, f"Bank {partner}", "EUR", f"DE{partner:08d}"))


def report(system: System, form: str, output: Path) -> tuple[float, int]:
    """``smallcups clearing report`` as a child: its seconds and its peak RSS (bytes)."""
    argv = [sys.executable, "-m", "engine.cli", "clearing", "report"]
    argv += ["--partner", str(REPORTED), "--date", DAY.isoformat(), "--format", form]
    env = {**os.environ, **to_environ(system.config)}
    started = time.monotonic()
    child = subprocess.Popen([*argv, "--output", str(output)], env=env)
    peak_kib = 0
    while child.poll() is None:
        peak_kib = max(peak_kib, high_water_kib(child.pid))
        if time.monotonic() - started > REPORT_SECONDS_MAX:
            child.kill()
            child.wait()
            raise SystemExit(f"the report took over {REPORT_SECONDS_MAX:g} s")
        time.sleep(POLL_SECONDS)
    seconds = time.monotonic() - started
    if child.returncode:
        raise SystemExit(f"the report failed (exit {child.returncode})")
    return seconds, peak_kib * 1024


def high_water_kib(pid: int) -> int:
    """A running process's peak RSS so far (VmHWM); 0 once it has exited.

    Not the child's ``ru_maxrss`` (``RUSAGE_CHILDREN``, wait4): at exec the kernel
    records the high water of the memory the child leaves, its parent's copy, so a
    child's ru_maxrss is at least its parent's RSS when it forked."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def run(base: Config, work: Path) -> str:
    system = await make_system(base, work, partitions=PARTITIONS, cups=CUPS)
    try:
        shard_map = system.shard_map
        filled = await asyncio.gather(
            *(
                fill_cup(base, dsn, shard_map.partitions_of(cup), cup)
                for cup, dsn in sorted(shard_map.cups.items())
            )
        )
        figures = []
        for form in ("csv", "json"):
            output = work / f"statement.{form}"
            seconds, peak_bytes = report(system, form, output)
            theirs = read_statement(output.read_bytes())
            if theirs.problems:
                raise SystemExit(f"the {form} statement reads back wrong: {theirs.problems}")
            size_mib = output.stat().st_size / 2**20
            figures.append(
                f"{form} {seconds:.2f} s, peak RSS {peak_bytes / 2**20:.0f} MiB,"
                f" {len(theirs.entries)} entries ({size_mib:.1f} MiB)"
            )
        return (
            f"clearing statement of partner {REPORTED} of {PARTNERS} for {DAY}, out of"
            f" {sum(filled)} entries of {LOANS} loans in {CUPS} Postgres cups"
            f" ({PARTITIONS} partitions): " + "; ".join(figures)
        )
    finally:
        await drop_system(base, system)


def main() -> int:
    base = load_config()
    with tempfile.TemporaryDirectory(prefix="clearing-scale-") as work:
        print(asyncio.run(run(base, Path(work))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
