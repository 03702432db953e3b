"""The fake kubelet ends a container as a kubelet does (deploy/jibri's preStop hook, SIGTERM,
SIGKILL at the grace period's end) and restarts one whose process exited by itself (not Ready
meanwhile, a back-off, restartCount one higher), against the real control plane."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client import ApiClient, AppsV1Api, CoreV1Api, V1DeleteOptions

from testbed.cluster import jibri_lifecycle
from testbed.kubelet import KubeletThread, in_pod
from testbed.observing import wait_until
from tests.testbed.test_controlplane import (  # the module's control plane and kubelet
    api,
    deployment,
    is_ready,
    kubelet,
    list_pods,
    namespace,
    plane,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

__all__ = ["api", "kubelet", "namespace", "plane"]

JIBRI_PORT = 2222
INTERNAL_PORT = 3333


def test_exec_hooks_reach_the_pods_own_address() -> None:
    hook = jibri_lifecycle()["preStop"]["exec"]["command"]
    script = in_pod(hook[2], "127.9.0.7")
    assert "http://127.9.0.7:3333/jibri/api/internal/v1.0/gracefulShutdown" in script
    assert "http://127.9.0.7:3333/;" in script  # waits on the internal API
    assert "127.0.0.1" not in script
    assert in_pod("curl localhost:2222 127.0.0.10", "127.9.0.7") == (
        "curl 127.9.0.7:2222 127.0.0.10"
    )


def with_hook(replicas: int, grace: int) -> dict[str, Any]:
    doc = deployment(replicas, SIM_JIBRI_EXIT_DELAY="0.2")
    spec = doc["spec"]["template"]["spec"]
    spec["terminationGracePeriodSeconds"] = grace
    spec["containers"][0]["lifecycle"] = jibri_lifecycle()
    return doc


async def one_ready_pod(api: ApiClient, namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
    await AppsV1Api(api).create_namespaced_deployment(namespace, doc)

    async def ready() -> dict[str, Any] | None:
        pods = [p for p in await list_pods(api, namespace) if is_ready(p)]
        return pods[0] if len(pods) == 1 else None

    return await wait_until(ready, timeout=60, what="a Ready pod")


async def busy_status(ip: str) -> str | None:
    """The Jibri's busyStatus, or None when its API does not answer."""
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


async def post(ip: str, port: int, path: str, body: dict[str, Any] | None = None) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://{ip}:{port}{path}", json=body or {}, timeout=aiohttp.ClientTimeout(total=5)
        ) as response,
    ):
        return response.status


async def gone(api: ApiClient, namespace: str, name: str) -> bool:
    return all(p["metadata"]["name"] != name for p in await list_pods(api, namespace))


async def test_a_deleted_pod_lets_its_recording_finish(
    api: ApiClient, namespace: str, kubelet: KubeletThread
) -> None:
    """Deleted while recording: the preStop hook asks Jibri to shut down gracefully and waits;
    the recording goes on until it ends, then Jibri exits and the pod goes."""
    pod = await one_ready_pod(api, namespace, with_hook(1, grace=120))
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    assert await post(ip, JIBRI_PORT, "/jibri/api/v1.0/startService", {"sessionId": "s"}) == 200
    await CoreV1Api(api).delete_namespaced_pod(name, namespace)
    await asyncio.sleep(3)
    assert not await gone(api, namespace, name)  # held by its hook
    assert await busy_status(ip) == "BUSY"  # still recording
    ended = time.monotonic()
    assert await post(ip, JIBRI_PORT, "/jibri/api/v1.0/stopService") == 200
    await wait_until(lambda: gone(api, namespace, name), timeout=30, what="the pod to go")
    took = time.monotonic() - ended
    assert took < 10, took  # the hook's poll (2 s) and the exit, not the grace period
    print(f"\nrecording end -> pod gone: {took:.1f} s")


@pytest.mark.parametrize("health", ["hang", "garbage", "blackhole"])
async def test_a_health_api_gone_wrong_does_not_end_the_wait_for_a_recording(
    api: ApiClient, namespace: str, kubelet: KubeletThread, health: str
) -> None:
    """The hook waits for Jibri to exit, not for its health API to fail: a recording pod
    deleted while its health API hangs, answers garbage or swallows connections still records
    to its end (a hook that polled the health API let SIGTERM kill it at once)."""
    pod = await one_ready_pod(api, namespace, with_hook(1, grace=120))
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    assert await post(ip, JIBRI_PORT, "/jibri/api/v1.0/startService", {"sessionId": "s"}) == 200
    jibri = kubelet.jibri(name, namespace)
    kubelet.call(jibri.set_health_mode(health))
    await CoreV1Api(api).delete_namespaced_pod(name, namespace)
    await asyncio.sleep(8)  # a few of the hook's polls
    assert not await gone(api, namespace, name)  # held by its hook
    assert jibri.busy_status.value == "BUSY"  # still recording
    kubelet.call(jibri.stop_recording())
    await wait_until(lambda: gone(api, namespace, name), timeout=30, what="the pod to go")


async def test_a_terminating_pods_crashed_jibri_is_not_restarted_and_the_pod_goes(
    api: ApiClient, namespace: str, kubelet: KubeletThread
) -> None:
    """A kubelet restarts no container of a terminating pod: a Jibri that crashes while its
    pod's hook waits for the recording stays dead, and the pod goes at once (not at the end
    of its grace period, still held by a restarted, idle Jibri)."""
    pod = await one_ready_pod(api, namespace, with_hook(1, grace=120))
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    assert await post(ip, JIBRI_PORT, "/jibri/api/v1.0/startService", {"sessionId": "s"}) == 200
    jibri = kubelet.jibri(name, namespace)
    await CoreV1Api(api).delete_namespaced_pod(name, namespace)
    await asyncio.sleep(3)
    assert not await gone(api, namespace, name)  # held by its hook
    crashed = time.monotonic()
    kubelet.call(jibri.crash())
    await wait_until(lambda: gone(api, namespace, name), timeout=30, what="the pod to go")
    assert time.monotonic() - crashed < 15
    assert jibri.restart_count == 0
    assert [s for _, s in jibri.history][-2:] == ["CRASH", "EXIT"]


async def test_the_grace_period_ends_a_recording_that_outlasts_it(
    api: ApiClient, namespace: str, kubelet: KubeletThread
) -> None:
    pod = await one_ready_pod(api, namespace, with_hook(1, grace=3))
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    assert await post(ip, JIBRI_PORT, "/jibri/api/v1.0/startService", {"sessionId": "s"}) == 200
    started = time.monotonic()
    await CoreV1Api(api).delete_namespaced_pod(name, namespace)
    await wait_until(lambda: gone(api, namespace, name), timeout=30, what="the pod to go")
    took = time.monotonic() - started
    assert 3 <= took < 12, took  # the hook's 3 s, then SIGTERM (at least 2 s more allowed)
    assert await busy_status(ip) is None


async def test_the_deletions_grace_period_wins_over_the_pods(
    api: ApiClient, namespace: str, kubelet: KubeletThread
) -> None:
    """`kubectl delete --grace-period=3` of a pod whose own grace period is 120 s: the
    recording is ended after 3 s (deletionGracePeriodSeconds), not 120."""
    pod = await one_ready_pod(api, namespace, with_hook(1, grace=120))
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    assert await post(ip, JIBRI_PORT, "/jibri/api/v1.0/startService", {"sessionId": "s"}) == 200
    started = time.monotonic()
    await CoreV1Api(api).delete_namespaced_pod(
        name, namespace, body=V1DeleteOptions(grace_period_seconds=3)
    )
    await wait_until(lambda: gone(api, namespace, name), timeout=30, what="the pod to go")
    assert 3 <= time.monotonic() - started < 12


async def test_an_idle_pod_goes_at_once_and_a_forced_delete_skips_the_hook(
    api: ApiClient, namespace: str, kubelet: KubeletThread
) -> None:
    await AppsV1Api(api).create_namespaced_deployment(namespace, with_hook(2, grace=120))
    pod, _ = await wait_until(lambda: _ready(api, namespace, 2), timeout=60, what="two Ready pods")
    name = pod["metadata"]["name"]
    started = time.monotonic()
    await CoreV1Api(api).delete_namespaced_pod(name, namespace)
    await wait_until(lambda: gone(api, namespace, name), timeout=30, what="the idle pod to go")
    assert time.monotonic() - started < 8

    pods = await wait_until(
        lambda: _ready(api, namespace, 2), timeout=60, what="two Ready pods again"
    )
    busy = pods[0]
    ip = busy["status"]["podIP"]
    assert await post(ip, JIBRI_PORT, "/jibri/api/v1.0/startService", {"sessionId": "s"}) == 200
    await CoreV1Api(api).delete_namespaced_pod(busy["metadata"]["name"], namespace)
    await asyncio.sleep(1)
    assert await busy_status(ip) == "BUSY"
    await CoreV1Api(api).delete_namespaced_pod(
        busy["metadata"]["name"], namespace, body=V1DeleteOptions(grace_period_seconds=0)
    )

    async def stopped() -> bool:
        return await busy_status(ip) is None

    await wait_until(stopped, timeout=10, what="the forced delete to stop the Jibri")


async def _ready(api: ApiClient, namespace: str, n: int) -> list[dict[str, Any]] | None:
    pods = [p for p in await list_pods(api, namespace) if is_ready(p)]
    return pods if len(pods) == n else None


async def test_an_exited_jibri_is_restarted_after_a_back_off(
    api: ApiClient, namespace: str, kubelet: KubeletThread
) -> None:
    """A graceful shutdown asked of a spare (as a pool's scale-down does) ends its process
    with 255: the pod turns not Ready with the exit in lastState, and is restarted after the
    kubelet's 10 s back-off with a fresh, IDLE Jibri."""
    pod = await one_ready_pod(api, namespace, with_hook(1, grace=30))
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    path = "/jibri/api/internal/v1.0/gracefulShutdown"
    assert await post(ip, INTERNAL_PORT, path) == 200
    asked = time.monotonic()

    async def exited() -> dict[str, Any] | None:
        (current,) = await list_pods(api, namespace)
        (container,) = current["status"]["containerStatuses"]
        return current if "waiting" in container["state"] else None

    down = await wait_until(exited, timeout=15, what="the container to exit")
    (container,) = down["status"]["containerStatuses"]
    assert not is_ready(down)
    assert container["lastState"]["terminated"]["exitCode"] == 255
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert container["restartCount"] == 0
    assert down["metadata"]["name"] == name

    async def restarted() -> dict[str, Any] | None:
        (current,) = await list_pods(api, namespace)
        (container,) = current["status"]["containerStatuses"]
        return current if container["restartCount"] == 1 and is_ready(current) else None

    up = await wait_until(restarted, timeout=40, what="the restart")
    assert time.monotonic() - asked >= 10  # the back-off
    assert up["status"]["podIP"] == ip
    assert await busy_status(ip) == "IDLE"


async def test_a_crash_looping_container_stays_not_ready_and_silent(
    api: ApiClient, namespace: str, kubelet: KubeletThread
) -> None:
    pod = await one_ready_pod(api, namespace, with_hook(1, grace=30))
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    kubelet.crash_loop(name, namespace)

    async def looping() -> dict[str, Any] | None:
        (current,) = await list_pods(api, namespace)
        (container,) = current["status"]["containerStatuses"]
        return current if container["restartCount"] >= 1 else None

    current = await wait_until(looping, timeout=30, what="a restart that died at once")
    (container,) = current["status"]["containerStatuses"]
    assert not is_ready(current)
    assert current["status"]["phase"] == "Running"
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert container["lastState"]["terminated"]["exitCode"] == 1
    assert await busy_status(ip) is None
