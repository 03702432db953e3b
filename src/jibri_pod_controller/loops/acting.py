"""The one place where a decided action becomes API calls, a metric, an Event and a log line.

Dry-run lives here and nowhere else: the action is logged and counted with result ``dry-run``
and nothing is written.

The detach is a single JSON merge patch that sets the busy labels, the cluster autoscaler's
safe-to-evict annotation, and two bookkeeping annotations (when the pod became busy, and its
restart count then, which the restarted-while-busy rule compares against). It carries the pod's
uid, so a newer pod reusing the name is never touched. Deletes carry a uid precondition; a 404
means someone else (another replica, the sweeper, a human) already did it, which is success.
Events are recorded in the background: they must never delay Jibri's answer; without the
permission to create Events (``events = False``) none is attempted, so a Role without it sees
no refused writes.

A detach only works if the busy labels take the pod out of its ReplicaSet's selector. When
the actuator can read ReplicaSets (``replica_sets``), it checks that right after the write:
if the owning ReplicaSet still selects the relabelled pod, the pod is not detached at all (the
Deployment would still scale it down, and no replacement is made), so it is reported (an error
line, a Warning Event, ``detach_ineffective_total``) with result ``not-detached`` instead of
being counted as done.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from jibri_pod_controller.adapters.kube import (
    Cluster,
    Conflict,
    Invalid,
    KubeError,
    NotFound,
    Unavailable,
)
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.core.decisions import Action, Delete, Detach, Nothing
from jibri_pod_controller.core.pods import (
    ANNOTATION_BUSY_SINCE,
    ANNOTATION_RESTARTS_AT_BUSY,
    ANNOTATION_SAFE_TO_EVICT,
    ANNOTATION_SESSION_ON,
    ANNOTATION_SESSIONS_WATCHED,
    PodFacts,
    label_selector_matches,
)
from jibri_pod_controller.core.pools import ANNOTATION_DETACHED_FROM, deployment_of

log = logging.getLogger("jibri_pod_controller.actions")


class Result(StrEnum):
    DONE = "done"
    DRY_RUN = "dry-run"
    GONE = "gone"
    """The pod was already gone (or replaced by a newer pod of the same name)."""
    NONE = "none"
    FAILED = "failed"
    NOT_DETACHED = "not-detached"
    """Written, but the pod's ReplicaSet still selects it: the Deployment's selector matches
    the busy labels."""


class Source(StrEnum):
    WEBHOOK = "webhook"
    SWEEP = "sweep"


def detach_patch(
    *,
    busy_labels: Mapping[str, str],
    restart_count: int,
    now: datetime,
    detached_from: str | None = None,
    watch_sessions: bool = False,
) -> dict[str, Any]:
    """The merge patch that takes a pod out of its Deployment and protects it.

    ``detached_from`` (the Deployment, when the pod has one) keeps the busy pod counted for
    that Deployment's JibriPool once its labels no longer match the selector.
    ``watch_sessions`` (stuck-BUSY detection on) marks the pod as one whose session ON is
    recorded, in the same write.
    """
    annotations = {
        ANNOTATION_SAFE_TO_EVICT: "false",
        ANNOTATION_BUSY_SINCE: now.astimezone(UTC).isoformat(timespec="seconds"),
        ANNOTATION_RESTARTS_AT_BUSY: str(restart_count),
    }
    if detached_from is not None:
        annotations[ANNOTATION_DETACHED_FROM] = detached_from
    if watch_sessions:
        annotations[ANNOTATION_SESSIONS_WATCHED] = "true"
    return {"metadata": {"labels": dict(busy_labels), "annotations": annotations}}


class ReplicaSetSelectors(Protocol):
    async def __call__(self, name: str, uid: str) -> Mapping[str, Any] | None:
        """The ``spec.selector`` of the named ReplicaSet, or None when it is gone (or the name
        now belongs to another ReplicaSet than ``uid``)."""
        ...


@dataclass
class Actuator:
    cluster: Cluster
    metrics: Metrics
    busy_labels: Mapping[str, str]
    dry_run: bool = False
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    sweep_attempts: int = 3
    """Tries for a sweep's write when the API is transiently unavailable (429, 5xx, timeout).
    Webhook writes are tried once: Jibri's next resend is their retry, and it must be answered
    within 2 s."""
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    jitter: Callable[[], float] = random.random
    on_change: Callable[[], None] | None = None
    """Called after each detach or delete that was written (the pool loop's trigger)."""

    events: bool = True
    """Record Events (off when the Role does not allow creating them)."""
    replica_sets: ReplicaSetSelectors | None = None
    """Reads a ReplicaSet's selector, for the check that a detach took the pod out of it."""
    owner_check_timeout: float = 0.5
    watch_sessions: bool = False
    """Stuck-BUSY detection is on: detaches mark the pod, and session ONs are recorded."""

    event_concurrency: int = 4
    """Events are recorded in the background, a few at a time, so that a burst of detaches
    keeps the API client's connections for the writes that matter."""

    def __post_init__(self) -> None:
        self._background: set[asyncio.Task[None]] = set()
        self._event_slots = asyncio.Semaphore(self.event_concurrency)

    async def apply(
        self, action: Action, pod: PodFacts, *, source: Source, started: float | None = None
    ) -> Result:
        """Carry out ``action`` on ``pod``. Raises `KubeError` when the API call failed."""
        begin = time.monotonic() if started is None else started
        kind = action_kind(action)
        if isinstance(action, Nothing):
            self._count(kind, action.reason, source, Result.NONE)
            return Result.NONE
        written: PodFacts | None = None
        if self.dry_run:
            result = Result.DRY_RUN
        else:
            try:
                result, written = await self._write_with_retries(action, pod, source)
            except KubeError as exc:
                self.metrics.api_errors.labels(operation=kind, kind=exc.kind).inc()
                self._count(kind, action.reason, source, Result.FAILED)
                log.log(
                    logging.INFO if isinstance(exc, Conflict) else logging.ERROR,
                    "%s failed",
                    kind,
                    extra={
                        "pod": pod.name,
                        "action": kind,
                        "reason": action.reason,
                        "source": source,
                        "error": str(exc),
                    },
                )
                raise
        elapsed = time.monotonic() - begin
        if isinstance(action, Detach) and result is Result.DONE:
            self.metrics.detach_latency.observe(elapsed)
            if written is not None and not await self.left_its_replica_set(written, where="detach"):
                result = Result.NOT_DETACHED
        self._count(kind, action.reason, source, result)
        log.info(
            "%s %s",
            kind,
            pod.name,
            extra={
                "pod": pod.name,
                "uid": pod.uid,
                "action": kind,
                "reason": action.reason,
                "source": source,
                "result": result,
                "ms": round(elapsed * 1000, 1),
            },
        )
        if result is Result.DONE:
            self._record_event(action, pod, source)
            if self.on_change is not None:
                self.on_change()
        elif result is Result.NOT_DETACHED:
            self._event_in_background(
                pod,
                "JibriNotDetached",
                "The busy labels did not take this pod out of its ReplicaSet: the Deployment's "
                "selector matches them. Change the Deployment's selector or JIBRI_BUSY_LABELS.",
                warning=True,
            )
        return result

    async def record_session_on(self, pod: PodFacts, *, started: float) -> Result:
        """Write down the first session ON on ``pod``: one merge patch of one annotation,
        uid-preconditioned and without a resourceVersion (a concurrent detach is no conflict).
        Raises `KubeError` when the write failed."""
        reason = "session-on"
        if self.dry_run:
            result = Result.DRY_RUN
        else:
            patch = {
                "metadata": {
                    "annotations": {
                        ANNOTATION_SESSION_ON: self.wall_clock()
                        .astimezone(UTC)
                        .isoformat(timespec="seconds")
                    }
                }
            }
            try:
                await self.cluster.patch_pod(name=pod.name, uid=pod.uid, patch=patch)
                result = Result.DONE
            except NotFound:
                result = Result.GONE
            except Invalid as exc:
                if "metadata.uid" not in str(exc):
                    self._session_write_failed(pod, exc)
                    raise
                result = Result.GONE
            except KubeError as exc:
                self._session_write_failed(pod, exc)
                raise
        self._count("annotate", reason, Source.WEBHOOK, result)
        log.info(
            "annotate %s",
            pod.name,
            extra={
                "pod": pod.name,
                "uid": pod.uid,
                "action": "annotate",
                "reason": reason,
                "source": Source.WEBHOOK,
                "result": result,
                "ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return result

    def _session_write_failed(self, pod: PodFacts, exc: KubeError) -> None:
        self.metrics.api_errors.labels(operation="annotate", kind=exc.kind).inc()
        self._count("annotate", "session-on", Source.WEBHOOK, Result.FAILED)
        log.error(
            "annotate failed",
            extra={
                "pod": pod.name,
                "action": "annotate",
                "reason": "session-on",
                "error": str(exc),
            },
        )

    async def left_its_replica_set(self, pod: PodFacts, *, where: str) -> bool:
        """False when ``pod`` (busy-labelled) is still selected by its owning ReplicaSet.

        True when it is not, when it has no ReplicaSet, or when that cannot be checked (no
        permission, the ReplicaSet gone, an API error: the detach itself succeeded).
        """
        if self.replica_sets is None or pod.owner_kind != "ReplicaSet" or not pod.owner_name:
            return True
        try:
            # Bounded: the write is done; the check must not eat a webhook's answer budget.
            async with asyncio.timeout(self.owner_check_timeout):
                selector = await self.replica_sets(pod.owner_name, pod.owner_uid or "")
        except TimeoutError:
            self.metrics.api_errors.labels(operation="get-replicaset", kind="timeout").inc()
            return True
        except KubeError as exc:
            self.metrics.api_errors.labels(operation="get-replicaset", kind=exc.kind).inc()
            return True
        if selector is None or not label_selector_matches(selector, pod.labels):
            return True
        self.metrics.detach_ineffective.labels(where=where).inc()
        log.error(
            "busy labels do not take the pod out of its ReplicaSet: its Deployment's selector "
            "matches them, so the pod stays in the Deployment (no replacement is made, and a "
            "scale-down or rollout may kill the recording)",
            extra={
                "pod": pod.name,
                "replicaset": pod.owner_name,
                "selector": dict(selector),
                "where": where,
            },
        )
        return False

    async def _write_with_retries(
        self, action: Detach | Delete, pod: PodFacts, source: Source
    ) -> tuple[Result, PodFacts | None]:
        attempts = self.sweep_attempts if source is Source.SWEEP else 1
        for attempt in range(1, attempts + 1):
            try:
                return await self._write(action, pod)
            except Unavailable as exc:
                if attempt == attempts:
                    raise
                # Bounded, jittered backoff; a server's Retry-After is honoured up to 10 s.
                base = exc.retry_after if exc.retry_after is not None else 0.5 * 2**attempt
                await self.sleep(min(10.0, base) * (0.5 + self.jitter()))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write(
        self, action: Detach | Delete, pod: PodFacts
    ) -> tuple[Result, PodFacts | None]:
        """The result, and the pod as the API server answered a patch."""
        if isinstance(action, Detach):
            patch = detach_patch(
                busy_labels=self.busy_labels,
                restart_count=pod.restart_count,
                now=self.wall_clock(),
                detached_from=deployment_of(pod),
                watch_sessions=self.watch_sessions,
            )
            try:
                patched = await self.cluster.patch_pod(
                    name=pod.name, uid=pod.uid, patch=patch, resource_version=pod.resource_version
                )
            except NotFound:
                return Result.GONE, None
            except Invalid as exc:
                if "metadata.uid" in str(exc):
                    return Result.GONE, None  # the name now holds a newer pod: never relabel it
                raise
            return Result.DONE, patched
        try:
            # The resourceVersion makes a duplicate (the same EXPIRED at two replicas) fail
            # with 409 instead of writing again to a pod that is already terminating.
            deleted = await self.cluster.delete_pod(
                name=pod.name, uid=pod.uid, resource_version=pod.resource_version
            )
        except Conflict as exc:
            if "UID" in str(exc):
                return Result.GONE, None  # the name now holds a newer pod: never delete it
            raise  # changed since read: the caller reads again and decides again
        return (Result.DONE if deleted else Result.GONE), None

    def _count(self, kind: str, reason: str, source: Source, result: Result) -> None:
        self.metrics.actions.labels(action=kind, reason=reason, source=source, result=result).inc()

    def _record_event(self, action: Detach | Delete, pod: PodFacts, source: Source) -> None:
        if isinstance(action, Detach):
            reason, message = (
                "JibriDetached",
                (
                    f"Jibri is busy ({action.reason}, via {source}): detached from its Deployment "
                    "and protected from eviction"
                ),
            )
        else:
            reason, message = "JibriDeleted", f"Deleted: {action.reason} (via {source})"
        self._event_in_background(pod, reason, message)

    def _event_in_background(
        self, pod: PodFacts, reason: str, message: str, *, warning: bool = False
    ) -> None:
        if not self.events:
            return
        task = asyncio.create_task(self._event(pod, reason, message, warning))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _event(self, pod: PodFacts, reason: str, message: str, warning: bool) -> None:
        try:
            async with self._event_slots:
                await self.cluster.record_event(
                    pod=pod, reason=reason, message=message, warning=warning
                )
        except Exception as exc:  # an Event is never worth more than a log line
            self.metrics.events_failed.inc()
            log.warning("event not recorded", extra={"pod": pod.name, "error": str(exc)})

    async def drain(self) -> None:
        """Wait for background Event writes (on shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def action_kind(action: Action) -> str:
    """``detach``, ``delete`` or ``none``: the name in metrics and log lines."""
    if isinstance(action, Detach):
        return "detach"
    if isinstance(action, Delete):
        return "delete"
    return "none"
