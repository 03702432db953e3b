"""A watch-fed cache of the Jibri pods in the namespace, so webhooks rarely need an API call.

Every Jibri resends its status once a minute; with hundreds of Jibris and several replicas, a
GET per resend would be most of the controller's API traffic. The cache answers those reads.
It is only ever a hint: decisions that write re-check on the server side (the detach patch
carries the pod's uid and resourceVersion, the delete a uid precondition), so a stale entry
costs at most one 409 and a fresh GET, never a wrong write. A pod the cache does not hold
(new, or not a Jibri pod) is read with a GET.

The loop is the usual informer: list (paginated, raw JSON), then watch from the list's
resourceVersion with bookmarks; on 410 Gone or any error, list again after a short backoff; and
list again every ``resync_period`` anyway. A watch whose connection went silent (no event, not
even the bookmark the API server sends every minute) is such an error: `kube.Silent`, raised
after `kube.watch_silence` (75 s for the 300 s watch asked here), not after the watch's own
300 s. The sweeper walks this cache instead of listing
every Jibri pod on every sweep (it lists when the cache is not synced).

The pool loop is told of each change it applies (`listeners`), so it reconciles from the same
view it is woken by, with no watch of its own. A webhook can wait for the next change to one pod
(`next_change`): a Jibri may report before its kubelet's status update (with the pod's address)
reaches the cache, and waiting for the watch costs nothing where a GET per webhook, when a
thousand Jibris start at once, is a thousand reads on a busy API server.

The cache never pretends. It is *synced* only between a successful list and the next failure
of the watch (or of a relist): the moment the watch breaks it goes unsynced, so webhooks read
their pod with a GET and the sweeper lists, until a new list succeeds. And a pod read by a GET
is only remembered if the watch has told nothing newer about that name since the GET started
(a local sequence number, not a resourceVersion comparison: resourceVersions are opaque), so a
GET that raced a deletion cannot bring the deleted pod back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from jibri_pod_controller.adapters.kube import Gone, KubeError, WatchEvent
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.core.pods import PodFacts, PodParseError, parse_pod

log = logging.getLogger("jibri_pod_controller.cache")


class PodStream(Protocol):
    async def list_pods_snapshot(
        self, *, selector: str, page_size: int
    ) -> tuple[list[PodFacts], str]:
        """Every matching pod (parsed page by page) and the list's resourceVersion."""
        ...

    def watch_pods_raw(
        self, *, selector: str, resource_version: str, timeout_seconds: int
    ) -> AsyncIterator[WatchEvent]: ...


def _resource_version(raw: Mapping[str, Any]) -> str:
    meta = raw.get("metadata")
    return str(meta.get("resourceVersion") or "") if isinstance(meta, dict) else ""


class PodCache:
    def __init__(
        self,
        *,
        stream: PodStream,
        selector: str,
        metrics: Metrics,
        page_size: int = 500,
        watch_timeout: int = 300,
        resync_period: float = 600.0,
        jitter: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._selector = selector
        self._metrics = metrics
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._jitter = jitter
        self._resync_period = resync_period
        self._monotonic = monotonic
        self._listed_at = 0.0
        self._pods: dict[str, PodFacts] = {}
        self._sequence = 0
        """Counts the changes the list and the watch made; `mark` hands it out."""
        self._changed: dict[str, int] = {}
        """Name -> sequence number of the last change (store or delete) to that name."""
        self._listed_sequence = 0
        self.synced = asyncio.Event()
        self.listeners: list[Callable[[PodFacts | None, PodFacts | None], None]] = []
        """Called on the loop with (before, after) for each pod the list or the watch changed;
        (None, None) after a new list, when anything may have changed."""
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        """Name -> webhooks waiting for the next change to that name (`next_change`)."""

    def _unsynced(self) -> None:
        self.synced.clear()
        self._metrics.pod_cache_synced.set(0)
        self._wake_all()  # nothing more will come from this watch: let them ask the server

    def _wake(self, name: str) -> None:
        for waiter in self._waiters.pop(name, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _wake_all(self) -> None:
        for name in list(self._waiters):
            self._wake(name)

    async def next_change(self, name: str, within: float) -> bool:
        """Wait up to ``within`` seconds for the list or the watch to change ``name``.

        True when something changed it (or a new list may have, or the cache went unsynced:
        look again either way); False when the time ran out with nothing new.
        """
        if not self.synced.is_set() or within <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._waiters.setdefault(name, [])
        waiting.append(waiter)
        try:
            await asyncio.wait_for(waiter, within)  # cancels the future when the time is up
        except TimeoutError:
            return False
        finally:
            rest = self._waiters.get(name)
            if rest is not None:
                with contextlib.suppress(ValueError):
                    rest.remove(waiter)
                if not rest:
                    del self._waiters[name]
        return True

    def __len__(self) -> int:
        return len(self._pods)

    def snapshot(self) -> list[PodFacts] | None:
        """Every cached Jibri pod, or None while the cache is not synced."""
        if not self.synced.is_set():
            return None
        return list(self._pods.values())

    def get(self, name: str) -> PodFacts | None:
        """The cached pod, or None when the cache is not synced or does not hold it."""
        if not self.synced.is_set():
            return None
        return self._pods.get(name)

    def mark(self) -> int:
        """A point in the cache's history; take it before a GET whose answer to `remember`."""
        return self._sequence

    def remember(self, pod: PodFacts, *, since: int) -> bool:
        """Record a pod read from the API server by a request that started at ``since``.

        Refused (False) when the list or the watch changed that name after ``since``: what
        they said is at least as new as the read, and a deletion must not be undone.
        """
        if not self.synced.is_set():
            return False
        if self._changed.get(pod.name, self._listed_sequence) > since:
            return False
        self._pods[pod.name] = pod
        return True

    def _touch(self, name: str) -> None:
        self._sequence += 1
        self._changed[name] = self._sequence
        if name in self._waiters:
            self._wake(name)

    def forget(self, name: str, uid: str) -> None:
        current = self._pods.get(name)
        if current is not None and current.uid == uid:
            del self._pods[name]
            self._changed_pod(current, None)
        self._touch(name)

    def _changed_pod(self, before: PodFacts | None, after: PodFacts | None) -> None:
        for listener in self.listeners:
            listener(before, after)

    def _store(self, raw: Mapping[str, Any]) -> None:
        try:
            pod = parse_pod(raw)
        except PodParseError as exc:
            log.warning("ignoring a pod the cache cannot read", extra={"error": str(exc)})
            return
        before = self._pods.get(pod.name)
        self._pods[pod.name] = pod
        self._touch(pod.name)
        self._changed_pod(before, pod)

    def _delete(self, raw: Mapping[str, Any]) -> None:
        meta = raw.get("metadata")
        if isinstance(meta, dict):
            self.forget(str(meta.get("name")), str(meta.get("uid")))

    async def _relist(self) -> str:
        pods, version = await self._stream.list_pods_snapshot(
            selector=self._selector, page_size=self._page_size
        )
        self._pods = {pod.name: pod for pod in pods}
        self._sequence += 1
        self._listed_sequence = self._sequence
        self._changed = {}
        self._listed_at = self._monotonic()
        self.synced.set()
        self._metrics.pod_cache_synced.set(1)
        self._changed_pod(None, None)
        self._wake_all()
        return version

    async def run(self) -> None:
        """List and watch until cancelled; unsynced whenever the watch is not running."""
        try:
            await self._run()
        finally:
            self._unsynced()

    async def _run(self) -> None:
        failures = 0
        version = ""
        while True:
            try:
                if not version:
                    version = await self._relist()
                    log.debug("pod cache listed", extra={"pods": len(self._pods)})
                async for event in self._stream.watch_pods_raw(
                    selector=self._selector,
                    resource_version=version,
                    timeout_seconds=self._watch_timeout,
                ):
                    version = _resource_version(event.raw) or version
                    if event.kind == "DELETED":
                        self._delete(event.raw)
                    elif event.kind in ("ADDED", "MODIFIED"):
                        self._store(event.raw)
                failures = 0
                if self._monotonic() - self._listed_at >= self._resync_period:
                    version = ""  # resync: a full list now and then repairs any drift
            except Gone:
                self._unsynced()
                version = ""  # compacted away: list again
            except Exception as exc:  # an API error or a garbled stream: never the process
                # Until a new list succeeds nothing tells the cache about changes: say so.
                self._unsynced()
                failures += 1
                version = ""
                kind = exc.kind if isinstance(exc, KubeError) else "unexpected"
                self._metrics.api_errors.labels(operation="watch", kind=kind).inc()
                delay = min(30.0, 0.5 * 2 ** min(failures, 6)) * (0.5 + self._jitter())
                log.warning("pod watch failed", extra={"error": repr(exc), "retry_in": delay})
                await asyncio.sleep(delay)
