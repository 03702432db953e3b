"""A pool that never kills a recording, on the real control plane: a spare handed a recording at
the moment of its graceful shutdown keeps it; a scale-down blocked by a crash-looping spare
waits with its condition set and costs one round per period (the controller's calls counted
from the API server's audit log, reads included); a rollout of the Jibri Deployment during a
recording lets the recording finish (deploy/jibri's preStop hook, run by the fake kubelet)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s

from testbed.cluster import (
    BUSY_LABELS,
    JIBRI_PORT,
    ControllerProcess,
    apply,
    jibri_deployment,
    service_account_user,
    start_recording,
    stop_recording,
    wait_until,
)
from testbed.controlplane import READS_AUDITED_GROUP
from tests.e2e.conftest import AUDIENCE, E2E, ISSUER
from tests.e2e.helpers import has, is_ready, labels_of, list_pods
from tests.e2e.test_pools import (
    condition,
    create_pool,
    get_pool,
    patch_pool,
    pool_pods,
    replicas_of,
    scale_writes,
    wait_ready_spares,
    wait_replicas,
    wait_status,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PERIOD = 1.0


@pytest.fixture
def audited(e2e: E2E, crd: None, tmp_path: Path) -> Iterator[list[ControllerProcess]]:
    """Controllers started by `start_audited`, stopped after the test."""
    started: list[ControllerProcess] = []
    yield started
    for process in started:
        process.stop()


async def start_audited(
    e2e: E2E, started: list[ControllerProcess], tmp_path: Path, **env: str
) -> ControllerProcess:
    """A controller whose reads are audited too (its identity also carries
    READS_AUDITED_GROUP, which grants nothing), so that every call it makes can be counted."""
    user = service_account_user(e2e.namespace)
    kubeconfig = e2e.plane.kubeconfig_for(
        user,
        [
            "system:serviceaccounts",
            f"system:serviceaccounts:{e2e.namespace}",
            "system:authenticated",
            READS_AUDITED_GROUP,
        ],
    )
    process = ControllerProcess(
        name="controller-audited",
        kubeconfig=kubeconfig,
        namespace=e2e.namespace,
        log_path=tmp_path / "controller-audited.log",
        env={
            "JWT_KEYS_DIR": str(e2e.keys.directory),
            "JWT_ISSUER": ISSUER,
            "JWT_AUDIENCE": AUDIENCE,
            "LOG_LEVEL": "debug",
            "SHUTDOWN_DRAIN_SECONDS": "0",
            "POOL_RECONCILE_PERIOD": str(PERIOD),
            **env,
        },
    ).start()
    started.append(process)
    await process.wait_ready()
    return process


def calls(e2e: E2E, since: float) -> list[dict[str, Any]]:
    """The controller's API calls (reads and writes) completed after ``since`` (epoch s),
    less the Lease's own traffic (renewals every 2 s, readiness every 5 s)."""
    out = []
    for event in e2e.plane.audit_events(username=e2e.user):
        at = _epoch(event["stageTimestamp"])
        if at >= since and (event.get("objectRef") or {}).get("resource") != "leases":
            out.append(event)
    return out


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def by_kind(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(
        f"{e['verb']} {e['objectRef'].get('resource')}"
        + (f"/{e['objectRef']['subresource']}" if e["objectRef"].get("subresource") else "")
        for e in events
    )


def pool_deployment(e2e: E2E, name: str, replicas: int, **kw: Any) -> dict[str, Any]:
    doc = jibri_deployment(
        namespace=e2e.namespace, replicas=replicas, name=name, jwt=e2e.keys.jibri, **kw
    )
    doc["spec"]["selector"]["matchLabels"]["pool"] = name
    doc["spec"]["template"]["metadata"]["labels"]["pool"] = name
    env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
    env.append({"name": "SIM_JIBRI_EXIT_DELAY", "value": "0.5"})
    return doc


async def busy_status(ip: str) -> str | None:
    url = f"http://{ip}:{JIBRI_PORT}/jibri/api/v1.0/health"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response,
        ):
            status: str = (await response.json())["status"]["busyStatus"]
            return status
    except (aiohttp.ClientError, TimeoutError):
        return None


def deletes_of(e2e: E2E, name: str) -> list[dict[str, Any]]:
    """Every delete of pod ``name`` by anyone (the ReplicaSet included)."""
    return [
        e
        for e in e2e.plane.audit_events(namespace=e2e.namespace)
        if e["verb"] == "delete"
        and (e.get("objectRef") or {}).get("resource") == "pods"
        and e["objectRef"].get("name") == name
    ]


# ---------------------------------------------------------------------------------------------


async def test_a_spare_that_turns_busy_at_the_scale_down_keeps_its_recording(
    pools: E2E,
) -> None:
    """Silent Jibris (no webhooks, no sweep soon). The pool goes from 3 spares to 1: it probes
    the spares (all IDLE) and asks two to shut down gracefully; the first of them is handed a
    recording at that very moment, before the request is handled (as Jicofo would, between
    the probe and the request). Jibri keeps the recording and defers its exit; the pool finds
    it BUSY, detaches it, counts it out, and takes another spare instead."""
    controller = await pools.ready(SWEEP_INTERVAL="3600", POOL_RECONCILE_PERIOD=str(PERIOD))
    await apply(pools.admin, [pool_deployment(pools, "rec", 3, subscribers=[])])
    spares = await wait_ready_spares(pools, "rec", 3)
    recorded: list[str] = []

    async def record_first(jibri: Any) -> None:
        """Wrap this Jibri's graceful shutdown: the first Jibri asked starts a recording just
        before the request is handled (in the kubelet's loop, where the Jibri lives)."""
        original = jibri.graceful_shutdown

        async def recording_first() -> None:
            if not recorded:
                recorded.append(jibri.config.pod_name)
                assert await jibri.start_recording("at-the-moment")
            await original()

        jibri.graceful_shutdown = recording_first

    for pod in spares:
        jibri = pools.kubelet.jibri(pod.metadata.name, pools.namespace)
        pools.kubelet.call(record_first(jibri))
    await create_pool(
        pools,
        "rec",
        {"deploymentName": "rec", "minSpare": 3, "maxSpare": 5, "scaleDownDelaySeconds": 0},
    )
    await wait_status(pools, "rec", spare=3, desiredSpare=3)
    lowered = time.monotonic()
    await patch_pool(pools, "rec", {"minSpare": 1})
    await wait_replicas(pools, "rec", 1, timeout=30)

    async def settled() -> tuple[list[k8s.V1Pod], list[k8s.V1Pod]] | None:
        idle, busy = await pool_pods(pools, "rec")
        return (idle, busy) if len(idle) == 1 and len(busy) == 1 and is_ready(idle[0]) else None

    _, busy = await wait_until(settled, timeout=60, what="one spare and one recording")
    took = time.monotonic() - lowered
    [name] = recorded
    assert busy[0].metadata.name == name
    assert (busy[0].metadata.annotations or {})["jibri-pod-controller/detached-from"] == "rec"
    assert await busy_status(busy[0].status.pod_ip) == "BUSY"  # still recording
    assert deletes_of(pools, name) == []  # nobody, the ReplicaSet included, deleted it
    pool = await wait_status(pools, "rec", busy=1, spare=1, replicas=1)
    assert condition(pool, "GracefulScaleDown")["status"] == "True"
    assert condition(pool, "ScaleDownBlocked")["status"] == "False"
    assert controller.metric("jibri_pod_controller_pool_spares_found_busy_total", pool="rec") == 1
    asked = controller.metric(
        "jibri_pod_controller_pool_graceful_shutdowns_total", pool="rec", result="accepted"
    )
    assert asked >= 2
    # The detach came before any lower count reached the ReplicaSet.
    ours = pools.plane.audit_events(username=pools.user, namespace=pools.namespace)
    detach = next(
        i
        for i, e in enumerate(ours)
        if e["objectRef"].get("name") == name
        and e["verb"] == "patch"
        and e["objectRef"].get("subresource") is None
    )
    first_scale = next(
        i for i, e in enumerate(ours) if e["objectRef"].get("subresource") == "scale"
    )
    assert detach < first_scale
    assert len(scale_writes(pools)) == 1  # 3 -> 1 in one write
    print(f"\nlower target -> scaled and the spares gone: {took:.1f} s; {asked:g} asked")


async def test_the_replica_set_takes_exactly_the_spares_that_shut_down(pools: E2E) -> None:
    """5 spares to 2, with deploy/jibri's preStop hook: the three spares asked to shut down
    are the three the ReplicaSet deletes (the others keep running, never restarted), in one
    scale write; the time from the lower target to the pods gone is printed."""
    controller = await pools.ready(POOL_RECONCILE_PERIOD=str(PERIOD))
    doc = pool_deployment(
        pools, "rec", 5, subscribers=[controller.webhook_base()], pre_stop=True, grace_seconds=60
    )
    await apply(pools.admin, [doc])
    before = await wait_ready_spares(pools, "rec", 5)
    await create_pool(
        pools,
        "rec",
        {"deploymentName": "rec", "minSpare": 5, "maxSpare": 5, "scaleDownDelaySeconds": 0},
    )
    await wait_status(pools, "rec", spare=5, desiredSpare=5)
    lowered = time.time()
    await patch_pool(pools, "rec", {"minSpare": 2})

    async def two_left() -> list[k8s.V1Pod] | None:
        pods = [p for p in await list_pods(pools.admin, pools.namespace)]
        return pods if len(pods) == 2 else None

    left = await wait_until(two_left, timeout=60, what="the three spares gone")
    gone_at = time.time()
    asked = [
        name
        for line in controller.log_lines()
        if line.get("msg", "").startswith("asked ")
        for name, outcome in (line.get("pods") or {}).items()
        if outcome == "accepted"
    ]
    deleted = {p.metadata.name for p in before} - {p.metadata.name for p in left}
    assert sorted(asked) == sorted(deleted), (asked, deleted)
    for pod in left:
        assert is_ready(pod)
        assert pod.status.container_statuses[0].restart_count == 0
    [scale] = scale_writes(pools)
    scaled_at = _epoch(scale["stageTimestamp"])
    print(
        f"\nlower target -> scale write {scaled_at - lowered:.2f} s (a {PERIOD:g} s period, "
        f"a probe, the shutdowns asked and confirmed) -> pods gone {gone_at - scaled_at:.2f} s "
        f"(the ReplicaSet's deletes, the preStop hooks, the kubelet); "
        f"{gone_at - lowered:.2f} s in all"
    )


async def test_a_scale_down_blocked_by_a_crash_looping_spare_waits_without_a_spin(
    pools: E2E, audited: list[ControllerProcess], tmp_path: Path
) -> None:
    """A spare whose container crash-loops (Running, not Ready, its API refusing) is the
    ReplicaSet's first pick: the scale-down waits, with ScaleDownBlocked naming it, a metric
    and one Event, and costs one round per period, as at steady state (the audit log)."""
    controller = await start_audited(pools, audited, tmp_path, SWEEP_INTERVAL="3600")
    await apply(
        pools.admin,
        [pool_deployment(pools, "rec", 3, subscribers=[controller.webhook_base()])],
    )
    spares = await wait_ready_spares(pools, "rec", 3)
    await create_pool(
        pools,
        "rec",
        {"deploymentName": "rec", "minSpare": 3, "maxSpare": 5, "scaleDownDelaySeconds": 0},
    )
    await wait_status(pools, "rec", spare=3, desiredSpare=3)
    await asyncio.sleep(2 * PERIOD)
    window = 8.0
    began = time.time()
    await asyncio.sleep(window)
    steady = calls(pools, began)

    looping = spares[0].metadata.name
    pools.kubelet.crash_loop(looping, pools.namespace)

    async def not_ready() -> bool:
        pods = {p.metadata.name: p for p in await list_pods(pools.admin, pools.namespace)}
        return not is_ready(pods[looping])

    await wait_until(not_ready, timeout=20, what="the crash-looping spare not Ready")
    await patch_pool(pools, "rec", {"minSpare": 1})

    async def blocked() -> dict[str, Any] | None:
        pool = await get_pool(pools, "rec")
        try:
            held = condition(pool, "ScaleDownBlocked")
        except AssertionError:
            return None
        return pool if held["status"] == "True" else None

    pool = await wait_until(blocked, timeout=20, what="ScaleDownBlocked")
    held = condition(pool, "ScaleDownBlocked")
    assert held["reason"] == "SpareNotAnswering"
    assert looping in held["message"]
    began = time.time()
    await asyncio.sleep(window)
    waiting = calls(pools, began)
    assert await replicas_of(pools, "rec") == 3
    assert scale_writes(pools) == []
    _, busy = await pool_pods(pools, "rec")
    assert busy == []
    assert (
        controller.metric(
            "jibri_pod_controller_pool_scale_down_blocked", pool="rec", reason="SpareNotAnswering"
        )
        == 1
    )
    events = await k8s.CoreV1Api(pools.admin).list_namespaced_event(
        pools.namespace, field_selector="involvedObject.kind=JibriPool"
    )
    assert [e.reason for e in events.items].count("ScaleDownBlocked") == 1
    rounds = window / PERIOD
    per_round_steady = len(steady) / rounds
    per_round_blocked = len(waiting) / rounds
    print(
        f"\nAPI calls per pool round ({PERIOD:g} s period, {window:g} s windows, leases "
        f"excluded): steady {per_round_steady:.2f} {dict(by_kind(steady))}; "
        f"blocked {per_round_blocked:.2f} {dict(by_kind(waiting))}"
    )
    # A spin (a round every 0.05 s) would be 20 times the steady state.
    assert per_round_blocked <= per_round_steady + 1, (steady, waiting)
    assert not [e for e in waiting if e["verb"] not in ("get", "list", "watch")]


async def test_a_rollout_during_a_recording_lets_the_recording_finish(pools: E2E) -> None:
    """The Jibri Deployment (deploy/jibri's preStop hook, a long grace period) is rolled out
    while a spare records, its BUSY webhook not landed yet. The rollout deletes that pod; its
    hook asks Jibri to shut down gracefully and waits: the recording goes on until it ends,
    the pod is never killed, and the controller writes nothing to it (its BUSY from the
    terminating pod is answered 200)."""
    controller = await pools.ready(SWEEP_INTERVAL="3600", POOL_RECONCILE_PERIOD=str(PERIOD))
    doc = pool_deployment(
        pools, "rec", 2, subscribers=[controller.webhook_base()], pre_stop=True, grace_seconds=120
    )
    await apply(pools.admin, [doc])
    spares = await wait_ready_spares(pools, "rec", 2)
    await create_pool(pools, "rec", {"deploymentName": "rec", "minSpare": 2, "maxSpare": 4})
    await wait_status(pools, "rec", spare=2, desiredSpare=2)
    recording = spares[0]
    name, ip = recording.metadata.name, recording.status.pod_ip
    jibri = pools.kubelet.jibri(name, pools.namespace)
    pools.kubelet.call(_silence(jibri))  # its BUSY webhook is lost
    assert await start_recording(ip, session_id="long") == 200

    # The rollout: a new pod template.
    await k8s.AppsV1Api(pools.admin).patch_namespaced_deployment(
        "rec",
        pools.namespace,
        {"spec": {"template": {"metadata": {"annotations": {"rollout": "2"}}}}},
    )

    async def terminating() -> k8s.V1Pod | None:
        pods = {p.metadata.name: p for p in await list_pods(pools.admin, pools.namespace)}
        pod = pods.get(name)
        return pod if pod is not None and pod.metadata.deletion_timestamp is not None else None

    pod = await wait_until(terminating, timeout=60, what="the rollout to delete the recording pod")
    assert has(labels_of(pod), {"state": "idle"})  # never detached: its BUSY was lost
    await asyncio.sleep(5)
    assert await busy_status(ip) == "BUSY"
    assert await terminating() is not None  # held by its preStop hook
    # Its Jibri speaks again: a BUSY from a terminating pod, answered 200, no write.
    pools.kubelet.call(_speak(jibri))

    async def answered() -> bool:
        return any(
            line.get("msg") == "webhook" and line.get("pod") == name and line.get("code") == 200
            for line in controller.log_lines()
        )

    await wait_until(answered, timeout=20, what="the webhook from the terminating pod")
    ended = time.monotonic()
    assert await stop_recording(ip) == 200

    async def gone() -> bool:
        return name not in {p.metadata.name for p in await list_pods(pools.admin, pools.namespace)}

    await wait_until(gone, timeout=60, what="the pod to go once its recording ended")
    print(f"\nrecording end -> pod gone (rollout): {time.monotonic() - ended:.1f} s")
    writes = [
        (e["verb"], e["objectRef"].get("subresource"))
        for e in pools.plane.audit_events(username=pools.user, namespace=pools.namespace)
        if e["objectRef"].get("name") == name
    ]
    assert writes == [], writes
    # The new ReplicaSet's pods are the spares now.
    await wait_ready_spares(pools, "rec", 2, timeout=60)
    _, busy = await pool_pods(pools, "rec")
    assert busy == []
    assert not has(labels_of(pod), BUSY_LABELS)


async def _silence(jibri: Any) -> None:
    jibri.set_webhooks_enabled(False)


async def _speak(jibri: Any) -> None:
    jibri.set_webhooks_enabled(True)
    jibri.send_status()


@pytest.fixture
async def pools(e2e: E2E, crd: None) -> E2E:
    return e2e
