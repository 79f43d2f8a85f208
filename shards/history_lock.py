"""The control database's lock on a cup's history: a move's copy and an archive of the
same cup must not interleave (an archive drops journal rows a pre-copy has taken, and
moves their sums into ``journal_openings``, which the catch-up copies whole).

A session advisory lock of the control database, ``pg_advisory_lock(2024, cup_id)``
(class 2024: "a cup's history is being copied or archived"). The mover holds it for the
source and the target cup, the lower cup id first, from the start of its pre-copy until
the move is done or aborted (or the mover's session ends: a resumed move then makes its
pre-copy again, shards.moves). An archive try-locks it for a cup while archiving it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Final

import asyncpg

from engine.core.errors import ConfigError

HISTORY_LOCK_CLASS: Final = 2024
HISTORY_LOCK_POLL_SECONDS: Final = 0.1


async def try_lock_history(control: asyncpg.Connection, cup_id: int) -> bool:
    taken: bool = await control.fetchval(
        "SELECT pg_try_advisory_lock($1, $2)", HISTORY_LOCK_CLASS, cup_id
    )
    return taken


async def held_histories(control: asyncpg.Connection) -> set[int]:
    """The cups whose history lock this session holds already."""
    rows = await control.fetch(
        "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        " AND granted AND objsubid = 2 AND classid = $1",
        HISTORY_LOCK_CLASS,
    )
    return {int(r["objid"]) for r in rows}


async def unlock_history(control: asyncpg.Connection, cups: Sequence[int]) -> None:
    for cup_id in reversed(cups):
        await control.execute("SELECT pg_advisory_unlock($1, $2)", HISTORY_LOCK_CLASS, cup_id)


async def lock_histories(
    control: asyncpg.Connection, cups: Sequence[int], wait_seconds: float
) -> list[int]:
    """Lock the history of each of ``cups``, the lowest id first, waiting up to
    ``wait_seconds`` for each; the cups locked, in order. Refuses (releasing what it
    took) when one stays taken: another move or an archive is on that cup.

    A lock this session holds already (a mover of this connection left a move
    unfinished, as a crash would) is taken over, not taken twice: releasing it once
    frees the cup."""
    held = await held_histories(control)
    locked: list[int] = []
    for cup_id in sorted(set(cups)):
        if cup_id in held:
            locked.append(cup_id)
            continue
        deadline = time.monotonic() + wait_seconds
        while not await try_lock_history(control, cup_id):
            if time.monotonic() >= deadline:
                await unlock_history(control, locked)
                raise ConfigError(
                    f"cup {cup_id}'s history is being copied or archived by another session"
                    f" (waited {wait_seconds:.0f} s): retry when that move or archive ends"
                )
            await asyncio.sleep(HISTORY_LOCK_POLL_SECONDS)
        locked.append(cup_id)
    return locked
