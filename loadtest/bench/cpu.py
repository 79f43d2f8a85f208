"""CPU seconds by process kind, read from ``/proc`` (Linux), around a measured window.

Kinds:

- ``driver``: the bench process itself (the load generator and result reader), plus its
  children already reaped (a finished ``pgbench`` client);
- ``workers``: the processes that consume and apply the commands (``smallcups worker``
  processes, the raw pipe's reader, the naive consumer), sampled while they run;
- ``broker``: the Kafka broker's JVM;
- ``postgres``: the postmaster and every backend it forked; backends that exited are
  counted through the postmaster's reaped-children time;
- ``mariadb``: the MariaDB server (one process, a thread per connection); absent when
  the stack runs none.

The broker and the databases serve every client on the machine, so their share includes
any other load that runs at the same time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from deploy.local.kafka_broker import running_broker_pid
from deploy.local.mariadb_server import running_mariadb_pid
from deploy.local.postgres_cluster import running_postgres_pid
from engine.core.config import StackConfig
from engine.core.errors import StackError

CLOCK_TICKS_PER_SECOND: Final = os.sysconf("SC_CLK_TCK")
KINDS: Final = ("driver", "workers", "broker", "postgres", "mariadb")
_PROC: Final = Path("/proc")


@dataclass(frozen=True, slots=True)
class Times:
    parent_id: int
    own_seconds: float
    reaped_seconds: float
    """CPU time of the process's children that exited and were waited for."""


def read_times(pid: int) -> Times | None:
    """utime+stime and cutime+cstime of ``pid``; None when it is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # After "pid (comm) ": state ppid ... utime(11) stime(12) cutime(13) cstime(14).
    ticks = [int(value) for value in fields[11:15]]
    return Times(
        int(fields[1]),
        (ticks[0] + ticks[1]) / CLOCK_TICKS_PER_SECOND,
        (ticks[2] + ticks[3]) / CLOCK_TICKS_PER_SECOND,
    )


def tree_seconds(root: int) -> float:
    """CPU of ``root``, of its live children and of its reaped children."""
    own = read_times(root)
    if own is None:
        raise StackError(f"process {root} is gone")
    total = own.own_seconds + own.reaped_seconds
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and entry.name != str(root):
            times = read_times(int(entry.name))
            if times is not None and times.parent_id == root:
                total += times.own_seconds
    return total


@dataclass(slots=True)
class CpuMeter:
    """Samples every kind at ``start`` and ``stop``; reports seconds per 1,000 commands."""

    stack: StackConfig
    worker_pids: Sequence[int] = ()
    started: dict[str, float] = field(default_factory=dict)
    stopped: dict[str, float] = field(default_factory=dict)

    def sample(self) -> dict[str, float]:
        broker = running_broker_pid(self.stack)
        postmaster = running_postgres_pid(self.stack)
        if broker is None or postmaster is None:
            raise StackError("the local stack is not running: smallcups dev up")
        me = read_times(os.getpid())
        if me is None:
            raise StackError("cannot read this process's CPU times from /proc")
        workers = [read_times(pid) for pid in self.worker_pids]
        if any(times is None for times in workers):
            raise StackError("a worker process exited inside the measured window")
        sampled = {
            "driver": me.own_seconds + me.reaped_seconds,
            "workers": sum(t.own_seconds for t in workers if t is not None),
            "broker": tree_seconds(broker),
            "postgres": tree_seconds(postmaster),
        }
        mariadb = running_mariadb_pid(self.stack)
        if mariadb is not None:
            sampled["mariadb"] = tree_seconds(mariadb)
        return sampled

    def start(self) -> None:
        self.started = self.sample()

    def stop(self) -> None:
        self.stopped = self.sample()

    def per_thousand(self, commands: int) -> dict[str, float]:
        if commands <= 0 or not self.stopped:
            return {}
        return {
            kind: round((self.stopped[kind] - self.started[kind]) * 1000 / commands, 4)
            for kind in KINDS
            if kind in self.started and kind in self.stopped
        }
