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
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

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
from bench.results import FigureResult, Goal, Row, percentile, rounded

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


class _Exchange(asyncio.Protocol):
    """One request on a new connection; the answer's status once its body is complete.

    A few dozen lines instead of an HTTP client library: the load generator must cost much
    less CPU per request than the server it measures.
    """

    def __init__(self, request: bytes, done: asyncio.Future[str]) -> None:
        self._request = request
        self._done = done
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        head, found, body = self._buffer.partition(b"\r\n\r\n")
        if not found or self._done.done():
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) >= length:
            self._done.set_result(head[9:12].decode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(type(exc).__name__ if exc else "closed-early")


async def _post(loop: asyncio.AbstractEventLoop, source: str, port: int, request: bytes) -> str:
    """Send ``request`` from ``source`` (a pod's address) on a new connection; the status."""
    done: asyncio.Future[str] = loop.create_future()
    transport, _ = await loop.create_connection(
        lambda: _Exchange(request, done), "127.0.0.1", port, local_addr=(source, 0)
    )
    try:
        return await done
    finally:
        transport.close()


@dataclass(frozen=True)
class OpenLoop:
    rate: int
    latencies: list[float]
    """Seconds from each request's scheduled send time to its complete answer (an error or a
    timeout counts as REQUEST_TIMEOUT)."""
    codes: Counter[str]
    send_lag: list[float]
    """Seconds each request left after its scheduled time: the load generator's own delay."""
    window: tuple[float, float]
    """Wall-clock start and end of the measured requests' schedule."""
    load_cpu_s: float


async def open_loop(
    loop: asyncio.AbstractEventLoop,
    pods: list[Any],
    port: int,
    requests: dict[str, bytes],
    *,
    rate: int,
    seconds: float,
    warmup: float,
) -> OpenLoop:
    """Offer ``rate`` requests per second whatever the answers do (an open loop).

    Each request has a scheduled send time, start + i / rate; its latency is counted from
    then, not from when it was actually sent, so a server (or generator) that falls behind
    sees its queueing counted, which a closed loop hides (coordinated omission). The first
    ``warmup`` seconds of requests are sent but not counted.
    """
    interval = 1.0 / rate
    counted_from = int(rate * warmup)
    total = counted_from + int(rate * seconds)
    latencies: list[float] = []
    lags: list[float] = []
    codes: Counter[str] = Counter()
    running: set[asyncio.Task[None]] = set()
    order = itertools.cycle(pods)

    async def one(scheduled: float, pod: Any, counted: bool) -> None:
        if counted:
            lags.append(time.perf_counter() - scheduled)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                code = await _post(loop, pod.ip, port, requests[pod.name])
        except (OSError, TimeoutError) as exc:
            code = type(exc).__name__
        if counted:
            codes[code] += 1
            latencies.append(time.perf_counter() - scheduled if code == "200" else REQUEST_TIMEOUT)

    start = time.perf_counter() + 0.05
    wall_offset = time.time() - time.perf_counter()
    cpu_start = 0.0
    for i in range(total):
        scheduled = start + i * interval
        if i == counted_from:
            cpu_start = _own_cpu()
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(scheduled, next(order), i >= counted_from))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.gather(*running)
    cpu = _own_cpu() - cpu_start
    window = (
        wall_offset + start + counted_from * interval,
        wall_offset + start + total * interval,
    )
    return OpenLoop(rate, latencies, codes, lags, window, cpu)


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
                    code = await _post(loop, pod.ip, port, requests[pod.name])
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
            await open_loop(
                loop,
                pods,
                port,
                requests,
                rate=rate,
                seconds=scale.open_loop_seconds,
                warmup=scale.resend_warmup,
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
