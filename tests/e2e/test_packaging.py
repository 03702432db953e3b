"""What operators install, exercised on the real cluster (the chart: tests/e2e/test_helm.py).

- The container image's layout: the wheel installed into an ``/opt/venv``-style virtual
  environment as the Dockerfile does, made read-only (as with a read-only root filesystem and
  PYTHONDONTWRITEBYTECODE), and its ``jibri-pod-controller`` entry point run as the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from testbed.cluster import (
    REPO,
    ControllerProcess,
    apply,
    controller_kubeconfig,
    jibri_deployment,
    pod_write_events,
    service_account_user,
    start_recording,
    stop_recording,
    wait_until,
)
from testbed.controlplane import ControlPlane
from testbed.kubelet import KubeletThread
from tests.e2e.conftest import AUDIENCE, ISSUER, Keys
from tests.e2e.helpers import get_pod, is_busy, owned_by_replicaset, wait_spares

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CHART = REPO / "charts" / "jibri-pod-controller"


async def remove_jibris(admin: k8s.ApiClient, namespace: str) -> None:
    """Delete the Jibri Deployment (if any) and wait until none of its pods is left."""
    apps: Any = k8s.AppsV1Api(admin)
    with contextlib.suppress(ApiException):
        await apps.delete_namespaced_deployment("jibri", namespace, propagation_policy="Foreground")

    async def none_left() -> bool:
        pods = await k8s.CoreV1Api(admin).list_namespaced_pod(namespace, label_selector="app=jibri")
        listed = await apps.list_namespaced_deployment(
            namespace, field_selector="metadata.name=jibri"
        )
        return not pods.items and not listed.items

    await wait_until(none_left, timeout=60, what="no Jibri pod left")


async def deploy_jibris_for(
    admin: k8s.ApiClient, namespace: str, keys: Keys, controller: ControllerProcess
) -> k8s.V1Pod:
    """A fresh Deployment of two simulated Jibris posting to ``controller``; one spare."""
    await remove_jibris(admin, namespace)
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
    return (await wait_spares(admin, namespace, 2))[0]


async def record_once(
    admin: k8s.ApiClient, namespace: str, keys: Keys, controller: ControllerProcess
) -> str:
    """One recording through the controller: detached when it starts, deleted when it ends."""
    pod = await deploy_jibris_for(admin, namespace, keys, controller)
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


async def record_in_dry_run(
    admin: k8s.ApiClient, namespace: str, keys: Keys, controller: ControllerProcess
) -> str:
    """One recording through a controller in dry-run: both actions decided, neither written."""
    pod = await deploy_jibris_for(admin, namespace, keys, controller)
    name, ip = pod.metadata.name, pod.status.pod_ip

    def decided(action: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return (
                controller.metric(
                    "jibri_pod_controller_actions_total", action=action, result="dry-run"
                )
                >= 1
            )

        return check

    assert await start_recording(ip) == 200
    await wait_until(decided("detach"), timeout=20, what="a dry-run detach")
    assert await stop_recording(ip) == 200
    await wait_until(decided("delete"), timeout=20, what="a dry-run delete")
    current = await get_pod(admin, namespace, name)
    assert current is not None
    assert owned_by_replicaset(current)
    assert not is_busy(current)
    return str(name)


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
