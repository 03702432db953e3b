"""The demo: the controller, deployed from deploy/, keeping spare Jibris through a scripted day.

It starts a local control plane and the fake kubelet, applies deploy/'s ServiceAccount and RBAC
in the namespace ``jibri-demo``, runs two controller replicas as processes with the container
environment of deploy/deployment.yaml, and deploys simulated Jibris with three spares. Then
recordings arrive on random idle Jibris and finish after random durations; one Jibri's EXPIRED
webhook is lost (the sweeper must catch it) and one busy Jibri crashes (its pod is reaped by the
restarted-while-busy rule). The run is printed as it happens, drawn as a timeline PNG, and
summarized. It exits non-zero if an invariant was violated: a pod deleted while its recording
was live, a pod touched that should not have been, or spares that never came back.

    scripts/demo.sh                   # a 90 s scenario (about 100 s in all), out/demo-timeline.png
    scripts/demo.sh --fast --seed 3   # a 25 s scenario (about 35 s in all)
    scripts/demo.sh --real-jibri      # real Jibris built from source (testbed/realjibri.py)

With ``--real-jibri`` the spares are deploy/jibri/'s pods run as real Jibris, each in a network
namespace of its own, recording a fake meeting in headless Chromium: fewer and longer
recordings, no crash (the fake kubelet does not restart a real Jibri's container), and the lost
EXPIRED is lost for real (the pod's network drops its packets to the controller).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import json
import logging
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from testbed import realjibri
from testbed.cluster import (
    BUSY_LABELS,
    DEPLOY,
    IDLE_LABELS,
    JIBRI_PORT,
    REPO,
    ControllerProcess,
    JibriJwt,
    all_write_events,
    apply,
    controller_container,
    controller_env_from_deployment,
    controller_kubeconfig,
    create_namespace,
    jibri_call,
    jibri_deployment,
    load_manifests,
    make_webhook_keys,
    rbac_manifests,
    service_account_user,
    start_recording,
    stop_recording,
    wait_until,
)
from testbed.controlplane import ControlPlane
from testbed.kube import abort_stream, new_api_client
from testbed.kubelet import KubeletThread, run_in_thread
from testbed.ports import listen_port

__all__ = ["main"]

NAMESPACE = "jibri-demo"
SPARES = 3
STATUS_PERIOD = 10.0
SWEEP_INTERVAL = 5
REPLICAS = ("controller-a", "controller-b")
WEBHOOK_REPLICA, SWEEP_REPLICA = REPLICAS
KID = "demo-key-1"
DEFAULT_DURATION = 90.0
FAST_DURATION = 25.0
DEFAULT_OUT = REPO / "out" / "demo-timeline.png"
FAILURE_LOGS = REPO / "out" / "demo-logs"
SPARE_WAIT = 10.0
"""How long a recording waits for an idle Jibri before it is turned away."""
RECOVERY_GRACE = 20.0
"""After the scenario, how long the pool may take to return to its target."""
REAL_DEFAULT_DURATION = 150.0
REAL_EVERY = 25.0
"""With real Jibris, a recording every this many seconds (each takes a JVM and a browser)."""
REAL_RECOVERY_GRACE = 90.0
"""Real replacements start one after another, a JVM each."""
STATUS_EVERY = 1.0

EXIT_OK, EXIT_VIOLATION, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The plan


class Fate(enum.Enum):
    FINISHES = "finishes"
    WEBHOOK_LOST = "webhook-lost"
    """Its Jibri's webhooks are silenced just before stopService: EXPIRED never arrives."""
    CRASHES = "crashes"
    """Its Jibri crashes mid-recording and its container restarts idle."""


@dataclass(frozen=True)
class PlannedRecording:
    id: str
    start_at: float
    end_at: float
    fate: Fate


def make_plan(
    duration: float, rng: random.Random, *, every: float = 7.0, crash: bool = True
) -> list[PlannedRecording]:
    """About one recording per 7 s, arriving over the first 70 % of ``duration`` (one in each
    of as many equal slots, at a random moment of its slot), each 10-30 % of ``duration`` long
    and over by 85 %: the rest shows the pool at rest.

    The second recording loses its EXPIRED webhook and a later one crashes; both end by 75 %,
    so the sweeper (every SWEEP_INTERVAL seconds) acts within the scenario. With ``every``, one
    per that many seconds instead; without ``crash``, none crashes.
    """
    count = max(5 if crash else 3, round(duration / every))
    first, last = 0.06 * duration, 0.7 * duration
    slot = (last - first) / count
    arrivals = [rng.uniform(first + i * slot, first + (i + 1) * slot) for i in range(count)]
    for i in range(1, count):  # at most one arrival per 0.6 s: three spares are enough
        arrivals[i] = max(arrivals[i], arrivals[i - 1] + 0.6)
    crashing = rng.randrange(2, count - 1) if crash else -1
    plan = []
    for i, start in enumerate(arrivals):
        fate = Fate.WEBHOOK_LOST if i == 1 else Fate.CRASHES if i == crashing else Fate.FINISHES
        latest = (0.85 if fate is Fate.FINISHES else 0.75) * duration
        length = rng.uniform(0.1 * duration, 0.3 * duration)
        end = max(start + 0.08 * duration, min(start + length, latest))
        plan.append(PlannedRecording(f"rec-{i + 1:02d}", start, end, fate))
    return plan


# ---------------------------------------------------------------------------------------------
# What happened


class RecState(enum.Enum):
    PLANNED = "planned"
    LIVE = "live"
    ENDED = "ended"
    """stopService was called (or about to be), or the Jibri crashed: deleting is allowed."""
    TURNED_AWAY = "turned-away"


@dataclass
class Recording:
    plan: PlannedRecording
    state: RecState = RecState.PLANNED
    pod: str | None = None
    uid: str | None = None
    ip: str | None = None
    started: float | None = None
    ended: float | None = None


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    labels: Mapping[str, str]
    ready: bool
    deleting: bool
    ip: str | None

    @property
    def spare(self) -> bool:
        return _has(self.labels, IDLE_LABELS) and self.ready and not self.deleting

    @property
    def busy(self) -> bool:
        return _has(self.labels, BUSY_LABELS) and not self.deleting


def _has(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def _pod_view(obj: Mapping[str, Any]) -> PodView:
    meta, status = obj["metadata"], obj.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    return PodView(
        name=meta["name"],
        uid=meta["uid"],
        labels=dict(meta.get("labels") or {}),
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
        ip=status.get("podIP"),
    )


@dataclass(frozen=True)
class Sample:
    t: float
    spare: int
    busy: int
    total: int


@dataclass(frozen=True)
class Action:
    """A detach or delete, as a controller logged it."""

    t: float
    replica: str
    action: str
    pod: str
    reason: str
    source: str
    result: str


@dataclass(frozen=True)
class Mark:
    """Something the scenario did, for the timeline."""

    t: float
    kind: str  # start, stop, lost, crash
    recording: str


@dataclass
class Outcome:
    samples: list[Sample] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    ramp_done: float | None = None
    webhooks: Counter[str] = field(default_factory=Counter)
    sweeps: list[float] = field(default_factory=list)
    leader: str | None = None


# ---------------------------------------------------------------------------------------------
# Output


class Console:
    """Plain lines with the time since the Jibri Deployment was created; no terminal tricks."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.wall0 = 0.0

    def start_clock(self) -> None:
        self.t0 = time.monotonic()
        self.wall0 = time.time()

    def now(self) -> float:
        return 0.0 if self.t0 is None else time.monotonic() - self.t0

    def from_wall(self, wall: float) -> float:
        return wall - self.wall0

    def setup(self, text: str) -> None:
        print(f"[setup] {text}", flush=True)

    def at(self, t: float, text: str) -> None:
        print(f"{t:7.1f}s  {text}", flush=True)

    def line(self, text: str = "") -> None:
        print(text, flush=True)


# ---------------------------------------------------------------------------------------------
# Watching pods and tailing the controllers' logs


class PodWatch:
    """Keeps every pod of the namespace in memory (list, then watch) and samples the counts."""

    def __init__(self, api: k8s.ApiClient, console: Console, outcome: Outcome, demo: Demo) -> None:
        # Any: the raw (unparsed) responses asked for below are not what the stubs declare.
        self._core: Any = k8s.CoreV1Api(api)
        self._console = console
        self._outcome = outcome
        self._demo = demo
        self.pods: dict[str, PodView] = {}
        self.synced = asyncio.Event()
        self.changed = asyncio.Event()

    def counts(self) -> tuple[int, int, int]:
        pods = self.pods.values()
        return sum(p.spare for p in pods), sum(p.busy for p in pods), len(self.pods)

    def spares(self) -> list[PodView]:
        return sorted((p for p in self.pods.values() if p.spare and p.ip), key=lambda p: p.name)

    def _sample(self) -> None:
        if self._console.t0 is None:
            return
        spare, busy, total = self.counts()
        t = self._console.now()
        samples = self._outcome.samples
        if not samples or (samples[-1].spare, samples[-1].busy, samples[-1].total) != (
            spare,
            busy,
            total,
        ):
            samples.append(Sample(t, spare, busy, total))
        if self._outcome.ramp_done is None and spare >= SPARES:
            self._outcome.ramp_done = t
        self.changed.set()

    def _update(self, obj: Mapping[str, Any], deleted: bool) -> None:
        view = _pod_view(obj)
        before = self.pods.get(view.uid)
        if deleted:
            self.pods.pop(view.uid, None)
        else:
            self.pods[view.uid] = view
        if (deleted or view.deleting) and not (before is not None and before.deleting):
            self._demo.on_pod_leaving(view)
        self._sample()

    async def run(self) -> None:
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._relist()
                    self.synced.set()
                version = await self._watch(version)
            except _ExpiredError:
                version = None
            except (ApiException, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("pod watch failed (%r); watching again", exc)
                await asyncio.sleep(0.5)

    async def _relist(self) -> str:
        listing = await self._core.list_namespaced_pod(NAMESPACE, _preload_content=False)
        async with listing:
            data = orjson.loads(await listing.read())
        items = data.get("items") or []
        seen = {item["metadata"]["uid"] for item in items}
        for uid, view in list(self.pods.items()):
            if uid not in seen:
                self.pods.pop(uid)
                self._demo.on_pod_leaving(view)
        for item in items:
            self._update(item, deleted=False)
        version: str = data["metadata"]["resourceVersion"]
        return version

    async def _watch(self, version: str) -> str:
        response = await self._core.list_namespaced_pod(
            NAMESPACE,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=300,
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=330),
        )
        async with response:
            try:
                async for raw in response.content:
                    if not raw.strip():
                        continue
                    event = orjson.loads(raw)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise _ExpiredError
                        raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._update(obj, deleted=kind == "DELETED")
            finally:
                if not response.content.at_eof():
                    abort_stream(response)  # stopped or failed mid-stream
        return version


class _ExpiredError(Exception):
    """The watch's resourceVersion is too old: list again."""


class LogTail:
    """Reads the JSON lines a controller appended to its log since the last call."""

    def __init__(self, controller: ControllerProcess) -> None:
        self.controller = controller
        self._offset = 0
        self._partial = b""

    def new_lines(self) -> Iterator[dict[str, Any]]:
        path = self.controller.log_path
        if not path.exists():
            return
        with path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    yield entry


def _wall(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------------------------
# The demo


@dataclass(frozen=True)
class Options:
    duration: float
    seed: int
    out: Path
    real_jibri: bool = False


class Demo:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.console = Console()
        self.outcome = Outcome()
        self.rng = random.Random(options.seed)
        if options.real_jibri:
            self.plan = make_plan(options.duration, self.rng, every=REAL_EVERY, crash=False)
        else:
            self.plan = make_plan(options.duration, self.rng)
        self.recordings = {p.id: Recording(p) for p in self.plan}
        self.controllers: list[ControllerProcess] = []
        self.claimed: set[str] = set()
        self.workdir = Path(tempfile.mkdtemp(prefix="jibri-demo-"))
        self.watch: PodWatch | None = None
        self.jwt: JibriJwt | None = None
        self.tails: dict[str, LogTail] = {}
        self.kubelet: KubeletThread | None = None
        self.kid = realjibri.deploy_jwt_info()[0] if options.real_jibri else KID

    # -- lifecycle (synchronous: the plane and the kubelet thread live outside the event loop)

    def run(self) -> int:
        previous = signal.signal(signal.SIGTERM, _interrupt)
        plane: ControlPlane | None = None
        code = EXIT_ERROR
        started = time.monotonic()
        try:
            self.console.line(
                f"jibri-pod-controller demo: {self.options.duration:g} s scenario, "
                f"seed {self.options.seed}, {len(self.plan)} recordings planned"
            )
            plane = ControlPlane.start(self.workdir / "plane")
            self.console.setup(
                f"control plane up in {time.monotonic() - started:.1f} s at {plane.server} "
                "(etcd, kube-apiserver, kube-controller-manager)"
            )
            with run_in_thread(plane.admin_kubeconfig, NAMESPACE) as kubelet:
                self.kubelet = kubelet
                where = (
                    "as real Jibris, each in a network namespace of its own"
                    if self.options.real_jibri
                    else "on loopback addresses"
                )
                self.console.setup(f"fake kubelet runs the pods of {NAMESPACE} {where}")
                code = asyncio.run(self._main(plane))
        except (KeyboardInterrupt, asyncio.CancelledError):
            self.console.line("\ninterrupted: cleaning up")
            code = EXIT_INTERRUPTED
        except Exception as exc:
            traceback.print_exc()
            self.console.line(f"\ndemo failed: {type(exc).__name__}: {exc}")
            code = EXIT_ERROR
        finally:
            self._cleanup(plane, keep_logs=code in (EXIT_VIOLATION, EXIT_ERROR))
            signal.signal(signal.SIGTERM, previous)
        self.console.line(f"finished in {time.monotonic() - started:.0f} s, exit code {code}")
        return code

    def _cleanup(self, plane: ControlPlane | None, *, keep_logs: bool) -> None:
        with _ignoring_interrupts():
            for controller in self.controllers:
                controller.stop()
            if keep_logs and (self.controllers or plane is not None):
                shutil.rmtree(FAILURE_LOGS, ignore_errors=True)
                FAILURE_LOGS.mkdir(parents=True)
                for controller in self.controllers:
                    if controller.log_path.exists():
                        shutil.copy(controller.log_path, FAILURE_LOGS / controller.log_path.name)
            if plane is not None:
                plane.stop(keep_logs_in=FAILURE_LOGS / "control-plane" if keep_logs else None)
            if keep_logs and FAILURE_LOGS.exists():
                self.console.line(f"logs kept in {FAILURE_LOGS.relative_to(REPO)}/")
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def _main(self, plane: ControlPlane) -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        api = await new_api_client(plane.admin_kubeconfig)
        background: list[asyncio.Task[None]] = []
        try:
            background.append(asyncio.create_task(self._tail_logs()))
            await self._deploy_controllers(api, plane)
            self.watch = PodWatch(api, self.console, self.outcome, self)
            background.append(asyncio.create_task(self.watch.run()))
            await asyncio.wait_for(self.watch.synced.wait(), 30)
            await self._deploy_jibris(api)
            background.append(asyncio.create_task(self._print_status()))
            await self._play()
            await self._recover()
            self._final_checks()
        finally:
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await api.close()
            loop.remove_signal_handler(signal.SIGTERM)
        self._read_logs(live=False)
        self._report(plane)
        return EXIT_VIOLATION if self.outcome.violations else EXIT_OK

    # -- setup

    async def _deploy_controllers(self, api: k8s.ApiClient, plane: ControlPlane) -> None:
        await create_namespace(api, NAMESPACE)
        await apply(api, rbac_manifests(NAMESPACE))
        self.console.setup(
            f"namespace {NAMESPACE}: applied deploy/serviceaccount.yaml and deploy/rbac.yaml"
        )
        (deployment,) = (d for d in load_manifests("deployment.yaml") if d["kind"] == "Deployment")
        written = controller_env_from_deployment(deployment, namespace=NAMESPACE, pod_name="-")
        from_pod = [
            e["name"] for e in controller_container(deployment).get("env") or () if "valueFrom" in e
        ]
        keys = make_webhook_keys(
            self.workdir,
            kid=self.kid,
            issuer=written.get("JWT_ISSUER", "jibri"),
            audience=written.get("JWT_AUDIENCE", "jibri-pod-controller"),
        )
        self.jwt = keys.jibri
        kubeconfig = controller_kubeconfig(plane, NAMESPACE)
        overrides = {
            "KUBECONFIG": f"<the ServiceAccount {service_account_user(NAMESPACE)}>",
            "PORT": "<a free port each>",
            "JIBRI_HEALTH_PORT": str(JIBRI_PORT),
            "JWT_KEYS_DIR": f"<a temp dir: fresh RSA public key {self.kid}.pem>",
            "SWEEP_INTERVAL": str(SWEEP_INTERVAL),
        }
        source = DEPLOY.relative_to(REPO) / "deployment.yaml"
        self.console.setup(f"{', '.join(REPLICAS)}: environment from {source}")
        kept = [f"{k}={v}" for k, v in written.items() if k not in overrides and k not in from_pod]
        self.console.setup(f"  as written:  {' '.join(kept)}")
        pod_fields = {"POD_NAME": "|".join(REPLICAS), "NAMESPACE": NAMESPACE}
        self.console.setup(
            "  from the pod (fieldRef): "
            + " ".join(f"{k}={pod_fields.get(k, written[k])}" for k in from_pod if k in written)
        )
        changed = [
            f"{k}={v}" + (f" (was {written[k]})" if k in written and written[k] != v else "")
            for k, v in overrides.items()
        ]
        self.console.setup(f"  overridden locally: {' '.join(changed)}")

        def start(name: str) -> ControllerProcess:
            env = controller_env_from_deployment(deployment, namespace=NAMESPACE, pod_name=name)
            # PORT is set by ControllerProcess from its port (another one if that was taken).
            env.pop("PORT", None)
            env.update(
                KUBECONFIG=str(kubeconfig),
                JIBRI_HEALTH_PORT=str(JIBRI_PORT),
                JWT_KEYS_DIR=str(keys.directory),
                SWEEP_INTERVAL=str(SWEEP_INTERVAL),
            )
            controller = ControllerProcess(
                name=name,
                kubeconfig=kubeconfig,
                namespace=NAMESPACE,
                log_path=self.workdir / f"{name}.log",
                port=listen_port(),
                env=env,
            )
            self.controllers.append(controller.start())
            return controller

        # The replica that does not get the webhooks starts first and takes the Lease, so the
        # run shows both at work: one answering webhooks, the other sweeping.
        first = start(SWEEP_REPLICA)
        await first.wait_ready()

        async def leads() -> bool:
            return self.outcome.leader is not None

        await wait_until(leads, timeout=30, what=f"{SWEEP_REPLICA} to take the Lease")
        second = start(WEBHOOK_REPLICA)
        await second.wait_ready()
        self.console.setup(
            f"{first.name} (:{first.port}) and {second.name} (:{second.port}) ready "
            f"(/readyz: API reachable, RBAC complete); {second.name} is the Lease's standby"
        )

    async def _deploy_jibris(self, api: k8s.ApiClient) -> None:
        webhook = next(c for c in self.controllers if c.name == WEBHOOK_REPLICA)
        assert self.jwt is not None
        if self.options.real_jibri:
            assert self.kubelet is not None
            gateway = await asyncio.to_thread(self.kubelet.kubelet.real_jibris.gateway)
            docs = realjibri.deploy_objects(
                namespace=NAMESPACE,
                subscriber=f"http://{gateway}:{webhook.port}/webhook/$(POD_NAME)",
                signing_key=self.jwt.key_path.read_bytes(),
                replicas=SPARES,
            )
            self.console.setup(
                f"deploy/jibri/: {SPARES} real Jibris (scripts/build-jibri.sh) selected by "
                f"app=jibri,state=idle, jibri.conf from its ConfigMap, its signing key from its "
                f"Secret; webhooks to {gateway}, the host on the pods' network"
            )
        else:
            docs = [
                jibri_deployment(
                    namespace=NAMESPACE,
                    replicas=SPARES,
                    subscribers=[webhook.webhook_base()],
                    status_period=STATUS_PERIOD,
                    jwt=self.jwt,
                )
            ]
            self.console.setup(
                f"Deployment jibri: {SPARES} simulated Jibris selected by app=jibri,state=idle, "
                f"status webhook every {STATUS_PERIOD:g} s, signed RS256 like Jibri's jwt-info"
            )
        self.console.setup(
            f"Jibri webhooks go to {WEBHOOK_REPLICA} only: a Service sends each request to one "
            "replica, and this demo has no Service, so it pins them to one; the sweeper runs "
            "on whichever replica holds the Lease"
        )
        self.console.line()
        self.console.line(
            "   time  spare = idle-labelled and Ready, busy = detached; "
            "+ the scenario, * a controller, ! a problem"
        )
        self.console.start_clock()
        await apply(api, docs)
        assert self.watch is not None

        async def ramped() -> bool:
            return self.outcome.ramp_done is not None

        ramp = 240 if self.options.real_jibri else 60  # real Jibris start one after another
        await wait_until(ramped, timeout=ramp, interval=0.05, what=f"{SPARES} ready spares")

    # -- the scenario

    async def _play(self) -> None:
        tasks = [asyncio.create_task(self._record(self.recordings[p.id])) for p in self.plan]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _sleep_until(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - self.console.now()))

    async def _record(self, rec: Recording) -> None:
        plan = rec.plan
        await self._sleep_until(plan.start_at)
        if not await self._start(rec):
            rec.state = RecState.TURNED_AWAY
            self.console.at(self.console.now(), f"+ {plan.id} turned away: no idle Jibri")
            return
        await self._sleep_until(plan.end_at)
        assert rec.ip is not None
        now = self.console.now
        rec.state, rec.ended = RecState.ENDED, now()
        if plan.fate is Fate.CRASHES:
            self.outcome.marks.append(Mark(now(), "crash", plan.id))
            self.console.at(
                now(),
                f"+ {plan.id}: the Jibri on {rec.pod} crashes mid-recording "
                "(POST /_sim/crash); its container restarts idle, the recording is lost",
            )
            await self._call(rec, jibri_call(rec.ip, "/_sim/crash"), "POST /_sim/crash")
            return
        if plan.fate is Fate.WEBHOOK_LOST and self.options.real_jibri:
            await self._block_webhooks(rec)
            self.outcome.marks.append(Mark(now(), "lost", plan.id))
            self.console.at(
                now(),
                f"+ {plan.id} stops, but the EXPIRED webhook from {rec.pod} is lost (its pod's "
                "network drops its packets to the controller); the sweeper has to notice",
            )
            # The sweeper may delete the pod before Jibri answers (its webhooks time out).
            await self._call(rec, self._stop(rec.ip), "stopService", gone_ok=True)
            return
        if plan.fate is Fate.WEBHOOK_LOST:
            body = {"enabled": False}
            await self._call(rec, jibri_call(rec.ip, "/_sim/webhooks", body), "POST /_sim/webhooks")
            self.outcome.marks.append(Mark(now(), "lost", plan.id))
            self.console.at(
                now(),
                f"+ {plan.id} stops, but the EXPIRED webhook from {rec.pod} is lost "
                "(POST /_sim/webhooks enabled=false); the sweeper has to notice",
            )
        else:
            self.outcome.marks.append(Mark(now(), "stop", plan.id))
            self.console.at(
                now(), f"+ {plan.id} stops after {now() - (rec.started or 0):.0f} s (stopService)"
            )
        await self._call(rec, self._stop(rec.ip), "stopService")

    def _stop(self, ip: str) -> Awaitable[int]:
        if self.options.real_jibri:
            return realjibri.api_call(ip, "stopService")
        return stop_recording(ip)

    async def _block_webhooks(self, rec: Recording) -> None:
        """A real Jibri's network drops its packets to the controller that gets webhooks."""
        assert self.kubelet is not None
        assert rec.pod is not None
        kubelet = self.kubelet
        webhook = next(c for c in self.controllers if c.name == WEBHOOK_REPLICA)
        jibri = kubelet.kubelet.real_jibris.get(NAMESPACE, rec.pod)
        gateway = kubelet.kubelet.real_jibris.gateway()
        await asyncio.to_thread(kubelet.call, jibri.block_webhooks(gateway, webhook.port))

    async def _call(
        self, rec: Recording, call: Awaitable[int], what: str, *, gone_ok: bool = False
    ) -> None:
        """A request to the Jibri of a live recording: it must be there and say yes (or, with
        ``gone_ok``, its pod may be deleted meanwhile, taking the answer with it)."""
        try:
            code = await call
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:  # the pod (and Jibri) gone
            if gone_ok and self._leaving(rec):
                return
            self._violation(f"{what} on {rec.pod} ({rec.plan.id}) failed: {exc!r}")
            return
        if code != 200:
            self._violation(f"{what} on {rec.pod} ({rec.plan.id}) answered {code}")

    async def _start(self, rec: Recording) -> bool:
        deadline = time.monotonic() + SPARE_WAIT
        assert self.watch is not None
        while time.monotonic() < deadline:
            candidates = [p for p in self.watch.spares() if p.uid not in self.claimed]
            if not candidates:
                await asyncio.sleep(0.1)
                continue
            pod = self.rng.choice(candidates)
            assert pod.ip is not None
            self.claimed.add(pod.uid)
            rec.pod, rec.uid, rec.ip = pod.name, pod.uid, pod.ip
            rec.state, rec.started = RecState.LIVE, self.console.now()
            self.outcome.marks.append(Mark(rec.started, "start", rec.plan.id))
            try:
                code = await self._start_call(pod.ip, rec.plan.id)
            except (OSError, aiohttp.ClientError, TimeoutError) as exc:  # deleted: another
                code = 0
                log.debug("startService on %s failed: %s", pod.name, exc)
            if code == 200:
                planned = rec.plan.end_at - rec.plan.start_at
                fate = {
                    Fate.FINISHES: f"planned {planned:.0f} s",
                    Fate.WEBHOOK_LOST: f"planned {planned:.0f} s, its EXPIRED webhook will be lost",
                    Fate.CRASHES: f"its Jibri will crash after {planned:.0f} s",
                }[rec.plan.fate]
                self.console.at(
                    rec.started, f"+ {rec.plan.id} starts on {pod.name} ({pod.ip}), {fate}"
                )
                return True
            self.console.at(self.console.now(), f"+ startService on {pod.name} answered {code}")
            rec.state, rec.pod, rec.uid, rec.ip = RecState.PLANNED, None, None, None
            self.outcome.marks.pop()
        return False

    def _leaving(self, rec: Recording) -> bool:
        """The recording's pod is gone or being deleted."""
        if rec.uid is None or self.watch is None:
            return False
        pod = self.watch.pods.get(rec.uid)
        return pod is None or pod.deleting

    async def _start_call(self, ip: str, session_id: str) -> int:
        if not self.options.real_jibri:
            return await start_recording(ip, session_id)
        assert self.kubelet is not None
        meeting = self.kubelet.kubelet.real_jibris.meeting_root
        body = realjibri.call_params(meeting, session_id=session_id)
        return await realjibri.api_call(ip, "startService", body)

    async def _recover(self) -> None:
        """Wait for the end of the scenario, then for the pool to be back at its target."""
        await self._sleep_until(self.options.duration)
        assert self.watch is not None
        grace = REAL_RECOVERY_GRACE if self.options.real_jibri else RECOVERY_GRACE
        deadline = self.options.duration + grace
        while True:
            spare, busy, _ = self.watch.counts()
            used = {r.uid for r in self.recordings.values() if r.uid is not None}
            left = used & set(self.watch.pods)
            if spare == SPARES and busy == 0 and not left:
                return
            if self.console.now() > deadline:
                self._violation(
                    f"the pool did not recover within {grace:g} s of the scenario's "
                    f"end: {spare} spare, {busy} busy, {len(left)} used pods still there"
                )
                return
            self.watch.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.watch.changed.wait(), 0.5)

    # -- reacting to what the cluster and the controllers do

    def on_pod_leaving(self, pod: PodView) -> None:
        """A pod got a deletionTimestamp or disappeared: it must not hold a live recording."""
        for rec in self.recordings.values():
            if rec.uid == pod.uid and rec.state is RecState.LIVE:
                self._violation(
                    f"pod {pod.name} was deleted while {rec.plan.id} was recording on it"
                )
        if pod.uid not in self.claimed and self.console.t0 is not None:
            self._violation(f"pod {pod.name} was deleted though no recording ever used it")

    def _violation(self, text: str) -> None:
        self.outcome.violations.append(text)
        self.console.at(self.console.now(), f"! VIOLATION: {text}")

    async def _print_status(self) -> None:
        assert self.watch is not None
        tick = 0
        while True:
            tick += 1
            await self._sleep_until(tick * STATUS_EVERY)
            spare, busy, total = self.watch.counts()
            other = max(0, total - spare - busy)
            bar = "S" * spare + "B" * busy + "." * other
            self.console.at(
                self.console.now(), f"spare {spare}  busy {busy:>2}  total {total:>2}  {bar}"
            )

    async def _tail_logs(self) -> None:
        while True:
            self._read_logs(live=True)
            for controller in self.controllers:
                if controller.process is not None and controller.process.poll() is not None:
                    self._violation(
                        f"{controller.name} exited with code {controller.process.returncode}"
                    )
                    controller.process = None
            await asyncio.sleep(0.1)

    def _read_logs(self, *, live: bool) -> None:
        batch: list[tuple[str, str, dict[str, Any]]] = []
        for controller in self.controllers:
            tail = self.tails.setdefault(controller.name, LogTail(controller))
            batch.extend((str(e.get("ts", "")), controller.name, e) for e in tail.new_lines())
        # Both replicas' lines in the order they were written (the timestamps are ISO, UTC).
        for _, replica, entry in sorted(batch, key=lambda item: item[0]):
            self._on_log(replica, entry, live=live)

    def _on_log(self, replica: str, entry: Mapping[str, Any], *, live: bool) -> None:
        msg = str(entry.get("msg", ""))
        t = self.console.from_wall(_wall(entry["ts"])) if "ts" in entry else self.console.now()
        if msg == "webhook":
            self.outcome.webhooks[replica] += 1
            return
        if msg == "sweep done":
            self.outcome.sweeps.append(t)
            return
        if msg == "started leading":
            self.outcome.leader = replica
            if live:
                self._at_or_setup(
                    t, f"* {replica} holds the Lease: it sweeps every {SWEEP_INTERVAL} s"
                )
            return
        action = entry.get("action")
        if action in ("detach", "delete") and msg.startswith(f"{action} "):
            record = Action(
                t=t,
                replica=replica,
                action=str(action),
                pod=str(entry.get("pod", "")),
                reason=str(entry.get("reason", "")),
                source=str(entry.get("source", "")),
                result=str(entry.get("result") or ("failed" if msg.endswith(" failed") else "?")),
            )
            self.outcome.actions.append(record)
            self._check_action(record)
            if live:
                result = "" if record.result == "done" else f" [{record.result}]"
                if record.result == "failed":
                    error = str(entry.get("error", ""))
                    result = f" [failed: {error[:90]}{'...' if len(error) > 90 else ''}]"
                self.console.at(
                    t,
                    f"* {record.action} {record.pod}: {record.reason}, via {record.source} "
                    f"({replica}){result}",
                )
            return
        if live and entry.get("level") in ("warning", "error"):
            detail = entry.get("pod") or entry.get("error") or ""
            self._at_or_setup(t, f"! {replica} {entry.get('level')}: {msg} {detail}".rstrip())

    def _at_or_setup(self, t: float, text: str) -> None:
        if self.console.t0 is None:
            self.console.setup(text)
        else:
            self.console.at(t, text)

    def _check_action(self, action: Action) -> None:
        if action.result != "done":
            return
        recs = [r for r in self.recordings.values() if r.pod == action.pod]
        if not recs:
            self._violation(f"{action.replica} {action.action}ed {action.pod}, never recorded on")
        elif action.action == "delete" and any(r.state is RecState.LIVE for r in recs):
            self._violation(f"{action.replica} deleted {action.pod} during a live recording")

    def _final_checks(self) -> None:
        done = [a for a in self.outcome.actions if a.result == "done"]
        detached = {a.pod for a in done if a.action == "detach"}
        for rec in self.recordings.values():
            if rec.pod is not None and rec.pod not in detached:
                # The log may lag a moment behind the watch.
                self._read_logs(live=False)
                detached = {
                    a.pod
                    for a in self.outcome.actions
                    if a.result == "done" and a.action == "detach"
                }
                if rec.pod not in detached:
                    self._violation(f"{rec.plan.id}: its pod {rec.pod} was never detached")

    # -- the end

    def _report(self, plane: ControlPlane) -> None:
        out = self.outcome
        recs = list(self.recordings.values())
        started = [r for r in recs if r.pod is not None]
        finished = [r for r in started if r.plan.fate is not Fate.CRASHES]
        lost = [r for r in finished if r.plan.fate is Fate.WEBHOOK_LOST]
        crashed = [r for r in started if r.plan.fate is Fate.CRASHES]
        away = [r for r in recs if r.state is RecState.TURNED_AWAY]
        ramp = out.ramp_done if out.ramp_done is not None else 0.0
        after_ramp = [s.spare for s in out.samples if s.t >= ramp]
        lowest = min(after_ramp) if after_ramp else 0
        final = out.samples[-1] if out.samples else Sample(0, 0, 0, 0)
        done = [a for a in out.actions if a.result == "done"]
        others = Counter(a.result for a in out.actions if a.result != "done")
        png = self._plot()

        self.console.line()
        self.console.line("summary")
        self.console.line(
            f"  recordings    {len(started)} started, {len(finished)} finished "
            f"({len(lost)} with its EXPIRED webhook lost), {len(crashed)} crashed, "
            f"{len(away)} turned away"
        )
        self.console.line(
            f"  spare pods    lowest {lowest} after the ramp-up (done at {ramp:.1f} s), "
            f"target {SPARES}, {final.spare} at the end with {final.busy} busy"
        )
        for kind in ("detach", "delete"):
            group = [a for a in done if a.action == kind]
            by = Counter((a.source, a.reason) for a in group)
            parts = ", ".join(
                f"{n} {reason} via {source}"
                for (source, reason), n in sorted(
                    by.items(), key=lambda kv: (kv[0][0] != "webhook", -kv[1], kv[0])
                )
            )
            label = "detaches" if kind == "detach" else "deletes"
            self.console.line(f"  {label:<13} {len(group)}: {parts or 'none'}")
        if others:
            meaning = {
                "gone": "the pod was gone already",
                "failed": "refused by the API, e.g. a conflict with a write that came first",
            }
            extra = "; ".join(
                f"{n} {result}: {meaning.get(result, result)}"
                for result, n in sorted(others.items())
            )
            self.console.line(f"  not done      {extra}")
        replicas = []
        for replica in REPLICAS:
            mine = Counter(a.source for a in done if a.replica == replica)
            what = ", ".join(f"{n} via {source}" for source, n in sorted(mine.items()))
            lease = " (Lease holder)" if replica == out.leader else ""
            replicas.append(f"{replica}{lease}: {what or 'no writes'}")
        self.console.line(f"  by replica    {'; '.join(replicas)}")
        self.console.line(f"  reaction      {self._latencies(done)}")
        hooks = ", ".join(f"{r} {out.webhooks.get(r, 0)}" for r in REPLICAS)
        self.console.line(f"  webhooks      answered: {hooks}")
        self.console.line(f"  API writes    {self._writes(plane)}")
        shown = png.relative_to(REPO) if png.is_relative_to(REPO) else png
        self.console.line(f"  timeline      {shown}")
        if out.violations:
            self.console.line(f"  result        {len(out.violations)} invariant(s) violated:")
            for v in out.violations:
                self.console.line(f"                - {v}")
        else:
            self.console.line(
                "  result        OK: no live recording lost its pod, every used pod was detached "
                f"and deleted, {SPARES} spares at the end"
            )

    def _latencies(self, done: Sequence[Action]) -> str:
        """How long after each request to a Jibri the controllers acted on its pod."""
        first: dict[tuple[str, str], float] = {}
        for a in done:
            first.setdefault((a.action, a.pod), a.t)
        detach, delete, special = [], [], []
        for rec in self.recordings.values():
            if rec.pod is None or rec.started is None:
                continue
            if ("detach", rec.pod) in first:
                detach.append(first[("detach", rec.pod)] - rec.started)
            if ("delete", rec.pod) in first and rec.ended is not None:
                seconds = first[("delete", rec.pod)] - rec.ended
                if rec.plan.fate is Fate.FINISHES:
                    delete.append(seconds)
                else:
                    what = "lost EXPIRED" if rec.plan.fate is Fate.WEBHOOK_LOST else "crash"
                    when = f"{seconds:.1f} s" if seconds >= 0 else "deleted before it ended"
                    special.append(f"{what} {when}")

        def spread(values: list[float]) -> str:
            if not values:
                return "-"
            values = sorted(values)
            return f"median {values[len(values) // 2]:.2f} s, max {values[-1]:.2f} s"

        return (
            f"startService -> detach {spread(detach)}; stopService -> delete {spread(delete)}; "
            f"by the sweep: {', '.join(special) or '-'}"
        )

    def _writes(self, plane: ControlPlane) -> str:
        user = service_account_user(NAMESPACE)
        events = all_write_events(plane, namespace=NAMESPACE, username=user)
        ok: Counter[tuple[str, str]] = Counter()
        refused: Counter[str] = Counter()
        for e in events:
            key = ((e.get("objectRef") or {}).get("resource", "?"), str(e.get("verb")))
            code = int((e.get("responseStatus") or {}).get("code", 0))
            if 200 <= code < 300:
                ok[key] += 1
            else:
                refused[f"{key[0]} {key[1]} {code}"] += 1
        order = {"pods": 0, "events": 1, "leases": 2}
        verbs = {"create": 0, "patch": 1, "update": 2, "delete": 3}

        def rank(item: tuple[tuple[str, str], int]) -> tuple[int, str, int, str]:
            (resource, verb), _ = item
            return order.get(resource, 9), resource, verbs.get(verb, 9), verb

        groups: dict[str, list[str]] = {}
        for (resource, verb), n in sorted(ok.items(), key=rank):
            groups.setdefault(resource, []).append(f"{n} {verb}")
        text = "; ".join(f"{resource} {' + '.join(v)}" for resource, v in groups.items())
        total = sum(ok.values())
        line = f"{total} by the controllers' ServiceAccount (audit log): {text}"
        if refused:
            what = ", ".join(f"{n} {k}" for k, n in sorted(refused.items()))
            line += f"; refused: {what}"
        return line

    def _plot(self) -> Path:
        title = (
            f"jibri-pod-controller demo: {SPARES} spare "
            f"{'real ' if self.options.real_jibri else ''}Jibris, "
            f"{sum(r.pod is not None for r in self.recordings.values())} recordings "
            f"(seed {self.options.seed}, {self.options.duration:g} s)"
        )
        write_timeline(self.options.out, self.outcome, end=self.console.now(), title=title)
        return self.options.out


# ---------------------------------------------------------------------------------------------
# The timeline

WEBHOOK_COLOR, SWEEP_COLOR = "#1f6fb4", "#d62728"
SPARE_COLOR, BUSY_COLOR, TOTAL_COLOR = "#2ca02c", "#ff7f0e", "#7f7f7f"
LOST_COLOR = "#9467bd"


def write_timeline(path: Path, outcome: Outcome, *, end: float, title: str) -> None:
    """Spare, busy and total pods over time; below, every request the scenario made, every
    detach and delete the controllers made, and every sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    samples = outcome.samples or [Sample(0.0, 0, 0, 0)]
    times = [s.t for s in samples] + [max(end, samples[-1].t)]

    def series(values: list[int]) -> list[int]:
        return [*values, values[-1]]

    fig = plt.figure(figsize=(12, 7.5), dpi=110)
    grid = fig.add_gridspec(2, 1, height_ratios=[3, 1.6], hspace=0.06)
    top = fig.add_subplot(grid[0])
    bottom = fig.add_subplot(grid[1], sharex=top)

    # Pods over time.
    if outcome.ramp_done is not None:
        top.axvspan(0, outcome.ramp_done, color="#000000", alpha=0.07, lw=0, label="ramp-up")
    top.axhline(SPARES, color=SPARE_COLOR, ls=":", lw=1.2, label=f"target: {SPARES} spares")
    top.step(
        times,
        series([s.total for s in samples]),
        where="post",
        color=TOTAL_COLOR,
        lw=1.2,
        ls="--",
        label="all Jibri pods",
    )
    top.step(
        times,
        series([s.busy for s in samples]),
        where="post",
        color=BUSY_COLOR,
        lw=2,
        label="busy: detached, recording or waiting for deletion",
    )
    top.step(
        times,
        series([s.spare for s in samples]),
        where="post",
        color=SPARE_COLOR,
        lw=2.4,
        label="spare: idle-labelled and Ready",
    )
    highest = max(s.total for s in samples)
    special = [m for m in outcome.marks if m.kind in ("lost", "crash")]
    for i, mark in enumerate(special):
        lost = mark.kind == "lost"
        color = LOST_COLOR if lost else SWEEP_COLOR
        text = "EXPIRED webhook lost" if lost else "busy Jibri crashed"
        top.axvline(mark.t, color=color, ls="-.", lw=1, alpha=0.8)
        # Text away from the nearer edge; a label close to the previous one goes lower.
        left = mark.t > 0.55 * times[-1]
        close = i > 0 and abs(mark.t - special[i - 1].t) < 0.25 * times[-1]
        top.annotate(
            f"{text} ({mark.recording})",
            xy=(mark.t, highest + 1.6),
            xytext=(-5 if left else 5, -14 if close else 0),
            textcoords="offset points",
            ha="right" if left else "left",
            va="center",
            fontsize=8,
            color=color,
        )
    top.set_ylim(0, highest + 2)
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_ylabel("pods")
    top.set_title(title, pad=26)
    top.grid(True, axis="y", alpha=0.3)
    top.legend(
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=5,
        fontsize=8,
        frameon=False,
        handlelength=2.5,
    )
    top.tick_params(labelbottom=False)

    # What happened, one row per kind.
    rows = {
        "recording starts": 4,
        "detaches": 3,
        "recording ends": 2,
        "deletes": 1,
        "sweeps (Lease holder)": 0,
    }

    def row(name: str, ts: list[float], **style: Any) -> None:
        bottom.scatter(ts, [rows[name]] * len(ts), zorder=3, **style)

    row(
        "recording starts",
        [m.t for m in outcome.marks if m.kind == "start"],
        marker="|",
        s=170,
        color="black",
    )
    row(
        "recording ends",
        [m.t for m in outcome.marks if m.kind == "stop"],
        marker="|",
        s=170,
        color="black",
    )
    row(
        "recording ends",
        [m.t for m in outcome.marks if m.kind == "lost"],
        marker="o",
        s=55,
        color=LOST_COLOR,
    )
    row(
        "recording ends",
        [m.t for m in outcome.marks if m.kind == "crash"],
        marker="X",
        s=70,
        color=SWEEP_COLOR,
    )
    done = [a for a in outcome.actions if a.result == "done"]
    for action, name, marker in (("detach", "detaches", "^"), ("delete", "deletes", "v")):
        for source, color in (("webhook", WEBHOOK_COLOR), ("sweep", SWEEP_COLOR)):
            ts = [a.t for a in done if a.action == action and a.source == source]
            row(name, ts, marker=marker, s=60, color=color, edgecolors="black", linewidths=0.4)
    # Name the rule behind each sweep action; actions of one sweep are stacked.
    labelled: list[Action] = []
    for a in sorted((a for a in done if a.source == "sweep"), key=lambda a: a.t):
        stack = sum(b.action == a.action and a.t - b.t < 1.0 for b in labelled)
        labelled.append(a)
        bottom.annotate(
            a.reason,
            xy=(a.t, rows["deletes" if a.action == "delete" else "detaches"]),
            xytext=(7, -12 - 9 * stack),
            textcoords="offset points",
            fontsize=7,
            va="center",
            color=SWEEP_COLOR,
        )
    row("sweeps (Lease holder)", outcome.sweeps, marker="o", s=12, color=TOTAL_COLOR)
    bottom.set_yticks(list(rows.values()), list(rows.keys()), fontsize=8)
    bottom.set_ylim(-0.7, 4.7)
    bottom.grid(True, axis="x", alpha=0.3)
    bottom.set_xlim(0, times[-1])
    bottom.set_xlabel("seconds since the Jibri Deployment was created")
    legend = [
        Line2D([], [], ls="", marker="^", color="#bbbbbb", mec="black", mew=0.4, label="detach"),
        Line2D([], [], ls="", marker="v", color="#bbbbbb", mec="black", mew=0.4, label="delete"),
        Patch(color=WEBHOOK_COLOR, label="via webhook"),
        Patch(color=SWEEP_COLOR, label="via sweep"),
        Line2D([], [], ls="", marker="|", color="black", ms=10, label="startService / stopService"),
        Line2D([], [], ls="", marker="o", color=LOST_COLOR, label="stopService, webhook lost"),
        Line2D([], [], ls="", marker="X", color=SWEEP_COLOR, label="Jibri crash"),
    ]
    bottom.legend(
        handles=legend,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.3),
        ncol=7,
        fontsize=8,
        frameon=False,
    )

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _ignoring_interrupts() -> Iterator[None]:
    """Let the cleanup finish even if Ctrl-C is pressed again."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="scripts/demo.sh",
        description=(
            "Run the controller from deploy/ on a local control plane with simulated Jibris, "
            "play a scripted day of recordings, and draw what happened."
        ),
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"length of the scenario in seconds (default {DEFAULT_DURATION:g}; "
        f"{FAST_DURATION:g} with --fast)",
    )
    parser.add_argument("--fast", action="store_true", help="a shorter run, as the tests use")
    parser.add_argument(
        "--real-jibri",
        action="store_true",
        help="real Jibris built from source (scripts/build-jibri.sh) instead of simulated ones: "
        f"a recording every {REAL_EVERY:g} s, none crashes (default duration "
        f"{REAL_DEFAULT_DURATION:g} s; needs root, Chromium and nftables)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the scenario (default 7)")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="where to write the timeline PNG (default out/demo-timeline.png)",
    )
    args = parser.parse_args(argv)
    duration = args.duration
    if duration is None:
        fast = FAST_DURATION if args.fast else DEFAULT_DURATION
        duration = REAL_DEFAULT_DURATION if args.real_jibri and not args.fast else fast
    least = 3 * REAL_EVERY if args.real_jibri else 20
    if duration < least:
        parser.error(f"--duration must be at least {least:g} seconds")
    return Options(
        duration=duration, seed=args.seed, out=args.out.resolve(), real_jibri=args.real_jibri
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    # Errors from the testbed (kubelet, simulated Jibris) only; the controllers' logs are read
    # and summarized above.
    logging.basicConfig(level=logging.ERROR, format="! %(name)s: %(message)s")
    log.setLevel(logging.WARNING)
    return Demo(options).run()


if __name__ == "__main__":
    sys.exit(main())
