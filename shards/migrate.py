"""Versioned schema migrations: numbered SQL files, each applied once, in order.

A database records what it has in ``schema_migrations``. Applying takes an advisory
lock so two ``smallcups init`` runs cannot race, and each file runs in its own
transaction together with its bookkeeping row.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

import asyncpg

_LOCK_KEY: Final = 0x5C0FFEE


def migration_files(kind: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration of ``kind`` ("postgres" or "control")."""
    folder = resources.files("shards") / "migrations" / kind
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {kind}: {versions}")
    return found


async def missing_migrations(connection: asyncpg.Connection, kind: str) -> list[str]:
    """Names of the migrations of ``kind`` this database has not applied."""
    exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        done = {
            r["version"] for r in await connection.fetch("SELECT version FROM schema_migrations")
        }
    return [name for version, name, _ in migration_files(kind) if version not in done]


async def migrate(connection: asyncpg.Connection, kind: str) -> list[str]:
    """Apply the missing migrations of ``kind``; returns the names applied now."""
    await connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied_now: list[str] = []
    await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        rows = await connection.fetch("SELECT version FROM schema_migrations")
        done = {row["version"] for row in rows}
        for version, name, sql in migration_files(kind):
            if version in done:
                continue
            async with connection.transaction():
                await connection.execute(sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied_now.append(name)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
