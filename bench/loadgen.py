"""The open-loop load generator of figure 6, as its own process: ``python -m bench.loadgen``.

It reads its work as JSON on stdin (``port``, ``rate``, ``seconds``, ``warmup``, ``timeout`` and
``targets``: a list of ``{"ip", "request"}``, the request as latin-1 text), offers ``rate``
requests per second, and writes what it measured as JSON on stdout. A process of its own, on
uvloop, and pinned by the caller to the core the controller does not have: the generator must
keep its schedule (its own lateness is measured, ``send_lag``) and cost much less CPU per
request than the server it measures; inside the bench's process it shared a loop with watches
and samplers and fell behind at 1,000/s.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

import uvloop


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
        # Loosely typed: uvloop's transports implement the interface without subclassing it.
        cast(asyncio.WriteTransport, transport).write(self._request)

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


async def post(loop: asyncio.AbstractEventLoop, source: str, port: int, request: bytes) -> str:
    """Send ``request`` from ``source`` (a pod's address) on a new connection; the status."""
    done: asyncio.Future[str] = loop.create_future()
    transport, _ = await loop.create_connection(
        lambda: _Exchange(request, done), "127.0.0.1", port, local_addr=(source, 0)
    )
    try:
        return await done
    finally:
        transport.close()


def _own_cpu() -> float:
    return time.process_time()


@dataclass(frozen=True)
class OpenLoop:
    rate: int
    latencies: list[float]
    """Seconds from each request's scheduled send time to its complete answer (an error or a
    timeout counts as the timeout)."""
    codes: Counter[str]
    send_lag: list[float]
    """Seconds each request left after its scheduled time: the load generator's own delay."""
    window: tuple[float, float]
    """Wall-clock start and end of the measured requests' schedule."""
    load_cpu_s: float


async def open_loop(
    loop: asyncio.AbstractEventLoop,
    targets: list[tuple[str, bytes]],
    port: int,
    *,
    rate: int,
    seconds: float,
    warmup: float,
    timeout: float,
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
    order = itertools.cycle(targets)

    async def one(scheduled: float, target: tuple[str, bytes], counted: bool) -> None:
        if counted:
            lags.append(time.perf_counter() - scheduled)
        try:
            async with asyncio.timeout(timeout):
                code = await post(loop, target[0], port, target[1])
        except (OSError, TimeoutError) as exc:
            code = type(exc).__name__
        if counted:
            codes[code] += 1
            latencies.append(time.perf_counter() - scheduled if code == "200" else timeout)

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


async def _main() -> None:
    work: dict[str, Any] = json.load(sys.stdin)
    targets = [(t["ip"], t["request"].encode("latin-1")) for t in work["targets"]]
    measured = await open_loop(
        asyncio.get_running_loop(),
        targets,
        int(work["port"]),
        rate=int(work["rate"]),
        seconds=float(work["seconds"]),
        warmup=float(work["warmup"]),
        timeout=float(work["timeout"]),
    )
    json.dump(
        {
            "rate": measured.rate,
            "latencies": measured.latencies,
            "codes": dict(measured.codes),
            "send_lag": measured.send_lag,
            "window": list(measured.window),
            "load_cpu_s": measured.load_cpu_s,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_main())
