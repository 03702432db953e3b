"""What operators install, exercised on the real cluster.

- The Helm chart: rendered with `helm template`, its ServiceAccount, Role and RoleBinding applied,
  and the controller run with the environment of the chart's Deployment and the identity the
  chart binds; a recording is then detached and deleted.
- The container image's layout: the wheel installed into an ``/opt/venv``-style virtual
  environment as the Dockerfile does, made read-only (as with a read-only root filesystem and
  PYTHONDONTWRITEBYTECODE), and its ``jibri-pod-controller`` entry point run as the controller.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client as k8s

from testbed.cluster import (
    REPO,
    ControllerProcess,
    apply,
    controller_env_from_deployment,
    controller_kubeconfig,
    jibri_deployment,
    pod_write_events,
    service_account_user,
    start_recording,
    stop_recording,
    wait_until,
)
from testbed.controlplane import ControlPlane, find_binaries
from testbed.kubelet import KubeletThread
from tests.e2e.conftest import AUDIENCE, ISSUER, Keys
from tests.e2e.helpers import get_pod, is_busy, owned_by_replicaset, wait_spares

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CHART = REPO / "charts" / "jibri-pod-controller"


def render_chart(namespace: str, *values: str) -> list[dict[str, object]]:
    helm = find_binaries() / "helm"
    # The release name keeps the ServiceAccount's full name within a certificate CN's 64 chars.
    args = [str(helm), "template", "jibri-pod-controller", str(CHART), "--namespace", namespace]
    for value in values:
        args += ["--set", value]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


async def record_once(
    admin: k8s.ApiClient, namespace: str, keys: Keys, controller: ControllerProcess
) -> str:
    """One recording through the controller: detached when it starts, deleted when it ends."""
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
    name, ip = pod.metadata.name, pod.status.pod_ip
    assert await start_recording(ip) == 200

    async def detached() -> bool:
        current = await get_pod(admin, namespace, name)
        return current is not None and is_busy(current) and not owned_by_replicaset(current)

    await wait_until(detached, timeout=20, what="detached")
    assert await stop_recording(ip) == 200

    async def gone() -> bool:
        return await get_pod(admin, namespace, name) is None

    await wait_until(gone, timeout=20, what="deleted")
    return str(name)


async def test_helm_chart_installs_a_working_controller(
    admin: k8s.ApiClient,
    namespace: str,
    keys: Keys,
    kubelet: KubeletThread,
    plane: ControlPlane,
    tmp_path: Path,
) -> None:
    docs = render_chart(
        namespace,
        f"config.JWT_ISSUER={ISSUER}",
        f"config.JWT_AUDIENCE={AUDIENCE}",
        "config.SWEEP_INTERVAL=2",
    )
    kinds = {str(d["kind"]) for d in docs}
    assert {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"} <= kinds
    rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    await apply(admin, rbac)  # type: ignore[arg-type]
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    name = str(account["metadata"]["name"])  # type: ignore[index]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = controller_env_from_deployment(deployment, namespace=namespace, pod_name="chart-0")
    # Only what cannot apply outside a pod changes: where the keys and the API server are.
    env |= {"JWT_KEYS_DIR": str(keys.directory), "LOG_FORMAT": "json"}
    env.pop("PORT", None)
    user = f"system:serviceaccount:{namespace}:{name}"
    kubeconfig = plane.kubeconfig_for(
        user, ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    )
    controller = ControllerProcess(
        name="chart-0",
        kubeconfig=kubeconfig,
        namespace=namespace,
        log_path=tmp_path / "chart-0.log",
        env=env,
    ).start()
    try:
        await controller.wait_ready()
        pod = await record_once(admin, namespace, keys, controller)
    finally:
        controller.stop()
    writes = [
        (e["verb"], e["objectRef"]["name"])
        for e in pod_write_events(plane, namespace=namespace, username=user)
    ]
    assert writes == [("patch", pod), ("delete", pod)]


def install_like_the_image(root: Path) -> Path:
    """Build the wheel and install it into <root>/opt/venv, as the Dockerfile's builder does."""
    wheels, venv = root / "wheels", root / "opt" / "venv"
    pip = ["-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [sys.executable, *pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(REPO)],
        check=True,
    )
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    wheel = next(wheels.glob("jibri_pod_controller-*.whl"))
    subprocess.run([str(venv / "bin" / "python"), *pip, "install", str(wheel)], check=True)
    return venv


def _read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode):
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode):
            path.chmod(mode | stat.S_IWUSR)


async def test_image_layout_runs_read_only(
    admin: k8s.ApiClient,
    namespace: str,
    rbac: str,
    keys: Keys,
    kubelet: KubeletThread,
    plane: ControlPlane,
    tmp_path: Path,
) -> None:
    venv = await asyncio.to_thread(install_like_the_image, tmp_path)
    entry = venv / "bin" / "jibri-pod-controller"
    assert entry.is_file()
    _read_only(venv)
    try:
        controller = ControllerProcess(
            name="image-0",
            kubeconfig=controller_kubeconfig(plane, namespace),
            namespace=namespace,
            log_path=tmp_path / "image-0.log",
            command=(str(entry),),
            env={
                "PYTHONDONTWRITEBYTECODE": "1",
                "SWEEP_INTERVAL": "2",
                "JWT_KEYS_DIR": str(keys.directory),
                "JWT_ISSUER": ISSUER,
                "JWT_AUDIENCE": AUDIENCE,
                "HOME": "/nonexistent",
            },
        ).start()
        try:
            await controller.wait_ready()
            pod = await record_once(admin, namespace, keys, controller)
        finally:
            assert controller.stop() == 0
        assert not any(venv.rglob("__pycache__/*.cpython-*.pyc.*"))  # no write attempts left
        writes = pod_write_events(
            plane, namespace=namespace, username=service_account_user(namespace)
        )
        assert [(e["verb"], e["objectRef"]["name"]) for e in writes] == [
            ("patch", pod),
            ("delete", pod),
        ]
    finally:
        _writable(venv)
    assert os.access(venv, os.W_OK)
