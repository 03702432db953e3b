"""The pod cache against a scripted list/watch stream (a hand-written fake of the API)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jibri_pod_controller.adapters import kube
from jibri_pod_controller.adapters.kube import WatchEvent
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.core.config import Settings
from jibri_pod_controller.core.limiting import RateLimiter
from jibri_pod_controller.core.pods import PodFacts, parse_pod
from jibri_pod_controller.loops.acting import Actuator
from jibri_pod_controller.loops.serving import Health, WebhookHandler, build_app
from jibri_pod_controller.loops.watching import PodCache
from tests.component.fakes import (
    BUSY_LABELS,
    IDLE_LABELS,
    FakeCluster,
    make_settings,
    pod_json,
)


def raw(name: str, rv: str, *, uid: str = "", state: str = "idle") -> dict[str, Any]:
    return pod_json(
        name, uid=uid or f"uid-{name}", resource_version=rv, labels={"app": "jibri", "state": state}
    )


class FakeStream:
    """Serves scripted lists and watches; records what was asked."""

    def __init__(self) -> None:
        self.lists: deque[tuple[list[dict[str, Any]], str]] = deque()
        self.watches: deque[list[WatchEvent] | asyncio.Queue[WatchEvent] | BaseException] = deque()
        self.asked: list[tuple[str, str]] = []
        self.idle = asyncio.Event()

    async def list_pods_snapshot(
        self, *, selector: str, page_size: int
    ) -> tuple[list[PodFacts], str]:
        self.asked.append(("list", selector))
        items, version = self.lists.popleft()
        return [parse_pod(raw) for raw in items], version

    async def watch_pods_raw(
        self, *, selector: str, resource_version: str, timeout_seconds: int
    ) -> AsyncIterator[WatchEvent]:
        self.asked.append(("watch", resource_version))
        if not self.watches:
            self.idle.set()
            await asyncio.Event().wait()  # a watch with nothing more to say
        script = self.watches.popleft()
        if isinstance(script, BaseException):
            raise script
        if isinstance(script, asyncio.Queue):
            self.idle.set()
            while True:  # a live watch: events as the test puts them
                yield await script.get()
        for event in script:
            yield event


async def run_until_idle(cache: PodCache, stream: FakeStream) -> asyncio.Task[None]:
    task = asyncio.create_task(cache.run())
    await asyncio.wait_for(stream.idle.wait(), timeout=5)
    return task


@pytest.fixture
def stream() -> FakeStream:
    return FakeStream()


def cache_for(stream: FakeStream) -> PodCache:
    return PodCache(stream=stream, selector="app=jibri", metrics=Metrics(), jitter=lambda: 0.0)


def webhook_app(
    settings: Settings, cluster: FakeCluster, cache: PodCache, metrics: Metrics
) -> web.Application:
    """The webhook server on `cluster`, reading pods through `cache`, no auth, no rate limit."""
    handler = WebhookHandler(
        settings=settings,
        cluster=cluster,
        actuator=Actuator(cluster=cluster, metrics=metrics, busy_labels=settings.busy_labels),
        metrics=metrics,
        verifier=None,
        limiter=RateLimiter(rate=0, burst=0),
        cache=cache,
    )
    return build_app(handler=handler, metrics=metrics, health=Health(), max_body_bytes=4096)


def busy_body(pod: str) -> dict[str, Any]:
    return {"jibriId": pod, "status": {"busyStatus": "BUSY", "health": {"healthStatus": "HEALTHY"}}}


async def test_not_synced_until_listed(stream: FakeStream) -> None:
    cache = cache_for(stream)
    assert cache.get("a") is None
    stream.lists.append(([raw("a", "5")], "10"))
    task = await run_until_idle(cache, stream)
    pod = cache.get("a")
    assert pod is not None
    assert pod.resource_version == "5"
    assert stream.asked == [("list", "app=jibri"), ("watch", "10")]
    task.cancel()


async def test_watch_events_update_and_remove(stream: FakeStream) -> None:
    cache = cache_for(stream)
    stream.lists.append(([raw("a", "5"), raw("b", "6")], "10"))
    stream.watches.append(
        [
            WatchEvent("MODIFIED", raw("a", "11", state="busy")),
            WatchEvent("DELETED", raw("b", "12")),
            WatchEvent("ADDED", raw("c", "13")),
            WatchEvent("BOOKMARK", {"metadata": {"resourceVersion": "20"}}),
        ]
    )
    task = await run_until_idle(cache, stream)
    a = cache.get("a")
    assert a is not None
    assert a.labels["state"] == "busy"
    assert cache.get("b") is None
    assert cache.get("c") is not None
    # The next watch resumes from the bookmark.
    assert stream.asked[-1] == ("watch", "20")
    task.cancel()


async def test_gone_relists(stream: FakeStream) -> None:
    cache = cache_for(stream)
    stream.lists.extend([([raw("a", "5")], "10"), ([raw("b", "30")], "40")])
    stream.watches.append(kube.Gone("watch pods: too old"))
    task = await run_until_idle(cache, stream)
    assert cache.get("a") is None  # the relist replaced the contents
    assert cache.get("b") is not None
    assert stream.asked == [
        ("list", "app=jibri"),
        ("watch", "10"),
        ("list", "app=jibri"),
        ("watch", "40"),
    ]
    task.cancel()


async def test_errors_back_off_and_relist(stream: FakeStream) -> None:
    cache = PodCache(stream=stream, selector="app=jibri", metrics=Metrics(), jitter=lambda: -0.49)
    stream.lists.extend([([raw("a", "5")], "10"), ([raw("a", "7")], "12")])
    stream.watches.append(kube.Unavailable("watch pods: HTTP 503"))
    task = await run_until_idle(cache, stream)
    pod = cache.get("a")
    assert pod is not None
    assert pod.resource_version == "7"
    task.cancel()


async def test_a_read_that_raced_a_deletion_does_not_bring_the_pod_back(
    stream: FakeStream,
) -> None:
    cache = cache_for(stream)
    stream.lists.append(([raw("a", "5")], "10"))
    stream.watches.append([WatchEvent("DELETED", raw("a", "11"))])
    since = cache.mark()  # a GET of "a" starts now (before the cache has even listed)...
    task = await run_until_idle(cache, stream)  # ...the list and the deletion arrive...
    assert cache.get("a") is None
    late = parse_pod(raw("a", "5"))  # ...and then the GET's answer, from before the delete
    assert cache.remember(late, since=since) is False
    assert cache.get("a") is None
    task.cancel()


async def test_a_read_newer_than_everything_the_watch_said_is_remembered(
    stream: FakeStream,
) -> None:
    cache = cache_for(stream)
    stream.lists.append(([raw("a", "5")], "10"))
    stream.watches.append([WatchEvent("MODIFIED", raw("a", "11"))])
    task = await run_until_idle(cache, stream)
    since = cache.mark()
    assert cache.remember(parse_pod(raw("new", "3")), since=since) is True
    assert cache.remember(parse_pod(raw("a", "12", state="busy")), since=since) is True
    pod = cache.get("a")
    assert pod is not None
    assert pod.labels["state"] == "busy"
    assert cache.get("new") is not None
    # resourceVersions are never compared: a "smaller" one read later is simply the latest.
    assert cache.remember(parse_pod(raw("a", "2")), since=cache.mark()) is True
    task.cancel()


def test_nothing_is_remembered_while_unsynced() -> None:
    cache = cache_for(FakeStream())
    assert cache.remember(parse_pod(raw("a", "1")), since=cache.mark()) is False
    assert cache.get("a") is None


def test_forget_only_the_pod_held() -> None:
    cache = cache_for(FakeStream())
    cache.synced.set()
    assert cache.remember(parse_pod(raw("a", "3", uid="new-uid")), since=cache.mark())
    cache.forget("a", "old-uid")  # not the pod it holds
    assert cache.get("a") is not None
    cache.forget("a", "new-uid")
    assert cache.get("a") is None


class BrokenWatch(FakeStream):
    """Lists fine; every watch is refused (a Role without watch, or a broken proxy)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error
        self.failed = asyncio.Event()

    async def watch_pods_raw(
        self, *, selector: str, resource_version: str, timeout_seconds: int
    ) -> AsyncIterator[WatchEvent]:
        self.asked.append(("watch", resource_version))
        self.failed.set()
        raise self.error
        yield  # pragma: no cover - makes this an async generator


@pytest.mark.parametrize(
    "error", [kube.Forbidden("watch pods: HTTP 403"), kube.Unavailable("down"), kube.Gone("old")]
)
async def test_a_broken_watch_leaves_the_cache_unsynced(error: BaseException) -> None:
    stream = BrokenWatch(error)
    stream.lists.extend([([raw("a", "5")], "10")] * 3)
    cache = PodCache(stream=stream, selector="app=jibri", metrics=Metrics(), jitter=lambda: 0.5)
    task = asyncio.create_task(cache.run())
    await asyncio.wait_for(stream.failed.wait(), timeout=5)
    await asyncio.sleep(0)
    # The list succeeded, the watch did not: nothing will tell the cache about changes.
    assert not cache.synced.is_set()
    assert cache.get("a") is None
    assert cache.snapshot() is None
    since = cache.mark()
    assert cache.remember(parse_pod(raw("a", "6")), since=since) is False
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not cache.synced.is_set()


async def test_webhook_resend_is_answered_from_the_cache_without_an_api_read() -> None:
    cluster = FakeCluster()
    busy = cluster.add_pod("jibri-0", ips=["127.0.0.1"], labels=BUSY_LABELS)
    settings = make_settings()
    metrics = Metrics()
    stream = FakeStream()
    stream.lists.append(([cluster.pods["jibri-0"]], "100"))
    cache = PodCache(stream=stream, selector="app=jibri", metrics=metrics)
    task = await run_until_idle(cache, stream)
    app = webhook_app(settings, cluster, cache, metrics)
    async with TestClient(TestServer(app)) as client:
        # Any API read would fail: the answer can only come from the cache.
        cluster.fail_next("get_pod", kube.Unavailable("down"), kube.Unavailable("down"))
        body = busy_body(busy.name)
        response = await client.post(f"/webhook/{busy.name}/v1/status", json=body)
        assert response.status == 200
        assert await response.json() == {"result": "none"}
        # A pod the cache does not hold is read from the API server (which is down here).
        body["jibriId"] = "jibri-new"
        response = await client.post("/webhook/jibri-new/v1/status", json=body)
        assert response.status == 503
    assert cluster.writes == []
    task.cancel()


async def test_the_cache_relists_after_its_resync_period(stream: FakeStream) -> None:
    # First list at t=0; the watch ends (times out) at t=601, past the resync period.
    times = iter([0.0, 601.0, 602.0])
    cache = PodCache(
        stream=stream,
        selector="app=jibri",
        metrics=Metrics(),
        resync_period=600,
        monotonic=lambda: next(times, 603.0),
    )
    stream.lists.extend([([raw("a", "5")], "10"), ([raw("b", "50")], "60")])
    stream.watches.append([WatchEvent("MODIFIED", raw("a", "11"))])
    task = await run_until_idle(cache, stream)
    assert cache.get("b") is not None
    assert cache.get("a") is None
    assert stream.asked == [
        ("list", "app=jibri"),
        ("watch", "10"),
        ("list", "app=jibri"),
        ("watch", "60"),
    ]
    snapshot = cache.snapshot()
    assert snapshot is not None
    assert [p.name for p in snapshot] == ["b"]
    task.cancel()


def test_no_snapshot_before_the_first_list() -> None:
    assert cache_for(FakeStream()).snapshot() is None


async def test_a_garbled_watch_stream_relists_instead_of_failing(stream: FakeStream) -> None:
    cache = PodCache(stream=stream, selector="app=jibri", metrics=Metrics(), jitter=lambda: -0.49)
    stream.lists.extend([([raw("a", "5")], "10"), ([raw("b", "7")], "12")])
    stream.watches.append(ValueError("unexpected character in a watch line"))
    task = await run_until_idle(cache, stream)
    assert cache.get("b") is not None
    assert not task.done()  # still running
    task.cancel()


async def test_next_change_wakes_on_a_change_to_that_pod_only(stream: FakeStream) -> None:
    cache = cache_for(stream)
    live: asyncio.Queue[WatchEvent] = asyncio.Queue()
    stream.lists.append(([raw("a", "5"), raw("b", "6")], "10"))
    stream.watches.append(live)
    task = await run_until_idle(cache, stream)
    waiting = asyncio.create_task(cache.next_change("a", within=5))
    await asyncio.sleep(0)
    await live.put(WatchEvent("MODIFIED", raw("b", "11")))  # another pod: still waiting
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await live.put(WatchEvent("MODIFIED", raw("a", "12")))
    assert await asyncio.wait_for(waiting, 1) is True
    pod = cache.get("a")
    assert pod is not None
    assert pod.resource_version == "12"
    assert cache._waiters == {}
    task.cancel()


async def test_next_change_times_out_and_leaves_nothing_behind(stream: FakeStream) -> None:
    cache = cache_for(stream)
    stream.lists.append(([raw("a", "5")], "10"))
    task = await run_until_idle(cache, stream)
    assert await cache.next_change("a", within=0.05) is False
    assert cache._waiters == {}
    task.cancel()


async def test_next_change_does_not_wait_on_an_unsynced_cache(stream: FakeStream) -> None:
    cache = cache_for(stream)
    assert await asyncio.wait_for(cache.next_change("a", within=10), 0.5) is False


async def test_a_broken_watch_wakes_whoever_waits(stream: FakeStream) -> None:
    cache = PodCache(stream=stream, selector="app=jibri", metrics=Metrics(), jitter=lambda: 0.0)
    live: asyncio.Queue[WatchEvent] = asyncio.Queue()
    stream.lists.append(([raw("a", "5")], "10"))
    stream.watches.append(live)
    task = await run_until_idle(cache, stream)
    waiting = asyncio.create_task(cache.next_change("a", within=5))
    await asyncio.sleep(0)
    task.cancel()  # the watch stops: the cache is unsynced and the waiter must ask the server
    assert await asyncio.wait_for(waiting, 1) is True
    assert cache.get("a") is None


async def test_a_webhook_before_the_pods_address_waits_for_the_watch_not_a_get() -> None:
    cluster = FakeCluster()
    cluster.add_pod("jibri-0", uid="uid-jibri-0", ips=[], labels=IDLE_LABELS)
    settings = make_settings()
    metrics = Metrics()
    stream = FakeStream()
    live: asyncio.Queue[WatchEvent] = asyncio.Queue()
    stream.lists.append(([cluster.pods["jibri-0"]], "100"))
    stream.watches.append(live)
    cache = PodCache(stream=stream, selector="app=jibri", metrics=metrics)
    task = await run_until_idle(cache, stream)
    app = webhook_app(settings, cluster, cache, metrics)
    body = busy_body("jibri-0")
    async with TestClient(TestServer(app)) as client:
        reads: list[str] = []
        cluster.before_next("get_pod", lambda: reads.append("get"))
        answer = asyncio.create_task(client.post("/webhook/jibri-0/v1/status", json=body))
        await asyncio.sleep(0.1)  # the webhook is waiting for the pod's address
        assert not answer.done()
        # The kubelet's status update lands, and the watch tells of it.
        cluster.pods["jibri-0"] = raw_with_ip("jibri-0", "101", "127.0.0.1")
        await live.put(WatchEvent("MODIFIED", cluster.pods["jibri-0"]))
        response = await asyncio.wait_for(answer, 2)
        assert response.status == 200, await response.text()
        assert await response.json() == {"result": "done"}
    assert reads == []  # the watch answered, not a GET
    assert [w.method for w in cluster.writes] == ["patch_pod"]
    assert metrics.address_waits.labels(outcome="arrived")._value.get() == 1
    task.cancel()


async def test_a_webhook_whose_address_never_comes_asks_the_server_within_its_budget() -> None:
    cluster = FakeCluster()
    cluster.add_pod("jibri-0", uid="uid-jibri-0", ips=[], labels=IDLE_LABELS)
    settings = make_settings(API_TIMEOUT="0.4")
    metrics = Metrics()
    stream = FakeStream()
    stream.lists.append(([cluster.pods["jibri-0"]], "100"))
    cache = PodCache(stream=stream, selector="app=jibri", metrics=metrics)
    task = await run_until_idle(cache, stream)
    app = webhook_app(settings, cluster, cache, metrics)
    body = busy_body("jibri-0")
    async with TestClient(TestServer(app)) as client:
        # The server has the address the watch never brought.
        cluster.pods["jibri-0"] = raw_with_ip("jibri-0", "101", "127.0.0.1")
        started = asyncio.get_running_loop().time()
        response = await client.post("/webhook/jibri-0/v1/status", json=body)
        took = asyncio.get_running_loop().time() - started
        assert response.status == 200, await response.text()
        assert await response.json() == {"result": "done"}
    assert 0.15 <= took < 0.4
    assert metrics.address_waits.labels(outcome="timed-out")._value.get() == 1
    assert [w.method for w in cluster.writes] == ["patch_pod"]
    task.cancel()


async def test_a_cached_pod_with_another_address_is_asked_at_once() -> None:
    cluster = FakeCluster()
    cluster.add_pod("jibri-0", ips=["10.9.9.9"], labels=IDLE_LABELS)
    settings = make_settings()
    metrics = Metrics()
    stream = FakeStream()
    stream.lists.append(([cluster.pods["jibri-0"]], "100"))
    cache = PodCache(stream=stream, selector="app=jibri", metrics=metrics)
    task = await run_until_idle(cache, stream)
    app = webhook_app(settings, cluster, cache, metrics)
    body = busy_body("jibri-0")
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/webhook/jibri-0/v1/status", json=body)
        assert response.status == 403
        assert await response.json() == {"error": "wrong-source-address"}
    assert metrics.address_waits.labels(outcome="timed-out")._value.get() == 0
    assert metrics.address_waits.labels(outcome="arrived")._value.get() == 0
    assert cluster.writes == []
    task.cancel()


def raw_with_ip(name: str, rv: str, ip: str) -> dict[str, Any]:
    return pod_json(name, uid=f"uid-{name}", resource_version=rv, labels=IDLE_LABELS, ips=[ip])
