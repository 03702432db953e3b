"""JibriPool figures on a real local control plane, from the API server's audit log.

1. Writes at steady state: a pool at its minSpare with nothing happening for ``--steady``
   seconds; every write of the controller's identity is counted (scale, pool status, pods,
   Events) and given per hour.
2. Recording start -> replacement asked for: ``--recordings`` recordings start one after
   another (the webhook detaches each Jibri, the ReplicaSet creates its replacement); the time
   from the start request to the replacement pod's creation (the audit log's timestamp).
3. The budget's edge: a pool at ``maxTotal`` takes one more recording; how long busy + replicas
   exceeds maxTotal (detach to scale write, audit timestamps).

    python -m bench.pools                     # about 3 minutes
    python -m bench.pools --steady 600        # a longer steady state

The machine's load shows in every figure: run it on an idle machine to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s

from testbed.cluster import (
    JIBRIPOOL_GROUP,
    JIBRIPOOL_PLURAL,
    JIBRIPOOL_VERSION,
    apply,
    jibri_pool,
    service_account_user,
    start_recording,
)
from testbed.controlplane import ControlPlane
from testbed.kube import new_api_client
from testbed.kubelet import run_in_thread
from testbed.observing import wait_until
from testbed.pool_demo import is_ready, set_up

NAMESPACE = "jibri-pool-bench"


def _stamp(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["stageTimestamp"]).replace("Z", "+00:00"))


def _kind(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    sub = ref.get("subresource")
    return f"{ref.get('resource')}/{sub}" if sub else str(ref.get("resource"))


async def _ready_spares(api: k8s.ApiClient) -> list[Any]:
    pods = (
        await k8s.CoreV1Api(api).list_namespaced_pod(NAMESPACE, label_selector="state=idle")
    ).items
    return [p for p in pods if is_ready(p)]


async def _status(api: k8s.ApiClient) -> dict[str, Any]:
    pool: Any = await k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        JIBRIPOOL_GROUP, JIBRIPOOL_VERSION, NAMESPACE, JIBRIPOOL_PLURAL, "jibri"
    )
    return dict(pool.get("status") or {})


async def measure(plane: ControlPlane, workdir: Path, *, steady: float, recordings: int) -> None:
    api = await new_api_client(plane.admin_kubeconfig)
    user = service_account_user(NAMESPACE)
    controller = await set_up(api, plane, workdir, namespace=NAMESPACE, replicas=3)
    try:
        spares = 3
        spec = {
            "deploymentName": "jibri",
            "minSpare": spares,
            "maxSpare": 10,
            "maxTotal": spares + recordings,
        }
        await apply(api, [jibri_pool(namespace=NAMESPACE, name="jibri", spec=spec)])

        async def settled() -> bool:
            status = await _status(api)
            return status.get("spare") == spares and len(await _ready_spares(api)) == spares

        await wait_until(settled, timeout=60, what="the pool at minSpare")
        await asyncio.sleep(3)  # let the last status write land
        before = len(plane.audit_events(username=user, namespace=NAMESPACE))
        print(f"steady state: {steady:g} s with nothing happening ...", flush=True)
        await asyncio.sleep(steady)
        quiet = plane.audit_events(username=user, namespace=NAMESPACE)[before:]
        by_kind = Counter(_kind(e) for e in quiet)
        per_hour = {k: v * 3600 / steady for k, v in by_kind.items()}
        print(
            "1. writes at steady state, per hour: "
            + (", ".join(f"{k} {v:.0f}" for k, v in sorted(per_hour.items())) or "none")
            + f" ({sum(by_kind.values())} in {steady:g} s; leases are the leader election)"
        )

        latencies: list[float] = []
        for n in range(recordings):
            ready = await wait_until(lambda: _ready_spares(api), timeout=60, what="a ready spare")
            asked = datetime.now(UTC)
            assert await start_recording(ready[0].status.pod_ip, session_id=f"b-{n}") == 200

            async def replaced(at: datetime = asked) -> list[datetime]:
                return [
                    _stamp(e)
                    for e in plane.audit_events(namespace=NAMESPACE)
                    if _kind(e) == "pods" and e["verb"] == "create" and _stamp(e) > at
                ]

            created = min(await wait_until(replaced, timeout=30, what="the replacement"))
            latencies.append((created - asked).total_seconds())

            async def back(count: int = n + 1) -> bool:
                status = await _status(api)
                return status.get("busy") == count and len(await _ready_spares(api)) >= min(
                    spares, spares + recordings - count
                )

            await wait_until(back, timeout=60, what="the pool settled again")
        latencies.sort()
        print(
            f"2. recording start -> replacement pod created, {len(latencies)} recordings: "
            f"median {statistics.median(latencies) * 1000:.0f} ms, "
            f"max {latencies[-1] * 1000:.0f} ms"
        )

        # 3. The pool is now at maxTotal - spares busy; fill the budget one recording at a time.
        overshoots: list[float] = []
        for n in range(spares):
            ready = await wait_until(lambda: _ready_spares(api), timeout=60, what="a spare")
            name = ready[0].metadata.name
            assert await start_recording(ready[0].status.pod_ip, session_id=f"edge-{n}") == 200

            async def lowered(count: int = recordings + n + 1, left: int = spares - n - 1) -> bool:
                status = await _status(api)
                return status.get("busy") == count and status.get("replicas") == left

            await wait_until(lowered, timeout=60, what="replicas lowered")
            events = plane.audit_events(username=user, namespace=NAMESPACE)
            detach = next(
                e
                for e in events
                if _kind(e) == "pods" and e["verb"] == "patch" and e["objectRef"]["name"] == name
            )
            scale = next(
                e for e in events if _kind(e) == "deployments/scale" and _stamp(e) > _stamp(detach)
            )
            overshoots.append((_stamp(scale) - _stamp(detach)).total_seconds())
        print(
            "3. budget edge, busy + replicas above maxTotal (detach -> scale write): "
            + ", ".join(f"{s * 1000:.0f} ms" for s in overshoots)
        )
    finally:
        controller.stop()
        await api.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steady", type=float, default=120.0, help="seconds of steady state")
    parser.add_argument("--recordings", type=int, default=10)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="jibri-pool-bench-"))
    plane = ControlPlane.start(workdir / "plane")
    try:
        with run_in_thread(plane.admin_kubeconfig, NAMESPACE):
            asyncio.run(measure(plane, workdir, steady=args.steady, recordings=args.recordings))
    finally:
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
