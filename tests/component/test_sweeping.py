"""The sweeper and the prober against real HTTP servers that answer like Jibri (or fail to),
on 127.0.10.x addresses, with the in-memory cluster."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web

from jibri_pod_controller.adapters import kube
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.adapters.probing import HEALTH_PATH, Prober, health_request
from jibri_pod_controller.core.config import ReapPolicy
from jibri_pod_controller.core.decisions import Failed, Policy, ProbeFailure, Reported
from jibri_pod_controller.core.jibri import BusyStatus
from jibri_pod_controller.core.pods import (
    ANNOTATION_BUSY_SINCE,
    ANNOTATION_RESTARTS_AT_BUSY,
    ANNOTATION_SESSION_ON,
    ANNOTATION_SESSIONS_WATCHED,
    PodFacts,
)
from jibri_pod_controller.loops.acting import Actuator
from jibri_pod_controller.loops.sweeping import Sweeper, SweepReport
from tests.component.fakes import BUSY_LABELS, FakeCluster, Write

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PROBE_TIMEOUT = 0.3
ANSWER_TIMEOUT = 5.0
"""For probes that must not time out: an answer, however late, is judged by what it says."""
MAX_BYTES = 4096
UNREACHABLE = "127.0.10.250"  # nothing listens there


def health(busy: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "status": {
            "busyStatus": busy,
            "health": {
                "healthStatus": "HEALTHY",
                "details": {"ffmpeg": {"healthStatus": "HEALTHY", "detail": ""}},
            },
        }
    }
    if busy == "BUSY":
        answer["environmentContext"] = {"name": "meet.example.org"}
    return answer


@dataclass
class FakeJibris:
    """One HTTP server per address, all on one port; each address behaves as told."""

    port: int
    behaviours: dict[str, str] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    """Every address asked, in the order the requests arrived."""
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        address = sockname[0] if sockname else ""
        self.hits[address] = self.hits.get(address, 0) + 1
        self.order.append(address)
        behaviour = self.behaviours.get(address, "IDLE")
        if behaviour == "idle-then-busy":  # a new recording starts between two probes
            behaviour = "IDLE" if self.hits[address] == 1 else "BUSY"
        if behaviour in ("IDLE", "BUSY", "EXPIRED"):
            return web.json_response(health(behaviour))
        if behaviour == "hang":
            await self.release.wait()
            return web.json_response(health("EXPIRED"))
        if behaviour == "garbage":
            return web.Response(body=b"<html>EXPIRED</html>", content_type="application/json")
        if behaviour == "unknown-status":
            return web.json_response(health("RETIRED"))
        if behaviour == "huge":
            return web.Response(body=b" " * (MAX_BYTES * 16), content_type="application/json")
        if behaviour in ("huge-streamed", "split"):
            # No Content-Length: the body ends when the connection closes (the probe asks in
            # HTTP/1.0, so the server may not use chunked encoding), and arrives in two parts.
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            body = orjson.dumps(health("EXPIRED"))
            if behaviour == "huge-streamed":
                body = body[:-1] + b"," + b'"pad": "' + b"x" * (MAX_BYTES * 4) + b'"}'
            half = len(body) // 2
            await response.write(body[:half])
            await asyncio.sleep(0.05)
            await response.write(body[half:])
            await response.write_eof()
            return response
        if behaviour == "500":
            return web.json_response(health("EXPIRED"), status=500)
        if behaviour == "redirect":
            raise web.HTTPFound("http://127.0.0.1:1/")
        raise AssertionError(behaviour)


def _addresses(count: int) -> list[str]:
    return [f"127.0.10.{i}" for i in range(1, count + 1)]


def _bind_all(addresses: list[str]) -> tuple[int, list[socket.socket]]:
    """One socket per address, all on one port; another port if any address has it taken."""
    for _ in range(20):
        sockets: list[socket.socket] = []
        try:
            first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(first)
            first.bind((addresses[0], 0))
            port: int = first.getsockname()[1]
            for address in addresses[1:]:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind((address, port))
            return port, sockets
        except OSError:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no port free on every test address")


@pytest.fixture
async def jibris() -> AsyncIterator[FakeJibris]:
    port, sockets = _bind_all(_addresses(40))
    fakes = FakeJibris(port)
    app = web.Application()
    app.router.add_get(HEALTH_PATH, fakes.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    for sock in sockets:
        await web.SockSite(runner, sock).start()
    try:
        yield fakes
    finally:
        fakes.release.set()
        await runner.cleanup()


@pytest.fixture
async def prober(jibris: FakeJibris) -> AsyncIterator[Prober]:
    probe = Prober(port=jibris.port, timeout=PROBE_TIMEOUT, max_bytes=MAX_BYTES, concurrency=8)
    try:
        yield probe
    finally:
        await probe.close()


@dataclass
class Rig:
    """A sweeper wired to the fake cluster, with its metrics at hand."""

    sweeper: Sweeper
    metrics: Metrics

    async def sweep_once(self) -> SweepReport:
        return await self.sweeper.sweep_once()

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def sweeper(
    cluster: FakeCluster,
    prober: Prober,
    *,
    policy: Policy | None = None,
    page_size: int = 500,
    dry_run: bool = False,
    slept: list[float] | None = None,
    attempts: int = 3,
    snapshot: Callable[[], list[PodFacts] | None] | None = None,
    monotonic: Callable[[], float] | None = None,
    workers: int = 100,
    on_incomplete: Callable[[int], None] | None = None,
) -> Rig:
    metrics = Metrics()
    pauses = slept if slept is not None else []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    swept = Sweeper(
        cluster=cluster,
        prober=prober,
        actuator=Actuator(
            cluster=cluster,
            metrics=metrics,
            busy_labels=BUSY_LABELS,
            dry_run=dry_run,
            wall_clock=lambda: NOW,
            sleep=sleep,
            jitter=lambda: 0.5,
            sweep_attempts=attempts,
        ),
        metrics=metrics,
        selector="app=jibri",
        busy_labels=BUSY_LABELS,
        policy=policy or Policy(),
        page_size=page_size,
        snapshot=snapshot,
        workers=workers,
        wall_clock=lambda: NOW,
        on_incomplete=on_incomplete,
        **({"monotonic": monotonic} if monotonic is not None else {}),
    )
    return Rig(swept, metrics)


def busy_notes(restarts_at_busy: int = 0, since: datetime = NOW) -> dict[str, str]:
    return {
        ANNOTATION_BUSY_SINCE: since.isoformat(timespec="seconds"),
        ANNOTATION_RESTARTS_AT_BUSY: str(restarts_at_busy),
    }


# -- the prober ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("IDLE", Reported(BusyStatus.IDLE)),
        ("BUSY", Reported(BusyStatus.BUSY)),
        ("EXPIRED", Reported(BusyStatus.EXPIRED)),
        ("split", Reported(BusyStatus.EXPIRED)),
        ("hang", ProbeFailure.TIMEOUT),
        ("garbage", ProbeFailure.INVALID),
        ("unknown-status", ProbeFailure.INVALID),
        ("huge", ProbeFailure.TOO_LARGE),
        ("huge-streamed", ProbeFailure.TOO_LARGE),
        ("500", ProbeFailure.HTTP_STATUS),
        ("redirect", ProbeFailure.HTTP_STATUS),
    ],
)
async def test_probe(jibris: FakeJibris, behaviour: str, expected: object) -> None:
    jibris.behaviours["127.0.10.3"] = behaviour
    # Only the hang is meant to meet the timeout; any other answer gets the time to arrive on a
    # loaded machine (an HTTP 500 that took 0.3 s there was a TIMEOUT, not an HTTP_STATUS).
    timeout = PROBE_TIMEOUT if expected is ProbeFailure.TIMEOUT else ANSWER_TIMEOUT
    prober = Prober(port=jibris.port, timeout=timeout, max_bytes=MAX_BYTES, concurrency=8)
    try:
        result = await prober.probe("127.0.10.3")
    finally:
        await prober.close()
    if isinstance(expected, ProbeFailure):
        assert isinstance(result, Failed)
        assert result.failure is expected
    else:
        assert result == expected


async def test_probe_of_an_unreachable_pod(prober: Prober) -> None:
    result = await prober.probe(UNREACHABLE)
    assert isinstance(result, Failed)
    assert result.failure is ProbeFailure.CONNECT


def test_health_request() -> None:
    assert health_request("10.0.0.1", 2222).startswith(
        b"GET /jibri/api/v1.0/health HTTP/1.0\r\nHost: 10.0.0.1:2222\r\n"
    )
    assert b"\r\nHost: [fd00::1]:2222\r\n" in health_request("fd00::1", 2222)


async def test_hanging_pods_do_not_stall_the_others(jibris: FakeJibris) -> None:
    hanging = _addresses(8)
    for address in hanging:
        jibris.behaviours[address] = "hang"
    jibris.behaviours["127.0.10.9"] = "EXPIRED"
    probe = Prober(port=jibris.port, timeout=PROBE_TIMEOUT, max_bytes=MAX_BYTES, concurrency=9)
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        results = await asyncio.gather(*(probe.probe(a) for a in [*hanging, "127.0.10.9"]))
        # One timeout each, in parallel: far below the 2.4 s they would take one after another.
        assert loop.time() - began < PROBE_TIMEOUT * 4
    finally:
        await probe.close()
    assert results[-1] == Reported(BusyStatus.EXPIRED)
    assert all(isinstance(r, Failed) and r.failure is ProbeFailure.TIMEOUT for r in results[:-1])


# -- the sweep ----------------------------------------------------------------------------------


async def test_a_sweep_reconciles_what_webhooks_missed(jibris: FakeJibris, prober: Prober) -> None:
    cluster = FakeCluster()
    b = jibris.behaviours
    expired = cluster.add_pod("jibri-expired", ips=["127.0.10.1"])
    b["127.0.10.1"] = "EXPIRED"
    missed = cluster.add_pod("jibri-missed-busy", ips=["127.0.10.2"], restarts=1)
    b["127.0.10.2"] = "BUSY"
    cluster.add_pod("jibri-spare", ips=["127.0.10.3"])
    b["127.0.10.3"] = "IDLE"
    cluster.add_pod(
        "jibri-recording", ips=["127.0.10.4"], labels=BUSY_LABELS, annotations=busy_notes()
    )
    b["127.0.10.4"] = "BUSY"
    restarted = cluster.add_pod(
        "jibri-restarted",
        ips=["127.0.10.5"],
        labels=BUSY_LABELS,
        annotations=busy_notes(0),
        restarts=1,
    )
    b["127.0.10.5"] = "IDLE"
    failed = cluster.add_pod(
        "jibri-failed", ips=["127.0.10.6"], labels=BUSY_LABELS, phase="Failed", owner=None
    )
    b["127.0.10.6"] = "EXPIRED"  # never asked: the pod is not running
    cluster.add_pod("jibri-pending", ips=[], phase="Pending")
    cluster.add_pod("jibri-terminating", ips=["127.0.10.7"], deleting=True)
    b["127.0.10.7"] = "EXPIRED"
    cluster.add_pod("web-0", ips=["127.0.10.8"], labels={"app": "web"})
    b["127.0.10.8"] = "EXPIRED"

    s = sweeper(cluster, prober)
    report = await s.sweep_once()

    assert sorted(cluster.pods) == [
        "jibri-missed-busy",
        "jibri-pending",
        "jibri-recording",
        "jibri-spare",
        "jibri-terminating",
        "web-0",
    ]
    detached = cluster.pod("jibri-missed-busy")
    assert detached is not None
    assert detached.labels == BUSY_LABELS
    assert detached.annotations[ANNOTATION_RESTARTS_AT_BUSY] == "1"
    assert sorted(cluster.writes, key=lambda w: w.name) == [
        Write(
            "delete_pod",
            "jibri-expired",
            {"preconditions": {"uid": expired.uid, "resourceVersion": expired.resource_version}},
        ),
        Write(
            "delete_pod",
            "jibri-failed",
            {"preconditions": {"uid": failed.uid, "resourceVersion": failed.resource_version}},
        ),
        Write(
            "patch_pod",
            "jibri-missed-busy",
            {
                "metadata": {
                    "labels": BUSY_LABELS,
                    "annotations": {
                        "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
                        ANNOTATION_BUSY_SINCE: "2025-06-01T12:00:00+00:00",
                        ANNOTATION_RESTARTS_AT_BUSY: "1",
                    },
                    "uid": missed.uid,
                    "resourceVersion": missed.resource_version,
                }
            },
        ),
        Write(
            "delete_pod",
            "jibri-restarted",
            {
                "preconditions": {
                    "uid": restarted.uid,
                    "resourceVersion": restarted.resource_version,
                }
            },
        ),
    ]
    assert report == SweepReport(
        pods=8,
        probed=5,
        probe_failures=0,
        actions={"delete": 3, "detach": 1, "nothing": 4},
        errors=0,
        listed_all=True,
        seconds=report.seconds,
    )
    # Pods that are not running, terminating or not Jibris are never asked.
    assert set(jibris.hits) == {f"127.0.10.{i}" for i in range(1, 6)}
    assert s.sample("jibri_pod_controller_jibri_pods", role="busy", reported="IDLE") == 1
    assert s.sample("jibri_pod_controller_sweeps_total", result="ok") == 1
    assert s.sample("jibri_pod_controller_pods_probed_total") == 5


async def test_keep_policies_only_count(jibris: FakeJibris, prober: Prober) -> None:
    cluster = FakeCluster()
    cluster.add_pod(
        "jibri-restarted",
        ips=["127.0.10.1"],
        labels=BUSY_LABELS,
        annotations=busy_notes(2),
        restarts=3,
    )
    jibris.behaviours["127.0.10.1"] = "IDLE"
    cluster.add_pod("jibri-failed", ips=[], labels=BUSY_LABELS, phase="Failed")
    s = sweeper(cluster, prober, policy=Policy(restarted=ReapPolicy.KEEP, finished=ReapPolicy.KEEP))
    report = await s.sweep_once()
    assert cluster.writes == []
    assert sorted(cluster.pods) == ["jibri-failed", "jibri-restarted"]
    assert report.actions == {"nothing": 2}
    assert (
        s.sample(
            "jibri_pod_controller_actions_total",
            action="none",
            reason="policy-keep",
            source="sweep",
            result="none",
        )
        == 2
    )


async def test_an_idle_busy_labelled_pod_without_a_restart_is_kept(
    jibris: FakeJibris, prober: Prober
) -> None:
    cluster = FakeCluster()
    cluster.add_pod(
        "jibri-a", ips=["127.0.10.1"], labels=BUSY_LABELS, annotations=busy_notes(1), restarts=1
    )
    jibris.behaviours["127.0.10.1"] = "IDLE"
    await sweeper(cluster, prober).sweep_once()
    assert cluster.writes == []


async def test_max_busy_age(jibris: FakeJibris, prober: Prober) -> None:
    cluster = FakeCluster()
    old = cluster.add_pod(
        "jibri-old",
        ips=["127.0.10.1"],
        labels=BUSY_LABELS,
        annotations=busy_notes(since=NOW - timedelta(hours=5)),
    )
    cluster.add_pod(
        "jibri-young",
        ips=["127.0.10.2"],
        labels=BUSY_LABELS,
        annotations=busy_notes(since=NOW - timedelta(hours=1)),
    )
    jibris.behaviours.update({"127.0.10.1": "BUSY", "127.0.10.2": "BUSY"})
    await sweeper(cluster, prober).sweep_once()
    assert cluster.writes == []  # off by default
    await sweeper(cluster, prober, policy=Policy(max_busy_seconds=4 * 3600)).sweep_once()
    assert cluster.writes == [
        Write(
            "delete_pod",
            "jibri-old",
            {"preconditions": {"uid": old.uid, "resourceVersion": old.resource_version}},
        )
    ]


FAILING = ["hang", "garbage", "unknown-status", "huge", "huge-streamed", "500", "redirect"]


@pytest.mark.parametrize("busy", [False, True])
async def test_pods_without_a_valid_answer_are_never_deleted(
    jibris: FakeJibris, prober: Prober, busy: bool
) -> None:
    cluster = FakeCluster()
    for i, behaviour in enumerate(FAILING, start=1):
        address = f"127.0.10.{i}"
        jibris.behaviours[address] = behaviour
        cluster.add_pod(
            f"jibri-{behaviour}",
            ips=[address],
            labels=BUSY_LABELS if busy else None,
            annotations=busy_notes() if busy else None,
            restarts=1,  # a restart is not enough without an IDLE answer
        )
    cluster.add_pod(
        "jibri-unreachable",
        ips=[UNREACHABLE],
        labels=BUSY_LABELS if busy else None,
        annotations=busy_notes() if busy else None,
    )
    s = sweeper(cluster, prober, policy=Policy(max_busy_seconds=3600))
    report = await s.sweep_once()
    assert cluster.writes == []
    assert len(cluster.pods) == len(FAILING) + 1
    assert report.probe_failures == len(FAILING) + 1
    assert report.actions == {"nothing": len(FAILING) + 1}
    for reason, expected in [
        ("timeout", 1),
        ("invalid", 2),
        ("too-large", 2),
        ("http-status", 2),
        ("connect", 1),
    ]:
        assert s.sample("jibri_pod_controller_probe_failures_total", reason=reason) == expected


async def test_a_failed_delete_does_not_stop_the_others(jibris: FakeJibris, prober: Prober) -> None:
    cluster = FakeCluster()
    for i in range(1, 4):
        cluster.add_pod(f"jibri-{i}", ips=[f"127.0.10.{i}"])
        jibris.behaviours[f"127.0.10.{i}"] = "EXPIRED"
    cluster.fail_next("delete_pod", kube.Unavailable("delete pod: HTTP 503"))
    s = sweeper(cluster, prober, attempts=1)  # no retry within the sweep
    report = await s.sweep_once()
    assert [w.method for w in cluster.writes] == ["delete_pod"] * 3
    assert len(cluster.pods) == 1  # the next sweep retries it
    assert report.errors == 0
    assert report.actions == {"delete": 3}
    assert (
        s.sample(
            "jibri_pod_controller_actions_total",
            action="delete",
            reason="expired-reported",
            source="sweep",
            result="failed",
        )
        == 1
    )
    await s.sweep_once()
    assert cluster.pods == {}


async def test_a_transient_error_is_retried_with_backoff(
    jibris: FakeJibris, prober: Prober
) -> None:
    cluster = FakeCluster()
    cluster.add_pod("jibri-1", ips=["127.0.10.1"])
    jibris.behaviours["127.0.10.1"] = "EXPIRED"
    cluster.fail_next(
        "delete_pod",
        kube.Unavailable("delete pod: HTTP 429", retry_after=3),
        kube.Unavailable("delete pod: timed out"),
    )
    slept: list[float] = []
    s = sweeper(cluster, prober, slept=slept)
    report = await s.sweep_once()
    assert cluster.pods == {}
    assert report.actions == {"delete": 1}
    assert slept == [3.0, 2.0]  # Retry-After honoured, then exponential (jitter fixed at 1x)
    assert [w.method for w in cluster.writes] == ["delete_pod"] * 3


async def test_a_pod_deleted_meanwhile_is_no_error(jibris: FakeJibris, prober: Prober) -> None:
    cluster = FakeCluster()
    cluster.add_pod("jibri-1", ips=["127.0.10.1"])
    jibris.behaviours["127.0.10.1"] = "EXPIRED"
    cluster.before_next("delete_pod", lambda: cluster.pods.pop("jibri-1"))
    report = await sweeper(cluster, prober).sweep_once()
    assert (report.errors, report.actions) == (0, {"delete": 1})


async def test_a_stale_list_never_deletes_a_newer_pod(jibris: FakeJibris, prober: Prober) -> None:
    cluster = FakeCluster()
    cluster.add_pod("jibri-1", ips=["127.0.10.1"])
    jibris.behaviours["127.0.10.1"] = "EXPIRED"

    def replace() -> None:
        del cluster.pods["jibri-1"]
        cluster.add_pod("jibri-1", ips=["127.0.10.2"])

    cluster.before_next("delete_pod", replace)
    await sweeper(cluster, prober).sweep_once()
    assert "jibri-1" in cluster.pods  # the uid precondition refused the delete


async def test_a_list_error_ends_the_sweep_without_raising(
    jibris: FakeJibris, prober: Prober
) -> None:
    cluster = FakeCluster()
    cluster.add_pod("jibri-1", ips=["127.0.10.1"])
    jibris.behaviours["127.0.10.1"] = "EXPIRED"
    cluster.fail_next("list_pods", kube.Unavailable("list pods: timed out"))
    s = sweeper(cluster, prober)
    report = await s.sweep_once()
    assert (report.listed_all, report.pods) == (False, 0)
    assert cluster.writes == []
    assert s.sample("jibri_pod_controller_sweeps_total", result="failed") == 1
    assert (
        s.sample("jibri_pod_controller_api_errors_total", operation="list", kind="unavailable") == 1
    )


async def test_a_list_error_on_a_later_page_keeps_the_earlier_pages(
    jibris: FakeJibris, prober: Prober
) -> None:
    cluster = FakeCluster()
    for i in range(1, 26):
        cluster.add_pod(f"jibri-{i:02}", ips=[f"127.0.10.{i}"])
        jibris.behaviours[f"127.0.10.{i}"] = "EXPIRED"
    cluster.before_next(
        "list_pods",
        lambda: cluster.before_next(
            "list_pods", lambda: cluster.fail_next("list_pods", kube.Unavailable("list pods: 503"))
        ),
    )
    report = await sweeper(cluster, prober, page_size=10).sweep_once()
    assert (report.listed_all, report.pods) == (False, 10)
    assert len(cluster.pods) == 15


async def test_pagination(jibris: FakeJibris, prober: Prober) -> None:
    cluster = FakeCluster()
    for i in range(1, 26):
        cluster.add_pod(f"jibri-{i:02}", ips=[f"127.0.10.{i}"])
        jibris.behaviours[f"127.0.10.{i}"] = "EXPIRED" if i % 2 else "IDLE"
    report = await sweeper(cluster, prober, page_size=10).sweep_once()
    assert cluster.pages == [("app=jibri", 10)] * 3
    assert (report.pods, report.probed, report.listed_all) == (25, 25, True)
    assert report.actions == {"delete": 13, "nothing": 12}
    assert sorted(cluster.pods) == [f"jibri-{i:02}" for i in range(2, 26, 2)]


async def test_dry_run_sweep_writes_nothing(jibris: FakeJibris, prober: Prober) -> None:
    cluster = FakeCluster()
    cluster.add_pod("jibri-1", ips=["127.0.10.1"])
    cluster.add_pod("jibri-2", ips=["127.0.10.2"])
    jibris.behaviours.update({"127.0.10.1": "EXPIRED", "127.0.10.2": "BUSY"})
    report = await sweeper(cluster, prober, dry_run=True).sweep_once()
    assert cluster.writes == []
    assert report.actions == {"delete": 1, "detach": 1}


async def test_run_sweeps_until_cancelled(jibris: FakeJibris, prober: Prober) -> None:
    cluster = FakeCluster()
    cluster.add_pod("jibri-1", ips=["127.0.10.1"])
    jibris.behaviours["127.0.10.1"] = "IDLE"
    task = asyncio.create_task(sweeper(cluster, prober).sweeper.run(interval=0.05))
    await asyncio.sleep(0.3)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert len(cluster.pages) >= 3
    assert cluster.writes == []


async def test_a_synced_cache_replaces_the_list(jibris: FakeJibris, prober: Prober) -> None:
    cluster = FakeCluster()
    expired = cluster.add_pod("jibri-1", ips=["127.0.10.1"])
    jibris.behaviours["127.0.10.1"] = "EXPIRED"
    s = sweeper(cluster, prober, snapshot=lambda: [expired])
    report = await s.sweep_once()
    assert cluster.pages == []  # no list: the pods came from the cache
    assert report.actions == {"delete": 1}
    assert cluster.pods == {}


async def test_an_unsynced_cache_falls_back_to_the_list(jibris: FakeJibris, prober: Prober) -> None:
    cluster = FakeCluster()
    cluster.add_pod("jibri-1", ips=["127.0.10.1"])
    jibris.behaviours["127.0.10.1"] = "EXPIRED"
    s = sweeper(cluster, prober, snapshot=lambda: None)
    report = await s.sweep_once()
    assert cluster.pages == [("app=jibri", 500)]
    assert report.actions == {"delete": 1}


def restarted_while_busy() -> FakeCluster:
    """A cluster with one detached pod whose Jibri restarted since (restart count 0 -> 1)."""
    cluster = FakeCluster()
    cluster.add_pod(
        "jibri-restarted",
        ips=["127.0.10.1"],
        labels=BUSY_LABELS,
        annotations=busy_notes(0),
        restarts=1,
    )
    return cluster


async def test_a_restarted_jibri_that_takes_a_new_recording_is_not_deleted(
    jibris: FakeJibris, prober: Prober
) -> None:
    cluster = restarted_while_busy()
    jibris.behaviours["127.0.10.1"] = "idle-then-busy"
    s = sweeper(cluster, prober)
    report = await s.sweep_once()
    # The rule fired on the first (IDLE) answer; the confirming probe found a new recording.
    assert jibris.hits["127.0.10.1"] == 2
    assert cluster.writes == []
    assert report.actions == {"nothing": 1}
    assert (
        s.sample(
            "jibri_pod_controller_actions_total",
            action="none",
            reason="recording",
            source="sweep",
            result="none",
        )
        == 1
    )


async def test_a_restarted_idle_jibri_is_confirmed_then_deleted(
    jibris: FakeJibris, prober: Prober
) -> None:
    cluster = restarted_while_busy()
    jibris.behaviours["127.0.10.1"] = "IDLE"
    s = sweeper(cluster, prober)
    report = await s.sweep_once()
    assert jibris.hits["127.0.10.1"] == 2  # asked twice: the decision, then the confirmation
    assert report.actions == {"delete": 1}
    assert cluster.pods == {}


# -- a frozen cache, and unresponsive busy pods ---------------------------------------------------


async def test_a_cache_whose_watch_broke_never_makes_a_successful_sweep(
    jibris: FakeJibris, prober: Prober
) -> None:
    """The watch broke (the cache is unsynced, so no snapshot) and the list fails too: the sweep
    is incomplete, and the SweepStale alert's timestamp does not move."""
    from jibri_pod_controller.loops.watching import PodCache

    class Frozen:
        async def list_pods_snapshot(self, *, selector: str, page_size: int) -> Any:
            raise AssertionError("not called")

        def watch_pods_raw(self, **_: Any) -> Any:
            raise AssertionError("not called")

    cluster = FakeCluster()
    cluster.add_pod("jibri-0", ips=[_addresses(1)[0]])
    cache = PodCache(stream=Frozen(), selector="app=jibri", metrics=Metrics())
    # What the cache held when its watch broke; the break cleared `synced`.
    stale = cluster.pod("jibri-0")
    assert stale is not None
    cache._pods = {"jibri-0": stale}
    assert not cache.synced.is_set()
    s = sweeper(cluster, prober, snapshot=cache.snapshot)
    ok = await s.sweep_once()
    assert ok.listed_all  # listed for itself, fresh
    stamp = s.sample("jibri_pod_controller_last_successful_sweep_timestamp_seconds")
    assert stamp > 0
    cluster.fail_next("list_pods", kube.Unavailable("list pods: HTTP 503"))
    failed = await s.sweep_once()
    assert not failed.listed_all
    assert s.sample("jibri_pod_controller_sweeps_total", result="failed") == 1
    assert s.sample("jibri_pod_controller_last_successful_sweep_timestamp_seconds") == stamp


async def test_unresponsive_busy_pods_are_counted_and_kept_by_default(
    jibris: FakeJibris, prober: Prober
) -> None:
    cluster = FakeCluster()
    cluster.add_pod(
        "sick", ips=[UNREACHABLE], labels=BUSY_LABELS, annotations=busy_notes(), ready=False
    )
    cluster.add_pod("fine", ips=[UNREACHABLE], labels=BUSY_LABELS, annotations=busy_notes())
    now = [0.0]
    s = sweeper(cluster, prober, monotonic=lambda: now[0])
    for _ in range(3):
        report = await s.sweep_once()
        now[0] += 86400
    assert report.unresponsive == 1
    assert s.sample("jibri_pod_controller_unresponsive_busy_pods") == 1
    assert cluster.pod_writes() == []


async def test_the_unresponsive_rule_deletes_only_after_its_period_without_a_break(
    jibris: FakeJibris, prober: Prober
) -> None:
    cluster = FakeCluster()
    address = _addresses(1)[0]
    sick = cluster.add_pod(
        "sick", ips=[address], labels=BUSY_LABELS, annotations=busy_notes(), ready=False
    )
    jibris.behaviours[address] = "500"
    now = [0.0]
    s = sweeper(cluster, prober, policy=Policy(unresponsive_seconds=600), monotonic=lambda: now[0])
    await s.sweep_once()  # first seen unresponsive at t=0
    now[0] = 400
    jibris.behaviours[address] = "BUSY"  # it answers once: the clock starts again
    await s.sweep_once()
    jibris.behaviours[address] = "500"
    now[0] = 500
    await s.sweep_once()
    now[0] = 1000  # 500 s since the break: not yet
    await s.sweep_once()
    assert cluster.pod_writes() == []
    now[0] = 1100
    await s.sweep_once()
    assert [(w.method, w.name) for w in cluster.pod_writes()] == [("delete_pod", sick.name)]
    assert (
        s.sample(
            "jibri_pod_controller_actions_total",
            action="delete",
            reason="unresponsive-while-busy",
            source="sweep",
            result="done",
        )
        == 1
    )


async def test_each_lease_term_starts_the_unresponsive_clocks_again(
    jibris: FakeJibris, prober: Prober
) -> None:
    """A replica that loses the Lease and wins it back does not resume the clocks of its
    earlier term: it saw nothing in between, so it starts from the sweeps of the new one."""
    cluster = FakeCluster()
    address = _addresses(1)[0]
    cluster.add_pod(
        "sick", ips=[address], labels=BUSY_LABELS, annotations=busy_notes(), ready=False
    )
    jibris.behaviours[address] = "500"
    now = [0.0]
    s = sweeper(cluster, prober, policy=Policy(unresponsive_seconds=600), monotonic=lambda: now[0])

    async def term() -> None:
        """One Lease term: `run`, which sweeps at once, then sleeps until it is stopped."""
        before = s.sample("jibri_pod_controller_sweeps_total", result="ok")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(s.sweeper.run(3600), timeout=2)
        assert s.sample("jibri_pod_controller_sweeps_total", result="ok") == before + 1

    await term()  # first seen unresponsive at t=0, in the first term
    now[0] = 700  # the Lease was lost meanwhile, and won back
    await term()
    assert cluster.pod_writes() == []  # 700 s since the first term's sight: not a reason
    now[0] = 1300  # 600 s of this term's own sightings
    await s.sweep_once()
    assert [(w.method, w.name) for w in cluster.pod_writes()] == [("delete_pod", "sick")]


async def test_the_next_sweep_asks_the_silent_pods_first(jibris: FakeJibris) -> None:
    # One probe at a time, so the order of the requests is the order of the sweep.
    probe = Prober(port=jibris.port, timeout=PROBE_TIMEOUT, max_bytes=MAX_BYTES, concurrency=1)
    cluster = FakeCluster()
    addresses = _addresses(6)
    for i, address in enumerate(addresses):
        cluster.add_pod(f"jibri-{i}", ips=[address])
    jibris.behaviours[addresses[4]] = "hang"
    jibris.behaviours[addresses[2]] = "500"
    rig = sweeper(cluster, probe, workers=1)
    try:
        first = await rig.sweep_once()
        assert first.probe_failures == 2
        assert jibris.order == addresses
        jibris.order.clear()
        jibris.behaviours[addresses[2]] = "IDLE"  # answers again: back to its place next time
        second = await rig.sweep_once()
        assert second.probe_failures == 1
        assert jibris.order == [
            addresses[2],
            addresses[4],
            *addresses[:2],
            addresses[3],
            addresses[5],
        ]
        jibris.order.clear()
        await rig.sweep_once()
        assert jibris.order == [addresses[4], *addresses[:4], addresses[5]]
    finally:
        await probe.close()


async def test_incomplete_sweeps_are_counted_in_a_row_and_a_complete_one_resets_the_count(
    prober: Prober,
) -> None:
    cluster = FakeCluster()
    cluster.add_pod("jibri-a", labels={"app": "jibri", "state": "idle"}, ips=())
    unavailable = kube.Unavailable("list pods: HTTP 503")
    # Lists 1, 2 fail; 3 works; 4, 5, 6 fail; the run is stopped after the sixth sweep.
    cluster.fail_next("list_pods", unavailable, unavailable)
    heard: list[int] = []
    gauge: list[float] = []
    done = asyncio.Event()

    def on_incomplete(in_a_row: int) -> None:
        heard.append(in_a_row)
        gauge.append(rig.sample("jibri_pod_controller_sweeps_incomplete_in_a_row"))
        if len(heard) == 2:  # the third list works, the next three fail again
            cluster.before_next("list_pods", lambda: None)
            cluster.before_next(
                "list_pods", lambda: cluster.fail_next("list_pods", *[unavailable] * 3)
            )
        if len(heard) == 5:
            done.set()

    rig = sweeper(cluster, prober, on_incomplete=on_incomplete)
    task = asyncio.create_task(rig.sweeper.run(0.0))
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert heard == [1, 2, 1, 2, 3]  # the complete third sweep started the count again
    assert gauge == [1, 2, 1, 2, 3]
    assert rig.sample("jibri_pod_controller_sweeps_total", result="failed") == 5
    assert rig.sample("jibri_pod_controller_sweeps_total", result="ok") == 1


@pytest.mark.parametrize(
    ("policy", "deleted"),
    [(ReapPolicy.KEEP, False), (ReapPolicy.DELETE, True)],
    ids=["keep", "delete"],
)
async def test_stuck_busy_pods_are_counted_and_deleted_only_by_policy(
    jibris: FakeJibris, prober: Prober, policy: ReapPolicy, deleted: bool
) -> None:
    cluster = FakeCluster()
    stuck_ip, recording_ip, early_ip = _addresses(3)
    for address in (stuck_ip, recording_ip, early_ip):
        jibris.behaviours[address] = "BUSY"
    long_ago = busy_notes(since=NOW - timedelta(minutes=10))
    watched = {ANNOTATION_SESSIONS_WATCHED: "true"}
    stuck = cluster.add_pod(
        "stuck", ips=[stuck_ip], labels=BUSY_LABELS, annotations={**long_ago, **watched}
    )
    cluster.add_pod(
        "recording",
        ips=[recording_ip],
        labels=BUSY_LABELS,
        annotations={**long_ago, **watched, ANNOTATION_SESSION_ON: "2025-06-01T11:50:20+00:00"},
    )
    cluster.add_pod(
        "early",
        ips=[early_ip],
        labels=BUSY_LABELS,
        annotations={**busy_notes(since=NOW - timedelta(minutes=2)), **watched},
    )
    s = sweeper(cluster, prober, policy=Policy(stuck_seconds=300, stuck=policy))
    report = await s.sweep_once()
    if deleted:
        assert [(w.method, w.name) for w in cluster.pod_writes()] == [("delete_pod", stuck.name)]
        assert (report.stuck, s.sample("jibri_pod_controller_stuck_busy_pods")) == (0, 0)
        assert (
            s.sample(
                "jibri_pod_controller_actions_total",
                action="delete",
                reason="stuck-busy",
                source="sweep",
                result="done",
            )
            == 1
        )
    else:
        assert cluster.pod_writes() == []
        assert (report.stuck, s.sample("jibri_pod_controller_stuck_busy_pods")) == (1, 1)
