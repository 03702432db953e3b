"""Putting the pieces together on a control plane: the controller's identity and RBAC from
``deploy/``, a Deployment of simulated Jibris, and the controller as a process of its own.

Shared by the end-to-end tests, the demo and the benchmarks, so all three exercise the same
manifests and the same command line an operator would run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from testbed.controlplane import ControlPlane
from testbed.observing import json_lines
from testbed.observing import wait_until as wait_until  # the end-to-end tests' name for it
from testbed.ports import listen_port

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
SERVICE_ACCOUNT = "jibri-pod-controller"
RUNTIME_PYTHON = REPO / ".venv" / "runtime" / "bin" / "python"
"""The controller's own environment (scripts/bootstrap.sh): the package and its runtime
dependencies only, as in the image, so no test-only package reaches the controller and its
memory is what it is when deployed (PyJWT, for one, loads `cryptography` whenever installed)."""
CONTROLLER_PYTHON = str(RUNTIME_PYTHON) if RUNTIME_PYTHON.exists() else sys.executable
DEFAULT_COMMAND: tuple[str, ...] = (CONTROLLER_PYTHON, "-m", "jibri_pod_controller")
JIBRI_PORT = 2222
IDLE_LABELS = {"app": "jibri", "state": "idle"}
BUSY_LABELS = {"app": "jibri", "state": "busy"}

# ---------------------------------------------------------------------------------------------
# Identity and RBAC


def service_account_user(namespace: str) -> str:
    return f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}"


def controller_kubeconfig(plane: ControlPlane, namespace: str) -> Path:
    """A kubeconfig that authenticates as the controller's ServiceAccount in ``namespace``."""
    return plane.kubeconfig_for(
        service_account_user(namespace),
        ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
    )


def load_manifests(*names: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in names:
        with (DEPLOY / name).open() as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d)
    return docs


def rbac_manifests(
    namespace: str, *, drop_rules: Callable[[dict[str, Any]], bool] | None = None
) -> list[dict[str, Any]]:
    """deploy/'s ServiceAccount, Role and RoleBinding, placed in ``namespace``.

    ``drop_rules`` removes matching rules from the Role (to prove a missing permission is
    visible).
    """
    docs = load_manifests("serviceaccount.yaml", "rbac.yaml")
    for doc in docs:
        doc.setdefault("metadata", {})["namespace"] = namespace
        for subject in doc.get("subjects") or ():
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace
        if doc.get("kind") == "Role" and drop_rules is not None:
            doc["rules"] = [r for r in doc["rules"] if not drop_rules(r)]
    return docs


async def apply(api: k8s.ApiClient, docs: Sequence[Mapping[str, Any]]) -> None:
    """Create each object (these tests and demos always start from an empty namespace).

    Plain dicts are sent as they are; the client's typed signatures want models, hence Any.
    """
    core: Any = k8s.CoreV1Api(api)
    rbac: Any = k8s.RbacAuthorizationV1Api(api)
    apps: Any = k8s.AppsV1Api(api)
    for doc in docs:
        kind, ns = doc["kind"], doc["metadata"].get("namespace")
        if kind == "ServiceAccount":
            await core.create_namespaced_service_account(ns, doc)
        elif kind == "Role":
            await rbac.create_namespaced_role(ns, doc)
        elif kind == "RoleBinding":
            await rbac.create_namespaced_role_binding(ns, doc)
        elif kind == "Deployment":
            await apps.create_namespaced_deployment(ns, doc)
        elif kind == "Namespace":
            await core.create_namespace(doc)
        elif kind == "ConfigMap":
            await core.create_namespaced_config_map(ns, doc)
        elif kind == "Secret":
            await core.create_namespaced_secret(ns, doc)
        elif kind == "JibriPool":
            group, _, version = doc["apiVersion"].partition("/")
            await k8s.CustomObjectsApi(api).create_namespaced_custom_object(
                group, version, ns, JIBRIPOOL_PLURAL, doc
            )
        else:
            raise ValueError(f"apply: unsupported kind {kind}")


JIBRIPOOL_CRD = DEPLOY / "crds" / "jibripools.yaml"
JIBRIPOOL_GROUP, JIBRIPOOL_VERSION, JIBRIPOOL_PLURAL = (
    "jibri-pod-controller.io",
    "v1alpha1",
    "jibripools",
)


def jibri_pool(*, namespace: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A JibriPool (deploy/crds/), as `apply` creates it."""
    return {
        "apiVersion": f"{JIBRIPOOL_GROUP}/{JIBRIPOOL_VERSION}",
        "kind": "JibriPool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": dict(spec),
    }


async def install_crds(api: k8s.ApiClient, *paths: Path) -> None:
    """Create each CustomResourceDefinition (one that exists already is kept: a definition
    outlives the namespaces of tests and demos), then wait until all are Established."""
    extensions: Any = k8s.ApiextensionsV1Api(api)
    names = []
    for path in paths:
        doc = yaml.safe_load(path.read_text())
        names.append(doc["metadata"]["name"])
        try:
            await extensions.create_custom_resource_definition(doc)
        except ApiException as exc:
            if exc.status != 409:
                raise

    async def established() -> bool:
        for name in names:
            got = await extensions.read_custom_resource_definition(name)
            conditions = {c.type: c.status for c in got.status.conditions or ()}
            if conditions.get("Established") != "True":
                return False
        return True

    await wait_until(established, timeout=30, what=f"{', '.join(names)} established")


async def create_namespace(api: k8s.ApiClient, name: str) -> None:
    await apply(api, [{"kind": "Namespace", "metadata": {"name": name}}])


async def delete_namespace(api: k8s.ApiClient, name: str) -> None:
    with contextlib.suppress(ApiException):
        await k8s.CoreV1Api(api).delete_namespace(name)


# ---------------------------------------------------------------------------------------------
# The controller's environment, from deploy/deployment.yaml

# `$(NAME)` refers to a variable defined earlier in the same list; `$$` is a literal `$`.
_ENV_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
_POD_FIELDS = ("metadata.name", "metadata.namespace")


def controller_container(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """The controller's container in a Deployment: the one named like the Deployment, else the
    only one."""
    containers: Sequence[Mapping[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    name = doc.get("metadata", {}).get("name")
    for container in containers:
        if container.get("name") == name:
            return container
    if len(containers) != 1:
        raise ValueError(f"no container named {name!r} among {len(containers)} containers")
    return containers[0]


def controller_env_from_deployment(
    doc: Mapping[str, Any], *, namespace: str, pod_name: str
) -> dict[str, str]:
    """The container environment a pod of the Deployment ``doc`` would get, as far as it can
    apply to a process outside a pod.

    Plain ``value``s are kept (with ``$(NAME)`` references to earlier entries expanded, as the
    kubelet does), and the downward-API fields ``metadata.name`` and ``metadata.namespace``
    become ``pod_name`` and ``namespace``. Entries read from Secrets, ConfigMaps, resource
    fields or other pod fields have no meaning here and are left out; so is ``envFrom``.
    """
    env: dict[str, str] = {}

    def expand(value: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:
                return "$"
            return env.get(name, match.group(0))

        return _ENV_REFERENCE.sub(substitute, value)

    for entry in controller_container(doc).get("env") or ():
        name = entry["name"]
        source = entry.get("valueFrom")
        if source is None:
            env[name] = expand(str(entry.get("value", "")))
            continue
        field_path = (source.get("fieldRef") or {}).get("fieldPath")
        if field_path in _POD_FIELDS and len(source) == 1:
            env[name] = pod_name if field_path == "metadata.name" else namespace
    return env


# ---------------------------------------------------------------------------------------------
# Simulated Jibris


@dataclass(frozen=True)
class JibriJwt:
    key_path: Path
    kid: str
    issuer: str
    audience: str
    ttl_seconds: int = 24 * 3600


@dataclass(frozen=True)
class WebhookKeys:
    """A fresh signing key: the public half for the controller, the private one for Jibri."""

    directory: Path
    """Public keys as the controller reads them (JWT_KEYS_DIR): ``<kid>.pem``."""
    jibri: JibriJwt
    """What each simulated Jibri signs with (a PKCS#1 PEM, as Jibri requires)."""


def make_webhook_keys(root: Path, *, kid: str, issuer: str, audience: str) -> WebhookKeys:
    """Generate an RSA key pair under ``root`` the way an operator sets up Jibri's jwt-info."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = root / f"{kid}.private.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public_dir = root / "public"
    public_dir.mkdir(exist_ok=True)
    (public_dir / f"{kid}.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return WebhookKeys(
        directory=public_dir,
        jibri=JibriJwt(key_path=private, kid=kid, issuer=issuer, audience=audience),
    )


def jibri_deployment(
    *,
    namespace: str,
    replicas: int,
    subscribers: Sequence[str],
    name: str = "jibri",
    status_period: float = 60.0,
    jwt: JibriJwt | None = None,
    pre_stop: bool = False,
    grace_seconds: int = 5,
) -> dict[str, Any]:
    """A Deployment of simulated Jibris with the seed's label scheme (idle spares).

    ``pre_stop``: with deploy/jibri's preStop hook (Jibri's graceful shutdown, then a wait
    until it has exited), which the fake kubelet runs in the pod's context.
    """
    env = [
        {"name": "SIM_JIBRI", "value": "true"},
        {"name": "SIM_JIBRI_PORT", "value": str(JIBRI_PORT)},
        {"name": "SIM_JIBRI_STATUS_PERIOD", "value": str(status_period)},
        {"name": "SIM_JIBRI_WEBHOOK_SUBSCRIBERS", "value": ",".join(subscribers)},
    ]
    if jwt is not None:
        env += [
            {"name": "SIM_JIBRI_JWT_KEY_PATH", "value": str(jwt.key_path)},
            {"name": "SIM_JIBRI_JWT_KID", "value": jwt.kid},
            {"name": "SIM_JIBRI_JWT_ISSUER", "value": jwt.issuer},
            {"name": "SIM_JIBRI_JWT_AUDIENCE", "value": jwt.audience},
            {"name": "SIM_JIBRI_JWT_TTL", "value": str(jwt.ttl_seconds)},
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(IDLE_LABELS)},
            "template": {
                "metadata": {"labels": dict(IDLE_LABELS)},
                "spec": {
                    "terminationGracePeriodSeconds": grace_seconds,
                    "containers": [
                        {
                            "name": "jibri",
                            "image": "simulated-jibri",
                            "ports": [{"containerPort": JIBRI_PORT, "name": "api"}],
                            "env": env,
                            **({"lifecycle": jibri_lifecycle()} if pre_stop else {}),
                        }
                    ],
                },
            },
        },
    }


def jibri_lifecycle() -> dict[str, Any]:
    """The Jibri container's ``lifecycle`` (its preStop hook) as deploy/jibri ships it."""
    with (DEPLOY / "jibri" / "deployment.yaml").open() as f:
        doc = yaml.safe_load(f)
    lifecycle: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]["lifecycle"]
    return lifecycle


async def jibri_call(
    ip: str, path: str, body: Mapping[str, Any] | None = None, *, port: int = JIBRI_PORT
) -> int:
    """POST to a simulated Jibri's API (e.g. startService) and return the HTTP status."""

    def call() -> int:
        data = json.dumps(body or {}).encode()
        request = urllib.request.Request(
            f"http://{ip}:{port}{path}",
            data=data,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as exc:
            with exc:  # an HTTPError holds the response open
                return exc.code

    return await asyncio.to_thread(call)


async def start_recording(ip: str, session_id: str = "rec", *, port: int = JIBRI_PORT) -> int:
    return await jibri_call(
        ip,
        "/jibri/api/v1.0/startService",
        {"sessionId": session_id, "recordingMode": "FILE", "callParams": {"callUrlInfo": {}}},
        port=port,
    )


async def stop_recording(ip: str, *, port: int = JIBRI_PORT) -> int:
    return await jibri_call(ip, "/jibri/api/v1.0/stopService", port=port)


# ---------------------------------------------------------------------------------------------
# The controller, as a process


@dataclass
class ControllerProcess:
    """One controller replica run as a separate process, exactly as its container runs it."""

    name: str
    kubeconfig: Path
    namespace: str
    log_path: Path
    port: int = field(default_factory=listen_port)
    env: Mapping[str, str] = field(default_factory=dict)
    command: Sequence[str] = DEFAULT_COMMAND
    ready_path: str = "/readyz"
    """Where readiness is asked (the original tool's readinessProbe asks GET /)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def webhook_base(self) -> str:
        return f"{self.url}/webhook/$POD_NAME"

    def start(self) -> ControllerProcess:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "KUBECONFIG": str(self.kubeconfig),
            "NAMESPACE": self.namespace,
            "POD_NAME": self.name,
            "PORT": str(self.port),
            "JIBRI_HEALTH_PORT": str(JIBRI_PORT),
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                list(self.command),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:  # an HTTPError holds the response open
                return exc.code, exc.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(exc)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until ``ready_path`` answers 200; if the free port was taken meanwhile, start
        again on another."""
        restarts = 0

        async def ready() -> bool:
            nonlocal restarts
            if self.process is not None and self.process.poll() is not None:
                if "cannot listen on port" in self.tail(5) and restarts < 3:
                    restarts += 1
                    self.port = listen_port()
                    self.start()
                    return False
                raise RuntimeError(f"{self.name} exited {self.process.returncode}:\n{self.tail()}")
            status, _ = await asyncio.to_thread(self.get, self.ready_path)
            return status == 200

        try:
            await wait_until(ready, timeout=timeout, interval=0.2, what=f"{self.name} ready")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.tail()}") from None

    def metrics(self) -> dict[str, float]:
        """The Prometheus text exposition, as {'name{labels}': value}."""
        status, text = self.get("/metrics")
        if status != 200:
            return {}
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for key, value in self.metrics().items():
            base, _, rest = key.partition("{")
            if base != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += value
        return total

    def log_lines(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return json_lines(self.log_path.read_bytes())

    def tail(self, n: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit within 15 s."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                return self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
        return self.process.wait(10)


def pod_write_events(plane: ControlPlane, *, namespace: str, username: str) -> list[dict[str, Any]]:
    """Successful writes to pods (patch, update, delete, create) made by ``username``."""
    events = plane.audit_events(username=username, namespace=namespace)
    return [
        e
        for e in events
        if (e.get("objectRef") or {}).get("resource") == "pods"
        and 200 <= int((e.get("responseStatus") or {}).get("code", 0)) < 300
    ]


def all_write_events(plane: ControlPlane, *, namespace: str, username: str) -> list[dict[str, Any]]:
    """Every write attempt by ``username`` in ``namespace``, whatever its result."""
    return plane.audit_events(username=username, namespace=namespace)


# ---------------------------------------------------------------------------------------------
# Helpers for many pods at once (the benchmarks)


def jibri_pod(
    *,
    namespace: str,
    name: str,
    subscribers: Sequence[str],
    status_period: float = 60.0,
    jwt: JibriJwt | None = None,
    labels: Mapping[str, str] = IDLE_LABELS,
) -> dict[str, Any]:
    """One simulated Jibri pod, exactly like a pod of `jibri_deployment` but without an owner.

    Creating pods directly is several times faster than scaling a Deployment to thousands.
    """
    template = jibri_deployment(
        namespace=namespace,
        replicas=1,
        subscribers=subscribers,
        status_period=status_period,
        jwt=jwt,
    )["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": template["spec"],
    }
