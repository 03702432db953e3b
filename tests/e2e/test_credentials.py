"""The controller's own API client on the real API server, with a bound ServiceAccount token.

In a cluster the kubelet projects a bound token (a TokenRequest, an hour at most) and the
cluster's CA into the Pod. Here the test asks the API server for such a token for deploy/'s
ServiceAccount and lays it out as the kubelet does, then the client reads it the in-cluster
way: the RoleBinding's permissions must be exactly the ones seen. (The re-read on rotation is
in tests/component/test_kube_client.py, against a local TLS server that can refuse a token.)
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from kubernetes_asyncio import client as k8s

from jibri_pod_controller.adapters import credentials
from jibri_pod_controller.adapters.kube import ApiClient, Forbidden, KubeCluster
from testbed.cluster import SERVICE_ACCOUNT
from testbed.controlplane import ControlPlane

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
