"""The pool loop with the forecast on, against the in-memory API of test_pooling: the history
stored at most every five minutes, read back from the status at a new term, outlooks built on
a worker thread while rounds go on, a term that ends without waiting for one, the store of a
leader shutting down, the metrics."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.core.forecast import History, Outlook, OutlookRequest, decode, encode
from jibri_pod_controller.core.selectors import parse_selector
from jibri_pod_controller.loops.pooling import PoolReconciler
from testbed.observing import wait_until
from tests.component.test_pooling import BUSY, NOW, NS, Detaches, FakeApi, Probes, pod
from tests.unit.test_pool_forecast_plan import CLUSTER, history_with_clusters

FORECAST = {
    "shortfallProbability": 0.01,
    "windowSeconds": 60,
    "startupSeconds": 30,
    "forecast": {"timeZone": "UTC"},
}
PREFIX = "jibri_pod_controller_pool_forecast_"


def pool_api(mode: str = "Recommend", status: dict[str, Any] | None = None) -> FakeApi:
    api = FakeApi(replicas=1)
    api.add_pool(
        "jibri",
        {
            "deploymentName": "jibri",
            "minSpare": 1,
            "maxSpare": 40,
            "scaleDownDelaySeconds": 0,
            "demand": {**copy.deepcopy(FORECAST), "mode": mode},
        },
        status,
    )
    api.add_pod(pod("spare-1"))
    return api


def forecasting(
    api: FakeApi,
    *,
    now: Callable[[], datetime] = lambda: NOW,
    build: Callable[[OutlookRequest], Outlook] = OutlookRequest.build,
    period: float = 5.0,
    metrics: Metrics | None = None,
) -> PoolReconciler:
    return PoolReconciler(
        api=api,
        namespace=NS,
        prober=Probes(),  # type: ignore[arg-type]
        actuator=Detaches(),  # type: ignore[arg-type]
        metrics=metrics or Metrics(),
        busy_labels=BUSY,
        period=period,
        jibri_selector=parse_selector("app=jibri"),
        wall_clock=now,
        build_outlook=build,
    )


def histories_stored(api: FakeApi) -> int:
    return sum(
        1
        for method, path, body in api.writes
        if path.endswith("/status") and "startHistory" in body["status"]
    )


def builds(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value(PREFIX + "build_seconds_count") or 0.0


async def test_the_history_is_stored_at_most_every_five_minutes() -> None:
    api = pool_api()
    clock = [NOW]
    metrics = Metrics()
    loop = forecasting(api, now=lambda: clock[0], metrics=metrics)
    stored = []
    for seconds in (0, 1, 30, 120, 299, 300, 301, 599, 600):
        clock[0] = NOW + timedelta(seconds=seconds)
        before = histories_stored(api)
        await loop.reconcile_all()
        if histories_stored(api) > before:
            stored.append(seconds)
        # Each round may ask for an outlook: let the worker thread hand it back.
        await wait_until(lambda: _true(builds(metrics) >= 1), timeout=5, what="an outlook")
    assert stored == [0, 300, 600]
    status = api.pools["jibri"]["status"]
    assert status["forecast"]["historyStoredAt"] == "2026-06-03T12:10:00Z"
    assert (
        decode(status["startHistory"]).recorded_until == (NOW + timedelta(minutes=10)).timestamp()
    )


async def test_a_new_term_reads_the_history_and_builds_its_outlook_off_the_loop() -> None:
    stored = history_with_clusters()
    api = pool_api("Apply", {"startHistory": encode(stored)})
    released = threading.Event()
    threads: list[int] = []

    def build(request: OutlookRequest) -> Outlook:
        threads.append(threading.get_ident())
        assert released.wait(10), "the test never released the build"
        return request.build()

    metrics = Metrics()
    loop = forecasting(api, build=build, period=0.05, metrics=metrics)
    task = asyncio.create_task(loop.run())
    try:
        # The build waits on its thread; the rounds go on meanwhile, on the reactive estimate.
        await wait_until(lambda: _true(len(threads) == 1), timeout=5, what="a build started")
        rounds = _reconciles(metrics)
        await wait_until(
            lambda: _true(_reconciles(metrics) >= rounds + 3), timeout=5, what="rounds"
        )
        status = api.pools["jibri"]["status"]
        assert status["forecast"]["basis"] == "NoHistory"
        assert status["forecast"]["historyDays"] == 2, "read from the status, not begun anew"
        assert api.replicas == 1
        released.set()
        # Handed to the pool's memory on the loop, and a round follows: the history's cluster.
        await wait_until(
            lambda: _true(api.pools["jibri"]["status"]["forecast"]["basis"] == "History"),
            timeout=5,
            what="a round with the outlook",
        )
        assert api.pools["jibri"]["status"]["bound"] == "forecast"
        assert api.replicas > CLUSTER
    finally:
        released.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert threads[0] != threading.get_ident()
    assert len(threads) == 1, "one build, not one a round"


async def test_a_term_ends_without_waiting_for_a_build() -> None:
    api = pool_api()
    released = threading.Event()
    started = threading.Event()

    def build(request: OutlookRequest) -> Outlook:
        started.set()
        released.wait(10)
        return request.build()

    loop = forecasting(api, build=build, period=0.05)
    task = asyncio.create_task(loop.run())
    try:
        await wait_until(lambda: _true(started.is_set()), timeout=5, what="a build started")
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        assert done == {task}, "the term's end waited for the build"
    finally:
        released.set()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_leader_shutting_down_stores_the_history() -> None:
    api = pool_api()
    clock = [NOW]
    loop = forecasting(api, now=lambda: clock[0])
    await loop.reconcile_all()
    busy = pod("busy-1", busy=True, busy_since=NOW + timedelta(seconds=20))
    api.add_pod(busy)
    clock[0] = NOW + timedelta(seconds=30)
    await loop.reconcile_all()
    status = api.pools["jibri"]["status"]
    assert decode(status["startHistory"]).starts == 0, "stored at the first round only"
    api.writes.clear()
    clock[0] = NOW + timedelta(seconds=40)
    await loop.flush()
    assert [path for _, path, _ in api.writes] == [f"{api_pools_path()}/jibri/status"]
    status = api.pools["jibri"]["status"]
    assert decode(status["startHistory"]).starts == 1
    # A merge patch: the rest of status.forecast stays.
    assert status["forecast"]["historyStoredAt"] == "2026-06-03T12:00:40Z"
    assert status["forecast"]["basis"] == "NoHistory"


async def test_the_forecast_metrics_come_and_go_with_the_forecast() -> None:
    api = pool_api()
    metrics = Metrics()
    loop = forecasting(api, metrics=metrics)
    await loop.reconcile_all()

    def value(name: str) -> float | None:
        return metrics.registry.get_sample_value(PREFIX + name, {"pool": "jibri"})

    assert value("applied") == 0
    assert value("recommended_spares") == 1
    assert value("history_bytes") == len(api.pools["jibri"]["status"]["startHistory"])
    assert value("references") == 0
    api.pools["jibri"]["spec"]["demand"]["forecast"]["enabled"] = False
    await loop.reconcile_all()
    assert value("applied") is None
    assert value("history_bytes") is None
    assert "forecast" not in api.pools["jibri"]["status"]
    assert "startHistory" in api.pools["jibri"]["status"], "kept for when it is on again"


async def test_an_unreadable_history_is_said_in_an_event_a_log_line_and_a_metric(
    caplog: Any,
) -> None:
    api = pool_api(status={"startHistory": "not a history"})
    metrics = Metrics()
    await forecasting(api, metrics=metrics).reconcile_all()
    resets = metrics.registry.get_sample_value(
        "jibri_pod_controller_pool_forecast_history_resets_total", {"pool": "jibri"}
    )
    assert resets == 1
    assert any("ForecastHistoryReset" in r.getMessage() for r in caplog.records)
    events = [body for method, path, body in api.writes if path.endswith("/events")]
    assert [e["reason"] for e in events] == ["ForecastHistoryReset"]
    assert isinstance(decode(api.pools["jibri"]["status"]["startHistory"]), History)


def api_pools_path() -> str:
    return f"/apis/jibri-pod-controller.io/v1alpha1/namespaces/{NS}/jibripools"


def _reconciles(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "jibri_pod_controller_pool_reconciles_total", {"result": "ok"}
    )
    return value or 0.0


async def _true(value: bool) -> bool:
    return value
