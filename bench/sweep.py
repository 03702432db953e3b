"""Figure 2: one full sweep at scale, and how its time and CPU grow with the number of pods.

One namespace grows from the smallest size to the largest: pods are created directly (with the
Jibri labels; much faster than scaling a Deployment), the fake kubelet gives each an address and
starts its Jibri, and every ``blackhole_every``-th Jibri is black-holed (it accepts connections
and never answers), so each sweep also waits out its probe timeouts (PROBE_TIMEOUT=1).

The sweep is timed from the API server's side, so that any implementation of the contract is
measured the same way, logs and metrics or none: ten marker Jibris spread over the list are
recording, with their webhooks silenced, while their pods carry the idle labels, which only a
sweep can notice. With SWEEP_INTERVAL=1 the sweeps run back to back; each sweep detaches every
marker (a pod watch sees the busy labels land) and the bench puts the idle labels back at once.
The time between two detaches of the same marker is one sweep (for a sweep longer than the 1 s
interval); the median over the markers and the sweeps is reported. Its CPU is the controller's
CPU rate over those sweeps times that period, from the kernel's count for the process. An
implementation that writes "sweep done" log lines (``ms``) gets that figure too, as a check.

The fake kubelet answers every probe. To keep its CPU from setting the pace it runs on uvloop,
and during this figure it has CPU 0 to itself while the controller is pinned to CPU 1; its
share of its core over the same sweeps is reported, and a note is added above 90%.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from typing import Any

from bench.harness import (
    MIB,
    START_BODY,
    START_SERVICE,
    Bench,
    Impl,
    PodInfo,
    PodWatch,
    SweepTracker,
    detach_like_patch,
)
from bench.results import FigureResult, Goal, Row, median, rounded
from testbed.cluster import BUSY_LABELS, IDLE_LABELS

SWEEP_GOAL = Goal("<=", 2.0)
CPU_GOAL = Goal("<=", 1.0)
"""Half the 2 CPU-seconds a 5,000-pod sweep took before (1.7 to 2.2 s in three full runs)."""
GOAL_SIZE = 5000
MARKERS = 10
CONTROLLER_CPU = 1
KUBELET_CPU = 0
KUBELET_BUSY_PCT = 90


def _fit(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of value per pod."""
    if len(points) < 2:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def _name(index: int) -> str:
    return f"jibri-s-{index:05d}"


async def _grow(bench: Bench, namespace: str, have: int, size: int) -> None:
    names = [_name(i) for i in range(have, size)]
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


def _spread(names: list[str], count: int, skip: set[str]) -> list[str]:
    """``count`` names evenly spaced over ``names`` (sorted, as the API lists them)."""
    usable = [n for n in sorted(names) if n not in skip]
    if len(usable) <= count:
        return usable
    step = len(usable) / count
    return [usable[int(i * step + step / 2)] for i in range(count)]


def _idle_patch(pod: PodInfo) -> dict[str, Any]:
    annotations = dict.fromkeys(detach_like_patch(pod)["metadata"]["annotations"])
    return {"metadata": {"labels": dict(IDLE_LABELS), "annotations": annotations}}


@contextlib.contextmanager
def _pinned(pid: int, cpu: int | None) -> Iterator[None]:
    """Every thread of ``pid`` on ``cpu`` for a while (None: leave it as it is)."""
    if cpu is None:
        yield
        return
    everywhere = os.sched_getaffinity(0)
    tasks = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    for tid in tasks:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, {cpu})
    try:
        yield
    finally:
        for tid in tasks:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, everywhere)


async def _measure(
    bench: Bench, impl: Impl, namespace: str, size: int, markers: list[PodInfo]
) -> dict[str, Any]:
    samples = bench.scale.sweep_samples
    pinned = (os.cpu_count() or 1) >= 2
    await bench.patch_pods(namespace, markers, _idle_patch)
    watch = PodWatch(bench.admin, namespace, BUSY_LABELS)
    await watch.start()
    controller = bench.controller(
        impl,
        namespace,
        f"sweep-{size}",
        env={"PROBE_TIMEOUT": "1", "SWEEP_INTERVAL": "1"},
        jwt=False,
        cpu=CONTROLLER_CPU if pinned else None,
    )
    names = {m.name: m for m in markers}
    reset = dict.fromkeys(names, 0)
    wanted = samples + 2  # the first detach is the warm-up sweep's
    tracker = SweepTracker(controller)
    profiled = size == max(bench.scale.sweep_sizes)
    kubelet = bench.kubelet_sampler
    sampler = bench.start(controller, cpu=CONTROLLER_CPU if pinned else None)
    try:
        with _pinned(bench.kubelet.pid, KUBELET_CPU if pinned else None):
            await controller.wait_ready()
            deadline = time.monotonic() + 120 + size / 10 + samples * 10
            async with bench.profiler(controller, f"fig2-{impl.label}-{size}") as profile:
                while min(len(watch.arrivals.get(n, ())) for n in names) < wanted:
                    if time.monotonic() > deadline:
                        got = {n: len(watch.arrivals.get(n, ())) for n in names}
                        raise TimeoutError(
                            f"markers detached {got} times, {wanted} wanted:\n{controller.tail()}"
                        )
                    due = [names[n] for n in names if len(watch.arrivals.get(n, ())) > reset[n]]
                    if due:
                        for pod in due:
                            reset[pod.name] = len(watch.arrivals[pod.name])
                        await bench.patch_pods(namespace, due, _idle_patch)
                    await asyncio.sleep(0.02)
            await tracker.poll()
    finally:
        await watch.stop()
        await asyncio.to_thread(controller.stop)
        await sampler.stop()
    periods = [
        later - earlier
        for n in names
        for earlier, later in itertools.pairwise(watch.arrivals[n][1:wanted])
    ]
    period = median(periods)
    window = (
        min(watch.arrivals[n][1] for n in names),
        max(watch.arrivals[n][wanted - 1] for n in names),
    )
    span = max(1e-9, window[1] - window[0])
    cpu_rate = sampler.cpu_between(*window) / span
    measured: dict[str, Any] = {
        "size": size,
        "blackholed": len(range(0, size, bench.scale.blackhole_every)),
        "markers": len(names),
        "seconds": rounded(period, 3),
        "periods_s": sorted(round(p, 3) for p in periods),
        "spread_s": [rounded(min(periods), 3), rounded(max(periods), 3)],
        "cpu_s": rounded(cpu_rate * period, 3),
        "controller_cpu_pct": rounded(100 * cpu_rate, 0),
        "rss_peak_mib": round(sampler.rss_peak() / MIB, 1),
        "pinned": {"controller": CONTROLLER_CPU, "kubelet": KUBELET_CPU} if pinned else None,
    }
    if kubelet is not None:
        kubelet_rate = kubelet.cpu_between(*window) / span
        measured["kubelet_cpu_s"] = rounded(kubelet_rate * period, 3)
        measured["kubelet_cpu_pct"] = rounded(100 * kubelet_rate, 0)
    logged = [s.seconds for s in tracker.sweeps if s.source == "log"][1:]
    if logged:
        measured["logged_seconds"] = rounded(median(logged), 3)
    if profiled and profile.summary is not None:
        measured["profile"] = profile.summary
    return measured


async def run(bench: Bench, impls: list[Impl]) -> dict[str, FigureResult]:
    scale = bench.scale
    namespace = await bench.new_namespace("2")
    per_impl: dict[str, list[dict[str, Any]]] = {i.label: [] for i in impls}
    have = 0
    recording: set[str] = set()
    for size in scale.sweep_sizes:
        await _grow(bench, namespace, have, size)
        have = size
        pods = await bench.wait_running(namespace, [_name(i) for i in range(size)], timeout=60)
        holes = {_name(i) for i in range(0, size, scale.blackhole_every)}
        markers = [pods[n] for n in _spread(list(pods), MARKERS, holes)]
        new = [m for m in markers if m.name not in recording]
        await bench.jibri_calls([m.ip for m in new], "/_sim/webhooks", {"enabled": False})
        await bench.jibri_calls([m.ip for m in new], START_SERVICE, START_BODY)
        recording.update(m.name for m in new)
        for impl in impls:
            measured = await _measure(bench, impl, namespace, size, markers)
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
            Row(
                f"sweep of {largest} pods, from the API server (PROBE_TIMEOUT=1)",
                top["seconds"],
                "s",
                SWEEP_GOAL,
            )
        )
        result.rows.append(Row(f"CPU of one sweep of {largest} pods", top["cpu_s"], "s", CPU_GOAL))
        result.rows.append(Row("fastest sweep of the markers", top["spread_s"][0], "s"))
        result.rows.append(Row("slowest sweep of the markers", top["spread_s"][1], "s"))
        if "logged_seconds" in top:
            result.rows.append(
                Row(f"sweep of {largest} pods, from its own log", top["logged_seconds"], "s")
            )
        if "kubelet_cpu_pct" in top:
            result.rows.append(
                Row("fake kubelet CPU over those sweeps (of its core)", top["kubelet_cpu_pct"], "%")
            )
            if top["kubelet_cpu_pct"] > KUBELET_BUSY_PCT:
                result.notes.append(
                    f"the fake kubelet used {top['kubelet_cpu_pct']:g}% of its core: it may "
                    "have limited the sweep"
                )
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
