"""A seeded chaos run on the real control plane, then a check of "nothing lost" (I1-I7).

In the spirit of Jepsen (a recorded history, then a checker) and of etcd's functional tester
(faults injected while a workload runs). One process runs, on one event loop: the fake kubelet
and every simulated Jibri (whose ground truth it records), the fault proxy (`testbed.faultproxy`)
between the controllers and kube-apiserver, a seeded workload of recordings over a compressed
day, two fault streams, a steady attacker and a prober. The local control plane and three
controller replicas (each its own process, the restricted ServiceAccount identity, JWT on) run
beside it. The Jibris are three Deployments: one whose replicas are set by hand (its spares
are enough for lists over 128 KB), and two sized by JibriPools (`POOLS`: schedule windows that
open and close every other minute, demand sizing, budgets), so that pools scale up and down
many times during the faults. Every Jibri pod has deploy/jibri's preStop hook (Jibri's graceful
shutdown, then a wait until it has exited) and Jibri's own behaviour after a graceful shutdown
(no EXPIRED).

Faults, each logged with its start and end:

- API path (one stream): proxy latency, 429 with Retry-After, 500, 503, connection resets, a
  black hole, a total outage; kube-apiserver SIGKILLed and restarted on its port; etcd
  SIGKILLed and restarted on its data directory.
- Controllers (a second stream, overlapping the first): SIGKILL and SIGTERM of a replica (the
  Lease holder more often), restarted after a while; a replica SIGSTOPped for longer than the
  lease, then SIGCONT.
- Jibris (a fate per recording): BUSY or EXPIRED webhooks lost, webhooks duplicated or
  reordered (a late IDLE after BUSY, a BUSY after EXPIRED), a crash mid-recording, health
  answers black-holed, hanging, garbage or huge, and a Jibri whose periodic resend died (as a
  real Jibri's does after one tick with its subscriber unreachable) and whose EXPIRED was lost,
  so that only the sweeper can find it finished. A fate loses exactly the webhooks it names:
  a Jibri found silent at the end with no fate asking for it is a failure of the testbed
  (``testbed`` in the report), not a proof.
- The attacker, at a steady rate: forged EXPIRED/BUSY webhooks from the wrong source, with a
  token signed by another key, from one Jibri naming another, and for a pod that is no Jibri.
- Pools: recordings that start silently (their BUSY webhooks lost) on a pool's spares a moment
  before each of its scale-downs, bursts that take a pool to its budget, and an operator who
  rolls a pool's Deployment out and deletes pods that are recording (``kubectl delete pod``).

Every random choice comes from the seed (each recording and each stream has its own generator
derived from it, so concurrency does not reorder the draws). Jibris post to all three replicas
(Jibri accepts a list of subscribers), and the workload starts recordings on spares only (idle
labels, Jibri IDLE), as a pool would hand them out.

    scripts/chaos.sh --seed 7            # the full run (10-15 minutes)
    scripts/chaos.sh --seed 7 --size ci  # about 2 minutes

Writes ``out/chaos/seed-N/`` (history, report, every log) and, with ``--write-docs``, records
the run in docs/reliability.json and regenerates the table in docs/reliability.md. Exits 1 on
any violation, printing the seed and the events around each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from testbed.chaoscheck import (
    Action,
    Deletion,
    EndPod,
    Exit,
    Fact,
    Forged,
    History,
    Limits,
    PoolLimit,
    Probe,
    Report,
    Silence,
    Sweep,
    Window,
    Write,
    check,
    events_around,
)
from testbed.cluster import (
    BUSY_LABELS,
    IDLE_LABELS,
    JIBRIPOOL_CRD,
    REPO,
    ControllerProcess,
    apply,
    controller_kubeconfig,
    create_namespace,
    install_crds,
    jibri_deployment,
    make_webhook_keys,
    rbac_manifests,
    service_account_user,
)
from testbed.controlplane import ADMIN_USER, CONTROLLER_MANAGER_USER, ControlPlane
from testbed.faultproxy import Fault, FaultKind, FaultProxy, proxied_kubeconfig
from testbed.kube import new_api_client
from testbed.kubelet import FakeKubelet, allocate_ip
from testbed.ports import listen_port
from testbed.simjibri import BusyStatus, HealthMode, JwtSigning, SimJibri, build_token

__all__ = ["SIZES", "Size", "main", "run"]

NAMESPACE = "chaos"
REPLICAS = ("controller-a", "controller-b", "controller-c")
ISSUER, AUDIENCE, KID = "jibri-chaos", "jibri-pod-controller", "chaos-key-1"
LEASE_NAME = "jibri-pod-controller-lease"
BYSTANDER = "web-frontend"
ACTIONS_LOGGER = "jibri_pod_controller.actions"
"""The logger of the one line per write (a webhook's canonical line repeats its fields)."""
DOCS_JSON = REPO / "docs" / "reliability.json"
DOCS_MD = REPO / "docs" / "reliability.md"
MARK_START = "<!-- chaos-table:start (generated by scripts/chaos.sh --write-docs) -->"
MARK_END = "<!-- chaos-table:end -->"

API_KINDS = (
    "proxy-latency",
    "proxy-throttle-429",
    "proxy-error-500",
    "proxy-error-503",
    "proxy-reset",
    "proxy-blackhole",
    "proxy-outage",
    "proxy-compress",
    "apiserver-restart",
    "etcd-restart",
)
CONTROLLER_KINDS = ("controller-sigkill", "controller-sigterm", "controller-sigstop")
FATES = (
    "lost-busy",
    "lost-expired",
    "duplicated",
    "reordered",
    "crash",
    "health-blackhole",
    "health-hang",
    "health-garbage",
    "health-huge",
    "resend-died",
)
FORGERIES = ("wrong-source", "wrong-token", "other-pod", "non-jibri", "busy-for-spare")
OPERATOR_KINDS = ("jibri-rollout", "jibri-pod-deleted")
GRACE_SECONDS = 120
"""The Jibri pods' terminationGracePeriodSeconds: above the longest recording of a run."""


@dataclass(frozen=True)
class ChaosPool:
    """A JibriPool of the run and the Deployment it sizes (both named ``name``)."""

    name: str
    share: float
    """The share of the recordings that start on this pool's spares."""
    closes_on_odd_minutes: bool
    """Its schedule window closes at the start of odd (else even) minutes: a scale-down."""
    spec: Mapping[str, Any]


POOL_PERIOD = 2
"""POOL_RECONCILE_PERIOD of the replicas in these runs."""
SCALE_DOWN_DELAY = 5
POOLS = (
    ChaosPool(
        "pool-day",
        share=0.2,
        closes_on_odd_minutes=True,
        spec={
            "minSpare": 1,
            "maxSpare": 5,
            "maxTotal": 8,
            "scaleDownDelaySeconds": SCALE_DOWN_DELAY,
            "schedule": [{"start": "*/2 * * * *", "durationMinutes": 1, "minSpare": 4}],
        },
    ),
    ChaosPool(
        "pool-demand",
        share=0.2,
        closes_on_odd_minutes=False,
        spec={
            "minSpare": 1,
            "maxSpare": 6,
            "maxTotal": 8,
            "scaleDownDelaySeconds": SCALE_DOWN_DELAY,
            "demand": {"shortfallProbability": 0.05, "windowSeconds": 60, "startupSeconds": 2},
            "schedule": [{"start": "1-59/2 * * * *", "durationMinutes": 1, "minSpare": 3}],
        },
    ),
)
HAND = "hand"
"""The group of the Deployment whose replicas are set by hand."""


@dataclass(frozen=True)
class Size:
    recordings: int
    workload_seconds: float
    spares: int
    recording_seconds: tuple[float, float]
    fault_seconds: tuple[float, float]
    """How long one proxy fault or outage lasts."""
    fault_gap: tuple[float, float]
    """Quiet time between two faults of a stream."""
    recovery_seconds: float
    lease: tuple[int, int, int] = (8, 5, 1)
    """LEASE_DURATION, LEASE_RENEW_DEADLINE, LEASE_RETRY_PERIOD."""
    sweep_interval: int = 3
    status_period: float = 8.0
    forge_every: float = 0.5
    burst_gap: tuple[float, float] = (80, 120)
    """Between two bursts of recordings that take a pool to its budget."""
    operator_gap: tuple[float, float] = (60, 100)
    """Between two of the operator's rollouts or deletes of a recording pod."""


SIZES = {
    # Spares enough that the pod lists exceed 128 KB (kube-apiserver then compresses them when
    # asked to: the proxy-compress fault) and fill most of a list page.
    "ci": Size(
        recordings=70,
        workload_seconds=75,
        spares=55,
        recording_seconds=(8, 22),
        fault_seconds=(3, 6),
        fault_gap=(0.5, 2),
        recovery_seconds=60,
        burst_gap=(40, 50),
        operator_gap=(15, 25),
    ),
    "full": Size(
        recordings=560,
        workload_seconds=660,
        spares=60,
        recording_seconds=(15, 45),
        fault_seconds=(4, 12),
        fault_gap=(3, 10),
        recovery_seconds=90,
    ),
}


def _wall(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _has(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def jibri_group(labels: Mapping[str, str]) -> str:
    """``hand``, or the pool whose Deployment made the pod (its ``pool`` label)."""
    return labels.get("pool", HAND)


@dataclass
class Replica:
    process: ControllerProcess
    expect_exit: str = ""
    """What the run just did to it (``sigkill``/``sigterm``), so an exit is expected."""
    down_since: float | None = None
    stopped: bool = False


@dataclass
class Run:
    seed: int
    size: Size
    out: Path
    say: Callable[[str], None]
    faults: list[Window] = field(default_factory=list)
    down: list[Window] = field(default_factory=list)
    facts: list[dict[str, Any]] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    forged: list[Forged] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    lost_busy: set[str] = field(default_factory=set)
    resend_died: set[str] = field(default_factory=set)
    fates: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    refused_by: Counter[str] = field(default_factory=Counter)
    """Recordings turned away (no spare), by group: ``hand`` or a pool's name."""
    ambushed: int = 0
    """Recordings started silently on a pool's spare a moment before its scale-down."""
    started_at: float = 0.0
    commit: str = ""
    """The commit the run was made on (``-dirty`` when the work tree had changes)."""

    def __post_init__(self) -> None:
        self.replicas: dict[str, Replica] = {}
        self.used: set[str] = set()
        self.jibris: dict[str, SimJibri] = {}
        """Every Jibri a recording was played on (kept after its pod is gone)."""
        self.extra: set[asyncio.Task[None]] = set()
        """Recordings started by the pool streams, awaited before the run recovers."""
        self.labels: dict[str, dict[str, str]] = {}
        self.running = True
        self.kubelet: FakeKubelet | None = None
        self.proxy: FaultProxy | None = None
        self.plane: ControlPlane | None = None
        self.admin: k8s.ApiClient | None = None
        self.signing: JwtSigning | None = None
        self.bad_signing: JwtSigning | None = None

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}/{name}")

    def fault(self, kind: str, start: float, end: float, target: str = "") -> None:
        self.faults.append(Window(kind, start, end, target))
        self.say(
            f"fault {kind} {target} {start - self.started_at:.1f}..{end - self.started_at:.1f} s"
        )

    def on_fact(self, fact: dict[str, Any]) -> None:
        self.facts.append(fact)
        if fact["event"] in ("started", "labels"):
            self.labels[fact["pod"]] = fact["labels"]
        elif fact["event"] == "stopped":
            self.labels.pop(fact["pod"], None)

    # -- the controllers

    def leader_weighted(self, rng: random.Random, leader: str | None) -> str:
        names = sorted(self.replicas)
        if leader in self.replicas and rng.random() < 0.6:
            return leader
        return rng.choice(names)

    async def leader(self) -> str | None:
        assert self.admin is not None
        try:
            lease = await k8s.CoordinationV1Api(self.admin).read_namespaced_lease(
                LEASE_NAME, NAMESPACE, _request_timeout=2
            )
        except (ApiException, aiohttp.ClientError, TimeoutError, OSError):
            return None
        holder: str | None = lease.spec.holder_identity if lease.spec else None
        return holder or None

    async def wait_serving(self, replica: Replica, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _ = await asyncio.to_thread(replica.process.get, "/readyz", 1.0)
            if status == 200:
                return
            await asyncio.sleep(0.3)
        self.say(f"{replica.process.name} not ready after {timeout:.0f} s")

    async def restart(self, replica: Replica) -> None:
        replica.process.start()
        replica.expect_exit = ""
        await self.wait_serving(replica)
        since = replica.down_since or time.time()
        self.down.append(Window("replica-down", since, time.time(), replica.process.name))
        replica.down_since = None

    async def monitor(self) -> None:
        """Notice a replica that exits on its own: a violation (I7); it is started again."""
        while self.running:
            for replica in self.replicas.values():
                proc = replica.process.process
                if proc is None or replica.expect_exit or replica.down_since is not None:
                    continue
                code = proc.poll()
                if code is not None:
                    now = time.time()
                    self.exits.append(Exit(now, replica.process.name, code, ""))
                    self.say(f"{replica.process.name} exited by itself ({code}); starting it")
                    replica.down_since = now
                    await self.restart(replica)
            await asyncio.sleep(0.5)

    async def controller_faults(self) -> None:
        rng = self.rng("controller-faults")
        kinds = list(CONTROLLER_KINDS)  # each kind once first, in a random order
        rng.shuffle(kinds)
        lease_duration = self.size.lease[0]
        await asyncio.sleep(rng.uniform(3, 8))
        while self.running:
            kind = kinds.pop() if kinds else rng.choice(CONTROLLER_KINDS)
            name = self.leader_weighted(rng, await self.leader())
            replica = self.replicas[name]
            pause = rng.uniform(2, 6)
            start = time.time()
            proc = replica.process.process
            assert proc is not None
            if kind == "controller-sigstop":
                replica.stopped = True
                replica.down_since = start
                replica.process.signal(signal.SIGSTOP)
                await asyncio.sleep(lease_duration + rng.uniform(2, 5))
                replica.process.signal(signal.SIGCONT)
                replica.stopped = False
                self.down.append(Window("replica-down", start, time.time(), name))
                replica.down_since = None
            else:
                how = "sigkill" if kind == "controller-sigkill" else "sigterm"
                replica.expect_exit = how
                replica.down_since = start
                replica.process.signal(signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
                try:
                    code: int | None = await asyncio.to_thread(proc.wait, 30)
                except subprocess.TimeoutExpired:
                    replica.process.signal(signal.SIGKILL)
                    code = await asyncio.to_thread(proc.wait, 10)
                    code = None if how == "sigterm" else code
                self.exits.append(Exit(time.time(), name, code, how))
                await asyncio.sleep(pause)
                await self.restart(replica)
            self.fault(kind, start, time.time(), name)
            await asyncio.sleep(rng.uniform(*self.size.fault_gap) + 2)

    # -- the API path

    async def api_faults(self) -> None:
        rng = self.rng("api-faults")
        assert self.proxy is not None
        assert self.plane is not None
        kinds = list(API_KINDS)
        rng.shuffle(kinds)
        await asyncio.sleep(rng.uniform(2, 5))
        while self.running:
            kind = kinds.pop() if kinds else rng.choice(API_KINDS)
            hold = rng.uniform(*self.size.fault_seconds)
            start = time.time()
            if kind == "apiserver-restart":
                await asyncio.to_thread(self.plane.kill_component, "kube-apiserver")
                await asyncio.sleep(rng.uniform(0.5, 2))
                await asyncio.to_thread(self.plane.start_component, "kube-apiserver")
            elif kind == "etcd-restart":
                await asyncio.to_thread(self.plane.kill_component, "etcd")
                await asyncio.sleep(rng.uniform(0.5, 2))
                await asyncio.to_thread(self.plane.start_component, "etcd")
            elif kind == "proxy-outage":
                await self.proxy.begin_outage()
                await asyncio.sleep(hold)
                await self.proxy.end_outage()
            else:
                fault_kind = FaultKind(kind.removeprefix("proxy-"))
                whole = fault_kind in (FaultKind.BLACKHOLE, FaultKind.COMPRESS)
                probability = 1.0 if whole else rng.uniform(0.3, 1.0)
                self.proxy.set_fault(
                    Fault(
                        fault_kind,
                        probability=probability,
                        latency=rng.uniform(0.2, 1.0),
                        retry_after=rng.randint(1, 2),
                    )
                )
                await asyncio.sleep(hold)
                self.proxy.set_fault(None)
            self.fault(kind, start, time.time())
            await asyncio.sleep(rng.uniform(*self.size.fault_gap))

    # -- the workload

    def spares(self, group: str = HAND) -> list[str]:
        """Idle-labelled pods of ``group`` whose Jibri is up, IDLE and answers normally."""
        assert self.kubelet is not None
        names = []
        for name in self.kubelet.running():
            labels = self.labels.get(name, {})
            if name in self.used or not _has(labels, IDLE_LABELS):
                continue
            if labels.get("pool", HAND) != group:
                continue
            try:
                jibri = self.kubelet.jibri(name)
            except KeyError:
                continue
            if (
                jibri.busy_status is BusyStatus.IDLE
                and jibri.health_mode is HealthMode.NORMAL
                and not jibri.exiting
            ):
                names.append(name)
        return sorted(names)

    async def workload(self) -> None:
        size = self.size
        plan_rng = self.rng("plan")
        # A compressed day: arrivals follow a daily curve (quiet night, busy afternoon).
        arrivals: list[float] = []
        while len(arrivals) < size.recordings:
            t = plan_rng.uniform(0, size.workload_seconds * 0.85)
            phase = t / (size.workload_seconds * 0.85)
            if plan_rng.random() < 0.25 + 0.75 * (1 - abs(2 * phase - 1)):
                arrivals.append(t)
        arrivals.sort()
        tasks = [asyncio.create_task(self.recording(i, at)) for i, at in enumerate(arrivals)]
        await asyncio.gather(*tasks)

    async def recording(self, index: int, at: float) -> None:
        rng = self.rng(f"recording-{index}")
        await asyncio.sleep(max(0.0, self.started_at + at - time.time()))
        fate = rng.choice(FATES) if rng.random() < 0.6 else "normal"
        length = rng.uniform(*self.size.recording_seconds)
        draw, group = rng.random(), HAND
        for pool in POOLS:
            if draw < pool.share:
                group = pool.name
                break
            draw -= pool.share
        await self.record_on(group, fate, length, rng)

    async def record_on(
        self, group: str, fate: str, length: float, rng: random.Random, *, wait: float = 20.0
    ) -> bool:
        """Play one recording on a spare of ``group`` (waiting up to ``wait`` seconds for one);
        False when it was turned away."""
        if fate == "lost-busy":
            length = max(length, 3 * self.size.sweep_interval + 6)
        assert self.kubelet is not None
        deadline = time.time() + wait
        name = None
        while time.time() < deadline:
            choices = self.spares(group)
            if choices:
                name = rng.choice(choices)
                break
            await asyncio.sleep(0.3)
        if name is None:
            self.refused += 1
            self.refused_by[group] += 1
            return False
        self.used.add(name)
        try:
            jibri = self.kubelet.jibri(name)
        except KeyError:
            self.refused += 1
            self.refused_by[group] += 1
            return False
        self.jibris[name] = jibri
        self.fates[fate] += 1
        return await self.play(jibri, name, fate, length, rng)

    async def play(
        self, jibri: SimJibri, name: str, fate: str, length: float, rng: random.Random
    ) -> bool:
        start = time.time()
        if fate == "lost-busy":
            jibri.set_webhooks_enabled(False)
            self.lost_busy.add(name)
        if not await jibri.start_recording(f"rec-{name}"):
            # A Jibri that began its graceful shutdown a moment ago refuses: Jicofo would ask
            # the next one. Its webhooks are back; nothing was lost.
            jibri.set_webhooks_enabled(True)
            self.lost_busy.discard(name)
            self.fates[fate] -= 1
            self.refused += 1
            self.refused_by[jibri_group(self.labels.get(name, {}))] += 1
            return False
        if fate == "duplicated":
            jibri.send_status()
            jibri.send_status()
        elif fate == "reordered":
            jibri.send_status(BusyStatus.IDLE)
        if fate == "crash":
            await asyncio.sleep(length * rng.uniform(0.2, 0.8))
            self.fault("jibri-crash", time.time(), time.time(), name)
            await jibri.crash()
            return True
        if fate.startswith("health-"):
            mode = HealthMode(fate.removeprefix("health-"))
            # Around the end of the recording, with the EXPIRED webhook lost half the time, so
            # the sweeper meets the bad answers exactly when it matters.
            before = min(length * 0.5, rng.uniform(2, 6))
            await asyncio.sleep(length - before)
            begin = time.time()
            await jibri.set_health_mode(mode)
            await asyncio.sleep(before)
            if rng.random() < 0.5:
                jibri.lose_next_status_webhook()  # the EXPIRED; its resend comes later
            await jibri.stop_recording()
            await asyncio.sleep(rng.uniform(2, 6))
            await jibri.set_health_mode(HealthMode.NORMAL)
            self.fault(fate, begin, time.time(), name)
            return True
        if fate == "resend-died":
            await asyncio.sleep(length * rng.uniform(0.1, 0.9))
            jibri.kill_resend()
            self.resend_died.add(name)
            died = time.time()
            await asyncio.sleep(max(0.0, start + length - time.time()))
            jibri.lose_next_status_webhook()  # the EXPIRED: only the sweeper can see it now
            await jibri.stop_recording()
            self.fault("jibri-resend-died", died, time.time(), name)
            return True
        await asyncio.sleep(length)
        if fate == "lost-busy":
            jibri.set_webhooks_enabled(True)
            self.fault("webhook-lost-busy", start, time.time(), name)
        if fate == "lost-expired":
            jibri.lose_next_status_webhook()  # the EXPIRED; its resend comes later
            self.fault("webhook-lost-expired", time.time(), time.time(), name)
        await jibri.stop_recording()
        if fate == "duplicated":
            jibri.send_status()
            self.fault("webhook-duplicated", start, time.time(), name)
        elif fate == "reordered":
            jibri.send_status(BusyStatus.BUSY)
            self.fault("webhook-reordered", start, time.time(), name)
        return True

    # -- the pools

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self.extra.add(task)
        task.add_done_callback(self.extra.discard)

    async def ambushes(self, pool: ChaosPool) -> None:
        """A moment before each scale-down of ``pool`` (its window closes at the turn of a
        minute; the scale-down follows after its delay, at the next round), one or two of its
        spares start recording silently: their BUSY webhooks are lost, so only the pool's own
        probe (or the sweeper) can know they are busy."""
        rng = self.rng(f"ambush-{pool.name}")
        while True:
            minute = int(time.time() // 60) + 1
            if minute % 2 != int(pool.closes_on_odd_minutes):
                minute += 1
            at = minute * 60 + SCALE_DOWN_DELAY + rng.uniform(-1.5, POOL_PERIOD + 1.0)
            await asyncio.sleep(max(0.0, at - time.time()))
            if not self.running:
                return
            for _ in range(rng.randint(1, 2)):
                length = rng.uniform(*self.size.recording_seconds)
                self.ambushed += 1
                self.spawn(self.record_on(pool.name, "lost-busy", length, rng, wait=1.0))
            self.fault("pool-ambush", time.time(), time.time(), pool.name)

    async def bursts(self) -> None:
        """Now and then as many recordings at once as a pool's budget holds, on its spares
        (more wait for a spare the pool brings up): the budget is reached."""
        rng = self.rng("bursts")
        await asyncio.sleep(rng.uniform(15, 25))
        while self.running:
            pool = rng.choice(POOLS)
            start = time.time()
            for _ in range(int(pool.spec["maxTotal"])):
                length = rng.uniform(*self.size.recording_seconds)
                self.spawn(self.record_on(pool.name, "normal", length, rng, wait=15.0))
                await asyncio.sleep(rng.uniform(0.1, 0.5))
            self.fault("pool-burst", start, time.time(), pool.name)
            await asyncio.sleep(rng.uniform(*self.size.burst_gap))

    async def operator(self) -> None:
        """An operator at work: a rollout of a pool's Deployment (its ReplicaSet deletes the
        old spares), and ``kubectl delete pod`` of a pod whose Jibri is recording. Either way
        the preStop hook must let a recording finish (I8)."""
        rng = self.rng("operator")
        assert self.admin is not None
        assert self.kubelet is not None
        kinds = list(OPERATOR_KINDS)
        rng.shuffle(kinds)
        await asyncio.sleep(rng.uniform(10, 20))
        while self.running:
            kind = kinds.pop() if kinds else rng.choice(OPERATOR_KINDS)
            start = time.time()
            target = ""
            try:
                if kind == "jibri-rollout":
                    target = rng.choice(POOLS).name
                    patch = {
                        "spec": {
                            "template": {
                                "metadata": {
                                    "annotations": {"kubectl.kubernetes.io/restartedAt": _now()}
                                }
                            }
                        }
                    }
                    await k8s.AppsV1Api(self.admin).patch_namespaced_deployment(
                        target, NAMESPACE, patch, _request_timeout=5
                    )
                else:
                    recording = sorted(
                        n
                        for n, jibri in self.jibris.items()
                        if n in self.kubelet.running() and jibri.busy_status is BusyStatus.BUSY
                    )
                    if recording:
                        target = rng.choice(recording)
                        await k8s.CoreV1Api(self.admin).delete_namespaced_pod(
                            target, NAMESPACE, _request_timeout=5
                        )
            except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.say(f"operator's {kind} failed ({type(exc).__name__}); later")
                target = ""
            if target:
                self.fault(kind, start, time.time(), target)
            await asyncio.sleep(rng.uniform(*self.size.operator_gap))

    # -- the attacker and the prober

    async def attacker(self) -> None:
        rng = self.rng("attacker")
        assert self.kubelet is not None
        assert self.signing is not None
        assert self.bad_signing is not None
        stranger = allocate_ip()
        while self.running:
            await asyncio.sleep(self.size.forge_every)
            up = [r for r in self.replicas.values() if r.down_since is None]
            running = self.kubelet.running()
            jibris = sorted(n for n in running if n != BYSTANDER)
            if not up or len(jibris) < 2:
                continue
            kind = rng.choice(FORGERIES)
            target, other = rng.sample(jibris, 2)
            token = build_token(self.signing, time.time())
            status = "EXPIRED"
            source = running[other]
            if kind == "wrong-source":
                source = stranger
            elif kind == "wrong-token":
                token, source = build_token(self.bad_signing, time.time()), running[target]
            elif kind == "non-jibri":
                if BYSTANDER not in running:
                    continue
                target, source = BYSTANDER, running[BYSTANDER]
            elif kind == "busy-for-spare":
                status = "BUSY"
            replica = rng.choice(up)
            code = await post(
                replica.process,
                pod=target,
                source=source,
                body={
                    "jibriId": target,
                    "status": {
                        "busyStatus": status,
                        "health": {"healthStatus": "HEALTHY", "details": {}},
                    },
                },
                token=token,
            )
            self.forged.append(Forged(time.time(), kind, target, code))

    async def prober(self) -> None:
        """Each replica, once a second: an unauthenticated webhook (no API call behind it)."""
        await asyncio.gather(*(self.probe(replica) for replica in self.replicas.values()))

    async def probe(self, replica: Replica) -> None:
        while self.running:
            await asyncio.sleep(1.0)
            if replica.down_since is not None or replica.stopped:
                continue
            code = await post(replica.process, pod="probe", source="127.0.0.1", body={}, token=None)
            if replica.down_since is None and not replica.stopped:
                self.probes.append(Probe(time.time(), replica.process.name, code != 0))


async def post(
    controller: ControllerProcess,
    *,
    pod: str,
    source: str,
    body: dict[str, Any],
    token: str | None,
) -> int:
    """POST a status webhook from ``source``; the status code, 0 if no answer within 2 s."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    try:
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(
                f"{controller.url}/webhook/{pod}/v1/status",
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=2.0),
            ) as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return 0


# --------------------------------------------------------------------------------------------
# Setting up, collecting, checking


async def _setup(run: Run, plane: ControlPlane) -> None:
    size = run.size
    assert plane.workdir is not None
    run.admin = admin = await new_api_client(plane.admin_kubeconfig)
    await create_namespace(admin, NAMESPACE)
    await apply(admin, rbac_manifests(NAMESPACE))
    keys_dir = run.out / "keys"
    (keys_dir / "bad").mkdir(parents=True, exist_ok=True)
    keys = make_webhook_keys(keys_dir, kid=KID, issuer=ISSUER, audience=AUDIENCE)
    bad = make_webhook_keys(keys_dir / "bad", kid=KID, issuer=ISSUER, audience=AUDIENCE)
    run.signing = JwtSigning(keys.jibri.key_path, KID, ISSUER, AUDIENCE, 3600)
    run.bad_signing = JwtSigning(bad.jibri.key_path, KID, ISSUER, AUDIENCE, 3600)

    await install_crds(admin, JIBRIPOOL_CRD)
    run.kubelet = FakeKubelet(admin, NAMESPACE, ground_truth=run.on_fact)
    await run.kubelet.start()

    kubeconfig = controller_kubeconfig(plane, NAMESPACE)
    run.proxy = FaultProxy.for_kubeconfig(
        kubeconfig, pki_dir=plane.workdir / "pki", rng=run.rng("proxy"), workdir=run.out / "proxy"
    )
    await run.proxy.start()
    proxied = proxied_kubeconfig(kubeconfig, run.proxy.url, run.out / "controller.kubeconfig")
    lease_duration, renew, retry = size.lease
    for name in REPLICAS:
        process = ControllerProcess(
            name=name,
            kubeconfig=proxied,
            namespace=NAMESPACE,
            log_path=run.out / f"{name}.log",
            port=listen_port(),
            env={
                "SWEEP_INTERVAL": str(size.sweep_interval),
                "LEASE_DURATION": str(lease_duration),
                "LEASE_RENEW_DEADLINE": str(renew),
                "LEASE_RETRY_PERIOD": str(retry),
                "JWT_KEYS_DIR": str(keys.directory),
                "JWT_ISSUER": ISSUER,
                "JWT_AUDIENCE": AUDIENCE,
                "POOL_RECONCILE_PERIOD": str(POOL_PERIOD),
                "LOG_LEVEL": "info",
            },
        )
        run.replicas[name] = Replica(process.start())
    for replica in run.replicas.values():
        await replica.process.wait_ready(60)
    # A pod that is no Jibri, which forged webhooks name.
    core: Any = k8s.CoreV1Api(admin)
    await core.create_namespaced_pod(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": BYSTANDER, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        },
    )
    subscribers = [r.process.webhook_base() for r in run.replicas.values()]
    deployments = [
        chaos_deployment(HAND, size.spares, subscribers, size, keys.jibri),
        *(chaos_deployment(p.name, 1, subscribers, size, keys.jibri) for p in POOLS),
    ]
    pools = [
        {
            "apiVersion": "jibri-pod-controller.io/v1alpha1",
            "kind": "JibriPool",
            "metadata": {"name": p.name, "namespace": NAMESPACE},
            "spec": {"deploymentName": p.name, **p.spec},
        }
        for p in POOLS
    ]
    await apply(admin, [*deployments, *pools])
    deadline = time.monotonic() + 60
    while len(run.spares()) < size.spares:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(run.spares())} of {size.spares} spares came up")
        await asyncio.sleep(0.3)


def chaos_deployment(
    group: str, replicas: int, subscribers: Sequence[str], size: Size, jwt: Any
) -> dict[str, Any]:
    """A Jibri Deployment of the run: deploy/jibri's preStop hook, a grace period above the
    longest recording, and the real Jibri's silence after a graceful shutdown (no EXPIRED).
    A pool's Deployment selects its own pods (``pool: <name>``)."""
    doc = jibri_deployment(
        namespace=NAMESPACE,
        replicas=replicas,
        subscribers=subscribers,
        name="jibri" if group == HAND else group,
        status_period=size.status_period,
        jwt=jwt,
        pre_stop=True,
        grace_seconds=GRACE_SECONDS,
    )
    if group != HAND:
        doc["spec"]["selector"]["matchLabels"]["pool"] = group
        doc["spec"]["template"]["metadata"]["labels"]["pool"] = group
    env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
    env += [
        {"name": "SIM_JIBRI_REAL_BEHAVIOURS", "value": "no_expired_after_graceful_shutdown"},
        {"name": "SIM_JIBRI_EXIT_DELAY", "value": "1"},
    ]
    if group != HAND:
        # A new pod is Pending for a few seconds on a real node (scheduling, sandbox, container
        # start): a pool lowering its replicas at the budget's edge takes such a replacement
        # before it can be handed a recording. Instantly running pods would chain
        # replacements behind every detach of a burst.
        env.append({"name": "SIM_PENDING_SECONDS", "value": "3"})
    return doc


async def _recover(run: Run) -> None:
    """Every fault is over; wait until the pods settle (or the recovery period ends)."""
    assert run.kubelet is not None
    deadline = time.monotonic() + run.size.recovery_seconds
    while time.monotonic() < deadline:
        running = run.kubelet.running()
        busy = [n for n in running if _has(run.labels.get(n, {}), BUSY_LABELS)]
        idle = [n for n in running if _has(run.labels.get(n, {}), IDLE_LABELS)]
        spares = [n for n in idle if jibri_group(run.labels.get(n, {})) == HAND]
        settled = not busy and len(spares) == run.size.spares
        with contextlib.suppress(KeyError):
            if settled and all(run.kubelet.jibri(n).busy_status is BusyStatus.IDLE for n in idle):
                await asyncio.sleep(2 * run.size.sweep_interval)  # and it stays so
                return
        await asyncio.sleep(1.0)


def _controller_lines(run: Run) -> tuple[list[Action], list[Sweep]]:
    actions: list[Action] = []
    sweeps: list[Sweep] = []
    for name, replica in run.replicas.items():
        for line in replica.process.log_lines():
            ts = line.get("ts")
            if not isinstance(ts, str):
                continue
            if line.get("msg") == "sweep done":
                sweeps.append(Sweep(_wall(ts), name))
            elif line.get("logger") == ACTIONS_LOGGER and line.get("action") in (
                "detach",
                "delete",
            ):
                actions.append(
                    Action(
                        _wall(ts),
                        name,
                        str(line.get("pod")),
                        str(line["action"]),
                        str(line.get("reason")),
                        str(line.get("result", "failed")),
                    )
                )
    return actions, sweeps


def _silences(run: Run) -> list[Silence]:
    """Every Jibri of the run that stopped speaking: each one a recording was played on (its
    pod may be gone) and each one still running."""
    assert run.kubelet is not None
    jibris = dict(run.jibris)
    for name in run.kubelet.running():
        with contextlib.suppress(KeyError):
            jibris.setdefault(name, run.kubelet.jibri(name))
    now = time.time()
    found = []
    for name, jibri in sorted(jibris.items()):
        if jibri.silent_since is not None:
            found.append(Silence(jibri.silent_since, name, "silenced"))
        if jibri.resend_died:
            found.append(Silence(now, name, "resend-died"))
    return found


def pool_activity(run: Run) -> dict[str, int]:
    """What the pools did, from the controllers' log lines: scale-downs performed, spares
    asked to shut down gracefully (and how many accepted), spares found BUSY on the way to a
    scale-down (detached, their recordings kept)."""
    counts: Counter[str] = Counter()
    for replica in run.replicas.values():
        for line in replica.process.log_lines():
            msg = str(line.get("msg", ""))
            if msg.startswith("scaled ") and isinstance(line.get("replicas"), int):
                if line["replicas"] < int(line.get("from") or 0):
                    counts["scale_downs"] += 1
                else:
                    counts["scale_ups"] += 1
            elif msg.startswith("asked ") and "shut down gracefully" in msg:
                answers = line.get("pods") or {}
                counts["graceful_shutdowns_asked"] += len(answers)
                counts["graceful_shutdowns_accepted"] += sum(
                    1 for outcome in answers.values() if outcome == "accepted"
                )
            elif line.get("busy_found") == 1:
                counts["found_busy_and_kept"] += 1
    return {
        key: counts.get(key, 0)
        for key in (
            "scale_ups",
            "scale_downs",
            "graceful_shutdowns_asked",
            "graceful_shutdowns_accepted",
            "found_busy_and_kept",
        )
    }


async def _end_pods(run: Run) -> list[EndPod]:
    assert run.admin is not None
    assert run.kubelet is not None
    core: Any = k8s.CoreV1Api(run.admin)
    pods = await core.list_namespaced_pod(NAMESPACE)
    result: list[EndPod] = []
    for pod in pods.items:
        if pod.metadata.deletion_timestamp is not None:
            continue
        name = pod.metadata.name
        try:
            status = run.kubelet.jibri(name).busy_status.value
        except KeyError:
            status = ""
        result.append(EndPod(name, dict(pod.metadata.labels or {}), status))
    return result


def _history(
    run: Run, plane: ControlPlane, end_pods: list[EndPod], silences: list[Silence]
) -> tuple[History, dict[str, int]]:
    user = service_account_user(NAMESPACE)
    audit = plane.audit_events(username=user, namespace=NAMESPACE)
    writes = [
        Write(
            _wall(e["stageTimestamp"]),
            e["verb"],
            e["objectRef"].get("name", ""),
            int((e.get("responseStatus") or {}).get("code", 0)),
            patch_kind(e.get("requestObject")) if e["verb"] == "patch" else "",
        )
        for e in audit
        if e["objectRef"].get("resource") == "pods" and not e["objectRef"].get("subresource")
    ]
    ok = [e for e in audit if 200 <= int((e.get("responseStatus") or {}).get("code", 0)) < 300]
    counts = {
        "writes": len(audit),
        "writes_ok": len(ok),
        "pod_writes_ok": sum(1 for w in writes if 200 <= w.code < 300),
    }
    who = {
        user: "the controllers",
        CONTROLLER_MANAGER_USER: "a ReplicaSet (kube-controller-manager)",
    }
    who[ADMIN_USER] = "the run (an operator's delete, or the fake kubelet's finalize)"
    deletions = [
        Deletion(
            _wall(e["stageTimestamp"]),
            e["objectRef"].get("name", ""),
            who.get(e.get("user", {}).get("username", ""), e.get("user", {}).get("username", "")),
        )
        for e in plane.audit_events(namespace=NAMESPACE)
        if e["verb"] == "delete"
        and e["objectRef"].get("resource") == "pods"
        and not e["objectRef"].get("subresource")
        and 200 <= int((e.get("responseStatus") or {}).get("code", 0)) < 300
    ]
    actions, sweeps = _controller_lines(run)
    size = run.size
    facts = [
        Fact(f["t"], f["event"], f["pod"], f.get("status") or "", f.get("labels") or {})
        for f in run.facts
    ]
    history = History(
        facts=facts,
        writes=writes,
        actions=actions,
        faults=run.faults,
        down=run.down,
        probes=run.probes,
        forged=run.forged,
        exits=run.exits,
        sweeps=sweeps,
        lost_busy=frozenset(run.lost_busy),
        resend_died=frozenset(run.resend_died),
        silences=silences,
        deletions=deletions,
        pools=[PoolLimit(p.name, int(p.spec["maxTotal"]), POOL_PERIOD) for p in POOLS],
        bystanders=frozenset({BYSTANDER}),
        end_pods=end_pods,
        replicas=REPLICAS,
        limits=Limits(
            lease_duration=size.lease[0],
            renew_deadline=size.lease[1],
            sweep_interval=size.sweep_interval,
            spares=size.spares,
        ),
    )
    return history, counts


def patch_kind(body: Any) -> str:
    """What a pod patch (its body, from the audit log) changes: ``detach`` when it gives the
    pod the busy labels, ``annotate`` when it changes annotations only, else ``other``."""
    meta = body.get("metadata") if isinstance(body, dict) else None
    if not isinstance(meta, dict):
        return "other"
    labels = meta.get("labels")
    if isinstance(labels, dict) and _has(labels, BUSY_LABELS):
        return "detach"
    if "annotations" in meta and "labels" not in meta and set(body) == {"metadata"}:
        return "annotate"
    return "other"


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kb / 1024 / 1024:.1f} GiB"
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def summary(
    run: Run, report: Report, counts: dict[str, int], *, load: tuple[float, float], seconds: float
) -> dict[str, Any]:
    recordings = max(1, int(report.figures["recordings"]))
    return {
        "seed": run.seed,
        "size": next(k for k, v in SIZES.items() if v == run.size),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(seconds),
        "machine": {**machine(), "load_start": load[0], "load_end": load[1]},
        "recordings": report.figures["recordings"],
        "recordings_turned_away": run.refused,
        "turned_away_by_group": dict(sorted(run.refused_by.items())),
        "pools": {
            **pool_activity(run),
            "ambushed_recordings": run.ambushed,
            "deleted_while_recording_and_kept": report.figures["deleted_while_recording_and_kept"],
            "over_budget_times": report.figures["over_budget_times"],
        },
        "fates": dict(sorted(run.fates.items())),
        "faults": report.figures["faults"],
        "forged_webhooks": report.figures["forged_webhooks"],
        "violations": report.per_invariant(),
        "reaped_live_recordings": [list(r) for r in report.reaped],
        "worst_seconds": report.figures["worst_seconds"],
        "api_writes_per_recording": round(counts["writes_ok"] / recordings, 2),
        "pod_writes_per_recording": round(counts["pod_writes_ok"] / recordings, 2),
        "leaked_pods": report.figures["leaked_pods"],
        "run_stalls": report.figures["run_stalls"],
        "commit": run.commit,
        "largest_pod_list": (
            asdict(run.proxy.largest_list)
            if run.proxy is not None and run.proxy.largest_list is not None
            else None
        ),
        "pod_lists": dict(sorted(run.proxy.lists.items())) if run.proxy is not None else {},
    }


def source_commit() -> str:
    """The checked-out commit, ``-dirty`` when tracked files differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def render_table(runs: Sequence[dict[str, Any]]) -> str:
    """The generated part of docs/reliability.md: one column per run, one row per figure."""

    def row(name: str, values: Sequence[object]) -> str:
        return f"| {name} | " + " | ".join(str(v) for v in values) + " |"

    lines = [
        row("", [f"seed {r['seed']} ({r['size']})" for r in runs]),
        "|---|" + "---|" * len(runs),
        row("recordings", [r["recordings"] for r in runs]),
        row("recordings turned away (no spare)", [r["recordings_turned_away"] for r in runs]),
        *[
            row(f"pools: {label}", [r.get("pools", {}).get(key, "") for r in runs])
            for key, label in POOL_ROWS
        ],
        row("forged webhooks", [r["forged_webhooks"] for r in runs]),
    ]
    kinds = sorted({k for r in runs for k in r["faults"]})
    lines += [row(f"fault: {k}", [r["faults"].get(k, 0) for r in runs]) for k in kinds]
    names = list(runs[0]["violations"]) if runs else []
    lines += [row(f"violations {n}", [r["violations"].get(n, 0) for r in runs]) for n in names]
    lines.append(
        row(
            "deletes of live recordings by a rule", [len(r["reaped_live_recordings"]) for r in runs]
        )
    )
    worst = list(runs[0]["worst_seconds"]) if runs else []
    lines += [
        row(f"worst {w.replace('_', ' ')} (s)", [r["worst_seconds"].get(w, "") for r in runs])
        for w in worst
    ]
    lines += [
        row(
            "API writes per recording (all / pods)",
            [f"{r['api_writes_per_recording']} / {r['pod_writes_per_recording']}" for r in runs],
        ),
        row("leaked pods", [r["leaked_pods"] for r in runs]),
        row(
            "largest pod list (pods, KB decoded / on the wire)",
            [_list_size(r.get("largest_pod_list")) for r in runs],
        ),
        row(
            "pod lists answered (plain / gzip)",
            [
                f"{r.get('pod_lists', {}).get('identity', 0)} / "
                f"{r.get('pod_lists', {}).get('gzip', 0)}"
                for r in runs
            ],
        ),
        row(
            "stalls of the run itself (longest, s)",
            [
                f"{len(r.get('run_stalls', []))} "
                f"({max((x['seconds'] for x in r.get('run_stalls', [])), default=0)})"
                for r in runs
            ],
        ),
        row("run time (s)", [r["seconds"] for r in runs]),
        row("when", [r["date"] for r in runs]),
        row("commit", [f"`{r.get('commit') or 'not recorded'}`" for r in runs]),
        row(
            "machine",
            [
                f"{r['machine']['cores']} cores {r['machine']['cpu']}, {r['machine']['memory']}, "
                f"Linux {r['machine']['kernel']}, Python {r['machine']['python']}"
                for r in runs
            ],
        ),
        row(
            "load average (start → end)",
            [f"{r['machine']['load_start']:.1f} → {r['machine']['load_end']:.1f}" for r in runs],
        ),
    ]
    return "\n".join(lines)


POOL_ROWS = (
    ("scale_ups", "scale-ups"),
    ("scale_downs", "scale-downs"),
    ("graceful_shutdowns_asked", "graceful shutdowns asked"),
    ("graceful_shutdowns_accepted", "graceful shutdowns accepted"),
    ("ambushed_recordings", "recordings started silently just before a scale-down"),
    ("found_busy_and_kept", "spares found BUSY on the way to a scale-down (kept)"),
    ("deleted_while_recording_and_kept", "pods deleted while recording, recording kept"),
    ("over_budget_times", "times one pod over maxTotal (the allowance)"),
)


def _list_size(size: dict[str, Any] | None) -> str:
    if not size:
        return "not recorded"
    return f"{size['pods']}, {size['json_bytes'] / 1024:.0f} / {size['wire_bytes'] / 1024:.0f}"


def write_docs(result: dict[str, Any] | None) -> None:
    """Record `result` (if any) in docs/reliability.json; regenerate the table from it."""
    runs: list[dict[str, Any]] = []
    if DOCS_JSON.exists():
        runs = json.loads(DOCS_JSON.read_text())
    if result is not None:
        runs = [r for r in runs if (r["seed"], r["size"]) != (result["seed"], result["size"])]
        runs.append(result)
    runs.sort(key=lambda r: (r["size"], r["seed"]))
    DOCS_JSON.write_text(json.dumps(runs, indent=2) + "\n")
    text = DOCS_MD.read_text()
    head, _, rest = text.partition(MARK_START)
    _, _, tail = rest.partition(MARK_END)
    DOCS_MD.write_text(f"{head}{MARK_START}\n{render_table(runs)}\n{MARK_END}{tail}")


async def run(
    seed: int, size: Size, out: Path, *, say: Callable[[str], None] = print
) -> tuple[Report, History, dict[str, Any]]:
    """Do one chaos run and check it; the plane and every process are stopped at the end."""
    await asyncio.to_thread(shutil.rmtree, out, ignore_errors=True)
    await asyncio.to_thread(out.mkdir, parents=True)
    load_start = os.getloadavg()[0]
    began = time.monotonic()
    say(f"chaos run: seed {seed}, {size.recordings} recordings over {size.workload_seconds:.0f} s")
    plane = await asyncio.to_thread(ControlPlane.start, out / "plane")
    state = Run(seed=seed, size=size, out=out, say=say, commit=source_commit())
    state.plane = plane
    tasks: list[asyncio.Task[None]] = []
    try:
        await _setup(state, plane)
        say(f"set up in {time.monotonic() - began:.0f} s; faults and workload start")
        state.started_at = time.time()
        # Once the workload is done, the fault streams and the attacker end their current
        # step (a stopped replica is continued, an outage ended); the pool streams, which only
        # wait between their steps, are cancelled, and the recordings they started awaited.
        # The monitor and the prober run on until the end.
        faults = [
            asyncio.create_task(stream)
            for stream in (state.api_faults(), state.controller_faults(), state.attacker())
        ]
        pool_streams = [
            asyncio.create_task(stream)
            for stream in (
                state.bursts(),
                state.operator(),
                *(state.ambushes(pool) for pool in POOLS),
            )
        ]
        tasks = [
            asyncio.create_task(state.monitor()),
            asyncio.create_task(state.prober()),
            *faults,
            *pool_streams,
        ]
        await state.workload()
        say(f"workload done at {time.time() - state.started_at:.0f} s; faults stop")
        state.running = False
        for task in pool_streams:
            task.cancel()
        await asyncio.gather(*faults)
        await asyncio.gather(*pool_streams, return_exceptions=True)
        while state.extra:  # the recordings the pool streams started
            await asyncio.gather(*state.extra)
        await _recover(state)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        end_pods = await _end_pods(state)
        history, counts = _history(state, plane, end_pods, _silences(state))
    finally:
        state.running = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for replica in state.replicas.values():
            if replica.stopped:
                replica.process.signal(signal.SIGCONT)
            await asyncio.to_thread(replica.process.stop)
        if state.kubelet is not None:
            await state.kubelet.stop()
        if state.proxy is not None:
            await state.proxy.stop()
        if state.admin is not None:
            await state.admin.close()
        await asyncio.to_thread(plane.stop, keep_logs_in=out / "plane-logs")
    report = check(history)
    result = summary(
        state,
        report,
        counts,
        load=(load_start, os.getloadavg()[0]),
        seconds=time.monotonic() - began,
    )
    (out / "history.json").write_text(json.dumps(asdict(history), default=list, indent=1))
    (out / "report.json").write_text(json.dumps(result, indent=2))
    return report, history, result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos.sh", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--out", type=Path, default=None, help="default: out/chaos/seed-N")
    parser.add_argument(
        "--write-docs", action="store_true", help="record the run in docs/reliability.*"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    out = args.out or REPO / "out" / "chaos" / f"seed-{seed}"
    print(f"seed {seed} (reproduce with --seed {seed} --size {args.size})", flush=True)

    def say(text: str) -> None:
        print(f"{datetime.now().strftime('%H:%M:%S')} {text}", flush=True)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    # A Jibri logs each webhook that fails; under these faults that is most of them.
    logging.getLogger("testbed.simjibri").setLevel(logging.ERROR)
    report, history, result = asyncio.run(run(seed, SIZES[args.size], out, say=say))
    print(json.dumps(result, indent=2))
    if args.write_docs:
        write_docs(result)
    if report.ok:
        print(f"seed {seed}: no violations; history and report in {out}")
        return 0
    print(f"seed {seed}: {len(report.violations)} violations:")
    for violation in report.violations[:20]:
        print(f"\n[{violation.invariant}] {violation.pod}: {violation.message}")
        for line in events_around(history, t=violation.t, pod=violation.pod)[-30:]:
            print(f"    {line}")
    print(f"\nseed {seed}: see {out}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
