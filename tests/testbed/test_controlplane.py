"""The testbed itself, against the real binaries: a control plane whose Deployments run pods on
loopback addresses, with simulated Jibris, RBAC and an audit log of every write."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubernetes_asyncio.client import (
    ApiClient,
    AppsV1Api,
    CoreV1Api,
    RbacAuthorizationV1Api,
    V1DeleteOptions,
    V1Preconditions,
)
from kubernetes_asyncio.client.exceptions import ApiException

from testbed.controlplane import ControlPlane
from testbed.kube import new_api_client
from testbed.kubelet import KubeletThread, run_in_thread
from testbed.observing import wait_until

pytestmark = pytest.mark.e2e


IDLE = {"app": "jibri", "state": "idle"}
CONTROLLER = "jibri-pod-controller"
JIBRI_PORT = 2222


def service_account_identity(namespace: str) -> tuple[str, list[str]]:
    return (
        f"system:serviceaccount:{namespace}:{CONTROLLER}",
        ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
    )


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    started = ControlPlane.start()
    try:
        yield started
    finally:
        started.stop(keep_logs_in=tmp_path_factory.mktemp("control-plane-logs"))


@pytest.fixture(scope="module")
def kubelet(plane: ControlPlane) -> Iterator[KubeletThread]:
    with run_in_thread(plane.admin_kubeconfig, None) as running:
        yield running


@pytest.fixture
async def api(plane: ControlPlane) -> AsyncIterator[ApiClient]:
    client = await new_api_client(plane.admin_kubeconfig)
    async with client:
        yield client


@pytest.fixture
async def namespace(api: ApiClient) -> AsyncIterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    await CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    yield name
    await CoreV1Api(api).delete_namespace(name)


def deployment(replicas: int, **extra_env: str) -> dict[str, Any]:
    env = [
        {"name": "SIM_JIBRI", "value": "true"},
        {"name": "SIM_JIBRI_PORT", "value": str(JIBRI_PORT)},
        *({"name": name, "value": value} for name, value in extra_env.items()),
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "jibri"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": IDLE},
            "template": {
                "metadata": {"labels": IDLE},
                "spec": {
                    "containers": [
                        {
                            "name": "jibri",
                            "image": "simulated-jibri",
                            "env": env,
                        }
                    ]
                },
            },
        },
    }


def is_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return status.get("phase") == "Running" and conditions.get("Ready") == "True"


async def list_pods(api: ApiClient, namespace: str) -> list[dict[str, Any]]:
    # Raw JSON: what the API stores, not the client's model of it.
    response = await CoreV1Api(api).list_namespaced_pod(namespace, _preload_content=False)
    async with response:
        items: list[dict[str, Any]] = (await response.json())["items"]
    return items


async def run_deployment(api: ApiClient, namespace: str, replicas: int) -> list[dict[str, Any]]:
    """Create the Jibri Deployment and wait until it is available; return its ready pods."""
    await AppsV1Api(api).create_namespaced_deployment(namespace, deployment(replicas))

    async def available() -> list[dict[str, Any]] | None:
        current = await AppsV1Api(api).read_namespaced_deployment_status("jibri", namespace)
        if (current.status.available_replicas or 0) != replicas:
            return None
        pods = [p for p in await list_pods(api, namespace) if is_ready(p)]
        return pods if len(pods) == replicas else None

    return await wait_until(available, timeout=60, what=f"{replicas} available replicas")


async def health(ip: str, port: int = JIBRI_PORT) -> dict[str, Any]:
    url = f"http://{ip}:{port}/jibri/api/v1.0/health"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def test_deployment_pods_run_on_distinct_loopback_addresses(
    api: ApiClient, namespace: str, kubelet: KubeletThread
) -> None:
    pods = await run_deployment(api, namespace, 3)

    ips = [p["status"]["podIP"] for p in pods]
    assert len(set(ips)) == 3
    for pod, ip in zip(pods, ips, strict=True):
        address = ipaddress.IPv4Address(ip)
        assert address in ipaddress.IPv4Network("127.0.0.0/8")
        assert address not in ipaddress.IPv4Network("127.0.0.0/16")
        assert pod["status"]["podIPs"] == [{"ip": ip}]
        assert kubelet.ip_of(pod["metadata"]["name"], namespace) == ip
        (container,) = pod["status"]["containerStatuses"]
        assert container["name"] == "jibri"
        assert container["ready"] is True
        assert container["restartCount"] == 0
        assert "running" in container["state"]
        answer = await health(ip)
        assert answer["status"]["busyStatus"] == "IDLE"


async def test_a_pod_can_take_its_time_to_become_ready(
    api: ApiClient, namespace: str, kubelet: KubeletThread
) -> None:
    delay = 2.0
    await AppsV1Api(api).create_namespaced_deployment(
        namespace, deployment(1, SIM_READY_DELAY_SECONDS=str(delay))
    )

    async def starting() -> dict[str, Any] | None:
        pods = await list_pods(api, namespace)
        return pods[0] if pods and pods[0].get("status", {}).get("podIP") else None

    pod = await wait_until(starting, timeout=60, what="the pod to get an address")
    if not is_ready(pod):  # seen while starting (a slow API could hide this phase)
        assert pod["status"]["phase"] == "Running"
        (container,) = pod["status"]["containerStatuses"]
        assert container["ready"] is False
    name = pod["metadata"]["name"]

    async def ready() -> dict[str, Any] | None:
        pods = [p for p in await list_pods(api, namespace) if p["metadata"]["name"] == name]
        return pods[0] if pods and is_ready(pods[0]) else None

    pod = await wait_until(ready, timeout=60, what="the pod to turn Ready")
    conditions = {c["type"]: c for c in pod["status"]["conditions"]}
    started = datetime.fromisoformat(pod["status"]["startTime"])
    turned = datetime.fromisoformat(conditions["Ready"]["lastTransitionTime"])
    # Whole seconds in the API: at least the delay, less a second of rounding.
    assert (turned - started).total_seconds() >= delay - 1
    assert conditions["PodScheduled"]["lastTransitionTime"] == pod["status"]["startTime"]
    assert (await health(pod["status"]["podIP"]))["status"]["busyStatus"] == "IDLE"


async def test_a_jibris_first_webhook_finds_its_address_on_the_api_server(
    api: ApiClient, namespace: str, kubelet: KubeletThread
) -> None:
    # As with a real kubelet: the pod's address is reported before its Jibri can speak.
    seen: list[dict[str, Any]] = []

    async def webhook(request: web.Request) -> web.Response:
        pod = request.match_info["pod"]
        stored = await CoreV1Api(api).read_namespaced_pod(pod, namespace, _preload_content=False)
        async with stored:
            status = (await stored.json())["status"]
        seen.append({"from": request.remote, **status})
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/webhook/{pod}/v1/status", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        await AppsV1Api(api).create_namespaced_deployment(
            namespace,
            deployment(
                2, SIM_JIBRI_WEBHOOK_SUBSCRIBERS=f"http://127.0.0.1:{port}/webhook/$POD_NAME"
            ),
        )

        async def two() -> bool:
            return len(seen) >= 2

        await wait_until(two, timeout=60, what="the two Jibris' first webhooks")
    finally:
        await runner.cleanup()
    for first in seen[:2]:
        assert first["podIP"] == first["from"]
        assert first["phase"] == "Running"


async def test_relabelled_pod_is_released_and_replaced(
    api: ApiClient, namespace: str, kubelet: KubeletThread
) -> None:
    pods = await run_deployment(api, namespace, 3)
    busy = pods[0]["metadata"]["name"]

    # As the controller does it: a JSON merge patch of the labels.
    await CoreV1Api(api).patch_namespaced_pod(
        busy,
        namespace,
        {"metadata": {"labels": {"app": "jibri", "state": "busy"}}},
        _content_type="application/merge-patch+json",
    )

    async def replaced() -> list[dict[str, Any]] | None:
        current = await list_pods(api, namespace)
        idle_ready = [
            p for p in current if p["metadata"]["labels"].get("state") == "idle" and is_ready(p)
        ]
        return current if len(current) == 4 and len(idle_ready) == 3 else None

    await wait_until(replaced, timeout=60, what="a replacement for the busy pod")

    async def released() -> dict[str, Any] | None:
        (pod,) = [p for p in await list_pods(api, namespace) if p["metadata"]["name"] == busy]
        owners = pod["metadata"].get("ownerReferences") or []
        return None if any(o.get("controller") for o in owners) else pod

    pod = await wait_until(released, timeout=60, what="the ReplicaSet to release the busy pod")
    assert pod["metadata"]["labels"]["state"] == "busy"
    # Released, not restarted: it keeps its address and its Jibri.
    assert pod["status"]["podIP"] == pods[0]["status"]["podIP"] == kubelet.ip_of(busy, namespace)
    assert (await health(pod["status"]["podIP"]))["status"]["busyStatus"] == "IDLE"


async def test_deleted_pod_stops_its_jibri(
    api: ApiClient, namespace: str, kubelet: KubeletThread
) -> None:
    pods = await run_deployment(api, namespace, 1)
    name, uid, ip = (
        pods[0]["metadata"]["name"],
        pods[0]["metadata"]["uid"],
        pods[0]["status"]["podIP"],
    )
    assert (await health(ip))["status"]["busyStatus"] == "IDLE"
    assert kubelet.jibri(name, namespace).port == JIBRI_PORT

    await CoreV1Api(api).delete_namespaced_pod(
        name, namespace, body=V1DeleteOptions(preconditions=V1Preconditions(uid=uid))
    )

    async def refused() -> bool:
        try:
            _, writer = await asyncio.open_connection(ip, JIBRI_PORT)
        except OSError:
            return True
        writer.close()
        await writer.wait_closed()
        return False

    await wait_until(refused, timeout=30, what="the Jibri to stop listening")
    with pytest.raises(KeyError):
        kubelet.jibri(name, namespace)
    # The ReplicaSet replaces it on a new address.
    (replacement,) = await wait_until(
        lambda: _ready_pods(api, namespace, 1), timeout=60, what="a replacement pod"
    )
    assert replacement["metadata"]["uid"] != uid
    assert replacement["status"]["podIP"] != ip


async def test_jibri_restart_shows_in_the_container_status(
    api: ApiClient, namespace: str, kubelet: KubeletThread
) -> None:
    pods = await run_deployment(api, namespace, 1)
    name = pods[0]["metadata"]["name"]

    kubelet.call(kubelet.jibri(name, namespace).crash())

    async def restarted() -> dict[str, Any] | None:
        (pod,) = await list_pods(api, namespace)
        (container,) = pod["status"]["containerStatuses"]
        return container if container["restartCount"] == 1 else None

    container = await wait_until(restarted, timeout=60, what="restartCount 1")
    assert container["lastState"]["terminated"]["exitCode"] != 0
    assert "running" in container["state"]
    # Same pod, same address, a fresh Jibri process.
    assert kubelet.ip_of(name, namespace) == pods[0]["status"]["podIP"]
    assert (await health(pods[0]["status"]["podIP"]))["status"]["busyStatus"] == "IDLE"


async def _ready_pods(api: ApiClient, namespace: str, count: int) -> list[dict[str, Any]] | None:
    pods = [p for p in await list_pods(api, namespace) if is_ready(p)]
    return pods if len(pods) == count else None


async def test_identity_without_rbac_is_forbidden(plane: ControlPlane, namespace: str) -> None:
    username, groups = service_account_identity(namespace)
    kubeconfig = plane.kubeconfig_for(username, groups)
    async with await new_api_client(kubeconfig) as restricted:
        with pytest.raises(ApiException) as raised:
            await CoreV1Api(restricted).list_namespaced_pod(namespace)
    assert raised.value.status == 403
    assert username in str(raised.value.body)


async def test_audit_log_attributes_a_patch_to_its_identity(
    plane: ControlPlane, api: ApiClient, namespace: str
) -> None:
    pods = await run_deployment(api, namespace, 1)
    name = pods[0]["metadata"]["name"]
    username, groups = service_account_identity(namespace)
    rbac = RbacAuthorizationV1Api(api)
    await rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": CONTROLLER},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch"]}
            ],
        },
    )
    await rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": CONTROLLER},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": CONTROLLER,
            },
            "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER, "namespace": namespace}],
        },
    )
    assert plane.audit_events(username=username) == []

    async with await new_api_client(plane.kubeconfig_for(username, groups)) as restricted:
        core = CoreV1Api(restricted)
        await core.patch_namespaced_pod(name, namespace, {"metadata": {"labels": {"seen": "yes"}}})
        with pytest.raises(ApiException) as raised:
            await core.delete_namespaced_pod(name, namespace)
        assert raised.value.status == 403

    async def logged() -> list[dict[str, Any]] | None:
        events = plane.audit_events(username=username, namespace=namespace)
        return events if len(events) == 2 else None

    patch, delete = await wait_until(logged, timeout=10, what="two audit events")
    assert patch["verb"] == "patch"
    assert patch["objectRef"]["resource"] == "pods"
    assert patch["objectRef"]["name"] == name
    assert patch["responseStatus"]["code"] == 200
    assert patch["user"]["groups"] == groups
    assert delete["verb"] == "delete"
    assert delete["responseStatus"]["code"] == 403
    # The admin's own writes in this namespace are logged too, under its name.
    admin_writes = plane.audit_events(namespace=namespace)
    assert {e["verb"] for e in admin_writes} >= {"create", "patch"}
