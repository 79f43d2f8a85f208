"""The links between workers and the broker or the cups (Postgres and MariaDB) delay,
reset and go silent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.chaos.harness import ChaosSystem, Load, assert_clean, scale, verdict
from tests.chaos.proxy import Fault, FaultProxy

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SESSION_TIMEOUT_SECONDS = 10.0
HEAL_SECONDS = 2.0
"""Load on a healed link between two faults."""

Step = tuple[str, FaultProxy, Callable[[FaultProxy], None], float]


def _faults(chaos: ChaosSystem) -> list[Step]:
    """(name, proxy, how to start the fault, seconds it lasts) in the order played."""
    kafka, postgres, mariadb = chaos.kafka_faults, chaos.postgres_proxy, chaos.mariadb_proxy

    def reset_all(proxy: FaultProxy) -> None:
        for each in (proxy, postgres, mariadb):
            each.drop_connections()

    return [
        ("kafka delay 150 ms", kafka, lambda p: p.set_fault(Fault.DELAY, 150), 4.0),
        ("kafka connections reset", kafka, FaultProxy.drop_connections, 1.0),
        ("postgres delay 50 ms", postgres, lambda p: p.set_fault(Fault.DELAY, 50), 4.0),
        ("postgres connections reset", postgres, FaultProxy.drop_connections, 1.0),
        ("mariadb delay 50 ms", mariadb, lambda p: p.set_fault(Fault.DELAY, 50), 4.0),
        ("mariadb connections reset", mariadb, FaultProxy.drop_connections, 1.0),
        ("kafka blackhole", kafka, lambda p: p.set_fault(Fault.BLACKHOLE), 6.0),
        (
            "kafka blackhole past the session timeout",
            kafka,
            lambda p: p.set_fault(Fault.BLACKHOLE),
            SESSION_TIMEOUT_SECONDS + 4,
        ),
        ("postgres blackhole", postgres, lambda p: p.set_fault(Fault.BLACKHOLE), 8.0),
        ("mariadb blackhole", mariadb, lambda p: p.set_fault(Fault.BLACKHOLE), 8.0),
        ("all reset", kafka, reset_all, 1.0),
    ]


async def test_network_faults_between_workers_and_servers(chaos: ChaosSystem) -> None:
    """Delays, resets and blackholes, one after the other, under a steady load.

    Each fault lasts its time, then the link heals and the load runs on for a few
    seconds before the next. A blackhole longer than the session timeout costs the
    workers their group membership; a silent cup leaves a commit hanging with an
    unclear outcome, which the worker must read back rather than guess.
    """
    run = scale()
    chaos.start_worker()
    chaos.start_worker()
    faults = _faults(chaos)
    async with Load(chaos, run) as load:
        load.start(sum(seconds + HEAL_SECONDS for *_, seconds in faults) + run.load_seconds / 2)
        for _name, proxy, inject, seconds in faults:
            await asyncio.sleep(HEAL_SECONDS)
            inject(proxy)
            chaos.fault()
            await asyncio.sleep(seconds)
            chaos.clear_faults()
        await load.wait()
    assert_clean(await verdict(chaos, "network", load.acked), chaos)
