"""Workers crash, freeze and lose their relay; nothing is lost or applied twice."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Awaitable, Callable

import pytest

from engine.core.messages import Result, result_decoder
from shards.backends import cup_kind
from shards.cup_admin import CupKind
from tests.chaos.harness import (
    ChaosSystem,
    Load,
    Worker,
    assert_clean,
    connected_ports,
    scale,
    verdict,
)
from tests.chaos.proxy import Fault, FaultProxy
from tests.integration.system import RawCup, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SESSION_TIMEOUT_SECONDS = 10.0
"""The consumer group session timeout of a worker (engine.kafka.clients.make_consumer)."""
ZOMBIE_REQUEST_TIMEOUT_MS = 60_000
"""Longer than the zombie sleeps: the result batches it queued before the SIGSTOP do not
expire when it wakes. An expired send would fail the relay's partitions and have them
claimed again: a second fault mixed into this one."""
ZOMBIE_STOP_SECONDS_MAX = 45.0
BURST_COMMANDS = 20_000
"""Several seconds of work, so the zombie's lanes always have a next batch to commit."""
BURST_STARTED_COMMANDS = 500
"""Commands the zombie must have processed after the burst was published (its backlog)
before its requests are held."""
HELD_COMMIT_BYTES = 8_192
"""Held bytes that must be a commit: the zombie's other queries are a few hundred bytes,
each of its pool's connections (4 per cup) holds one request at a time, so without a
commit the held bytes stay below 2 KiB. A held commit round (two at most are in flight
per cup) may be as small as 7 KiB on MariaDB, whose first round trip is short."""
POLL_SECONDS = 0.5
BUSY_POLL_SECONDS = 0.05
PARTITIONS_OF_A_CUP = 4
"""The chaos system's 8 partitions over its 2 cups."""


async def test_workers_sigkilled_at_random_moments(chaos: ChaosSystem) -> None:
    """Two workers; one of them SIGKILLed at a random moment, restarted, again and again."""
    run = scale()
    chaos.start_worker()
    chaos.start_worker()
    rng = random.Random()
    async with Load(chaos, run) as load:
        load.start()
        gap_seconds = run.load_seconds / run.kills
        for _ in range(run.kills):
            await asyncio.sleep(rng.uniform(0.3, 2 * gap_seconds))
            victim = rng.choice([w for w in chaos.workers if w.process.alive()])
            victim.process.kill()
            chaos.fault()
            chaos.start_worker()
        await load.wait()
    assert chaos.faults >= run.kills >= 10
    assert_clean(await verdict(chaos, "sigkill", load.acked), chaos)


async def _wait_metric(
    worker: Worker, name: str, at_least: float, seconds: float, poll_seconds: float = POLL_SECONDS
) -> None:
    """Wait (bounded) until the worker's metric ``name`` reaches ``at_least``."""
    for _ in range(int(seconds / poll_seconds)):
        if await worker.metric(name) >= at_least:
            return
        await asyncio.sleep(poll_seconds)
    raise AssertionError(f"{name} stayed below {at_least} for {seconds} s")


async def _wait_owning(worker: Worker, seconds: float, partitions: int = 1) -> None:
    """Wait (bounded) until ``worker`` owns at least ``partitions`` partitions."""
    await _wait_metric(worker, "smallcups_partitions_owned", partitions, seconds)


async def _hold_commit(
    proxy: FaultProxy,
    worker: Worker,
    at_least: int,
    seconds: float,
    feed: Callable[[], Awaitable[None]],
) -> None:
    """Hold the worker's requests to ``proxy`` until ``at_least`` bytes of them wait there.
    The held connections are looked up again and again: a worker whose connections are
    all held opens new ones. ``feed`` publishes more work once the first connections are
    held, so the next commits are large whatever the worker was doing at that moment (on
    MariaDB a commit whose second round trip was held is ended by the server after its
    idle-transaction timeout, and the next ones must carry a batch again)."""
    proxy.hold_requests(connected_ports(worker.process.pid, proxy.listen_port))
    await feed()
    for _ in range(int(seconds / BUSY_POLL_SECONDS)):
        proxy.hold_requests(connected_ports(worker.process.pid, proxy.listen_port))
        if proxy.held_bytes >= at_least:
            return
        await asyncio.sleep(BUSY_POLL_SECONDS)
    raise AssertionError(f"the proxy held {proxy.held_bytes} bytes, not {at_least}, in {seconds} s")


@pytest.mark.parametrize("held", [CupKind.POSTGRES, CupKind.MYSQL], ids=["postgres", "mariadb"])
async def test_zombie_worker_is_fenced(chaos: ChaosSystem, held: CupKind) -> None:
    """A worker's commit reaches its cup after another worker took the partition: refused.

    The zombie works on a burst; then what it sends to one cup is held at the proxy (its
    replies still pass), so its lanes' next commits wait there, unread by the database.
    It is SIGSTOPped past the session timeout; the group hands its partitions to the
    other worker, which bumps their epochs. Then the held commits go on: the cup refuses
    them, and the zombie, woken up, counts them (smallcups_fenced_commits_total) and
    rejoins. Nothing is lost or applied twice.

    On MariaDB the held request may be the second round trip of a commit, whose first
    took the partitions' row locks: the partner's claims wait until the server ends the
    zombie's idle transaction (shards.mysql.driver.IDLE_TRANSACTION_SECONDS).
    """
    run = scale()
    proxy = chaos.cup_proxy(held)
    workers = [chaos.start_worker(ZOMBIE_REQUEST_TIMEOUT_MS) for _ in range(2)]
    async with Load(chaos, run) as load:
        load.start(SESSION_TIMEOUT_SECONDS + 15)
        zombie = await _owner_of_cup(chaos, held, workers, 60)
        (partner,) = [w for w in workers if w is not zombie]
        await load.publish([load.workload.next_command() for _ in range(BURST_COMMANDS)])
        busy = await zombie.metric("smallcups_commands_total") + BURST_STARTED_COMMANDS
        await _wait_metric(zombie, "smallcups_commands_total", busy, 30, BUSY_POLL_SECONDS)
        burst = [load.workload.next_command() for _ in range(BURST_COMMANDS)]
        await _hold_commit(proxy, zombie, HELD_COMMIT_BYTES, 30, lambda: load.publish(burst))
        os.kill(zombie.process.pid, signal.SIGSTOP)
        chaos.fault()
        await asyncio.sleep(SESSION_TIMEOUT_SECONDS)
        await _wait_owning(partner, ZOMBIE_STOP_SECONDS_MAX, chaos.system.shard_map.partitions)
        proxy.release()
        os.kill(zombie.process.pid, signal.SIGCONT)
        await _wait_metric(zombie, "smallcups_fenced_commits_total", 1, 10)
        await load.wait()
    assert zombie.process.alive(), "the zombie survives its fencing and rejoins"
    server = "mariadb" if held is CupKind.MYSQL else "postgres"
    assert_clean(await verdict(chaos, f"sigstop-zombie-{server}", load.acked), chaos)


async def _owner_of_cup(
    chaos: ChaosSystem, kind: CupKind, workers: list[Worker], seconds: float
) -> Worker:
    """The worker that owns every partition of the cup of ``kind``, once each worker owns
    one whole cup (the assignor hands out whole cups while there are no more workers
    than cups; bounded)."""
    (dsn,) = [d for d in chaos.system.shard_map.cups.values() if cup_kind(d) is kind]
    by_pid = {w.process.pid: w for w in workers}
    for _ in range(int(seconds / POLL_SECONDS)):
        cup = await RawCup.open(dsn, chaos.system.config.shards)
        try:
            owners = {o.rsplit(":", 1)[-1] for o in await cup.values(
                "SELECT owner FROM partition_state"
            )}  # fmt: skip
        finally:
            await cup.close()
        pids = {int(o) for o in owners if o.isdigit()}
        owned = [await w.metric("smallcups_partitions_owned") for w in workers]
        settled = owned == [PARTITIONS_OF_A_CUP] * len(workers)
        if settled and len(owners) == 1 and len(pids) == 1 and pids <= by_pid.keys():
            return by_pid[pids.pop()]
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError(f"no one worker came to own the {kind} cup in {seconds} s")


async def _unsent_results(chaos: ChaosSystem) -> set[str]:
    """Command ids whose result waits in a cup's outbox."""
    ids: set[str] = set()
    for dsn in chaos.system.shard_map.cups.values():
        cup = await RawCup.open(dsn, chaos.system.config.shards)
        try:
            values = await cup.values("SELECT value FROM outbox WHERE kind = 1")
        finally:
            await cup.close()
        ids |= {result_decoder.decode(value).command_id for value in values}
    return ids


async def test_relay_killed_with_unsent_outbox_rows(chaos: ChaosSystem) -> None:
    """The relay is stopped from publishing while commits go on; the worker is killed.

    The proxy silences the worker's Produce requests (its fetches still pass), so the
    next batches are committed to the cups with their results left in the outbox (the
    worker loop then waits on the relay: it cannot publish, so it stops taking more).
    After the SIGKILL those rows are still there and their results are not on the
    topic; the next worker claims the partitions, re-sends them, and every command
    ends with exactly one distinct result.
    """
    run = scale()
    worker = chaos.start_worker()
    async with Load(chaos, run) as load:
        await _wait_owning(worker, 60)
        load.start(run.load_seconds / 4)
        await load.wait()
        chaos.kafka_faults.set_fault(Fault.HOLD_PRODUCE)
        chaos.fault()
        burst = [load.workload.next_command() for _ in range(run.rate_per_second)]
        await load.publish(burst)
        await load.wait()
        burst_ids = {c.id for c in burst}
        unsent: set[str] = set()
        for _ in range(int(60 / POLL_SECONDS)):
            unsent = await _unsent_results(chaos) & burst_ids
            if unsent:
                break
            await asyncio.sleep(POLL_SECONDS)
        await asyncio.sleep(2 * POLL_SECONDS)
        worker.process.kill()
        chaos.fault()
        unsent = await _unsent_results(chaos) & burst_ids
        answered = {r.command_id for r in await _results(chaos)}
        assert unsent, "the burst's results wait in the outbox"
        assert not answered & unsent, "none of them was published before the kill"
        chaos.kafka_faults.clear()
        chaos.start_worker()
        load.start(run.load_seconds / 4)
        await load.wait()
    figures = await verdict(chaos, "relay-killed", load.acked)
    assert_clean(figures, chaos)
    assert unsent <= {r.command_id for r in await _results(chaos)}
    print(f"relay-killed: {len(unsent)} results were unsent in the outbox at the kill")


async def _results(chaos: ChaosSystem) -> list[Result]:
    kafka = chaos.config.kafka
    return [result_decoder.decode(r.value) for r in await read_topic(kafka, kafka.results_topic)]
