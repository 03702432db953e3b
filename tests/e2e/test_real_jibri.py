"""The controller with real Jibris: Jibri built from its source (scripts/build-jibri.sh), run by
the fake kubelet for pods annotated for it (testbed/realjibri.py), each in its own network
namespace, recording a local fake meeting with headless Chromium and a fake ffmpeg.

The pods are deploy/jibri/'s Deployment, ConfigMap (jibri.conf) and signing-key Secret, as an
operator installs them; only the subscriber's host (the bridge's address instead of the
Service's name) and the image differ. The controller runs as its own process with its own
restricted identity, verifies the real Jibri's RS256 tokens, and checks that each webhook comes
from the pod's address. Writes are counted from the API server's audit log.

What the simulated Jibri cannot show: the real wire (chunked bodies, Jibri's own token, its
first webhook being its first periodic tick), a recording that runs in a browser, and the real
failure modes (a periodic resend that died, events lost to a timeout).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testbed import realjibri
from testbed.cluster import (
    ControllerProcess,
    WebhookKeys,
    apply,
    controller_kubeconfig,
    create_namespace,
    delete_namespace,
    jibri_deployment,
    make_webhook_keys,
    pod_write_events,
    rbac_manifests,
    service_account_user,
    start_recording,
    stop_recording,
    wait_until,
)
from testbed.realjibri import RealJibri
from tests.e2e.conftest import E2E, LOGS
from tests.e2e.helpers import get_pod, is_busy, list_pods, spares, wait_spares
from tests.e2e.test_pools import create_pool, patch_pool, wait_replicas, wait_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# deploy/jibri/jibri.conf's jwt-info: the controller is told the same.
KID, ISSUER, AUDIENCE = realjibri.deploy_jwt_info()
START_TIMEOUT = 180.0
"""A pod's JVM started and answering (queued behind other starts on a loaded machine)."""
SESSION_TIMEOUT = 60.0
"""startService to the session webhook ON: Chromium starts, joins, ffmpeg reports progress."""


@pytest.fixture(scope="module")
def jar() -> Path:
    """Jibri's jar (built once by scripts/build-jibri.sh, then cached)."""
    return realjibri.find_jar()


@pytest.fixture(scope="module")
def deploy_keys(tmp_path_factory: pytest.TempPathFactory) -> WebhookKeys:
    """A signing key pair named as deploy/jibri/jibri.conf names it."""
    return make_webhook_keys(
        tmp_path_factory.mktemp("jibri-keys"), kid=KID, issuer=ISSUER, audience=AUDIENCE
    )


@dataclass(frozen=True)
class Webhook:
    kind: str
    status: str
    code: int
    source: str


@dataclass(frozen=True)
class Action:
    action: str
    source: str
    reason: str
    result: str


@dataclass
class Real:
    """A test's namespaces, controllers and real Jibris."""

    e2e: E2E
    keys: WebhookKeys
    tmp: Path
    controllers: list[ControllerProcess] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> realjibri.RealJibris:
        return self.e2e.kubelet.kubelet.real_jibris

    def gateway(self) -> str:
        """Where the pods reach the controller: the host's address on their bridge."""
        return self.runtime.gateway()

    def controller(
        self, name: str = "controller-a", *, namespace: str | None = None, **env: str
    ) -> ControllerProcess:
        """A controller replica with the restricted identity, configured but not started."""
        namespace = namespace or self.e2e.namespace
        settings = {
            "SWEEP_INTERVAL": "2",
            "JWT_KEYS_DIR": str(self.keys.directory),
            "JWT_ISSUER": ISSUER,
            "JWT_AUDIENCE": AUDIENCE,
            "LOG_LEVEL": "debug",
            "SHUTDOWN_DRAIN_SECONDS": "0",
            **env,
        }
        process = ControllerProcess(
            name=name,
            kubeconfig=controller_kubeconfig(self.e2e.plane, namespace),
            namespace=namespace,
            log_path=self.tmp / f"{namespace}-{name}.log",
            env=settings,
        )
        self.controllers.append(process)
        return process

    def subscriber(self, controller: ControllerProcess) -> str:
        return f"http://{self.gateway()}:{controller.port}/webhook/$(POD_NAME)"

    async def deploy(self, controller: ControllerProcess, *, replicas: int = 1) -> str:
        """deploy/jibri/ in the test's namespace, the pods annotated for a real Jibri and
        posting to ``controller``; the name of the first spare, once it is Ready."""
        objects = realjibri.deploy_objects(
            namespace=self.e2e.namespace,
            subscriber=self.subscriber(controller),
            signing_key=self.keys.jibri.key_path.read_bytes(),
            replicas=replicas,
        )
        await apply(self.e2e.admin, objects)
        pods = await wait_spares(
            self.e2e.admin, self.e2e.namespace, replicas, timeout=START_TIMEOUT
        )
        name: str = pods[0].metadata.name
        return name

    def jibri(self, pod: str) -> RealJibri:
        return self.runtime.get(self.e2e.namespace, pod)

    async def second_namespace(self, base: str) -> str:
        """Another namespace with deploy/'s RBAC, removed after the test."""
        name = f"{base}-{self.e2e.namespace.rsplit('-', 1)[-1]}"
        await create_namespace(self.e2e.admin, name)
        self.namespaces.append(name)
        await apply(self.e2e.admin, rbac_manifests(name))
        return name


@pytest.fixture
async def real(
    e2e: E2E,
    jar: Path,
    deploy_keys: WebhookKeys,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Real]:
    setup = Real(e2e, deploy_keys, tmp_path)
    failed_before = request.session.testsfailed
    try:
        yield setup
    finally:
        for controller in setup.controllers:
            controller.stop()
        if request.session.testsfailed > failed_before:
            target = LOGS / request.node.name
            target.mkdir(parents=True, exist_ok=True)
            for controller in setup.controllers:
                if controller.log_path.exists():
                    shutil.copy(controller.log_path, target / controller.log_path.name)
            for (namespace, pod), logs in setup.runtime.logs.items():
                for n, log in enumerate(logs):
                    if namespace == e2e.namespace and log.exists():
                        copy = target / f"jibri-{pod}-{n}"
                        shutil.copytree(log.parent, copy, dirs_exist_ok=True)
        for namespace in setup.namespaces:
            await delete_namespace(e2e.admin, namespace)


# --------------------------------------------------------------------------------------------
# What the controller saw and did


def webhooks(controller: ControllerProcess, pod: str) -> list[Webhook]:
    return [
        Webhook(str(e["kind"]), str(e["status"]), int(e["code"]), str(e["source"]))
        for e in controller.log_lines()
        if e.get("msg") == "webhook" and e.get("pod") == pod
    ]


def actions(controller: ControllerProcess, pod: str) -> list[Action]:
    return [
        Action(str(e["action"]), str(e["source"]), str(e["reason"]), str(e.get("result")))
        for e in controller.log_lines()
        if e.get("pod") == pod
        and e.get("action") in ("detach", "delete")
        and str(e.get("msg", "")).startswith(f"{e.get('action')} ")
    ]


def pod_writes(real: Real, namespace: str, pod: str) -> list[str]:
    user = service_account_user(namespace)
    events = pod_write_events(real.e2e.plane, namespace=namespace, username=user)
    return [e["verb"] for e in events if e["objectRef"].get("name") == pod]


def collapsed(hooks: list[Webhook], kind: str) -> list[str]:
    """The statuses of one kind of webhook the controller accepted, in arrival order, repeats
    in a row folded (a periodic resend repeats the current status)."""
    out: list[str] = []
    for hook in hooks:
        if hook.kind == kind and hook.code == 200 and (not out or out[-1] != hook.status):
            out.append(hook.status)
    return out


def changes(hooks: list[Webhook]) -> list[str]:
    """The status changes the controller accepted (`collapsed`), without the spare's IDLE: the
    one a real Jibri sends first may be refused (see `authenticated`), and writes nothing
    either way."""
    return [status for status in collapsed(hooks, "status") if status != "IDLE"]


def authenticated(hooks: list[Webhook]) -> bool:
    """Every webhook passed the token check (JWT on) and was answered 200. (The body of the
    first one from a JVM that has just started can take over a second to follow its headers:
    WEBHOOK_READ_TIMEOUT's default, 1.9 s, waits for it.)"""
    return bool(hooks) and all(h.code == 200 for h in hooks)


async def wait_webhook(
    controller: ControllerProcess, pod: str, kind: str, status: str, *, timeout: float
) -> Webhook:
    async def seen() -> Webhook | None:
        return next(
            (h for h in webhooks(controller, pod) if (h.kind, h.status) == (kind, status)), None
        )

    return await wait_until(seen, timeout=timeout, what=f"{kind} webhook {status} from {pod}")


async def wait_deleted(
    real: Real, controller: ControllerProcess, namespace: str, pod: str, *, timeout: float
) -> None:
    """Wait until the pod is gone, the controller has logged its delete and the audit log
    shows it (the log line follows the API's answer, which follows the pod's removal)."""

    async def gone() -> bool:
        return (
            await get_pod(real.e2e.admin, namespace, pod) is None
            and any(a.action == "delete" for a in actions(controller, pod))
            and "delete" in pod_writes(real, namespace, pod)
        )

    await wait_until(gone, timeout=timeout, what=f"{pod} deleted")


async def jibri_post(jibri: RealJibri, path: str, body: dict[str, Any] | None = None) -> int:
    return await realjibri.api_call(jibri.address, path, body)


@dataclass(frozen=True)
class Observed:
    pod: str
    ip: str
    webhooks: list[Webhook]
    actions: list[Action]
    writes: list[str]


async def record_once(
    real: Real,
    *,
    namespace: str,
    controller: ControllerProcess,
    pod: str,
    start: Any,
    stop: Any,
    wait_on: bool,
) -> Observed:
    """The short scenario: a spare records, then stops; wait for the controller to detach it
    and then delete it. ``start``/``stop`` make the requests (real or simulated Jibri)."""
    admin = real.e2e.admin
    got = await get_pod(admin, namespace, pod)
    assert got is not None
    ip: str = got.status.pod_ip

    async def first_tick() -> bool:  # accepted, or refused as a JVM's first (authenticated)
        return any(h.kind == "status" for h in webhooks(controller, pod))

    await wait_until(first_tick, timeout=30, what=f"the first status webhook from {pod}")
    assert await start() == 200

    async def detached() -> bool:
        current = await get_pod(admin, namespace, pod)
        return current is not None and is_busy(current)

    await wait_until(detached, timeout=30, what=f"{pod} detached")
    if wait_on:
        await wait_webhook(controller, pod, "session", "ON", timeout=SESSION_TIMEOUT)
    assert await stop() == 200
    await wait_deleted(real, controller, namespace, pod, timeout=60)
    return Observed(
        pod=pod,
        ip=ip,
        webhooks=webhooks(controller, pod),
        actions=actions(controller, pod),
        writes=pod_writes(real, namespace, pod),
    )


# --------------------------------------------------------------------------------------------
# The tests


async def test_a_real_recording_detaches_then_deletes_its_pod_as_a_simulated_one_does(
    real: Real,
) -> None:
    """A recording on a real Jibri: BUSY detaches its pod with one PATCH, EXPIRED deletes it
    with one DELETE, both from the webhooks (the sweeper runs every 30 s, so it does not
    race them), every webhook authenticated by Jibri's own token and sent from the pod's
    address. The same scenario against the simulated Jibri with every real behaviour switched
    on, at the same time in a namespace of its own, must look the same to the controller:
    webhooks by kind and status, the actions and their sources, the pod writes."""
    controller = real.controller(SWEEP_INTERVAL="30")
    controller.start()
    await controller.wait_ready()
    pod = await real.deploy(controller)
    jibri = real.jibri(pod)

    sim_namespace = await real.second_namespace("sim")
    sim_controller = real.controller("controller-sim", namespace=sim_namespace, SWEEP_INTERVAL="30")
    sim_controller.start()
    await sim_controller.wait_ready()
    sim = jibri_deployment(
        namespace=sim_namespace,
        replicas=1,
        subscribers=[sim_controller.webhook_base()],
        jwt=real.keys.jibri,
    )
    # The simulator "as the real Jibri": every real behaviour switched on (testbed/simjibri.py).
    sim_env = sim["spec"]["template"]["spec"]["containers"][0]["env"]
    sim_env.append({"name": "SIM_JIBRI_REAL_BEHAVIOURS", "value": "all"})
    await apply(real.e2e.admin, [sim])
    (sim_pod,) = await wait_spares(real.e2e.admin, sim_namespace, 1)
    sim_ip: str = sim_pod.status.pod_ip

    meeting = realjibri.call_params(real.runtime.meeting_root, session_id="rec-1")
    real_run, sim_run = await asyncio.gather(
        record_once(
            real,
            namespace=real.e2e.namespace,
            controller=controller,
            pod=pod,
            start=lambda: jibri_post(jibri, "startService", meeting),
            stop=lambda: jibri_post(jibri, "stopService"),
            wait_on=True,
        ),
        record_once(
            real,
            namespace=sim_namespace,
            controller=sim_controller,
            pod=sim_pod.metadata.name,
            start=lambda: start_recording(sim_ip, "rec-1"),
            stop=lambda: stop_recording(sim_ip),
            wait_on=True,
        ),
    )

    # The real Jibri: one PATCH, one DELETE, both from its webhooks.
    assert real_run.writes == ["patch", "delete"]
    assert [(a.action, a.source, a.reason, a.result) for a in real_run.actions] == [
        ("detach", "webhook", "busy-reported", "done"),
        ("delete", "webhook", "expired-reported", "done"),
    ]
    first = real_run.webhooks[0]  # its first periodic tick, before any event
    assert (first.kind, first.status, first.code) in {("status", "IDLE", 200), ("status", "-", 408)}
    assert changes(real_run.webhooks) == ["BUSY", "EXPIRED"]
    assert collapsed(real_run.webhooks, "session") == ["ON", "OFF"]
    assert authenticated(real_run.webhooks)  # JWT on: Jibri's own token verified
    assert {h.source for h in real_run.webhooks} == {real_run.ip}
    assert real_run.ip.startswith("198.1")  # its own network namespace, not loopback

    # The simulated Jibri, as the controller sees it: the same.
    assert sim_run.writes == real_run.writes
    assert [(a.action, a.source, a.reason) for a in sim_run.actions] == [
        (a.action, a.source, a.reason) for a in real_run.actions
    ]
    assert changes(sim_run.webhooks) == changes(real_run.webhooks)
    assert collapsed(sim_run.webhooks, "session") == collapsed(real_run.webhooks, "session")
    assert authenticated(sim_run.webhooks)


async def test_a_jibri_whose_resend_died_is_deleted_by_the_sweeper(real: Real) -> None:
    """Jibri's periodic status resend stops for good after one tick that could not reach the
    subscriber. Started while the controller is not listening, its first tick fails; then it
    records (its BUSY event still detaches the pod), and its EXPIRED is lost to a network that
    drops its packets to the controller. No webhook will ever say EXPIRED again: the sweeper
    (every 2 s) must find it and delete the pod, with one DELETE."""
    controller = real.controller(SWEEP_INTERVAL="2")  # its port is known, nothing listens yet
    pod = await real.deploy(controller)
    jibri = real.jibri(pod)

    async def first_tick_done() -> bool:
        return "Updating 1 subscribers of status" in jibri.log_text()

    await wait_until(first_tick_done, timeout=30, what="Jibri's first status tick")
    await asyncio.sleep(1.0)  # a refused connection fails at once; leave it time to
    assert "Got response from" not in jibri.log_text()
    controller.start()
    await controller.wait_ready()
    await asyncio.sleep(1.0)
    assert webhooks(controller, pod) == []  # silent: nothing resends its IDLE

    meeting = realjibri.call_params(real.runtime.meeting_root, session_id="rec-2")
    assert await jibri_post(jibri, "startService", meeting) == 200

    async def detached() -> bool:
        current = await get_pod(real.e2e.admin, real.e2e.namespace, pod)
        return current is not None and is_busy(current)

    await wait_until(detached, timeout=30, what=f"{pod} detached")
    await wait_webhook(controller, pod, "session", "ON", timeout=SESSION_TIMEOUT)

    host, port = real.gateway(), controller.port
    await asyncio.to_thread(real.e2e.kubelet.call, jibri.block_webhooks(host, port))
    stopping = asyncio.create_task(jibri_post(jibri, "stopService"))
    try:
        await wait_deleted(real, controller, real.e2e.namespace, pod, timeout=60)
    finally:
        # Deleted with its pod, the Jibri may not answer stopService at all.
        stopping.cancel()
        await asyncio.gather(stopping, return_exceptions=True)

    assert pod_writes(real, real.e2e.namespace, pod) == ["patch", "delete"]
    assert [(a.action, a.source, a.reason, a.result) for a in actions(controller, pod)] == [
        ("detach", "webhook", "busy-reported", "done"),
        ("delete", "sweep", "expired-reported", "done"),
    ]
    seen = webhooks(controller, pod)
    assert ("status", "EXPIRED") not in {(h.kind, h.status) for h in seen}
    assert collapsed(seen, "status") == ["BUSY"]


async def test_a_jibri_that_could_not_report_busy_stays_busy_and_the_sweeper_detaches_it(
    real: Real,
) -> None:
    """The controller refuses connections from the pod when Jibri goes BUSY: the BUSY webhook's
    error escapes to startService, which answers 500; no session starts, and Jibri reports
    BUSY for good (stopService finds no service). The sweeper sees BUSY on a spare and detaches
    it, with one PATCH; nothing ends it (the stuck-BUSY rule, off here, is what would)."""
    controller = real.controller(SWEEP_INTERVAL="2")
    controller.start()
    await controller.wait_ready()
    pod = await real.deploy(controller)
    jibri = real.jibri(pod)

    async def first_tick() -> bool:
        return any(h.kind == "status" for h in webhooks(controller, pod))

    await wait_until(first_tick, timeout=30, what=f"the first status webhook from {pod}")
    host, port = real.gateway(), controller.port
    await asyncio.to_thread(real.e2e.kubelet.call, jibri.block_webhooks(host, port, refuse=True))

    meeting = realjibri.call_params(real.runtime.meeting_root, session_id="rec-3")
    assert await jibri_post(jibri, "startService", meeting) == 500

    async def detached() -> bool:
        current = await get_pod(real.e2e.admin, real.e2e.namespace, pod)
        return current is not None and is_busy(current)

    await wait_until(detached, timeout=30, what=f"{pod} detached by the sweeper")
    assert await jibri_post(jibri, "stopService") == 200  # "No service active"
    await asyncio.sleep(3.0)  # a sweep or two more
    assert await realjibri.busy_status(jibri.address) == "BUSY"
    assert [(a.action, a.source, a.reason, a.result) for a in actions(controller, pod)] == [
        ("detach", "sweep", "busy-missed-webhook", "done"),
    ]
    assert pod_writes(real, real.e2e.namespace, pod) == ["patch"]
    seen = webhooks(controller, pod)
    assert {h.status for h in seen if h.kind == "status"} <= {"IDLE", "-"}  # never BUSY
    assert [h for h in seen if h.kind == "session"] == []


async def test_a_graceful_shutdown_from_inside_the_pod_ends_an_idle_jibri(real: Real) -> None:
    """What a preStop exec hook does, through the runner: a command inside the pod's network
    namespace asks Jibri's internal API (0.0.0.0:3333 there, not reachable from the host's
    side) for a graceful shutdown. Idle, Jibri exits with 255 within seconds and sends no
    webhook; the kubelet restarts the container in the same sandbox, whose new Jibri reports
    IDLE; the controller writes nothing."""
    controller = real.controller(SWEEP_INTERVAL="2")
    controller.start()
    await controller.wait_ready()
    pod = await real.deploy(controller)
    jibri = real.jibri(pod)

    async def first_tick() -> bool:
        return any(h.kind == "status" for h in webhooks(controller, pod))

    await wait_until(first_tick, timeout=30, what=f"the first status webhook from {pod}")
    before = webhooks(controller, pod)
    request = (
        "import urllib.request as u; r = u.Request("
        f"'http://127.0.0.1:{realjibri.INTERNAL_PORT}/jibri/api/internal/v1.0/gracefulShutdown',"
        " method='POST'); u.urlopen(r, timeout=5)"
    )
    code = await asyncio.to_thread(
        real.e2e.kubelet.call, jibri.exec([sys.executable, "-c", request], timeout=20), 30
    )
    assert code == 0
    exit_code = await asyncio.to_thread(
        real.e2e.kubelet.call, asyncio.wait_for(asyncio.shield(jibri.exited), 20), 30
    )
    assert exit_code == 255
    await asyncio.sleep(1.0)  # anything still in flight arrives
    assert webhooks(controller, pod) == before

    # A Deployment's pod: the kubelet restarts the container after its back-off, in the same
    # sandbox (the pod's network namespace and address); the new Jibri reports IDLE.
    async def restarted() -> RealJibri | None:
        current = await get_pod(real.e2e.admin, real.e2e.namespace, pod)
        statuses = (current.status.container_statuses or []) if current is not None else []
        fresh = real.jibri(pod)
        return fresh if statuses and statuses[0].restart_count == 1 and fresh is not jibri else None

    fresh = await wait_until(restarted, timeout=60, what=f"{pod}'s container restarted")
    assert fresh.address == jibri.address

    async def idle_again() -> bool:
        return len(webhooks(controller, pod)) > len(before)

    await wait_until(idle_again, timeout=30, what=f"a webhook from {pod}'s new Jibri")
    assert {h.status for h in webhooks(controller, pod)[len(before) :]} <= {"IDLE", "-"}
    assert pod_writes(real, real.e2e.namespace, pod) == []


async def test_a_pool_scale_down_takes_a_real_spare_through_its_graceful_shutdown(
    real: Real, crd: None
) -> None:
    """A JibriPool over deploy/jibri's Deployment of two real Jibris is lowered to one spare:
    the controller asks one of them, on the pod's address, for Jibri's graceful shutdown; that
    Jibri exits 255 and the ReplicaSet deletes exactly its pod (the fake kubelet runs
    deploy/jibri's preStop hook inside the pod first). The controller deletes no pod itself;
    the other Jibri is untouched."""
    controller = real.controller(SWEEP_INTERVAL="30", POOL_RECONCILE_PERIOD="1")
    controller.start()
    await controller.wait_ready()
    await real.deploy(controller, replicas=2)
    pods = [p.metadata.name for p in await spares(real.e2e.admin, real.e2e.namespace)]
    assert len(pods) == 2
    jibris = {name: real.jibri(name) for name in pods}
    await create_pool(
        real.e2e,
        "jibri",
        {"deploymentName": "jibri", "minSpare": 2, "maxSpare": 4, "scaleDownDelaySeconds": 0},
    )
    await wait_status(real.e2e, "jibri", spare=2, desiredSpare=2)
    await patch_pool(real.e2e, "jibri", {"minSpare": 1})
    await wait_replicas(real.e2e, "jibri", 1, timeout=60)

    async def one_left() -> list[str] | None:
        names = [p.metadata.name for p in await list_pods(real.e2e.admin, real.e2e.namespace)]
        return names if len(names) == 1 else None

    (kept,) = await wait_until(one_left, timeout=60, what="the scale-down's pod removed")
    (gone,) = set(pods) - {kept}
    assert jibris[gone].exited.done()
    assert jibris[gone].exited.result() == 255  # Jibri's graceful shutdown, not a kill
    assert not jibris[kept].exited.done()
    assert await realjibri.busy_status(jibris[kept].address) == "IDLE"
    writes = [
        (e["verb"], e["objectRef"].get("name"))
        for e in pod_write_events(
            real.e2e.plane, namespace=real.e2e.namespace, username=real.e2e.user
        )
    ]
    assert [w for w in writes if w[0] == "delete"] == []
