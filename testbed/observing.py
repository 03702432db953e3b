"""Observing a run from outside: the pods through a list and a watch, a process's JSON log as
it grows, a condition polled until it holds, and the machine the run is on.

One way of each for the demo, the chaos run, the fake kubelet, the benchmarks and the tests.

A pod watch is an async generator that holds a streaming response. A generator that is only
dropped (its consumer broke out of the loop, or raised) is closed when the garbage collector
finds it, perhaps after its event loop has stopped, and the stream's socket is left open then
(`testbed.kube.abort_stream` says why that matters). So `watch_pods` hands its events out only
inside ``async with``, which closes the generator, and aborts the stream, however the loop ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
import orjson
from kubernetes_asyncio.client import ApiClient, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from testbed.kube import abort_stream, api_status

__all__ = [
    "Changed",
    "Interrupted",
    "Listed",
    "LogTail",
    "Machine",
    "PodEvent",
    "Watching",
    "json_lines",
    "machine",
    "wait_until",
    "watch_pods",
]

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Polling


async def wait_until(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Poll ``check`` until it returns a truthy value (that value, never None); raise
    TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Pods: a list, then a watch from its resourceVersion


@dataclass(frozen=True)
class Listed:
    """Every pod, from a list: the first one, or a new one after the watch's resourceVersion
    expired (410 Gone). A pod known before and missing here was deleted meanwhile."""

    pods: Sequence[Mapping[str, Any]]
    at: float
    """time.monotonic() when the list had been read."""

    def missing(self, known: Iterable[str]) -> list[str]:
        """The uids among ``known`` that this list does not have: pods deleted while no watch
        was open."""
        listed = {pod["metadata"]["uid"] for pod in self.pods}
        return [uid for uid in known if uid not in listed]


@dataclass(frozen=True)
class Watching:
    """A watch is open from ``version``: every change since the last list or event follows."""

    version: str


@dataclass(frozen=True)
class Changed:
    """A pod added, modified (a deletionTimestamp is a modification) or deleted."""

    kind: Literal["ADDED", "MODIFIED", "DELETED"]
    pod: Mapping[str, Any]
    at: float
    """time.monotonic() when the event was read from the stream."""

    @property
    def deleted(self) -> bool:
        return self.kind == "DELETED"


@dataclass(frozen=True)
class Interrupted:
    """The watch ended and is opened again from the last resourceVersion: at once when the
    server ended the stream, after a new list when the version expired, after a back-off when
    it failed."""

    reason: Literal["stream ended", "resourceVersion expired", "failed"]
    error: BaseException | None = None
    """What broke it, when it failed."""

    def __str__(self) -> str:
        if self.error is None:
            return self.reason
        return f"{type(self.error).__name__}: {self.error}"


PodEvent = Listed | Watching | Changed | Interrupted

LIST_TIMEOUT = 30.0
WATCH_TIMEOUT = 240
"""Seconds the server keeps a watch open (timeoutSeconds); the client reads for 30 s more."""
ATTEMPTS_BEFORE_LISTED = 5
"""Failures in a row before the first list that end the watch with the last error (a
cluster that cannot be listed at all); after a first list, a watch retries for ever."""
BACKOFF_FIRST, BACKOFF_MAX = 0.4, 5.0
RETRIED = (ApiException, aiohttp.ClientError, OSError, ValueError)
"""Errors that interrupt a watch (timeouts are OSErrors, a garbled line a ValueError)."""
_CHANGES: Mapping[str, Literal["ADDED", "MODIFIED", "DELETED"]] = {
    "ADDED": "ADDED",
    "MODIFIED": "MODIFIED",
    "DELETED": "DELETED",
}


def watch_pods(
    api: ApiClient, namespace: str | None, *, timeout_seconds: int = WATCH_TIMEOUT
) -> contextlib.aclosing[AsyncGenerator[PodEvent, None]]:
    """The pods of ``namespace`` (of all namespaces with None), as an informer sees them: a
    list, then a watch from its resourceVersion, opened again whenever it ends.

        async with watch_pods(api, "demo") as events:
            async for event in events:
                ...

    Bookmarks only move the resourceVersion on. Before the first list has succeeded, a
    401 or 403, or `ATTEMPTS_BEFORE_LISTED` failures in a row, end it with that error.
    """
    return contextlib.aclosing(_pod_events(CoreV1Api(api), namespace, timeout_seconds))


async def _pod_events(
    core: CoreV1Api, namespace: str | None, timeout_seconds: int
) -> AsyncGenerator[PodEvent, None]:
    version: str | None = None
    listed = False
    failures = 0
    while True:
        try:
            if version is None:
                pods, version = await _list(core, namespace)
                listed = True
                yield Listed(pods, time.monotonic())
            response = await _call(
                core,
                namespace,
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds,
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(
                    sock_connect=10, sock_read=timeout_seconds + 30
                ),
            )
            async with response:
                if response.status != 200:
                    _raise_for_status(response.status, await response.read())
                yield Watching(version)
                try:
                    async for line in response.content:
                        at = time.monotonic()
                        if not line.strip():
                            continue
                        event = orjson.loads(line)
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                raise _ExpiredError
                            raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if kind in _CHANGES:
                            yield Changed(_CHANGES[kind], obj, at)
                finally:
                    if not response.content.at_eof():
                        abort_stream(response)  # stopped or failed mid-stream
            failures = 0
            yield Interrupted("stream ended")
        except _ExpiredError:
            version = None
            yield Interrupted("resourceVersion expired")
        except RETRIED as exc:
            failures += 1
            if not listed and (failures >= ATTEMPTS_BEFORE_LISTED or api_status(exc) in (401, 403)):
                raise
            yield Interrupted("failed", exc)
            await asyncio.sleep(min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX))


async def _call(core: CoreV1Api, namespace: str | None, **kwargs: Any) -> Any:
    # Any: a raw (``_preload_content=False``) response is not what the stubs declare.
    if namespace is None:
        return await core.list_pod_for_all_namespaces(**kwargs)
    return await core.list_namespaced_pod(namespace, **kwargs)


async def _list(core: CoreV1Api, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
    response = await _call(core, namespace, _preload_content=False, _request_timeout=LIST_TIMEOUT)
    async with response:
        body = await response.read()
        _raise_for_status(response.status, body)
    listing = orjson.loads(body)
    version: str = listing["metadata"]["resourceVersion"]
    return list(listing.get("items") or ()), version


class _ExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def _raise_for_status(status: int, body: bytes) -> None:
    # A raw (``_preload_content=False``) response comes back whatever its status.
    if status == 410:
        raise _ExpiredError
    if not 200 <= status < 300:
        raise ApiException(status=status, reason=body[:500].decode(errors="replace"))


# ---------------------------------------------------------------------------------------------
# Logs


def json_lines(data: bytes) -> list[dict[str, Any]]:
    """The JSON objects among the lines of ``data``; other lines are passed over."""
    entries: list[dict[str, Any]] = []
    for line in data.split(b"\n"):
        with contextlib.suppress(orjson.JSONDecodeError):
            entry = orjson.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


class LogTail:
    """The JSON lines a process appended to its log since the last call; a line still being
    written is kept until its end arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def new_entries(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        complete, _, self._partial = (self._partial + chunk).rpartition(b"\n")
        return json_lines(complete)


# ---------------------------------------------------------------------------------------------
# The machine


@dataclass(frozen=True)
class Machine:
    """What a figure depends on besides the code; the load average is each caller's own."""

    cpu: str
    """The CPU's model name (the processor type where /proc/cpuinfo names none)."""
    cores: int | None
    memory_bytes: int
    """0 when unknown."""
    kernel: str
    python: str


def machine() -> Machine:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    memory = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory = int(Path("/proc/meminfo").read_text().split()[1]) * 1024  # MemTotal, in kB
    return Machine(
        cpu=cpu or platform.processor() or "unknown",
        cores=os.cpu_count(),
        memory_bytes=memory,
        kernel=platform.release(),
        python=platform.python_version(),
    )
