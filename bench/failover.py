"""Figure 3: how long the Jibri pods go without a sweeper when the leader dies.

Two replicas; the bench kills the leader and times until the other completes its first sweep
(its ``sweeps_total`` metric, polled every 100 ms). With SIGKILL nothing is released, so the
standby waits for the lease to expire (duration 15 s by default, judged from when it last saw
the record change, then its next retry); with SIGTERM the leader releases the lease on its way
out and the standby takes over at its next retry (2 s, jittered). Each kind is repeated, a new
standby started for each round, and the median reported.
"""

from __future__ import annotations

import asyncio
import signal
import time

from bench.harness import Bench, Impl
from bench.results import FigureResult, Goal, Row, median, rounded
from testbed.cluster import ControllerProcess

KILL_GOAL = Goal("<=", 17.0)
TERM_GOAL = Goal("<=", 3.0)
SETTLE_S = 3.0


async def _metric(controller: ControllerProcess, name: str) -> float:
    return await asyncio.to_thread(controller.metric, name)


async def _wait_for(controller: ControllerProcess, name: str, *, timeout: float) -> float:
    """Poll until metric ``name`` is at least 1; return the elapsed monotonic time."""
    started = time.monotonic()
    while await _metric(controller, name) < 1:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{controller.name}: {name} still 0 after {timeout:g} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def run(bench: Bench, impl: Impl) -> FigureResult:
    scale = bench.scale
    namespace = await bench.new_namespace("3")
    names = [f"jibri-f-{i}" for i in range(3)]
    await bench.create_jibris(namespace, names)
    await bench.wait_running(namespace, names, timeout=60)
    env = dict(scale.lease_env)
    counter = 0

    async def replica() -> ControllerProcess:
        nonlocal counter
        counter += 1
        controller = bench.controller(impl, namespace, f"replica-{counter}", env=env, jwt=False)
        bench.start(controller)
        await controller.wait_ready()
        return controller

    leader = await replica()
    await _wait_for(leader, "jibri_pod_controller_sweeps_total", timeout=60)
    takeovers: dict[str, list[float]] = {"SIGKILL": [], "SIGTERM": []}
    for sig in (signal.SIGKILL, signal.SIGTERM):
        for _ in range(scale.failover_repeats):
            standby = await replica()
            await asyncio.sleep(SETTLE_S)
            if await _metric(standby, "jibri_pod_controller_sweeps_total") > 0:
                raise RuntimeError(f"{standby.name} swept while {leader.name} was leading")
            killed_at = time.monotonic()
            leader.signal(sig)
            await _wait_for(standby, "jibri_pod_controller_sweeps_total", timeout=60)
            takeovers[sig.name].append(round(time.monotonic() - killed_at, 2))
            await asyncio.to_thread(leader.wait_exit, 30)
            leader = standby
            print(f"  fig 3 [{impl.label}]: {sig.name} -> {takeovers[sig.name][-1]} s", flush=True)
    await asyncio.to_thread(leader.stop)

    result = FigureResult(3, impl.label)
    result.rows = [
        Row("SIGKILL leader: standby's first sweep", median(takeovers["SIGKILL"]), "s", KILL_GOAL),
        Row("SIGTERM leader: standby's first sweep", median(takeovers["SIGTERM"]), "s", TERM_GOAL),
        Row("SIGKILL worst of repeats", rounded(max(takeovers["SIGKILL"]), 2), "s"),
        Row("SIGTERM worst of repeats", rounded(max(takeovers["SIGTERM"]), 2), "s"),
    ]
    result.details = {
        "takeovers_s": takeovers,
        "repeats": scale.failover_repeats,
        "lease_env": dict(env) or "defaults (15 s / 10 s / 2 s)",
    }
    if env:
        result.notes.append(f"short lease timings for a quick run: {dict(env)}")
    return result
