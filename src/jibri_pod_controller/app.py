"""The composition root: read settings, wire the parts, run until SIGTERM, shut down cleanly.

Lifecycle: every background task (readiness and permission checks, the election loop, the
sweeper while leading, the pod cache, key reloads) belongs to one TaskGroup, each under
`supervise`: a crash is logged, counted and the loop restarted; a sweeper that keeps failing
makes the replica give up the Lease, so a standby sweeps.

Permissions: the required ones (`core.permissions`) gate readiness; each missing optional one
switches a feature off (no watch: no pod cache; no events: no Events) and is said once, at
start-up, with what is lost, and in ``permission_missing``. The replica stays ready.

On SIGTERM or SIGINT the replica reports not-ready at once, stops sweeping and gives the Lease
up, and keeps serving for SHUTDOWN_DRAIN_SECONDS while Endpoints drop it; then it stops
accepting connections, finishes the requests in flight (up to SHUTDOWN_TIMEOUT), and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

import uvloop
from aiohttp import web

from jibri_pod_controller.adapters import credentials, logs
from jibri_pod_controller.adapters.credentials import CredentialsError, Location
from jibri_pod_controller.adapters.heap import TRIM_PERIOD, Heap
from jibri_pod_controller.adapters.kube import (
    Cluster,
    KubeCluster,
    KubeError,
    NotFound,
    load_api_client,
)
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.adapters.pools import InternalApi, JsonApi
from jibri_pod_controller.adapters.probing import Prober
from jibri_pod_controller.adapters.tokens import KeyLoadError, Verifier
from jibri_pod_controller.core.config import RATE_LIMIT_BURST, Settings, load_settings
from jibri_pod_controller.core.decisions import Policy
from jibri_pod_controller.core.limiting import RateLimiter
from jibri_pod_controller.core.permissions import (
    OPTIONAL_PERMISSIONS,
    Assessment,
    Feature,
    Permission,
    all_permissions,
    assess,
)
from jibri_pod_controller.core.permissions import (
    required_permissions as _required,
)
from jibri_pod_controller.core.pods import PodFacts
from jibri_pod_controller.core.variables import ConfigError, ConfigErrors
from jibri_pod_controller.loops.acting import Actuator, ReplicaSetSelectors
from jibri_pod_controller.loops.electing import Elector
from jibri_pod_controller.loops.pooling import PoolReconciler
from jibri_pod_controller.loops.serving import Health, WebhookHandler, build_app
from jibri_pod_controller.loops.supervising import supervise
from jibri_pod_controller.loops.sweeping import Sweeper
from jibri_pod_controller.loops.watching import PodCache, PodStream

log = logging.getLogger("jibri_pod_controller")

READINESS_PERIOD = 5.0
PERMISSION_PERIOD = 60.0
KEY_RELOAD_PERIOD = 30.0
SWEEPER_FAILURES_BEFORE_RESIGNING = 3
RELEASE_TIMEOUT = 2.0
"""Seconds a shutting-down leader spends giving the Lease up. It only spares a standby the wait
for the Lease to expire, so an API server that does not answer at once costs no more."""


POOL_PERMISSIONS = tuple(o.permission for o in OPTIONAL_PERMISSIONS if o.feature is Feature.POOLS)
"""Needed only with JibriPools (optional: without them, an operator sets the replicas)."""


def required_permissions(settings: Settings) -> tuple[Permission, ...]:
    """What readiness needs (see `core.permissions` for the optional ones)."""
    return _required(lease_name=settings.lease_name)


def package_version() -> str:
    try:
        return version("jibri-pod-controller")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


class StartupError(Exception):
    """The controller cannot start (e.g. its port is taken); ``str()`` is one line."""


class Controller:
    def __init__(
        self,
        settings: Settings,
        cluster: Cluster,
        verifier: Verifier | None,
        stream: PodStream | None = None,
        replica_sets: ReplicaSetSelectors | None = None,
        pools_api: JsonApi | None = None,
        heap: Heap | None = None,
    ) -> None:
        self.settings = settings
        self.heap = heap
        self.cluster = cluster
        self.verifier = verifier
        self.metrics = Metrics()
        self.metrics.info.info({"version": package_version()})
        self.health = Health()
        self.prober = Prober(
            port=settings.health_port,
            timeout=settings.probe_timeout,
            max_bytes=settings.probe_max_bytes,
            concurrency=settings.probe_concurrency,
        )
        self.actuator = Actuator(
            cluster=cluster,
            metrics=self.metrics,
            busy_labels=settings.busy_labels,
            dry_run=settings.dry_run,
            replica_sets=replica_sets,
            watch_sessions=settings.stuck_busy_seconds > 0,
        )
        self._replica_sets = replica_sets
        self.elector = Elector(
            cluster=cluster,
            metrics=self.metrics,
            name=settings.lease_name,
            identity=settings.pod_name,
            timings=settings.lease,
        )
        self.cache = (
            PodCache(
                stream=stream,
                selector=str(settings.jibri_selector),
                metrics=self.metrics,
                page_size=settings.list_page_size,
            )
            if stream is not None
            else None
        )
        self.internal_api = (
            InternalApi(port=settings.internal_api_port, timeout=settings.probe_timeout)
            if settings.internal_api_port
            else None
        )
        self.pools = (
            PoolReconciler(
                api=pools_api,
                namespace=settings.namespace,
                prober=self.prober,
                actuator=self.actuator,
                metrics=self.metrics,
                busy_labels=settings.busy_labels,
                period=settings.pool_period,
                dry_run=settings.dry_run,
                cache=self.cache,
                jibri_selector=settings.jibri_selector,
                internal_api=self.internal_api,
                day_seconds=settings.forecast_day_seconds,
            )
            if pools_api is not None
            else None
        )
        if self.pools is not None:
            self.actuator.on_change = self.pools.trigger
        self.sweeper = Sweeper(
            cluster=cluster,
            prober=self.prober,
            actuator=self.actuator,
            metrics=self.metrics,
            selector=str(settings.jibri_selector),
            busy_labels=settings.busy_labels,
            policy=Policy(
                restarted=settings.restarted_policy,
                finished=settings.finished_policy,
                max_busy_seconds=settings.max_busy_seconds,
                unresponsive_seconds=settings.unresponsive_busy_seconds,
                stuck_seconds=settings.stuck_busy_seconds,
                stuck=settings.stuck_policy,
            ),
            page_size=settings.list_page_size,
            snapshot=self.cache.snapshot if self.cache is not None else None,
            workers=settings.probe_concurrency,
            on_incomplete=self._sweeps_incomplete,
        )
        handler = WebhookHandler(
            settings=settings,
            cluster=cluster,
            actuator=self.actuator,
            metrics=self.metrics,
            verifier=verifier,
            limiter=RateLimiter(
                rate=settings.rate_limit, burst=settings.rate_limit * RATE_LIMIT_BURST
            ),
            cache=self.cache,
        )
        self.app = build_app(
            handler=handler,
            metrics=self.metrics,
            health=self.health,
            max_body_bytes=settings.max_body_bytes,
        )
        self.permissions: Assessment | None = None
        self._group: asyncio.TaskGroup | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._pool_task: asyncio.Task[None] | None = None
        self._cache_task: asyncio.Task[None] | None = None
        self._one_off: set[asyncio.Task[None]] = set()

    def _spawn(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, None]],
        on_failure: Callable[[int], None] | None = None,
    ) -> asyncio.Task[None]:
        assert self._group is not None, "background loops start inside run()"
        return self._group.create_task(
            supervise(name, run, metrics=self.metrics, on_failure=on_failure), name=name
        )

    # -- leadership -------------------------------------------------------------------------
    def _start_sweeping(self) -> None:
        interval = self.settings.sweep_interval
        self._sweep_task = self._spawn(
            "sweeper", lambda: self.sweeper.run(interval), self._sweeper_failed
        )
        if self.pools is not None:
            # Pools are reconciled by the Lease holder only; every replica still serves webhooks.
            self._pool_task = self._spawn("pools", self.pools.run)

    def _sweeper_failed(self, failures: int) -> None:
        if failures >= SWEEPER_FAILURES_BEFORE_RESIGNING:
            self._resign(
                "sweeper-failing",
                f"the sweeper failed {failures} times in a row",
                failures=failures,
            )

    def _sweeps_incomplete(self, in_a_row: int) -> None:
        if in_a_row >= SWEEPER_FAILURES_BEFORE_RESIGNING:
            self._resign(
                "sweep-incomplete",
                f"{in_a_row} sweeps in a row could not list the Jibri pods",
                failures=in_a_row,
            )

    def _resign(self, reason: str, why: str, *, failures: int) -> None:
        """Give the Lease up (a standby sweeps), say so in the log, a metric and an Event.

        Readiness is left alone: this replica may still answer webhooks (from its cache and
        single GETs); taking it out of the Service would not give the sweep back, the Lease does.
        """
        if not self.elector.leading.is_set():
            return
        lease = self.settings.lease_name
        log.error(
            "%s; giving up the Lease so that a standby sweeps",
            why,
            extra={"failures": failures, "lease": lease, "reason": reason},
        )
        self.metrics.lease_resignations.labels(reason=reason).inc()
        self.elector.resign()
        if self.actuator.events and not self.settings.dry_run:
            self._spawn_once(
                self._lease_event(
                    reason="SweeperResigned", message=f"{self.settings.pod_name}: {why}"
                )
            )

    def _spawn_once(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a one-off task in the lifecycle's TaskGroup (it must not raise); a shutdown
        cancels it rather than wait for it."""
        if self._group is None:
            work.close()
            return
        task = self._group.create_task(work)
        self._one_off.add(task)
        task.add_done_callback(self._one_off.discard)

    async def _lease_event(self, *, reason: str, message: str) -> None:
        try:
            await self.cluster.record_lease_event(
                name=self.settings.lease_name, reason=reason, message=message
            )
        except Exception as exc:  # an Event is a courtesy: never the TaskGroup's end
            self.metrics.events_failed.inc()
            log.warning("event not recorded", extra={"reason": reason, "error": repr(exc)})

    def _stop_sweeping(self) -> None:
        if self._sweep_task is not None:
            self._sweep_task.cancel()
            self._sweep_task = None
        if self._pool_task is not None:
            assert self.pools is not None
            self.pools.stop()
            self._pool_task.cancel()
            self._pool_task = None
        # Only the leader's counts are current; a standby exporting stale ones would be summed.
        self.metrics.jibri_pods.clear()

    # -- permissions --------------------------------------------------------------------------
    async def check_permissions(self) -> Assessment:
        permissions = all_permissions(lease_name=self.settings.lease_name)
        answers = await asyncio.gather(
            *(
                self.cluster.can_i(verb=p.verb, resource=p.resource, group=p.group, name=p.name)
                for p in permissions
            )
        )
        allowed: dict[Permission, bool] = dict(zip(permissions, answers, strict=True))
        verdict = assess(allowed, lease_name=self.settings.lease_name)
        previous = self.permissions
        missing = list(verdict.missing_required)
        if missing and (previous is None or previous.missing_required != verdict.missing_required):
            log.error(
                "missing Kubernetes permissions; not ready until the Role grants them",
                extra={"namespace": self.settings.namespace, "missing": missing},
            )
        elif not missing and previous is not None and previous.missing_required:
            log.info("Kubernetes permissions complete")
        if verdict.lost and (previous is None or previous.lost != verdict.lost):
            log.warning(
                "optional Kubernetes permissions missing; working without: %s",
                "; ".join(f"{p} ({lost})" for p, lost in verdict.lost.items()),
                extra={"namespace": self.settings.namespace, "lost": verdict.lost},
            )
        for permission in permissions:
            self.metrics.permission_missing.labels(
                permission=str(permission),
                required="false"
                if any(o.permission == permission for o in OPTIONAL_PERMISSIONS)
                else "true",
            ).set(0 if allowed.get(permission) else 1)
        self.permissions = verdict
        self.health.missing_permissions = verdict.missing_required
        self._apply_features(verdict)
        return verdict

    def _apply_features(self, verdict: Assessment) -> None:
        """Switch the optional features on or off to match what the Role allows."""
        self.actuator.events = verdict.has(Feature.EVENTS)
        self.actuator.replica_sets = (
            self._replica_sets if verdict.has(Feature.OWNER_CHECK) else None
        )
        if self.cache is None or self._group is None:
            return
        if verdict.has(Feature.WATCH) and self._cache_task is None:
            cache = self.cache
            self._cache_task = self._spawn("pod-cache", cache.run)
        elif not verdict.has(Feature.WATCH) and self._cache_task is not None:
            # Without a watch the cache would only go stale: read fresh instead.
            self._cache_task.cancel()
            self._cache_task = None
            self.cache.synced.clear()
            self.metrics.pod_cache_synced.set(0)

    # -- start-up report ------------------------------------------------------------------------
    async def check_detaches_would_work(self) -> list[str]:
        """Report every ReplicaSet of Jibri pods whose selector matches the busy labels.

        Run once at start-up: a Deployment whose selector still matches a busy-labelled pod
        would keep its busy pods, so no detach would ever take effect. Returns their names.
        """
        if self.actuator.replica_sets is None:
            return []
        owners: dict[str, PodFacts] = {}
        try:
            async for pod in self.cluster.list_pods(
                selector=str(self.settings.jibri_selector),
                page_size=self.settings.list_page_size,
            ):
                if pod.owner_kind == "ReplicaSet" and pod.owner_name:
                    owners.setdefault(pod.owner_name, pod)
        except Exception as exc:  # an API error or a pod it cannot read: a report, not a crash
            log.warning("could not check the Jibri ReplicaSets", extra={"error": repr(exc)})
            return []
        found: list[str] = []
        for _, pod in sorted(owners.items()):
            # The pod as a detach would leave it: its own labels with the busy ones on top.
            relabelled = replace(pod, labels={**pod.labels, **self.settings.busy_labels})
            if not await self.actuator.left_its_replica_set(relabelled, where="startup"):
                found.append(relabelled.owner_name or "")
        return found

    # -- background checks ------------------------------------------------------------------
    async def _readiness_loop(self) -> None:
        since_permissions = 0.0 if self.permissions is not None else PERMISSION_PERIOD
        while True:
            try:
                if since_permissions >= PERMISSION_PERIOD:
                    await self.check_permissions()
                    since_permissions = 0.0
                await self.cluster.get_lease(self.settings.lease_name)
                if not self.health.api_ok:
                    log.info("Kubernetes API reachable")
                self.health.api_ok = True
            except KubeError as exc:
                if self.health.api_ok or since_permissions == 0.0:
                    log.error("Kubernetes API check failed", extra={"error": str(exc)})
                self.health.api_ok = False
                self.metrics.api_errors.labels(operation="readiness", kind=exc.kind).inc()
            self.metrics.ready.set(1 if self.health.ready else 0)
            await asyncio.sleep(READINESS_PERIOD)
            since_permissions += READINESS_PERIOD

    async def reload_keys(self) -> bool:
        """Read changed key files in a thread; install them on the loop, in one step."""
        assert self.verifier is not None
        update = await asyncio.to_thread(self.verifier.read_if_changed)
        if update is None:
            return False
        if update.error is not None:
            path = update.error.path
            self.metrics.key_load_errors.labels(file=path.name if path else "").inc()
        return self.verifier.apply(update)

    async def _reload_keys_loop(self) -> None:
        while True:
            await asyncio.sleep(KEY_RELOAD_PERIOD)
            await self.reload_keys()

    async def _trim_loop(self) -> None:
        assert self.heap is not None
        while True:
            await asyncio.sleep(TRIM_PERIOD)
            self.heap.trim()

    async def _start_up_checks(self) -> None:
        """The first permission check, before any loop that depends on its verdict."""
        try:
            await self.check_permissions()
        except KubeError as exc:
            # The readiness loop tries again; until then the replica is not ready.
            log.error("Kubernetes permission check failed", extra={"error": str(exc)})
            self.metrics.api_errors.labels(operation="permissions", kind=exc.kind).inc()
            return
        await self.check_detaches_would_work()

    # -- lifecycle ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.settings.shutdown_timeout,
            # Also bounds a client that trickles its headers: aiohttp closes a connection that
            # has not completed a request within this time.
            keepalive_timeout=self.settings.idle_timeout,
        )
        await runner.setup()
        # A backlog of 1,024, not aiohttp's 128: at 2,000 webhooks/s a 64 ms stall (a GC pass,
        # a busy core) fills 128, and each dropped SYN costs its sender a 1 s retransmit.
        site = web.TCPSite(runner, port=self.settings.port, reuse_address=True, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(
                f"cannot listen on port {self.settings.port}: {exc.strerror}"
            ) from exc
        log.info(
            "listening",
            extra={
                "port": self.settings.port,
                "namespace": self.settings.namespace,
                "identity": self.settings.pod_name,
                "dry_run": self.settings.dry_run,
                "selector": str(self.settings.jibri_selector),
                "webhook_auth": "jwt" if self.verifier else "none",
            },
        )
        if self.pools is not None:
            log.info("pool scale-downs: %s", self.pools.describe_scale_down())
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                await self._start_up_checks()  # also starts the pod cache if it may watch
                elector = self._spawn(
                    "elector",
                    lambda: self.elector.run(self._start_sweeping, self._stop_sweeping),
                )
                background = [self._spawn("readiness", self._readiness_loop)]
                if self.verifier is not None:
                    background.append(self._spawn("key-reload", self._reload_keys_loop))
                if self.heap is not None and self.heap.tunable:
                    background.append(self._spawn("heap-trim", self._trim_loop))
                await stop.wait()
                log.info(
                    "shutting down: not ready; serving for %gs more",
                    self.settings.shutdown_drain,
                    extra={"drain_seconds": self.settings.shutdown_drain},
                )
                self.health.shutting_down = True
                self.metrics.ready.set(0)
                await self._store_pool_histories()
                # Stop leading first, and give the Lease up, so a standby sweeps at once.
                elector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await elector
                self._stop_sweeping()
                await self._release_lease()
                # Endpoints take a few seconds to drop this replica: keep answering webhooks.
                await asyncio.sleep(self.settings.shutdown_drain)
                for task in [*background, *self._one_off]:
                    task.cancel()
                if self._cache_task is not None:
                    self._cache_task.cancel()
                    self._cache_task = None
        finally:
            self._stop_sweeping()
            self._group = None
            started = asyncio.get_running_loop().time()
            await runner.cleanup()  # stop listening, then finish requests in flight
            await self._release_lease()
            # Events still being written share what is left of SHUTDOWN_TIMEOUT: a shutdown
            # while the API server hangs takes SHUTDOWN_DRAIN_SECONDS + SHUTDOWN_TIMEOUT +
            # RELEASE_TIMEOUT at most, inside the pod's termination grace period.
            left = self.settings.shutdown_timeout - (asyncio.get_running_loop().time() - started)
            try:
                await asyncio.wait_for(self.actuator.drain(), max(0.1, left))
            except TimeoutError:
                log.warning("shutting down with Events still unwritten")
            await self.prober.close()
            if self.internal_api is not None:
                await self.internal_api.close()
            log.info("stopped")

    async def _store_pool_histories(self) -> None:
        """A leader shutting down stops its pool loop and stores what the pools' forecasts
        learnt since their last store, while it still holds the Lease: its successor goes on
        from this moment. (A leader that loses the Lease stores nothing: another may already
        be writing; the starts since the last store are in the pools' recentStarts.)"""
        task, self._pool_task = self._pool_task, None
        if task is None or self.pools is None:
            return
        # Bounded: a shutdown never waits on the loop for longer than RELEASE_TIMEOUT (a
        # cancellation lost inside it is asked again until then).
        self.pools.stop()
        deadline = asyncio.get_running_loop().time() + RELEASE_TIMEOUT
        while not task.done() and asyncio.get_running_loop().time() < deadline:
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        if not task.done():
            self._pool_task = task  # cancelled again when the sweeping stops
            log.warning("the pool loop did not stop in time; forecast histories not stored")
            return
        try:
            await asyncio.wait_for(self.pools.flush(), RELEASE_TIMEOUT)
        except TimeoutError:
            log.warning("forecast histories not stored in time; the next leader uses the last")

    async def _release_lease(self) -> None:
        try:
            await asyncio.wait_for(self.elector.release(), RELEASE_TIMEOUT)
        except TimeoutError:
            log.warning(
                "could not give the Lease up in time; a standby takes it once it expires",
                extra={"lease": self.settings.lease_name},
            )


def _fail(*messages: str) -> int:
    for message in messages:
        print(f"jibri-pod-controller: configuration error: {message}", file=sys.stderr)
    return 2


REPLICA_SETS_REMEMBERED = 256


class JsonRequests(Protocol):
    async def request_json(self, method: str, path: str) -> Any: ...


def replica_set_reader(cluster: JsonRequests, namespace: str) -> ReplicaSetSelectors:
    """Reads a ReplicaSet's ``spec.selector`` through the API seam's generic request.

    A ReplicaSet's selector is immutable (apps/v1), so each one is read once and remembered
    by uid (a recreated Deployment may reuse the name with another selector): a burst of
    detaches from one Deployment costs one GET, not one per detach, and the check stays far
    inside a webhook's time budget.
    """
    known: dict[tuple[str, str], Mapping[str, Any]] = {}

    async def selector(name: str, uid: str) -> Mapping[str, Any] | None:
        if (name, uid) in known:
            return known[(name, uid)]
        try:
            body = await cluster.request_json(
                "GET", f"/apis/apps/v1/namespaces/{namespace}/replicasets/{name}"
            )
        except NotFound:
            return None
        if not isinstance(body, dict):
            return None
        meta, spec = body.get("metadata"), body.get("spec")
        if uid and (not isinstance(meta, dict) or meta.get("uid") != uid):
            return None  # not the pod's owner any more
        found = spec.get("selector") if isinstance(spec, dict) else None
        if not isinstance(found, dict):
            return None
        if len(known) >= REPLICA_SETS_REMEMBERED:
            known.clear()
        known[(name, uid)] = found
        return found

    return selector


async def _serve(
    settings: Settings,
    verifier: Verifier | None,
    credentials_at: Location,
    env: Mapping[str, str],
    heap: Heap,
) -> None:
    api = await load_api_client(credentials_at, env)
    if api.endpoint.namespace and api.endpoint.namespace != settings.namespace:
        log.info(
            "NAMESPACE differs from the credentials' namespace; the controller uses NAMESPACE",
            extra={
                "namespace": settings.namespace,
                "credentials_namespace": api.endpoint.namespace,
            },
        )
    cluster = KubeCluster(api, namespace=settings.namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Controller(
            settings,
            cluster,
            verifier,
            stream=cluster,
            replica_sets=replica_set_reader(cluster, settings.namespace),
            pools_api=cluster,
            heap=heap,
        ).run(stop)
    finally:
        await cluster.close()


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    environment = os.environ if env is None else env
    try:
        settings = load_settings(environment)
    except ConfigErrors as exc:
        return _fail(*(str(e) for e in exc.errors))
    except ConfigError as exc:
        return _fail(str(exc))
    verifier: Verifier | None = None
    if settings.jwt is not None:
        try:
            verifier = Verifier(settings.jwt)
        except KeyLoadError as exc:
            return _fail(f"{exc.setting}: {exc}")
    try:
        credentials_at = credentials.locate(environment.get("KUBECONFIG") or None, environment)
    except CredentialsError as exc:
        return _fail(str(exc))
    logs.setup(settings.log_level, settings.log_format)
    heap = Heap()
    heap.tune()
    if verifier is None:
        log.warning(
            "webhooks are NOT authenticated (WEBHOOK_AUTH=none): anyone who can reach "
            "this service can have Jibri pods detached or deleted"
        )
    else:
        log.info("webhook tokens verified", extra={"kids": verifier.kids})
    try:
        with (
            contextlib.suppress(KeyboardInterrupt),
            # uvloop: half the CPU per probe and per webhook of asyncio's own loop.
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        ):
            runner.run(_serve(settings, verifier, credentials_at, environment, heap))
    except CredentialsError as exc:
        return _fail(str(exc))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
