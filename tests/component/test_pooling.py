"""The pool loop against a hand-written in-memory API (JibriPools, a Deployment and its scale,
pods, HPAs, Events): the demand policy's state rebuilt from the API after a restart, status
fields, a write only on change, dry-run, a refused scale write."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jibri_pod_controller.adapters import kube
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.core.decisions import Failed, ProbeFailure, ProbeResult, Reported
from jibri_pod_controller.core.jibri import BusyStatus
from jibri_pod_controller.core.pods import PodFacts, parse_pod
from jibri_pod_controller.core.scaledown import ShutdownOutcome
from jibri_pod_controller.core.selectors import parse_selector
from jibri_pod_controller.loops.pooling import PoolReconciler
from jibri_pod_controller.loops.watching import PodCache

NS = "jitsi"
NOW = datetime(2026, 6, 3, 12, 0, tzinfo=UTC)
BUSY = {"app": "jibri", "state": "busy"}
IDLE = {"app": "jibri", "state": "idle"}
POOLS = f"/apis/jibri-pod-controller.io/v1alpha1/namespaces/{NS}/jibripools"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
DEPLOYMENT = f"{DEPLOYMENTS}/jibri"
PODS = f"/api/v1/namespaces/{NS}/pods"


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


_IPS: dict[str, str] = {}


def _ip_of(name: str) -> str:
    """One address per pod name, never shared (str hashes vary per process, and collided)."""
    count = len(_IPS)
    return _IPS.setdefault(name, f"10.{count // 65536 % 256}.{count // 256 % 256}.{count % 256}")


def pod(
    name: str,
    *,
    busy: bool = False,
    created: datetime = NOW - timedelta(hours=1),
    ready_after: float = 30.0,
    busy_since: datetime | None = None,
) -> dict[str, Any]:
    annotations = {}
    if busy:
        annotations = {
            "jibri-pod-controller/detached-from": "jibri",
            "jibri-pod-controller/busy-since": stamp(busy_since or NOW),
        }
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "namespace": NS,
            "labels": {**(BUSY if busy else IDLE), "pod-template-hash": "abc"},
            "annotations": annotations,
            "creationTimestamp": stamp(created),
            "resourceVersion": "1",
            "ownerReferences": []
            if busy
            else [{"kind": "ReplicaSet", "name": "jibri-abc", "controller": True}],
        },
        "status": {
            "phase": "Running",
            "podIP": _ip_of(name),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastTransitionTime": stamp(created + timedelta(seconds=ready_after)),
                }
            ],
        },
    }


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386, as the API server applies a merge patch: objects merge, null removes, any
    other value (a list too) replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


@dataclass
class FakeApi:
    """`JsonApi` in memory, with the API server's answers the pool loop relies on."""

    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    replicas: int = 2
    version: int = 1
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    hpa_targets: list[str] = field(default_factory=list)
    writes: list[tuple[str, str, Any]] = field(default_factory=list)
    reads: list[tuple[str, str]] = field(default_factory=list)
    """(path, labelSelector) of every GET."""
    conflict_next_scale: bool = False

    def add_pool(
        self, name: str, spec: Mapping[str, Any], status: Mapping[str, Any] | None = None
    ) -> None:
        self.pools[name] = {
            "metadata": {"name": name, "uid": f"uid-{name}", "generation": 1},
            "spec": {"minSpare": 1, "scaleDownDelaySeconds": 300, **spec},
            "status": dict(status or {}),
        }

    def add_pod(self, raw: dict[str, Any]) -> None:
        self.pods[raw["metadata"]["name"]] = raw

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        request_timeout: float | None = None,
    ) -> Any:
        await asyncio.sleep(0)
        if method != "GET":
            self.writes.append((method, path, copy.deepcopy(body)))
        else:
            self.reads.append((path, (query or {}).get("labelSelector", "")))
        if method == "GET" and path == POOLS:
            return {"items": copy.deepcopy(list(self.pools.values()))}
        if method == "GET" and path == DEPLOYMENT:
            return self.deployment()
        if method == "GET" and path == DEPLOYMENTS:
            return {"items": [self.deployment()]}
        if method == "PUT" and path == DEPLOYMENT + "/scale":
            if self.conflict_next_scale or body["metadata"]["resourceVersion"] != str(self.version):
                self.conflict_next_scale = False
                raise kube.Conflict("the object has been modified")
            self.replicas = body["spec"]["replicas"]
            self.version += 1
            return {"metadata": {"resourceVersion": str(self.version)}}
        if method == "GET" and path.endswith("/horizontalpodautoscalers"):
            return {
                "items": [
                    {
                        "metadata": {"name": t},
                        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": t}},
                    }
                    for t in self.hpa_targets
                ]
            }
        if method == "GET" and path == f"/api/v1/namespaces/{NS}/pods":
            wanted = dict(part.split("=") for part in (query or {})["labelSelector"].split(","))
            items = [
                p
                for p in self.pods.values()
                if all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())
            ]
            return {"items": copy.deepcopy(items), "metadata": {}}
        if method == "PATCH" and path.startswith(POOLS) and path.endswith("/status"):
            name = path.removeprefix(POOLS + "/").removesuffix("/status")
            merge_patch(self.pools[name]["status"], body["status"])
            return self.pools[name]
        if method == "PATCH" and path.startswith(f"/api/v1/namespaces/{NS}/pods/"):
            name = path.rsplit("/", 1)[1]
            annotations = self.pods[name]["metadata"]["annotations"]
            for key, value in body["metadata"]["annotations"].items():
                if value is None:
                    annotations.pop(key, None)
                else:
                    annotations[key] = value
            return self.pods[name]
        if method == "POST" and path.endswith("/events"):
            return body
        raise kube.NotFound(f"{method} {path}")

    async def watch_json(
        self, path: str, *, query: Mapping[str, str], timeout_seconds: int
    ) -> AsyncIterator[kube.WatchEvent]:
        await asyncio.Event().wait()
        yield kube.WatchEvent(kind="BOOKMARK", raw={})  # pragma: no cover

    def deployment(self) -> dict[str, Any]:
        return {
            "metadata": {"name": "jibri", "uid": "d1", "resourceVersion": str(self.version)},
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": IDLE},
                "template": {"metadata": {"labels": IDLE}},
            },
        }

    def kinds(self) -> list[str]:
        """The writes, by what they wrote."""
        out = []
        for method, path, _ in self.writes:
            if path.endswith("/scale"):
                out.append("scale")
            elif path.endswith("/status"):
                out.append("status")
            elif path.endswith("/events"):
                out.append("event")
            elif "/pods/" in path:
                out.append("pod")
            else:
                out.append(f"{method} {path}")
        return out


class Probes:
    """Health answers by address (IDLE unless told otherwise)."""

    def __init__(self, answers: Mapping[str, BusyStatus | ProbeResult] | None = None) -> None:
        self.answers: dict[str, BusyStatus | ProbeResult] = dict(answers or {})
        self.asked: list[str] = []

    async def probe(self, ip: str) -> ProbeResult:
        self.asked.append(ip)
        answer = self.answers.get(ip, BusyStatus.IDLE)
        return Reported(answer) if isinstance(answer, BusyStatus) else answer


class Jibris:
    """Jibri's internal API on every address: a graceful shutdown makes an idle Jibri exit
    (its health API then refuses connections) and leaves a busy one recording."""

    def __init__(self, probes: Probes, outcome: ShutdownOutcome = ShutdownOutcome.ACCEPTED) -> None:
        self.probes = probes
        self.outcome = outcome
        self.asked: list[str] = []
        self.port = 3333

    async def graceful_shutdown(self, ip: str) -> tuple[ShutdownOutcome, str]:
        self.asked.append(ip)
        if self.outcome is not ShutdownOutcome.ACCEPTED:
            return self.outcome, "ClientConnectorError"
        if self.probes.answers.get(ip, BusyStatus.IDLE) is not BusyStatus.BUSY:
            self.probes.answers[ip] = Failed(ProbeFailure.CONNECT, "ConnectionRefusedError")
        return ShutdownOutcome.ACCEPTED, ""


class Detaches:
    def __init__(self) -> None:
        self.detached: list[str] = []

    async def apply(self, action: Any, pod: Any, *, source: Any) -> None:
        self.detached.append(pod.name)


def reconciler(
    api: FakeApi,
    *,
    now: datetime | Callable[[], datetime] = NOW,
    dry_run: bool = False,
    probes: Probes | None = None,
    cache: PodCache | None = None,
    jibri_selector: str = "app=jibri",
    period: float = 5,
    jibris: Jibris | None = None,
    actuator: Detaches | None = None,
) -> PoolReconciler:
    return PoolReconciler(
        api=api,
        namespace=NS,
        prober=probes or Probes(),  # type: ignore[arg-type]
        actuator=actuator or Detaches(),  # type: ignore[arg-type]
        metrics=Metrics(),
        busy_labels=BUSY,
        period=period,
        dry_run=dry_run,
        cache=cache,
        jibri_selector=parse_selector(jibri_selector),
        internal_api=jibris,  # type: ignore[arg-type]
        wall_clock=now if callable(now) else lambda: now,
    )


DEMAND = {"shortfallProbability": 0.01, "windowSeconds": 900, "startupSeconds": 60}


async def test_demand_rate_from_busy_pods_and_status_survives_a_restart() -> None:
    api = FakeApi(replicas=2)
    api.add_pool("jibri", {"deploymentName": "jibri", "maxSpare": 30, "demand": DEMAND})
    api.add_pod(pod("spare-1"))
    api.add_pod(pod("spare-2"))
    # 12 recordings started in the last two minutes: 0.1/s over the window's eighth.
    for i in range(12):
        api.add_pod(pod(f"busy-{i}", busy=True, busy_since=NOW - timedelta(seconds=10 * i)))
    [result] = await reconciler(api).reconcile_all()
    assert result.decision is not None
    assert result.decision.bound == "demand"
    wanted = result.decision.desired
    assert wanted is not None
    assert wanted > 2
    assert api.replicas == wanted
    status = api.pools["jibri"]["status"]
    assert status["bound"] == "demand"
    assert status["startRate"] > 0
    assert status["leadTimeSeconds"] == 60
    assert len(status["recentStarts"]) == 12

    # The recordings end and their pods go; a new replica (restart, failover) still knows the
    # starts from the pool's status: the same size, and no write at all.
    api.pods = {n: p for n, p in api.pods.items() if not n.startswith("busy-")}
    api.writes.clear()
    api.pools["jibri"]["status"]["busy"] = 0
    [again] = await reconciler(api, now=NOW + timedelta(seconds=1)).reconcile_all()
    assert again.decision is not None
    assert again.decision.wanted == wanted
    assert "scale" not in api.kinds()
    assert api.replicas == wanted


async def test_lead_time_is_measured_from_the_pools_pods() -> None:
    api = FakeApi(replicas=3)
    api.add_pool(
        "jibri",
        {"deploymentName": "jibri", "maxSpare": 30, "demand": {**DEMAND, "startupSeconds": 0}},
    )
    for i, seconds in enumerate((20, 25, 30, 35, 40, 45, 50, 55, 60, 90)):
        api.add_pod(pod(f"spare-{i}", ready_after=seconds))
    await reconciler(api).reconcile_all()
    assert api.pools["jibri"]["status"]["leadTimeSeconds"] == 60  # p90, nearest rank


async def test_nothing_written_while_nothing_changes() -> None:
    api = FakeApi(replicas=2)
    api.add_pool("jibri", {"deploymentName": "jibri", "minSpare": 2, "maxSpare": 5})
    api.add_pod(pod("spare-1"))
    api.add_pod(pod("spare-2"))
    loop = reconciler(api)
    await loop.reconcile_all()
    assert api.kinds() == ["status"]
    api.writes.clear()
    for _ in range(3):
        await loop.reconcile_all()
    assert api.writes == []


async def test_a_scale_to_zero_is_shown_in_the_status_at_once() -> None:
    api = FakeApi(replicas=1)
    api.add_pool(
        "jibri",
        {"deploymentName": "jibri", "minSpare": 0, "maxSpare": 5, "scaleDownDelaySeconds": 0},
    )
    [result] = await reconciler(api).reconcile_all()
    assert (result.written, api.replicas) == (0, 0)
    assert api.pools["jibri"]["status"]["replicas"] == 0
    assert "lastScaleTime" in api.pools["jibri"]["status"]


async def test_dry_run_writes_nothing() -> None:
    api = FakeApi(replicas=1)
    api.add_pool("jibri", {"deploymentName": "jibri", "minSpare": 4, "maxSpare": 5})
    [result] = await reconciler(api, dry_run=True).reconcile_all()
    assert result.decision is not None
    assert result.decision.replicas == 4
    assert api.writes == []
    assert api.replicas == 1


async def test_a_refused_scale_write_is_decided_again() -> None:
    api = FakeApi(replicas=1, conflict_next_scale=True)
    api.add_pool("jibri", {"deploymentName": "jibri", "minSpare": 3, "maxSpare": 5})
    loop = reconciler(api)
    [first] = await loop.reconcile_all()
    assert first.written is None
    assert api.replicas == 1
    [second] = await loop.reconcile_all()
    assert second.written == 3
    assert api.replicas == 3
    assert api.kinds().count("scale") == 2  # the refused one and the good one
    assert api.kinds().count("event") == 1  # ScaledUp, once


async def test_scale_down_detaches_a_busy_spare_first_and_marks_the_ones_that_go() -> None:
    api = FakeApi(replicas=3)
    api.add_pool(
        "jibri",
        {"deploymentName": "jibri", "minSpare": 1, "maxSpare": 5, "scaleDownDelaySeconds": 0},
    )
    for name in ("a", "b", "c"):
        api.add_pod(pod(name))
    busy_ip = api.pods["b"]["status"]["podIP"]
    probes = Probes({busy_ip: BusyStatus.BUSY})
    loop = reconciler(api, probes=probes)
    [first] = await loop.reconcile_all()
    assert first.detached == 1
    assert api.replicas == 3
    assert "scale" not in api.kinds()
    # The detach landed: b left the Deployment, its replacement d is not running yet.
    del api.pods["b"]
    replacement = pod("d")
    replacement["status"] = {"phase": "Pending"}
    api.add_pod(replacement)
    probes.answers.clear()
    [second] = await loop.reconcile_all()
    assert second.written == 1
    assert api.replicas == 1
    marked = [
        name
        for name, raw in api.pods.items()
        if raw["metadata"]["annotations"].get("controller.kubernetes.io/pod-deletion-cost")
        == "-100"
    ]
    # The ReplicaSet deletes the pending d first, then the marked one of a and c.
    assert len(marked) == 1
    assert marked[0] in ("a", "c")
    assert api.kinds().index("pod") < api.kinds().index("scale")


async def test_an_hpa_on_the_deployment_is_a_conflict_not_a_fight() -> None:
    api = FakeApi(replicas=1, hpa_targets=["jibri"])
    api.add_pool("jibri", {"deploymentName": "jibri", "minSpare": 3, "maxSpare": 5})
    [result] = await reconciler(api).reconcile_all()
    assert result.problem == "ReplicasOwnedByHPA"
    assert "scale" not in api.kinds()
    ready = api.pools["jibri"]["status"]["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        "Ready",
        "False",
        "ReplicasOwnedByHPA",
    )


async def test_an_older_role_without_pool_rights_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds = asyncio.Event()

    class Refusing(FakeApi):
        async def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
            self.writes.append((method, path, None))
            if len(self.writes) >= 5:
                rounds.set()
            raise kube.Forbidden("jibripools is forbidden")

    api = Refusing()
    loop = PoolReconciler(
        api=api,
        namespace=NS,
        prober=Probes(),  # type: ignore[arg-type]
        actuator=Detaches(),  # type: ignore[arg-type]
        metrics=Metrics(),
        busy_labels=BUSY,
        period=0.01,
    )
    with caplog.at_level(logging.WARNING):
        task = asyncio.create_task(loop.run())
        await rounds.wait()  # five rounds, each refused
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    said = [r for r in caplog.records if r.name == "jibri_pod_controller.pools"]
    assert [r.getMessage() for r in said] == ["pools not reconciled: forbidden"]
    assert all(method == "GET" for method, _, _ in api.writes)


class CacheStream:
    """The pod cache's `PodStream` over the fake API's pods: a list, then watch events pushed
    by the test."""

    def __init__(self, api: FakeApi) -> None:
        self.api = api
        self.events: asyncio.Queue[kube.WatchEvent] = asyncio.Queue()

    async def list_pods_snapshot(
        self, *, selector: str, page_size: int
    ) -> tuple[list[PodFacts], str]:
        return [parse_pod(copy.deepcopy(raw)) for raw in self.api.pods.values()], "1"

    async def watch_pods_raw(
        self, *, selector: str, resource_version: str, timeout_seconds: int
    ) -> AsyncIterator[kube.WatchEvent]:
        while True:
            yield await self.events.get()


@contextlib.asynccontextmanager
async def synced_cache(api: FakeApi) -> AsyncIterator[tuple[PodCache, CacheStream]]:
    stream = CacheStream(api)
    cache = PodCache(stream=stream, selector="app=jibri", metrics=Metrics())
    task = asyncio.create_task(cache.run())
    await cache.synced.wait()
    try:
        yield cache, stream
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def pool_with_pods(api: FakeApi) -> None:
    api.add_pool("jibri", {"deploymentName": "jibri", "minSpare": 2, "maxSpare": 5})
    api.add_pod(pod("spare-1"))
    api.add_pod(pod("spare-2"))
    api.add_pod(pod("busy-1", busy=True))


async def test_a_synced_cache_answers_every_pod_read_and_the_deployments_are_one_list() -> None:
    fresh = FakeApi(replicas=2)
    pool_with_pods(fresh)
    [from_api] = await reconciler(fresh).reconcile_all()
    assert [path for path, _ in fresh.reads].count(PODS) == 2  # the busy ones, the pool's

    api = FakeApi(replicas=2)
    pool_with_pods(api)
    async with synced_cache(api) as (cache, _):
        loop = reconciler(api, cache=cache)
        [first] = await loop.reconcile_all()
        [second] = await loop.reconcile_all()
    reads = [path for path, _ in api.reads]
    assert PODS not in reads
    assert reads.count(DEPLOYMENTS) == 2  # one per round, never a GET per pool
    assert DEPLOYMENT not in reads
    assert first.decision == from_api.decision
    assert api.pools["jibri"]["status"]["spare"] == 2
    assert api.pools["jibri"]["status"]["busy"] == 1
    assert second.written is None


async def test_pods_the_cache_may_not_hold_are_read_from_the_api() -> None:
    # JIBRI_SELECTOR excludes a label the Deployment's selector says nothing of: some of the
    # pool's pods may be outside the cache, so they are listed.
    api = FakeApi(replicas=2)
    pool_with_pods(api)
    async with synced_cache(api) as (cache, _):
        await reconciler(api, cache=cache, jibri_selector="app=jibri,!canary").reconcile_all()
    assert (PODS, "app=jibri,state=idle") in api.reads
    assert (PODS, "app=jibri,state=busy") not in api.reads  # the busy pods are all held


async def test_an_unsynced_cache_means_fresh_reads() -> None:
    api = FakeApi(replicas=2)
    pool_with_pods(api)
    cache = PodCache(stream=CacheStream(api), selector="app=jibri", metrics=Metrics())
    await reconciler(api, cache=cache).reconcile_all()
    assert (PODS, "app=jibri,state=idle") in api.reads
    assert (PODS, "app=jibri,state=busy") in api.reads


async def test_a_role_that_cannot_list_deployments_reads_each_with_a_get() -> None:
    class NoList(FakeApi):
        async def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
            if method == "GET" and path == DEPLOYMENTS:
                self.reads.append((path, ""))
                raise kube.Forbidden("deployments is forbidden")
            return await super().request_json(method, path, **kwargs)

    api = NoList(replicas=2)
    pool_with_pods(api)
    loop = reconciler(api)
    await loop.reconcile_all()
    await loop.reconcile_all()
    reads = [path for path, _ in api.reads]
    assert reads.count(DEPLOYMENTS) == 1  # refused once, not asked again
    assert reads.count(DEPLOYMENT) == 2
    assert api.pools["jibri"]["status"]["spare"] == 2


async def test_a_change_to_a_busy_pod_in_the_cache_starts_a_round() -> None:
    class Rounds(FakeApi):
        started: asyncio.Queue[None]
        patched: asyncio.Queue[None]

        async def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
            if method == "GET" and path == POOLS:
                self.started.put_nowait(None)
            answer = await super().request_json(method, path, **kwargs)
            if method == "PATCH" and path.endswith("/status"):
                self.patched.put_nowait(None)
            return answer

    api = Rounds(replicas=2)
    api.started, api.patched = asyncio.Queue(), asyncio.Queue()
    pool_with_pods(api)
    async with synced_cache(api) as (cache, stream):
        loop = reconciler(api, cache=cache, period=3600)
        task = asyncio.create_task(loop.run())
        await api.started.get()  # the first round
        await api.patched.get()
        # Another replica detached spare-2: the cache sees it busy-labelled.
        detached = pod("spare-2", busy=True)
        api.pods["spare-2"] = detached
        await stream.events.put(kube.WatchEvent(kind="MODIFIED", raw=detached))
        await api.started.get()  # a round at once, not an hour later
        await api.patched.get()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert PODS not in [path for path, _ in api.reads]
    assert api.pools["jibri"]["status"]["busy"] == 2


class StatusWrites(FakeApi):
    """A FakeApi that tells of each pool status write (the end of a round that wrote one)."""

    patched: asyncio.Queue[None]

    async def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = await super().request_json(method, path, **kwargs)
        if method == "PATCH" and path.endswith("/status"):
            self.patched.put_nowait(None)
        return answer


async def test_a_stop_that_comes_as_the_loop_is_woken_stops_it() -> None:
    """Python 3.11's wait_for returns the awaited result when its task is cancelled in the
    loop turn that result arrives, and the cancellation is lost: a pool loop waiting that way
    went on after a shutdown cancelled it (and the shutdown waited on it)."""

    api = StatusWrites(replicas=2)
    api.patched = asyncio.Queue()
    pool_with_pods(api)
    loop = reconciler(api, period=3600)
    task = asyncio.create_task(loop.run())
    await api.patched.get()  # the first round is done
    for _ in range(5):
        await asyncio.sleep(0)  # it waits to be woken
    loop.trigger()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done
    assert task.cancelled()


async def test_a_term_stopped_whose_cancellation_was_lost_writes_nothing_more() -> None:
    """An HTTP client's timeout that fires in the loop turn of a cancellation turns it into a
    timeout error, which a round survives: a lost Lease then left a pool loop scaling on a
    replica that no longer led. `stop` ends the term whatever happens to the cancellation."""

    api = StatusWrites(replicas=2)
    api.patched = asyncio.Queue()
    pool_with_pods(api)
    loop = reconciler(api, period=3600)
    task = asyncio.create_task(loop.run())
    await api.patched.get()  # the first round is done
    writes = len(api.writes)
    loop.stop()  # the Lease is lost; the cancellation never arrives
    api.replicas = 7  # something to write about, were the loop still going
    loop.trigger()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done
    assert task.cancelled()
    assert len(api.writes) == writes


# -- scale-down through graceful shutdown -------------------------------------------------------


def scale_down_pool(api: FakeApi, *names: str, min_spare: int = 1, delay: int = 0) -> None:
    api.add_pool(
        "jibri",
        {
            "deploymentName": "jibri",
            "minSpare": min_spare,
            "maxSpare": 5,
            "scaleDownDelaySeconds": delay,
        },
    )
    for age, name in enumerate(names):
        api.add_pod(pod(name, created=NOW - timedelta(hours=1 + age)))


def marked(api: FakeApi) -> list[str]:
    return sorted(
        name
        for name, raw in api.pods.items()
        if raw["metadata"]["annotations"].get("controller.kubernetes.io/pod-deletion-cost")
        == "-100"
    )


def ip(api: FakeApi, name: str) -> str:
    address: str = api.pods[name]["status"]["podIP"]
    return address


async def test_a_scale_down_asks_spares_to_shut_down_then_scales_once() -> None:
    api = FakeApi(replicas=3)
    scale_down_pool(api, "young", "middle", "old")
    probes = Probes()
    jibris = Jibris(probes)
    loop = reconciler(api, probes=probes, jibris=jibris)
    [asking] = await loop.reconcile_all()
    # The two the ReplicaSet would prefer (the youngest) are asked; nothing written yet.
    assert sorted(jibris.asked) == sorted([ip(api, "young"), ip(api, "middle")])
    assert asking.asked == {"young": "accepted", "middle": "accepted"}
    assert api.kinds() == ["status"]
    assert asking.plan is not None
    assert asking.plan.recheck_in == 0.25
    [scaled] = await loop.reconcile_all()
    assert scaled.written == 1
    assert api.replicas == 1
    assert marked(api) == ["middle", "young"]
    assert api.kinds().index("pod") < api.kinds().index("scale")
    status = api.pools["jibri"]["status"]
    assert (status["spare"], status["leaving"], status["replicas"]) == (1, 2, 1)
    graceful = next(c for c in status["conditions"] if c["type"] == "GracefulScaleDown")
    assert (graceful["status"], graceful["reason"]) == ("True", "InternalApi")
    assert len(jibris.asked) == 2  # nobody asked twice


async def test_a_spare_that_starts_recording_before_the_request_is_kept() -> None:
    """Jicofo hands one of the chosen spares a recording after the probe and before the
    graceful shutdown: Jibri keeps it (its manager defers the exit), the pool finds it BUSY,
    detaches it and counts it out; only the other spare goes."""
    api = FakeApi(replicas=3)
    scale_down_pool(api, "young", "middle", "old")
    probes = Probes()
    jibris = Jibris(probes)

    class StartsRecording(Jibris):
        async def graceful_shutdown(self, ip: str) -> tuple[ShutdownOutcome, str]:
            if ip == address:
                probes.answers[ip] = BusyStatus.BUSY  # the recording began just now
            return await super().graceful_shutdown(ip)

    address = ip(api, "young")
    jibris = StartsRecording(probes)
    actuator = Relabels(api)
    loop = reconciler(api, probes=probes, jibris=jibris, actuator=actuator)
    await loop.reconcile_all()
    [found] = await loop.reconcile_all()
    assert found.detached == 1
    assert actuator.detached == ["young"]
    assert "scale" not in api.kinds()
    # The detach landed; its replacement is pending. The next round lowers, never taking
    # the recording pod.
    replacement = pod("fresh")
    replacement["status"] = {"phase": "Pending"}
    api.add_pod(replacement)
    await loop.reconcile_all()
    [done] = await loop.reconcile_all()
    assert api.replicas == 1
    assert "young" not in marked(api)
    assert api.pools["jibri"]["status"]["busy"] == 1
    assert done.plan is not None
    assert "young" not in done.plan.picks


async def test_an_unreachable_internal_api_falls_back_and_says_so_once() -> None:
    api = FakeApi(replicas=2)
    scale_down_pool(api, "a", "b")
    probes = Probes()
    jibris = Jibris(probes, outcome=ShutdownOutcome.UNREACHABLE)
    loop = reconciler(api, probes=probes, jibris=jibris)
    await loop.reconcile_all()
    [fallback] = await loop.reconcile_all()
    assert fallback.written == 1  # today's method: probed IDLE, marked, lowered
    status = api.pools["jibri"]["status"]
    graceful = next(c for c in status["conditions"] if c["type"] == "GracefulScaleDown")
    assert (graceful["status"], graceful["reason"]) == ("False", "InternalApiUnreachable")
    assert "ClientConnectorError" in graceful["message"]
    await loop.reconcile_all()
    events = [body["reason"] for method, path, body in api.writes if path.endswith("/events")]
    assert events.count("GracefulShutdownUnavailable") == 1


async def test_dry_run_asks_no_jibri_to_shut_down() -> None:
    api = FakeApi(replicas=2)
    scale_down_pool(api, "a", "b")
    probes = Probes()
    jibris = Jibris(probes)
    loop = reconciler(api, probes=probes, jibris=jibris, dry_run=True)
    for _ in range(3):
        await loop.reconcile_all()
    assert (jibris.asked, api.writes) == ([], [])


class Relabels(Detaches):
    """A detach as the API server and the ReplicaSet make it: busy labels, no owner."""

    def __init__(self, api: FakeApi) -> None:
        super().__init__()
        self.api = api

    async def apply(self, action: Any, pod: Any, *, source: Any) -> None:
        await super().apply(action, pod, source=source)
        meta = self.api.pods[pod.name]["metadata"]
        meta["labels"] = {**meta["labels"], **BUSY}
        meta["annotations"]["jibri-pod-controller/detached-from"] = "jibri"
        meta["ownerReferences"] = []


# -- blocked, without a spin -----------------------------------------------------------------


def crash_looping(name: str) -> dict[str, Any]:
    raw = pod(name)
    raw["status"]["conditions"][0]["status"] = "False"
    raw["status"]["containerStatuses"] = [{"name": "jibri", "restartCount": 7}]
    return raw


async def test_a_blocked_scale_down_waits_for_the_period_with_its_condition() -> None:
    """A crash-looping spare (Running, not Ready, never answering) is the ReplicaSet's first
    pick: the scale-down waits, says why once, and costs one round per period, not a spin."""
    api = FakeApi(replicas=3)
    scale_down_pool(api, "a", "b")
    api.add_pod(crash_looping("looping"))
    probes = Probes({ip(api, "looping"): Failed(ProbeFailure.CONNECT, "ConnectionRefusedError")})
    jibris = Jibris(probes)
    clock = lambda: datetime.now(UTC)  # noqa: E731 - the wait must last a period to be said
    loop = reconciler(api, probes=probes, jibris=jibris, period=0.3, now=clock)
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(1.0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    rounds = [path for path, _ in api.reads].count(POOLS)
    assert 2 <= rounds <= 5, rounds  # one per period (0.3 s), where 0.05 s retries made ~20
    assert api.replicas == 3
    assert jibris.asked == []  # nothing is asked while the first pick cannot be judged
    status = api.pools["jibri"]["status"]
    blocked = next(c for c in status["conditions"] if c["type"] == "ScaleDownBlocked")
    assert (blocked["status"], blocked["reason"]) == ("True", "SpareNotAnswering")
    assert "looping" in blocked["message"]
    events = [body["reason"] for _, path, body in api.writes if path.endswith("/events")]
    assert events == ["ScaleDownBlocked"]
    # The pool's first status, then the condition once the wait has lasted a period.
    assert [kind for kind in api.kinds() if kind != "event"] == ["status", "status"]
    gauge = loop.pool_metrics.scale_down_blocked.labels("jibri", "SpareNotAnswering")
    assert gauge._value.get() == 0  # forgotten when the loop stopped leading


async def test_a_failed_mark_stops_the_scale_write() -> None:
    class NoMarks(FakeApi):
        async def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
            if method == "PATCH" and "/pods/" in path:
                raise kube.Unavailable("pods: HTTP 503")
            return await super().request_json(method, path, **kwargs)

    api = NoMarks(replicas=2)
    scale_down_pool(api, "a", "b")
    assert await reconciler(api).reconcile_all() == []  # the pool's round failed: logged
    assert "scale" not in api.kinds()
    assert api.replicas == 2


async def test_marks_left_by_a_refused_scale_write_are_checked_again_or_cleared() -> None:
    api = FakeApi(replicas=3, conflict_next_scale=True)
    scale_down_pool(api, "a", "b", "c")
    loop = reconciler(api)  # today's method: probe and mark
    [refused] = await loop.reconcile_all()
    assert refused.written is None
    assert marked(api) == ["a", "b"]
    # The scale-down is no longer wanted when the loop decides again: the marks go.
    api.pools["jibri"]["spec"]["minSpare"] = 3
    await loop.reconcile_all()
    assert marked(api) == []
    assert api.replicas == 3


# -- a new Lease term starts from the API ---------------------------------------------------


async def test_each_lease_term_starts_from_the_pools_status() -> None:
    """Term 1 holds a scale-down (the delay has begun). Between terms another leader's
    status says the wish went back up (no belowSince). Term 2 must start its hold afresh,
    not resume term 1's clock and lower at once."""
    api = FakeApi(replicas=3)
    scale_down_pool(api, "a", "b", "c", delay=300)
    clock = [NOW]
    probes = Probes()
    loop = reconciler(api, probes=probes, now=lambda: clock[0], period=3600)

    async def term() -> None:
        """One Lease term: `run`, whose first round is at once, stopped after a while."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loop.run(), timeout=0.5)

    await term()
    assert api.pools["jibri"]["status"]["belowSince"] == stamp(NOW)
    api.pools["jibri"]["status"].pop("belowSince")  # what the other leader left
    api.pools["jibri"]["status"]["desiredSpare"] = 3
    clock[0] = NOW + timedelta(seconds=400)  # term 1's hold would be due now
    await term()
    assert api.replicas == 3
    assert "scale" not in api.kinds()
    assert api.pools["jibri"]["status"]["belowSince"] == stamp(clock[0])


async def test_a_release_the_scale_down_waits_for_starts_a_round() -> None:
    """A detached pod its ReplicaSet still owns holds the scale-down; the moment the cache
    sees the release, a round starts (not a period later)."""

    class Rounds(FakeApi):
        started: asyncio.Queue[None]

        async def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
            if method == "GET" and path == POOLS:
                self.started.put_nowait(None)
            return await super().request_json(method, path, **kwargs)

    api = Rounds(replicas=2)
    api.started = asyncio.Queue()
    scale_down_pool(api, "a")
    unreleased = pod("b", busy=True)
    unreleased["metadata"]["ownerReferences"] = [
        {"kind": "ReplicaSet", "name": "jibri-abc", "controller": True}
    ]
    api.add_pod(unreleased)
    async with synced_cache(api) as (cache, stream):
        loop = reconciler(api, cache=cache, period=3600)
        task = asyncio.create_task(loop.run())
        await api.started.get()
        await asyncio.sleep(0.2)
        assert api.replicas == 2  # held: the ReplicaSet has not seen the detach
        released = copy.deepcopy(unreleased)
        released["metadata"]["ownerReferences"] = []
        api.pods["b"] = released
        await stream.events.put(kube.WatchEvent(kind="MODIFIED", raw=released))
        await asyncio.wait_for(api.started.get(), 5)  # at once, not an hour later
        await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert api.replicas == 1
