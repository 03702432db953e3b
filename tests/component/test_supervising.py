"""Supervision of background loops: a crash is logged, counted and restarted with backoff."""

from __future__ import annotations

import asyncio
import logging

import pytest

from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.loops.supervising import backoff, supervise


def restarts(metrics: Metrics, loop: str) -> float:
    return (
        metrics.registry.get_sample_value(
            "jibri_pod_controller_loop_restarts_total", {"loop": loop}
        )
        or 0.0
    )


async def test_a_crashing_loop_is_logged_counted_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    runs = 0
    sleeps: list[float] = []
    heard: list[int] = []
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise RuntimeError(f"boom {runs}")
        done.set()
        await asyncio.Event().wait()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    task = asyncio.create_task(
        supervise(
            "sweeper",
            flaky,
            metrics=metrics,
            on_failure=heard.append,
            sleep=sleep,
            jitter=lambda: 0.5,
            monotonic=lambda: 0.0,
        )
    )
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(done.wait(), timeout=5)
    assert runs == 4
    assert heard == [1, 2, 3]
    assert sleeps == [0.5, 1.0, 2.0]  # growing backoff
    assert restarts(metrics, "sweeper") == 3
    failures = [r for r in caplog.records if "background loop sweeper failed" in r.getMessage()]
    assert len(failures) == 3
    assert failures[0].exc_info is not None  # with its traceback
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_loop_that_returns_is_restarted_too() -> None:
    metrics = Metrics()
    runs = 0

    async def returns() -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            await asyncio.Event().wait()

    async def sleep(_: float) -> None:
        return None

    task = asyncio.create_task(supervise("elector", returns, metrics=metrics, sleep=sleep))
    for _ in range(10):
        await asyncio.sleep(0)
    assert runs == 2
    assert restarts(metrics, "elector") == 1
    task.cancel()


async def test_a_failure_after_a_long_healthy_run_starts_the_count_again() -> None:
    metrics = Metrics()
    clock = iter([0.0, 1.0, 100.0, 1000.0, 1000.5])
    now = 0.0
    heard: list[int] = []
    runs = 0

    def monotonic() -> float:
        nonlocal now
        now = next(clock, now)
        return now

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            await asyncio.Event().wait()
        raise RuntimeError("boom")

    async def sleep(_: float) -> None:
        return None

    task = asyncio.create_task(
        supervise(
            "x", flaky, metrics=metrics, on_failure=heard.append, sleep=sleep, monotonic=monotonic
        )
    )
    for _ in range(10):
        await asyncio.sleep(0)
    # First run fails after 1 s (1 in a row); the second after 900 s of work (a new series).
    assert heard == [1, 1]
    task.cancel()


def test_backoff_is_capped() -> None:
    assert backoff(1, 0.5) == 0.5
    assert backoff(4, 0.5) == 4.0
    assert backoff(50, 0.5) == 30.0
    assert backoff(50, 1.0) == 45.0
