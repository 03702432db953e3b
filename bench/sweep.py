"""Figure 2: one full sweep at scale, and how its time and CPU grow with the number of pods.

One namespace grows from the smallest size to the largest: pods are created directly (with the
Jibri labels; much faster than scaling a Deployment), the fake kubelet gives each an address and
starts its Jibri, and every ``blackhole_every``-th Jibri is black-holed (it accepts connections
and never answers), so each sweep also waits out its probe timeouts (PROBE_TIMEOUT=1).

At each size each implementation is started as the only replica, sweeps once to warm up (that
sweep is discarded), then ``sweep_samples`` more; its sweep time is read from its "sweep done"
log line (or its metrics), and its CPU time over exactly that window from the kernel's count for
the process. The fake kubelet's CPU over the same window is recorded too: it serves every
probe, and when it is saturated the sweep measures the simulator, not the controller.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.harness import MIB, Bench, Impl, SweepTracker
from bench.results import FigureResult, Goal, Row, median, rounded

SWEEP_GOAL = Goal("<=", 3.0)
GOAL_SIZE = 5000


def _interval(size: int) -> int:
    return 2 + size // 1000


def _fit(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of value per pod."""
    if len(points) < 2:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


async def _grow(bench: Bench, namespace: str, have: int, size: int) -> None:
    names = [f"jibri-s-{i:05d}" for i in range(have, size)]
    started = time.monotonic()
    await bench.create_jibris(namespace, names, status_period=3600.0, concurrency=48)
    pods = await bench.wait_running(namespace, names, timeout=120 + size / 20)
    holes = [
        pods[f"jibri-s-{i:05d}"].ip
        for i in range(have, size)
        if i % bench.scale.blackhole_every == 0
    ]
    await bench.jibri_calls(holes, "/_sim/mode", {"health": "blackhole"})
    await asyncio.sleep(1.0)  # the switch to the black hole happens after the answer
    print(
        f"  fig 2: {size} pods running ({len(names)} new in {time.monotonic() - started:.0f} s)",
        flush=True,
    )


async def _measure(bench: Bench, impl: Impl, namespace: str, size: int) -> dict[str, Any]:
    samples = bench.scale.sweep_samples
    controller = bench.controller(
        impl,
        namespace,
        f"sweep-{size}",
        env={"PROBE_TIMEOUT": "1", "SWEEP_INTERVAL": str(_interval(size))},
        jwt=False,
    )
    sampler = bench.start(controller)
    tracker = SweepTracker(controller)
    profiled = size == max(bench.scale.sweep_sizes)
    try:
        await controller.wait_ready()
        await tracker.wait(1, timeout=120 + size / 10)
        async with bench.profiler(controller, f"fig2-{impl.label}-{size}") as profile:
            sweeps = await tracker.wait(1 + samples, timeout=samples * (_interval(size) + 120))
    finally:
        await asyncio.to_thread(controller.stop)
        await sampler.stop()
    kubelet = bench.kubelet_sampler
    kept = sweeps[1 : 1 + samples]
    runs: list[dict[str, Any]] = [
        {
            "seconds": round(s.seconds, 3),
            "cpu_s": round(sampler.cpu_between(s.start, s.end), 3),
            "kubelet_cpu_s": round(kubelet.cpu_between(s.start, s.end), 3) if kubelet else None,
            "pods_reported": s.pods,
            "source": s.source,
        }
        for s in kept
    ]
    measured: dict[str, Any] = {
        "size": size,
        "blackholed": len(range(0, size, bench.scale.blackhole_every)),
        "sweeps": runs,
        "warm_up_seconds": round(sweeps[0].seconds, 3),
        "seconds": median([r["seconds"] for r in runs]),
        "cpu_s": median([r["cpu_s"] for r in runs]),
        "rss_peak_mib": round(sampler.rss_peak() / MIB, 1),
    }
    if kubelet is not None:
        measured["kubelet_cpu_s"] = median([r["kubelet_cpu_s"] or 0.0 for r in runs])
    if profiled and profile.summary is not None:
        measured["profile"] = profile.summary
    return measured


async def run(bench: Bench, impls: list[Impl]) -> dict[str, FigureResult]:
    scale = bench.scale
    namespace = await bench.new_namespace("2")
    per_impl: dict[str, list[dict[str, Any]]] = {i.label: [] for i in impls}
    have = 0
    for size in scale.sweep_sizes:
        await _grow(bench, namespace, have, size)
        have = size
        for impl in impls:
            measured = await _measure(bench, impl, namespace, size)
            per_impl[impl.label].append(measured)
            print(
                f"  fig 2 [{impl.label}]: {size} pods: sweep {measured['seconds']:.2f} s, "
                f"CPU {measured['cpu_s']:.2f} s",
                flush=True,
            )
    results: dict[str, FigureResult] = {}
    largest = max(scale.sweep_sizes)
    for impl in impls:
        sizes = per_impl[impl.label]
        result = FigureResult(2, impl.label)
        top = sizes[-1]
        result.rows.append(
            Row(f"sweep of {largest} pods (PROBE_TIMEOUT=1)", top["seconds"], "s", SWEEP_GOAL)
        )
        result.rows.append(Row(f"CPU of one sweep of {largest} pods", top["cpu_s"], "s"))
        for measured in sizes[:-1]:
            result.rows.append(Row(f"sweep of {measured['size']} pods", measured["seconds"], "s"))
        time_slope = _fit([(m["size"], m["seconds"]) for m in sizes])
        cpu_slope = _fit([(m["size"], m["cpu_s"]) for m in sizes])
        result.rows.append(Row("sweep time per 1000 pods (fit)", rounded(time_slope * 1000), "s"))
        result.rows.append(Row("CPU per 1000 pods (fit)", rounded(cpu_slope * 1000), "s"))
        result.details = {
            "sizes": sizes,
            "blackhole_every": scale.blackhole_every,
            "probe_timeout_s": 1.0,
            "rss_mib": {"sweep": top["rss_peak_mib"], "sweep_size": largest},
        }
        if largest != GOAL_SIZE:
            result.notes.append(f"goal is for {GOAL_SIZE} pods; this run's largest is {largest}")
        results[impl.label] = result
    return results
