"""The pool loop: size each JibriPool's Deployment, on the elected replica only.

Each round reads, plans and applies; it decides nothing itself. It reads every JibriPool, the
Deployments (one LIST), the HPAs (once a period) and the pods, calls `plan_pool` for each pool
(a second time with the answers of the spares the first plan asked to probe), and carries the
plan out in this order: detach the spares found BUSY, ask the chosen spares to shut down
gracefully, write the deletion-cost marks, write the scale, write the status (only the fields
that changed), record the Events. A failed mark stops the pool's round before its scale write;
a refused scale write starts a new round from a fresh read.

Rounds come from one place: the loop waits for a trigger or for the earliest time any plan
asked to be looked at again (a graceful shutdown to confirm, a held scale-down coming due),
and at the latest for the period. Triggers: this replica's own detaches and deletes, changes
to busy-labelled pods (from the pod cache, or a watch of its own without one), and the release
of a detached pod while a scale-down waits for it. Triggers within ``BATCH_SECONDS`` share one
round. A blocked scale-down therefore costs one round per period, not one per trigger.

A round reads its pods from the pod cache (loops/watching.py) when it is synced and holds every
pod of the pool (the Deployment's selector implies JIBRI_SELECTOR); otherwise it lists them.
A stale cache is safe here: a pod the cache still shows holds a scale-down back (it is counted
as one the ReplicaSet still has), and a spare detached meanwhile answers BUSY to the probe.

What the loop remembers of a pool is the plan's `TermMemory`, and it is the current Lease
term's: `run` starts each term afresh, from what the pools' statuses say.

A pool with the forecast on needs an outlook (core.forecast), built about once an hour of the
day when its plan asks for one. It is built on a worker thread, not on the event loop that
answers webhooks; the result is handed to the pool's memory on the loop (`TermMemory.
with_outlook`) and a round follows. Until then the plan uses the outlook it has. A leader that
shuts down stores each pool's history first (`flush`), while it still holds the Lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from jibri_pod_controller.adapters.kube import Conflict, Forbidden, KubeError, NotFound
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.adapters.pools import (
    InternalApi,
    JsonApi,
    PoolApi,
    PoolMetrics,
    StoredPool,
)
from jibri_pod_controller.adapters.probing import Prober
from jibri_pod_controller.core.decisions import (
    Detach,
    Failed,
    ProbeFailure,
    ProbeResult,
    Reason,
)
from jibri_pod_controller.core.forecast import REAL_DAY, Outlook, OutlookRequest
from jibri_pod_controller.core.pods import PodFacts, has_labels
from jibri_pod_controller.core.poolplan import (
    PoolEvent,
    PoolPlan,
    PoolRead,
    Problem,
    TermMemory,
    plan_pool,
    status_patch,
    stored_history,
)
from jibri_pod_controller.core.pools import (
    Bound,
    DemandMode,
    DeploymentFacts,
    PodIndex,
    PoolDecision,
    PoolSpecError,
    parse_pool_spec,
)
from jibri_pod_controller.core.scaledown import (
    ANNOTATION_DELETION_COST,
    Asked,
    BlockReason,
    ShutdownOutcome,
)
from jibri_pod_controller.core.selectors import Selector, SelectorError, label_selector
from jibri_pod_controller.loops.acting import Actuator, Source
from jibri_pod_controller.loops.watching import PodCache

log = logging.getLogger("jibri_pod_controller.pools")

_TERM: contextvars.ContextVar[int | None] = contextvars.ContextVar("pool_term", default=None)
"""The Lease term a running `PoolReconciler.run` (and what it awaits) belongs to."""

BATCH_SECONDS = 0.1
"""How long a triggered round waits for more triggers to join it (a burst of detaches)."""


@dataclass(frozen=True)
class RoundResult:
    """One pool's round, for tests and the log line."""

    pool: str
    problem: Problem | None
    decision: PoolDecision | None
    written: int | None
    """The replicas written, if any."""
    detached: int = 0
    plan: PoolPlan | None = None
    asked: Mapping[str, ShutdownOutcome] | None = None
    """The graceful shutdowns asked, by pod name."""


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
        internal_api: InternalApi | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        day_seconds: float = REAL_DAY,
        build_outlook: Callable[[OutlookRequest], Outlook] = OutlookRequest.build,
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
        self._internal_api = internal_api
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._day_seconds = day_seconds
        self._build_outlook = build_outlook
        self._builds: dict[str, asyncio.Task[None]] = {}
        self._term = 0
        self._active_term: int | None = None
        self._wake = asyncio.Event()
        self._memory: dict[str, TermMemory] = {}
        self._last_round: dict[str, float] = {}
        self._awaiting_release = False
        self._hpa_forbidden_logged = False
        self._crd_missing_logged = False
        self._forbidden_logged = False
        self._targets: tuple[float, frozenset[str]] | None = None
        self._list_deployments = True
        # The cache holds the pods JIBRI_SELECTOR matches; without a selector, trust it for none.
        self._cache = cache if jibri_selector is not None else None
        self._jibri_selector = jibri_selector
        if self._cache is not None:
            self._cache.listeners.append(self._pod_changed)

    def describe_scale_down(self) -> str:
        """How this replica takes spares away (said once, at start-up)."""
        if self._internal_api is None:
            return (
                "by probe and deletion cost (JIBRI_INTERNAL_API_PORT=0): a spare handed a "
                "recording between its probe and the ReplicaSet's delete keeps it only if the "
                "Jibri pods have the preStop hook of deploy/jibri"
            )
        return (
            f"through Jibri's graceful shutdown (internal API port {self._internal_api.port}); "
            "a spare whose internal API does not answer is taken by probe and deletion cost"
        )

    def _pod_changed(self, before: PodFacts | None, after: PodFacts | None) -> None:
        """A pod cache change: reconcile when a live busy-labelled pod appeared or went (a
        detach, an expiry, by any replica), after a new list, or when a ReplicaSet released a
        detached pod while a scale-down waits for that.

        Other changes wake nobody: a ReplicaSet's releases after a burst of detaches trickle
        in for seconds (its API writes are rate-limited) and change no count, and a spare's
        own changes (Ready, restarts) are for the next period.
        """
        relist = before is None and after is None
        released = (
            self._awaiting_release
            and before is not None
            and after is not None
            and before.owner_kind == "ReplicaSet"
            and after.owner_kind != "ReplicaSet"
        )
        if relist or released or self._counted(before) != self._counted(after):
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
        pod appears), a release by its ReplicaSet, an expiry (the pod goes)."""
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
        """Reconcile at once (a pod was detached or deleted, or a write was refused)."""
        self._wake.set()

    def stop(self) -> None:
        """The current Lease term is over: its `run` writes nothing more and ends at its next
        step, even if a cancellation was lost on the way (an HTTP client's timeout firing in
        the same loop turn turns it into a timeout error, which a round survives)."""
        self._active_term = None

    def _check_term(self) -> None:
        """Raise CancelledError in a `run` whose term is over (see `stop`)."""
        term = _TERM.get()
        if term is not None and term != self._active_term:
            raise asyncio.CancelledError

    async def run(self) -> None:
        """Reconcile now, then every period, on `trigger` or when a plan asked to look again,
        until cancelled. Each call is a new Lease term: nothing of an earlier one is kept."""
        self._term += 1
        self._active_term = self._term
        _TERM.set(self._term)
        self._memory.clear()
        self._last_round.clear()
        self._targets = None
        self._awaiting_release = False
        # With a pod cache its own watch tells of busy-labelled pods; a second one is waste.
        watcher = asyncio.create_task(self._watch_busy()) if self._cache is None else None
        try:
            while True:
                self._check_term()
                self._wake.clear()
                started = self._monotonic()
                results: list[RoundResult] = []
                try:
                    results = await self.reconcile_all()
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
                rechecks = [
                    r.plan.recheck_in
                    for r in results
                    if r.plan is not None and r.plan.recheck_in is not None
                ]
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation
                # that comes as the wake is set, and the loop would go on after its stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min([self._period, *rechecks])):
                        await self._wake.wait()
                    await asyncio.sleep(BATCH_SECONDS)  # let a burst's other triggers join
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            builds = list(self._builds.values())
            for build in builds:
                build.cancel()  # its thread finishes on its own; the result is dropped
            for build in builds:
                with contextlib.suppress(asyncio.CancelledError):
                    await build
            self.pool_metrics.forget()

    # -- reading ----------------------------------------------------------------------------

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
        for gone in [n for n in self._memory if n not in names]:
            del self._memory[gone]
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
            self._check_term()
            try:
                read = await self._read(pool, targets, busy_labelled, index, deployments)
                results.append(await self.reconcile(pool, read))
            except KubeError as exc:
                self._metrics.api_errors.labels(operation="pool", kind=exc.kind).inc()
                self.pool_metrics.reconciles.labels(result="error").inc()
                log.error("pool not reconciled", extra={"pool": pool.name, "error": str(exc)})
        self._awaiting_release = any(
            r.plan is not None
            and r.plan.waiting_for is not None
            and r.plan.waiting_for.reason is BlockReason.DETACH_NOT_RELEASED
            for r in results
        )
        return results

    async def _read(
        self,
        pool: StoredPool,
        targets: frozenset[str],
        busy_labelled: list[PodFacts],
        index: PodIndex | None,
        deployments: Mapping[str, DeploymentFacts] | None,
    ) -> PoolRead:
        """What the pool's plan needs from the API (its own spec only says what to read)."""
        read = PoolRead(
            name=pool.name,
            generation=pool.generation,
            spec=pool.spec,
            status=pool.status,
            deployment=None,
            hpa_targets=targets,
            busy_labelled=tuple(busy_labelled),
        )
        try:
            name = parse_pool_spec(pool.spec).deployment_name
        except PoolSpecError:
            return read  # the plan says what is wrong
        if deployments is not None:
            deployment = deployments.get(name)
        else:
            deployment = await self._pools.get_deployment(name)
        if deployment is None:
            return read
        jibri = self._jibri_selector
        try:
            selector = label_selector(deployment.selector)
            if index is not None and jibri is not None and selector.implies(jibri):
                selected = index.matching(selector)
            else:
                selected = await self._pools.list_pods(selector.query())
        except SelectorError:
            selected = []  # the plan refuses the selector
        return PoolRead(
            name=pool.name,
            generation=pool.generation,
            spec=pool.spec,
            status=pool.status,
            deployment=deployment,
            hpa_targets=targets,
            selected=tuple(selected),
            busy_labelled=tuple(busy_labelled),
        )

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

    async def _hpa_targets(self) -> frozenset[str]:
        try:
            return frozenset(
                t.name for t in await self._pools.scale_targets() if t.kind == "Deployment"
            )
        except (Forbidden, NotFound) as exc:
            if not self._hpa_forbidden_logged:
                log.warning(
                    "cannot list HorizontalPodAutoscalers: a conflicting HPA goes unnoticed",
                    extra={"error": str(exc)},
                )
                self._hpa_forbidden_logged = True
            return frozenset()

    async def _probe(self, pod: PodFacts) -> ProbeResult:
        if not pod.pod_ips:
            return Failed(ProbeFailure.NO_IP)
        self._metrics.probes.inc()
        return await self._prober.probe(pod.pod_ips[0])

    # -- one pool ---------------------------------------------------------------------------

    async def reconcile(self, pool: StoredPool, read: PoolRead) -> RoundResult:
        """Plan one pool (probing what the plan asks for) and apply the plan."""
        now = self._wall_clock()
        memory = self._memory.get(pool.name) or TermMemory.from_status(pool.status)
        plan = self._plan(read, memory, None, now)
        if plan.probe:
            answers = await asyncio.gather(*(self._probe(p) for p in plan.probe))
            probes = {p.uid: a for p, a in zip(plan.probe, answers, strict=True)}
            plan = self._plan(read, memory, probes, now)
        result = await self._apply(pool, plan)
        if plan.outlook is not None and pool.name not in self._builds:
            self._builds[pool.name] = asyncio.create_task(
                self._build(pool.name, plan.outlook, self._term)
            )
        return result

    async def _build(self, pool: str, request: OutlookRequest, term: int) -> None:
        """Build a pool's outlook on a worker thread; hand it to the pool's memory on the
        loop (if the term that asked still runs), and look at the pool again."""
        started = self._monotonic()
        try:
            outlook = await asyncio.to_thread(self._build_outlook, request)
        except Exception as exc:  # the pool goes on with the outlook it has, or the reactive
            self.pool_metrics.forecast_build_failures.labels(pool).inc()
            log.error("forecast outlook not built", extra={"pool": pool, "error": repr(exc)})
            return
        finally:
            if self._builds.get(pool) is asyncio.current_task():
                del self._builds[pool]
        self.pool_metrics.forecast_build_seconds.observe(self._monotonic() - started)
        memory = self._memory.get(pool)
        if term != self._term or memory is None:
            return  # a later term builds its own
        self._memory[pool] = memory.with_outlook(outlook)
        self.trigger()

    async def flush(self) -> None:
        """Store every pool's forecast history now: for a leader about to give the Lease up,
        so its successor goes on from this moment (call it after `run` has ended)."""
        now = self._wall_clock()
        for name, memory in list(self._memory.items()):
            patch = stored_history(memory, now=now)
            if patch is None or self._dry_run:
                continue
            try:
                await self._pools.patch_status(name=name, status=patch)
            except KubeError as exc:
                self._metrics.api_errors.labels(operation="pool", kind=exc.kind).inc()
                log.warning("forecast history not stored", extra={"pool": name, "error": str(exc)})
                continue
            log.info(
                "forecast history stored",
                extra={"pool": name, "bytes": len(patch["startHistory"])},
            )

    def _plan(
        self,
        read: PoolRead,
        memory: TermMemory,
        probes: Mapping[str, ProbeResult] | None,
        now: datetime,
    ) -> PoolPlan:
        return plan_pool(
            read,
            memory=memory,
            probes=probes,
            now=now,
            busy_labels=self._busy_labels,
            graceful=self._internal_api is not None,
            settle=timedelta(seconds=self._period),
            day_seconds=self._day_seconds,
        )

    async def _apply(self, pool: StoredPool, plan: PoolPlan) -> RoundResult:
        self._check_term()
        for event in plan.events:
            log.warning(
                "pool %s: %s",
                pool.name,
                event.reason,
                extra={"pool": pool.name, "reason": event.reason, "detail": event.message},
            )
            await self._event(pool, event)
        if plan.problem is not None:
            self._memory[pool.name] = plan.memory
            await self._patch_status(pool, plan.status)
            self._export_problem(pool.name, plan.problem)
            self.pool_metrics.reconciles.labels(result="problem").inc()
            return RoundResult(pool.name, plan.problem, None, None, plan=plan)

        detached = 0
        for pod in plan.detach:
            self.pool_metrics.busy_found.labels(pool.name).inc()
            log.info(
                "spare %s found BUSY on the way to a scale-down: detached, kept recording",
                pod.name,
                extra={"pool": pool.name, "pod": pod.name, "busy_found": 1},
            )
            # The actuator logs and counts a failed write; the next round finds it BUSY again.
            with contextlib.suppress(KubeError):
                await self._actuator.apply(Detach(Reason.MISSED_BUSY), pod, source=Source.SWEEP)
                detached += 1
        self._check_term()
        asked = await self._shut_down(pool.name, plan)
        self._memory[pool.name] = plan.memory.with_asked(asked)
        for pod, cost in plan.marks:
            self._check_term()
            await self._mark(pod, cost)
        written: int | None = None
        if plan.replicas is not None:
            self._check_term()
            written = await self._scale(pool, plan, plan.replicas)
        refused = plan.replicas is not None and written is None
        status = plan.status_if_unscaled if refused else plan.status
        await self._patch_status(pool, status)
        if written is not None and plan.scale_event is not None:
            await self._event(pool, plan.scale_event)
        self._export(pool.name, plan)
        self.pool_metrics.reconciles.labels(result="ok").inc()
        return RoundResult(
            pool.name,
            None,
            plan.decision,
            written,
            detached,
            plan=plan,
            asked={p.name: asked[p.uid].outcome for p in plan.shut_down if p.uid in asked},
        )

    async def _shut_down(self, pool: str, plan: PoolPlan) -> dict[str, Asked]:
        """Ask the plan's spares to exit once idle; the answers, by pod uid."""
        if not plan.shut_down or self._internal_api is None:
            return {}
        if self._dry_run:
            self.pool_metrics.graceful_shutdowns.labels(pool, "dry-run").inc(len(plan.shut_down))
            log.info(
                "graceful shutdown (dry run)",
                extra={"pool": pool, "pods": [p.name for p in plan.shut_down]},
            )
            return {}
        api = self._internal_api
        at = self._wall_clock()
        answers = await asyncio.gather(
            *(api.graceful_shutdown(p.pod_ips[0]) for p in plan.shut_down if p.pod_ips)
        )
        outcomes = {}
        for pod, (outcome, detail) in zip(
            [p for p in plan.shut_down if p.pod_ips], answers, strict=True
        ):
            outcomes[pod.uid] = Asked(
                at=at, restart_count=pod.restart_count, outcome=outcome, detail=detail
            )
            self.pool_metrics.graceful_shutdowns.labels(pool, outcome.value).inc()
        log.info(
            "asked %d spares to shut down gracefully",
            len(outcomes),
            extra={
                "pool": pool,
                "pods": {
                    p.name: outcomes[p.uid].outcome.value
                    for p in plan.shut_down
                    if p.uid in outcomes
                },
            },
        )
        return outcomes

    async def _mark(self, pod: PodFacts, cost: str | None) -> None:
        if self._dry_run:
            return
        with contextlib.suppress(NotFound):
            await self._pools.annotate_pod(
                name=pod.name, uid=pod.uid, annotations={ANNOTATION_DELETION_COST: cost}
            )

    async def _scale(self, pool: StoredPool, plan: PoolPlan, replicas: int) -> int | None:
        deployment, decision, observation = plan.deployment, plan.decision, plan.observation
        assert deployment is not None
        assert decision is not None
        assert observation is not None
        direction = "up" if replicas > deployment.replicas else "down"
        if self._dry_run:
            log.info(
                "scale (dry run)",
                extra={"pool": pool.name, "from": deployment.replicas, "replicas": replicas},
            )
            self.pool_metrics.scale_writes.labels(pool.name, direction, "dry-run").inc()
            return None
        name = deployment.name
        started = self._monotonic()
        try:
            await self._pools.scale(
                name=name, replicas=replicas, resource_version=deployment.resource_version
            )
        except (Conflict, NotFound) as exc:
            self.pool_metrics.scale_writes.labels(pool.name, direction, "conflict").inc()
            log.info("scale refused; deciding again", extra={"pool": pool.name, "error": str(exc)})
            self.trigger()  # a fresh read: the marks are checked again, or cleared
            return None
        except KubeError:
            self.pool_metrics.scale_writes.labels(pool.name, direction, "failed").inc()
            raise
        self.pool_metrics.scale_writes.labels(pool.name, direction, "done").inc()
        log.info(
            "scaled %s",
            name,
            extra={
                "pool": pool.name,
                "deployment": name,
                "from": deployment.replicas,
                "replicas": replicas,
                "bound": decision.bound,
                "busy": observation.busy,
                "spare": observation.spare_ready,
                "picks": list(plan.picks),
                "method": plan.graceful.reason if plan.graceful is not None else "",
                "ms": round((self._monotonic() - started) * 1000, 1),
            },
        )
        return replicas

    async def _event(self, pool: StoredPool, event: PoolEvent) -> None:
        if self._dry_run:
            return
        try:
            await self._pools.record_event(
                pool=pool, reason=event.reason, message=event.message, warning=event.warning
            )
        except KubeError as exc:
            self._metrics.events_failed.inc()
            log.warning("event not recorded", extra={"pool": pool.name, "error": str(exc)})

    async def _patch_status(self, pool: StoredPool, status: Mapping[str, object]) -> None:
        changed = status_patch(pool.status, status)
        if not changed or self._dry_run:
            return
        log.debug("pool status", extra={"pool": pool.name, "changed": sorted(changed)})
        await self._pools.patch_status(name=pool.name, status=changed)

    # -- metrics ----------------------------------------------------------------------------

    def _export_problem(self, name: str, problem: Problem) -> None:
        self.pool_metrics.set(self.pool_metrics.problems, name, problem.value, value=1)

    def _export(self, name: str, plan: PoolPlan) -> None:
        decision, observation, spec = plan.decision, plan.observation, plan.spec
        assert decision is not None
        assert observation is not None
        assert spec is not None
        m = self.pool_metrics
        m.set(m.pods, name, "spare", value=observation.spare_ready)
        m.set(m.pods, name, "starting", value=observation.starting)
        m.set(m.pods, name, "busy", value=observation.busy)
        m.set(m.pods, name, "leaving", value=int(plan.status.get("leaving") or 0))
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
        for block in BlockReason:
            held = plan.blocked is not None and plan.blocked.reason is block
            m.set(m.scale_down_blocked, name, block.value, value=1 if held else 0)
        m.set(m.exhausted, name, "SpareExhausted", value=1 if decision.spare_exhausted else 0)
        m.set(m.exhausted, name, "BudgetExhausted", value=1 if decision.budget_exhausted else 0)
        report = plan.forecast
        if report is None:
            m.drop(name, *m.forecast_gauges)
        else:
            answer = report.answer
            m.set(m.forecast_spares, name, value=answer.spares if answer is not None else 0)
            m.set(m.forecast_expected, name, value=answer.expected if answer is not None else 0)
            m.set(m.forecast_recommended, name, value=report.recommended)
            m.set(m.forecast_applied, name, value=1 if report.mode is DemandMode.APPLY else 0)
            m.set(m.forecast_references, name, value=report.reference_days)
            m.set(m.forecast_history_age, name, value=report.history_age)
            m.set(m.forecast_history_bytes, name, value=report.history_bytes)
            if report.stored:
                log.debug(
                    "forecast history stored",
                    extra={"pool": name, "bytes": report.history_bytes},
                )
        for event in plan.events:
            if event.reason == "ForecastHistoryReset":
                m.forecast_history_resets.labels(name).inc()
        tick = self._monotonic()
        # Created at 0 on the first round, so that rate() has a series before the first dry spell.
        zero_spare = m.zero_spare_seconds.labels(name)
        last = self._last_round.get(name)
        if last is not None and decision.spare_exhausted:
            zero_spare.inc(max(0.0, tick - last))
        self._last_round[name] = tick
