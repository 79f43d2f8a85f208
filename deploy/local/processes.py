"""Processes of the local stack: pid files, liveness, identity, logs (Linux ``/proc``).

A pid alone is not proof: pids are reused. A process counts as ours only while it is
alive, not a zombie, and its command line contains a marker only our server has (the
absolute path of its configuration file or data folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from engine.core.errors import StackError

TAIL_LINES_DEFAULT = 30
TAIL_BYTES_MAX = 65_536
POLL_INTERVAL_SECONDS = 0.2


def read_pid_file(path: Path) -> int | None:
    """The pid on the first line of ``path``, or None when absent or unreadable."""
    try:
        first_line = path.read_text(encoding="ascii").splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError):
        return None
    return int(first_line) if first_line.isdigit() and int(first_line) > 0 else None


def write_pid_file(path: Path, pid: int) -> None:
    if pid <= 0:
        raise StackError(f"refusing to write pid {pid} to {path}")
    path.write_text(f"{pid}\n", encoding="ascii")


def remove_file(path: Path) -> None:
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an advisory lock on ``path`` (created if needed): two ``dev`` commands queue."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child, so it does not stay a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def command_line(pid: int) -> str:
    """The process's arguments joined by spaces; empty for a zombie or a missing process."""
    _reap(pid)
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


EXEC_SETTLE_SECONDS_MAX: Final = 2.0
EXEC_SETTLE_POLL_SECONDS: Final = 0.005


def wait_exec_settled(pid: int) -> None:
    """Wait until the child's command line is readable (bounded).

    posix_spawn returns when the child's execve has replaced its memory, a moment before
    the kernel publishes the new arguments: until then /proc/<pid>/cmdline reads empty
    and the process would not be recognised as ours.
    """
    deadline = time.monotonic() + EXEC_SETTLE_SECONDS_MAX
    while not command_line(pid) and time.monotonic() < deadline:
        time.sleep(EXEC_SETTLE_POLL_SECONDS)


def process_is_ours(pid: int | None, marker: str) -> bool:
    """True when ``pid`` runs and its command line contains ``marker``."""
    if pid is None or not marker:
        return False
    return marker in command_line(pid)


def ensure_same_settings(path: Path, expected: str, service: str) -> None:
    """Refuse to reuse a running server whose settings file differs from the config's."""
    try:
        current = path.read_text(encoding="utf-8")
    except OSError:
        current = ""
    if current != expected:
        raise StackError(
            f"the running {service} was started with other settings ({path}); "
            "run `smallcups dev down` first, then `up` again"
        )


def stop_process(pid: int, marker: str, grace_seconds: float) -> None:
    """SIGTERM, wait up to ``grace_seconds`` for the exit, then SIGKILL and wait again."""
    for sig, wait_seconds in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 10.0)):
        if not process_is_ours(pid, marker):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_seconds
        while process_is_ours(pid, marker) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_SECONDS)
    if process_is_ours(pid, marker):
        raise StackError(f"process {pid} survived SIGKILL")


def tail_lines(path: Path, count: int = TAIL_LINES_DEFAULT) -> str:
    """The last ``count`` lines of a log file (reading at most TAIL_BYTES_MAX bytes)."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - TAIL_BYTES_MAX))
            data = file.read()
    except OSError as error:
        return f"(no log at {path}: {error.strerror})"
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-count:])


def failure(message: str, *logs: Path) -> StackError:
    """A StackError whose text ends with the last lines of each non-empty log file."""
    parts = [message]
    for log in logs:
        tail = tail_lines(log)
        if tail:
            parts.append(f"--- last {TAIL_LINES_DEFAULT} lines of {log} ---\n{tail}")
    return StackError("\n".join(parts))
