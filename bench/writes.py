"""Figure 4: the controller's API writes for one whole recording, from the audit log.

A Deployment of two simulated Jibris sends its webhooks (signed) to the controller, as in
production. One Jibri records for ``recording_seconds`` while it resends its status every
``status_period`` seconds (Jibri's default is 60 s) and the sweeper runs at its default
interval; then it stops, reports EXPIRED, and the pod is deleted. The API server's audit log
lists every write the controller's identity made to pods: exactly two are expected, the detach
(a patch) and the delete. The replacement pods the ReplicaSet creates are counted too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from bench.harness import JIBRI_PORT, START_BODY, START_SERVICE, Bench, Impl
from bench.results import FigureResult, Goal, Row
from testbed.cluster import apply, jibri_deployment, pod_write_events, service_account_user
from testbed.controlplane import CONTROLLER_MANAGER_USER

WRITES_GOAL = Goal("==", 2)
REPLICAS = 2


async def _sim_state(ip: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"http://{ip}:{JIBRI_PORT}/_sim/state") as response,
    ):
        state: dict[str, Any] = await response.json()
        return state


async def _until(check: Any, *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.5)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g}-minute" if seconds >= 120 else f"{seconds:g}-second"


async def run(bench: Bench, impl: Impl, recording: asyncio.Event | None = None) -> FigureResult:
    """Measure one recording; set ``recording`` once it runs (the set-up is over)."""
    scale = bench.scale
    namespace = await bench.new_namespace("4")
    controller = bench.controller(impl, namespace, "writes", env={}, jwt=True)
    bench.start(controller)
    await controller.wait_ready()
    await apply(
        bench.admin,
        [
            jibri_deployment(
                namespace=namespace,
                replicas=REPLICAS,
                subscribers=[controller.webhook_base()],
                status_period=scale.status_period,
                jwt=bench.keys.jibri,
            )
        ],
    )

    async def spares() -> list[dict[str, Any]] | None:
        pods = await bench.list_jibris(namespace)
        idle = [
            p
            for p in pods.values()
            if (p["metadata"].get("labels") or {}).get("state") == "idle"
            and (p.get("status") or {}).get("podIP")
        ]
        return idle if len(idle) >= REPLICAS else None

    target = (await _until(spares, timeout=90, what="two idle Jibris"))[0]
    name, ip = target["metadata"]["name"], target["status"]["podIP"]
    await bench.jibri_calls([ip], START_SERVICE, START_BODY)

    async def detached() -> bool:
        pod = (await bench.list_jibris(namespace)).get(name)
        return pod is not None and (pod["metadata"].get("labels") or {}).get("state") == "busy"

    await _until(detached, timeout=30, what=f"{name} detached")
    recording_started = time.monotonic()
    if recording is not None:
        recording.set()
    print(
        f"  fig 4 [{impl.label}]: recording for {scale.recording_seconds:g} s "
        f"(status every {scale.status_period:g} s)",
        flush=True,
    )
    await asyncio.sleep(scale.recording_seconds)
    before_stop = await _sim_state(ip)
    await bench.jibri_calls([ip], "/jibri/api/v1.0/stopService", {})

    async def gone() -> bool:
        return name not in await bench.list_jibris(namespace)

    await _until(gone, timeout=90, what=f"{name} deleted")
    recorded = time.monotonic() - recording_started
    await asyncio.sleep(2.0)  # audit events are written just after the response
    await asyncio.to_thread(controller.stop)

    writes = await asyncio.to_thread(
        pod_write_events,
        bench.plane,
        namespace=namespace,
        username=service_account_user(namespace),
    )
    created = await asyncio.to_thread(
        pod_write_events, bench.plane, namespace=namespace, username=CONTROLLER_MANAGER_USER
    )
    replacements = sum(1 for e in created if e.get("verb") == "create") - REPLICAS
    on_target = [(e["verb"], e["objectRef"]["name"]) for e in writes]
    result = FigureResult(4, impl.label)
    result.rows = [
        Row("controller writes to pods per recording", float(len(on_target)), "", WRITES_GOAL),
        Row(
            "status webhooks the Jibri sent while recording",
            float(before_stop.get("webhooksSent", 0)),
            "",
        ),
        Row("replacement pods created", float(replacements), ""),
    ]
    mode = (
        f"{_duration(scale.recording_seconds)} recording, "
        f"status resent every {scale.status_period:g} s"
    )
    result.details = {
        "mode": "smoke" if scale.smoke else "full",
        "description": mode,
        "recording_s": round(recorded, 1),
        "status_period_s": scale.status_period,
        "writes": on_target,
        "jibri_state_before_stop": before_stop,
    }
    result.notes.append(mode)
    return result
