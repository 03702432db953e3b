"""Figure 1: detach latency when many Jibris turn BUSY at the same instant.

Two sets of idle Jibri pods in one namespace. For the first, the API server's own latency for
the detach write: the admin client sends the same JSON merge patch the controller makes (busy
labels, the annotations, uid and resourceVersion preconditions) to every pod at once. For the
second, the controller's: the bench sends every pod's BUSY webhook at once, from the pod's own
address and with its signed token, as Jibri would. Both are timed from the send to the moment a
pod watch shows the busy labels, on the same clock, with the same watch.

The simulated Jibris are told to start recording (so their health API says BUSY too) with their
own webhooks silenced, so the only BUSY webhooks are the bench's. The admin client's connections
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
    _raw,
    detach_like_patch,
    jibri_sessions,
    status_body,
)
from bench.results import FigureResult, Goal, Row, finite, percentile, rounded
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
        await _raw(
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


async def run(bench: Bench, impl: Impl) -> FigureResult:
    scale = bench.scale
    n = scale.burst_pods
    result = FigureResult(1, impl.label)
    namespace = await bench.new_namespace("1")
    controller = bench.controller(
        impl, namespace, "burst", env={"SWEEP_INTERVAL": "3600"}, jwt=True
    )
    sampler = bench.start(controller)
    await controller.wait_ready()
    via_controller = [f"jibri-c-{i:04d}" for i in range(n)]
    via_apiserver = [f"jibri-a-{i:04d}" for i in range(n)]
    names = via_controller + via_apiserver
    await bench.create_jibris(namespace, names, subscribers=[controller.webhook_base()], jwt=True)
    pods = await bench.wait_running(namespace, names, timeout=120 + n)
    ips = [p.ip for p in pods.values()]
    await bench.jibri_calls(ips, "/_sim/webhooks", {"enabled": False})
    await bench.jibri_calls(ips, START_SERVICE, START_BODY)

    # At rest: ready, the Jibris' start-up webhooks answered, nothing to do.
    await asyncio.sleep(2.0)
    rest_start = time.time()
    await asyncio.sleep(3.0)
    rest_end = time.time()

    watch = PodWatch(bench.admin, namespace, BUSY_LABELS)
    await watch.start()
    try:
        reference = await apiserver_burst(
            bench, namespace, [pods[x] for x in via_apiserver], watch, scale.burst_timeout
        )
        await asyncio.sleep(2.0)
        burst_start = time.time()
        async with bench.profiler(controller, f"fig1-{impl.label}") as profile:
            measured = await webhook_burst(
                controller.url,
                [pods[x] for x in via_controller],
                bench.token(),
                watch,
                scale.burst_timeout,
            )
            await asyncio.sleep(1.0)  # the Events it records after answering
        burst_end = time.time()
    finally:
        await watch.stop()
    await asyncio.to_thread(controller.stop)

    ratio = percentile(measured.latencies, 99) / percentile(reference.latencies, 99)
    result.rows = [
        Row("p99 ratio controller / API server", finite(rounded(ratio, 2)), "x", RATIO_GOAL),
        Row("controller p50, send to watch", _ms(measured.latencies, 50), "ms"),
        Row("controller p99, send to watch", _ms(measured.latencies, 99), "ms"),
        Row("API server PATCH p50, send to watch", _ms(reference.latencies, 50), "ms"),
        Row("API server PATCH p99, send to watch", _ms(reference.latencies, 99), "ms"),
    ]
    result.details = {
        "pods_per_burst": n,
        "auth": "jwt",
        "controller": {
            "latencies_s": [round(x, 5) for x in measured.latencies],
            "missed": measured.missed,
            "answers": dict(measured.answers),
            "answer_p50_ms": _ms(measured.answer_latencies, 50),
            "answer_p99_ms": _ms(measured.answer_latencies, 99),
        },
        "apiserver": {
            "latencies_s": [round(x, 5) for x in reference.latencies],
            "missed": reference.missed,
            "answers": dict(reference.answers),
            "answer_p50_ms": _ms(reference.answer_latencies, 50),
            "answer_p99_ms": _ms(reference.answer_latencies, 99),
        },
        "rss_mib": {
            "rest": round(sampler.rss_peak(rest_start, rest_end) / MIB, 1),
            "burst": round(sampler.rss_peak(burst_start, burst_end) / MIB, 1),
        },
        "controller_cpu_s_burst": round(sampler.cpu_between(burst_start, burst_end), 3),
        "watch": {"events": watch.events, "restarts": watch.restarts},
    }
    if profile.summary is not None:
        result.details["profile"] = profile.summary
    if watch.restarts:
        result.notes.append(f"the pod watch was reopened {len(watch.restarts)} times")
    if measured.missed or reference.missed:
        result.notes.append(
            f"not seen within {scale.burst_timeout:g} s (counted as that): "
            f"{measured.missed} via the controller, {reference.missed} via the API server"
        )
    return result
