"""Figure 3: how long the Jibri pods go without a sweeper when the leader dies.

Two replicas; just before the bench kills the leader it makes a change only a sweep can see:
a marker Jibri starts recording with its webhooks silenced while its pod keeps the idle labels.
The takeover is the time from the kill until a pod watch sees the marker's busy labels land, the
standby's first sweep having detached it. That is measured from the API server's side,
so any implementation of the contract is timed the same way, with or without metrics. With
SIGKILL nothing is released, so the standby waits for the lease to expire (duration 15 s by
default, judged from when it last saw the record change, then its next retry); with SIGTERM
the leader releases the lease on its way out and the standby takes over at its next retry
(2 s, jittered). Each kind is repeated, a new standby and a new marker for each round, and the
median reported.
"""

from __future__ import annotations

import asyncio
import signal
import time

from bench.harness import START_BODY, START_SERVICE, Bench, Impl, PodInfo, PodWatch
from bench.results import FigureResult, Goal, Row, median, rounded
from testbed.cluster import BUSY_LABELS, ControllerProcess

KILL_GOAL = Goal("<=", 17.0)
TERM_GOAL = Goal("<=", 3.0)
SETTLE_S = 3.0
TAKEOVER_TIMEOUT_S = 60.0


async def _recording(bench: Bench, marker: PodInfo) -> None:
    await bench.jibri_calls([marker.ip], START_SERVICE, START_BODY)


async def _detached(watch: PodWatch, marker: PodInfo, since: float) -> float:
    """Seconds from ``since`` (monotonic) until the marker's busy labels land."""
    if not await watch.wait([marker.name], timeout=TAKEOVER_TIMEOUT_S):
        raise TimeoutError(f"{marker.name} not detached {TAKEOVER_TIMEOUT_S:g} s after the kill")
    return watch.seen[marker.name] - since


async def run(bench: Bench, impl: Impl) -> FigureResult:
    scale = bench.scale
    namespace = await bench.new_namespace("3")
    rounds = 1 + 2 * scale.failover_repeats
    names = [f"jibri-f-{i}" for i in range(3)] + [f"jibri-m-{i}" for i in range(rounds)]
    await bench.create_jibris(namespace, names)
    pods = await bench.wait_running(namespace, names, timeout=60)
    markers = [pods[f"jibri-m-{i}"] for i in range(rounds)]
    await bench.jibri_calls([m.ip for m in markers], "/_sim/webhooks", {"enabled": False})
    env = dict(scale.lease_env)
    counter = 0
    watch = PodWatch(bench.admin, namespace, BUSY_LABELS)
    await watch.start()

    async def replica() -> ControllerProcess:
        nonlocal counter
        counter += 1
        controller = bench.controller(impl, namespace, f"replica-{counter}", env=env, jwt=False)
        bench.start(controller)
        await controller.wait_ready()
        return controller

    takeovers: dict[str, list[float]] = {"SIGKILL": [], "SIGTERM": []}
    try:
        await _recording(bench, markers[0])
        leader = await replica()
        await _detached(watch, markers[0], time.monotonic())  # it leads and sweeps
        used = 1
        for sig in (signal.SIGKILL, signal.SIGTERM):
            for _ in range(scale.failover_repeats):
                standby = await replica()
                await asyncio.sleep(SETTLE_S)
                # The marker starts recording just before the kill, so the standby's very first
                # sweep finds it, however soon it comes.
                await _recording(bench, markers[used])
                killed_at = time.monotonic()
                leader.signal(sig)
                took = await _detached(watch, markers[used], killed_at)
                takeovers[sig.name].append(round(took, 2))
                used += 1
                await asyncio.to_thread(leader.wait_exit, 30)
                leader = standby
                print(
                    f"  fig 3 [{impl.label}]: {sig.name} -> {takeovers[sig.name][-1]} s",
                    flush=True,
                )
        await asyncio.to_thread(leader.stop)
    finally:
        await watch.stop()

    result = FigureResult(3, impl.label)
    result.rows = [
        Row(
            "SIGKILL leader: marker detached by the standby",
            median(takeovers["SIGKILL"]),
            "s",
            KILL_GOAL,
        ),
        Row(
            "SIGTERM leader: marker detached by the standby",
            median(takeovers["SIGTERM"]),
            "s",
            TERM_GOAL,
        ),
        Row("SIGKILL worst of repeats", rounded(max(takeovers["SIGKILL"]), 2), "s"),
        Row("SIGTERM worst of repeats", rounded(max(takeovers["SIGTERM"]), 2), "s"),
    ]
    result.details = {
        "takeovers_s": takeovers,
        "repeats": scale.failover_repeats,
        "measured": "from the kill to the marker's busy labels in a pod watch",
        "lease_env": dict(env) or "defaults (15 s / 10 s / 2 s)",
    }
    if env:
        result.notes.append(f"short lease timings for a quick run: {dict(env)}")
    return result
