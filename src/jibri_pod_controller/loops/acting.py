"""The one place where a decided action becomes API calls, a metric, an Event and a log line.

Dry-run lives here and nowhere else: the action is logged and counted with result ``dry-run``
and nothing is written.

The detach is a single JSON merge patch that sets the busy labels, the cluster autoscaler's
safe-to-evict annotation, and two bookkeeping annotations (when the pod became busy, and its
restart count then, which the restarted-while-busy rule compares against). It carries the pod's
uid, so a newer pod reusing the name is never touched. Deletes carry a uid precondition; a 404
means someone else (another replica, the sweeper, a human) already did it, which is success.
Events are recorded in the background: they must never delay Jibri's answer.
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
from typing import Any

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
    PodFacts,
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


class Source(StrEnum):
    WEBHOOK = "webhook"
    SWEEP = "sweep"


def detach_patch(
    *,
    busy_labels: Mapping[str, str],
    restart_count: int,
    now: datetime,
    detached_from: str | None = None,
) -> dict[str, Any]:
    """The merge patch that takes a pod out of its Deployment and protects it.

    ``detached_from`` (the Deployment, when the pod has one) keeps the busy pod counted for
    that Deployment's JibriPool once its labels no longer match the selector.
    """
    annotations = {
        ANNOTATION_SAFE_TO_EVICT: "false",
        ANNOTATION_BUSY_SINCE: now.astimezone(UTC).isoformat(timespec="seconds"),
        ANNOTATION_RESTARTS_AT_BUSY: str(restart_count),
    }
    if detached_from is not None:
        annotations[ANNOTATION_DETACHED_FROM] = detached_from
    return {"metadata": {"labels": dict(busy_labels), "annotations": annotations}}


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
        if self.dry_run:
            result = Result.DRY_RUN
        else:
            try:
                result = await self._write_with_retries(action, pod, source)
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
        return result

    async def _write_with_retries(
        self, action: Detach | Delete, pod: PodFacts, source: Source
    ) -> Result:
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

    async def _write(self, action: Detach | Delete, pod: PodFacts) -> Result:
        if isinstance(action, Detach):
            patch = detach_patch(
                busy_labels=self.busy_labels,
                restart_count=pod.restart_count,
                now=self.wall_clock(),
                detached_from=deployment_of(pod),
            )
            try:
                await self.cluster.patch_pod(
                    name=pod.name, uid=pod.uid, patch=patch, resource_version=pod.resource_version
                )
            except NotFound:
                return Result.GONE
            except Invalid as exc:
                if "metadata.uid" in str(exc):
                    return Result.GONE  # the name now holds a newer pod: never relabel it
                raise
            return Result.DONE
        try:
            # The resourceVersion makes a duplicate (the same EXPIRED at two replicas) fail
            # with 409 instead of writing again to a pod that is already terminating.
            deleted = await self.cluster.delete_pod(
                name=pod.name, uid=pod.uid, resource_version=pod.resource_version
            )
        except Conflict as exc:
            if "UID" in str(exc):
                return Result.GONE  # the name now holds a newer pod: never delete it
            raise  # changed since read: the caller reads again and decides again
        return Result.DONE if deleted else Result.GONE

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
        task = asyncio.create_task(self._event(pod, reason, message))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _event(self, pod: PodFacts, reason: str, message: str) -> None:
        try:
            async with self._event_slots:
                await self.cluster.record_event(pod=pod, reason=reason, message=message)
        except KubeError as exc:
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
