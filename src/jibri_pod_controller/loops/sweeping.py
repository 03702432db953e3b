"""The sweep: list every Jibri pod, probe each one, reconcile what webhooks missed.

Runs only on the elected replica. Each pod is handled in its own task (bounded by the prober's
concurrency), and a failure in one (an API error on its delete, say) is logged and counted
without touching the others. A failed list ends the sweep early; the loop simply tries again
at the next interval. Nothing here can crash the process.

A sweep counts as successful (``last_successful_sweep_timestamp_seconds``) only when it saw
every Jibri pod fresh: from the watch-fed cache while its watch is live, else from a complete
list. A cache whose watch broke is not synced and is never walked, so a frozen view of the
pods cannot pass for a healthy sweep. A leader whose sweeps keep coming back incomplete is
blind (its lists fail: a broken connection, a proxy that mangles answers) while it still
renews the Lease, so after each sweep ``on_incomplete`` hears how many sweeps of this term in a
row were incomplete, and the owner gives the Lease up (app.py): a standby whose connection
works then sweeps.

Unresponsive busy pods (not Ready, Jibri silent: a crash-looping container or a lost node)
are timed here, from the first sweep of this leader that saw them so, without a break, and
counted in ``unresponsive_busy_pods``. Only when UNRESPONSIVE_BUSY_POD_SECONDS is set does
the decision delete one that stayed so for that long. Each Lease term starts the clocks
again (`run`), even on a replica that held the Lease before: what it saw in an earlier term
says nothing of the time in between. Conservative, never early.

Stuck busy pods (BUSY with no session ever ON, see `is_stuck_busy`) need no clock here: the
pod's own annotations say when it was detached and whether a session turned ON, whichever
replica received the session webhook. They are counted in ``stuck_busy_pods``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from jibri_pod_controller.adapters.kube import Cluster, KubeError
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.adapters.probing import Prober
from jibri_pod_controller.core.decisions import (
    Delete,
    Failed,
    Nothing,
    Policy,
    ProbeResult,
    Reason,
    Reported,
    decide_on_sweep,
    is_stuck_busy,
    is_unresponsive,
    probe_order,
)
from jibri_pod_controller.core.jibri import BusyStatus
from jibri_pod_controller.core.pods import Phase, PodFacts, has_labels
from jibri_pod_controller.loops.acting import Actuator, Source

log = logging.getLogger("jibri_pod_controller.sweep")


@dataclass(frozen=True)
class SweepReport:
    pods: int
    probed: int
    probe_failures: int
    actions: Mapping[str, int]
    errors: int
    listed_all: bool
    seconds: float
    unresponsive: int = 0
    stuck: int = 0


class _Handled(NamedTuple):
    """What one pod's handling came to, for the sweep's report."""

    role: str
    reported: str
    action: str
    probe_failed: bool
    unresponsive: bool
    stuck: bool


class Sweeper:
    def __init__(
        self,
        *,
        cluster: Cluster,
        prober: Prober,
        actuator: Actuator,
        metrics: Metrics,
        selector: str,
        busy_labels: Mapping[str, str],
        policy: Policy,
        page_size: int,
        snapshot: Callable[[], list[PodFacts] | None] | None = None,
        workers: int = 100,
        on_incomplete: Callable[[int], None] | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cluster = cluster
        self._prober = prober
        self._actuator = actuator
        self._metrics = metrics
        self._selector = selector
        self._busy_labels = busy_labels
        self._policy = policy
        self._page_size = page_size
        self._snapshot = snapshot
        self._workers = workers
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._unresponsive_since: dict[str, float] = {}
        """Pod uid -> when this sweeper first saw it unresponsive (without a break since)."""
        self._silent: set[str] = set()
        """Uids of the pods whose last probe failed: the next sweep probes them first."""
        self._on_incomplete = on_incomplete
        self._incomplete = 0
        """Sweeps of this run (this leader's term) in a row that could not list every pod."""

    async def run(self, interval: float) -> None:
        """Sweep now, then every ``interval`` seconds, until cancelled. Each call is a new
        Lease term: the clocks of an earlier one are dropped."""
        self._incomplete = 0
        self._metrics.sweeps_incomplete_in_a_row.set(0)
        self._unresponsive_since.clear()
        self._silent.clear()
        while True:
            started = time.monotonic()
            report = await self.sweep_once()
            self._incomplete = 0 if report.listed_all else self._incomplete + 1
            self._metrics.sweeps_incomplete_in_a_row.set(self._incomplete)
            if self._incomplete and self._on_incomplete is not None:
                self._on_incomplete(self._incomplete)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def sweep_once(self) -> SweepReport:
        started = time.monotonic()
        pods, listed_all = await self._collect()
        results: list[_Handled | BaseException] = []
        queue = iter(probe_order(pods, self._silent))

        async def worker() -> None:
            # A fixed pool, as wide as the probes may go, takes pods one at a time from the
            # shared iterator: no task per pod, so 5,000 pods cost 100 coroutines, not 5,000.
            for pod in queue:
                try:
                    results.append(await self._handle(pod))
                except Exception as exc:  # one bad pod never stops the others
                    results.append(exc)

        await asyncio.gather(*(worker() for _ in range(max(1, min(self._workers, len(pods))))))
        seconds = time.monotonic() - started
        if listed_all:  # forget the clocks of pods that are gone
            seen = {pod.uid for pod in pods}
            for uid in set(self._unresponsive_since) - seen:
                del self._unresponsive_since[uid]
            self._silent &= seen
        return self._report(results, listed_all, seconds)

    async def _collect(self) -> tuple[list[PodFacts], bool]:
        """Every Jibri pod, and whether all of them could be listed.

        From the watch-fed cache when it is synced, else a paginated list; a list that fails
        part-way still returns the pods of the pages it got.
        """
        cached = self._snapshot() if self._snapshot is not None else None
        if cached is not None:
            return cached, True
        pods: list[PodFacts] = []
        try:
            async for pod in self._cluster.list_pods(
                selector=self._selector, page_size=self._page_size
            ):
                pods.append(pod)
        except KubeError as exc:
            self._metrics.api_errors.labels(operation="list", kind=exc.kind).inc()
            log.error("sweep could not list Jibri pods", extra={"error": str(exc)})
            return pods, False
        except Exception as exc:  # a malformed pod in a page must not kill the loop
            log.exception("sweep could not list Jibri pods", extra={"error": str(exc)})
            return pods, False
        return pods, True

    async def _handle(self, pod: PodFacts) -> _Handled:
        """Probe and reconcile one pod."""
        role = "busy" if has_labels(pod.labels, self._busy_labels) else "spare"
        probe: ProbeResult | None = None
        if pod.phase is Phase.RUNNING and pod.pod_ips and not pod.deleting:
            self._metrics.probes.inc()
            probe = await self._prober.probe(pod.pod_ips[0])
        reported = (
            probe.status.value
            if isinstance(probe, Reported)
            else (probe.failure.value if isinstance(probe, Failed) else "not-probed")
        )
        if isinstance(probe, Failed):
            self._metrics.probe_failures.labels(reason=probe.failure).inc()
            self._silent.add(pod.uid)
        else:
            self._silent.discard(pod.uid)
        unresponsive = is_unresponsive(pod=pod, probe=probe, busy_labels=self._busy_labels)
        unresponsive_for = 0.0
        if unresponsive:
            now = self._monotonic()
            unresponsive_for = now - self._unresponsive_since.setdefault(pod.uid, now)
        else:
            self._unresponsive_since.pop(pod.uid, None)
        wall_now = self._wall_clock()
        stuck = is_stuck_busy(
            pod=pod,
            probe=probe,
            busy_labels=self._busy_labels,
            stuck_seconds=self._policy.stuck_seconds,
            now=wall_now,
        )
        action = decide_on_sweep(
            pod=pod,
            probe=probe,
            busy_labels=self._busy_labels,
            policy=self._policy,
            now=wall_now,
            unresponsive_for=unresponsive_for,
        )
        if isinstance(action, Delete) and action.reason in (
            Reason.RESTARTED_WHILE_BUSY,
            Reason.RESTARTED_BEFORE_DETACH,
        ):
            # IDLE, unlike EXPIRED, is not final: the restarted Jibri may have been handed a new
            # recording since the probe. Ask once more, right before deleting.
            confirm = await self._prober.probe(pod.pod_ips[0])
            if confirm != Reported(BusyStatus.IDLE):
                action = Nothing(
                    Reason.RECORDING if isinstance(confirm, Reported) else Reason.NO_ANSWER,
                    attention=True,
                )
        if isinstance(action, Nothing):
            level = (
                logging.WARNING if action.attention or isinstance(probe, Failed) else logging.DEBUG
            )
            log.log(
                level,
                "probed %s",
                pod.name,
                extra={
                    "pod": pod.name,
                    "role": role,
                    "reported": reported,
                    "action": "none",
                    "reason": action.reason,
                    "detail": probe.detail if isinstance(probe, Failed) else "",
                    "unresponsive_seconds": round(unresponsive_for, 1) if unresponsive else None,
                    "stuck_busy": stuck or None,
                },
            )
        # A failed write is logged and counted by the actuator; the next sweep retries.
        with contextlib.suppress(KubeError):
            await self._actuator.apply(action, pod, source=Source.SWEEP)
        kind = type(action).__name__.lower()
        return _Handled(role, reported, kind, isinstance(probe, Failed), unresponsive, stuck)

    def _report(
        self,
        results: list[_Handled | BaseException],
        listed_all: bool,
        seconds: float,
    ) -> SweepReport:
        seen: Tally[tuple[str, str]] = Tally()
        actions: Tally[str] = Tally()
        errors = failures = probed = unresponsive_pods = stuck_pods = 0
        for result in results:
            if isinstance(result, BaseException):
                errors += 1
                log.error("sweep task failed", exc_info=result)
                continue
            role, reported, kind, failed, unresponsive, stuck = result
            unresponsive_pods += unresponsive and kind != "delete"
            stuck_pods += stuck and kind != "delete"
            seen[(role, reported)] += 1
            actions[kind] += 1
            probed += reported != "not-probed"
            failures += failed
        self._metrics.sweep_duration.observe(seconds)
        self._metrics.sweeps.labels(result="ok" if listed_all else "failed").inc()
        if listed_all:
            self._metrics.last_sweep.set(time.time())
            self._metrics.unresponsive_busy_pods.set(unresponsive_pods)
            self._metrics.stuck_busy_pods.set(stuck_pods)
            self._metrics.jibri_pods.clear()
            for (role, reported), count in seen.items():
                self._metrics.jibri_pods.labels(role=role, reported=reported).set(count)
        report = SweepReport(
            pods=len(results),
            probed=probed,
            probe_failures=failures,
            actions=dict(actions),
            errors=errors,
            listed_all=listed_all,
            seconds=seconds,
            unresponsive=unresponsive_pods,
            stuck=stuck_pods,
        )
        log.info(
            "sweep done",
            extra={
                "pods": report.pods,
                "probed": probed,
                "probe_failures": failures,
                "detached": actions["detach"],
                "deleted": actions["delete"],
                "errors": errors,
                "unresponsive": unresponsive_pods,
                "stuck_busy": stuck_pods,
                "complete": listed_all,
                "ms": round(seconds * 1000, 1),
            },
        )
        return report
