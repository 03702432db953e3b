"""Figure 1: detach latency when many Jibris turn BUSY at the same instant.

Two sets of idle Jibri pods in one namespace. For the first, the API server's own latency for
the detach write: the admin client sends the same JSON merge patch the controller makes (busy
labels, the annotations, uid and resourceVersion preconditions) to every pod at once. For the
second, the controller's: the bench sends every pod's BUSY webhook at once, from the pod's own
address and with its signed token, as Jibri would. Both are timed from the send to the moment a
pod watch shows the busy labels, on the same clock, with the same watch.

A full run does this five times, on fresh pods each time, and reports the medians and the
spread of the per-round ratio (best and worst round): one round's ratio swings with the API
server's and the machine's state.

The simulated Jibris of each controller burst are told to start recording just before it (so
their health API says BUSY too), with their own webhooks silenced, so the only BUSY webhooks are
the bench's. The admin client's connections
are opened before its burst: the reference is the API server's cost, not TLS handshakes. The
controller starts its burst as it is after some idle time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s

from bench.harness import (
    MERGE_PATCH,
    MIB,
    START_BODY,
    START_SERVICE,
    Bench,
    Impl,
    PodInfo,
    PodWatch,
    detach_like_patch,
    jibri_sessions,
    read_raw,
    status_body,
)
from bench.results import FigureResult, Goal, Row, finite, median, percentile, rounded
from testbed.cluster import BUSY_LABELS

RATIO_GOAL = Goal("<=", 1.2)


@dataclass(frozen=True)
class BurstOutcome:
    latencies: list[float]
    """Seconds from send to watch, per pod; a pod never seen counts as the timeout."""
    missed: int
    answers: Counter[str]
    answer_latencies: list[float]


def _outcome(
    sent: dict[str, float],
    watch: PodWatch,
    timeout: float,
    answers: Counter[str],
    answer_latencies: list[float],
) -> BurstOutcome:
    latencies: list[float] = []
    missed = 0
    for name, at in sent.items():
        seen = watch.seen.get(name)
        if seen is None:
            missed += 1
            latencies.append(timeout)
        else:
            latencies.append(seen - at)
    return BurstOutcome(latencies, missed, answers, answer_latencies)


async def apiserver_burst(
    bench: Bench, namespace: str, pods: list[PodInfo], watch: PodWatch, timeout: float
) -> BurstOutcome:
    core: Any = k8s.CoreV1Api(bench.admin)

    async def warm(pod: PodInfo) -> None:
        await read_raw(
            await core.read_namespaced_pod(pod.name, namespace, _preload_content=False), "get pod"
        )

    await asyncio.gather(*(warm(p) for p in pods))
    sent: dict[str, float] = {}
    answers: Counter[str] = Counter()
    answer_latencies: list[float] = []

    async def patch(pod: PodInfo) -> None:
        body = detach_like_patch(pod)
        sent[pod.name] = time.monotonic()
        response = await core.patch_namespaced_pod(
            pod.name, namespace, body, _content_type=MERGE_PATCH, _preload_content=False
        )
        try:
            await response.read()
        finally:
            response.release()
        answer_latencies.append(time.monotonic() - sent[pod.name])
        answers[str(response.status)] += 1

    await asyncio.gather(*(patch(p) for p in pods))
    await watch.wait(sent, timeout=timeout)
    return _outcome(sent, watch, timeout, answers, answer_latencies)


async def webhook_burst(
    url: str, pods: list[PodInfo], token: str, watch: PodWatch, timeout: float
) -> BurstOutcome:
    sent: dict[str, float] = {}
    answers: Counter[str] = Counter()
    answer_latencies: list[float] = []
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    bodies = {p.name: status_body(p.name, "BUSY") for p in pods}
    async with jibri_sessions([p.ip for p in pods]) as sessions:

        async def send(pod: PodInfo) -> None:
            sent[pod.name] = time.monotonic()
            try:
                async with sessions[pod.ip].post(
                    f"{url}/webhook/{pod.name}/v1/status", data=bodies[pod.name], headers=headers
                ) as response:
                    await response.read()
                    answers[str(response.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                answers[type(exc).__name__] += 1
            answer_latencies.append(time.monotonic() - sent[pod.name])

        await asyncio.gather(*(send(p) for p in pods))
    await watch.wait(sent, timeout=timeout)
    return _outcome(sent, watch, timeout, answers, answer_latencies)


def _ms(values: list[float], p: float) -> float:
    return rounded(percentile(values, p) * 1000, 1)


def _summary(outcome: BurstOutcome) -> dict[str, Any]:
    return {
        "p50_ms": _ms(outcome.latencies, 50),
        "p99_ms": _ms(outcome.latencies, 99),
        "missed": outcome.missed,
        "answers": dict(outcome.answers),
        "answer_p50_ms": _ms(outcome.answer_latencies, 50),
        "answer_p99_ms": _ms(outcome.answer_latencies, 99),
    }


async def run(bench: Bench, impl: Impl) -> FigureResult:
    scale = bench.scale
    n, rounds = scale.burst_pods, scale.burst_rounds
    result = FigureResult(1, impl.label)
    namespace = await bench.new_namespace("1")
    controller = bench.controller(
        impl, namespace, "burst", env={"SWEEP_INTERVAL": "3600"}, jwt=True
    )
    sampler = bench.start(controller)
    await controller.wait_ready()
    sets = [
        ([f"jibri-c{r}-{i:04d}" for i in range(n)], [f"jibri-a{r}-{i:04d}" for i in range(n)])
        for r in range(rounds)
    ]
    names = [name for pair in sets for group in pair for name in group]
    await bench.create_jibris(namespace, names, subscribers=[controller.webhook_base()], jwt=True)
    pods = await bench.wait_running(namespace, names, timeout=120 + len(names) / 4)
    ips = [p.ip for p in pods.values()]
    await bench.jibri_calls(ips, "/_sim/webhooks", {"enabled": False})

    # At rest: ready, the Jibris' start-up webhooks answered, nothing to do, and (in a full
    # run) the API connections that start-up opened closed again (aiohttp keeps idle ones 15 s).
    await asyncio.sleep(2.0 if scale.smoke else 16.0)
    rest_start = time.time()
    await asyncio.sleep(3.0)
    rest_end = time.time()

    watch = PodWatch(bench.admin, namespace, BUSY_LABELS)
    await watch.start()
    references: list[BurstOutcome] = []
    measured: list[BurstOutcome] = []
    windows: list[tuple[float, float]] = []
    try:
        for via_controller, via_apiserver in sets:
            references.append(
                await apiserver_burst(
                    bench, namespace, [pods[x] for x in via_apiserver], watch, scale.burst_timeout
                )
            )
            # Recording only now, and only this round's pods: a sweep the controller makes
            # meanwhile (after a lost and regained Lease on a loaded machine, say) then has
            # nothing to detach, and cannot take later rounds' pods before their webhooks.
            await bench.jibri_calls([pods[x].ip for x in via_controller], START_SERVICE, START_BODY)
            await asyncio.sleep(2.0)
            burst_start = time.time()
            async with bench.profiler(controller, f"fig1-{impl.label}-{len(windows)}") as profile:
                measured.append(
                    await webhook_burst(
                        controller.url,
                        [pods[x] for x in via_controller],
                        bench.token(),
                        watch,
                        scale.burst_timeout,
                    )
                )
                await asyncio.sleep(1.0)  # the Events it records after answering
            windows.append((burst_start, time.time()))
            if profile.summary is not None:
                result.details.setdefault("profiles", []).append(profile.summary)
            await asyncio.sleep(2.0)
    finally:
        await watch.stop()
    await asyncio.to_thread(controller.stop)

    ratios = [
        percentile(m.latencies, 99) / percentile(r.latencies, 99)
        for m, r in zip(measured, references, strict=True)
    ]
    of = f" (median of {rounds})" if rounds > 1 else ""

    def med(outcomes: list[BurstOutcome], p: float) -> float:
        return rounded(median([_ms(o.latencies, p) for o in outcomes]), 1)

    result.rows = [
        Row(
            f"p99 ratio controller / API server{of}",
            finite(rounded(median(ratios), 2)),
            "x",
            RATIO_GOAL,
        ),
        Row(f"controller p50, send to watch{of}", med(measured, 50), "ms"),
        Row(f"controller p99, send to watch{of}", med(measured, 99), "ms"),
        Row(f"API server PATCH p50, send to watch{of}", med(references, 50), "ms"),
        Row(f"API server PATCH p99, send to watch{of}", med(references, 99), "ms"),
    ]
    if rounds > 1:
        result.rows.append(Row("best p99 ratio of the bursts", rounded(min(ratios), 2), "x"))
        result.rows.append(Row("worst p99 ratio of the bursts", rounded(max(ratios), 2), "x"))
    result.details.update(
        {
            "pods_per_burst": n,
            "rounds": rounds,
            "auth": "jwt",
            "ratios": [rounded(x, 3) for x in ratios],
            "rounds_detail": [
                {"controller": _summary(m), "apiserver": _summary(r)}
                for m, r in zip(measured, references, strict=True)
            ],
            # Every round's latencies together, for the plot.
            "controller": {"latencies_s": [round(x, 5) for m in measured for x in m.latencies]},
            "apiserver": {"latencies_s": [round(x, 5) for r in references for x in r.latencies]},
            "rss_mib": {
                "rest": round(sampler.rss_peak(rest_start, rest_end) / MIB, 1),
                "burst": round(max(sampler.rss_peak(a, b) for a, b in windows) / MIB, 1),
            },
            "controller_cpu_s_per_burst": [round(sampler.cpu_between(a, b), 3) for a, b in windows],
            "watch": {"events": watch.events, "restarts": watch.restarts},
        }
    )
    if watch.restarts:
        result.notes.append(f"the pod watch was reopened {len(watch.restarts)} times")
    missed = (sum(m.missed for m in measured), sum(r.missed for r in references))
    if any(missed):
        result.notes.append(
            f"not seen within {scale.burst_timeout:g} s (counted as that): "
            f"{missed[0]} via the controller, {missed[1]} via the API server"
        )
    return result
