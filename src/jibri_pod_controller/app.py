"""The composition root: read settings, wire the parts, run until SIGTERM, shut down cleanly.

Lifecycle: every background task (readiness and permission checks, the election loop, the
sweeper while leading, key reloads) belongs to one TaskGroup. On SIGTERM or SIGINT the replica
reports not-ready, stops sweeping, stops accepting connections, finishes the requests in flight
(up to SHUTDOWN_TIMEOUT), releases the Lease so a standby takes over at once, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import uvloop
from aiohttp import web

from jibri_pod_controller.adapters import credentials, logs
from jibri_pod_controller.adapters.credentials import CredentialsError
from jibri_pod_controller.adapters.kube import Cluster, KubeCluster, KubeError, load_api_client
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.adapters.probing import Prober
from jibri_pod_controller.adapters.tokens import KeyLoadError, Verifier
from jibri_pod_controller.core.config import ConfigError, Settings, load_settings
from jibri_pod_controller.core.decisions import Policy
from jibri_pod_controller.core.limiting import RateLimiter
from jibri_pod_controller.loops.acting import Actuator
from jibri_pod_controller.loops.electing import Elector
from jibri_pod_controller.loops.serving import Health, WebhookHandler, build_app
from jibri_pod_controller.loops.sweeping import Sweeper
from jibri_pod_controller.loops.watching import PodCache, PodStream

log = logging.getLogger("jibri_pod_controller")

READINESS_PERIOD = 5.0
PERMISSION_PERIOD = 60.0
KEY_RELOAD_PERIOD = 30.0


@dataclass(frozen=True)
class Permission:
    verb: str
    resource: str
    group: str = ""
    name: str = ""

    def __str__(self) -> str:
        target = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {target}" + (f"/{self.name}" if self.name else "")


def required_permissions(settings: Settings) -> tuple[Permission, ...]:
    lease = settings.lease_name
    return (
        Permission("get", "pods"),
        Permission("list", "pods"),
        Permission("watch", "pods"),
        Permission("patch", "pods"),
        Permission("delete", "pods"),
        Permission("create", "events"),
        Permission("create", "leases", "coordination.k8s.io"),
        Permission("get", "leases", "coordination.k8s.io", lease),
        Permission("update", "leases", "coordination.k8s.io", lease),
    )


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
    ) -> None:
        self.settings = settings
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
        )
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
            ),
            page_size=settings.list_page_size,
            snapshot=self.cache.snapshot if self.cache is not None else None,
            workers=settings.probe_concurrency,
        )
        handler = WebhookHandler(
            settings=settings,
            cluster=cluster,
            actuator=self.actuator,
            metrics=self.metrics,
            verifier=verifier,
            limiter=RateLimiter(rate=settings.rate_limit, burst=settings.rate_limit * 4),
            cache=self.cache,
        )
        self.app = build_app(
            handler=handler,
            metrics=self.metrics,
            health=self.health,
            max_body_bytes=settings.max_body_bytes,
        )
        self._sweep_task: asyncio.Task[None] | None = None

    # -- leadership -------------------------------------------------------------------------
    def _start_sweeping(self) -> None:
        self._sweep_task = asyncio.create_task(self.sweeper.run(self.settings.sweep_interval))

    def _stop_sweeping(self) -> None:
        if self._sweep_task is not None:
            self._sweep_task.cancel()
            self._sweep_task = None
        # Only the leader's counts are current; a standby exporting stale ones would be summed.
        self.metrics.jibri_pods.clear()

    # -- background checks ------------------------------------------------------------------
    async def check_permissions(self) -> None:
        missing: list[str] = []
        for permission in required_permissions(self.settings):
            allowed = await self.cluster.can_i(
                verb=permission.verb,
                resource=permission.resource,
                group=permission.group,
                name=permission.name,
            )
            if not allowed:
                missing.append(str(permission))
        if missing and tuple(missing) != self.health.missing_permissions:
            log.error(
                "missing Kubernetes permissions; not ready until the Role grants them",
                extra={"namespace": self.settings.namespace, "missing": missing},
            )
        elif not missing and self.health.missing_permissions:
            log.info("Kubernetes permissions complete")
        self.health.missing_permissions = tuple(missing)

    async def _readiness_loop(self) -> None:
        since_permissions = PERMISSION_PERIOD
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

    async def _reload_keys_loop(self) -> None:
        assert self.verifier is not None
        while True:
            await asyncio.sleep(KEY_RELOAD_PERIOD)
            await asyncio.to_thread(self.verifier.reload_if_changed)

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
        try:
            async with asyncio.TaskGroup() as group:
                background = [
                    group.create_task(self._readiness_loop()),
                    group.create_task(self.elector.run(self._start_sweeping, self._stop_sweeping)),
                ]
                if self.verifier is not None:
                    background.append(group.create_task(self._reload_keys_loop()))
                if self.cache is not None:
                    background.append(group.create_task(self.cache.run()))
                await stop.wait()
                log.info("shutting down")
                self.health.shutting_down = True
                self._stop_sweeping()
                for task in background:
                    task.cancel()
        finally:
            self._stop_sweeping()
            await runner.cleanup()  # stop listening, then finish requests in flight
            await self.elector.release()
            await self.actuator.drain()
            await self.prober.close()
            log.info("stopped")


def _fail(message: str) -> int:
    print(f"jibri-pod-controller: configuration error: {message}", file=sys.stderr)
    return 2


async def _serve(settings: Settings, verifier: Verifier | None, env: Mapping[str, str]) -> None:
    api = await load_api_client(env.get("KUBECONFIG") or None, env)
    cluster = KubeCluster(api, namespace=settings.namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Controller(settings, cluster, verifier, stream=cluster).run(stop)
    finally:
        await cluster.close()


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    environment = os.environ if env is None else env
    try:
        settings = load_settings(environment)
    except ConfigError as exc:
        return _fail(str(exc))
    verifier: Verifier | None = None
    if settings.jwt is not None:
        try:
            verifier = Verifier(settings.jwt)
        except KeyLoadError as exc:
            return _fail(f"{exc.setting}: {exc}")
    try:
        credentials.locate(environment.get("KUBECONFIG") or None, environment)
    except CredentialsError as exc:
        return _fail(str(exc))
    logs.setup(settings.log_level, settings.log_format)
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
            runner.run(_serve(settings, verifier, environment))
    except CredentialsError as exc:
        return _fail(str(exc))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
