"""The container image, built from the Dockerfile by scripts/build-image.sh (buildah, no daemon)
and run by podman as a controller replica against the local control plane.

As a hardened pod runs it: runc, a read-only root filesystem, every capability dropped,
uid/gid 1000, only the kubeconfig of the controller's ServiceAccount and the public keys mounted
(read-only). One recording gives exactly [patch, delete] in the API server's audit log, and
SIGTERM stops the container with exit code 0.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s

from testbed.cluster import (
    ControllerProcess,
    controller_kubeconfig,
    pod_write_events,
    service_account_user,
)
from testbed.controlplane import ControlPlane
from testbed.kubelet import KubeletThread
from testbed.tools import image
from tests.e2e.conftest import AUDIENCE, ISSUER, Keys
from tests.e2e.test_packaging import record_once
from tests.static.test_release import package_version

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

KUBECONFIG = "/etc/jibri-pod-controller/kubeconfig"
KEYS = "/etc/jibri-pod-controller/keys"


def readable_copy(source: Path, target: Path) -> Path:
    """A copy the container's user (another uid) may read: the mounts are read-only anyway."""
    if source.is_dir():
        shutil.copytree(source, target)
        target.chmod(0o755)
        for path in target.iterdir():
            path.chmod(0o644)
    else:
        shutil.copy(source, target)
        target.chmod(0o644)
    return target


def test_image_carries_the_package_version() -> None:
    built = image()
    label = '{{index .Labels "org.opencontainers.image.version"}}'
    inspected = subprocess.run(
        built.podman("image", "inspect", "--format", label, built.name),
        capture_output=True,
        text=True,
        check=True,
    )
    assert inspected.stdout.strip() == package_version()
    assert built.name.endswith(f":{package_version()}")


async def test_image_runs_as_a_controller_replica(
    admin: k8s.ApiClient,
    namespace: str,
    rbac: str,
    keys: Keys,
    kubelet: KubeletThread,
    plane: ControlPlane,
    tmp_path: Path,
) -> None:
    built = image()
    name = f"jpc-{namespace}"
    mounts = tmp_path / "mounts"
    mounts.mkdir()
    mounts.chmod(0o755)
    kubeconfig = readable_copy(controller_kubeconfig(plane, namespace), mounts / "kubeconfig")
    public_keys = readable_copy(keys.directory, mounts / "keys")
    controller = ControllerProcess(
        name="image-0",
        kubeconfig=kubeconfig,
        namespace=namespace,
        log_path=tmp_path / "image-0.log",
    )
    # What the Deployment sets, plus where the API server is; nothing else crosses over.
    env = {
        "KUBECONFIG": KUBECONFIG,
        "NAMESPACE": namespace,
        "POD_NAME": "image-0",
        "PORT": str(controller.port),
        "JIBRI_HEALTH_PORT": "2222",
        "LOG_FORMAT": "json",
        "SWEEP_INTERVAL": "2",
        "JWT_KEYS_DIR": KEYS,
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
    }
    controller.command = built.run_command(
        name=name, env=env, mounts=[(kubeconfig, KUBECONFIG), (public_keys, KEYS)]
    )
    controller.start()
    try:
        # The first start of a container copies the image's files (vfs storage): slow.
        await controller.wait_ready(timeout=180)
        pod = await record_once(admin, namespace, keys, controller)
        assert controller.stop() == 0, controller.tail()
    finally:
        controller.stop()
        await asyncio.to_thread(
            subprocess.run,
            built.podman("rm", "--force", "--ignore", name),
            capture_output=True,
            timeout=120,
            check=False,
        )
    lines = controller.log_lines()
    assert any(line.get("msg") == "listening" for line in lines), controller.tail()
    assert any(line.get("msg") == "stopped" for line in lines), controller.tail()
    writes = pod_write_events(plane, namespace=namespace, username=service_account_user(namespace))
    assert [(e["verb"], e["objectRef"]["name"]) for e in writes] == [
        ("patch", pod),
        ("delete", pod),
    ]
