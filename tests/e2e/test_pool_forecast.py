"""The forecast on the real control plane: days compressed into two minutes, the same cluster of
recordings at 10:00 local each day, two JibriPools with the forecast on.

The controller runs with ``FORECAST_DAY_SECONDS`` (a day of 120 s) as two replicas. Two
Deployments of simulated Jibris (pods Ready 5 to 10 s after they are created) are sized by two
pools with the same spec but the mode: *apply* (``mode: Apply``) and *recommend*
(``mode: Recommend``). The player (bench/poolcheck.py) starts the same six recordings within
1.5 s on each pool at 10:00 of the first day and of the second, taking the oldest Ready spare
through Jibri's own API, and counts a recording that finds none. Between the two days the
leader shuts down: the other replica goes on from the history the first stored.

Asserted: the first day, without history, the cluster finds only minSpare spares; the second
day the apply pool raised its replicas (bound ``forecast``) well before the cluster began and
had a spare Ready for each of its recordings, while the recommend pool wrote no scale before
the cluster though its status said what the forecast would set; the stored history survived
the failover; and the simulation (bench.sizers.Forecasting, the controller's own forecast)
tells the same story: the same rise within a few seconds, idle pod-minutes within a factor of
two.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from datetime import datetime
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from bench.daysim import Outcome
from bench.poolcheck import (
    ForecastPlan,
    Measured,
    Rise,
    Timeline,
    days_of,
    forecast_table,
    play,
    predict_forecast,
    rise_before,
    whole,
)
from jibri_pod_controller.core.forecast import decode
from testbed.cluster import IDLE_LABELS, ControllerProcess, apply, jibri_deployment, wait_until
from tests.e2e.conftest import E2E
from tests.e2e.helpers import has, is_ready, labels_of, list_pods

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

GROUP, VERSION, PLURAL = "jibri-pod-controller.io", "v1alpha1", "jibripools"
PLAN = ForecastPlan()
MODES = {"apply": "Apply", "recommend": "Recommend"}


def deployment(e2e: E2E, name: str, subscribers: list[str]) -> dict[str, Any]:
    """A Deployment of its own pods (``pool: <name>``), Ready 5 to 10 s after creation."""
    doc = jibri_deployment(
        namespace=e2e.namespace,
        replicas=PLAN.min_spare,
        subscribers=subscribers,
        name=name,
        jwt=e2e.keys.jibri,
    )
    doc["spec"]["selector"]["matchLabels"]["pool"] = name
    doc["spec"]["template"]["metadata"]["labels"]["pool"] = name
    doc["spec"]["template"]["spec"]["containers"][0]["env"] += [
        {"name": "SIM_READY_DELAY_SECONDS", "value": str(PLAN.ready_delay)},
        {"name": "SIM_READY_JITTER_SECONDS", "value": str(PLAN.ready_jitter)},
    ]
    return doc


async def ready_spares(e2e: E2E, name: str) -> int:
    wanted = {**IDLE_LABELS, "pool": name}
    pods = await list_pods(e2e.admin, e2e.namespace)
    return sum(1 for p in pods if has(labels_of(p), wanted) and is_ready(p))


async def get_pool(e2e: E2E, name: str) -> dict[str, Any]:
    pool: dict[str, Any] = await k8s.CustomObjectsApi(e2e.admin).get_namespaced_custom_object(
        GROUP, VERSION, e2e.namespace, PLURAL, name
    )
    return pool


async def watch_statuses(e2e: E2E, origin: float, timelines: dict[str, Timeline]) -> None:
    """Sample both pools' status twice a second (seconds since ``origin``) until cancelled."""
    while True:
        for name, timeline in timelines.items():
            with contextlib.suppress(ApiException):
                status = (await get_pool(e2e, name)).get("status") or {}
                timeline.points.append((time.time() - origin, status))
        await asyncio.sleep(0.5)


async def leader_of(*controllers: ControllerProcess) -> ControllerProcess:
    async def one() -> ControllerProcess | None:
        leading = [c for c in controllers if c.metric("jibri_pod_controller_leader") == 1]
        return leading[0] if len(leading) == 1 else None

    return await wait_until(one, timeout=30, what="exactly one leader")


def scale_writes_to(e2e: E2E, deployment: str, origin: float) -> list[float]:
    """When (seconds since ``origin``) the controller wrote ``deployment``'s scale."""
    out = []
    for event in e2e.plane.audit_events(username=e2e.user, namespace=e2e.namespace):
        ref = event.get("objectRef") or {}
        code = int((event.get("responseStatus") or {}).get("code", 0))
        if ref.get("subresource") == "scale" and ref.get("name") == deployment and code < 300:
            at = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            out.append(at.timestamp() - origin)
    return out


def rise_of(replicas: Any, spares: Any, cluster: float) -> Rise:
    return rise_before(
        replicas,
        spares,
        cluster=cluster,
        since=cluster - 0.3 * PLAN.day_seconds,
        floor=PLAN.min_spare,
    )


def simulated_rise(outcome: Outcome, cluster: float) -> Rise:
    return rise_of(
        [(s.t, s.replicas) for s in outcome.samples],
        [(s.t, s.spare_ready) for s in outcome.samples],
        cluster,
    )


async def test_a_pool_learns_a_daily_cluster_and_raises_its_spares_before_it(
    e2e: E2E, crd: None
) -> None:
    began = time.monotonic()
    env = {"POOL_RECONCILE_PERIOD": str(PLAN.reconcile_period)}
    env["FORECAST_DAY_SECONDS"] = f"{PLAN.day_seconds:g}"
    a = await e2e.ready("controller-a", **env)
    b = await e2e.ready("controller-b", **env)
    subscribers = [a.webhook_base(), b.webhook_base()]
    await apply(e2e.admin, [deployment(e2e, name, subscribers) for name in MODES])
    for name in MODES:
        await wait_until(
            lambda name=name: _equals(ready_spares(e2e, name), PLAN.min_spare),
            timeout=60,
            what=f"{name}: {PLAN.min_spare} spares",
        )
    zone, midnight = PLAN.schedule(time.time())
    for name, mode in MODES.items():
        await k8s.CustomObjectsApi(e2e.admin).create_namespaced_custom_object(
            GROUP,
            VERSION,
            e2e.namespace,
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "JibriPool",
                "metadata": {"name": name},
                "spec": PLAN.pool_spec(name, zone=zone, mode=mode),
            },
        )
    origin = time.time() + 1.0
    demand = PLAN.demand(origin, midnight)
    first, second = demand.bursts
    timelines = {name: Timeline() for name in MODES}
    watcher = asyncio.create_task(watch_statuses(e2e, origin, timelines))

    async def fail_over() -> tuple[ControllerProcess, ControllerProcess]:
        # Between the days, after the first cluster: the leader shuts down (SIGTERM), and
        # the other replica leads on from what the first stored.
        await asyncio.sleep(max(0.0, origin + first + 30.0 - time.time()))
        leader = await leader_of(a, b)
        leader.signal(signal.SIGTERM)
        assert leader.wait_exit(20) == 0
        standby = b if leader is a else a
        return leader, await leader_of(standby)

    try:
        results = await asyncio.gather(
            *(
                play(
                    e2e.admin,
                    e2e.namespace,
                    demand,
                    idle_labels={**IDLE_LABELS, "pool": name},
                    deployment=name,
                    start_at=origin,
                )
                for name in MODES
            ),
            fail_over(),
        )
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    measured: dict[str, Measured] = dict(zip(MODES, results[:2], strict=True))
    old_leader, new_leader = results[2]
    simulated = {
        name: predict_forecast(PLAN, demand, zone=zone, mode=mode) for name, mode in MODES.items()
    }

    rises = {name: rise_of(m.replicas, m.spares, second) for name, m in measured.items()}
    simulated_rises = {name: simulated_rise(o, second) for name, o in simulated.items()}
    shortfalls = {
        name: days_of(m.shortfall_times, bursts=demand.bursts, day_seconds=PLAN.day_seconds)
        for name, m in measured.items()
    }
    simulated_shortfalls = {
        name: days_of(o.shortfalls, bursts=demand.bursts, day_seconds=PLAN.day_seconds)
        for name, o in simulated.items()
    }
    rows = []
    for name in MODES:
        m, o = measured[name], simulated[name]
        rows += [
            (f"{name}: recordings", str(m.recordings), str(o.recordings)),
            (
                f"{name}: shortfalls day 1, day 2",
                ", ".join(map(str, shortfalls[name])),
                ", ".join(map(str, simulated_shortfalls[name])),
            ),
            (
                f"{name}: replicas raised before the 2nd cluster (s)",
                whole(rises[name].raised),
                whole(simulated_rises[name].raised),
            ),
            (
                f"{name}: Ready spares at the 2nd cluster",
                str(rises[name].ready),
                str(simulated_rises[name].ready),
            ),
            (
                f"{name}: idle pod-minutes",
                f"{m.idle_pod_minutes:.1f}",
                f"{o.idle_pod_hours * 60:.1f}",
            ),
            (
                f"{name}: peak replicas",
                str(m.peak_replicas),
                str(max(s.replicas for s in o.samples)),
            ),
        ]
    stored = (await get_pool(e2e, "apply"))["status"]
    history = decode(stored["startHistory"])
    print(
        f"\n{demand.source}; time zone {zone}; clusters at {first:.1f} s and {second:.1f} s "
        f"after the start; failover from {old_leader.name} to {new_leader.name}\n"
        f"{forecast_table(rows)}"
        f"stored history: {len(stored['startHistory'])} bytes, {history.starts} starts, "
        f"{stored['forecast']['historyDays']} whole days; "
        f"{sum(m.late_starts for m in measured.values())} starts sent late; "
        f"{time.monotonic() - began:.0f} s in all"
    )

    # The first day had no history: the cluster found only the minSpare spares.
    for name in MODES:
        assert shortfalls[name][0] >= PLAN.cluster_size - PLAN.min_spare - 1, rows
    # The second day the apply pool raised its replicas before the cluster, from its
    # forecast, and had a spare Ready for each recording.
    rise = rises["apply"]
    assert rise.raised is not None, rows
    assert rise.raised >= 5.0, rows
    said = timelines["apply"].at(second - rise.raised + 2.0)
    assert said.get("bound") == "forecast", said
    assert said["forecast"]["basis"] == "History", said
    assert rise.ready >= PLAN.cluster_size, rows
    assert shortfalls["apply"][1] == 0, rows
    # The recommend pool wrote nothing before the cluster, but said what it would set.
    window = (second - 0.3 * PLAN.day_seconds, second)
    assert rises["recommend"].raised is None, rows
    writes = scale_writes_to(e2e, "recommend", origin)
    assert not [t for t in writes if window[0] <= t < window[1]], writes
    recommended = [
        status
        for t, status in timelines["recommend"].points
        if window[0] <= t < window[1]
        and (status.get("forecast") or {}).get("recommendedSpare", 0) > PLAN.min_spare
    ]
    assert recommended, timelines["recommend"].points[-1]
    assert all(s["desiredSpare"] == PLAN.min_spare for s in recommended), recommended
    assert all(s["forecast"]["mode"] == "Recommend" for s in recommended), recommended
    assert shortfalls["recommend"][1] >= 1, rows
    # The leader that shut down stored the history first; its successor went on from it.
    assert any(line.get("msg") == "forecast history stored" for line in old_leader.log_lines())
    assert history.starts >= 2 * PLAN.min_spare
    # The simulation tells the same story.
    sim = simulated_rises["apply"]
    assert sim.raised is not None, rows
    assert abs(rise.raised - sim.raised) <= 5.0, rows
    assert simulated_rises["recommend"].raised is None, rows
    for name in MODES:
        idle = simulated[name].idle_pod_hours * 60
        assert idle / 2 <= measured[name].idle_pod_minutes <= idle * 2, rows


async def _equals(count: Any, wanted: int) -> bool:
    value: int = await count
    return value == wanted
