"""The README's Install section, followed literally on a real API server.

Each path (Helm, kustomize) is taken from README.md itself: its shell blocks run, unchanged, in
bash with the cached kubectl and helm, in a scratch copy of the repository, into a fresh
namespace. Only what cannot run here is substituted, and the test says which lines:

- `NS=jibri` names a fresh namespace per run (the local control plane is shared by the tests);
- the `docker build ... && docker push ...` line needs a container engine and a registry, so it
  is not run. The image is still *set* literally (the chart's values, the overlay's `images:`);
  the fake kubelet runs no image, so no pull is attempted.

Then, on what the commands created: the Service selects exactly the controller's pods (made
Running and Ready by the fake kubelet), every Secret and key the pods mount exists, the Jibri
pods' webhook URL names that Service, the guide's checking commands find the pods, and the
controller, run as a process with the environment and the identity the installation gave it and
the keys the README made, detaches and deletes a simulated Jibri signing with the README's
private key.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from testbed.cluster import (
    REPO,
    ControllerProcess,
    JibriJwt,
    apply,
    controller_env_from_deployment,
    delete_namespace,
    jibri_deployment,
    pod_write_events,
    start_recording,
    stop_recording,
    wait_until,
)
from testbed.controlplane import ControlPlane
from testbed.kubelet import KubeletThread
from tests.e2e.helpers import get_pod, is_busy, owned_by_replicaset, wait_spares
from tests.tools import helm, kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

README = (REPO / "README.md").read_text()
GUIDE = (REPO / "docs" / "operations.md").read_text()
REGISTRY_COMMANDS = ("docker ",)
SERVICE = "jibri-pod-controller"


def section(text: str, heading: str) -> str:
    """The text under a Markdown heading, up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    ends = [m.start() for m in re.finditer(rf"\n#{{1,{len(level)}}} ", text[start:])]
    return text[start : start + ends[0]] if ends else text[start:]


def shell_blocks(text: str) -> str:
    return "\n".join(re.findall(r"```sh\n(.*?)```", text, re.DOTALL))


def literal_script(path: str, namespace: str) -> tuple[str, list[str]]:
    """The README's commands for one path, and the lines that were substituted."""
    commands = shell_blocks(section(README, f"### With {path}"))
    assert commands.count("\nNS=jibri\n") + commands.startswith("NS=jibri\n") == 1, commands
    substituted: list[str] = []
    lines = []
    for line in commands.splitlines():
        if line == "NS=jibri":
            substituted.append(line)
            line = f"NS={namespace}"
        elif line.startswith(REGISTRY_COMMANDS):
            substituted.append(line)
            line = f": not run here, needs a registry: {line!r}"
        lines.append(line)
    return "set -euo pipefail\nset -x\n" + "\n".join(lines) + "\n", substituted


def tools_dir(root: Path) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").symlink_to(kubectl())
    (bin_dir / "helm").symlink_to(helm())
    return bin_dir


def run(script: str, *, cwd: Path, plane: ControlPlane, bin_dir: Path) -> str:
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "KUBECONFIG": str(plane.admin_kubeconfig),
    }
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def checkout(root: Path) -> Path:
    """The parts of a clone the Install section uses, so its files land outside the repo."""
    work = root / "clone"
    work.mkdir()
    for part in ("charts", "deploy"):
        shutil.copytree(REPO / part, work / part)
    shutil.copy(REPO / "Dockerfile", work / "Dockerfile")
    return work


def matches(selector: dict[str, str], labels: dict[str, str] | None) -> bool:
    return all((labels or {}).get(k) == v for k, v in selector.items())


async def list_pods(admin: k8s.ApiClient, namespace: str) -> list[k8s.V1Pod]:
    return list((await k8s.CoreV1Api(admin).list_namespaced_pod(namespace)).items)


def mounted_secrets(pod: k8s.V1Pod) -> dict[str, set[str]]:
    """Secret name -> the keys a pod's volumes need from it (empty: the whole Secret)."""
    needed: dict[str, set[str]] = {}
    for volume in pod.spec.volumes or []:
        sources: list[Any] = []
        if volume.secret is not None:
            sources.append(volume.secret)
        if volume.projected is not None:
            sources += [s.secret for s in volume.projected.sources if s.secret is not None]
        for source in sources:
            name = getattr(source, "secret_name", None) or source.name
            keys = needed.setdefault(name, set())
            keys |= {item.key for item in source.items or []}
    return needed


async def check_installation(admin: k8s.ApiClient, namespace: str) -> list[str]:
    """The checks every path must pass; returns the controller's pod names."""
    core = k8s.CoreV1Api(admin)
    apps = k8s.AppsV1Api(admin)
    deployment = await apps.read_namespaced_deployment(SERVICE, namespace)
    assert deployment.status.ready_replicas == deployment.spec.replicas == 2
    pods = await list_pods(admin, namespace)
    controller_pods = [
        p for p in pods if matches(deployment.spec.selector.match_labels, p.metadata.labels)
    ]
    assert len(controller_pods) == 2
    for pod in controller_pods:
        ready = {c.type: c.status for c in pod.status.conditions}
        assert ready["Ready"] == "True", pod.metadata.name

    # The Service selects exactly the controller's pods, on the port they serve.
    service = await core.read_namespaced_service(SERVICE, namespace)
    selected = {p.metadata.name for p in pods if matches(service.spec.selector, p.metadata.labels)}
    assert selected == {p.metadata.name for p in controller_pods}
    container = deployment.spec.template.spec.containers[0]
    assert service.spec.ports[0].target_port in {p.name for p in container.ports}

    # Every Secret (and key) a pod mounts exists: otherwise a kubelet would never start it.
    jibri_pods = [p for p in pods if (p.metadata.labels or {}).get("app") == "jibri"]
    assert len(jibri_pods) == 3
    secrets_found = {
        s.metadata.name: s for s in (await core.list_namespaced_secret(namespace)).items
    }
    needed_by_jibri: set[str] = set()
    for pod in controller_pods + jibri_pods:
        for name, keys in mounted_secrets(pod).items():
            assert name in secrets_found, f"{pod.metadata.name} mounts the missing Secret {name}"
            assert keys <= set(secrets_found[name].data or {}), (pod.metadata.name, name, keys)
            if pod in jibri_pods:
                needed_by_jibri.add(name)
    assert needed_by_jibri == {"jibri-webhook-signing-key"}
    assert set(mounted_secrets(controller_pods[0])) == {"jibri-webhook-keys"}

    # The Jibri pods post their webhooks to that Service.
    for pod in jibri_pods:
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        url = env["JIBRI_WEBHOOK_SUBSCRIBER"]
        assert url.startswith(f"http://{SERVICE}.$(NAMESPACE).svc.cluster.local/webhook/"), url
        assert service.spec.ports[0].port == 80

    # The NetworkPolicies: the controller's port open to the Jibri pods, Jibri's API port only
    # to the controller's pods.
    policies = (await k8s.NetworkingV1Api(admin).list_namespaced_network_policy(namespace)).items
    assert len(policies) == 2
    for policy in policies:
        target = policy.spec.pod_selector.match_labels
        peers = [p.pod_selector.match_labels for p in policy.spec.ingress[0]._from]
        if all(matches(target, p.metadata.labels) for p in jibri_pods):
            assert all(matches(peers[0], p.metadata.labels) for p in controller_pods)
        else:
            assert all(matches(target, p.metadata.labels) for p in controller_pods)
            assert all(matches(peers[0], p.metadata.labels) for p in jibri_pods)
    return sorted(p.metadata.name for p in controller_pods)


def guide_checks_find(
    pod_names: list[str], namespace: str, *, cwd: Path, plane: ControlPlane, bin_dir: Path
) -> None:
    """Run the guide's `get pods -l` checking commands; each lists every controller pod."""
    commands = [
        line.split("#")[0].strip()
        for line in shell_blocks(section(GUIDE, "### Check the installation")).splitlines()
        if " get pods -l app.kubernetes.io/" in line
    ]
    assert commands
    for command in commands:
        assert command.startswith("kubectl -n jibri "), command
        output = run(
            command.replace("-n jibri ", f"-n {namespace} ", 1),
            cwd=cwd,
            plane=plane,
            bin_dir=bin_dir,
        )
        listed = sorted(line.split()[0] for line in output.splitlines()[1:] if line.strip())
        assert listed == pod_names, (command, output)


async def receives_webhooks(
    admin: k8s.ApiClient,
    namespace: str,
    *,
    plane: ControlPlane,
    work: Path,
    tmp_path: Path,
) -> None:
    """The installed controller, as a process, detaches and deletes a recording's pod."""
    deployment = await k8s.AppsV1Api(admin).read_namespaced_deployment(SERVICE, namespace)
    doc = admin.sanitize_for_serialization(deployment)
    env = controller_env_from_deployment(doc, namespace=namespace, pod_name="readme-0")
    # What a pod would find at its mount path: the public keys from jibri-webhook-keys.
    keys = tmp_path / "keys"
    keys.mkdir()
    public = await k8s.CoreV1Api(admin).read_namespaced_secret("jibri-webhook-keys", namespace)
    for name, data in (public.data or {}).items():
        (keys / name).write_bytes(base64.b64decode(data))
    env |= {"JWT_KEYS_DIR": str(keys), "SWEEP_INTERVAL": "2"}
    env.pop("PORT", None)
    account = deployment.spec.template.spec.service_account_name
    user = f"system:serviceaccount:{namespace}:{account}"
    kubeconfig = plane.kubeconfig_for(
        user, ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    )
    controller = ControllerProcess(
        name="readme-0",
        kubeconfig=kubeconfig,
        namespace=namespace,
        log_path=tmp_path / "readme-0.log",
        env=env,
    ).start()
    try:
        await controller.wait_ready()
        # The example Jibri pool gives way to simulated Jibris (same labels), which sign with
        # the private key and kid the README created.
        apps = k8s.AppsV1Api(admin)
        await apps.delete_namespaced_deployment("jibri", namespace)

        async def no_jibri() -> bool:
            return not [
                p
                for p in await list_pods(admin, namespace)
                if (p.metadata.labels or {}).get("app") == "jibri"
            ]

        await wait_until(no_jibri, timeout=60, what="example Jibri pods gone")
        jwt = JibriJwt(
            key_path=work / "jibri-webhook-signing.key",
            kid="jibri-webhook-1",
            issuer=env["JWT_ISSUER"],
            audience=env["JWT_AUDIENCE"],
        )
        await apply(
            admin,
            [
                jibri_deployment(
                    namespace=namespace,
                    replicas=2,
                    subscribers=[controller.webhook_base()],
                    jwt=jwt,
                )
            ],
        )
        pod = (await wait_spares(admin, namespace, 2))[0]
        name, ip = pod.metadata.name, pod.status.pod_ip
        assert await start_recording(ip) == 200

        async def detached() -> bool:
            current = await get_pod(admin, namespace, name)
            return current is not None and is_busy(current) and not owned_by_replicaset(current)

        await wait_until(detached, timeout=30, what="detached")
        assert await stop_recording(ip) == 200

        async def gone() -> bool:
            return await get_pod(admin, namespace, name) is None

        await wait_until(gone, timeout=30, what="deleted")
    finally:
        controller.stop()
    writes = [
        (e["verb"], e["objectRef"]["name"])
        for e in pod_write_events(plane, namespace=namespace, username=user)
    ]
    assert writes == [("patch", name), ("delete", name)]


@pytest.fixture
async def fresh_namespace(admin: k8s.ApiClient) -> AsyncIterator[list[str]]:
    """Namespaces the test's commands create; deleted afterwards."""
    created: list[str] = []
    yield created
    for name in created:
        await delete_namespace(admin, name)


@pytest.mark.parametrize("path", ["Helm", "kustomize"])
async def test_readme_install_path_works_when_followed_literally(
    path: str,
    admin: k8s.ApiClient,
    plane: ControlPlane,
    kubelet: KubeletThread,
    fresh_namespace: list[str],
    tmp_path: Path,
) -> None:
    namespace = f"readme-{path.lower()[:4]}-{secrets.token_hex(3)}"
    fresh_namespace.append(namespace)
    script, substituted = literal_script(path, namespace)
    assert substituted == [
        "NS=jibri",
        'docker build -t "$IMAGE:$TAG" . && docker push "$IMAGE:$TAG"',
    ]
    # The other path's install command is not part of this one.
    other = "kubectl apply -k" if path == "Helm" else "helm install"
    assert other not in script
    work = checkout(tmp_path)
    bin_dir = tools_dir(tmp_path)
    await asyncio.to_thread(run, script, cwd=work, plane=plane, bin_dir=bin_dir)

    ns = await k8s.CoreV1Api(admin).read_namespace(namespace)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "baseline"
    names = await check_installation(admin, namespace)
    await asyncio.to_thread(
        guide_checks_find, names, namespace, cwd=work, plane=plane, bin_dir=bin_dir
    )
    image = (
        (await k8s.AppsV1Api(admin).read_namespaced_deployment(SERVICE, namespace))
        .spec.template.spec.containers[0]
        .image
    )
    assert image == "registry.example.com/jibri-pod-controller:0.1.0"
    await receives_webhooks(admin, namespace, plane=plane, work=work, tmp_path=tmp_path)


def notes(plane: ControlPlane, tmp_path: Path, *values: str) -> str:
    """What `helm install` prints after installing (a client-side dry run renders it too)."""
    args = [str(helm()), "install", SERVICE, str(REPO / "charts" / SERVICE), "-n", "jibri"]
    args += ["--dry-run=client", *values]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "KUBECONFIG": str(plane.admin_kubeconfig),
    }
    result = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_warn_about_an_image_no_registry_serves(plane: ControlPlane, tmp_path: Path) -> None:
    text = notes(plane, tmp_path)
    assert 'WARNING: the image is "jibri-pod-controller:0.1.0", which no registry serves' in text
    assert "get pods -l app.kubernetes.io/name=jibri-pod-controller," in text
    set_image = notes(plane, tmp_path, "--set", "image.repository=registry.example.com/jpc")
    assert "WARNING" not in set_image
    assert "NetworkPolicies: the controller's port is open only" in set_image
    no_policy = notes(plane, tmp_path, "--set", "networkPolicy.enabled=false")
    assert "WARNING: no NetworkPolicy" in no_policy
