"""A fresh smallcups system on the running local stack, for one test or one bench mode.

Fresh databases (a control database and N cups), a fresh topic prefix and consumer
group; worker processes started as real ``smallcups worker`` children. ``drop_system``
stops the workers and drops the databases and the topics again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from deploy.local.mariadb_databases import (
    admin_account,
    create_mysql_databases,
    drop_mysql_databases,
)
from deploy.local.roles import Role, as_role
from engine.admin.setup import initialize
from engine.core.config import MARIADB_ADMIN_CREDENTIALS, ArchiveConfig, Config, to_environ
from engine.core.records import ShardMap
from engine.kafka.acls import deployment_grants, revoke
from engine.kafka.connection import connection
from loadtest.workers import WorkerProcess
from shards.control import connect
from shards.cup_admin import CupKind


@dataclass
class System:
    config: Config
    shard_map: ShardMap
    log_dir: Path
    databases: list[str]
    """The Postgres databases: the control database first, then the Postgres cups."""
    mysql_databases: list[str] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(
            f"w{len(self.workers)}",
            self.log_dir / f"worker-{len(self.workers)}.log",
            env={**to_environ(as_role(self.config, Role.WORKER)), **(env or {})},
        )
        worker.start()
        self.workers.append(worker)
        return worker

    def stop_all(self) -> list[int]:
        return [worker.stop() for worker in self.workers]

    def worker_logs(self) -> str:
        return "\n".join(w.log_path.read_text(errors="replace")[-3000:] for w in self.workers)


async def make_system(
    base: Config, log_dir: Path, *, partitions: int, cups: int, mysql_cups: int = 0, run: str = ""
) -> System:
    """Create the databases, the topics and the shard map of a new system named ``run``:
    ``cups`` Postgres cups, then ``mysql_cups`` MariaDB cups (the local stack's)."""
    run = run or f"t{uuid.uuid4().hex[:10]}"
    names = [f"{run}_control"] + [f"{run}_cup_{i}" for i in range(cups)]
    mysql_names = [f"{run}_cup_{cups + i}" for i in range(mysql_cups)]
    await create_databases(base, names)
    await asyncio.to_thread(create_mysql_databases, base.stack, mysql_names)
    dsns = [base.stack.database_dsn(name) for name in names]
    dsns += [base.stack.mysql_dsn(name) for name in mysql_names]
    kafka = msgspec.structs.replace(
        base.kafka, topic_prefix=run, group_id=f"{run}-workers", partitions=partitions
    )
    shards = msgspec.structs.replace(base.shards, control_dsn=dsns[0], cup_dsns=dsns[1:])
    config = msgspec.structs.replace(base, kafka=kafka, shards=shards)
    report = await initialize(config)
    return System(config, report.shard_map, log_dir, names, mysql_names)


def with_archive_periods(base: Config, system: System, period_seconds: int) -> None:
    """Give ``system`` journal periods of ``period_seconds`` (its workers make them) and
    the local stack's MariaDB admin account for ``smallcups archive`` (DROP PARTITION)."""
    settings = ArchiveConfig(
        period_seconds=period_seconds,
        mysql_user=admin_account(base.stack),
        mysql_credentials=MARIADB_ADMIN_CREDENTIALS,
    )
    system.config = msgspec.structs.replace(system.config, archive=settings)


async def add_cup_database(base: Config, system: System, kind: CupKind = CupKind.POSTGRES) -> str:
    """A new, empty database for one more cup of ``system`` (dropped with it); its DSN.

    Registering it (``shards.cluster.add_cup``) is the caller's step, as for any cup.
    """
    run = system.databases[0].removesuffix("_control")
    name = f"{run}_cup_{len(system.databases) - 1 + len(system.mysql_databases)}"
    if kind is CupKind.MYSQL:
        await asyncio.to_thread(create_mysql_databases, base.stack, [name])
        system.mysql_databases.append(name)
        return base.stack.mysql_dsn(name)
    await create_databases(base, [name])
    system.databases.append(name)
    return base.stack.database_dsn(name)


async def drop_system(base: Config, system: System) -> None:
    """Stop the workers, drop the system's databases and delete its topics."""
    system.stop_all()
    await drop_databases(base, system.databases)
    await asyncio.to_thread(drop_mysql_databases, base.stack, system.mysql_databases)
    kafka = system.config.kafka
    topics = [kafka.commands_topic, kafka.internal_topic, kafka.results_topic, kafka.dlq_topic]
    await delete_topics(base, topics)
    if kafka.security_protocol.sasl:
        await revoke(kafka, deployment_grants(kafka))


async def create_databases(base: Config, names: list[str]) -> None:
    await _for_each_database(base, 'CREATE DATABASE "{}"', names)


async def drop_databases(base: Config, names: list[str]) -> None:
    await _for_each_database(base, 'DROP DATABASE IF EXISTS "{}" WITH (FORCE)', names)


async def _for_each_database(base: Config, statement: str, names: list[str]) -> None:
    """Run ``statement`` (a database name in place of ``{}``) for each name, on the stack."""
    admin = await connect(base.stack.control_dsn, base.shards)
    try:
        for name in names:
            await admin.execute(statement.format(name))
    finally:
        await admin.close()


async def delete_topics(base: Config, topics: list[str]) -> None:
    """Delete ``topics``; one that is already gone is not an error."""
    admin = AIOKafkaAdminClient(
        **connection(base.kafka),
        request_timeout_ms=base.kafka.request_timeout_ms,
    )
    await admin.start()
    try:
        with contextlib.suppress(KafkaError):
            await admin.delete_topics(topics)
    finally:
        await admin.close()
