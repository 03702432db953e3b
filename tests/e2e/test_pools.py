"""JibriPools on the real control plane: the CRD from deploy/crds/, the controller with deploy/'s
Role, simulated Jibris; scale writes counted from the API server's audit log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from testbed.cluster import (
    BUSY_LABELS,
    REPO,
    apply,
    jibri_deployment,
    start_recording,
    wait_until,
)
from tests.e2e.conftest import E2E
from tests.e2e.helpers import has, is_ready, labels_of, list_pods

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

GROUP, VERSION, PLURAL = "jibri-pod-controller.io", "v1alpha1", "jibripools"
CRD = REPO / "deploy" / "crds" / "jibripools.yaml"
FAST = {"POOL_RECONCILE_PERIOD": "1"}


@pytest.fixture
async def pools(e2e: E2E, crd: None) -> E2E:
    return e2e


def objects(api: k8s.ApiClient) -> Any:
    return k8s.CustomObjectsApi(api)


async def create_pool(e2e: E2E, name: str, spec: Mapping[str, Any]) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JibriPool",
        "metadata": {"name": name},
        "spec": dict(spec),
    }
    await objects(e2e.admin).create_namespaced_custom_object(
        GROUP, VERSION, e2e.namespace, PLURAL, body
    )


async def patch_pool(e2e: E2E, name: str, spec: Mapping[str, Any]) -> None:
    await objects(e2e.admin).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        e2e.namespace,
        PLURAL,
        name,
        {"spec": dict(spec)},
        _content_type="application/merge-patch+json",
    )


async def get_pool(e2e: E2E, name: str) -> dict[str, Any]:
    pool: dict[str, Any] = await objects(e2e.admin).get_namespaced_custom_object(
        GROUP, VERSION, e2e.namespace, PLURAL, name
    )
    return pool


async def replicas_of(e2e: E2E, deployment: str) -> int:
    got = await k8s.AppsV1Api(e2e.admin).read_namespaced_deployment(deployment, e2e.namespace)
    value: int = got.spec.replicas
    return value


async def wait_replicas(e2e: E2E, deployment: str, n: int, timeout: float = 30) -> None:
    async def reached() -> bool:
        return await replicas_of(e2e, deployment) == n

    await wait_until(reached, timeout=timeout, what=f"{deployment} replicas == {n}")


def scale_writes(e2e: E2E) -> list[dict[str, Any]]:
    """The controller's successful writes of a Deployment's scale, oldest first."""
    return [
        e
        for e in e2e.plane.audit_events(username=e2e.user, namespace=e2e.namespace)
        if (e.get("objectRef") or {}).get("resource") == "deployments"
        and (e.get("objectRef") or {}).get("subresource") == "scale"
        and 200 <= int((e.get("responseStatus") or {}).get("code", 0)) < 300
    ]


def pool_deployment(e2e: E2E, name: str, replicas: int, subscribers: list[str]) -> dict[str, Any]:
    """A Jibri Deployment whose selector is its own (``pool: <name>``), so two pools' pods
    never overlap."""
    doc = jibri_deployment(
        namespace=e2e.namespace,
        replicas=replicas,
        subscribers=subscribers,
        name=name,
        jwt=e2e.keys.jibri,
    )
    doc["spec"]["selector"]["matchLabels"]["pool"] = name
    doc["spec"]["template"]["metadata"]["labels"]["pool"] = name
    return doc


async def pool_pods(e2e: E2E, name: str) -> tuple[list[k8s.V1Pod], list[k8s.V1Pod]]:
    """(idle-labelled pods not terminating, busy pods not terminating) of the pool ``name``."""
    idle, busy = [], []
    for pod in await list_pods(e2e.admin, e2e.namespace):
        labels = labels_of(pod)
        if labels.get("pool") != name or pod.metadata.deletion_timestamp is not None:
            continue
        (busy if has(labels, BUSY_LABELS) else idle).append(pod)
    return idle, busy


async def wait_ready_spares(e2e: E2E, name: str, n: int, timeout: float = 60) -> list[k8s.V1Pod]:
    async def ready() -> list[k8s.V1Pod] | None:
        idle, _ = await pool_pods(e2e, name)
        ready = [p for p in idle if is_ready(p)]
        return ready if len(ready) == n and len(idle) == n else None

    return await wait_until(ready, timeout=timeout, what=f"{n} ready spares of {name}")


async def wait_status(e2e: E2E, name: str, timeout: float = 30, **wanted: Any) -> dict[str, Any]:
    async def reported() -> dict[str, Any] | None:
        pool = await get_pool(e2e, name)
        status = pool.get("status") or {}
        return pool if all(status.get(k) == v for k, v in wanted.items()) else None

    return await wait_until(reported, timeout=timeout, what=f"{name} status {wanted}")


def condition(pool: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for entry in (pool.get("status") or {}).get("conditions") or ():
        if entry["type"] == kind:
            return dict(entry)
    raise AssertionError(f"no {kind} condition in {pool.get('status')}")


# ---------------------------------------------------------------------------------------------


async def test_bad_pool_is_refused_with_a_clear_message(pools: E2E) -> None:
    cases = [
        (
            {"deploymentName": "jibri", "minSpare": 5, "maxSpare": 2},
            "minSpare must not exceed maxSpare",
        ),
        (
            {"deploymentName": "jibri", "minSpare": 3, "maxSpare": 9, "maxTotal": 2},
            "minSpare must not exceed maxTotal",
        ),
        ({"deploymentName": "jibri", "minSpare": -1, "maxSpare": 2}, "spec.minSpare"),
        ({"deploymentName": "Not_A_Name", "maxSpare": 2}, "spec.deploymentName"),
        (
            {
                "deploymentName": "jibri",
                "maxSpare": 2,
                "schedule": [{"start": "0 8 * * *", "durationMinutes": 60, "minSpare": 7}],
            },
            "a schedule window's minSpare must not exceed maxSpare",
        ),
        (
            {"deploymentName": "jibri", "maxSpare": 2, "schedule": [{"start": "bad"}]},
            "spec.schedule",
        ),
        (
            {"deploymentName": "jibri", "maxSpare": 2, "demand": {"shortfallProbability": 1.5}},
            "spec.demand.shortfallProbability",
        ),
    ]
    for spec, message in cases:
        with pytest.raises(ApiException) as refused:
            await create_pool(pools, "bad", spec)
        assert refused.value.status == 422, spec
        assert message in str(refused.value.body), (spec, refused.value.body)
    listed = await objects(pools.admin).list_namespaced_custom_object(
        GROUP, VERSION, pools.namespace, PLURAL
    )
    assert listed["items"] == []


async def test_pool_raises_and_lowers_with_one_scale_write_per_change(pools: E2E) -> None:
    controller = await pools.ready(**FAST)
    await apply(pools.admin, [pool_deployment(pools, "rec", 1, [controller.webhook_base()])])
    await wait_ready_spares(pools, "rec", 1)
    await create_pool(
        pools,
        "rec",
        {"deploymentName": "rec", "minSpare": 3, "maxSpare": 5, "scaleDownDelaySeconds": 0},
    )
    await wait_replicas(pools, "rec", 3)
    await wait_ready_spares(pools, "rec", 3)

    pool = await wait_status(pools, "rec", spare=3, desiredSpare=3)
    assert pool["status"]["replicas"] == 3
    assert pool["status"]["bound"] == "minSpare"
    assert condition(pool, "Ready")["status"] == "True"
    assert condition(pool, "SpareExhausted")["status"] == "False"

    await patch_pool(pools, "rec", {"minSpare": 1})
    await wait_replicas(pools, "rec", 1)
    await wait_ready_spares(pools, "rec", 1)
    await wait_status(pools, "rec", spare=1, starting=0, leaving=0, desiredSpare=1)
    writes = scale_writes(pools)
    assert len(writes) == 2, [e["verb"] for e in writes]
    # Several reconcile periods with nothing changing: no further write of any kind.
    before = len(pools.plane.audit_events(username=pools.user, namespace=pools.namespace))
    await asyncio.sleep(4)
    after = pools.plane.audit_events(username=pools.user, namespace=pools.namespace)
    assert len(scale_writes(pools)) == 2
    assert [
        e["objectRef"]["resource"] for e in after[before:] if e["objectRef"]["resource"] != "leases"
    ] == []

    events = await k8s.CoreV1Api(pools.admin).list_namespaced_event(
        pools.namespace, field_selector="involvedObject.kind=JibriPool"
    )
    reasons = sorted(e.reason for e in events.items)
    assert reasons == ["ScaledDown", "ScaledUp"], reasons


async def test_hysteresis_delays_a_scale_down(pools: E2E) -> None:
    controller = await pools.ready(**FAST)
    await apply(pools.admin, [pool_deployment(pools, "rec", 3, [controller.webhook_base()])])
    await wait_ready_spares(pools, "rec", 3)
    await create_pool(
        pools,
        "rec",
        {"deploymentName": "rec", "minSpare": 1, "maxSpare": 5, "scaleDownDelaySeconds": 6},
    )

    async def held() -> dict[str, Any] | None:
        pool = await get_pool(pools, "rec")
        return pool if (pool.get("status") or {}).get("belowSince") else None

    pool = await wait_until(held, timeout=20, what="a held scale-down")
    held_since = datetime.fromisoformat(pool["status"]["belowSince"])
    assert await replicas_of(pools, "rec") == 3
    assert "1 after" in condition(pool, "Ready")["message"]
    await wait_replicas(pools, "rec", 1, timeout=30)
    # The clock is reset once lowered.
    pool = await wait_status(pools, "rec", replicas=1, desiredSpare=1, belowSince=None)
    assert len(scale_writes(pools)) == 1
    # Lowered no earlier than the delay after the hold began (second-resolution stamps).
    scaled = datetime.fromisoformat(pool["status"]["lastScaleTime"])
    assert (scaled - held_since).total_seconds() >= 6 - 1


async def test_schedule_window_raises_min_spare(pools: E2E) -> None:
    controller = await pools.ready(**FAST)
    await apply(pools.admin, [pool_deployment(pools, "rec", 1, [controller.webhook_base()])])
    await wait_ready_spares(pools, "rec", 1)
    window = {
        "start": "* * * * *",
        "durationMinutes": 60,
        "minSpare": 4,
        "timeZone": "Europe/Berlin",
    }
    await create_pool(
        pools, "rec", {"deploymentName": "rec", "minSpare": 1, "maxSpare": 6, "schedule": [window]}
    )
    await wait_replicas(pools, "rec", 4)
    await wait_status(pools, "rec", bound="schedule", desiredSpare=4, replicas=4)


def stamp(event: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["stageTimestamp"]).replace("Z", "+00:00"))


async def test_budget_holds_under_a_burst(pools: E2E) -> None:
    """Recordings start one after another until the budget is spent. Each detach at the
    budget's edge lets the ReplicaSet create a replacement before replicas can be lowered:
    busy + replicas exceeds maxTotal by one, for the time between the detach and the scale
    write (measured from the audit log's timestamps), and never by more."""
    controller = await pools.ready(**FAST)
    await apply(pools.admin, [pool_deployment(pools, "rec", 2, [controller.webhook_base()])])
    await wait_ready_spares(pools, "rec", 2)
    await create_pool(
        pools,
        "rec",
        {"deploymentName": "rec", "minSpare": 2, "maxSpare": 6, "maxTotal": 4},
    )
    await wait_status(pools, "rec", spare=2, desiredSpare=2)
    peak = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            idle, busy = await pool_pods(pools, "rec")
            peak = max(peak, len(idle) + len(busy))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    started: list[str] = []
    asked: list[datetime] = []
    try:
        for n in range(1, 5):
            ready = await wait_until(
                lambda: ready_spare(pools, exclude=started),
                timeout=30,
                what="a ready spare to record on",
            )
            asked.append(datetime.now(UTC))
            assert await start_recording(ready.status.pod_ip, session_id=f"rec-{n}") == 200
            started.append(ready.metadata.name)

            async def detached(count: int = n) -> bool:
                _, busy = await pool_pods(pools, "rec")
                return len(busy) == count

            await wait_until(detached, timeout=20, what=f"{n} busy")
            # Recordings arrive one after another: each finds the pool settled.
            await wait_status(pools, "rec", busy=n, replicas=min(2, 4 - n))
        await wait_replicas(pools, "rec", 0)
        pool = await wait_status(
            pools, "rec", busy=4, spare=0, replicas=0, desiredSpare=0, starting=0
        )
    finally:
        sampling = False
        await sampler
    assert pool["status"]["bound"] == "budget"
    assert condition(pool, "BudgetExhausted")["status"] == "True"
    assert condition(pool, "SpareExhausted")["status"] == "True"
    _, busy = await pool_pods(pools, "rec")
    assert sorted(p.metadata.name for p in busy) == sorted(started)  # no recording lost

    writes = [
        e
        for e in pools.plane.audit_events(username=pools.user, namespace=pools.namespace)
        if 200 <= int((e.get("responseStatus") or {}).get("code", 0)) < 300
    ]
    detaches = [
        e
        for e in writes
        if e["objectRef"]["resource"] == "pods"
        and e["verb"] == "patch"
        and e["objectRef"]["name"] in started
    ]
    scales = scale_writes(pools)
    assert [e["objectRef"]["name"] for e in scales] == ["rec", "rec"]  # 2 -> 1, 1 -> 0
    # busy + replicas > maxTotal from the 3rd and 4th detach until the next scale write.
    over = [
        (stamp(scale) - stamp(detach)).total_seconds()
        for detach, scale in zip(detaches[2:], scales, strict=True)
    ]
    assert all(s > 0 for s in over), over
    assert peak <= 4 + 1, peak
    # A recording's replacement is asked for when the ReplicaSet creates a pod for it.
    creates = [
        stamp(e)
        for e in pools.plane.audit_events(namespace=pools.namespace)
        if e["objectRef"].get("resource") == "pods" and e["verb"] == "create"
    ]
    replaced = [min(t for t in creates if t > at) - at for at in asked]
    print(
        "\nrecording start -> replacement pod created: "
        + ", ".join(f"{d.total_seconds() * 1000:.0f} ms" for d in replaced)
    )
    shown = ", ".join(f"{s * 1000:.0f} ms" for s in over)
    print(f"\nbudget overshoot (busy + replicas > maxTotal): {shown}; peak pods {peak} (max 4)")


async def ready_spare(e2e: E2E, *, exclude: list[str]) -> k8s.V1Pod | None:
    idle, _ = await pool_pods(e2e, "rec")
    for pod in idle:
        if is_ready(pod) and pod.metadata.name not in exclude:
            return pod
    return None


async def test_silent_busy_spare_is_detached_not_killed_by_a_scale_down(pools: E2E) -> None:
    """A spare turns BUSY with no webhook (and no sweep soon) just before its pool scales down:
    the pool's probe finds it, detaches it, and only then lowers the replicas."""
    await pools.ready(SWEEP_INTERVAL="3600", **FAST)
    await apply(pools.admin, [pool_deployment(pools, "rec", 3, [])])  # no webhooks at all
    spares = await wait_ready_spares(pools, "rec", 3)
    await create_pool(
        pools,
        "rec",
        {"deploymentName": "rec", "minSpare": 3, "maxSpare": 5, "scaleDownDelaySeconds": 0},
    )
    await wait_status(pools, "rec", spare=3, desiredSpare=3)
    silent = spares[0]
    assert await start_recording(silent.status.pod_ip) == 200
    await patch_pool(pools, "rec", {"minSpare": 0})
    await wait_replicas(pools, "rec", 0)
    await wait_status(pools, "rec", busy=1, spare=0, starting=0, replicas=0)

    idle, busy = await pool_pods(pools, "rec")
    assert idle == []
    assert [p.metadata.uid for p in busy] == [silent.metadata.uid]
    assert (busy[0].metadata.annotations or {})["jibri-pod-controller/detached-from"] == "rec"
    ours = pools.plane.audit_events(username=pools.user, namespace=pools.namespace)
    detach = next(
        i
        for i, e in enumerate(ours)
        if e["objectRef"].get("name") == silent.metadata.name
        and e["verb"] == "patch"
        and e["objectRef"].get("subresource") is None
    )
    first_scale_down = next(
        i for i, e in enumerate(ours) if e["objectRef"].get("subresource") == "scale"
    )
    assert detach < first_scale_down
    # Nobody (the ReplicaSet included) ever deleted the recording pod.
    everyone = pools.plane.audit_events(namespace=pools.namespace)
    assert not [
        e
        for e in everyone
        if e["verb"] == "delete" and e["objectRef"].get("name") == silent.metadata.name
    ]


async def test_two_pools_do_not_disturb_each_other(pools: E2E) -> None:
    controller = await pools.ready(**FAST)
    hooks = [controller.webhook_base()]
    await apply(
        pools.admin,
        [pool_deployment(pools, "rec", 1, hooks), pool_deployment(pools, "str", 1, hooks)],
    )
    await wait_ready_spares(pools, "rec", 1)
    await wait_ready_spares(pools, "str", 1)
    await create_pool(pools, "recorders", {"deploymentName": "rec", "minSpare": 2, "maxSpare": 4})
    await create_pool(pools, "streamers", {"deploymentName": "str", "minSpare": 1, "maxSpare": 4})
    await wait_replicas(pools, "rec", 2)
    [spare] = await wait_ready_spares(pools, "str", 1)
    assert await start_recording(spare.status.pod_ip) == 200
    await wait_status(pools, "streamers", busy=1, spare=1, starting=0)
    recorders = await wait_status(pools, "recorders", busy=0, spare=2)
    assert recorders["status"]["replicas"] == 2
    assert await replicas_of(pools, "str") == 1
    assert [e["objectRef"]["name"] for e in scale_writes(pools)] == ["rec"]


async def test_a_pool_that_cannot_be_reconciled_writes_nothing(pools: E2E) -> None:
    """A missing Deployment, a selector that still matches the busy labels, an HPA on the same
    Deployment: each is a condition and an Event, never a write."""
    await pools.ready(**FAST)
    loose = pool_deployment(pools, "loose", 1, [])
    loose["spec"]["selector"]["matchLabels"] = {"app": "jibri", "pool": "loose"}
    await apply(pools.admin, [loose, pool_deployment(pools, "hpa", 1, [])])
    autoscaling: Any = k8s.AutoscalingV2Api(pools.admin)
    await autoscaling.create_namespaced_horizontal_pod_autoscaler(
        pools.namespace,
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "hpa"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hpa"},
                "minReplicas": 1,
                "maxReplicas": 3,
            },
        },
    )
    cases = {
        "missing": ("nothere", "DeploymentMissing"),
        "loose": ("loose", "SelectorMatchesBusyLabels"),
        "hpa": ("hpa", "ReplicasOwnedByHPA"),
    }
    for name, (deployment, _) in cases.items():
        await create_pool(pools, name, {"deploymentName": deployment, "minSpare": 3, "maxSpare": 5})
    for name, (_, reason) in cases.items():

        async def reported(pool_name: str = name, why: str = reason) -> bool:
            pool = await get_pool(pools, pool_name)
            try:
                ready = condition(pool, "Ready")
            except AssertionError:
                return False
            return ready["status"] == "False" and ready["reason"] == why

        await wait_until(reported, timeout=20, what=f"{name}: Ready False {reason}")
    await asyncio.sleep(2)  # a few more rounds
    assert scale_writes(pools) == []
    assert await replicas_of(pools, "loose") == 1
    events = await k8s.CoreV1Api(pools.admin).list_namespaced_event(
        pools.namespace, field_selector="involvedObject.kind=JibriPool"
    )
    assert sorted((e.involved_object.name, e.reason) for e in events.items) == sorted(
        (name, reason) for name, (_, reason) in cases.items()
    )


async def test_demand_policy_sizes_the_pool_from_recent_starts(pools: E2E) -> None:
    """Recordings start; the pool's demand policy estimates their rate from its own detaches
    and asks for the spares that cover the lead time, shown in the status."""
    controller = await pools.ready(**FAST)
    await apply(pools.admin, [pool_deployment(pools, "rec", 3, [controller.webhook_base()])])
    spares = await wait_ready_spares(pools, "rec", 3)
    demand = {"shortfallProbability": 0.01, "windowSeconds": 600, "startupSeconds": 5}
    await create_pool(
        pools,
        "rec",
        {"deploymentName": "rec", "minSpare": 1, "maxSpare": 8, "demand": demand},
    )
    await wait_status(pools, "rec", bound="minSpare")
    for n, spare in enumerate(spares):
        assert await start_recording(spare.status.pod_ip, session_id=f"d-{n}") == 200

    async def sized() -> dict[str, Any] | None:
        pool = await get_pool(pools, "rec")
        status = pool.get("status") or {}
        return pool if status.get("busy") == 3 and status.get("bound") == "demand" else None

    pool = await wait_until(sized, timeout=30, what="the demand policy deciding")
    status = pool["status"]
    assert status["startRate"] > 0
    assert status["leadTimeSeconds"] == 5
    assert len(status["recentStarts"]) == 3
    assert status["desiredSpare"] > 1
    await wait_replicas(pools, "rec", status["desiredSpare"])


async def test_kubectl_get_jpool_shows_the_columns(pools: E2E) -> None:
    """The printer columns, as `kubectl get jpool` asks for them (a server-side Table)."""
    await create_pool(
        pools, "rec", {"deploymentName": "rec", "minSpare": 1, "maxSpare": 3, "maxTotal": 9}
    )
    response = await pools.admin.call_api(
        f"/apis/{GROUP}/{VERSION}/namespaces/{pools.namespace}/{PLURAL}",
        "GET",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        auth_settings=["BearerToken"],
        _preload_content=False,
    )
    table = json.loads(await response.read())
    names = [c["name"] for c in table["columnDefinitions"] if c.get("priority", 0) == 0]
    assert names == [
        "Name",
        "Deployment",
        "Spare",
        "Busy",
        "Desired",
        "Forecast",
        "Max-Total",
        "Age",
    ]
    wide = [c["name"] for c in table["columnDefinitions"] if c.get("priority", 0) == 1]
    assert wide == [
        "Bound",
        "Leaving",
        "Scale-Down-Blocked",
        "Mode",
        "Basis",
        "Expected",
        "History-Days",
    ]
    [row] = table["rows"]
    assert row["cells"][:2] == ["rec", "rec"]
    assert row["cells"][6] == 9
