"""One MariaDB server on 127.0.0.1 holding the MariaDB cups (Debian's ``mariadb-server``).

Layout under ``<state_dir>/mariadb``: ``my.cnf`` (rewritten on every start), ``data/``
(``mariadb-install-db`` once), ``binlog/`` (the binary log), ``run/`` (the Unix socket
``mysqld.sock`` and the pid file the server writes), ``mariadb.log`` (the error log) and
``mariadb.out`` (what the server prints before its error log is open), ``tls/`` (its
certificate and key, with ``stack.security``: deploy.local.mariadb_auth).

The server reads ``my.cnf`` and nothing else (``--defaults-file`` first on its command
line): no /etc/mysql file can change a setting. Durability is the point of the ledger,
even on a laptop: every commit is flushed to the redo log and to the binary log before
it is acknowledged (``innodb_flush_log_at_trx_commit=1``, ``sync_binlog=1``), and the
binary log (row format) is on, as on a production primary. ``max_allowed_packet`` is the
largest statement the store sends (shards.mysql.driver.PACKET_BYTES_MAX).

The server is spawned in its own session so it outlives the ``smallcups`` process that
started it; it is ours while its command line names our ``my.cnf``. Under euid 0 it
runs as the ``mysql`` system user (``user=mysql``), which then owns the folder.

``ensure_installed`` installs Debian's package when the server binary is missing (root
only), holding back the system service the package would start, so nothing system-wide
is left listening: the stack's server is the only one.

The functions are synchronous (the probe runs its own short event loop): from async
code, call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import asyncmy
from asyncmy.errors import MySQLError

from deploy.local import mariadb_auth, ports
from deploy.local.processes import (
    ensure_same_settings,
    failure,
    process_is_ours,
    read_pid_file,
    remove_file,
    stop_process,
    wait_exec_settled,
)
from deploy.local.tls import copy_for_server, ensure_certificates
from engine.core.config import StackConfig
from engine.core.errors import StackError
from shards.mysql.driver import PACKET_BYTES_MAX

SYSTEM_USER: Final = "mysql"
PACKAGE: Final = "mariadb-server"
SERVER_BINARY: Final = "/usr/sbin/mariadbd"
SYSTEM_PORT: Final = 3306
SYSTEM_SERVICE: Final = "mariadb"
POLICY_RC_D: Final = Path("/usr/sbin/policy-rc.d")
APT_TIMEOUT_SECONDS: Final = 900.0
APT_LOCK_WAIT_SECONDS: Final = 120
APT_MISSING_LIST_SIGNS: Final = ("Unable to locate package", "has no installation candidate")
SOCKET_PATH_BYTES_MAX: Final = 107
STOP_GRACE_SECONDS: Final = 60.0
KILL_WAIT_SECONDS: Final = 10.0
READY_POLL_SECONDS: Final = 0.2
PROBE_TIMEOUT_SECONDS: Final = 2.0


@dataclass(frozen=True, slots=True)
class ServerPaths:
    root: Path

    @classmethod
    def of(cls, config: StackConfig) -> ServerPaths:
        return cls(config.state_path / "mariadb")

    @property
    def config(self) -> Path:
        return self.root / "my.cnf"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def installed(self) -> Path:
        """Written by mariadb-install-db as its last step: a data folder without it is a
        failed run's leftovers."""
        return self.data / "mysql_upgrade_info"

    @property
    def binlog(self) -> Path:
        return self.root / "binlog"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def socket(self) -> Path:
        return self.run / "mysqld.sock"

    @property
    def pid_file(self) -> Path:
        return self.run / "mariadb.pid"

    @property
    def log(self) -> Path:
        return self.root / "mariadb.log"

    @property
    def stdout(self) -> Path:
        return self.root / "mariadb.out"

    @property
    def tls(self) -> Path:
        """The server's certificate, key and CA, readable by the server's OS user."""
        return self.root / "tls"


def socket_path(config: StackConfig) -> Path:
    """The server's Unix socket (root reaches the server there, authenticated as itself)."""
    return ServerPaths.of(config).socket


def render_settings(config: StackConfig, paths: ServerPaths, as_root: bool) -> str:
    """The server's ``my.cnf``: 127.0.0.1 only, every commit durable, the binary log on."""
    settings = {
        "bind-address": ports.HOST,
        "port": str(config.mariadb_port),
        "socket": str(paths.socket),
        "pid-file": str(paths.pid_file),
        "datadir": str(paths.data),
        "log-error": str(paths.log),
        "innodb_flush_log_at_trx_commit": "1",
        "sync_binlog": "1",
        "log_bin": str(paths.binlog / "mariadb-bin"),
        "server_id": "1",
        "binlog_format": "ROW",
        "binlog_expire_logs_seconds": "3600",
        "max_binlog_size": "67108864",
        "max_allowed_packet": str(PACKET_BYTES_MAX),
        "innodb_buffer_pool_size": "256M",
        "innodb_log_file_size": "256M",
        "max_connections": "500",
        "skip-name-resolve": "",
        "character-set-server": "utf8mb4",
        "collation-server": "utf8mb4_bin",
        "log_bin_trust_function_creators": "1",
    }
    if config.security:
        settings.update(mariadb_auth.tls_settings(paths.tls))
    if as_root:
        settings["user"] = SYSTEM_USER
    lines = ["# Written by `smallcups dev up`; rewritten on every start.", "[mysqld]"]
    lines += [f"{key}={value}" if value else key for key, value in settings.items()]
    return "\n".join(lines) + "\n"


# --- installing Debian's package ----------------------------------------------------------


def find_server() -> str | None:
    """The server binary: Debian's ``/usr/sbin/mariadbd``, else ``mariadbd`` on PATH."""
    if Path(SERVER_BINARY).is_file():
        return SERVER_BINARY
    return shutil.which("mariadbd")


def ensure_installed() -> None:
    """Install Debian's mariadb-server when the server binary is missing (root only).

    The package's scripts would start the system's own server on port 3306: a
    ``policy-rc.d`` that refuses every service start is in place during the install
    (an existing one is left alone), and a system server that started anyway is
    stopped and disabled afterwards.
    """
    if find_server() is not None:
        return
    if os.geteuid() != 0:
        raise StackError(
            f"the MariaDB server (mariadbd) is not installed: install Debian's {PACKAGE} "
            "(sudo apt-get install mariadb-server), or run without MariaDB cups "
            "(stack.mysql_cups = 0, env SMALLCUPS_STACK_MYSQL_CUPS=0)"
        )
    system_port_was_free = ports.port_is_free(SYSTEM_PORT)
    with _service_starts_refused():
        _apt_install()
    if find_server() is None:
        raise StackError(f"{PACKAGE} is installed but {SERVER_BINARY} is missing")
    if system_port_was_free:
        _stop_system_server()


@contextmanager
def _service_starts_refused() -> Iterator[None]:
    """A policy-rc.d exiting 101 (action forbidden) unless one exists; removed after."""
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text("#!/bin/sh\n# smallcups: no service starts while installing\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        remove_file(POLICY_RC_D)


def _apt_install() -> None:
    """apt-get install; refresh the package lists first only when they lack the package."""
    install = [
        "apt-get", "install", "-y", "--no-install-recommends",
        "-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT_SECONDS}", PACKAGE,
    ]  # fmt: skip
    done = _run_apt(install)
    if done.returncode != 0 and any(sign in done.stdout for sign in APT_MISSING_LIST_SIGNS):
        _run_apt(["apt-get", "update"])
        done = _run_apt(install)
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-20:])
        raise StackError(
            f"installing {PACKAGE} failed (apt-get exit {done.returncode}):\n{tail}\n"
            f"install it by hand, or set stack.mysql_cups = 0 (env SMALLCUPS_STACK_MYSQL_CUPS=0)"
        )


def _run_apt(command: list[str]) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(
            command,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=APT_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        spent = f"{APT_TIMEOUT_SECONDS:.0f} s"
        raise StackError(f"{' '.join(command)} did not finish in {spent}") from error


def _stop_system_server() -> None:
    """Stop and disable the system's MariaDB service if the install started it anyway."""
    if Path("/run/systemd/system").is_dir():
        command = ["systemctl", "disable", "--now", f"{SYSTEM_SERVICE}.service"]
        subprocess.run(command, capture_output=True, check=False)
    elif not ports.port_is_free(SYSTEM_PORT):
        init_script = Path("/etc/init.d") / SYSTEM_SERVICE
        if init_script.is_file():
            subprocess.run([str(init_script), "stop"], capture_output=True, check=False)
    if not ports.wait_port_closed(SYSTEM_PORT, STOP_GRACE_SECONDS):
        raise StackError(
            f"installing {PACKAGE} left a server listening on port {SYSTEM_PORT}; stop it "
            f"(systemctl disable --now {SYSTEM_SERVICE}): the stack runs its own"
        )


# --- the server -------------------------------------------------------------------------


def _require_server() -> str:
    server = find_server()
    if server is None:
        raise StackError(
            f"the MariaDB server (mariadbd) is not installed: install Debian's {PACKAGE}, "
            "or set stack.mysql_cups = 0 (env SMALLCUPS_STACK_MYSQL_CUPS=0)"
        )
    return server


def admin_user() -> str:
    """The MariaDB account of this OS user over the Unix socket (unix_socket auth):
    ``root`` under euid 0, else the login name that ran mariadb-install-db."""
    return pwd.getpwuid(os.geteuid()).pw_name


def running_mariadb_pid(config: StackConfig) -> int | None:
    """The server's pid when this state folder's server runs, else None."""
    paths = ServerPaths.of(config)
    pid = read_pid_file(paths.pid_file)
    return pid if process_is_ours(pid, str(paths.config)) else None


def _as_owner(command: list[str]) -> list[str]:
    """Prefix ``command`` with runuser when we are root (the server runs as mysql)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", SYSTEM_USER, "--", *command]


def _prepare_folders(paths: ServerPaths) -> None:
    """Create the folders; under root hand them to the mysql user and check its reach."""
    if len(str(paths.socket).encode()) > SOCKET_PATH_BYTES_MAX:
        raise StackError(f"state folder path too long for a Unix socket: {paths.socket}")
    for folder in (paths.binlog, paths.run):
        folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return
    try:
        owner = pwd.getpwnam(SYSTEM_USER)
    except KeyError as error:
        raise StackError(
            f"running as root needs a '{SYSTEM_USER}' system user (Debian's {PACKAGE} makes it)"
        ) from error
    for path in (paths.root, paths.binlog, paths.run, paths.log):
        if path.exists():
            os.chown(path, owner.pw_uid, owner.pw_gid)
    reach = subprocess.run(_as_owner(["test", "-w", str(paths.root)]), check=False)
    if reach.returncode != 0:
        raise StackError(
            f"the '{SYSTEM_USER}' user cannot write {paths.root}; make every parent folder "
            "traversable (chmod o+x) or choose another stack.state_dir"
        )


def _install_data(config: StackConfig, paths: ServerPaths) -> None:
    """mariadb-install-db once: the system tables, root (and this OS user) by socket auth.

    Its bootstrap server reads ``my.cnf`` too; the binary log stays off for it (the
    system tables are not a cup's history).
    """
    if paths.installed.is_file():
        return
    shutil.rmtree(paths.data, ignore_errors=True)  # a failed run's leftovers
    command = [
        "mariadb-install-db", f"--defaults-file={paths.config}",
        "--auth-root-authentication-method=socket", "--skip-test-db", "--disable-log-bin",
    ]  # fmt: skip
    if os.geteuid() != 0:
        command.append(f"--auth-root-socket-user={admin_user()}")
    try:
        done = subprocess.run(
            command,
            cwd=paths.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=config.start_timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise failure("mariadb-install-db timed out", paths.log) from error
    if done.returncode != 0 or not paths.installed.is_file():
        output = (done.stdout + done.stderr).strip()
        raise failure(f"mariadb-install-db failed (exit {done.returncode}):\n{output}", paths.log)


def start_mariadb(config: StackConfig) -> int:
    """Start the server unless it runs already (install its data on first use); wait
    until it answers; return its pid."""
    paths = ServerPaths.of(config)
    settings = render_settings(config, paths, as_root=os.geteuid() == 0)
    pid = running_mariadb_pid(config)
    if pid is not None:
        ensure_same_settings(paths.config, settings, "MariaDB server")
        return pid
    ports.ensure_port_free(config.mariadb_port, "stack.mariadb_port")
    server = _require_server()
    _prepare_folders(paths)
    if config.security:
        owner = SYSTEM_USER if os.geteuid() == 0 else None
        copy_for_server(ensure_certificates(config.secrets_path), paths.tls, owner)
    paths.config.write_text(settings, encoding="utf-8")
    _install_data(config, paths)
    pid = _spawn(server, paths)
    _wait_ready(config, paths, pid)
    return pid


def _spawn(server: str, paths: ServerPaths) -> int:
    """Start the server in its own session (it outlives its starter); return its pid.

    ``--defaults-file`` must come first: the server then reads no other option file.
    The server writes its own pid file (as the mysql user under root).
    """
    command = [server, f"--defaults-file={paths.config}"]
    output_flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    pid = os.posix_spawn(
        server,
        command,
        dict(os.environ),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(paths.stdout), output_flags, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )
    wait_exec_settled(pid)
    return pid


def _wait_ready(config: StackConfig, paths: ServerPaths, pid: int) -> None:
    """Poll until the server answers; on failure stop it and raise with its logs' tails."""
    deadline = time.monotonic() + config.start_timeout_seconds
    marker = str(paths.config)
    while not mariadb_answers(config):
        if not process_is_ours(pid, marker):
            raise failure(f"the MariaDB server (pid {pid}) exited", paths.log, paths.stdout)
        if time.monotonic() >= deadline:
            stop_process(pid, marker, STOP_GRACE_SECONDS)
            raise failure(
                f"the MariaDB server did not answer within {config.start_timeout_seconds:.0f} s",
                paths.log,
                paths.stdout,
            )
        time.sleep(READY_POLL_SECONDS)


def mariadb_answers(config: StackConfig) -> bool:
    """True when the server lets its administrator in over the Unix socket and runs a
    query: the OS user that started it (root under euid 0), no account of ours needed.

    Not over TCP: until ``dev up`` has made the account, the server refuses 127.0.0.1
    before its handshake, and a probe that leaves before logging in is a warning in its
    log each time.
    """
    try:
        return asyncio.run(_select_one(socket_path(config)))
    except (OSError, MySQLError, TimeoutError):
        return False


async def _select_one(socket_file: Path) -> bool:
    async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
        connection = await asyncmy.connect(unix_socket=str(socket_file), user=admin_user())
        try:
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT 1")
                row = await cursor.fetchone()
        finally:
            await connection.ensure_closed()
    return bool(row == (1,))


def stop_mariadb(config: StackConfig, mode: str = "fast") -> None:
    """``fast``: SIGTERM, the server shuts down cleanly (SIGKILL after STOP_GRACE_SECONDS).

    ``mode="immediate"``: SIGKILL, InnoDB recovers from its redo log at the next start
    (the chaos suite's abrupt cup restart).
    """
    if mode not in ("fast", "immediate"):
        raise StackError(f"stop mode must be fast or immediate, got {mode!r}")
    paths = ServerPaths.of(config)
    pid = running_mariadb_pid(config)
    if pid is None:
        return
    marker = str(paths.config)
    if mode == "fast":
        stop_process(pid, marker, STOP_GRACE_SECONDS)
    else:
        _kill(pid, marker)
    remove_file(paths.pid_file)


def _kill(pid: int, marker: str) -> None:
    """SIGKILL ``pid`` and wait until it is gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while process_is_ours(pid, marker):
        if time.monotonic() >= deadline:
            raise StackError(f"the MariaDB server (pid {pid}) survived SIGKILL")
        time.sleep(READY_POLL_SECONDS)
