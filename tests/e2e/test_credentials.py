"""The controller's own API client on the real API server: a bound ServiceAccount token,
impersonation, and answers the server compressed.

In a cluster the kubelet projects a bound token (a TokenRequest, an hour at most) and the
cluster's CA into the Pod. Here the test asks the API server for such a token for deploy/'s
ServiceAccount and lays it out as the kubelet does, then the client reads it the in-cluster
way: the RoleBinding's permissions must be exactly the ones seen. (The re-read on rotation,
exec plugins and certificate rotation are in tests/component/test_kube_client.py, against a
local TLS server that can refuse a token and tell which certificate it was shown.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from kubernetes_asyncio import client as k8s

from jibri_pod_controller.adapters import credentials
from jibri_pod_controller.adapters.kube import ApiClient, Forbidden, KubeCluster
from testbed.cluster import SERVICE_ACCOUNT
from testbed.controlplane import ControlPlane, _issue, _new_ca

pytestmark = pytest.mark.e2e


def lay_out(root: Path, plane: ControlPlane, token: str) -> Path:
    """The token and the cluster's CA where the kubelet projects them."""
    kubeconfig = json.loads(Path(plane.admin_kubeconfig).read_text())
    ca = base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"])
    directory = root / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes(ca)
    return directory


def write(path: Path, text: str) -> None:
    path.write_text(text)


async def test_in_cluster_with_a_bound_service_account_token(
    plane: ControlPlane, admin: k8s.ApiClient, namespace: str, rbac: str, tmp_path: Path
) -> None:
    requested = await k8s.CoreV1Api(admin).create_namespaced_service_account_token(
        SERVICE_ACCOUNT, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    directory = lay_out(tmp_path, plane, requested.status.token)
    server = urlsplit(plane.server)
    env = {
        "KUBERNETES_SERVICE_HOST": str(server.hostname),
        "KUBERNETES_SERVICE_PORT": str(server.port),
    }

    endpoint = await credentials.load(None, env, in_cluster_dir=directory)
    cluster = KubeCluster(ApiClient(endpoint), namespace=namespace)
    try:
        assert await cluster.can_i(verb="patch", resource="pods")
        assert not await cluster.can_i(verb="delete", resource="deployments", group="apps")
        assert await cluster.get_lease("jibri-pod-controller-lease") is None
        with pytest.raises(Forbidden):
            await cluster.request_json("GET", "/api/v1/namespaces/kube-system/pods")
    finally:
        await cluster.close()
    # A token the API server does not know is refused: the client presented this file's token.
    write(directory / "token", "not-a-token")
    endpoint = await credentials.load(None, env, in_cluster_dir=directory)
    cluster = KubeCluster(ApiClient(endpoint), namespace=namespace)
    try:
        with pytest.raises(Forbidden, match="401"):
            await cluster.get_pod("anything")
    finally:
        await cluster.close()


def admin_kubeconfig_as(plane: ControlPlane, root: Path, user: str) -> Path:
    """The admin kubeconfig, impersonating ``user`` (``as``), as an operator would write it."""
    config = json.loads(Path(plane.admin_kubeconfig).read_text())
    for entry in config["users"]:
        entry["user"]["as"] = user
    path = root / "as.kubeconfig"
    path.write_text(json.dumps(config))
    return path


async def test_impersonation_acts_with_the_impersonated_users_rights_only(
    plane: ControlPlane, namespace: str, rbac: str, tmp_path: Path
) -> None:
    """An admin kubeconfig with ``as`` gets exactly the impersonated user's permissions (the
    client sends Impersonate-User; without it the controller would act as the admin)."""
    endpoint = await credentials.load(str(admin_kubeconfig_as(plane, tmp_path, rbac)), {})
    cluster = KubeCluster(ApiClient(endpoint), namespace=namespace)
    try:
        assert await cluster.can_i(verb="patch", resource="pods")
        assert not await cluster.can_i(verb="delete", resource="deployments", group="apps")
        with pytest.raises(Forbidden, match="403"):
            await cluster.request_json("GET", "/api/v1/namespaces/kube-system/pods")
    finally:
        await cluster.close()


@dataclass
class CompressingProxy:
    """A TLS reverse proxy in front of kube-apiserver that asks it for gzip (as API gateways
    do) and passes its answers through untouched, Content-Encoding included."""

    url: str
    ca_pem: bytes
    encodings: list[tuple[str, str]] = field(default_factory=list)
    """(request path and query, Content-Encoding answered)."""


def cluster_ca(plane: ControlPlane) -> bytes:
    admin = json.loads(Path(plane.admin_kubeconfig).read_text())
    return base64.b64decode(admin["clusters"][0]["cluster"]["certificate-authority-data"])


@pytest.fixture
async def compressing_proxy(plane: ControlPlane, tmp_path: Path) -> AsyncIterator[CompressingProxy]:
    upstream_ca = cluster_ca(plane)
    ca = _new_ca("proxy-ca")
    serving = _issue(ca, common_name="proxy", server_names=["127.0.0.1"])
    (tmp_path / "proxy.crt").write_bytes(serving.cert_pem)
    (tmp_path / "proxy.key").write_bytes(serving.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "proxy.crt", tmp_path / "proxy.key")
    upstream = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cadata=upstream_ca.decode())),
        auto_decompress=False,
    )
    proxy = CompressingProxy(url="", ca_pem=ca.cert_pem)

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {"Accept-Encoding": "gzip"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        async with upstream.request(
            request.method,
            plane.server + request.path_qs,
            headers=headers,
            data=await request.read() or None,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
        ) as answer:
            coding = answer.headers.get("Content-Encoding", "")
            proxy.encodings.append((request.path_qs, coding))
            response = web.StreamResponse(status=answer.status)
            for name in ("Content-Type", "Content-Encoding"):
                if name in answer.headers:
                    response.headers[name] = answer.headers[name]
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    proxy.url = f"https://127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        await runner.cleanup()
        await upstream.close()


async def test_lists_and_watches_compressed_by_kube_apiserver_are_read(
    plane: ControlPlane,
    admin: k8s.ApiClient,
    namespace: str,
    rbac: str,
    compressing_proxy: CompressingProxy,
    tmp_path: Path,
) -> None:
    """kube-apiserver gzips answers above 128 KB when asked; a proxy that asks for the client
    (as the fault proxy's aiohttp session did, and gateways do) must not blind the controller."""
    core = k8s.CoreV1Api(admin)
    for n in range(60):  # about 4 KB each with managedFields: well above 128 KB in all
        await core.create_namespaced_pod(
            namespace,
            {
                "metadata": {
                    "name": f"jibri-{n}",
                    "labels": {"app": "jibri"},
                    "annotations": {"padding": "x" * 2000},
                },
                "spec": {"containers": [{"name": "jibri", "image": "jitsi/jibri"}]},
            },
        )
    requested = await core.create_namespaced_service_account_token(
        SERVICE_ACCOUNT, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "through-proxy",
                "cluster": {
                    "server": compressing_proxy.url,
                    "certificate-authority-data": base64.b64encode(
                        compressing_proxy.ca_pem
                    ).decode(),
                },
            }
        ],
        "users": [{"name": "controller", "user": {"token": requested.status.token}}],
        "contexts": [{"name": "c", "context": {"cluster": "through-proxy", "user": "controller"}}],
        "current-context": "c",
    }
    write(tmp_path / "kubeconfig", json.dumps(config))
    endpoint = await credentials.load(str(tmp_path / "kubeconfig"), {})
    cluster = KubeCluster(ApiClient(endpoint), namespace=namespace)
    try:
        pods, version = await cluster.list_pods_snapshot(selector="app=jibri", page_size=500)
        assert len(pods) == 60
        seen: list[str] = []

        async def watch() -> None:
            async for event in cluster.watch_pods_raw(
                selector="app=jibri", resource_version=version, timeout_seconds=30
            ):
                # Only the deleted pod's events: other pods may change meanwhile (a fake
                # kubelet of a test running beside this one may report them).
                if event.raw["metadata"]["name"] != "jibri-7":
                    continue
                seen.append(f"{event.kind} {event.raw['metadata']['name']}")
                if event.kind == "DELETED":
                    return

        watching = asyncio.create_task(watch())
        await asyncio.sleep(1)
        await core.delete_namespaced_pod("jibri-7", namespace, grace_period_seconds=0)
        await asyncio.wait_for(watching, 30)
    finally:
        await cluster.close()
    listed = [coding for path, coding in compressing_proxy.encodings if "watch" not in path]
    assert listed == ["gzip"]  # the server did compress the list (v1.36 leaves watches alone)
    assert seen == ["MODIFIED jibri-7", "DELETED jibri-7"]
