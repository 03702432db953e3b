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
import itertools
import os
import shutil
import sys
import time
from collections import Counter

import orjson
import psutil

from bench.harness import (
    START_BODY,
    START_SERVICE,
    Bench,
    Impl,
    detach_like_patch,
    run_queue_wait,
    status_body,
)
from bench.loadgen import OpenLoop, post
from bench.results import FigureResult, Goal, Row, percentile, rounded
from testbed.cluster import REPO

RATE_GOAL = Goal(">=", 2000)
P99_GOAL = Goal("<=", 10)
OPEN_LOOP_RATES = (1000, 2000)
"""Offered rates (requests per second) of the open-loop measurement; the goal is at the last."""
REQUEST_TIMEOUT = 5.0
CONTROLLER_CPU = 1
LOAD_CPU = 0


def _request(pod: str, port: int, token: str) -> bytes:
    body = status_body(pod, "BUSY")
    head = (
        f"POST /webhook/{pod}/v1/status HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


async def _open_loop(
    targets: list[tuple[str, bytes]],
    port: int,
    *,
    rate: int,
    seconds: float,
    warmup: float,
    cpu: int | None,
) -> OpenLoop:
    """Run `bench.loadgen` (its own process, pinned to ``cpu``) at ``rate`` and read its result."""
    work = {
        "port": port,
        "rate": rate,
        "seconds": seconds,
        "warmup": warmup,
        "timeout": REQUEST_TIMEOUT,
        "targets": [{"ip": ip, "request": request.decode("latin-1")} for ip, request in targets],
    }
    pin = ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []
    process = await asyncio.create_subprocess_exec(
        *pin,
        sys.executable,
        "-m",
        "bench.loadgen",
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate(orjson.dumps(work))
    if process.returncode != 0:
        raise RuntimeError(f"bench.loadgen exited {process.returncode}")
    got = orjson.loads(out)
    return OpenLoop(
        rate=int(got["rate"]),
        latencies=list(got["latencies"]),
        codes=Counter(got["codes"]),
        send_lag=list(got["send_lag"]),
        window=(float(got["window"][0]), float(got["window"][1])),
        load_cpu_s=float(got["load_cpu_s"]),
    )


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
    port = controller.port
    requests = {p.name: _request(p.name, port, token) for p in pods}
    order = itertools.cycle(pods)
    records: list[tuple[float, float, str]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        while not stop.is_set():
            pod = next(order)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(5.0):
                    code = await post(loop, pod.ip, port, requests[pod.name])
            except (OSError, TimeoutError) as exc:
                code = type(exc).__name__
            done = time.perf_counter()
            records.append((done, done - started, code))

    previous_affinity = os.sched_getaffinity(0)
    if pinned:
        os.sched_setaffinity(0, {LOAD_CPU})
    try:
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
        await asyncio.gather(*workers)
        await asyncio.sleep(1.0)
        open_loops = [
            await _open_loop(
                [(p.ip, requests[p.name]) for p in pods],
                port,
                rate=rate,
                seconds=scale.open_loop_seconds,
                warmup=scale.resend_warmup,
                cpu=LOAD_CPU if pinned else None,
            )
            for rate in OPEN_LOOP_RATES
        ]
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
            f"closed loop ({scale.resend_concurrency} in flight): p99 latency",
            rounded(percentile(ok, 99) * 1000, 2),
            "ms",
        ),
        Row("closed loop: p50 latency", rounded(percentile(ok, 50) * 1000, 2), "ms"),
        Row("controller CPU (of its one core)", rounded(100 * controller_cpu, 0), "%"),
        Row(
            "load generator CPU (of its one core)",
            rounded(100 * (own_end - own_start) / window, 0),
            "%",
        ),
        Row("controller runnable, waiting for its core", rounded(100 * waited[0] / window, 0), "%"),
    ]
    for measured in open_loops:
        goal = P99_GOAL if measured.rate == OPEN_LOOP_RATES[-1] else None
        label = f"open loop, {measured.rate:,}/s offered"
        result.rows.append(
            Row(
                f"{label}: p99 from scheduled send",
                rounded(percentile(measured.latencies, 99) * 1000, 2),
                "ms",
                goal,
            )
        )
        result.rows.append(
            Row(f"{label}: p50", rounded(percentile(measured.latencies, 50) * 1000, 2), "ms")
        )
        span = measured.window[1] - measured.window[0]
        result.rows.append(
            Row(
                f"{label}: controller CPU",
                rounded(100 * sampler.cpu_between(*measured.window) / span, 0),
                "%",
            )
        )
        if set(measured.codes) - {"200"}:
            result.notes.append(
                f"open loop at {measured.rate}/s: answers other than 200: {dict(measured.codes)}"
            )
    result.details = {
        "open_loop": [
            {
                "rate": m.rate,
                "seconds": scale.open_loop_seconds,
                "requests": len(m.latencies),
                "answers": dict(m.codes),
                "p50_ms": rounded(percentile(m.latencies, 50) * 1000, 2),
                "p90_ms": rounded(percentile(m.latencies, 90) * 1000, 2),
                "p99_ms": rounded(percentile(m.latencies, 99) * 1000, 2),
                "p999_ms": rounded(percentile(m.latencies, 99.9) * 1000, 2),
                "max_ms": rounded(max(m.latencies, default=0.0) * 1000, 2),
                "send_lag_p99_ms": rounded(percentile(m.send_lag, 99) * 1000, 2),
                "load_cpu_pct": rounded(
                    100 * m.load_cpu_s / max(1e-9, m.window[1] - m.window[0]), 0
                ),
                "controller_cpu_s": round(sampler.cpu_between(*m.window), 3),
            }
            for m in open_loops
        ],
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
