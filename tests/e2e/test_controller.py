"""The controller against a real control plane, simulated Jibris speaking the real protocol, and
its own restricted identity bound by deploy/'s Role (so a missing permission fails a test)."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from kubernetes_asyncio import client as k8s

from testbed.cluster import (
    ControllerProcess,
    apply,
    jibri_call,
    pod_write_events,
    rbac_manifests,
    start_recording,
    stop_recording,
    wait_until,
)
from testbed.controlplane import ControlPlane
from testbed.kubelet import KubeletThread
from tests.e2e.conftest import E2E, ControllerFactory
from tests.e2e.helpers import (
    busy_pods,
    get_pod,
    has,
    is_busy,
    labels_of,
    list_pods,
    owned_by_replicaset,
    post_webhook,
    sign,
    spares,
    status_body,
    wait_spares,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SPARES = 3


def pod_ip(pod: k8s.V1Pod) -> str:
    ip: str = pod.status.pod_ip
    return ip


async def wait_detached(admin: k8s.ApiClient, namespace: str, name: str) -> k8s.V1Pod:
    async def detached() -> k8s.V1Pod | None:
        pod = await get_pod(admin, namespace, name)
        ok = pod is not None and is_busy(pod) and not owned_by_replicaset(pod)
        return pod if ok else None

    return await wait_until(detached, timeout=20, what=f"{name} detached")


async def wait_gone(admin: k8s.ApiClient, namespace: str, name: str, timeout: float = 20) -> None:
    async def gone() -> bool:
        return await get_pod(admin, namespace, name) is None

    await wait_until(gone, timeout=timeout, what=f"{name} deleted")


async def test_recording_start_detaches_and_replaces(
    e2e: E2E,
) -> None:
    controller = await e2e.ready()
    pods = await e2e.deploy_jibris([controller])
    target = pods[0]

    assert await start_recording(pod_ip(target)) == 200
    detached = await wait_detached(e2e.admin, e2e.namespace, target.metadata.name)

    assert detached.metadata.uid == target.metadata.uid
    assert has(labels_of(detached), {"app": "jibri", "state": "busy"})
    annotations = detached.metadata.annotations or {}
    assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    assert annotations["jibri-pod-controller/restarts-at-busy"] == "0"

    async def back_to_n() -> bool:
        current = await spares(e2e.admin, e2e.namespace)
        names = {p.metadata.name for p in current}
        return len(current) == SPARES and target.metadata.name not in names

    await wait_until(back_to_n, timeout=30, what="N ready spares again")
    assert len(await list_pods(e2e.admin, e2e.namespace)) == SPARES + 1
    assert e2e.writes() == [("patch", target.metadata.name)]

    async def event_recorded() -> bool:
        events = await k8s.CoreV1Api(e2e.admin).list_namespaced_event(e2e.namespace)
        return any(
            ev.reason == "JibriDetached"
            and ev.involved_object.name == target.metadata.name
            and ev.involved_object.uid == target.metadata.uid
            and ev.source.component == "jibri-pod-controller"
            for ev in events.items
        )

    await wait_until(event_recorded, timeout=10, what="a JibriDetached Event on the pod")
    assert (
        controller.metric("jibri_pod_controller_actions_total", action="detach", result="done") == 1
    )


async def test_recording_end_deletes_and_spares_never_drop(
    e2e: E2E,
) -> None:
    controller = await e2e.ready()
    target = (await e2e.deploy_jibris([controller]))[0]
    name = target.metadata.name
    assert await start_recording(pod_ip(target)) == 200
    await wait_detached(e2e.admin, e2e.namespace, name)
    await wait_spares(e2e.admin, e2e.namespace, SPARES, timeout=30)

    lowest = SPARES
    stop_watching = asyncio.Event()

    async def watch_spares() -> None:
        nonlocal lowest
        while not stop_watching.is_set():
            lowest = min(lowest, len(await spares(e2e.admin, e2e.namespace)))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_spares())
    assert await stop_recording(pod_ip(target)) == 200
    await wait_gone(e2e.admin, e2e.namespace, name)
    await asyncio.sleep(1)
    stop_watching.set()
    await watcher

    assert lowest >= SPARES
    assert e2e.writes() == [("patch", name), ("delete", name)]
    deleted = [
        e
        for e in pod_write_events(e2e.plane, namespace=e2e.namespace, username=e2e.user)
        if e["verb"] == "delete"
    ]
    assert deleted[0]["objectRef"]["name"] == name


async def test_many_recordings_at_once(
    e2e: E2E,
) -> None:
    k = 20
    controller = await e2e.ready()
    pods = await e2e.deploy_jibris([controller], replicas=k, status_period=2)
    names = {p.metadata.name for p in pods}

    results = await asyncio.gather(*(start_recording(pod_ip(p)) for p in pods))
    assert results == [200] * k

    async def all_detached() -> bool:
        return {p.metadata.name for p in await busy_pods(e2e.admin, e2e.namespace)} == names

    await wait_until(all_detached, timeout=60, what=f"{k} pods detached")
    await wait_spares(e2e.admin, e2e.namespace, k, timeout=90)
    # Each Jibri resends BUSY every 2 s: several rounds must cause no further write.
    await asyncio.sleep(5)
    assert len(await list_pods(e2e.admin, e2e.namespace)) == 2 * k
    writes = e2e.writes()
    assert sorted(writes) == sorted(("patch", n) for n in names)
    resent = controller.metric("jibri_pod_controller_actions_total", reason="already-detached")
    assert resent >= k


async def test_sweeper_catches_missed_webhooks(
    e2e: E2E,
) -> None:
    controller = await e2e.ready()
    target = (await e2e.deploy_jibris([controller]))[0]
    name, ip = target.metadata.name, pod_ip(target)
    assert await jibri_call(ip, "/_sim/webhooks", {"enabled": False}) == 200

    assert await start_recording(ip) == 200
    await wait_detached(e2e.admin, e2e.namespace, name)
    assert await stop_recording(ip) == 200
    await wait_gone(e2e.admin, e2e.namespace, name)

    assert e2e.writes() == [("patch", name), ("delete", name)]
    assert (
        controller.metric(
            "jibri_pod_controller_actions_total", reason="busy-missed-webhook", source="sweep"
        )
        == 1
    )
    assert (
        controller.metric(
            "jibri_pod_controller_actions_total", action="delete", source="sweep", result="done"
        )
        == 1
    )


async def test_duplicate_and_reordered_webhooks(
    e2e: E2E,
) -> None:
    # Two replicas, and no sweeper interference (long interval): only webhooks act here.
    first = await e2e.ready("controller-a", SWEEP_INTERVAL="3600")
    second = await e2e.ready("controller-b", SWEEP_INTERVAL="3600")
    target = (await e2e.deploy_jibris([first]))[0]
    name, ip = target.metadata.name, pod_ip(target)
    # Silence the simulated Jibri: this test sends its webhooks itself, in a chosen order.
    assert await jibri_call(ip, "/_sim/webhooks", {"enabled": False}) == 200
    token = sign(e2e.keys.private_key, kid=e2e.keys.jibri.kid, issuer=e2e.keys.jibri.issuer)

    async def send(controller: ControllerProcess, status: str) -> int:
        code, _ = await post_webhook(
            controller, pod=name, source_ip=ip, body=status_body(name, status), token=token
        )
        return code

    # The same BUSY reaching both replicas at once, then again, then a late IDLE.
    assert await asyncio.gather(send(first, "BUSY"), send(second, "BUSY")) == [200, 200]
    assert await send(first, "BUSY") == 200
    assert await send(second, "IDLE") == 200
    pod = await get_pod(e2e.admin, e2e.namespace, name)
    assert pod is not None
    assert is_busy(pod)
    assert not owned_by_replicaset(pod)

    # EXPIRED twice at once, then a late BUSY and IDLE for the pod that is gone.
    codes = await asyncio.gather(send(first, "EXPIRED"), send(second, "EXPIRED"))
    assert codes == [200, 200]
    await wait_gone(e2e.admin, e2e.namespace, name)
    assert await send(first, "BUSY") == 404
    assert await send(second, "IDLE") == 404

    assert e2e.writes() == [("patch", name), ("delete", name)]


async def _sweeps(controller: ControllerProcess) -> float:
    return controller.metric("jibri_pod_controller_sweeps_total")


async def test_leader_election_and_failover(
    e2e: E2E,
) -> None:
    a = await e2e.ready("controller-a")
    await wait_until(lambda: _leads(a), timeout=10, what="a leads")
    b = await e2e.ready("controller-b")
    await e2e.deploy_jibris([a, b])
    await asyncio.sleep(5)  # several sweep intervals
    assert await _sweeps(a) >= 2
    assert await _sweeps(b) == 0

    # SIGKILL: no release; b must take over within the lease duration (15 s) plus one sweep.
    killed_at = time.monotonic()
    a.signal(signal.SIGKILL)
    await wait_until(lambda: _sweeps(b), timeout=15 + 2 + 3, interval=0.1, what="b sweeps")
    takeover = time.monotonic() - killed_at
    assert takeover <= 15 + 2 + 1.5, takeover

    # SIGTERM: b releases the lease on its way out, so c takes over at once.
    c = await e2e.ready("controller-c")
    await asyncio.sleep(3)
    assert await _sweeps(c) == 0
    stopped_at = time.monotonic()
    b.signal(signal.SIGTERM)
    # b gives the Lease up first, then drains (SHUTDOWN_DRAIN_SECONDS) before it exits.
    await wait_until(lambda: _sweeps(c), timeout=10, interval=0.1, what="c sweeps")
    assert time.monotonic() - stopped_at <= 5
    assert b.wait_exit(20) == 0
    assert any(line.get("msg") == "released lease" for line in b.log_lines())


async def _leads(controller: ControllerProcess) -> bool:
    return controller.metric("jibri_pod_controller_leader") == 1


async def test_webhooks_for_other_pods_change_nothing(
    e2e: E2E,
) -> None:
    controller = await e2e.ready()
    await k8s.CoreV1Api(e2e.admin).create_namespaced_pod(
        e2e.namespace,
        {
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        },
    )
    ip = e2e.kubelet.wait_running("web", e2e.namespace)
    token = sign(e2e.keys.private_key, kid=e2e.keys.jibri.kid, issuer=e2e.keys.jibri.issuer)
    for status in ("BUSY", "EXPIRED"):
        code, _ = await post_webhook(
            controller, pod="web", source_ip=ip, body=status_body("web", status), token=token
        )
        assert code == 403
    code, _ = await post_webhook(
        controller, pod="ghost", source_ip=ip, body=status_body("ghost", "BUSY"), token=token
    )
    assert code == 404
    code, _ = await post_webhook(
        controller, pod="ghost", source_ip=ip, body=status_body("ghost", "EXPIRED"), token=token
    )
    assert code == 200
    assert await get_pod(e2e.admin, e2e.namespace, "web") is not None
    assert e2e.writes() == []


async def test_busy_jibri_that_restarts_is_reaped(
    e2e: E2E,
) -> None:
    controller = await e2e.ready()
    target = (await e2e.deploy_jibris([controller]))[0]
    name, ip = target.metadata.name, pod_ip(target)
    assert await start_recording(ip) == 200
    await wait_detached(e2e.admin, e2e.namespace, name)

    assert await jibri_call(ip, "/_sim/crash") == 200
    await wait_gone(e2e.admin, e2e.namespace, name)
    assert (
        controller.metric(
            "jibri_pod_controller_actions_total", reason="restarted-while-busy", result="done"
        )
        == 1
    )
    assert e2e.writes() == [("patch", name), ("delete", name)]


async def test_busy_jibri_that_restarts_is_kept_under_keep_policy(
    e2e: E2E,
) -> None:
    controller = await e2e.ready(RESTARTED_BUSY_POD_POLICY="keep")
    target = (await e2e.deploy_jibris([controller]))[0]
    name, ip = target.metadata.name, pod_ip(target)
    assert await start_recording(ip) == 200
    await wait_detached(e2e.admin, e2e.namespace, name)
    assert await jibri_call(ip, "/_sim/crash") == 200

    async def flagged() -> bool:
        return controller.metric("jibri_pod_controller_actions_total", reason="policy-keep") > 0

    await wait_until(flagged, timeout=15, what="restart noticed and kept")
    assert await get_pod(e2e.admin, e2e.namespace, name) is not None
    assert e2e.writes() == [("patch", name)]


async def test_missing_permission_is_visible(
    admin: k8s.ApiClient,
    namespace: str,
    controllers: ControllerFactory,
    kubelet: KubeletThread,
    plane: ControlPlane,
) -> None:
    docs = rbac_manifests(namespace)
    for doc in docs:
        if doc["kind"] == "Role":
            for rule in doc["rules"]:
                if "pods" in rule["resources"]:
                    rule["verbs"] = [v for v in rule["verbs"] if v != "delete"]
    await apply(admin, docs)
    controller = controllers()

    async def complained() -> bool:
        return any(
            "missing Kubernetes permissions" in str(line.get("msg"))
            and "delete pods" in line.get("missing", [])
            for line in controller.log_lines()
        )

    await wait_until(complained, timeout=20, what="a log line naming the missing permission")
    status, text = controller.get("/readyz")
    assert status == 503
    assert "delete pods" in text
    assert controller.process is not None
    assert controller.process.poll() is None, "a missing permission must not crash the process"
