"""The HTTP server: Jibri's webhooks, the probes and the metrics.

Every replica serves webhooks; only the sweeper needs the Lease. A status webhook goes through
cheap checks first and touches the API only when they pass, in this order:

1. the pod name in the path (DNS-1123), 2. the per-source rate limit, 3. the bearer token
(from the headers, before the body is read), 4. the body: size cap, read timeout, strict
schema, 5. ``jibriId`` equals the pod name, 6. the pod itself (from the watch-fed cache, else
one GET): it exists, is a Jibri pod, is not terminating, and the request comes from one of its
``status.podIPs``, 7. the decision, and at most one write.

A session webhook writes nothing, except with stuck-BUSY detection on (``STUCK_BUSY_SECONDS``):
then the first session ON of a pod is written down on it (one annotation, one write), after the
same checks of the pod as a status webhook's.

Any refusal is an answer with a short reason and no write. Jibri waits 2 s and does not retry,
but resends its status every minute; so when the API server is slow or down we answer 503
within the budget and let the next resend try again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from jibri_pod_controller.adapters.kube import Cluster, Conflict, KubeError, Unavailable
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.adapters.tokens import TokenError, Verifier
from jibri_pod_controller.core.config import Settings
from jibri_pod_controller.core.decisions import Action, decide_on_report, records_session_on
from jibri_pod_controller.core.jibri import (
    BusyStatus,
    InvalidMessage,
    SessionState,
    parse_session_report,
    parse_status_report,
)
from jibri_pod_controller.core.limiting import RateLimiter
from jibri_pod_controller.core.pods import PodFacts, is_valid_pod_name
from jibri_pod_controller.loops.acting import Actuator, Source, action_kind
from jibri_pod_controller.loops.watching import PodCache

log = logging.getLogger("jibri_pod_controller.webhook")


class Refusal(Exception):
    """A webhook answered without any write."""

    def __init__(self, code: int, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Report:
    """A webhook whose headers passed and whose body was read (not yet parsed)."""

    pod: str
    body: Any
    source: str
    started: float
    fields: dict[str, Any]
    """The webhook's log line, filled in as the handling goes."""


@dataclass
class Health:
    """Readiness: the API server answered the last check, and permissions are complete."""

    api_ok: bool = False
    missing_permissions: tuple[str, ...] = ()
    shutting_down: bool = False

    @property
    def ready(self) -> bool:
        return self.api_ok and not self.missing_permissions and not self.shutting_down


def _json(code: int, **body: Any) -> web.Response:
    return web.Response(status=code, body=orjson.dumps(body), content_type="application/json")


class WebhookHandler:
    def __init__(
        self,
        *,
        settings: Settings,
        cluster: Cluster,
        actuator: Actuator,
        metrics: Metrics,
        verifier: Verifier | None,
        limiter: RateLimiter,
        cache: PodCache | None = None,
    ) -> None:
        self._s = settings
        self._cache = cache
        self._cluster = cluster
        self._actuator = actuator
        self._metrics = metrics
        self._verifier = verifier
        self._limiter = limiter

    async def status(self, request: web.Request) -> web.Response:
        return await self._handle(request, "status", self._on_status)

    async def session(self, request: web.Request) -> web.Response:
        return await self._handle(request, "session", self._on_session)

    async def _handle(
        self,
        request: web.Request,
        kind: str,
        body_handler: Callable[[Report], Awaitable[dict[str, Any]]],
    ) -> web.Response:
        started = time.monotonic()
        pod = request.match_info.get("pod", "")
        source = request.remote or ""
        fields: dict[str, Any] = {"pod": pod[:253], "kind": kind, "source": source, "status": "-"}
        try:
            self._check_request(pod, source, request)
            body = await self._read_body(request)
            outcome = await body_handler(Report(pod, body, source, started, fields))
            fields.update(outcome)
            code = 200
            response = _json(200, result=outcome.get("result", "ok"))
        except Refusal as refusal:
            code = refusal.code
            self._metrics.webhook_rejections.labels(reason=refusal.reason).inc()
            fields.update(result="refused", reason=refusal.reason, detail=refusal.detail)
            response = _json(code, error=refusal.reason)
        self._metrics.webhooks.labels(kind=kind, status=fields["status"], code=str(code)).inc()
        fields.update(code=code, ms=round((time.monotonic() - started) * 1000, 1))
        level = logging.INFO if code < 500 else logging.WARNING
        log.log(level, "webhook", extra=fields)
        return response

    def _check_request(self, pod: str, source: str, request: web.Request) -> None:
        if not is_valid_pod_name(pod):
            raise Refusal(400, "bad-pod-name")
        if not self._limiter.allow(source):
            raise Refusal(429, "rate-limited")
        if self._verifier is not None:
            try:
                self._verifier.verify(request.headers.get("Authorization"))
            except TokenError as exc:
                self._metrics.token_rejections.labels(reason=str(exc)).inc()
                raise Refusal(401, "unauthenticated", str(exc)) from None
        length = request.content_length
        if length is not None and length > self._s.max_body_bytes:
            raise Refusal(413, "body-too-large")
        if request.content_type != "application/json":
            raise Refusal(415, "not-json")

    async def _read_body(self, request: web.Request) -> Any:
        try:
            async with asyncio.timeout(self._s.read_timeout):
                raw = await request.read()
        except TimeoutError:
            raise Refusal(408, "body-timeout") from None
        except web.HTTPRequestEntityTooLarge:
            raise Refusal(413, "body-too-large") from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Refusal(400, "bad-json") from None

    def _check_jibri_id(self, pod: str, jibri_id: str) -> None:
        if self._s.check_jibri_id and jibri_id != pod:
            raise Refusal(403, "jibri-id-mismatch", f"jibriId {jibri_id[:64]!r}")

    async def _on_session(self, request: Report) -> dict[str, Any]:
        try:
            report = parse_session_report(request.body)
        except InvalidMessage as exc:
            raise Refusal(400, "bad-body", str(exc)) from None
        request.fields["status"] = report.state.value
        self._check_jibri_id(request.pod, report.jibri_id)
        outcome = {
            "session": report.session_id[:64],
            "failure": report.failure_reason or "",
            "result": "accepted",
        }
        if self._s.stuck_busy_seconds > 0 and report.state is SessionState.ON:
            outcome.update(await self._record_session_on(request))
        return outcome

    async def _record_session_on(self, request: Report) -> dict[str, Any]:
        budget = self._s.api_timeout - (time.monotonic() - request.started)
        try:
            async with asyncio.timeout(max(0.05, budget)):
                pod = await self._checked_pod(
                    request.pod, BusyStatus.BUSY, request.source, request.started, fresh=False
                )
                if pod is None:
                    raise Refusal(404, "pod-not-found")
                if not records_session_on(
                    state=SessionState.ON, pod=pod, stuck_seconds=self._s.stuck_busy_seconds
                ):
                    return {"action": "none"}
                result = await self._actuator.record_session_on(pod, started=request.started)
        except TimeoutError:
            self._metrics.api_errors.labels(operation="webhook", kind="timeout").inc()
            raise Refusal(503, "api-timeout") from None
        except Unavailable as exc:
            raise Refusal(503, "api-unavailable", str(exc)) from None
        except KubeError as exc:
            raise Refusal(503, "api-error", str(exc)) from None
        return {"action": "annotate", "result": result.value}

    async def _on_status(self, request: Report) -> dict[str, Any]:
        try:
            report = parse_status_report(request.body)
        except InvalidMessage as exc:
            raise Refusal(400, "bad-body", str(exc)) from None
        status = report.status.busy
        request.fields["status"] = status.value
        self._check_jibri_id(request.pod, report.jibri_id)
        budget = self._s.api_timeout - (time.monotonic() - request.started)
        try:
            async with asyncio.timeout(max(0.05, budget)):
                return await self._reconcile(request.pod, status, request.source, request.started)
        except TimeoutError:
            self._metrics.api_errors.labels(operation="webhook", kind="timeout").inc()
            raise Refusal(503, "api-timeout") from None
        except Unavailable as exc:
            raise Refusal(503, "api-unavailable", str(exc)) from None
        except KubeError as exc:
            raise Refusal(503, "api-error", str(exc)) from None

    async def _load_pod(self, name: str, *, fresh: bool) -> tuple[PodFacts | None, bool]:
        """The pod from the cache when it has it (unless ``fresh``), else from the API server.

        Returns the pod and whether it came from the cache.
        """
        if not fresh and self._cache is not None:
            cached = self._cache.get(name)
            if cached is not None:
                return cached, True
        since = self._cache.mark() if self._cache is not None else 0
        try:
            pod = await self._cluster.get_pod(name)
        except KubeError as exc:
            self._metrics.api_errors.labels(operation="get", kind=exc.kind).inc()
            raise
        if (
            self._cache is not None
            and pod is not None
            and self._s.jibri_selector.matches(pod.labels)
        ):
            self._cache.remember(pod, since=since)
        return pod, False

    async def _checked_pod(
        self, name: str, status: BusyStatus, source: str, started: float, *, fresh: bool
    ) -> PodFacts | None:
        """The pod, checked against the request (Refusal if it fails); None if it is gone.

        A refusal on the cache's word is never final: the cache may lag. A pod it holds
        without any address yet (the Jibri reported before its kubelet's status update reached
        the watch) waits up to half the remaining budget for the watch; otherwise, or then,
        the server is asked.
        """
        pod, cached = await self._load_pod(name, fresh=fresh)
        if cached and pod is not None and not self._passes(pod, source, status):
            if self._cache is not None and self._s.check_source_ip and not pod.pod_ips:
                newer = await self._wait_for_address(self._cache, name, started)
                if newer is not None and self._passes(newer, source, status):
                    return newer
            pod, _ = await self._load_pod(name, fresh=True)
        if pod is not None:
            self._check_pod(pod, source, status)
        return pod

    async def _wait_for_address(
        self, cache: PodCache, name: str, started: float
    ) -> PodFacts | None:
        """What the cache holds for ``name`` after its next change, or None if none came."""
        budget = self._s.api_timeout - (time.monotonic() - started)
        arrived = await cache.next_change(name, within=budget / 2)
        self._metrics.address_waits.labels(outcome="arrived" if arrived else "timed-out").inc()
        return cache.get(name) if arrived else None

    def _passes(self, pod: PodFacts, source: str, status: BusyStatus) -> bool:
        try:
            self._check_pod(pod, source, status)
        except Refusal:
            return False
        return True

    async def _reconcile(
        self, name: str, status: BusyStatus, source: str, started: float
    ) -> dict[str, Any]:
        pod = await self._checked_pod(name, status, source, started, fresh=False)
        for attempt in range(3):
            if pod is None:
                if status is BusyStatus.EXPIRED:
                    return {"action": "none", "reason": "already-gone", "result": "gone"}
                raise Refusal(404, "pod-not-found")
            action: Action = decide_on_report(
                status=status, pod=pod, busy_labels=self._s.busy_labels
            )
            try:
                result = await self._actuator.apply(
                    action, pod, source=Source.WEBHOOK, started=started
                )
            except Conflict:
                if attempt == 2:
                    raise
                # Someone changed the pod since we read it (another replica's detach, say):
                # look again and decide again, so a duplicate becomes a no-op.
                pod = await self._checked_pod(name, status, source, started, fresh=True)
                continue
            return {"action": action_kind(action), "reason": action.reason, "result": result.value}
        raise Refusal(503, "api-conflict")

    def _check_pod(self, pod: PodFacts, source: str, status: BusyStatus) -> None:
        if not self._s.jibri_selector.matches(pod.labels):
            raise Refusal(403, "not-a-jibri-pod")
        if self._s.check_source_ip and source not in pod.pod_ips:
            raise Refusal(403, "wrong-source-address", f"not from {','.join(pod.pod_ips) or '-'}")
        # A terminating pod passes: its Jibri may be recording while the pod's preStop hook
        # waits for the recording to end (a rollout, a drain, kubectl delete). Nothing is
        # written for it (`decide_on_report`: terminating), and the answer is 200, not an
        # error Jibri would log once a minute for as long as the recording lasts.


def build_app(
    *,
    handler: WebhookHandler,
    metrics: Metrics,
    health: Health,
    max_body_bytes: int,
) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if health.ready:
            return web.Response(text="ok\n")
        why = (
            "shutting down"
            if health.shutting_down
            else (
                "missing permissions: " + ", ".join(health.missing_permissions)
                if health.missing_permissions
                else "Kubernetes API not reachable"
            )
        )
        return web.Response(status=503, text=f"not ready: {why}\n")

    async def metrics_endpoint(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    app.router.add_get("/", readyz)  # the original's readiness probe path
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_post("/webhook/{pod}/v1/status", handler.status)
    app.router.add_post("/webhook/{pod}/v1/session/status", handler.session)
    return app
