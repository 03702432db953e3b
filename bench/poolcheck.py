"""The simulation checked against the real thing: a compressed day through the controller.

A day of the policy benchmark's demand (bench/daysim.py), compressed into minutes and thinned, is
played against a demand-based JibriPool on the local control plane: at each recording's start the
player asks the pool's oldest Ready, idle-labelled Jibri to start recording (Jibri's own
``startService``, so the Jibri sends its BUSY webhook and the controller detaches it as in
production) and counts a shortfall when there is none; at its end it stops the recording (the
Jibri reports EXPIRED, the controller deletes the pod). The fake kubelet makes each new pod take
``ready_delay`` plus up to ``ready_jitter`` seconds to become Ready. Idle pod-minutes are
integrated from the pods listed every ``sample_seconds``.

The same compressed demand then goes through the simulation with the same pool spec, the
testbed's start-up times and the controller's reconcile period; both sets of figures are
reported side by side.

`ForecastPlan` does the same for the forecast: days compressed into minutes (the controller's
FORECAST_DAY_SECONDS, the simulation's `Season`), the same cluster of recordings at the same
local time each day, a pool with the forecast on; the simulation runs the controller's
forecast through `bench.sizers.Forecasting`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client as k8s

from bench.daysim import (
    Demand,
    Outcome,
    Recording,
    UniformStartup,
    World,
    compress,
    simulate,
    synthetic_day,
)
from bench.sizers import Forecasting, Pool
from jibri_pod_controller.core.forecast import Season
from jibri_pod_controller.core.pools import parse_pool_spec
from testbed.cluster import (
    JIBRIPOOL_CRD,
    apply,
    install_crds,
    jibri_pool,
    start_recording,
    stop_recording,
)


@dataclass(frozen=True)
class Plan:
    """What to play: which hours of which day, how much faster, how much of it."""

    seed: int = 1
    begin_hour: float = 0.0
    end_hour: float = 24.0
    factor: float = 144.0
    """24 hours in 10 minutes."""
    keep: float = 0.1
    ready_delay: float = 5.0
    ready_jitter: float = 5.0
    reconcile_period: float = 1.0
    shortfall_probability: float = 0.01
    window_seconds: int = 60
    """The CRD's minimum."""
    min_spare: int = 1
    max_spare: int = 30
    scale_down_delay_seconds: int = 10

    def demand(self) -> Demand:
        day = synthetic_day(self.seed, hours=self.end_hour)
        begin = self.begin_hour * 3600.0
        part = Demand(
            t0=day.t0,
            duration=(self.end_hour - self.begin_hour) * 3600.0,
            recordings=tuple(
                Recording(r.start - begin, r.length) for r in day.recordings if r.start >= begin
            ),
            bursts=tuple(b - begin for b in day.bursts if b >= begin),
            source=f"{day.source}, {self.begin_hour:g}:00 to {self.end_hour:g}:00",
        )
        return compress(part, factor=self.factor, keep=self.keep, seed=self.seed)

    def pool_spec(self, deployment: str) -> dict[str, Any]:
        return {
            "deploymentName": deployment,
            "minSpare": self.min_spare,
            "maxSpare": self.max_spare,
            "scaleDownDelaySeconds": self.scale_down_delay_seconds,
            "demand": {
                "shortfallProbability": self.shortfall_probability,
                "windowSeconds": self.window_seconds,
                "startupSeconds": 0,
            },
        }


@dataclass
class Measured:
    recordings: int
    shortfalls: int
    idle_pod_minutes: float
    peak_pods: int
    peak_replicas: int
    lead_time: float | None
    seconds: float
    late_starts: int
    """Starts the player could not send on time (more than 1 s late): a loaded machine."""
    replicas: tuple[tuple[float, int], ...] = ()
    """(seconds since the start, the Deployment's replicas), as sampled."""
    spares: tuple[tuple[float, int], ...] = ()
    """(seconds since the start, Ready idle pods not claimed), as sampled."""
    shortfall_times: tuple[float, ...] = ()
    """Seconds since the start of each recording that found no spare."""


def testbed_world(ready_delay: float, ready_jitter: float) -> World:
    """The local control plane and fake kubelet, as the simulation models them."""
    # The control plane adds its part to the kubelet's delay: the ReplicaSet's create, the
    # kubelet's watch, the status patch (about half a second here).
    return World(
        startup=UniformStartup(ready_delay + 0.3, ready_delay + ready_jitter + 0.6),
        webhook_median_seconds=0.05,
        rs_delay_seconds=0.1,
        sample_seconds=1.0,
    )


def predict(plan: Plan, demand: Demand, deployment: str = "jibri") -> Outcome:
    """The simulation's figures for the same demand, pool and start-up times."""
    spec = parse_pool_spec(plan.pool_spec(deployment))
    sizer = Pool(spec, "demand", period=plan.reconcile_period)
    world = testbed_world(plan.ready_delay, plan.ready_jitter)
    return simulate(demand, sizer, world=world, seed=plan.seed)


# ---------------------------------------------------------------------------------------------
# The forecast: compressed days with the same cluster each day


@dataclass(frozen=True)
class ForecastPlan:
    """Days of ``day_seconds`` (FORECAST_DAY_SECONDS), each with a cluster of
    ``cluster_size`` recordings starting within ``cluster_spread`` seconds at
    ``cluster_hour`` local time. The first day is recorded whole and has no history to go
    by; from the second the pool has seen the cluster before."""

    day_seconds: float = 120.0
    days: int = 2
    cluster_hour: float = 10.0
    cluster_size: int = 6
    cluster_spread: float = 1.5
    length: float = 20.0
    """Each recording lasts this long, give or take a quarter."""
    lead_in: float = 10.0
    """At least this long between the pool's first round and the first midnight."""
    ready_delay: float = 5.0
    ready_jitter: float = 5.0
    reconcile_period: float = 1.0
    shortfall_probability: float = 0.001
    window_seconds: int = 60
    startup_seconds: int = 10
    """The lead time the pool plans for: the pods take 5 to 10 s, and the control plane a
    little more."""
    min_spare: int = 2
    max_spare: int = 20
    scale_down_delay_seconds: int = 10
    seed: int = 1

    def schedule(self, now: float) -> tuple[str, float]:
        """A time zone and the first local midnight after ``now`` + ``lead_in`` in it such
        that the days played are all working days or all weekend days (the forecast compares
        like with like); the earliest such midnight over the whole-hour zones."""
        best: tuple[float, str] | None = None
        for hours in range(-12, 15):
            # Etc/GMT-N is N hours ahead of UTC (the POSIX sign).
            zone = "UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"
            season = Season(zone, day_seconds=self.day_seconds)
            day = season.day(now + self.lead_in) + 1
            while len({Season.weekend(day + i) for i in range(self.days)}) > 1:
                day += 1
            midnight = season.start_of(day)
            if best is None or midnight < best[0]:
                best = (midnight, zone)
        assert best is not None
        return best[1], best[0]

    def clusters(self, midnight: float) -> list[float]:
        """When each day's cluster begins (Unix seconds)."""
        at = self.cluster_hour / 24 * self.day_seconds
        return [midnight + day * self.day_seconds + at for day in range(self.days)]

    def demand(self, origin: float, midnight: float) -> Demand:
        """The recordings from ``origin`` (Unix seconds; the play's start)."""
        rng = random.Random(f"forecast-plan-{self.seed}")
        recordings = []
        for begins in self.clusters(midnight):
            for i in range(self.cluster_size):
                start = begins - origin + self.cluster_spread * i / max(1, self.cluster_size - 1)
                recordings.append(Recording(start, self.length * rng.uniform(0.75, 1.25)))
        end = max(r.start + r.length for r in recordings) + 5.0
        return Demand(
            t0=datetime.fromtimestamp(origin, UTC),
            duration=end,
            recordings=tuple(recordings),
            bursts=tuple(b - origin for b in self.clusters(midnight)),
            source=(
                f"{self.days} days of {self.day_seconds:g} s, {self.cluster_size} recordings "
                f"within {self.cluster_spread:g} s at {self.cluster_hour:g}:00 local each day"
            ),
        )

    def pool_spec(self, deployment: str, *, zone: str, mode: str) -> dict[str, Any]:
        return {
            "deploymentName": deployment,
            "minSpare": self.min_spare,
            "maxSpare": self.max_spare,
            "scaleDownDelaySeconds": self.scale_down_delay_seconds,
            "demand": {
                "shortfallProbability": self.shortfall_probability,
                "windowSeconds": self.window_seconds,
                "startupSeconds": self.startup_seconds,
                "mode": mode,
                "forecast": {"timeZone": zone, "historyWeeks": 1},
            },
        }


def predict_forecast(plan: ForecastPlan, demand: Demand, *, zone: str, mode: str) -> Outcome:
    """The simulation's figures for the same compressed days and forecasting pool. (In
    Recommend mode the pool is sized as the demand policy alone: `Pool`.)"""
    spec = parse_pool_spec(plan.pool_spec("jibri", zone=zone, mode=mode))
    sizer: Forecasting | Pool
    if mode == "Apply":
        sizer = Forecasting(
            spec, "forecast", day_seconds=plan.day_seconds, period=plan.reconcile_period
        )
    else:
        sizer = Pool(spec, "recommend", period=plan.reconcile_period)
    split = sorted({b + plan.day_seconds / 2 for b in demand.bursts[:-1]})
    world = testbed_world(plan.ready_delay, plan.ready_jitter)
    return simulate(demand, sizer, world=world, seed=plan.seed, split=split)


@dataclass(frozen=True)
class Rise:
    """How a pool met a cluster: when it raised its replicas above minSpare before it, and
    how many spares were Ready when it began."""

    raised: float | None
    """Seconds before the cluster the replicas rose above minSpare (None: not before it)."""
    ready: int
    """Ready spares at the cluster's start."""


def rise_before(
    replicas: Sequence[tuple[float, int]],
    spares: Sequence[tuple[float, int]],
    *,
    cluster: float,
    since: float,
    floor: int,
) -> Rise:
    """From samples (seconds, value): the first rise above ``floor`` between ``since`` and
    ``cluster``, and the Ready spares at ``cluster``."""
    raised = None
    for t, value in replicas:
        if since <= t < cluster and value > floor:
            raised = cluster - t
            break
    before = [n for t, n in spares if t <= cluster]
    return Rise(raised, before[-1] if before else 0)


@dataclass
class Timeline:
    """What the status of a pool said, sampled (seconds since the start)."""

    points: list[tuple[float, Mapping[str, Any]]] = field(default_factory=list)

    def at(self, t: float) -> Mapping[str, Any]:
        last: Mapping[str, Any] = {}
        for when, status in self.points:
            if when > t:
                break
            last = status
        return last


def days_of(times: Sequence[float], *, bursts: Sequence[float], day_seconds: float) -> list[int]:
    """How many of ``times`` fall in each day (the day of each burst: half a day either side)."""
    return [sum(1 for t in times if b - day_seconds / 2 <= t < b + day_seconds / 2) for b in bursts]


def forecast_table(rows: Sequence[tuple[str, str, str]]) -> str:
    lines = ["| Figure | Measured (cluster) | Simulated |", "|---|--:|--:|"]
    lines += [f"| {name} | {m} | {s} |" for name, m, s in rows]
    return "\n".join(lines) + "\n"


def whole(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def _ready(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or ()
    )


def _stamp(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


async def _pods(api: k8s.ApiClient, namespace: str) -> list[dict[str, Any]]:
    # Raw JSON (no models): what the API stores, and cheap enough to list twice a second.
    response: Any = await k8s.CoreV1Api(api).list_namespaced_pod(namespace, _preload_content=False)
    async with response:
        items: list[dict[str, Any]] = (await response.json())["items"]
    return items


def _idle(pod: Mapping[str, Any], idle_labels: Mapping[str, str]) -> bool:
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    return meta.get("deletionTimestamp") is None and all(
        labels.get(k) == v for k, v in idle_labels.items()
    )


async def install_crd(api: k8s.ApiClient) -> None:
    """deploy/crds/ installed (it outlives namespaces) and Established."""
    await install_crds(api, JIBRIPOOL_CRD)


async def create_pool(
    api: k8s.ApiClient, namespace: str, name: str, spec: Mapping[str, Any]
) -> None:
    await apply(api, [jibri_pool(namespace=namespace, name=name, spec=spec)])


async def play(
    api: k8s.ApiClient,
    namespace: str,
    demand: Demand,
    *,
    idle_labels: Mapping[str, str],
    deployment: str,
    sample_seconds: float = 0.5,
    start_at: float | None = None,
) -> Measured:
    """Play ``demand`` against the pool's pods in ``namespace``; the clock starts now, or at
    ``start_at`` (Unix seconds) when given. Only the pods with ``idle_labels`` count (another
    pool's pods may share the namespace)."""
    apps = k8s.AppsV1Api(api)
    claimed: set[str] = set()
    stops: set[asyncio.Task[None]] = set()
    shortfalls = late = 0
    idle_seconds = 0.0
    peak_pods = peak_replicas = 0
    replicas: list[tuple[float, int]] = []
    ready_spares: list[tuple[float, int]] = []
    missed: list[float] = []
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
    origin = time.monotonic()
    done = asyncio.Event()

    def mine(pod: Mapping[str, Any]) -> bool:
        owner = (pod["metadata"].get("annotations") or {}).get("jibri-pod-controller/detached-from")
        return _idle(pod, idle_labels) or owner == deployment

    async def sample() -> None:
        nonlocal idle_seconds, peak_pods, peak_replicas
        last = time.monotonic()
        while not done.is_set():
            pods = await _pods(api, namespace)
            scale = await apps.read_namespaced_deployment(deployment, namespace)
            now = time.monotonic()
            idle = [
                p for p in pods if _idle(p, idle_labels) and p["metadata"]["name"] not in claimed
            ]
            idle_seconds += len(idle) * (now - last)
            last = now
            live = [p for p in pods if p["metadata"].get("deletionTimestamp") is None and mine(p)]
            peak_pods = max(peak_pods, len(live))
            peak_replicas = max(peak_replicas, scale.spec.replicas or 0)
            replicas.append((now - origin, scale.spec.replicas or 0))
            ready_spares.append((now - origin, sum(1 for p in idle if _ready(p))))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), sample_seconds)

    async def finish(ip: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - (time.monotonic() - origin)))
        await stop_recording(ip)

    sampler = asyncio.create_task(sample())
    try:
        for index, recording in enumerate(demand.recordings):
            delay = recording.start - (time.monotonic() - origin)
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                late += 1
            pods = await _pods(api, namespace)
            candidates = sorted(
                (p["metadata"]["creationTimestamp"], p["metadata"]["name"], p["status"]["podIP"])
                for p in pods
                if _idle(p, idle_labels)
                and _ready(p)
                and p["metadata"]["name"] not in claimed
                and (p.get("status") or {}).get("podIP")
            )
            started = False
            for _, name, ip in candidates:
                status = await start_recording(ip, session_id=f"rec-{index}")
                claimed.add(name)  # a Jibri records once
                if status == 200:
                    task = asyncio.create_task(finish(ip, recording.start + recording.length))
                    stops.add(task)
                    task.add_done_callback(stops.discard)
                    started = True
                    break
            if not started:
                shortfalls += 1
                missed.append(time.monotonic() - origin)
        elapsed = time.monotonic() - origin
        if elapsed < demand.duration:
            await asyncio.sleep(demand.duration - elapsed)
    finally:
        done.set()
        await sampler
        for task in list(stops):
            task.cancel()
    pods = await _pods(api, namespace)
    leads = sorted(
        (ready - created).total_seconds()
        for p in pods
        for c in (p.get("status") or {}).get("conditions") or ()
        if c.get("type") == "Ready" and c.get("status") == "True"
        for created, ready in [
            (_stamp(p["metadata"].get("creationTimestamp")), _stamp(c.get("lastTransitionTime")))
        ]
        if created is not None and ready is not None
    )
    return Measured(
        recordings=len(demand.recordings),
        shortfalls=shortfalls,
        idle_pod_minutes=idle_seconds / 60.0,
        peak_pods=peak_pods,
        peak_replicas=peak_replicas,
        lead_time=leads[max(0, int(0.9 * len(leads)) - 1)] if leads else None,
        seconds=time.monotonic() - origin,
        late_starts=late,
        replicas=tuple(replicas),
        spares=tuple(ready_spares),
        shortfall_times=tuple(missed),
    )


def compare(measured: Measured, predicted: Outcome) -> list[tuple[str, float, float]]:
    """(figure, measured, simulated) rows."""
    return [
        ("recordings", measured.recordings, predicted.recordings),
        ("shortfalls", measured.shortfalls, len(predicted.shortfalls)),
        (
            "idle pod-minutes",
            round(measured.idle_pod_minutes, 1),
            round(predicted.idle_pod_hours * 60, 1),
        ),
        ("peak pods", measured.peak_pods, predicted.peak_pods),
        ("peak replicas", measured.peak_replicas, max(s.replicas for s in predicted.samples)),
    ]


def table(rows: Sequence[tuple[str, float, float]]) -> str:
    lines = ["| Figure | Measured (cluster) | Simulated |", "|---|--:|--:|"]
    lines += [f"| {name} | {m:g} | {s:g} |" for name, m, s in rows]
    return "\n".join(lines) + "\n"
