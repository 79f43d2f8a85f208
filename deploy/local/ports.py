"""TCP ports of the local stack: is one free, does one answer, wait until one closes.

Every server of the stack listens on 127.0.0.1 only, so that is the only address checked.
"""

from __future__ import annotations

import errno
import socket
import time

from engine.core.errors import StackError

HOST = "127.0.0.1"
CONNECT_TIMEOUT_SECONDS = 1.0
POLL_INTERVAL_SECONDS = 0.2


def port_is_free(port: int) -> bool:
    """True when nothing holds ``port`` on 127.0.0.1 (a bind would succeed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise StackError(f"cannot probe port {port} on {HOST}: {error}") from error
    return True


def port_answers(port: int) -> bool:
    """True when a TCP connection to 127.0.0.1:``port`` is accepted."""
    try:
        with socket.create_connection((HOST, port), timeout=CONNECT_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def ensure_port_free(port: int, knob: str) -> None:
    """Raise StackError naming the port and its configuration knob when it is taken.

    Called only before starting one of our own servers, when none of ours runs on it: so a
    taken port belongs to something else (another program, or a server of another state
    folder) and must not be touched.
    """
    if not port_is_free(port):
        variable = "SMALLCUPS_" + knob.replace(".", "_").upper()
        raise StackError(
            f"port {port} on {HOST} is already taken by another process (not this stack's "
            f"server); stop it, or choose another port with {knob} (env {variable})"
        )


def wait_port_closed(port: int, timeout_seconds: float) -> bool:
    """Poll until nothing holds ``port``; False when it is still taken after the timeout."""
    deadline = time.monotonic() + timeout_seconds
    while not port_is_free(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_SECONDS)
    return True
