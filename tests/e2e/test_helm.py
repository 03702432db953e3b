"""The Helm chart, installed, upgraded and uninstalled by helm on the real control plane.

With the chart's defaults and with ci/all-options-values.yaml: `helm install --wait`, then the
controller runs with what the installed Deployment gives its container (its environment, the
files of its mounts copied from the Secret and ConfigMap they name, the identity of its
ServiceAccount bound by the chart's Role) and serves a recording; `helm upgrade` flips DRY_RUN,
and the controller run from the upgraded Deployment follows; `helm uninstall` leaves nothing of
the release. The writes are counted in the API server's audit log.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from testbed.cluster import REPO, ControllerProcess, install_crds, pod_write_events, wait_until
from testbed.controlplane import ControlPlane
from testbed.installed import installed_deployment, process_environment
from testbed.kubelet import KubeletThread
from testbed.tools import checkers
from tests import tools
from tests.e2e.conftest import ISSUER, Keys, make_keys
from tests.e2e.test_packaging import record_in_dry_run, record_once, remove_jibris

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CHART = REPO / "charts" / "jibri-pod-controller"
ALL_OPTIONS = CHART / "ci" / "all-options-values.yaml"
# The release name keeps the ServiceAccount's full name within a certificate CN's 64 chars.
RELEASE = "jibri-pod-controller"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"


def helm(plane: ControlPlane, home: Path, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(plane.admin_kubeconfig),
    }
    result = subprocess.run(
        [str(tools.helm()), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


async def install_prometheus_operator_crds(admin: k8s.ApiClient) -> None:
    """The ServiceMonitor and PrometheusRule CRDs, as a cluster with prometheus-operator has."""
    crds = checkers().prometheus_operator_crds
    await install_crds(
        admin,
        *(
            crds / f"monitoring.coreos.com_{plural}.yaml"
            for plural in ("servicemonitors", "prometheusrules")
        ),
    )


async def create_key_sources(admin: k8s.ApiClient, namespace: str, keys: Keys, root: Path) -> str:
    """The Secret the chart's jwt values name, with the Jibris' public key, and the ConfigMap
    of all-options, with a second key; return that second key's kid."""
    core: Any = k8s.CoreV1Api(admin)
    secret = {
        "metadata": {"name": "jibri-webhook-keys"},
        "stringData": {p.name: p.read_text() for p in keys.directory.glob("*.pem")},
    }
    await core.create_namespaced_secret(namespace, secret)
    second = make_keys(root, kid="e2e-key-2")
    config_map = {
        "metadata": {"name": "jibri-webhook-public-keys"},
        "data": {p.name: p.read_text() for p in second.directory.glob("*.pem")},
    }
    await core.create_namespaced_config_map(namespace, config_map)
    return "e2e-key-2"


async def run_installed(
    admin: k8s.ApiClient,
    plane: ControlPlane,
    keys: Keys,
    namespace: str,
    root: Path,
    *,
    name: str,
) -> tuple[ControllerProcess, dict[str, Any], dict[str, str], str]:
    """Start the controller as the installed Deployment would run it; wait until ready."""
    deployments: Any = k8s.AppsV1Api(admin)
    listed = await deployments.list_namespaced_deployment(namespace, label_selector=INSTANCE)
    assert len(listed.items) == 1
    deployment = await installed_deployment(admin, namespace, listed.items[0].metadata.name)
    env, mounts = await process_environment(admin, deployment, pod_name=name, root=root / name)
    # Only what cannot apply outside a pod changes: the port (the tests pick a free one) and the
    # API server (a kubeconfig for the ServiceAccount the Deployment runs as).
    env.pop("PORT", None)
    env.pop("KUBECONFIG", None)
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    user = f"system:serviceaccount:{namespace}:{account}"
    kubeconfig = plane.kubeconfig_for(
        user, ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    )
    controller = ControllerProcess(
        name=name,
        kubeconfig=kubeconfig,
        namespace=namespace,
        log_path=root / f"{name}.log",
        env=env,
    ).start()
    try:
        await controller.wait_ready()
    except BaseException:
        controller.stop()
        raise
    assert mounts, "the chart mounts the webhook keys"
    return controller, deployment, env, user


@pytest.mark.parametrize("variant", ["defaults", "all-options"])
async def test_helm_install_upgrade_uninstall(
    variant: str,
    admin: k8s.ApiClient,
    namespace: str,
    keys: Keys,
    kubelet: KubeletThread,
    plane: ControlPlane,
    tmp_path: Path,
) -> None:
    await install_prometheus_operator_crds(admin)
    second_kid = await create_key_sources(admin, namespace, keys, tmp_path)
    values = ["--values", str(ALL_OPTIONS)] if variant == "all-options" else []
    # Jibri's issuer in these tests; the rest is the chart's (or all-options') own values.
    common = [RELEASE, str(CHART), "--namespace", namespace, "--wait", "--timeout", "120s"]
    helm(plane, tmp_path, "install", *common, *values, "--set", f"config.JWT_ISSUER={ISSUER}")
    status = json.loads(helm(plane, tmp_path, "status", RELEASE, "-n", namespace, "-o", "json"))
    assert status["info"]["status"] == "deployed"
    dry_run = variant == "all-options"  # all-options turns DRY_RUN on

    for revision in (1, 2):
        controller, deployment, env, user = await run_installed(
            admin, plane, keys, namespace, tmp_path, name=f"{variant}-{revision}"
        )
        try:
            assert env["DRY_RUN"] == str(dry_run).lower()
            assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == (
                str(revision)
            )
            verified = next(
                line for line in controller.log_lines() if line["msg"] == "webhook tokens verified"
            )
            expected_kids = {"e2e-key-1", second_kid} if variant == "all-options" else {"e2e-key-1"}
            assert set(verified["kids"]) == expected_kids
            before = len(pod_write_events(plane, namespace=namespace, username=user))
            if dry_run:
                await record_in_dry_run(admin, namespace, keys, controller)
                expected: list[tuple[str, str]] = []
            else:
                pod = await record_once(admin, namespace, keys, controller)
                expected = [("patch", pod), ("delete", pod)]
        finally:
            assert controller.stop() == 0
        writes = pod_write_events(plane, namespace=namespace, username=user)[before:]
        assert [(e["verb"], e["objectRef"]["name"]) for e in writes] == expected
        # The next controller must not find this run's Jibris (after a dry run, a pod that
        # reported EXPIRED is still there, and a sweeper that writes would rightly delete it).
        await remove_jibris(admin, namespace)
        if revision == 1:
            # An upgrade that changes one value; the controller run from the new spec follows.
            dry_run = not dry_run
            helm(
                plane,
                tmp_path,
                "upgrade",
                *common,
                "--reuse-values",
                "--set",
                f"config.DRY_RUN={str(dry_run).lower()}",
            )

    history = json.loads(helm(plane, tmp_path, "history", RELEASE, "-n", namespace, "-o", "json"))
    assert [h["revision"] for h in history] == [1, 2]
    helm(plane, tmp_path, "uninstall", RELEASE, "--namespace", namespace, "--wait")
    assert await release_objects(admin, namespace) == []


async def release_objects(admin: k8s.ApiClient, namespace: str) -> list[str]:
    """What is left in the namespace with the release's instance label."""
    core: Any = k8s.CoreV1Api(admin)
    apps: Any = k8s.AppsV1Api(admin)
    rbac: Any = k8s.RbacAuthorizationV1Api(admin)
    policy: Any = k8s.PolicyV1Api(admin)
    networking: Any = k8s.NetworkingV1Api(admin)
    custom: Any = k8s.CustomObjectsApi(admin)
    left: list[str] = []
    for kind, call in (
        ("Deployment", apps.list_namespaced_deployment),
        ("ServiceAccount", core.list_namespaced_service_account),
        ("Service", core.list_namespaced_service),
        ("Role", rbac.list_namespaced_role),
        ("RoleBinding", rbac.list_namespaced_role_binding),
        ("PodDisruptionBudget", policy.list_namespaced_pod_disruption_budget),
        ("NetworkPolicy", networking.list_namespaced_network_policy),
    ):
        items = (await call(namespace, label_selector=INSTANCE)).items
        left += [f"{kind}/{item.metadata.name}" for item in items]
    for plural in ("servicemonitors", "prometheusrules"):
        found: list[dict[str, Any]] = []

        async def listed(plural: str = plural, found: list[dict[str, Any]] = found) -> bool:
            try:
                result = await custom.list_namespaced_custom_object(
                    "monitoring.coreos.com", "v1", namespace, plural, label_selector=INSTANCE
                )
            except ApiException as exc:
                if exc.status == 429:  # a new CRD's storage is still initialising
                    return False
                raise
            found += result["items"]
            return True

        await wait_until(listed, timeout=30, what=f"a list of {plural}")
        left += [f"{plural}/{item['metadata']['name']}" for item in found]
    # The controller pods go with their ReplicaSet (garbage collection), a little later.

    async def no_pods() -> bool:
        pods = await core.list_namespaced_pod(namespace, label_selector=INSTANCE)
        return not pods.items

    await wait_until(no_pods, timeout=60, what="the release's pods gone")
    return left
