"""Supervision of the background loops: a crash is logged, counted, and the loop restarted.

Every long-running loop (readiness, election, the pod cache, key reloads, the sweeper) runs
under `supervise`. An unexpected exception never reaches the TaskGroup (which would take the
whole replica down with it): it is logged with its traceback, counted in
``loop_restarts_total{loop}``, and the loop starts again after a jittered, growing backoff.
``on_failure`` hears the number of failures in a row, so the sweeper's owner can give up the
Lease when the sweeper keeps failing (a standby then sweeps). A loop that ran for a while
before failing starts the count again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from jibri_pod_controller.adapters.metrics import Metrics

log = logging.getLogger("jibri_pod_controller.supervisor")

HEALTHY_AFTER = 60.0
"""Seconds a loop must run before a failure counts as the first of a new series."""


def backoff(failures: int, jitter: float, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before the restart that follows ``failures`` failures in a row."""
    return min(cap, base * 2.0 ** min(failures - 1, 10)) * (0.5 + jitter)


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    metrics: Metrics,
    on_failure: Callable[[int], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    jitter: Callable[[], float] = random.random,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``run()`` until cancelled, restarting it whenever it fails or returns."""
    failures = 0
    while True:
        started = monotonic()
        try:
            await run()
            log.error("background loop %s returned; restarting it", name, extra={"loop": name})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception(
                "background loop %s failed; restarting it",
                name,
                extra={"loop": name, "error": repr(exc)},
            )
        if monotonic() - started >= HEALTHY_AFTER:
            failures = 0
        failures += 1
        metrics.loop_restarts.labels(loop=name).inc()
        if on_failure is not None:
            on_failure(failures)
        await sleep(backoff(failures, jitter()))
