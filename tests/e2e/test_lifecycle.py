"""Lifecycle against the real control plane: a broken watch, SIGTERM's drain, and a Deployment
whose selector the busy labels do not escape."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s

from testbed.cluster import (
    ControllerProcess,
    apply,
    controller_kubeconfig,
    jibri_deployment,
    start_recording,
    wait_until,
)
from testbed.proxy import Proxy
from tests.e2e.conftest import E2E
from tests.e2e.helpers import get_pod, is_busy, owned_by_replicaset, wait_spares

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

FAST_LEASE = {"LEASE_DURATION": "6", "LEASE_RENEW_DEADLINE": "4", "LEASE_RETRY_PERIOD": "1"}


def through(proxy: Proxy, kubeconfig: Path, target: Path) -> Path:
    """A copy of ``kubeconfig`` that reaches the API server through ``proxy``."""
    config = json.loads(kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = proxy.url
    target.write_text(json.dumps(config))
    return target


async def test_a_broken_watch_unsyncs_the_cache_and_no_sweep_counts_as_healthy(
    e2e: E2E, tmp_path: Path
) -> None:
    server = e2e.plane.server.removeprefix("https://")
    host, _, port = server.rpartition(":")
    proxy = await Proxy(target_host=host, target_port=int(port)).start()
    controller = ControllerProcess(
        name="controller-a",
        kubeconfig=through(
            proxy, controller_kubeconfig(e2e.plane, e2e.namespace), tmp_path / "via-proxy.json"
        ),
        namespace=e2e.namespace,
        log_path=tmp_path / "controller-a.log",
        env={
            "WEBHOOK_AUTH": "none",
            "SWEEP_INTERVAL": "1",
            "LOG_LEVEL": "debug",
            **FAST_LEASE,
        },
    ).start()
    try:
        await controller.wait_ready()
        await e2e.deploy_jibris([controller], replicas=2, signed=False)

        def synced() -> float:
            return controller.metric("jibri_pod_controller_pod_cache_synced")

        def stamp() -> float:
            return controller.metric("jibri_pod_controller_last_successful_sweep_timestamp_seconds")

        async def healthy() -> bool:
            return synced() == 1 and stamp() > 0

        await wait_until(healthy, timeout=30, what="a synced cache and a successful sweep")

        # The network to the API server fails: the watch breaks, lists fail, renewals fail.
        await proxy.cut()
        metrics_before = controller.metrics()  # the process still serves its own metrics
        assert metrics_before

        async def unsynced() -> bool:
            return synced() == 0

        await wait_until(unsynced, timeout=15, what="the cache unsynced after the watch broke")
        frozen = stamp()

        async def sweeps_failed_or_leadership_lost() -> bool:
            failed = controller.metric("jibri_pod_controller_sweeps_total", result="failed")
            return failed >= 2 or controller.metric("jibri_pod_controller_leader") == 0

        await wait_until(sweeps_failed_or_leadership_lost, timeout=20, what="failing sweeps")

        async def not_leading() -> bool:
            return controller.metric("jibri_pod_controller_leader") == 0

        await wait_until(not_leading, timeout=20, what="leadership lost within the deadline")
        # However long the cache held its last view of the pods, no sweep counted as healthy.
        assert stamp() == frozen
        assert synced() == 0

        await proxy.restore()

        async def recovered() -> bool:
            return synced() == 1 and stamp() > frozen

        await wait_until(recovered, timeout=60, what="a fresh list, a live watch, a sweep")
    finally:
        controller.stop()
        await proxy.close()
        print(f"\n--- controller (last lines) ---\n{controller.tail(30)}")


async def test_sigterm_stays_serving_while_not_ready_then_exits(e2e: E2E) -> None:
    controller = await e2e.ready(SHUTDOWN_DRAIN_SECONDS="4", SWEEP_INTERVAL="3600")
    pods = await e2e.deploy_jibris([controller], replicas=2)
    target = pods[0]
    controller.signal(signal.SIGTERM)

    async def not_ready() -> bool:
        status, text = controller.get("/readyz")
        return status == 503 and "shutting down" in text

    await wait_until(not_ready, timeout=5, interval=0.05, what="not ready right after SIGTERM")
    # Endpoints still route here for a few seconds: a webhook sent now is still served.
    assert await start_recording(target.status.pod_ip) == 200

    async def detached() -> bool:
        pod = await get_pod(e2e.admin, e2e.namespace, target.metadata.name)
        return pod is not None and is_busy(pod) and not owned_by_replicaset(pod)

    await wait_until(detached, timeout=10, what="the BUSY sent during the drain detached")
    assert controller.process is not None
    assert controller.process.poll() is None, "still draining"
    assert controller.wait_exit(30) == 0
    assert e2e.writes() == [("patch", target.metadata.name)]
    messages = [str(line.get("msg")) for line in controller.log_lines()]
    assert any(m.startswith("shutting down: not ready; serving for 4s more") for m in messages)
    assert messages.index("released lease") < messages.index("stopped")


async def test_a_detach_that_does_not_leave_the_replica_set_is_reported(e2e: E2E) -> None:
    serving = await e2e.ready("controller-a", SWEEP_INTERVAL="3600")
    # A Jibri Deployment that selects app=jibri only: the busy labels (app=jibri,state=busy)
    # still match it, so relabelling cannot take a pod out.
    deployment = jibri_deployment(
        namespace=e2e.namespace,
        replicas=2,
        subscribers=[serving.webhook_base()],
        jwt=e2e.keys.jibri,
    )
    deployment["spec"]["selector"] = {"matchLabels": {"app": "jibri"}}
    await apply(e2e.admin, [deployment])
    pods = await wait_spares(e2e.admin, e2e.namespace, 2)

    # A replica starting now finds the Jibri pods' ReplicaSet and reports it at once.
    starting = await e2e.ready("controller-b", SWEEP_INTERVAL="3600")

    def reported(controller: ControllerProcess, where: str) -> float:
        return controller.metric("jibri_pod_controller_detach_ineffective_total", where=where)

    async def reported_at_start_up() -> bool:
        return reported(starting, "startup") == 1

    await wait_until(reported_at_start_up, timeout=15, what="the start-up check's report")

    target = pods[0]
    assert await start_recording(target.status.pod_ip) == 200

    async def reported_after_the_detach() -> bool:
        return reported(serving, "detach") == 1

    await wait_until(reported_after_the_detach, timeout=20, what="the ineffective detach")
    pod = await get_pod(e2e.admin, e2e.namespace, target.metadata.name)
    assert pod is not None
    assert is_busy(pod)  # the labels were written...
    assert owned_by_replicaset(pod)  # ...and the ReplicaSet still owns it
    assert (
        serving.metric("jibri_pod_controller_actions_total", action="detach", result="not-detached")
        == 1
    )
    assert serving.metric("jibri_pod_controller_actions_total", action="detach", result="done") == 0
    lines = [
        (controller.name, line["where"], line["level"])
        for controller in (serving, starting)
        for line in controller.log_lines()
        if "do not take the pod out of its ReplicaSet" in str(line.get("msg"))
    ]
    assert ("controller-b", "startup", "error") in lines
    assert ("controller-a", "detach", "error") in lines

    async def warning_event() -> bool:
        events = await k8s.CoreV1Api(e2e.admin).list_namespaced_event(e2e.namespace)
        return any(
            ev.reason == "JibriNotDetached"
            and ev.type == "Warning"
            and ev.involved_object.name == target.metadata.name
            for ev in events.items
        )

    await wait_until(warning_event, timeout=10, what="a JibriNotDetached Warning Event")
