"""The demo's scenario: the cluster and the controllers set up as deploy/ has them, the planned
recordings played on spares, and every reaction of the controllers checked as it happens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s

from testbed import realjibri
from testbed.cluster import (
    DEPLOY,
    JIBRI_PORT,
    REPO,
    ControllerProcess,
    JibriJwt,
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
)
from testbed.controlplane import ControlPlane
from testbed.demo.console import Console
from testbed.demo.outcome import Action, Mark, Outcome, Recording, RecState
from testbed.demo.plan import (
    FAILURE_LOGS,
    KID,
    NAMESPACE,
    REAL_EVERY,
    REAL_RECOVERY_GRACE,
    RECOVERY_GRACE,
    REPLICAS,
    SPARE_WAIT,
    SPARES,
    STATUS_EVERY,
    STATUS_PERIOD,
    SWEEP_INTERVAL,
    SWEEP_REPLICA,
    WEBHOOK_REPLICA,
    Fate,
    make_plan,
)
from testbed.demo.report import print_summary
from testbed.demo.timeline import write_timeline
from testbed.demo.watching import ControllerLogs, PodView, PodWatch
from testbed.kube import new_api_client
from testbed.kubelet import KubeletThread, run_in_thread
from testbed.observing import wait_until
from testbed.ports import listen_port

EXIT_OK, EXIT_VIOLATION, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

log = logging.getLogger("testbed.demo")


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
        self.logs = ControllerLogs()
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
            self.watch = PodWatch(api, self.console, self.outcome, self.on_pod_leaving)
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
        for replica, entry in self.logs.new_entries(self.controllers):
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
        png = self._plot()
        print_summary(self.console, self.outcome, self.recordings, plane=plane, png=png)

    def _plot(self) -> Path:
        title = (
            f"jibri-pod-controller demo: {SPARES} spare "
            f"{'real ' if self.options.real_jibri else ''}Jibris, "
            f"{sum(r.pod is not None for r in self.recordings.values())} recordings "
            f"(seed {self.options.seed}, {self.options.duration:g} s)"
        )
        write_timeline(self.options.out, self.outcome, end=self.console.now(), title=title)
        return self.options.out


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
