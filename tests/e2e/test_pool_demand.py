"""The policy benchmark's simulation against the real controller: a compressed morning of
recordings through a demand-based JibriPool, Jibri pods that take seconds to become Ready.

The figures of both are printed side by side. Asserted: the whole demand was played, the pool
sized itself from demand (it rose above minSpare and came back), and the measured idle
pod-minutes are those of the simulation within a factor of two (the simulation is the benchmark's
model of this very world; a gap wider than that means the model is wrong). The 10-minute day
runs with `POOL_CHECK_MINUTES=10` (see docs/performance.md).
"""

from __future__ import annotations

import os

import pytest

from bench.poolcheck import Plan, compare, create_pool, install_crd, play, predict, table
from testbed.cluster import IDLE_LABELS, apply, jibri_deployment
from tests.e2e.conftest import E2E
from tests.e2e.helpers import wait_spares

MINUTES = float(os.environ.get("POOL_CHECK_MINUTES", "2"))

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(int(MINUTES * 60 + 240))]


def plan() -> Plan:
    if MINUTES >= 10:  # the whole day, 144 times faster
        return Plan(begin_hour=0.0, end_hour=24.0, factor=144.0 * 10 / MINUTES, keep=0.1)
    # The morning ramp and peak, 08:30 to 10:30, 60 times faster (two minutes).
    return Plan(begin_hour=8.5, end_hour=8.5 + 2.0 * MINUTES / 2, factor=60.0, keep=0.15)


async def test_compressed_day_through_a_demand_pool(e2e: E2E) -> None:
    check = plan()
    demand = check.demand()
    await install_crd(e2e.admin)
    controller = await e2e.ready(POOL_RECONCILE_PERIOD=str(check.reconcile_period))
    doc = jibri_deployment(
        namespace=e2e.namespace,
        replicas=check.min_spare,
        subscribers=[controller.webhook_base()],
        jwt=e2e.keys.jibri,
    )
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["env"] += [
        {"name": "SIM_READY_DELAY_SECONDS", "value": str(check.ready_delay)},
        {"name": "SIM_READY_JITTER_SECONDS", "value": str(check.ready_jitter)},
    ]
    await apply(e2e.admin, [doc])
    await wait_spares(e2e.admin, e2e.namespace, check.min_spare)
    await create_pool(e2e.admin, e2e.namespace, "jibri", check.pool_spec("jibri"))

    measured = await play(
        e2e.admin, e2e.namespace, demand, idle_labels=IDLE_LABELS, deployment="jibri"
    )
    predicted = predict(check, demand)
    rows = compare(measured, predicted)
    print(
        f"\n{demand.source}\n{table(rows)}lead time p90 measured {measured.lead_time} s; "
        f"{measured.late_starts} starts sent late"
    )

    assert measured.recordings == len(demand.recordings) > 10
    assert 0 <= measured.shortfalls <= measured.recordings
    assert measured.peak_replicas > check.min_spare, "the pool never sized from demand"
    simulated_idle = predicted.idle_pod_hours * 60
    assert simulated_idle / 2 <= measured.idle_pod_minutes <= simulated_idle * 2, rows
