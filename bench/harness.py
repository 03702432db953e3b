"""The benchmarks' side of the testbed: one control plane and one fake kubelet process for the
whole run, a fresh namespace (with deploy/'s RBAC) per figure, controllers started from a command
line with their restricted identity, and what measures them from outside.

The fake kubelet runs in a process of its own, not in a thread of the bench: thousands of
simulated Jibris must not share an interpreter (and its GIL) with the clocks that time the
controller. Everything is measured from outside the controller process, so another
implementation of the same contract (environment variables, webhook paths, metrics) can be
measured the same way.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import secrets
import shlex
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
import psutil
from kubernetes_asyncio import client as k8s

from bench.profiling import Profiler
from testbed.cluster import (
    BUSY_LABELS,
    DEFAULT_COMMAND,
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
from testbed.kube import abort_stream, new_api_client
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
# What is measured, and how much of it


@dataclass(frozen=True)
class Impl:
    """A controller implementation under test: a label and the command that starts it."""

    label: str
    command: tuple[str, ...]


def parse_impls(commands: Sequence[str], labels: Sequence[str]) -> list[Impl]:
    """One `Impl` per ``--controller-command``; ``python``/``python3`` means this interpreter.

    By default, this controller from its own environment (`testbed.cluster.DEFAULT_COMMAND`):
    runtime dependencies only, as in the image."""
    if not commands:
        commands = [shlex.join(DEFAULT_COMMAND)]
        labels = labels or ["jibri-pod-controller"]
    impls: list[Impl] = []
    for index, text in enumerate(commands):
        argv = shlex.split(text)
        if not argv:
            raise ValueError("--controller-command: empty command")
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        if index < len(labels):
            label = labels[index]
        elif argv[1:3] == ["-m", "jibri_pod_controller"]:
            label = "jibri-pod-controller"
        else:
            label = Path(argv[0]).name
        if label in {i.label for i in impls}:
            label = f"{label}-{index + 1}"
        impls.append(Impl(label=label, command=tuple(argv)))
    return impls


@dataclass(frozen=True)
class Scale:
    """The sizes of every figure: full (what the goals are about) or smoke (seconds, for CI)."""

    smoke: bool
    burst_pods: int
    burst_rounds: int
    burst_timeout: float
    sweep_sizes: tuple[int, ...]
    sweep_samples: int
    """Sweeps kept per size (after one discarded warm-up sweep)."""
    blackhole_every: int
    failover_repeats: int
    lease_env: Mapping[str, str]
    recording_seconds: float
    status_period: float
    resend_pods: int
    resend_warmup: float
    resend_seconds: float
    resend_concurrency: int
    open_loop_seconds: float
    """Seconds counted at each offered rate of figure 6's open loop (after its warm-up)."""
    pool_count: int
    """Figure 7: JibriPools (each with a Deployment of ``pool_pods``)."""
    pool_pods: int
    pool_idle_seconds: float
    pool_steady_seconds: float
    pool_burst: int
    """Recordings started across the pools at once."""
    pool_settle_seconds: float
    """Wait after every pool has written its status, before the steady window."""

    @classmethod
    def full(cls, *, recording_minutes: float) -> Scale:
        return cls(
            smoke=False,
            burst_pods=200,
            burst_rounds=5,
            burst_timeout=30.0,
            sweep_sizes=(500, 1000, 2000, 5000),
            sweep_samples=3,
            blackhole_every=50,
            failover_repeats=3,
            lease_env={},
            recording_seconds=recording_minutes * 60,
            status_period=60.0,
            resend_pods=200,
            resend_warmup=3.0,
            resend_seconds=15.0,
            resend_concurrency=32,
            open_loop_seconds=10.0,
            pool_count=20,
            pool_pods=250,
            pool_idle_seconds=60.0,
            pool_steady_seconds=180.0,
            pool_burst=100,
            pool_settle_seconds=11.0,
        )

    @classmethod
    def tiny(cls, *, recording_minutes: float | None = None) -> Scale:
        return cls(
            smoke=True,
            burst_pods=20,
            burst_rounds=1,
            burst_timeout=15.0,
            sweep_sizes=(50, 100),
            sweep_samples=1,
            blackhole_every=50,
            failover_repeats=1,
            # Short lease timings, so a takeover after SIGKILL takes seconds, not 15.
            lease_env={
                "LEASE_DURATION": "3",
                "LEASE_RENEW_DEADLINE": "2",
                "LEASE_RETRY_PERIOD": "0.5",
            },
            recording_seconds=10.0 if recording_minutes is None else recording_minutes * 60,
            status_period=3.0,
            resend_pods=20,
            resend_warmup=0.5,
            resend_seconds=2.0,
            resend_concurrency=32,
            open_loop_seconds=1.0,
            pool_count=2,
            pool_pods=10,
            pool_idle_seconds=3.0,
            pool_steady_seconds=5.0,
            pool_burst=4,
            pool_settle_seconds=2.0,
        )


# ---------------------------------------------------------------------------------------------
# Processes seen from outside


@dataclass(frozen=True)
class Sample:
    at: float
    """Wall-clock time (time.time()), comparable with the controller's log timestamps."""
    cpu: float
    """User + system CPU seconds of the process tree so far."""
    rss: int


class Sampler:
    """Samples the RSS and CPU time of a process and its children every ``interval`` seconds.

    ``pid`` is a number or a function giving the current one: a controller may be started again
    (on another port) while it starts, and the samples follow it; CPU time carries over.
    """

    def __init__(self, pid: int | Callable[[], int | None], *, interval: float = 0.1) -> None:
        self._pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self._task: asyncio.Task[None] | None = None
        self._children: list[psutil.Process] = []
        self._children_at = 0.0
        self._current: int | None = None
        self._carried = 0.0
        self._last_cpu = 0.0

    def start(self) -> Sampler:
        self._task = asyncio.create_task(self._run(), name="sampler")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def sample(self) -> Sample | None:
        pid = self._pid() if callable(self._pid) else self._pid
        if pid is None:
            return None
        if pid != self._current:
            if self._current is not None:
                self._carried += self._last_cpu
            self._current, self._children_at, self._last_cpu = pid, 0.0, 0.0
        try:
            root = psutil.Process(pid)
            now = time.monotonic()
            if now - self._children_at > 1.0:
                self._children = root.children(recursive=True)
                self._children_at = now
            cpu = rss = 0.0
            for proc in (root, *self._children):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                    times = proc.cpu_times()
                    cpu += times.user + times.system
                    rss += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None
        self._last_cpu = cpu
        sample = Sample(at=time.time(), cpu=self._carried + cpu, rss=int(rss))
        self.samples.append(sample)
        return sample

    async def _run(self) -> None:
        while True:
            self.sample()  # None while the process is between two starts, or gone
            await asyncio.sleep(self.interval)

    def cpu_at(self, when: float) -> float:
        """CPU seconds at wall time ``when``, interpolated between the samples around it."""
        samples = self.samples
        if not samples:
            return 0.0
        index = bisect.bisect_left(samples, when, key=lambda s: s.at)
        if index == 0:
            return samples[0].cpu
        if index == len(samples):
            return samples[-1].cpu
        before, after = samples[index - 1], samples[index]
        span = after.at - before.at
        share = (when - before.at) / span if span > 0 else 1.0
        return before.cpu + share * (after.cpu - before.cpu)

    def cpu_between(self, start: float, end: float) -> float:
        return max(0.0, self.cpu_at(end) - self.cpu_at(start))

    def rss_peak(self, start: float | None = None, end: float | None = None) -> int:
        values = [
            s.rss
            for s in self.samples
            if (start is None or s.at >= start) and (end is None or s.at <= end)
        ]
        return max(values, default=0)


def run_queue_wait(pid: int) -> float:
    """Seconds the process's threads have spent runnable but waiting for a CPU (schedstat)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[1])
    return total / 1e9


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


class LogTail:
    """The JSON lines a controller appended to its log since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def new_entries(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        entries: list[dict[str, Any]] = []
        for line in lines:
            with contextlib.suppress(orjson.JSONDecodeError):
                entry = orjson.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries


@dataclass(frozen=True)
class Sweep:
    end: float
    """Wall-clock time the sweep finished."""
    seconds: float
    pods: int | None
    source: str
    """``log`` (the "sweep done" line) or ``metrics`` (sweeps_total and the duration sum)."""

    @property
    def start(self) -> float:
        return self.end - self.seconds


class SweepTracker:
    """Finds a controller's completed sweeps: from its "sweep done" log lines (fields ``ms``,
    ``pods``) when it writes them, else from its metrics (``sweeps_total`` and
    ``sweep_duration_seconds``), so another implementation can be timed too."""

    def __init__(self, controller: ControllerProcess) -> None:
        self._controller = controller
        self._tail = LogTail(controller.log_path)
        self._from_log: list[Sweep] = []
        self._from_metrics: list[Sweep] = []
        self._count = 0.0
        self._sum = 0.0

    @property
    def sweeps(self) -> list[Sweep]:
        return self._from_log or self._from_metrics

    async def poll(self) -> None:
        for entry in self._tail.new_entries():
            if entry.get("msg") == "sweep done" and "ms" in entry:
                end = datetime.fromisoformat(str(entry["ts"])).timestamp()
                pods = entry.get("pods")
                self._from_log.append(
                    Sweep(
                        end=end,
                        seconds=float(entry["ms"]) / 1000,
                        pods=int(pods) if isinstance(pods, int) else None,
                        source="log",
                    )
                )
        if self._from_log:
            return
        samples = await asyncio.to_thread(self._controller.metrics)
        count = _sum_of(samples, "jibri_pod_controller_sweeps_total")
        total = _sum_of(samples, "jibri_pod_controller_sweep_duration_seconds_sum")
        if count > self._count:
            new = count - self._count
            pods = _sum_of(samples, "jibri_pod_controller_jibri_pods")
            for _ in range(int(new)):
                self._from_metrics.append(
                    Sweep(
                        end=time.time(),
                        seconds=(total - self._sum) / new,
                        pods=int(pods),
                        source="metrics",
                    )
                )
            self._count, self._sum = count, total

    async def wait(self, count: int, *, timeout: float) -> list[Sweep]:
        deadline = time.monotonic() + timeout
        while True:
            await self.poll()
            if len(self.sweeps) >= count:
                return self.sweeps
            process = self._controller.process
            if process is not None and process.poll() is not None:
                raise RuntimeError(
                    f"{self._controller.name} exited {process.returncode}:\n"
                    f"{self._controller.tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(self.sweeps)} of {count} sweeps after {timeout:g} s:\n"
                    f"{self._controller.tail()}"
                )
            await asyncio.sleep(0.2)


def _sum_of(samples: Mapping[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k.partition("{")[0] == name)


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


class PodWatch:
    """Records when each pod is first seen, through a watch, carrying ``wanted`` labels.

    The time is taken when the event is read from the stream, on this process's monotonic
    clock, which is what the send times are taken on too. Like an informer, it watches again
    from the last resourceVersion when the stream ends (the API server closes a watch whose
    reader falls behind) and lists again when that version is too old; each restart is kept in
    ``restarts`` and a pod first seen by a list is timed at that list.
    """

    def __init__(self, api: k8s.ApiClient, namespace: str, wanted: Mapping[str, str]) -> None:
        self._core: Any = k8s.CoreV1Api(api)
        self._namespace = namespace
        self._wanted = dict(wanted)
        self.seen: dict[str, float] = {}
        self.arrivals: dict[str, list[float]] = {}
        """Every time (wall clock) each pod came to carry ``wanted``, not only the first."""
        self._matching: set[str] = set()
        self.events = 0
        self.restarts: list[str] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._open: asyncio.Future[None] | None = None

    def _record(self, name: Any, labels: Mapping[str, Any], at: float) -> None:
        if not isinstance(name, str):
            return
        if not all(labels.get(k) == v for k, v in self._wanted.items()):
            self._matching.discard(name)
            return
        if name not in self._matching:
            self._matching.add(name)
            self.arrivals.setdefault(name, []).append(time.time())
        if name not in self.seen:
            self.seen[name] = at
            self._changed.set()

    async def _list(self) -> str:
        response = await self._core.list_namespaced_pod(self._namespace, _preload_content=False)
        listing = orjson.loads(await read_raw(response, "list pods"))
        now = time.monotonic()
        for pod in listing.get("items") or ():
            meta = pod.get("metadata") or {}
            self._record(meta.get("name"), meta.get("labels") or {}, now)
        version: str = listing["metadata"]["resourceVersion"]
        return version

    async def start(self) -> None:
        """Return once the watch is open."""
        self._open = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"watch-{self._namespace}")
        await asyncio.wait({self._open, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()

    async def _run(self) -> None:
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._list()
                version = await self._watch(version)
                self.restarts.append("stream ended")
            except _Expired:
                self.restarts.append("resourceVersion expired")
                version = None
            except (aiohttp.ClientError, ValueError, RuntimeError) as exc:
                self.restarts.append(f"{type(exc).__name__}: {exc}"[:200])
                await asyncio.sleep(0.1)

    async def _watch(self, version: str) -> str:
        response = await self._core.list_namespaced_pod(
            self._namespace,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=1800,
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=None),
        )
        if response.status != 200:
            await read_raw(response, "watch pods")
        if self._open is not None and not self._open.done():
            self._open.set_result(None)
        try:
            async for line in response.content:
                now = time.monotonic()
                if not line.strip():
                    continue
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                meta = obj.get("metadata") or {}
                version = meta.get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED"):
                    self.events += 1
                    self._record(meta.get("name"), meta.get("labels") or {}, now)
        finally:
            if response.content.at_eof():
                response.release()
            else:
                abort_stream(response)  # stopped or failed mid-stream
        return version

    async def wait(self, names: Iterable[str], *, timeout: float) -> bool:
        wanted = set(names)
        deadline = time.monotonic() + timeout
        while not wanted <= self.seen.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


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
