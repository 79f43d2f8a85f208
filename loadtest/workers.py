"""Worker processes started by the demo and the tests: start, stop cleanly, kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO


class WorkerProcess:
    """One ``smallcups worker`` child process, its output in ``log_path``."""

    def __init__(self, name: str, log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"worker {self.name} was never started")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_seconds: float = 30.0) -> int:
        """SIGTERM, then wait for the clean shutdown; SIGKILL if it does not come."""
        if self.process is None:
            return 0
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the crash the exactly-once design must survive."""
        if self.process is not None and self.alive():
            self.process.kill()
            self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
