"""A bench helper process (the raw pipe's reader, the naive consumer) and its handshake.

1. the parent starts the child (``spawn``: a fresh interpreter, nothing inherited);
2. the child prepares (connects, assigns partitions) and sends ``("ready", {})``;
3. the parent starts its CPU meter and sends ``("go", {})``;
4. the child works and sends ``("done", figures)``;
5. the parent stops its meter (the child is still alive, so its CPU can be read) and
   sends ``("exit", {})``; the child returns.

Every wait is bounded; a child that fails sends ``("error", {"error": text})``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

import uvloop

Figures = dict[str, Any]
Message = tuple[str, Figures]
Work = Callable[[Callable[[], Awaitable[None]]], Coroutine[Any, Any, Figures]]
"""The child's job: it calls the given ``ready`` coroutine once prepared, then works."""

EXIT_TIMEOUT_SECONDS: Final = 30.0
_CONTEXT: Final = multiprocessing.get_context("spawn")


class ChildError(RuntimeError):
    """The helper process failed, or broke the handshake."""


class Child:
    def __init__(self, target: Callable[..., None], *args: object):
        self._parent, child = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(target=target, args=(child, *args), daemon=True)

    @property
    def pid(self) -> int:
        pid = self._process.pid
        if pid is None:
            raise ChildError("the helper process was never started")
        return pid

    def start(self, ready_timeout_seconds: float) -> None:
        self._process.start()
        self.expect("ready", ready_timeout_seconds)

    def send(self, kind: str) -> None:
        self._parent.send((kind, {}))

    def expect(self, kind: str, timeout_seconds: float) -> Figures:
        """The child's next message, which must be ``kind``."""
        if not self._parent.poll(timeout_seconds):
            raise ChildError(f"the helper sent no {kind!r} within {timeout_seconds:.0f} s")
        message: Message = self._parent.recv()
        got, figures = message
        if got != kind:
            raise ChildError(f"the helper sent {got!r}, not {kind!r}: {figures}")
        return figures

    def close(self) -> None:
        """Let the child exit; kill it if it does not."""
        if self._process.pid is None:
            return
        if self._process.is_alive():
            self.send("exit")
            self._process.join(EXIT_TIMEOUT_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def serve(conn: multiprocessing.connection.Connection, work: Work) -> None:
    """The child's side of the handshake, around ``work`` on its own uvloop."""

    async def ready() -> None:
        conn.send(("ready", {}))
        kind, _ = conn.recv()
        if kind != "go":
            raise ChildError(f"the parent sent {kind!r}, not 'go'")

    try:
        done: Message = ("done", uvloop.run(work(ready)))
        conn.send(done)
    except BaseException as error:  # the parent must hear of any failure
        conn.send(("error", {"error": f"{error!r}\n{traceback.format_exc()[-2000:]}"}))
        raise
    finally:
        if conn.poll(EXIT_TIMEOUT_SECONDS):
            conn.recv()
