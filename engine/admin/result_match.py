"""Matching commands with their results in bounded memory (reconcile's checks 6 and 10).

The topics are read in chunks and what must be matched goes to a temporary SQLite file,
indexed, instead of dictionaries: memory holds one chunk and SQLite's page cache
(``MATCH_CACHE_KIB_MAX``), whatever the history; the file grows with the records read
(a full run: all of them; an incremental run: those after the checkpoint) and is deleted
at the end.

Three tables: ``consumed`` (partition that answers, command id) of every command owed a
result, ``ids_at`` (partition, offset, id) of every command record, ``results`` of every
result record read. The checks are queries over them, streamed.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Final, NamedTuple

MATCH_CACHE_KIB_MAX: Final = 16_384
"""SQLite's page cache for the matching tables: the bound on what matching holds in
memory (the rest is on disk)."""
MATCH_ROWS_PER_FETCH: Final = 2_000
"""Rows a check query returns at a time."""

_SCHEMA: Final = """
CREATE TABLE consumed (partition INTEGER, id TEXT, offset INTEGER);
CREATE TABLE ids_at (partition INTEGER, offset INTEGER, id TEXT, issued INTEGER);
CREATE TABLE results (partition INTEGER, result_offset INTEGER, id TEXT, offset INTEGER,
                      answer BLOB, real INTEGER, authentic INTEGER DEFAULT 0);
"""
_INDEXES: Final = """
CREATE INDEX consumed_key ON consumed (partition, id);
CREATE INDEX ids_at_key ON ids_at (partition, offset, id);
CREATE INDEX results_key ON results (partition, id);
"""
"""Made once every record is in (faster than growing them row by row)."""


class ResultRow(NamedTuple):
    """A result record, decoded: where it is, what it answers, and what must agree between
    the results of one id (``real``: it changed something, or may have)."""

    partition: int
    result_offset: int
    command_id: str
    offset: int
    answer: bytes
    real: bool


class Unmatched(NamedTuple):
    """A result whose partition holds no record of its id at the offset it names, among
    the records read."""

    row_id: int
    partition: int
    result_offset: int
    command_id: str
    offset: int
    answer: bytes
    real: bool


class ResultMatcher:
    """One run's matching tables, in a temporary file (a context manager)."""

    def __init__(self, directory: Path | None = None) -> None:
        self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed by __exit__)
            prefix="smallcups-reconcile-", suffix=".sqlite", dir=directory
        )
        self.db = sqlite3.connect(self._file.name)
        self.db.execute(f"PRAGMA cache_size = -{MATCH_CACHE_KIB_MAX}")
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute("PRAGMA temp_store = FILE")
        self.db.executescript(_SCHEMA)

    def __enter__(self) -> ResultMatcher:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.db.close()
        self._file.close()

    def consumed(self, rows: Iterable[tuple[int, str, int]]) -> None:
        """(partition that answers, id, offset) of commands owed a result."""
        self.db.executemany("INSERT INTO consumed VALUES (?, ?, ?)", rows)

    def located(self, rows: Iterable[tuple[int, int, str, int]]) -> None:
        """(partition, offset, id, issued_at_ms) of command records: what a result may
        name, and when the command it names was issued."""
        self.db.executemany("INSERT INTO ids_at VALUES (?, ?, ?, ?)", rows)

    def results(self, rows: Iterable[ResultRow]) -> None:
        self.db.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, 0)", rows)

    def unmatched(self) -> Iterator[list[Unmatched]]:
        """Results naming no record read, in chunks (after marking the others authentic).
        Called once, after every record is in."""
        self.db.executescript(_INDEXES)
        self.db.execute(
            "UPDATE results SET authentic = 1 WHERE EXISTS (SELECT 1 FROM ids_at i"
            " WHERE i.partition = results.partition AND i.offset = results.offset"
            " AND i.id = results.id)"
        )
        cursor = self.db.execute(
            "SELECT rowid, partition, result_offset, id, offset, answer, real FROM results"
            " WHERE NOT authentic ORDER BY partition, result_offset"
        )
        while chunk := cursor.fetchmany(MATCH_ROWS_PER_FETCH):
            yield [Unmatched(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in chunk]

    def accept(self, row_ids: Iterable[int]) -> None:
        """Results found authentic otherwise (by their cup's record)."""
        self.db.executemany(
            "UPDATE results SET authentic = 1 WHERE rowid = ?", ((r,) for r in row_ids)
        )

    def unanswered(self) -> Iterator[list[tuple[int, str, int]]]:
        """(partition, id, offset) of commands consumed without an authentic result."""
        cursor = self.db.execute(
            "SELECT c.partition, c.id, max(c.offset) FROM consumed c WHERE NOT EXISTS"
            " (SELECT 1 FROM results r WHERE r.authentic AND r.partition = c.partition"
            " AND r.id = c.id) GROUP BY c.partition, c.id ORDER BY c.partition, c.id"
        )
        while chunk := cursor.fetchmany(MATCH_ROWS_PER_FETCH):
            yield chunk

    def disagreeing(self) -> Iterator[list[tuple[int, str, int]]]:
        """(partition, id, how many) of commands with more than one real answer. A
        command is its id and its issue time: an id used again after the first command's
        idempotency window (its record gone) is another command, answered on its own."""
        cursor = self.db.execute(
            "SELECT r.partition, r.id, count(DISTINCT r.answer) FROM results r"
            " LEFT JOIN ids_at i ON i.partition = r.partition AND i.offset = r.offset"
            " AND i.id = r.id WHERE r.authentic AND r.real GROUP BY r.partition, r.id, i.issued"
            " HAVING count(DISTINCT r.answer) > 1 ORDER BY r.partition, r.id"
        )
        while chunk := cursor.fetchmany(MATCH_ROWS_PER_FETCH):
            yield chunk

    def counts(self) -> dict[str, int]:
        """Commands consumed, ids answered, ids retried after a rejection that changed
        nothing."""
        consumed = self.db.execute("SELECT count(*) FROM consumed").fetchone()[0]
        answered = self.db.execute(
            "SELECT count(*) FROM (SELECT DISTINCT partition, id FROM results WHERE authentic)"
        ).fetchone()[0]
        retried = self.db.execute(
            "SELECT count(*) FROM (SELECT partition, id FROM results WHERE authentic"
            " GROUP BY partition, id HAVING max(real) = 1 AND min(real) = 0)"
        ).fetchone()[0]
        return {
            "commands_consumed": consumed,
            "command_ids_answered": answered,
            "retried_after_rejection": retried,
        }
