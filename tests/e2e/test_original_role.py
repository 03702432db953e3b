"""Migrating from the original tool: its README's Role and its Deployment's environment, plus
only ``WEBHOOK_AUTH=none``, against the real control plane.

That Role grants pods get/list/patch/delete and the Lease, but no watch and no Events. The
controller must still be ready (the Service routes webhooks only to ready pods, and the
original readiness probe is ``GET /``), say once what it does without the missing rights, and
make exactly the writes a recording needs: one PATCH and one DELETE, none refused, counted
from the API server's audit log (every write attempt, whatever its answer).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from testbed.cluster import (
    ControllerProcess,
    all_write_events,
    apply,
    controller_env_from_deployment,
    controller_kubeconfig,
    jibri_deployment,
    service_account_user,
    start_recording,
    stop_recording,
    wait_until,
)
from testbed.controlplane import ControlPlane
from testbed.kubelet import KubeletThread
from tests.e2e.helpers import get_pod, is_busy, owned_by_replicaset, wait_spares

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

LEASE = "jibri-pod-controller-lease"

# The original README's RBAC, verbatim but for the namespace.
ORIGINAL_ROLE: dict[str, Any] = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "Role",
    "metadata": {"name": "jibri-pod-controller", "namespace": "default"},
    "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch", "get", "delete"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resourceNames": [LEASE],
            "resources": ["leases"],
            "verbs": ["update", "patch", "get"],
        },
    ],
}
ORIGINAL_SERVICE_ACCOUNT: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ServiceAccount",
    "automountServiceAccountToken": True,
    "metadata": {"name": "jibri-pod-controller", "namespace": "default"},
}
ORIGINAL_ROLE_BINDING: dict[str, Any] = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "RoleBinding",
    "metadata": {"name": "jibri-pod-controller", "namespace": "default"},
    "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "jibri-pod-controller",
    },
    "subjects": [
        {"kind": "ServiceAccount", "name": "jibri-pod-controller", "namespace": "default"}
    ],
}
# The original README's controller Deployment (the parts that reach the process).
ORIGINAL_DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "jibri-pod-controller", "namespace": "default"},
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "jibri-pod-controller",
                        "env": [
                            {"name": "RUST_LOG", "value": "info"},
                            {"name": "PORT", "value": "8080"},
                            {"name": "JIBRI_HEALTH_PORT", "value": "8080"},
                            {"name": "JIBRI_BUSY_LABELS", "value": "app=jibri,state=busy"},
                            {"name": "SWEEP_INTERVAL", "value": "300"},
                            {
                                "name": "POD_NAME",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                            },
                            {
                                "name": "NAMESPACE",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                            },
                        ],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                    }
                ]
            }
        }
    },
}


def in_namespace(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    placed = copy.deepcopy(doc)
    placed["metadata"]["namespace"] = namespace
    for subject in placed.get("subjects") or ():
        subject["namespace"] = namespace
    return placed


def jibris_on_port(doc: dict[str, Any], port: int) -> dict[str, Any]:
    """The simulated Jibris' API on ``port`` (the original sets JIBRI_HEALTH_PORT=8080)."""
    container = doc["spec"]["template"]["spec"]["containers"][0]
    for entry in container["env"]:
        if entry["name"] == "SIM_JIBRI_PORT":
            entry["value"] = str(port)
    container["ports"] = [{"containerPort": port, "name": "api"}]
    return doc


async def test_the_original_role_and_deployment_work_ready_and_without_refused_writes(
    admin: k8s.ApiClient,
    namespace: str,
    kubelet: KubeletThread,
    plane: ControlPlane,
    tmp_path: Path,
) -> None:
    await apply(
        admin,
        [
            in_namespace(ORIGINAL_SERVICE_ACCOUNT, namespace),
            in_namespace(ORIGINAL_ROLE, namespace),
            in_namespace(ORIGINAL_ROLE_BINDING, namespace),
        ],
    )
    user = service_account_user(namespace)
    env = controller_env_from_deployment(
        ORIGINAL_DEPLOYMENT, namespace=namespace, pod_name="controller-a"
    )
    health_port = int(env["JIBRI_HEALTH_PORT"])
    # The one change: PORT. The test machine is shared, so the controller listens on a free
    # port, not on 8080 (the Service's targetPort); everything else is the original's.
    del env["PORT"]
    controller = ControllerProcess(
        name="controller-a",
        kubeconfig=controller_kubeconfig(plane, namespace),
        namespace=namespace,
        log_path=tmp_path / "controller-a.log",
        env={**env, "WEBHOOK_AUTH": "none"},
    )
    assert env == {
        "RUST_LOG": "info",
        "JIBRI_HEALTH_PORT": "8080",
        "JIBRI_BUSY_LABELS": "app=jibri,state=busy",
        "SWEEP_INTERVAL": "300",
        "POD_NAME": "controller-a",
        "NAMESPACE": namespace,
    }
    controller.start()
    try:
        # 1. Ready, through the original's readiness probe path.
        async def ready() -> bool:
            status, _ = controller.get("/")
            return status == 200

        await wait_until(ready, timeout=30, what="GET / answers 200 under the original Role")
        status, text = controller.get("/readyz")
        assert (status, text) == (200, "ok\n")

        # ...and says once what it does without watch and Events, in a log line and a metric.
        lost = [
            line
            for line in controller.log_lines()
            if "optional Kubernetes permissions missing" in str(line.get("msg"))
        ]
        assert len(lost) == 1, lost
        assert set(lost[0]["lost"]) == {
            "watch pods",
            "create events",
            "get replicasets.apps",
        }
        assert "GET" in lost[0]["lost"]["watch pods"]
        for permission in ("watch pods", "create events"):
            assert (
                controller.metric(
                    "jibri_pod_controller_permission_missing",
                    permission=permission,
                    required="false",
                )
                == 1
            )
        assert controller.metric("jibri_pod_controller_permission_missing", required="true") == 0

        # 2. One recording, with Jibri resending its status every second meanwhile.
        await apply(
            admin,
            [
                jibris_on_port(
                    jibri_deployment(
                        namespace=namespace,
                        replicas=2,
                        subscribers=[controller.webhook_base()],
                        status_period=1.0,
                    ),
                    health_port,
                )
            ],
        )
        target = (await wait_spares(admin, namespace, 2))[0]
        name = target.metadata.name
        ip = target.status.pod_ip
        assert await start_recording(ip, port=health_port) == 200

        async def detached() -> bool:
            pod = await get_pod(admin, namespace, name)
            return pod is not None and is_busy(pod) and not owned_by_replicaset(pod)

        await wait_until(detached, timeout=20, what=f"{name} detached")

        async def resent() -> bool:  # several BUSY resends, each answered without a write
            return (
                controller.metric(
                    "jibri_pod_controller_actions_total",
                    action="none",
                    reason="already-detached",
                )
                >= 3
            )

        await wait_until(resent, timeout=20, what="BUSY resends answered")
        assert await stop_recording(ip, port=health_port) == 200

        async def gone() -> bool:
            return await get_pod(admin, namespace, name) is None

        await wait_until(gone, timeout=30, what=f"{name} deleted")

        async def delete_audited() -> bool:  # the audit log is written just after the answer
            return any(
                e["verb"] == "delete"
                for e in all_write_events(plane, namespace=namespace, username=user)
            )

        await wait_until(delete_audited, timeout=10, what="the delete in the audit log")

        writes = all_write_events(plane, namespace=namespace, username=user)
        refused = [
            (e["verb"], e["objectRef"].get("resource"), e["responseStatus"]["code"])
            for e in writes
            if int(e["responseStatus"]["code"]) >= 400
        ]
        assert refused == []
        pod_writes = [
            (e["verb"], e["objectRef"]["name"])
            for e in writes
            if e["objectRef"].get("resource") == "pods"
        ]
        assert pod_writes == [("patch", name), ("delete", name)]
        assert {e["objectRef"].get("resource") for e in writes} <= {"pods", "leases"}
        assert controller.process is not None
        assert controller.process.poll() is None
    finally:
        controller.stop()
        print(f"\n--- controller (last lines) ---\n{controller.tail(40)}")
