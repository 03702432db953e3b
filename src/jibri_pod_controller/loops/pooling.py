"""The pool loop: size each JibriPool's Deployment, on the elected replica only.

Every ``period`` seconds, and soon after a pod is detached or deleted (this replica's own
detaches, and changes to busy-labelled pods for everyone else's), each pool is read, counted
and decided (`decide_pool`); the Deployment's scale is written only when the value changes,
and the pool's status only when it changes. Triggers that arrive within ``BATCH_SECONDS`` of
one another share one round: a burst of recordings is one or a few rounds, not one per detach.

A round reads its pods from the pod cache (loops/watching.py) when it is synced and holds every
pod of the pool (the Deployment's selector implies JIBRI_SELECTOR), and is then told of changes
to busy-labelled pods by the cache itself; otherwise (no ``watch pods`` right, the cache not
synced) it lists the pods from the API, and watches the busy-labelled ones. The Deployments are
one LIST a round (a GET each if that is refused). A stale cache is safe here: a pod the cache
still shows in its ReplicaSet holds the scale-down back, a spare it shows that was detached
meanwhile answers BUSY to the probe before any lowering, and the scale write carries the
Deployment's resourceVersion. Nothing here is remembered that a restart
would lose for long: the hysteresis clock and the demand policy's recent starts live in the
pool's status, the lead time is measured from the pods themselves.

A scale-down lets the ReplicaSet delete idle-labelled pods, and it picks which. One that turned
BUSY a moment ago (its webhook lost or not landed yet) would be lost with its recording, so
before lowering: every spare is probed; a BUSY one is detached and the scale-down waits for the
next round; the pods that may go are marked with a low ``pod-deletion-cost`` (the ReplicaSet
deletes not-Ready pods first, then the lowest cost); and the replicas are lowered only by as
many pods as were found IDLE, so a spare that did not answer is never a candidate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from jibri_pod_controller.adapters.kube import Conflict, Forbidden, KubeError, NotFound
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.adapters.pools import (
    DeploymentFacts,
    JsonApi,
    PoolApi,
    PoolMetrics,
    StoredPool,
)
from jibri_pod_controller.adapters.probing import Prober
from jibri_pod_controller.core.decisions import Detach, Reason, Reported
from jibri_pod_controller.core.demand import estimate_start_rate
from jibri_pod_controller.core.jibri import BusyStatus
from jibri_pod_controller.core.pods import (
    ANNOTATION_BUSY_SINCE,
    Phase,
    PodFacts,
    Selector,
    has_labels,
)
from jibri_pod_controller.core.pools import (
    ANNOTATION_DELETION_COST,
    Bound,
    Condition,
    PodIndex,
    PoolDecision,
    PoolMemory,
    PoolObservation,
    PoolPods,
    PoolSpec,
    PoolSpecError,
    Problem,
    SelectorError,
    decide_pool,
    measured_lead_time,
    parse_pool_spec,
    pool_conditions,
    selector_implies,
    selector_matches,
    selector_query,
    sort_pool_pods,
)
from jibri_pod_controller.loops.acting import Actuator, Source
from jibri_pod_controller.loops.watching import PodCache

log = logging.getLogger("jibri_pod_controller.pools")

DELETION_COST_MAY_GO = "-100"
"""Marks a probed-IDLE spare the ReplicaSet may delete first on a scale-down."""

MAX_RECENT_STARTS = 2000

RETRY_SOON = 0.05
"""Seconds before deciding again when a write had to wait (a release, a detach, a conflict)."""

BATCH_SECONDS = 0.1
"""How long a triggered round waits for more triggers to join it (a burst of detaches)."""


def _running(pod: PodFacts) -> bool:
    """A pod whose Jibri may be up (and so may hold a recording)."""
    return pod.phase is Phase.RUNNING and bool(pod.pod_ips)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _PoolState:
    """What the loop keeps between rounds for one pool (rebuilt from the status if lost)."""

    memory: PoolMemory = field(default_factory=PoolMemory)
    starts: dict[str, datetime] = field(default_factory=dict)
    """Recording starts by pod uid (the demand policy's input)."""
    last_round: float | None = None


@dataclass(frozen=True)
class RoundResult:
    """One pool's round, for tests and the log line."""

    pool: str
    problem: Problem | None
    decision: PoolDecision | None
    written: int | None
    """The replicas written, if any."""
    detached: int = 0


class PoolReconciler:
    def __init__(
        self,
        *,
        api: JsonApi,
        namespace: str,
        prober: Prober,
        actuator: Actuator,
        metrics: Metrics,
        busy_labels: Mapping[str, str],
        period: float,
        dry_run: bool = False,
        cache: PodCache | None = None,
        jibri_selector: Selector | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._pools = PoolApi(api, namespace=namespace)
        self._prober = prober
        self._actuator = actuator
        self._metrics = metrics
        self.pool_metrics = PoolMetrics(metrics)
        self._busy_labels = dict(busy_labels)
        self._busy_selector = ",".join(f"{k}={v}" for k, v in sorted(busy_labels.items()))
        self._period = period
        self._dry_run = dry_run
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._wake = asyncio.Event()
        self._state: dict[str, _PoolState] = {}
        self._hpa_forbidden_logged = False
        self._crd_missing_logged = False
        self._forbidden_logged = False
        self._targets: tuple[float, set[str]] | None = None
        self._list_deployments = True
        # The cache holds the pods JIBRI_SELECTOR matches; without a selector, trust it for none.
        self._cache = cache if jibri_selector is not None else None
        self._jibri_selector = jibri_selector
        if self._cache is not None:
            self._cache.listeners.append(self._pod_changed)

    def _pod_changed(self, before: PodFacts | None, after: PodFacts | None) -> None:
        """A pod cache change: reconcile when a live busy-labelled pod appeared or went (a
        detach, an expiry, by any replica), or after a new list.

        Other changes to a busy pod wake nobody: the ReplicaSet's release of a detached pod
        (its API writes are rate-limited, so after a burst they trickle in for seconds) changes
        no count, and a scale-down that waits for it already decides again every
        ``RETRY_SOON`` seconds; the period catches the rest.
        """
        if (before is None and after is None) or self._counted(before) != self._counted(after):
            self.trigger()

    def _counted(self, pod: PodFacts | None) -> bool:
        return (
            pod is not None
            and not pod.deleting
            and not pod.finished
            and has_labels(pod.labels, self._busy_labels)
        )

    async def _watch_busy(self) -> None:
        """Wake the loop on every change to a busy-labelled pod: a detach by any replica (the
        pod appears), an expiry (the pod goes)."""
        path = self._pools.pods_path
        while True:
            try:
                async for event in self._api.watch_json(
                    path, query={"labelSelector": self._busy_selector}, timeout_seconds=300
                ):
                    if event.kind != "BOOKMARK":
                        self.trigger()
            except KubeError as exc:
                log.debug("busy pod watch ended", extra={"error": str(exc)})
                await asyncio.sleep(1.0)

    def trigger(self) -> None:
        """Reconcile at once (a pod was detached or deleted)."""
        self._wake.set()

    async def run(self) -> None:
        """Reconcile now, then every period or on `trigger`, until cancelled."""
        # With a pod cache its own watch tells of busy-labelled pods; a second one is waste.
        watcher = asyncio.create_task(self._watch_busy()) if self._cache is None else None
        try:
            while True:
                self._wake.clear()
                started = self._monotonic()
                try:
                    await self.reconcile_all()
                    self._forbidden_logged = False
                except KubeError as exc:
                    self._metrics.api_errors.labels(operation="pools", kind=exc.kind).inc()
                    self.pool_metrics.reconciles.labels(result="error").inc()
                    if not isinstance(exc, Forbidden):
                        log.error("pools not reconciled", extra={"error": str(exc)})
                    elif not self._forbidden_logged:
                        # An older Role without the (optional) pool rights: say so once.
                        log.warning("pools not reconciled: forbidden", extra={"error": str(exc)})
                        self._forbidden_logged = True
                self.pool_metrics.round_seconds.observe(self._monotonic() - started)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._period)
                    await asyncio.sleep(BATCH_SECONDS)  # let a burst's other triggers join
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            self.pool_metrics.forget()

    async def reconcile_all(self) -> list[RoundResult]:
        pools = await self._pools.list_pools()
        if pools is None:
            if not self._crd_missing_logged:
                log.info("no JibriPool resource type installed: replicas are set by hand")
                self._crd_missing_logged = True
            return []
        self._crd_missing_logged = False
        names = [p.name for p in pools]
        self.pool_metrics.forget(keep=names)
        for gone in [n for n in self._state if n not in names]:
            del self._state[gone]
        if not pools:
            return []
        # HPAs are read once a period, not on every triggered round: a detach at the budget's
        # edge wants its scale write as soon as possible.
        tick = self._monotonic()
        if self._targets is None or tick - self._targets[0] >= self._period:
            self._targets = (tick, await self._hpa_targets())
        targets = self._targets[1]
        snapshot = self._cache.snapshot() if self._cache is not None else None
        index = PodIndex(snapshot) if snapshot is not None else None
        if index is not None:
            busy_labelled = index.with_labels(self._busy_labels)
        else:
            busy_labelled = await self._pools.list_pods(self._busy_selector)
        deployments = await self._deployments()
        results = []
        for pool in pools:
            try:
                results.append(
                    await self.reconcile(
                        pool, targets, busy_labelled, index=index, deployments=deployments
                    )
                )
            except KubeError as exc:
                self._metrics.api_errors.labels(operation="pool", kind=exc.kind).inc()
                self.pool_metrics.reconciles.labels(result="error").inc()
                log.error("pool not reconciled", extra={"pool": pool.name, "error": str(exc)})
        return results

    async def _deployments(self) -> dict[str, DeploymentFacts] | None:
        """Every Deployment, in one request; None when listing is refused (GET each then)."""
        if not self._list_deployments:
            return None
        try:
            return await self._pools.list_deployments()
        except (Forbidden, NotFound) as exc:
            log.info(
                "cannot list Deployments: reading each pool's with a GET",
                extra={"error": str(exc)},
            )
            self._list_deployments = False
            return None

    async def _hpa_targets(self) -> set[str]:
        try:
            return {t.name for t in await self._pools.scale_targets() if t.kind == "Deployment"}
        except (Forbidden, NotFound) as exc:
            if not self._hpa_forbidden_logged:
                log.warning(
                    "cannot list HorizontalPodAutoscalers: a conflicting HPA goes unnoticed",
                    extra={"error": str(exc)},
                )
                self._hpa_forbidden_logged = True
            return set()

    # -- one pool -------------------------------------------------------------------------
    async def reconcile(
        self,
        pool: StoredPool,
        hpa_targets: set[str],
        busy_labelled: list[PodFacts],
        *,
        index: PodIndex | None = None,
        deployments: Mapping[str, DeploymentFacts] | None = None,
    ) -> RoundResult:
        now = self._wall_clock()
        state = self._state.get(pool.name)
        if state is None:
            state = self._state[pool.name] = self._rebuild(pool)
        try:
            spec = parse_pool_spec(pool.spec)
        except PoolSpecError as exc:
            return await self._blocked(pool, Problem.INVALID_SPEC, str(exc))
        if deployments is not None:
            deployment = deployments.get(spec.deployment_name)
        else:
            deployment = await self._pools.get_deployment(spec.deployment_name)
        if deployment is None:
            return await self._blocked(
                pool,
                Problem.DEPLOYMENT_MISSING,
                f"Deployment {spec.deployment_name!r} not found in this namespace",
                spec=spec,
            )
        problem, detail = self._check(spec, deployment, hpa_targets)
        if problem is not None:
            return await self._blocked(pool, problem, detail, spec=spec)

        jibri = self._jibri_selector
        if index is not None and jibri is not None and selector_implies(deployment.selector, jibri):
            selected = index.matching(deployment.selector)
        else:
            selected = await self._pools.list_pods(selector_query(deployment.selector))
        pods = sort_pool_pods(
            selected=selected,
            busy_labelled=busy_labelled,
            deployment=deployment.name,
            busy_labels=self._busy_labels,
        )
        observation = self._observe(spec, pods, deployment, state, now)
        decision = decide_pool(spec, observation, now=now, last=state.memory)
        written: int | None = None
        detached = 0
        final = deployment.replicas
        if decision.replicas is not None:
            target = decision.replicas
            unreleased = [p.name for p in pods.busy if p.owner_kind == "ReplicaSet"]
            if target < deployment.replicas and unreleased:
                # The ReplicaSet has not yet seen a detach (it still owns the busy pod): a
                # lower count now could make it pick that very pod. Wait for the release.
                log.debug(
                    "scale-down waits for a release", extra={"pool": pool.name, "pods": unreleased}
                )
                target = deployment.replicas
            elif target < deployment.replicas:
                may_go, detached = await self._prepare_scale_down(
                    pods, deployment.replicas - target
                )
                target = deployment.replicas - may_go
            if target != deployment.replicas:
                written = await self._scale(pool, deployment, target, decision, observation)
                final = written if written is not None else final
        if final == decision.desired:
            memory = decision.memory
        else:
            # Not lowered, or only partly (a spare did not answer, or was found BUSY): keep
            # the hysteresis clock running, and decide again at once from a fresh read.
            lowering = decision.desired is not None and decision.desired < final
            below = (state.memory.below_since or now) if lowering else None
            memory = PoolMemory(desired=final, below_since=below)
            if decision.replicas is not None:
                asyncio.get_running_loop().call_later(RETRY_SOON, self.trigger)
        state.memory = memory
        await self._write_status(
            pool,
            spec,
            decision,
            observation,
            memory,
            problem=None,
            written=written,
            now=now,
            state=state,
        )
        self._export(pool.name, spec, decision, observation, now)
        self.pool_metrics.reconciles.labels(result="ok").inc()
        return RoundResult(pool.name, None, decision, written, detached)

    def _check(
        self, spec: PoolSpec, deployment: DeploymentFacts, hpa_targets: set[str]
    ) -> tuple[Problem | None, str]:
        detached_labels = {**deployment.template_labels, **self._busy_labels}
        try:
            selector_query(deployment.selector)
            still_selected = selector_matches(deployment.selector, detached_labels)
        except SelectorError as exc:
            return Problem.SELECTOR_MATCHES_BUSY, f"Deployment selector unusable: {exc}"
        if still_selected:
            return (
                Problem.SELECTOR_MATCHES_BUSY,
                f"Deployment {deployment.name!r}'s selector still matches a pod relabelled "
                f"with the busy labels {self._busy_selector}: a detach would not take it out",
            )
        if deployment.name in hpa_targets:
            return (
                Problem.HPA_CONFLICT,
                f"an HorizontalPodAutoscaler targets Deployment {deployment.name!r}: it owns the "
                "replicas, so this pool writes nothing",
            )
        return None, ""

    def _rebuild(self, pool: StoredPool) -> _PoolState:
        status = pool.status
        desired = status.get("desiredSpare")
        starts: dict[str, datetime] = {}
        for entry in status.get("recentStarts") or ():
            at = _time(entry.get("at")) if isinstance(entry, Mapping) else None
            if at is not None:
                starts[str(entry.get("uid"))] = at
        return _PoolState(
            memory=PoolMemory(
                desired=desired if isinstance(desired, int) else None,
                below_since=_time(status.get("belowSince")),
            ),
            starts=starts,
        )

    def _observe(
        self,
        spec: PoolSpec,
        pods: PoolPods,
        deployment: DeploymentFacts,
        state: _PoolState,
        now: datetime,
    ) -> PoolObservation:
        rate = 0.0
        if spec.demand is not None:
            for pod in pods.busy:
                at = _time(pod.annotations.get(ANNOTATION_BUSY_SINCE))
                if at is not None:
                    state.starts.setdefault(pod.uid, at)
            horizon = now - timedelta(seconds=spec.demand.window_seconds)
            state.starts = {u: t for u, t in state.starts.items() if horizon <= t <= now}
            rate = estimate_start_rate(
                [t.timestamp() for t in state.starts.values()],
                now=now.timestamp(),
                window=spec.demand.window_seconds,
            )
        return PoolObservation(
            busy=len(pods.busy),
            spare_ready=len(pods.spare_ready),
            starting=len(pods.starting),
            replicas=deployment.replicas,
            start_rate=rate,
            lead_time=measured_lead_time(pods),
        )

    async def _prepare_scale_down(self, pods: PoolPods, fewer: int) -> tuple[int, int]:
        """Make a scale-down by ``fewer`` pods safe; (how many pods may go now, detached).

        The ReplicaSet deletes, in order: pods not yet running, running pods that are not
        Ready, then Ready ones by ascending deletion cost. So the pods that may go are counted
        along that order, and the count stops at the first pod that is not known to be IDLE
        (one that did not answer the probe): the ReplicaSet would reach it next.
        """
        unstarted = [p for p in (*pods.starting, *pods.spare_ready) if not _running(p)]
        running = [p for p in (*pods.starting, *pods.spare_ready) if _running(p)]
        if len(unstarted) >= fewer:
            # The usual case at the budget's edge: the replacement the ReplicaSet just created
            # for a detached pod goes first, and it cannot be recording. No probe needed.
            return fewer, 0
        probed = await asyncio.gather(*(self._probe(p) for p in running))
        detached = 0
        idle: set[str] = set()
        for pod, result in zip(running, probed, strict=True):
            if result == Reported(BusyStatus.BUSY):
                with contextlib.suppress(KubeError):
                    await self._actuator.apply(Detach(Reason.MISSED_BUSY), pod, source=Source.SWEEP)
                    detached += 1
            elif result == Reported(BusyStatus.IDLE):
                idle.add(pod.uid)
        if detached:
            return 0, detached
        may_go = len(unstarted)
        marks: dict[str, str | None] = {}
        for tier in ([p for p in running if not p.ready], [p for p in running if p.ready]):
            safe = [p for p in tier if p.uid in idle]
            chosen = safe[: max(0, fewer - may_go)]
            for pod in tier:
                marks[pod.uid] = DELETION_COST_MAY_GO if pod in chosen else None
            may_go += len(chosen)
            if len(safe) < len(tier) or may_go >= fewer:
                break  # the next pod in the ReplicaSet's order is not known to be idle
        for pod in running:
            wanted = marks.get(pod.uid)
            if pod.annotations.get(ANNOTATION_DELETION_COST) != wanted:
                await self._mark(pod, wanted)
        return min(may_go, fewer), 0

    async def _probe(self, pod: PodFacts) -> Any:
        self._metrics.probes.inc()
        return await self._prober.probe(pod.pod_ips[0])

    async def _mark(self, pod: PodFacts, cost: str | None) -> None:
        if self._dry_run:
            return
        with contextlib.suppress(NotFound):
            await self._pools.annotate_pod(
                name=pod.name, uid=pod.uid, annotations={ANNOTATION_DELETION_COST: cost}
            )

    async def _scale(
        self,
        pool: StoredPool,
        deployment: DeploymentFacts,
        replicas: int,
        decision: PoolDecision,
        observation: PoolObservation,
    ) -> int | None:
        direction = "up" if replicas > deployment.replicas else "down"
        message = (
            f"replicas {deployment.replicas} -> {replicas} (bound {decision.bound}: "
            f"{observation.busy} busy, {observation.spare_ready} spare, "
            f"{observation.starting} starting)"
        )
        if self._dry_run:
            log.info("scale (dry run)", extra={"pool": pool.name, "message": message})
            self.pool_metrics.scale_writes.labels(pool.name, direction, "dry-run").inc()
            return None
        started = self._monotonic()
        try:
            await self._pools.scale(
                name=deployment.name,
                replicas=replicas,
                resource_version=deployment.resource_version,
            )
        except (Conflict, NotFound) as exc:
            self.pool_metrics.scale_writes.labels(pool.name, direction, "conflict").inc()
            log.info("scale refused; deciding again", extra={"pool": pool.name, "error": str(exc)})
            return None
        except KubeError:
            self.pool_metrics.scale_writes.labels(pool.name, direction, "failed").inc()
            raise
        self.pool_metrics.scale_writes.labels(pool.name, direction, "done").inc()
        log.info(
            "scaled %s",
            deployment.name,
            extra={
                "pool": pool.name,
                "deployment": deployment.name,
                "from": deployment.replicas,
                "replicas": replicas,
                "bound": decision.bound,
                "busy": observation.busy,
                "spare": observation.spare_ready,
                "ms": round((self._monotonic() - started) * 1000, 1),
            },
        )
        reason = "ScaledUp" if direction == "up" else "ScaledDown"
        await self._event(pool, reason, message)
        return replicas

    async def _event(
        self, pool: StoredPool, reason: str, message: str, warning: bool = False
    ) -> None:
        if self._dry_run:
            return
        try:
            await self._pools.record_event(
                pool=pool, reason=reason, message=message, warning=warning
            )
        except KubeError as exc:
            self._metrics.events_failed.inc()
            log.warning("event not recorded", extra={"pool": pool.name, "error": str(exc)})

    async def _blocked(
        self, pool: StoredPool, problem: Problem, detail: str, spec: PoolSpec | None = None
    ) -> RoundResult:
        previous = _condition(pool.status, "Ready")
        if previous is None or previous.get("reason") != problem.value:
            log.warning(
                "pool not reconciled: %s",
                problem.value,
                extra={"pool": pool.name, "reason": problem, "detail": detail},
            )
            await self._event(pool, problem.value, detail, warning=True)
        conditions = pool_conditions(None, problem=problem, detail=detail, spec=spec)
        status = {
            "observedGeneration": pool.generation,
            "conditions": _conditions(pool.status, conditions, self._wall_clock(), pool.generation),
        }
        await self._patch_if_changed(pool, status)
        self.pool_metrics.set(self.pool_metrics.problems, pool.name, problem.value, value=1)
        self.pool_metrics.reconciles.labels(result="problem").inc()
        return RoundResult(pool.name, problem, None, None)

    async def _write_status(
        self,
        pool: StoredPool,
        spec: PoolSpec,
        decision: PoolDecision,
        observation: PoolObservation,
        memory: PoolMemory,
        *,
        problem: Problem | None,
        written: int | None,
        now: datetime,
        state: _PoolState,
    ) -> None:
        detail = f"{decision.desired} spares wanted (bound {decision.bound})"
        if decision.scale_down_at is not None:
            detail += f"; {decision.wanted} after {_stamp(decision.scale_down_at)}"
        conditions = pool_conditions(decision, problem=problem, detail=detail, spec=spec)
        status: dict[str, Any] = {
            "observedGeneration": pool.generation,
            "spare": observation.spare_ready,
            "busy": observation.busy,
            "starting": observation.starting,
            "desiredSpare": memory.desired,
            "replicas": written if written is not None else observation.replicas,
            "bound": str(decision.bound),
            "belowSince": _stamp(memory.below_since) if memory.below_since else None,
            "conditions": _conditions(pool.status, conditions, now, pool.generation),
        }
        if written is not None:
            status["lastScaleTime"] = _stamp(now)
        if spec.demand is not None:
            status["startRate"] = round(observation.start_rate, 6)
            status["leadTimeSeconds"] = (
                round(decision.lead_time, 3) if decision.lead_time is not None else None
            )
            recent = sorted(state.starts.items(), key=lambda item: item[1])[-MAX_RECENT_STARTS:]
            status["recentStarts"] = [{"at": _stamp(t), "uid": u} for u, t in recent]
        await self._patch_if_changed(pool, status)

    async def _patch_if_changed(self, pool: StoredPool, status: Mapping[str, Any]) -> None:
        changed = {k: v for k, v in status.items() if pool.status.get(k) != v}
        if not changed or self._dry_run:
            return
        log.debug("pool status", extra={"pool": pool.name, "changed": sorted(changed)})
        await self._pools.patch_status(name=pool.name, status=changed)

    def _export(
        self,
        name: str,
        spec: PoolSpec,
        decision: PoolDecision,
        observation: PoolObservation,
        now: datetime,
    ) -> None:
        m = self.pool_metrics
        m.set(m.pods, name, "spare", value=observation.spare_ready)
        m.set(m.pods, name, "starting", value=observation.starting)
        m.set(m.pods, name, "busy", value=observation.busy)
        m.set(m.desired, name, value=decision.desired or 0)
        m.set(m.replicas, name, value=observation.replicas or 0)
        if spec.max_total is not None:
            m.set(m.max_total, name, value=spec.max_total)
        for bound in Bound:
            m.set(m.bound, name, bound.value, value=1 if bound is decision.bound else 0)
        m.set(m.start_rate, name, value=observation.start_rate)
        if observation.lead_time is not None:
            m.set(m.lead_time, name, value=observation.lead_time)
        for reason in Problem:
            m.set(m.problems, name, reason.value, value=0)
        m.set(m.exhausted, name, "SpareExhausted", value=1 if decision.spare_exhausted else 0)
        m.set(m.exhausted, name, "BudgetExhausted", value=1 if decision.budget_exhausted else 0)
        state = self._state[name]
        tick = self._monotonic()
        # Created at 0 on the first round, so that rate() has a series before the first dry spell.
        zero_spare = m.zero_spare_seconds.labels(name)
        if state.last_round is not None and decision.spare_exhausted:
            zero_spare.inc(max(0.0, tick - state.last_round))
        state.last_round = tick


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for entry in status.get("conditions") or ():
        if isinstance(entry, Mapping) and entry.get("type") == kind:
            return entry
    return None


def _conditions(
    status: Mapping[str, Any], conditions: tuple[Condition, ...], now: datetime, generation: int
) -> list[dict[str, Any]]:
    """The conditions as the API wants them; lastTransitionTime moves only when the status
    does, so an unchanged round writes nothing."""
    out = []
    for condition in conditions:
        value = "True" if condition.status else "False"
        previous = _condition(status, condition.type.value)
        since = (
            previous.get("lastTransitionTime")
            if previous is not None and previous.get("status") == value
            else _stamp(now)
        )
        out.append(
            {
                "type": condition.type.value,
                "status": value,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )
    return out
