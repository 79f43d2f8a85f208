"""One PostgreSQL cluster on 127.0.0.1 holding the control database and every cup.

Layout under ``<state_dir>/postgres``: ``data/`` (initdb once), ``postgres.log``,
``sockets/`` (the Unix socket), ``tls/`` (the server's certificate and key, with
``stack.security``). Settings live in ``data/smallcups.conf``, included from
``postgresql.conf``, and ``data/pg_hba.conf`` says who gets in (deploy.local.postgres_auth);
both are rewritten on every start. fsync and synchronous_commit stay on:
durability is the point of the ledger, even on a laptop.

initdb, pg_ctl and postgres refuse to run as root: under euid 0 they run as the
``postgres`` system user (``runuser``), which then owns the cluster's folder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy.local import ports, postgres_auth
from deploy.local.processes import ensure_same_settings, failure, process_is_ours, read_pid_file
from deploy.local.tls import copy_for_server, ensure_certificates
from engine.core.config import StackConfig
from engine.core.errors import StackError

SYSTEM_USER = "postgres"
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SETTINGS_FILE = "smallcups.conf"
SOCKET_PATH_BYTES_MAX = 107
STOP_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ClusterPaths:
    root: Path

    @classmethod
    def of(cls, config: StackConfig) -> ClusterPaths:
        return cls(config.state_path / "postgres")

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def sockets(self) -> Path:
        return self.root / "sockets"

    @property
    def tls(self) -> Path:
        """The server's certificate and key, owned by the cluster's OS user."""
        return self.root / "tls"


def find_bin_dir(configured: str) -> Path:
    """``stack.postgres_bin_dir`` if set, else the newest Debian install, else PATH."""
    if configured:
        candidates = [Path(configured).expanduser()]
    else:
        installed = [p for p in Path("/").glob(DEBIAN_BIN_GLOB.lstrip("/"))]
        installed.sort(key=lambda p: _version_key(p.parent.name), reverse=True)
        on_path = shutil.which("pg_ctl")
        candidates = installed + ([Path(on_path).resolve().parent] if on_path else [])
    for candidate in candidates:
        if (candidate / "pg_ctl").is_file() and (candidate / "initdb").is_file():
            return candidate
    raise StackError(
        "no PostgreSQL server binaries (initdb, pg_ctl) found; install them or set "
        "stack.postgres_bin_dir (env SMALLCUPS_STACK_POSTGRES_BIN_DIR)"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def render_settings(config: StackConfig, paths: ClusterPaths) -> str:
    """The cluster's settings, included at the end of postgresql.conf."""
    settings = {
        "listen_addresses": _quote(ports.HOST),
        "port": str(config.postgres_port),
        "unix_socket_directories": _quote(str(paths.sockets)),
        "max_connections": "300",
        "shared_buffers": "'256MB'",
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
        "logging_collector": "off",
    }
    if config.security:
        settings.update(postgres_auth.tls_settings(paths.tls))
    lines = ["# Written by `smallcups dev up`; rewritten on every start."]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _as_cluster_owner(command: list[str]) -> list[str]:
    """Prefix ``command`` with runuser when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", SYSTEM_USER, "--", *command]


def _run(command: list[str], cwd: Path, timeout_seconds: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            _as_cluster_owner(command),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise StackError(f"{command[0]} did not finish in {timeout_seconds:.0f} s") from error


def running_postgres_pid(config: StackConfig) -> int | None:
    """The postmaster's pid when this state folder's cluster runs, else None."""
    paths = ClusterPaths.of(config)
    pid = read_pid_file(paths.data / "postmaster.pid")
    return pid if process_is_ours(pid, str(paths.data)) else None


def _prepare_folders(paths: ClusterPaths) -> None:
    """Create the folders; under root hand them to the postgres user and check its reach."""
    socket_file = paths.sockets / ".s.PGSQL.65535"
    if len(str(socket_file).encode()) > SOCKET_PATH_BYTES_MAX:
        raise StackError(f"state folder path too long for a Unix socket: {paths.sockets}")
    paths.sockets.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return
    try:
        owner = pwd.getpwnam(SYSTEM_USER)
    except KeyError as error:
        raise StackError(f"running as root needs a '{SYSTEM_USER}' system user") from error
    for folder in (paths.root, paths.sockets):
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    if paths.log.exists():
        os.chown(paths.log, owner.pw_uid, owner.pw_gid)
    reach = subprocess.run(_as_cluster_owner(["test", "-w", str(paths.root)]), check=False)
    if reach.returncode != 0:
        raise StackError(
            f"the '{SYSTEM_USER}' user cannot write {paths.root}; make every parent folder "
            "traversable (chmod o+x) or choose another stack.state_dir"
        )


def _init_cluster(config: StackConfig, bin_dir: Path, paths: ClusterPaths) -> None:
    """initdb once (UTF8, C locale); then include our settings. initdb's trust
    authentication never serves: pg_hba.conf is ours before the first start
    (deploy.local.postgres_auth)."""
    if (paths.data / "PG_VERSION").is_file():
        return
    shutil.rmtree(paths.data, ignore_errors=True)  # a failed initdb's leftovers
    command = [
        str(bin_dir / "initdb"), "-D", str(paths.data), "-U", config.postgres_user,
        "--auth=trust", "-E", "UTF8", "--locale=C",
    ]  # fmt: skip
    done = _run(command, paths.root, config.start_timeout_seconds)
    if done.returncode != 0:
        raise StackError(f"initdb failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    with (paths.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(f"\ninclude '{SETTINGS_FILE}'\n")


def start_postgres(config: StackConfig) -> int:
    """Start the cluster unless it runs already (initdb on first use); return its pid."""
    paths = ClusterPaths.of(config)
    settings = paths.data / SETTINGS_FILE
    settings_text = render_settings(config, paths)
    pid = running_postgres_pid(config)
    if pid is not None:
        ensure_same_settings(settings, settings_text, "PostgreSQL cluster")
        return pid
    ports.ensure_port_free(config.postgres_port, "stack.postgres_port")
    bin_dir = find_bin_dir(config.postgres_bin_dir)
    _prepare_folders(paths)
    _init_cluster(config, bin_dir, paths)
    settings.write_text(settings_text, encoding="utf-8")
    owner = SYSTEM_USER if os.geteuid() == 0 else None
    if owner is not None:
        account = pwd.getpwnam(owner)
        os.chown(settings, account.pw_uid, account.pw_gid)
    timeout = config.start_timeout_seconds
    if config.security:
        copy_for_server(ensure_certificates(config.secrets_path), paths.tls, owner)
    server = _as_cluster_owner([str(bin_dir / "postgres")])
    postgres_auth.write_hba(config, paths.data, server, timeout)
    command = [
        str(bin_dir / "pg_ctl"), "start", "-D", str(paths.data), "-l", str(paths.log),
        "-w", "-t", str(int(timeout)), "-s",
    ]  # fmt: skip
    done = _run(command, paths.root, timeout + 10)
    pid = running_postgres_pid(config)
    if done.returncode != 0 or pid is None:
        detail = (done.stdout + done.stderr).strip()
        message = f"PostgreSQL did not start (pg_ctl exit {done.returncode}): {detail}"
        raise failure(message, paths.log)
    return pid


def stop_postgres(config: StackConfig, mode: str = "fast") -> None:
    """``pg_ctl stop -m fast``: roll back open transactions, checkpoint, exit.

    ``mode="immediate"`` exits without a checkpoint (crash recovery at the next start):
    the chaos suite's abrupt cup restart.
    """
    if mode not in ("fast", "immediate"):
        raise StackError(f"stop mode must be fast or immediate, got {mode!r}")
    if running_postgres_pid(config) is None:
        return
    paths = ClusterPaths.of(config)
    bin_dir = find_bin_dir(config.postgres_bin_dir)
    command = [
        str(bin_dir / "pg_ctl"), "stop", "-D", str(paths.data), "-m", mode,
        "-w", "-t", str(int(STOP_TIMEOUT_SECONDS)), "-s",
    ]  # fmt: skip
    done = _run(command, paths.root, STOP_TIMEOUT_SECONDS + 10)
    if done.returncode != 0 and running_postgres_pid(config) is not None:
        raise failure(f"PostgreSQL did not stop: {done.stdout}{done.stderr}", paths.log)
