"""The bench itself: one control plane and one fake kubelet process for the whole run, a fresh
namespace (with deploy/'s RBAC) per figure, controllers started from a command line with their
restricted identity, and the simulated Jibris they serve.

The fake kubelet runs in a process of its own, not in a thread of the bench: thousands of
simulated Jibris must not share an interpreter (and its GIL) with the clocks that time the
controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
from kubernetes_asyncio import client as k8s

from bench.harness.observing import Sampler
from bench.harness.scale import Impl, Scale
from bench.profiling import Profiler
from testbed.cluster import (
    BUSY_LABELS,
    REPO,
    ControllerProcess,
    WebhookKeys,
    apply,
    controller_kubeconfig,
    create_namespace,
    jibri_pod,
    make_webhook_keys,
    rbac_manifests,
    service_account_user,
)
from testbed.controlplane import READS_AUDITED_GROUP, ControlPlane
from testbed.kube import new_api_client
from testbed.ports import listen_port

ISSUER = "jibri-bench"
AUDIENCE = "jibri-pod-controller"
KID = "bench-key-1"
JIBRI_PORT = 2222
JIBRI_SELECTOR = "app=jibri"
START_SERVICE = "/jibri/api/v1.0/startService"
START_BODY = {"sessionId": "bench", "recordingMode": "FILE", "callParams": {"callUrlInfo": {}}}
MERGE_PATCH = "application/merge-patch+json"
MIB = 1024 * 1024
CONTRACT_ENV = {
    "JIBRI_BUSY_LABELS": ",".join(f"{k}={v}" for k, v in BUSY_LABELS.items()),
    "SWEEP_INTERVAL": "60",
}
"""The original tool's variables that `ControllerProcess` does not set (values: the defaults)."""


# ---------------------------------------------------------------------------------------------
# The fake kubelet


class KubeletProcess:
    """`python -m testbed.kubelet` for every namespace, in its own process group."""

    def __init__(self, kubeconfig: Path, log_path: Path) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "testbed.kubelet", "--kubeconfig", str(self.kubeconfig)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.process

    async def start(self, timeout: float = 60.0) -> None:
        """Start it; return once it has listed the pods and is watching."""
        process = self.spawn()
        deadline = time.monotonic() + timeout
        while b"watching pods" not in self.log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the fake kubelet did not start:\n{tail}")
            await asyncio.sleep(0.1)

    def stop(self, grace: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


# ---------------------------------------------------------------------------------------------
# Pods


@dataclass(frozen=True)
class PodInfo:
    name: str
    uid: str
    ip: str
    resource_version: str
    labels: Mapping[str, str]


def _is_running(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    return bool(status.get("podIP")) and status.get("phase") == "Running" and ready


async def read_raw(response: Any, what: str) -> bytes:
    """Read a raw (``_preload_content=False``) response; raise on an error status."""
    try:
        body: bytes = await response.read()
    finally:
        response.release()
    if int(response.status) >= 400:
        raise RuntimeError(f"{what}: HTTP {response.status} {body[:300]!r}")
    return body


# ---------------------------------------------------------------------------------------------
# The bench


@dataclass
class Bench:
    plane: ControlPlane
    admin: k8s.ApiClient
    kubelet: KubeletProcess
    keys: WebhookKeys
    workdir: Path
    scale: Scale
    profile: bool = False
    kubelet_sampler: Sampler | None = None
    _kubeconfigs: dict[str, Path] = field(default_factory=dict)
    _controllers: list[ControllerProcess] = field(default_factory=list)
    _samplers: list[Sampler] = field(default_factory=list)

    @classmethod
    async def open(cls, workdir: Path, scale: Scale, *, profile: bool) -> Bench:
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        plane = await asyncio.to_thread(ControlPlane.start)
        try:
            admin = await new_api_client(plane.admin_kubeconfig)
            kubelet = KubeletProcess(plane.admin_kubeconfig, workdir / "logs" / "kubelet.log")
            await kubelet.start()
            jwt_dir = workdir / "jwt"
            jwt_dir.mkdir(exist_ok=True)
            keys = make_webhook_keys(jwt_dir, kid=KID, issuer=ISSUER, audience=AUDIENCE)
        except BaseException:
            plane.stop(keep_logs_in=workdir / "control-plane")
            raise
        bench = cls(
            plane=plane,
            admin=admin,
            kubelet=kubelet,
            keys=keys,
            workdir=workdir,
            scale=scale,
            profile=profile,
        )
        bench.kubelet_sampler = Sampler(kubelet.pid, interval=0.2).start()
        return bench

    async def close(self) -> None:
        for sampler in self._samplers:
            await sampler.stop()
        if self.kubelet_sampler is not None:
            await self.kubelet_sampler.stop()
        await asyncio.gather(
            *(asyncio.to_thread(c.stop) for c in self._controllers), return_exceptions=True
        )
        await asyncio.to_thread(self.kubelet.stop)
        await self.admin.close()
        await asyncio.to_thread(self.plane.stop, keep_logs_in=self.workdir / "control-plane")

    # -- namespaces and controllers

    async def new_namespace(self, tag: str) -> str:
        """A fresh namespace with deploy/'s ServiceAccount, Role and RoleBinding."""
        # Short: the controller's certificate CN (<= 64 characters) includes it.
        name = f"bench{tag}-{secrets.token_hex(3)}"
        await create_namespace(self.admin, name)
        await apply(self.admin, rbac_manifests(name))
        self._kubeconfigs[name] = controller_kubeconfig(self.plane, name)
        return name

    def audit_reads(self, namespace: str) -> None:
        """From now on, the controller identity of ``namespace`` has its reads audited too
        (its certificate carries `READS_AUDITED_GROUP`, which grants nothing)."""
        self._kubeconfigs[namespace] = self.plane.kubeconfig_for(
            service_account_user(namespace),
            [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
                READS_AUDITED_GROUP,
            ],
        )

    def jwt_env(self) -> dict[str, str]:
        return {
            "JWT_KEYS_DIR": str(self.keys.directory),
            "JWT_ISSUER": ISSUER,
            "JWT_AUDIENCE": AUDIENCE,
        }

    def controller(
        self,
        impl: Impl,
        namespace: str,
        name: str,
        *,
        env: Mapping[str, str],
        jwt: bool,
        cpu: int | None = None,
    ) -> ControllerProcess:
        """A controller replica (not started yet) with the namespace's restricted identity.

        Every one of the original tool's variables is set, for every figure, so an
        implementation that knows only those can be measured: PORT, JIBRI_HEALTH_PORT,
        POD_NAME and NAMESPACE (by `ControllerProcess`), JIBRI_BUSY_LABELS and SWEEP_INTERVAL
        (here, unless the figure sets its own interval). Readiness is GET /, as the original's
        readinessProbe has it.
        """
        settings = {
            **CONTRACT_ENV,
            "LOG_LEVEL": "info",
            **(self.jwt_env() if jwt else {"WEBHOOK_AUTH": "none"}),
        }
        settings.update(env)
        command: tuple[str, ...] = impl.command
        if cpu is not None and shutil.which("taskset"):
            command = ("taskset", "-c", str(cpu), *command)
        process = ControllerProcess(
            port=listen_port(),
            name=name,
            kubeconfig=self._kubeconfigs[namespace],
            namespace=namespace,
            log_path=self.workdir / "logs" / f"{namespace}-{name}.log",
            env=settings,
            command=command,
            ready_path="/",
        )
        self._controllers.append(process)
        return process

    def start(self, controller: ControllerProcess, *, cpu: int | None = None) -> Sampler:
        """Start ``controller`` and sample its memory and CPU from now on."""
        controller.start()
        assert controller.process is not None
        if cpu is not None and not shutil.which("taskset"):
            os.sched_setaffinity(controller.process.pid, {cpu})

        def pid() -> int | None:
            return controller.process.pid if controller.process is not None else None

        sampler = Sampler(pid).start()
        self._samplers.append(sampler)
        return sampler

    def profiler(self, controller: ControllerProcess, name: str) -> Profiler:
        assert controller.process is not None
        return Profiler(
            controller.process.pid, self.workdir / "profiles" / name, enabled=self.profile
        )

    # -- simulated Jibris

    async def create_jibris(
        self,
        namespace: str,
        names: Sequence[str],
        *,
        subscribers: Sequence[str] = (),
        status_period: float = 60.0,
        jwt: bool = False,
        concurrency: int = 32,
    ) -> None:
        core: Any = k8s.CoreV1Api(self.admin)
        limit = asyncio.Semaphore(concurrency)

        async def create(name: str) -> None:
            body = jibri_pod(
                namespace=namespace,
                name=name,
                subscribers=subscribers,
                status_period=status_period,
                jwt=self.keys.jibri if jwt else None,
            )
            async with limit:
                response = await core.create_namespaced_pod(namespace, body, _preload_content=False)
                await read_raw(response, f"create pod {name}")

        await asyncio.gather(*(create(n) for n in names))

    async def list_jibris(self, namespace: str) -> dict[str, dict[str, Any]]:
        core: Any = k8s.CoreV1Api(self.admin)
        response = await core.list_namespaced_pod(
            namespace, label_selector=JIBRI_SELECTOR, _preload_content=False
        )
        items = orjson.loads(await read_raw(response, "list pods")).get("items") or []
        return {p["metadata"]["name"]: p for p in items}

    async def wait_running(
        self, namespace: str, names: Sequence[str], *, timeout: float
    ) -> dict[str, PodInfo]:
        """Wait until every pod in ``names`` runs (IP, Running, Ready); return what we need."""
        deadline = time.monotonic() + timeout
        interval = 0.2 if len(names) <= 500 else 1.0
        while True:
            pods = await self.list_jibris(namespace)
            running = {n: pods[n] for n in names if n in pods and _is_running(pods[n])}
            if len(running) == len(names):
                return {
                    n: PodInfo(
                        name=n,
                        uid=p["metadata"]["uid"],
                        ip=p["status"]["podIP"],
                        resource_version=p["metadata"]["resourceVersion"],
                        labels=p["metadata"].get("labels") or {},
                    )
                    for n, p in running.items()
                }
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(running)} of {len(names)} pods running after {timeout}s")
            await asyncio.sleep(interval)

    async def jibri_calls(
        self, ips: Sequence[str], path: str, body: Mapping[str, Any], *, concurrency: int = 64
    ) -> None:
        """POST ``body`` to ``path`` of each simulated Jibri's API; fail unless all answer 200."""
        limit = asyncio.Semaphore(concurrency)
        data = orjson.dumps(body)
        failures: list[str] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

            async def call(ip: str) -> None:
                async with (
                    limit,
                    session.post(
                        f"http://{ip}:{JIBRI_PORT}{path}",
                        data=data,
                        headers={"Content-Type": "application/json"},
                    ) as response,
                ):
                    await response.read()
                    if response.status != 200:
                        failures.append(f"{ip}: {response.status}")

            await asyncio.gather(*(call(ip) for ip in ips))
        if failures:
            raise RuntimeError(f"{path} failed on {len(failures)} Jibris: {failures[:5]}")

    async def patch_pods(
        self,
        namespace: str,
        pods: Iterable[PodInfo],
        patch: Callable[[PodInfo], Mapping[str, Any]],
    ) -> None:
        """Merge-patch each pod (as the admin) with ``patch(pod)``."""
        core: Any = k8s.CoreV1Api(self.admin)
        limit = asyncio.Semaphore(32)

        async def one(pod: PodInfo) -> None:
            async with limit:
                response = await core.patch_namespaced_pod(
                    pod.name,
                    namespace,
                    dict(patch(pod)),
                    _content_type=MERGE_PATCH,
                    _preload_content=False,
                )
                await read_raw(response, f"patch pod {pod.name}")

        await asyncio.gather(*(one(p) for p in pods))

    def token(self) -> str:
        """A webhook token exactly as Jibri signs it: RS256, kid; iss, aud (array), exp."""
        key = self.keys.jibri.key_path.read_bytes()
        claims = {"iss": ISSUER, "aud": [AUDIENCE], "exp": int(time.time()) + 3600}
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})


def status_body(pod: str, status: str) -> bytes:
    return orjson.dumps(
        {
            "jibriId": pod,
            "status": {"busyStatus": status, "health": {"healthStatus": "HEALTHY", "details": {}}},
        }
    )


@contextlib.asynccontextmanager
async def jibri_sessions(
    ips: Iterable[str], *, timeout: float = 5.0
) -> AsyncIterator[dict[str, aiohttp.ClientSession]]:
    """One HTTP client per pod address, sending from that address as the pod's Jibri does,
    on a new connection for each request (Jibri's webhooks are a minute apart)."""
    sessions: dict[str, aiohttp.ClientSession] = {}
    try:
        for ip in ips:
            sessions[ip] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(local_addr=(ip, 0), force_close=True),
                timeout=aiohttp.ClientTimeout(total=timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        yield sessions
    finally:
        await asyncio.gather(*(s.close() for s in sessions.values()), return_exceptions=True)


def detach_like_patch(pod: PodInfo) -> dict[str, Any]:
    """The write the controller makes to detach a pod, with the same preconditions."""
    return {
        "metadata": {
            "uid": pod.uid,
            "resourceVersion": pod.resource_version,
            "labels": {"app": "jibri", "state": "busy"},
            "annotations": {
                "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
                "jibri-pod-controller/busy-since": datetime.now()
                .astimezone()
                .isoformat(timespec="seconds"),
                "jibri-pod-controller/restarts-at-busy": "0",
            },
        }
    }
