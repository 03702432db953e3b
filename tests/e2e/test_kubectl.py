"""The plain manifests, installed as the README says, with kubectl of the cluster's version.

`kubectl apply -n <namespace> -k deploy/` (the kustomize base, with jibri.conf's issuer and the
Secret of public keys an operator creates), then the controller runs with what the installed
Deployment gives its container, and an operator's view is checked where one reads it:
`kubectl get` shows the detached pod by its busy labels and `kubectl describe` shows the
controller's Event on it; after the recording, the pod's deletion is an Event too.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from testbed.cluster import (
    REPO,
    ControllerProcess,
    apply,
    jibri_deployment,
    make_webhook_keys,
    pod_write_events,
    start_recording,
    stop_recording,
    wait_until,
)
from testbed.controlplane import ControlPlane
from testbed.installed import installed_deployment, process_environment
from testbed.kubelet import KubeletThread
from testbed.tools import kubectl
from tests.e2e.helpers import get_pod, is_busy, owned_by_replicaset, wait_spares

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DEPLOY = REPO / "deploy"
# deploy/deployment.yaml's JWT_ISSUER and JWT_AUDIENCE, as jibri.conf's jwt-info sets them.
ISSUER, AUDIENCE = "jibri", "jibri-pod-controller"


def run_kubectl(plane: ControlPlane, *args: str) -> str:
    result = subprocess.run(
        [str(kubectl()), "--kubeconfig", str(plane.admin_kubeconfig), *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(plane.workdir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def kubectl_diff(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl diff`: exit 0 when the cluster has exactly what the manifests say."""
    return subprocess.run(
        [str(kubectl()), "--kubeconfig", str(plane.admin_kubeconfig), "diff", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(plane.workdir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_kubectl_is_the_cluster_version(plane: ControlPlane) -> None:
    client = run_kubectl(plane, "version", "--client", "-o", "yaml")
    server = run_kubectl(plane, "version", "-o", "yaml")
    version = re.search(r"gitVersion: (v\S+)", client)
    assert version, client
    assert f"gitVersion: {version.group(1)}" in server.split("serverVersion:")[1]


async def test_kubectl_apply_k_deploy_and_what_an_operator_reads(
    admin: k8s.ApiClient,
    namespace: str,
    kubelet: KubeletThread,
    plane: ControlPlane,
    tmp_path: Path,
) -> None:
    keys = make_webhook_keys(tmp_path, kid="jibri-webhook-1", issuer=ISSUER, audience=AUDIENCE)
    public = next(keys.directory.glob("*.pem"))
    run_kubectl(
        plane,
        "-n",
        namespace,
        "create",
        "secret",
        "generic",
        "jibri-webhook-keys",
        f"--from-file={public}",
    )
    applied = run_kubectl(plane, "apply", "-n", namespace, "-k", str(DEPLOY))
    for line in (
        "serviceaccount/jibri-pod-controller created",
        "role.rbac.authorization.k8s.io/jibri-pod-controller created",
        "rolebinding.rbac.authorization.k8s.io/jibri-pod-controller created",
        "deployment.apps/jibri-pod-controller created",
        "service/jibri-pod-controller created",
    ):
        assert line in applied, applied
    # Nothing differs from what was installed (`kubectl diff` exits 0), and a second apply
    # creates nothing. (kubectl says "configured" for the PodDisruptionBudgets on every apply,
    # a no-op patch of its client-side three-way merge; the diff shows it changes nothing.)
    diff = kubectl_diff(plane, "-n", namespace, "-k", str(DEPLOY))
    assert diff.returncode == 0, diff.stdout + diff.stderr
    again = run_kubectl(plane, "apply", "-n", namespace, "-k", str(DEPLOY))
    assert "created" not in again, again
    run_kubectl(
        plane,
        "-n",
        namespace,
        "rollout",
        "status",
        "deployment/jibri-pod-controller",
        "--timeout=60s",
    )

    deployment = await installed_deployment(admin, namespace, "jibri-pod-controller")
    env, _ = await process_environment(
        admin, deployment, pod_name="kubectl-0", root=tmp_path / "pod"
    )
    env.pop("PORT", None)  # the tests pick a free port
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    user = f"system:serviceaccount:{namespace}:{account}"
    controller = ControllerProcess(
        name="kubectl-0",
        kubeconfig=plane.kubeconfig_for(
            user, ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
        ),
        namespace=namespace,
        log_path=tmp_path / "kubectl-0.log",
        env=env,
    ).start()
    try:
        await controller.wait_ready()
        await apply(
            admin,
            [
                jibri_deployment(
                    namespace=namespace,
                    replicas=2,
                    subscribers=[controller.webhook_base()],
                    jwt=keys.jibri,
                )
            ],
        )
        pod = (await wait_spares(admin, namespace, 2))[0]
        name, ip = str(pod.metadata.name), str(pod.status.pod_ip)
        assert await start_recording(ip) == 200

        async def detached() -> bool:
            current = await get_pod(admin, namespace, name)
            return current is not None and is_busy(current) and not owned_by_replicaset(current)

        await wait_until(detached, timeout=20, what="detached")
        busy = run_kubectl(plane, "-n", namespace, "get", "pods", "-l", "app=jibri,state=busy")
        assert re.search(rf"^{re.escape(name)}\s+\S+\s+Running\s", busy, re.MULTILINE), busy

        async def described() -> str | None:
            text = run_kubectl(plane, "-n", namespace, "describe", "pod", name)
            return text if "JibriDetached" in text else None

        text = await wait_until(described, timeout=20, what="the JibriDetached Event")
        events = text.split("\nEvents:", 1)[1]
        assert re.search(
            r"Normal\s+JibriDetached\s+\S+\s+jibri-pod-controller\s+Jibri is busy "
            r"\(busy-reported, via webhook\): detached from its Deployment",
            events,
        ), events
        labels = text.split("\nLabels:", 1)[1].split("\nAnnotations:", 1)[0]
        assert "state=busy" in labels, labels
        assert "cluster-autoscaler.kubernetes.io/safe-to-evict: false" in text, text

        assert await stop_recording(ip) == 200

        async def gone() -> bool:
            return await get_pod(admin, namespace, name) is None

        await wait_until(gone, timeout=20, what="deleted")

        async def deleted_event() -> str | None:
            text = run_kubectl(
                plane,
                "-n",
                namespace,
                "get",
                "events",
                "--field-selector",
                f"involvedObject.name={name}",
            )
            return text if "JibriDeleted" in text else None

        text = await wait_until(deleted_event, timeout=20, what="the JibriDeleted Event")
        assert re.search(r"Normal\s+JibriDeleted\s+pod/" + re.escape(name), text), text
    finally:
        assert controller.stop() == 0
    writes: list[Any] = pod_write_events(plane, namespace=namespace, username=user)
    assert [(e["verb"], e["objectRef"]["name"]) for e in writes] == [
        ("patch", name),
        ("delete", name),
    ]
