"""The pools' streams: recordings started silently just before a pool's scale-down, bursts to a
pool's budget, and an operator who rolls a pool out and deletes recording pods."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from testbed.chaos.plan import (
    NAMESPACE,
    OPERATOR_KINDS,
    POOL_PERIOD,
    POOLS,
    SCALE_DOWN_DELAY,
    ChaosPool,
)
from testbed.chaos.state import Run
from testbed.chaos.workload import record_on
from testbed.simjibri import BusyStatus


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def ambushes(run: Run, pool: ChaosPool) -> None:
    """A moment before each scale-down of ``pool`` (its window closes at the turn of a
    minute; the scale-down follows after its delay, at the next round), one or two of its
    spares start recording silently: their BUSY webhooks are lost, so only the pool's own
    probe (or the sweeper) can know they are busy."""
    rng = run.rng(f"ambush-{pool.name}")
    while True:
        minute = int(time.time() // 60) + 1
        if minute % 2 != int(pool.closes_on_odd_minutes):
            minute += 1
        at = minute * 60 + SCALE_DOWN_DELAY + rng.uniform(-1.5, POOL_PERIOD + 1.0)
        await asyncio.sleep(max(0.0, at - time.time()))
        if not run.running:
            return
        for _ in range(rng.randint(1, 2)):
            length = rng.uniform(*run.size.recording_seconds)
            run.ambushed += 1
            run.spawn(record_on(run, pool.name, "lost-busy", length, rng, wait=1.0))
        run.fault("pool-ambush", time.time(), time.time(), pool.name)


async def bursts(run: Run) -> None:
    """Now and then as many recordings at once as a pool's budget holds, on its spares
    (more wait for a spare the pool brings up): the budget is reached."""
    rng = run.rng("bursts")
    await asyncio.sleep(rng.uniform(15, 25))
    while run.running:
        pool = rng.choice(POOLS)
        start = time.time()
        for _ in range(int(pool.spec["maxTotal"])):
            length = rng.uniform(*run.size.recording_seconds)
            run.spawn(record_on(run, pool.name, "normal", length, rng, wait=15.0))
            await asyncio.sleep(rng.uniform(0.1, 0.5))
        run.fault("pool-burst", start, time.time(), pool.name)
        await asyncio.sleep(rng.uniform(*run.size.burst_gap))


async def operator(run: Run) -> None:
    """An operator at work: a rollout of a pool's Deployment (its ReplicaSet deletes the
    old spares), and ``kubectl delete pod`` of a pod whose Jibri is recording. Either way
    the preStop hook must let a recording finish (I8)."""
    rng = run.rng("operator")
    assert run.admin is not None
    assert run.kubelet is not None
    kinds = list(OPERATOR_KINDS)
    rng.shuffle(kinds)
    await asyncio.sleep(rng.uniform(10, 20))
    while run.running:
        kind = kinds.pop() if kinds else rng.choice(OPERATOR_KINDS)
        start = time.time()
        target = ""
        try:
            if kind == "jibri-rollout":
                target = rng.choice(POOLS).name
                patch = {
                    "spec": {
                        "template": {
                            "metadata": {
                                "annotations": {"kubectl.kubernetes.io/restartedAt": _now()}
                            }
                        }
                    }
                }
                await k8s.AppsV1Api(run.admin).patch_namespaced_deployment(
                    target, NAMESPACE, patch, _request_timeout=5
                )
            else:
                recording = sorted(
                    n
                    for n, jibri in run.jibris.items()
                    if n in run.kubelet.running() and jibri.busy_status is BusyStatus.BUSY
                )
                if recording:
                    target = rng.choice(recording)
                    await k8s.CoreV1Api(run.admin).delete_namespaced_pod(
                        target, NAMESPACE, _request_timeout=5
                    )
        except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as exc:
            run.say(f"operator's {kind} failed ({type(exc).__name__}); later")
            target = ""
        if target:
            run.fault(kind, start, time.time(), target)
        await asyncio.sleep(rng.uniform(*run.size.operator_gap))
