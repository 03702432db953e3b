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
import orjson

from bench.harness import JIBRI_PORT, START_BODY, START_SERVICE, Bench, Impl
from bench.results import FigureResult, Goal, Row
from testbed.cluster import (
    apply,
    jibri_deployment,
    pod_write_events,
    service_account_user,
)
from testbed.controlplane import CONTROLLER_MANAGER_USER
from testbed.observing import wait_until

WRITES_GOAL = Goal("==", 2)
REPLICAS = 2


SIM_PATIENCE_S = 120.0
"""How long a call to the simulated Jibri may keep failing. The recording ends while the other
figures run, and the fake kubelet, which serves every simulated Jibri, can be busy for tens of
seconds then (creating 1,200 or 5,000 pods): a single call's timeout was too short (a bare
TimeoutError ended this figure in a run with --recording-minutes 2)."""


async def _sim_call(ip: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """One call to a simulated Jibri's API, retried while it does not answer at all."""
    deadline = time.monotonic() + SIM_PATIENCE_S
    last = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.request(
                    method, f"http://{ip}:{JIBRI_PORT}{path}", json=body
                ) as response:
                    text = await response.text()
                    if response.status != 200:
                        raise RuntimeError(
                            f"{method} {path} on {ip}: HTTP {response.status} {text}"
                        )
                    answer: dict[str, Any] = orjson.loads(text) if text.strip() else {}
                    return answer
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = type(exc).__name__
            await asyncio.sleep(1.0)
    raise TimeoutError(
        f"{method} {path} on the Jibri at {ip}: no answer in {SIM_PATIENCE_S:g} s (last: {last})"
    )


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

    target = (await wait_until(spares, timeout=90, interval=0.5, what="two idle Jibris"))[0]
    name, ip = target["metadata"]["name"], target["status"]["podIP"]
    await _sim_call(ip, "POST", START_SERVICE, START_BODY)

    async def detached() -> bool:
        pod = (await bench.list_jibris(namespace)).get(name)
        return pod is not None and (pod["metadata"].get("labels") or {}).get("state") == "busy"

    await wait_until(detached, timeout=30, interval=0.5, what=f"{name} detached")
    recording_started = time.monotonic()
    if recording is not None:
        recording.set()
    print(
        f"  fig 4 [{impl.label}]: recording for {scale.recording_seconds:g} s "
        f"(status every {scale.status_period:g} s)",
        flush=True,
    )
    await asyncio.sleep(scale.recording_seconds)
    before_stop = await _sim_call(ip, "GET", "/_sim/state")
    await _sim_call(ip, "POST", "/jibri/api/v1.0/stopService", {})

    async def gone() -> bool:
        return name not in await bench.list_jibris(namespace)

    # EXPIRED is sent once; if the controller missed it, its sweeper (every 60 s) deletes.
    await wait_until(gone, timeout=180, interval=0.5, what=f"{name} deleted")
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
