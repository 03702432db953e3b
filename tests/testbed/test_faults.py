"""The fault injectors against the real binaries: the fault proxy in front of kube-apiserver
(forwarding as the controllers' identity, each fault as a client sees it, watches streamed) and
the control plane's SIGKILL-and-restart of kube-apiserver and etcd."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import ssl
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s

from testbed.cluster import (
    apply,
    controller_kubeconfig,
    create_namespace,
    rbac_manifests,
    service_account_user,
)
from testbed.controlplane import ControlPlane
from testbed.faultproxy import Fault, FaultKind, FaultProxy, proxied_kubeconfig
from testbed.kube import new_api_client
from testbed.kubelet import FakeKubelet

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    started = ControlPlane.start()
    try:
        yield started
    finally:
        started.stop()


def _context(kubeconfig: Path, tmp: Path) -> ssl.SSLContext:
    """An SSL context presenting the kubeconfig's client certificate."""
    config = json.loads(kubeconfig.read_text())
    user = config["users"][0]["user"]
    cluster = config["clusters"][0]["cluster"]
    (tmp / "ca.crt").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    (tmp / "c.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
    (tmp / "c.key").write_bytes(base64.b64decode(user["client-key-data"]))
    context = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
    context.load_cert_chain(str(tmp / "c.crt"), str(tmp / "c.key"))
    return context


@pytest.fixture
async def namespace(plane: ControlPlane) -> str:
    name = f"faults-{uuid.uuid4().hex[:6]}"
    api = await new_api_client(plane.admin_kubeconfig)
    try:
        await create_namespace(api, name)
        await apply(api, rbac_manifests(name))
    finally:
        await api.close()
    return name


@pytest.fixture
async def proxy(
    plane: ControlPlane, namespace: str, tmp_path: Path
) -> AsyncIterator[tuple[FaultProxy, ssl.SSLContext]]:
    assert plane.workdir is not None
    kubeconfig = controller_kubeconfig(plane, namespace)
    running = FaultProxy.for_kubeconfig(
        kubeconfig, pki_dir=plane.workdir / "pki", rng=random.Random(1), workdir=tmp_path / "p"
    )
    await running.start()
    try:
        yield running, _context(kubeconfig, tmp_path)
    finally:
        await running.stop()


async def _get(
    url: str, context: ssl.SSLContext, *, timeout: float = 5.0
) -> tuple[int, dict[str, str], Any]:
    connector = aiohttp.TCPConnector(ssl=context, force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response,
    ):
        return response.status, dict(response.headers), await response.json(content_type=None)


async def test_forwards_as_the_controllers_identity_under_its_rbac(
    plane: ControlPlane, namespace: str, proxy: tuple[FaultProxy, ssl.SSLContext], tmp_path: Path
) -> None:
    running, context = proxy
    status, _, body = await _get(f"{running.url}/api/v1/namespaces/{namespace}/pods", context)
    assert (status, body["kind"]) == (200, "PodList")
    # RBAC still applies: the ServiceAccount may not read Secrets.
    status, _, body = await _get(f"{running.url}/api/v1/namespaces/{namespace}/secrets", context)
    assert status == 403
    assert service_account_user(namespace) in body["message"]
    # Another identity (the admin) is refused by the proxy itself and nothing is forwarded.
    forwarded = running.forwarded
    admin = _context(plane.admin_kubeconfig, tmp_path)
    status, _, body = await _get(f"{running.url}/api/v1/namespaces", admin)
    assert status == 403
    assert "one identity" in body["message"]
    assert running.forwarded == forwarded


async def test_a_write_through_the_proxy_is_audited_as_the_controller(
    plane: ControlPlane, namespace: str, proxy: tuple[FaultProxy, ssl.SSLContext], tmp_path: Path
) -> None:
    running, _ = proxy
    kubeconfig = proxied_kubeconfig(
        controller_kubeconfig(plane, namespace), running.url, tmp_path / "proxied.json"
    )
    api = await new_api_client(kubeconfig)
    try:
        lease: Any = {"metadata": {"name": "jibri-pod-controller-lease"}, "spec": {}}
        await k8s.CoordinationV1Api(api).create_namespaced_lease(namespace, lease)
    finally:
        await api.close()
    events = plane.audit_events(username=service_account_user(namespace), namespace=namespace)
    assert any(e["verb"] == "create" and e["objectRef"]["resource"] == "leases" for e in events)


@pytest.mark.parametrize(
    ("kind", "code"),
    [(FaultKind.THROTTLE, 429), (FaultKind.ERROR_500, 500), (FaultKind.ERROR_503, 503)],
)
async def test_http_faults_answer_a_kubernetes_status(
    namespace: str, proxy: tuple[FaultProxy, ssl.SSLContext], kind: FaultKind, code: int
) -> None:
    running, context = proxy
    running.set_fault(Fault(kind, retry_after=2))
    status, headers, body = await _get(f"{running.url}/api/v1/namespaces/{namespace}/pods", context)
    assert (status, body["kind"], body["code"]) == (code, "Status", code)
    if kind is FaultKind.THROTTLE:
        assert headers["Retry-After"] == "2"
    assert running.injected[kind.value] == 1
    running.set_fault(None)
    status, _, _ = await _get(f"{running.url}/api/v1/namespaces/{namespace}/pods", context)
    assert status == 200


async def test_latency_still_forwards(
    namespace: str, proxy: tuple[FaultProxy, ssl.SSLContext]
) -> None:
    running, context = proxy
    running.set_fault(Fault(FaultKind.LATENCY, latency=0.2))
    status, _, _ = await _get(f"{running.url}/api/v1/namespaces/{namespace}/pods", context)
    assert status == 200
    assert running.injected["latency"] == 1


async def test_a_probability_applies_to_a_share_of_requests(
    namespace: str, proxy: tuple[FaultProxy, ssl.SSLContext]
) -> None:
    running, context = proxy
    running.set_fault(Fault(FaultKind.ERROR_503, probability=0.5))
    codes = [
        (await _get(f"{running.url}/api/v1/namespaces/{namespace}/pods", context))[0]
        for _ in range(20)
    ]
    assert set(codes) == {200, 503}
    assert codes.count(503) == running.injected["error-503"]


async def _raw_list(
    url: str, context: ssl.SSLContext, *, accept_encoding: str | None
) -> tuple[dict[str, str], bytes]:
    """A pod list as sent on the wire: no decompression, only the headers given."""
    connector = aiohttp.TCPConnector(ssl=context, force_close=True)
    headers = {"Accept-Encoding": accept_encoding} if accept_encoding else {}
    async with (
        aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("Accept-Encoding",)
        ) as session,
        session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        assert response.status == 200
        return dict(response.headers), await response.read()


async def test_what_the_client_asks_for_is_what_it_gets_compressed_or_not(
    plane: ControlPlane, namespace: str, proxy: tuple[FaultProxy, ssl.SSLContext]
) -> None:
    """kube-apiserver gzips an answer over 128 KB when asked to: the proxy neither asks on the
    client's behalf nor changes the answer, except as its COMPRESS fault."""
    running, context = proxy
    admin = await new_api_client(plane.admin_kubeconfig)
    try:
        core = k8s.CoreV1Api(admin)
        for i in range(60):  # with a 3 KB annotation each, the list is well over 128 KB
            pod: Any = {
                "metadata": {"name": f"big-{i}", "annotations": {"filler": "x" * 3000}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            }
            await core.create_namespaced_pod(namespace, pod)
    finally:
        await admin.close()
    url = f"{running.url}/api/v1/namespaces/{namespace}/pods"

    headers, plain = await _raw_list(url, context, accept_encoding=None)
    assert "Content-Encoding" not in headers
    assert len(json.loads(plain)["items"]) == 60
    assert len(plain) > 180_000

    headers, packed = await _raw_list(url, context, accept_encoding="gzip")
    assert headers["Content-Encoding"] == "gzip"
    assert len(packed) < len(plain) // 4
    assert len(json.loads(zlib.decompress(packed, wbits=47))["items"]) == 60

    assert running.largest_list is not None
    assert (running.largest_list.pods, running.largest_list.json_bytes) == (60, len(plain))
    assert running.lists == {"identity": 1, "gzip": 1}

    running.set_fault(Fault(FaultKind.COMPRESS))
    headers, packed = await _raw_list(url, context, accept_encoding=None)
    assert headers["Content-Encoding"] == "gzip"  # asked for on the client's behalf
    assert len(json.loads(zlib.decompress(packed, wbits=47))["items"]) == 60
    assert running.injected["compress"] == 1


async def test_reset_and_blackhole_and_outage_as_a_client_sees_them(
    namespace: str, proxy: tuple[FaultProxy, ssl.SSLContext]
) -> None:
    running, context = proxy
    url = f"{running.url}/api/v1/namespaces/{namespace}/pods"
    running.set_fault(Fault(FaultKind.RESET))
    with pytest.raises(aiohttp.ClientError):
        await _get(url, context)
    running.set_fault(Fault(FaultKind.BLACKHOLE))
    with pytest.raises(TimeoutError):
        await _get(url, context, timeout=0.5)
    running.set_fault(None)
    await running.begin_outage()
    with pytest.raises(aiohttp.ClientConnectorError):
        await _get(url, context)
    await running.end_outage()
    assert (await _get(url, context))[0] == 200


async def _cut(response: aiohttp.ClientResponse) -> bool:
    """True if the stream ends (or breaks) within 10 s, long before its 30 s timeout."""
    try:
        while await asyncio.wait_for(response.content.readline(), 10):
            pass
    except aiohttp.ClientError:
        return True
    except TimeoutError:
        return False
    return True


async def test_a_watch_streams_through_and_a_reset_cuts_it(
    plane: ControlPlane, namespace: str, proxy: tuple[FaultProxy, ssl.SSLContext]
) -> None:
    running, context = proxy
    connector = aiohttp.TCPConnector(ssl=context, force_close=True)
    admin = await new_api_client(plane.admin_kubeconfig)
    try:
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(
                f"{running.url}/api/v1/namespaces/{namespace}/pods?watch=true&timeoutSeconds=30"
            ) as response,
        ):
            assert response.status == 200
            pod: Any = {
                "metadata": {"name": "watched"},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            }
            await k8s.CoreV1Api(admin).create_namespaced_pod(namespace, pod)
            line = await asyncio.wait_for(response.content.readline(), 10)
            event = json.loads(line)
            assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "watched")
            running.set_fault(Fault(FaultKind.RESET, probability=0.0))
            assert await _cut(response)
    finally:
        await admin.close()


async def test_apiserver_and_etcd_restart_keep_the_port_and_the_data(
    plane: ControlPlane, namespace: str
) -> None:
    server = plane.server
    pid = plane.component_pid("kube-apiserver")
    assert await asyncio.to_thread(plane.restart_apiserver) > 0
    assert plane.server == server
    assert plane.component_pid("kube-apiserver") != pid
    pid = plane.component_pid("etcd")
    assert await asyncio.to_thread(plane.restart_etcd) > 0
    assert plane.component_pid("etcd") != pid
    api = await new_api_client(plane.admin_kubeconfig)
    try:
        names = [n.metadata.name for n in (await k8s.CoreV1Api(api).list_namespace()).items]
    finally:
        await api.close()
    assert namespace in names  # written before both restarts


async def test_the_kubelet_records_the_ground_truth(plane: ControlPlane, namespace: str) -> None:
    facts: list[dict[str, Any]] = []
    changed = asyncio.Event()

    def record(fact: dict[str, Any]) -> None:
        facts.append(fact)
        changed.set()

    api = await new_api_client(plane.admin_kubeconfig)
    core: Any = k8s.CoreV1Api(api)
    pod = {
        "metadata": {"name": "jibri-truth", "labels": {"app": "jibri", "state": "idle"}},
        "spec": {
            "containers": [
                {"name": "jibri", "image": "x", "env": [{"name": "SIM_JIBRI", "value": "true"}]}
            ]
        },
    }
    try:
        async with FakeKubelet(api, namespace, ground_truth=record) as kubelet:
            await core.create_namespaced_pod(namespace, pod)
            await asyncio.wait_for(kubelet.wait_running("jibri-truth"), 30)
            assert await kubelet.jibri("jibri-truth").start_recording("s")
            await core.patch_namespaced_pod(
                "jibri-truth", namespace, {"metadata": {"labels": {"state": "busy"}}}
            )
            await _until(lambda: any(f["event"] == "labels" for f in facts), changed)
            await core.delete_namespaced_pod("jibri-truth", namespace)
            await _until(lambda: any(f["event"] == "stopped" for f in facts), changed)
    finally:
        await api.close()
    assert [(f["event"], f.get("status")) for f in facts] == [
        ("created", None),
        ("started", None),
        ("status", "BUSY"),
        ("labels", None),
        ("terminating", None),
        ("stopped", "BUSY"),
    ]
    assert facts[0]["labels"] == facts[1]["labels"] == {"app": "jibri", "state": "idle"}
    assert facts[3]["labels"] == {"app": "jibri", "state": "busy"}
    assert {f["pod"] for f in facts} == {"jibri-truth"}
    assert [f["t"] for f in facts] == sorted(f["t"] for f in facts)


async def _until(condition: Callable[[], bool], changed: asyncio.Event) -> None:
    async with asyncio.timeout(30):
        while not condition():
            changed.clear()
            await changed.wait()


async def test_the_kubelet_finalizes_a_pod_once_the_api_server_is_back(
    plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """A pod whose containers stopped while the API server was down still goes away."""
    assert plane.workdir is not None
    admin = await new_api_client(plane.admin_kubeconfig)
    core: Any = k8s.CoreV1Api(admin)
    proxy = FaultProxy.for_kubeconfig(
        plane.admin_kubeconfig,
        pki_dir=plane.workdir / "pki",
        rng=random.Random(2),
        workdir=tmp_path,
    )
    await proxy.start()
    through = await new_api_client(
        proxied_kubeconfig(plane.admin_kubeconfig, proxy.url, tmp_path / "admin-proxied.json")
    )
    try:
        # Bound to a node, so that a delete waits for the kubelet (the grace period).
        pod = {
            "metadata": {"name": "lingering"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]},
        }
        created = await core.create_namespaced_pod(namespace, pod)
        await core.delete_namespaced_pod("lingering", namespace)  # terminating: 30 s of grace
        lingering = await core.read_namespaced_pod("lingering", namespace)
        assert lingering.metadata.deletion_timestamp is not None
        # Watching another (empty) namespace: only the call below finalizes the pod.
        async with FakeKubelet(through, f"{namespace}-empty") as kubelet:
            await proxy.begin_outage()
            finalizing = asyncio.create_task(
                kubelet._finalize(namespace, "lingering", created.metadata.uid)
            )
            await asyncio.sleep(1.0)
            await proxy.end_outage()
            await asyncio.wait_for(finalizing, 30)
        names = [p.metadata.name for p in (await core.list_namespaced_pod(namespace)).items]
        assert "lingering" not in names
    finally:
        await through.close()
        await proxy.stop()
        await admin.close()
