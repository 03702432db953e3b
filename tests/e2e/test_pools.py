"""JibriPools on the real control plane: the CRD from deploy/crds/, the controller with deploy/'s
Role, simulated Jibris; scale writes counted from the API server's audit log."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from testbed.cluster import (
    BUSY_LABELS,
    REPO,
    apply,
    jibri_deployment,
    wait_until,
)
from tests.e2e.conftest import E2E
from tests.e2e.helpers import has, is_ready, labels_of, list_pods

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

GROUP, VERSION, PLURAL = "jibri-pod-controller.io", "v1alpha1", "jibripools"
CRD = REPO / "deploy" / "crds" / "jibripools.yaml"
FAST = {"POOL_RECONCILE_PERIOD": "1"}


@pytest.fixture
async def crd(admin: k8s.ApiClient) -> None:
    """deploy/crds/ installed (once: the definition outlives the test's namespace), Established."""
    extensions: Any = k8s.ApiextensionsV1Api(admin)
    doc = yaml.safe_load(CRD.read_text())
    try:
        await extensions.create_custom_resource_definition(doc)
    except ApiException as exc:
        if exc.status != 409:
            raise

    async def established() -> bool:
        got = await extensions.read_custom_resource_definition(doc["metadata"]["name"])
        return any(
            c.type == "Established" and c.status == "True" for c in (got.status.conditions or ())
        )

    await wait_until(established, timeout=30, what="the JibriPool CRD established")


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
    await wait_status(pools, "rec", spare=1, starting=0, desiredSpare=1)
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
    pool = await get_pool(pools, "rec")
    assert pool["status"].get("belowSince") is None  # the clock is reset once lowered
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
    pool = await get_pool(pools, "rec")
    assert pool["status"]["bound"] == "schedule"
