"""Figure 7: the JibriPool reconcile at scale, its CPU and its API calls, steady and in a burst.

``pool_count`` JibriPools, each sizing a Deployment of ``pool_pods`` simulated Jibris (20 x 250
= 5,000 in a full run), on the bench's control plane, the controller with deploy/'s Role (the
pool rights included) as its restricted identity.

The pods are the real thing, made quickly. Each Deployment is created with no replicas, so the
deployment controller creates its ReplicaSet (and the pod-template-hash); then the
kube-controller-manager is stopped, each Deployment and its ReplicaSet are set to
``pool_pods`` replicas, the pods are created directly (the template's labels, the hash, and a
controller ownerReference to the ReplicaSet: what the ReplicaSet controller itself would have
created), and the controller manager is started again. It finds every ReplicaSet at its count,
creates and deletes nothing (the audit log checks that), and from then on runs as usual: in the
burst it creates the replacements. The ReplicaSet controller would take minutes to create 5,000
pods at its default API rate limit.

Measured, in order:

1. *Idle*: the controller with the pods and the Deployments but no JibriPool, for
   ``pool_idle_seconds``: its CPU (the baseline) and API calls.
2. *Steady*: the JibriPools (``minSpare`` = the pod count, so nothing changes), once every pool
   has written its status, for ``pool_steady_seconds``: CPU, and CPU above the idle baseline
   per pool and, for an implementation with this one's metrics, per reconcile round; API calls
   per minute by verb and resource. An operator expects no API write then but the Lease's.
3. *Burst*: ``pool_burst`` recordings start across the pools at once (Jibri's own API, as the
   pool bench does: each Jibri sends its BUSY webhook, the controller detaches it, the
   ReplicaSet creates a replacement); from the first start until every pool's status shows its
   busy pods and all its spares Ready again: CPU, API calls per minute by verb and resource.

CPU is the kernel's count for the controller's process tree (`Sampler`). API calls are the API
server's audit log, for the controller's identity only: its client certificate also carries
the group `READS_AUDITED_GROUP` (testbed/controlplane.py), which grants nothing and whose
reads the audit policy logs (for everyone else it logs only writes). A watch is logged when it
ends; the controller is stopped before the log is read, so every watch it opened is counted,
by the time it was opened.
Round counts and durations come from the controller's ``pool_round_seconds`` histogram when it
serves /metrics (this implementation does); everything else is measured from outside.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client as k8s

from bench.harness import JIBRI_PORT, START_BODY, START_SERVICE, Bench, Impl, Sampler, read_raw
from bench.results import FigureResult, Goal, Row, rounded
from testbed.cluster import (
    BUSY_LABELS,
    IDLE_LABELS,
    JIBRIPOOL_CRD,
    JIBRIPOOL_GROUP,
    JIBRIPOOL_PLURAL,
    JIBRIPOOL_VERSION,
    ControllerProcess,
    apply,
    install_crds,
    jibri_deployment,
    jibri_pod,
    jibri_pool,
    service_account_user,
)
from testbed.controlplane import CONTROLLER_MANAGER_USER
from testbed.observing import wait_until

POOL_LABEL = "jibri-pool"
STEADY_WRITES_GOAL = Goal("==", 0)
"""Nothing changes, so an operator expects no write but the Lease's renewals."""
ROUND_METRIC = "jibri_pod_controller_pool_round_seconds"
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


def _deployment_name(index: int) -> str:
    return f"jibri-{index:02d}"


def _deployment(namespace: str, name: str, subscribers: Sequence[str]) -> dict[str, Any]:
    """A Jibri Deployment of its own selector (the idle labels plus its name), no replicas."""
    doc = jibri_deployment(
        namespace=namespace,
        replicas=0,
        subscribers=subscribers,
        name=name,
        status_period=3600.0,
    )
    labels = {**IDLE_LABELS, POOL_LABEL: name}
    doc["spec"]["selector"] = {"matchLabels": labels}
    doc["spec"]["template"]["metadata"]["labels"] = dict(labels)
    return doc


def _stamp(value: Any) -> float:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _call(event: Mapping[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    resource = str(ref.get("resource"))
    if ref.get("subresource"):
        resource += f"/{ref['subresource']}"
    return f"{event.get('verb')} {resource}"


def calls_between(events: Sequence[Mapping[str, Any]], start: float, end: float) -> Counter[str]:
    """The calls (``verb resource``) whose request reached the API server in [start, end)."""
    return Counter(
        _call(e) for e in events if start <= _stamp(e.get("requestReceivedTimestamp")) < end
    )


def _is_write(call: str) -> bool:
    return call.partition(" ")[0] in WRITES


def _is_pool_write(call: str) -> bool:
    """A write the pool reconcile or the webhooks make (not the Lease's renewals)."""
    return _is_write(call) and not call.endswith(" leases")


class Rounds:
    """The controller's reconcile rounds (count, seconds) from its metrics, if it has them."""

    def __init__(self, controller: ControllerProcess) -> None:
        self._controller = controller

    async def read(self) -> tuple[float, float] | None:
        samples = await asyncio.to_thread(self._controller.metrics)
        count = samples.get(f"{ROUND_METRIC}_count")
        total = samples.get(f"{ROUND_METRIC}_sum")
        if count is None or total is None:
            return None
        return count, total


async def _pool_statuses(api: k8s.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    objects: Any = k8s.CustomObjectsApi(api)
    listing = await objects.list_namespaced_custom_object(
        JIBRIPOOL_GROUP, JIBRIPOOL_VERSION, namespace, JIBRIPOOL_PLURAL
    )
    return {
        item["metadata"]["name"]: dict(item.get("status") or {})
        for item in listing.get("items") or ()
    }


async def _make_pods(
    bench: Bench, namespace: str, names: Sequence[str], per: int, subscribers: Sequence[str]
) -> None:
    """Deployments whose ReplicaSets own ``per`` pods each, created directly (see above)."""
    apps: Any = k8s.AppsV1Api(bench.admin)
    core: Any = k8s.CoreV1Api(bench.admin)
    for name in names:
        await apps.create_namespaced_deployment(
            namespace, _deployment(namespace, name, subscribers)
        )

    async def replica_sets() -> dict[str, Any] | None:
        listing = await apps.list_namespaced_replica_set(namespace)
        found: dict[str, Any] = {}
        for rs in listing.items:
            owners = rs.metadata.owner_references or ()
            owner = next((o.name for o in owners if o.kind == "Deployment"), None)
            if isinstance(owner, str) and owner in names:
                found[owner] = rs
        return found if len(found) == len(names) else None

    sets = await wait_until(
        replica_sets, timeout=60, interval=0.5, what="every Deployment's ReplicaSet"
    )
    await asyncio.to_thread(bench.plane.kill_component, "kube-controller-manager")
    try:
        replicas = {"spec": {"replicas": per}}
        for name in names:
            await apps.patch_namespaced_deployment(name, namespace, replicas)
            await apps.patch_namespaced_replica_set(sets[name].metadata.name, namespace, replicas)
        limit = asyncio.Semaphore(48)

        async def create(name: str, index: int) -> None:
            rs = sets[name]
            template_hash = rs.metadata.labels["pod-template-hash"]
            body = jibri_pod(
                namespace=namespace,
                name=f"{rs.metadata.name}-{index:04d}",
                subscribers=subscribers,
                status_period=3600.0,
                labels={**IDLE_LABELS, POOL_LABEL: name, "pod-template-hash": template_hash},
            )
            body["metadata"]["ownerReferences"] = [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": rs.metadata.name,
                    "uid": rs.metadata.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
            async with limit:
                response = await core.create_namespaced_pod(namespace, body, _preload_content=False)
                await read_raw(response, f"create pod {body['metadata']['name']}")

        await asyncio.gather(*(create(n, i) for n in names for i in range(per)))
    finally:
        await asyncio.to_thread(bench.plane.start_component, "kube-controller-manager")


async def run(bench: Bench, impl: Impl) -> FigureResult:
    scale = bench.scale
    pools, per, burst = scale.pool_count, scale.pool_pods, scale.pool_burst
    namespace = await bench.new_namespace("7")
    user = service_account_user(namespace)
    await install_crds(bench.admin, JIBRIPOOL_CRD)
    bench.audit_reads(namespace)
    controller = bench.controller(
        impl,
        namespace,
        "pools",
        # No sweep in the windows: figure 2 measures it, here it would hide the reconcile.
        env={"SWEEP_INTERVAL": "3600", "SHUTDOWN_DRAIN_SECONDS": "0"},
        jwt=False,
    )
    sampler: Sampler = bench.start(controller)
    await controller.wait_ready(timeout=60)
    rounds = Rounds(controller)
    names = [_deployment_name(i) for i in range(pools)]
    setup_started = time.time()
    await _make_pods(bench, namespace, names, per, [controller.webhook_base()])
    kcm_back = time.time()
    pods = await bench.wait_running(
        namespace, list(await bench.list_jibris(namespace)), timeout=180 + pools * per / 20
    )
    if len(pods) != pools * per:
        raise RuntimeError(f"{len(pods)} pods running, {pools * per} wanted")
    setup_s = time.time() - setup_started
    await asyncio.sleep(1.0 if scale.smoke else 3.0)  # the pod cache catches up

    # 1. Idle: no JibriPool yet.
    idle_start = time.time()
    await asyncio.sleep(scale.pool_idle_seconds)
    idle = (idle_start, time.time())

    # 2. Steady: every pool written once, then nothing changes.
    spec = {"minSpare": per, "maxSpare": per + 50}
    await apply(
        bench.admin,
        [
            jibri_pool(namespace=namespace, name=name, spec={"deploymentName": name, **spec})
            for name in names
        ],
    )

    async def settled(busy: int = 0) -> bool:
        statuses = await _pool_statuses(bench.admin, namespace)
        return len(statuses) == pools and all(
            s.get("spare") == per and s.get("busy") == busy and s.get("starting") == 0
            for s in statuses.values()
        )

    await wait_until(settled, timeout=120, interval=0.5, what="every JibriPool's status")
    await asyncio.sleep(scale.pool_settle_seconds)  # two periods (5 s): the last write lands
    steady_rounds_0 = await rounds.read()
    steady_start = time.time()
    await asyncio.sleep(scale.pool_steady_seconds)
    steady = (steady_start, time.time())
    steady_rounds_1 = await rounds.read()

    # 3. Burst: recordings start across the pools at once.
    each = max(1, burst // pools)
    targets = []
    for name in names:
        spares = [p for p in pods.values() if p.labels.get(POOL_LABEL) == name]
        targets += [p.ip for p in sorted(spares, key=lambda p: p.name)[:each]]
    burst_rounds_0 = await rounds.read()
    burst_started = time.time()
    await bench.jibri_calls(targets, START_SERVICE, START_BODY)
    sent = time.time()
    await wait_until(
        lambda: settled(busy=each),
        timeout=240,
        interval=0.5,
        what="every pool settled after the burst",
    )
    burst_ended = time.time()
    burst_rounds_1 = await rounds.read()

    await asyncio.sleep(1.0)
    await asyncio.to_thread(controller.stop)  # ends its watches, so the audit log has them
    await asyncio.sleep(1.0)
    events = await asyncio.to_thread(bench.plane.audit_events, username=user, namespace=namespace)
    kcm = await asyncio.to_thread(
        bench.plane.audit_events, username=CONTROLLER_MANAGER_USER, namespace=namespace
    )
    kcm_pod_writes = Counter(
        e.get("verb")
        for e in kcm
        if (e.get("objectRef") or {}).get("resource") == "pods"
        and kcm_back <= _stamp(e.get("requestReceivedTimestamp")) < burst_started
    )
    await _delete_pods(bench, namespace)

    result = FigureResult(7, impl.label)
    rows = result.rows

    def cpu(window: tuple[float, float]) -> tuple[float, float]:
        start, end = window
        return sampler.cpu_between(start, end), end - start

    idle_cpu, idle_s = cpu(idle)
    steady_cpu, steady_s = cpu(steady)
    burst_cpu, burst_s = cpu((burst_started, burst_ended))
    idle_rate = idle_cpu / idle_s
    steady_above = steady_cpu - idle_rate * steady_s
    rows += [
        Row("idle, no pool: controller CPU-seconds per minute", rounded(idle_rate * 60), "s"),
        Row(
            f"steady, {pools} pools: controller CPU-seconds per minute",
            rounded(steady_cpu / steady_s * 60),
            "s",
        ),
        Row(
            "steady: CPU-milliseconds per minute per pool, above idle",
            rounded(steady_above / steady_s * 60 / pools * 1000, 1),
            "ms",
        ),
    ]
    steady_counts = _delta(steady_rounds_0, steady_rounds_1)
    if steady_counts is not None and steady_counts[0] > 0:
        count, seconds = steady_counts
        rows += [
            Row(
                "steady: reconcile rounds per minute (metrics)",
                rounded(count / steady_s * 60, 1),
                "",
            ),
            Row(
                "steady: CPU-milliseconds per round, above idle",
                rounded(steady_above / count * 1000, 1),
                "ms",
            ),
            Row(
                "steady: CPU-milliseconds per round per pool, above idle",
                rounded(steady_above / count / pools * 1000, 2),
                "ms",
            ),
            Row("steady: round duration, mean (metrics)", rounded(seconds / count * 1000, 1), "ms"),
        ]
    else:
        result.notes.append("no pool_round_seconds metric: rounds not counted, CPU per minute only")
    idle_calls = calls_between(events, *idle)
    steady_calls = calls_between(events, *steady)
    burst_calls = calls_between(events, burst_started, burst_ended)
    per_minute = 60 / steady_s
    rows += [
        Row(
            "idle: API calls per minute",
            rounded(sum(idle_calls.values()) * 60 / idle_s, 1),
            "",
        ),
        Row(
            "steady: API calls per minute", rounded(sum(steady_calls.values()) * per_minute, 1), ""
        ),
        Row(
            "steady: API writes per minute but the Lease's",
            rounded(sum(v for k, v in steady_calls.items() if _is_pool_write(k)) * per_minute, 1),
            "",
            STEADY_WRITES_GOAL,
        ),
    ]
    rows += [
        Row(f"steady: {call} per minute", rounded(n * per_minute, 1), "")
        for call, n in sorted(steady_calls.items())
    ]
    burst_per_minute = 60 / burst_s
    rows += [
        Row(
            f"burst of {len(targets)}: first start to every pool settled",
            rounded(burst_s, 2),
            "s",
        ),
        Row("burst: controller CPU-seconds", rounded(burst_cpu), "s"),
        Row(
            "burst: CPU-seconds above idle per recording",
            rounded((burst_cpu - idle_rate * burst_s) / len(targets), 4),
            "s",
        ),
    ]
    burst_counts = _delta(burst_rounds_0, burst_rounds_1)
    if burst_counts is not None and burst_counts[0] > 0:
        count, seconds = burst_counts
        rows += [
            Row("burst: reconcile rounds (metrics)", count, ""),
            Row("burst: round duration, mean (metrics)", rounded(seconds / count * 1000, 1), "ms"),
        ]
    rows += [
        Row("burst: API calls", float(sum(burst_calls.values())), ""),
        Row(
            "burst: API calls per minute",
            rounded(sum(burst_calls.values()) * burst_per_minute, 1),
            "",
        ),
    ]
    rows += [Row(f"burst: {call}", float(n), "") for call, n in sorted(burst_calls.items())]
    if kcm_pod_writes:
        result.notes.append(
            "the ReplicaSet controller wrote pods after the set-up: "
            + ", ".join(f"{v} {k}" for k, v in sorted(kcm_pod_writes.items()))
        )
    description = (
        f"{pools} JibriPools x {per} pods; idle {idle_s:.0f} s, steady {steady_s:.0f} s, "
        f"burst of {len(targets)} recordings"
    )
    result.notes.append(description)
    result.details = {
        "mode": "smoke" if scale.smoke else "full",
        "description": description,
        "pools": pools,
        "pods_per_pool": per,
        "setup_s": round(setup_s, 1),
        "idle_s": round(idle_s, 1),
        "steady_s": round(steady_s, 1),
        "burst_s": round(burst_s, 2),
        "burst_send_s": round(sent - burst_started, 2),
        "idle_calls": dict(idle_calls),
        "steady_calls": dict(steady_calls),
        "burst_calls": dict(burst_calls),
        "setup_pod_writes_by_replicaset_controller": dict(kcm_pod_writes),
        "cpu_s": {"idle": idle_cpu, "steady": steady_cpu, "burst": burst_cpu},
        "rounds": {"steady": steady_counts, "burst": burst_counts},
        "jibri_port": JIBRI_PORT,
        "busy_labels": dict(BUSY_LABELS),
    }
    return result


def _delta(
    before: tuple[float, float] | None, after: tuple[float, float] | None
) -> tuple[float, float] | None:
    if before is None or after is None:
        return None
    return after[0] - before[0], after[1] - before[1]


async def _delete_pods(bench: Bench, namespace: str) -> None:
    """Free the fake kubelet of this figure's Jibris (the figures after it need their sockets)."""
    apps: Any = k8s.AppsV1Api(bench.admin)
    core: Any = k8s.CoreV1Api(bench.admin)
    await apps.delete_collection_namespaced_deployment(namespace)
    await core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
