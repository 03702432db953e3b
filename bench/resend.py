"""Figure 6: how many status webhooks a replica answers per second when none needs a write.

Jibri resends its status every minute, so at scale most webhooks are BUSY for a pod that is
already detached. The controller is pinned to one core (``taskset -c 1``) and the bench, which
generates the load, to the other; the API server and etcd run wherever the scheduler puts them.
A fixed number of workers (``resend_concurrency``) send BUSY for already-busy pods, each request
from its pod's address with a signed token, on a new connection (as Jibri's minute-apart
webhooks are), with the per-source rate limit off (WEBHOOK_RATE_LIMIT=0). After a warm-up the
answers completed in the measuring window are counted; latency is the client's, connect
included. The CPU used by the controller and by the bench over the window tells which side was
the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import Counter

import aiohttp
import psutil

from bench.harness import (
    START_BODY,
    START_SERVICE,
    Bench,
    Impl,
    detach_like_patch,
    jibri_sessions,
    run_queue_wait,
    status_body,
)
from bench.results import FigureResult, Goal, Row, percentile, rounded

RATE_GOAL = Goal(">=", 2000)
P99_GOAL = Goal("<=", 10)
CONTROLLER_CPU = 1
LOAD_CPU = 0


def _own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


async def run(bench: Bench, impl: Impl) -> FigureResult:
    scale = bench.scale
    namespace = await bench.new_namespace("6")
    pinned = (os.cpu_count() or 1) >= 2
    controller = bench.controller(
        impl,
        namespace,
        "resend",
        env={"SWEEP_INTERVAL": "3600", "WEBHOOK_RATE_LIMIT": "0"},
        jwt=True,
        cpu=CONTROLLER_CPU if pinned else None,
    )
    sampler = bench.start(controller, cpu=CONTROLLER_CPU if pinned else None)
    await controller.wait_ready()
    names = [f"jibri-r-{i:04d}" for i in range(scale.resend_pods)]
    await bench.create_jibris(namespace, names, subscribers=[controller.webhook_base()], jwt=True)
    pods = list((await bench.wait_running(namespace, names, timeout=120)).values())
    ips = [p.ip for p in pods]
    await bench.jibri_calls(ips, "/_sim/webhooks", {"enabled": False})
    await bench.jibri_calls(ips, START_SERVICE, START_BODY)
    # Already detached: every BUSY below needs no write.
    await bench.patch_pods(namespace, pods, detach_like_patch)
    await asyncio.sleep(1.0)

    token = bench.token()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    bodies = {p.name: status_body(p.name, "BUSY") for p in pods}
    order = itertools.cycle(pods)
    records: list[tuple[float, float, str]] = []
    stop = asyncio.Event()
    url = controller.url
    previous_affinity = os.sched_getaffinity(0)
    if pinned:
        os.sched_setaffinity(0, {LOAD_CPU})
    try:
        async with jibri_sessions(ips, timeout=5.0) as sessions:

            async def worker() -> None:
                while not stop.is_set():
                    pod = next(order)
                    started = time.perf_counter()
                    try:
                        async with sessions[pod.ip].post(
                            f"{url}/webhook/{pod.name}/v1/status",
                            data=bodies[pod.name],
                            headers=headers,
                        ) as response:
                            await response.read()
                            code = str(response.status)
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        code = type(exc).__name__
                    done = time.perf_counter()
                    records.append((done, done - started, code))

            workers = [asyncio.create_task(worker()) for _ in range(scale.resend_concurrency)]
            await asyncio.sleep(scale.resend_warmup)
            assert controller.process is not None
            pid = controller.process.pid
            async with bench.profiler(controller, f"fig6-{impl.label}") as profile:
                window_start, wall_start, own_start = time.perf_counter(), time.time(), _own_cpu()
                waited = (run_queue_wait(pid), run_queue_wait(os.getpid()))
                await asyncio.sleep(scale.resend_seconds)
                waited = (
                    run_queue_wait(pid) - waited[0],
                    run_queue_wait(os.getpid()) - waited[1],
                )
                window_end, wall_end, own_end = time.perf_counter(), time.time(), _own_cpu()
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*workers)
    finally:
        os.sched_setaffinity(0, previous_affinity)
    await asyncio.to_thread(controller.stop)

    window = window_end - window_start
    inside = [r for r in records if window_start <= r[0] <= window_end]
    codes = Counter(code for _, _, code in inside)
    ok = [latency for _, latency, code in inside if code == "200"]
    rate = len(ok) / window
    controller_cpu = sampler.cpu_between(wall_start, wall_end) / window
    result = FigureResult(6, impl.label)
    result.rows = [
        Row("answered BUSY resends per second", rounded(rate, 0), "/s", RATE_GOAL),
        Row(
            "p99 latency (client, connect included)",
            rounded(percentile(ok, 99) * 1000, 2),
            "ms",
            P99_GOAL,
        ),
        Row("p50 latency", rounded(percentile(ok, 50) * 1000, 2), "ms"),
        Row("controller CPU (of its one core)", rounded(100 * controller_cpu, 0), "%"),
        Row(
            "load generator CPU (of its one core)",
            rounded(100 * (own_end - own_start) / window, 0),
            "%",
        ),
        Row("controller runnable, waiting for its core", rounded(100 * waited[0] / window, 0), "%"),
    ]
    result.details = {
        "pods": len(pods),
        "concurrency": scale.resend_concurrency,
        "window_s": round(window, 2),
        "answers": dict(codes),
        "pinned": {"controller": CONTROLLER_CPU, "load": LOAD_CPU} if pinned else None,
        "auth": "jwt",
        "rss_mib": {"resend": round(sampler.rss_peak(wall_start, wall_end) / (1024 * 1024), 1)},
        "run_queue_wait_s": {"controller": round(waited[0], 3), "load": round(waited[1], 3)},
    }
    if profile.summary is not None:
        result.details["profile"] = profile.summary
    if set(codes) - {"200"}:
        result.notes.append(f"answers other than 200: {dict(codes)}")
    if not pinned:
        result.notes.append("one CPU only: controller and load generator were not pinned")
    return result
