"""The calls of spare pools: JibriPools, Deployments and their scale, HPAs, pool pods, and
Jibri's internal API (graceful shutdown).

Built only on the generic `JsonApi` seam (``request_json`` / ``watch_json``), so it depends on
no client library. Raw objects are parsed here into small frozen values; the loop above never
sees a dict except a pool's own status, which it writes back.

The scale write is a PUT of the ``scale`` subresource carrying the Deployment's
resourceVersion (a Scale's resourceVersion is its Deployment's): a concurrent change to the
Deployment (a rollout, a human) gives 409 and the loop decides again from a fresh read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from prometheus_client import Counter, Gauge, Histogram

from jibri_pod_controller.adapters.kube import MERGE_PATCH, NotFound, WatchEvent, event_body
from jibri_pod_controller.adapters.metrics import PREFIX, Metrics
from jibri_pod_controller.core.pods import PodFacts, PodParseError, parse_pod
from jibri_pod_controller.core.pools import DeploymentFacts
from jibri_pod_controller.core.scaledown import ShutdownOutcome

GRACEFUL_SHUTDOWN_PATH = "/jibri/api/internal/v1.0/gracefulShutdown"
"""Jibri's internal API: exit once idle. (``shutdown`` beside it stops a recording at once: it
is never called.)"""

GROUP = "jibri-pod-controller.io"
VERSION = "v1alpha1"
PLURAL = "jibripools"


class JsonApi(Protocol):
    async def request_json(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        request_timeout: float | None = None,
    ) -> Any: ...

    def watch_json(
        self, path: str, *, query: Mapping[str, str], timeout_seconds: int
    ) -> AsyncIterator[WatchEvent]: ...


@dataclass(frozen=True)
class StoredPool:
    name: str
    uid: str
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]


@dataclass(frozen=True)
class ScaleTarget:
    """An HorizontalPodAutoscaler's target."""

    hpa: str
    kind: str
    name: str


def _pool(raw: Mapping[str, Any]) -> StoredPool:
    meta = raw.get("metadata") or {}
    return StoredPool(
        name=str(meta.get("name")),
        uid=str(meta.get("uid")),
        generation=int(meta.get("generation") or 0),
        spec=raw.get("spec") or {},
        status=raw.get("status") or {},
    )


def _deployment(raw: Mapping[str, Any]) -> DeploymentFacts:
    meta, spec = raw.get("metadata") or {}, raw.get("spec") or {}
    template = (spec.get("template") or {}).get("metadata") or {}
    replicas = spec.get("replicas")
    return DeploymentFacts(
        name=str(meta.get("name")),
        uid=str(meta.get("uid")),
        replicas=int(replicas) if isinstance(replicas, int) else 1,
        resource_version=str(meta.get("resourceVersion") or ""),
        selector=spec.get("selector") or {},
        template_labels={str(k): str(v) for k, v in (template.get("labels") or {}).items()},
    )


class PoolApi:
    """Pool reads and writes in one namespace."""

    def __init__(self, api: JsonApi, *, namespace: str, page_size: int = 500) -> None:
        self._api = api
        self._ns = namespace
        self._page_size = page_size

    @property
    def pods_path(self) -> str:
        return f"/api/v1/namespaces/{self._ns}/pods"

    @property
    def _pools_path(self) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self._ns}/{PLURAL}"

    async def list_pools(self) -> list[StoredPool] | None:
        """Every JibriPool in the namespace; None when the CRD is not installed."""
        try:
            answer = await self._api.request_json("GET", self._pools_path)
        except NotFound:
            return None
        return [_pool(item) for item in (answer or {}).get("items") or ()]

    async def get_deployment(self, name: str) -> DeploymentFacts | None:
        try:
            answer = await self._api.request_json(
                "GET", f"/apis/apps/v1/namespaces/{self._ns}/deployments/{name}"
            )
        except NotFound:
            return None
        return _deployment(answer)

    async def list_deployments(self) -> dict[str, DeploymentFacts]:
        """Every Deployment in the namespace, by name, in one request (a few small objects;
        one LIST a round instead of a GET per pool)."""
        answer = await self._api.request_json(
            "GET", f"/apis/apps/v1/namespaces/{self._ns}/deployments"
        )
        found = [_deployment(item) for item in (answer or {}).get("items") or ()]
        return {d.name: d for d in found}

    async def scale(self, *, name: str, replicas: int, resource_version: str) -> str:
        """Write the Deployment's replicas through its scale subresource; the new
        resourceVersion. Raises `Conflict` when the Deployment changed since it was read."""
        body = {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": name, "namespace": self._ns, "resourceVersion": resource_version},
            "spec": {"replicas": replicas},
        }
        answer = await self._api.request_json(
            "PUT", f"/apis/apps/v1/namespaces/{self._ns}/deployments/{name}/scale", body=body
        )
        return str(((answer or {}).get("metadata") or {}).get("resourceVersion") or "")

    async def scale_targets(self) -> list[ScaleTarget]:
        """What each HorizontalPodAutoscaler in the namespace scales."""
        answer = await self._api.request_json(
            "GET", f"/apis/autoscaling/v2/namespaces/{self._ns}/horizontalpodautoscalers"
        )
        targets = []
        for item in (answer or {}).get("items") or ():
            ref = (item.get("spec") or {}).get("scaleTargetRef") or {}
            targets.append(
                ScaleTarget(
                    hpa=str((item.get("metadata") or {}).get("name")),
                    kind=str(ref.get("kind")),
                    name=str(ref.get("name")),
                )
            )
        return targets

    async def list_pods(self, selector: str) -> list[PodFacts]:
        """Pods matching ``selector`` (paginated); pods that do not parse are left out."""
        pods: list[PodFacts] = []
        token = ""
        while True:
            query = {"labelSelector": selector, "limit": str(self._page_size)}
            if token:
                query["continue"] = token
            page = await self._api.request_json(
                "GET", f"/api/v1/namespaces/{self._ns}/pods", query=query
            )
            for raw in (page or {}).get("items") or ():
                with contextlib.suppress(PodParseError):
                    pods.append(parse_pod(raw))
            token = str(((page or {}).get("metadata") or {}).get("continue") or "")
            if not token:
                return pods

    async def annotate_pod(
        self, *, name: str, uid: str, annotations: Mapping[str, str | None]
    ) -> None:
        """Merge ``annotations`` into a pod (None removes one), with a uid precondition."""
        body = {"metadata": {"uid": uid, "annotations": dict(annotations)}}
        await self._api.request_json(
            "PATCH",
            f"/api/v1/namespaces/{self._ns}/pods/{name}",
            body=body,
            content_type=MERGE_PATCH,
        )

    async def patch_status(self, *, name: str, status: Mapping[str, Any]) -> None:
        """Merge ``status`` into a pool's status subresource (lists are replaced whole)."""
        await self._api.request_json(
            "PATCH",
            f"{self._pools_path}/{name}/status",
            body={"status": dict(status)},
            content_type=MERGE_PATCH,
        )

    async def record_event(
        self, *, pool: StoredPool, reason: str, message: str, warning: bool = False
    ) -> None:
        involved = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "JibriPool",
            "name": pool.name,
            "uid": pool.uid,
        }
        event = event_body(
            namespace=self._ns, involved=involved, reason=reason, message=message, warning=warning
        )
        await self._api.request_json("POST", f"/api/v1/namespaces/{self._ns}/events", body=event)


class InternalApi:
    """Jibri's internal HTTP API (``jibri.api.http.internal-api-port``): only
    ``gracefulShutdown``.

    Jibri binds it to 127.0.0.1 unless ``internal-api-host = "0.0.0.0"``, so a Jibri set up
    without it answers with a refused connection: that is `ShutdownOutcome.UNREACHABLE`, and
    the pool falls back to today's method for that spare.
    """

    def __init__(self, *, port: int, timeout: float, concurrency: int = 16) -> None:
        self._port = port
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._limit = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    @property
    def port(self) -> int:
        return self._port

    async def graceful_shutdown(self, ip: str) -> tuple[ShutdownOutcome, str]:
        """Ask the Jibri at ``ip`` to exit once idle; the outcome and a short detail."""
        host = f"[{ip}]" if ":" in ip else ip
        url = f"http://{host}:{self._port}{GRACEFUL_SHUTDOWN_PATH}"
        if self._session is None:
            # No pooling: each call goes to another Jibri, which closes its API right after.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        async with self._limit:
            try:
                async with self._session.post(url, timeout=self._timeout) as response:
                    await response.read()
                    if response.status == 200:
                        return ShutdownOutcome.ACCEPTED, ""
                    return ShutdownOutcome.REFUSED, f"HTTP {response.status}"
            except TimeoutError:
                return ShutdownOutcome.UNREACHABLE, "timeout"
            except (aiohttp.ClientError, OSError) as exc:
                return ShutdownOutcome.UNREACHABLE, type(exc).__name__

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class PoolMetrics:
    """Per-pool metrics, each with a ``pool`` label, in the application's registry."""

    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.pods = Gauge(
            PREFIX + "pool_pods",
            "Pods of a JibriPool by role: spare (Ready), starting, busy, leaving (asked to shut "
            "down on a scale-down).",
            ["pool", "role"],
            registry=r,
        )
        self.desired = Gauge(
            PREFIX + "pool_desired_spares", "The spare count a pool asks for.", ["pool"], registry=r
        )
        self.replicas = Gauge(
            PREFIX + "pool_replicas", "The pool Deployment's replicas.", ["pool"], registry=r
        )
        self.max_total = Gauge(
            PREFIX + "pool_budget_pods",
            "A pool's budget (maxTotal: spare + busy pods), when set.",
            ["pool"],
            registry=r,
        )
        self.bound = Gauge(
            PREFIX + "pool_bound",
            "1 for the bound that decided a pool's desired spare count.",
            ["pool", "bound"],
            registry=r,
        )
        self.start_rate = Gauge(
            PREFIX + "pool_start_rate",
            "Estimated recording starts per second (demand policy).",
            ["pool"],
            registry=r,
        )
        self.lead_time = Gauge(
            PREFIX + "pool_lead_time_seconds",
            "Creation to Ready of a pool's pods (p90).",
            ["pool"],
            registry=r,
        )
        self.scale_writes = Counter(
            PREFIX + "pool_scale_writes_total",
            "Writes of a pool Deployment's scale, by direction (up, down) and result.",
            ["pool", "direction", "result"],
            registry=r,
        )
        self.zero_spare_seconds = Counter(
            PREFIX + "pool_zero_spare_seconds_total",
            "Seconds a pool had no Ready spare.",
            ["pool"],
            registry=r,
        )
        self.problems = Gauge(
            PREFIX + "pool_problem",
            "1 while a pool cannot be reconciled, by reason (its Ready condition).",
            ["pool", "reason"],
            registry=r,
        )
        self.reconciles = Counter(
            PREFIX + "pool_reconciles_total",
            "Pool reconciliations, by result (ok, problem, error).",
            ["result"],
            registry=r,
        )
        self.round_seconds = Histogram(
            PREFIX + "pool_round_seconds",
            "Duration of one reconcile round over every JibriPool (reads, decisions, writes).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.exhausted = Gauge(
            PREFIX + "pool_exhausted",
            "1 while a pool's condition SpareExhausted or BudgetExhausted is True.",
            ["pool", "condition"],
            registry=r,
        )
        self.scale_down_blocked = Gauge(
            PREFIX + "pool_scale_down_blocked",
            "1 while a pool's scale-down waits (its condition ScaleDownBlocked), by reason.",
            ["pool", "reason"],
            registry=r,
        )
        self.graceful_shutdowns = Counter(
            PREFIX + "pool_graceful_shutdowns_total",
            "Graceful shutdowns asked of spares on a scale-down, by result (accepted, "
            "unreachable, refused, dry-run).",
            ["pool", "result"],
            registry=r,
        )
        self.busy_found = Counter(
            PREFIX + "pool_spares_found_busy_total",
            "Spares found BUSY on the way to a scale-down: detached, and kept recording.",
            ["pool"],
            registry=r,
        )
        self.forecast_spares = Gauge(
            PREFIX + "pool_forecast_spares",
            "Spares a pool's demand forecast asks for now: from its history of starts, plus "
            "the reactive estimate of the recent starts history did not expect.",
            ["pool"],
            registry=r,
        )
        self.forecast_expected = Gauge(
            PREFIX + "pool_forecast_expected_starts",
            "Recording starts a pool's history expects within the next lead time.",
            ["pool"],
            registry=r,
        )
        self.forecast_recommended = Gauge(
            PREFIX + "pool_forecast_recommended_spares",
            "The spare count a pool would ask for with its forecast applied (its bounds "
            "included); pool_desired_spares is what it applies.",
            ["pool"],
            registry=r,
        )
        self.forecast_applied = Gauge(
            PREFIX + "pool_forecast_applied",
            "1 when a pool's forecast sizes it (mode Apply), 0 when it only recommends.",
            ["pool"],
            registry=r,
        )
        self.forecast_references = Gauge(
            PREFIX + "pool_forecast_references",
            "Wholly recorded days of the same kind (working or weekend) a pool's forecast "
            "goes by today; 0: the reactive estimate alone.",
            ["pool"],
            registry=r,
        )
        self.forecast_history_age = Gauge(
            PREFIX + "pool_forecast_history_age_seconds",
            "How far back a pool's history of starts reaches: since its first wholly "
            "recorded day began (0 before that).",
            ["pool"],
            registry=r,
        )
        self.forecast_history_bytes = Gauge(
            PREFIX + "pool_forecast_history_bytes",
            "The size of a pool's history of starts as stored in its status (status.startHistory).",
            ["pool"],
            registry=r,
        )
        self.forecast_history_resets = Counter(
            PREFIX + "pool_forecast_history_resets_total",
            "Histories begun anew: the stored one could not be read, or was kept on another "
            "clock (time zone).",
            ["pool"],
            registry=r,
        )
        self.forecast_build_seconds = Histogram(
            PREFIX + "pool_forecast_build_seconds",
            "Duration of one outlook build (a pool's forecast for the next hour of its day), "
            "on a worker thread.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.forecast_build_failures = Counter(
            PREFIX + "pool_forecast_build_failures_total",
            "Outlook builds that failed (the pool goes on with the outlook it had).",
            ["pool"],
            registry=r,
        )
        self.forecast_gauges = (
            self.forecast_spares,
            self.forecast_expected,
            self.forecast_recommended,
            self.forecast_applied,
            self.forecast_references,
            self.forecast_history_age,
            self.forecast_history_bytes,
        )

        self._series: dict[str, set[tuple[Gauge, tuple[str, ...]]]] = {}

    def set(self, gauge: Gauge, pool: str, *labels: str, value: float) -> None:
        """Set a per-pool gauge, remembering the series so `forget` can remove it."""
        gauge.labels(pool, *labels).set(value)
        self._series.setdefault(pool, set()).add((gauge, (pool, *labels)))

    def drop(self, pool: str, *gauges: Gauge) -> None:
        """Remove these gauges' series of one pool (a forecast turned off)."""
        kept = self._series.get(pool, set())
        for gauge, labels in [s for s in kept if s[0] in gauges]:
            kept.discard((gauge, labels))
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def forget(self, keep: Sequence[str] = ()) -> None:
        """Remove the gauge series of every pool not in ``keep`` (all, on losing the lease)."""
        for pool in [p for p in self._series if p not in keep]:
            for gauge, labels in self._series.pop(pool):
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
