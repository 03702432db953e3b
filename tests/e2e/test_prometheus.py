"""The monitoring an operator installs, exercised by a real Prometheus server.

Prometheus (Debian's package) scrapes both controller replicas every second through a plain
static scrape configuration that adds a `namespace` label (what the ServiceMonitor and the usual
pod scrape configurations add), and loads deploy/prometheus/alerts.yaml with every `for`
shortened. During a scenario (a recording, a refused webhook, an unreachable Jibri, a lost and
restored RoleBinding, a failover) every query of the Grafana dashboard must return data, and
once every replica is stopped the no-leader alert must fire. `promtool check metrics` checks the
live /metrics of a replica.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as k8s

from testbed.cluster import (
    REPO,
    ControllerProcess,
    apply,
    jibri_pod,
    rbac_manifests,
    start_recording,
    stop_recording,
    wait_until,
)
from testbed.ports import listen_port
from testbed.prometheus import PrometheusServer, promtool, shortened_rules
from tests.e2e.conftest import E2E
from tests.e2e.helpers import (
    get_pod,
    is_busy,
    owned_by_replicaset,
    post_webhook,
    status_body,
    wait_spares,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DASHBOARD = REPO / "dashboards" / "jibri-pod-controller.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
RATE_INTERVAL = "10s"  # Grafana's $__rate_interval for a 1 s scrape interval, with margin
LEADER_COUNTERS = (
    "jibri_pod_controller_pool_scale_writes_total",
    "jibri_pod_controller_probe_failures_total",
    "jibri_pod_controller_api_errors_total",
)
"""Counters that the scenario makes the leader create (a series appears at its first count)."""


def dashboard_queries(namespace: str) -> dict[str, str]:
    """Every target expression of the dashboard, with its variables filled in, by panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries: dict[str, str] = {}

    def visit(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            visit(panel.get("panels") or [])
            for target in panel.get("targets") or []:
                expr = target["expr"]
                expr = expr.replace("$__rate_interval", RATE_INTERVAL)
                expr = expr.replace("$namespace", namespace)  # a DNS label: no regex syntax
                queries[f"{panel['title']} [{target.get('refId', '?')}]"] = expr

    visit(dashboard["panels"])
    return queries


def namespace_variable_metric() -> str:
    """The metric of the dashboard's `namespace` variable: label_values(<metric>, namespace)."""
    dashboard = json.loads(DASHBOARD.read_text())
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "namespace")
    match = re.fullmatch(r"label_values\((\w+),\s*namespace\)", variable["query"]["query"])
    assert match, variable["query"]
    return match.group(1)


async def leader_of(*controllers: ControllerProcess) -> ControllerProcess:
    async def one() -> ControllerProcess | None:
        leading = [c for c in controllers if c.metric("jibri_pod_controller_leader") == 1]
        return leading[0] if len(leading) == 1 else None

    return await wait_until(one, timeout=30, what="exactly one leader")


async def test_prometheus_scrapes_a_failover_and_the_dashboard_and_alerts_work(
    e2e: E2E, crd: None, tmp_path: Path
) -> None:
    a = await e2e.ready("controller-a")
    b = await e2e.ready("controller-b")
    rules = tmp_path / "alerts.yaml"
    rules.write_text(yaml.safe_dump(shortened_rules(yaml.safe_load(ALERTS.read_text()), "1s")))
    checked = promtool("check", "rules", str(rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    prometheus = PrometheusServer(
        workdir=tmp_path / "prometheus",
        port=listen_port(),
        targets=[f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"],
        labels={"namespace": e2e.namespace},
        rule_files=[rules],
    ).start()
    try:
        await scenario(e2e, prometheus, a, b)
    except BaseException:
        print(f"\n--- prometheus (last lines) ---\n{prometheus.tail()}")
        raise
    finally:
        prometheus.stop()


async def scenario(
    e2e: E2E, prometheus: PrometheusServer, a: ControllerProcess, b: ControllerProcess
) -> None:
    started = time.time()

    async def both_up() -> bool:
        health = prometheus.targets_up()
        return len(health) == 2 and set(health.values()) == {"up"}

    await wait_until(both_up, timeout=20, what="both replicas scraped")

    # A recording, detached when it starts and deleted when it ends.
    pods = await e2e.deploy_jibris([a, b], replicas=2)
    name, ip = pods[0].metadata.name, pods[0].status.pod_ip
    # A JibriPool over that Deployment (the dashboard's pool row): it raises the spares to 3,
    # and sizes them from demand with a lead time measured from its own pods, its forecast
    # recommending (the forecast panels).
    await k8s.CustomObjectsApi(e2e.admin).create_namespaced_custom_object(
        "jibri-pod-controller.io",
        "v1alpha1",
        e2e.namespace,
        "jibripools",
        {
            "apiVersion": "jibri-pod-controller.io/v1alpha1",
            "kind": "JibriPool",
            "metadata": {"name": "recorders"},
            "spec": {
                "deploymentName": "jibri",
                "minSpare": 3,
                "maxSpare": 5,
                "maxTotal": 10,
                "demand": {"shortfallProbability": 0.01, "forecast": {"timeZone": "UTC"}},
            },
        },
    )
    # And one that cannot be reconciled (its Deployment does not exist): a pool problem.
    await k8s.CustomObjectsApi(e2e.admin).create_namespaced_custom_object(
        "jibri-pod-controller.io",
        "v1alpha1",
        e2e.namespace,
        "jibripools",
        {
            "apiVersion": "jibri-pod-controller.io/v1alpha1",
            "kind": "JibriPool",
            "metadata": {"name": "streamers"},
            "spec": {"deploymentName": "streamers", "minSpare": 1, "maxSpare": 2},
        },
    )
    await wait_spares(e2e.admin, e2e.namespace, 3)
    assert await start_recording(ip) == 200

    async def detached() -> bool:
        pod = await get_pod(e2e.admin, e2e.namespace, name)
        return pod is not None and is_busy(pod) and not owned_by_replicaset(pod)

    await wait_until(detached, timeout=20, what="detached")
    assert await stop_recording(ip) == 200

    async def gone() -> bool:
        return await get_pod(e2e.admin, e2e.namespace, name) is None

    await wait_until(gone, timeout=20, what="deleted")

    # A webhook without a token is refused; a busy-labelled pod whose Jibri does not answer
    # is a probe failure.
    ip = pods[1].status.pod_ip
    status, _ = await post_webhook(
        a, pod=pods[1].metadata.name, source_ip=ip, body=status_body(pods[1].metadata.name, "BUSY")
    )
    assert status == 401
    silent = jibri_pod(
        namespace=e2e.namespace,
        name="jibri-silent",
        subscribers=[],
        labels={"app": "jibri", "state": "busy"},
    )
    silent["spec"]["containers"][0]["env"] = []  # no simulated Jibri behind the address
    await k8s.CoreV1Api(e2e.admin).create_namespaced_pod(e2e.namespace, silent)
    leader = await leader_of(a, b)
    await wait_until(
        lambda: _counted(leader, "jibri_pod_controller_probe_failures_total"),
        timeout=20,
        what="a probe failure",
    )

    # The RoleBinding is lost for a while: API calls are refused, then work again.
    binding = next(d for d in rbac_manifests(e2e.namespace) if d["kind"] == "RoleBinding")
    rbac = k8s.RbacAuthorizationV1Api(e2e.admin)
    await rbac.delete_namespaced_role_binding(binding["metadata"]["name"], e2e.namespace)
    await wait_until(
        lambda: _counted(leader, "jibri_pod_controller_api_errors_total"),
        timeout=20,
        what="a refused API call",
    )
    await apply(e2e.admin, [binding])

    # The counters above came into being on the leader during the scenario, and their series end
    # with it: wait until Prometheus has two samples of each within the rate interval (what
    # rate() needs), so that a loaded machine's late scrapes cannot leave their panels empty.
    for metric in LEADER_COUNTERS:
        await wait_until(
            lambda metric=metric: _scraped_twice(prometheus, metric, e2e.namespace),
            timeout=20,
            what=f"two scrapes of {metric}",
        )

    # Failover: the leader stops (SIGTERM releases the Lease) and the other replica leads.
    standby = b if leader is a else a
    leader.signal(signal.SIGTERM)
    assert leader.wait_exit(20) == 0
    assert await leader_of(standby) is standby
    await asyncio.sleep(3)  # a few scrapes of the new leader

    queries = dashboard_queries(e2e.namespace)
    assert len(queries) >= 20
    empty = {
        title: expr
        for title, expr in queries.items()
        if not prometheus.query_range(expr, start=started, end=time.time())
    }
    assert not empty, f"dashboard queries without data: {json.dumps(empty, indent=1)}"
    # Every label a query groups by is on the series of a plain scrape (no `pod`, say).
    for title, expr in queries.items():
        grouped = {
            label.strip()
            for clause in re.findall(r"\bby \(([^)]*)\)", expr)
            for label in clause.split(",")
        } - {"le"}  # histogram_quantile consumes the bucket label
        series = prometheus.query_range(expr, start=started, end=time.time())
        missing = {label for label in grouped if not any(s["metric"].get(label) for s in series)}
        assert not missing, f"{title}: grouped by {sorted(missing)}, which no series has: {expr}"
    values = prometheus.api("label/namespace/values", **{"match[]": namespace_variable_metric()})
    assert values == [e2e.namespace]

    # The live /metrics of a replica passes promtool's lint.
    status, text = standby.get("/metrics")
    assert status == 200
    linted = promtool("check", "metrics", stdin=text)
    assert linted.returncode == 0, linted.stdout + linted.stderr

    # Every replica stopped: nobody leads, and the no-leader alert fires for this namespace.
    standby.signal(signal.SIGTERM)
    assert standby.wait_exit(20) == 0

    async def no_leader_firing() -> list[dict[str, Any]]:
        return [
            alert
            for alert in prometheus.alerts()
            if alert["labels"].get("alertname") == "JibriPodControllerNoLeader"
            and alert["state"] == "firing"
        ]

    firing = await wait_until(no_leader_firing, timeout=30, what="JibriPodControllerNoLeader")
    assert [alert["labels"].get("namespace") for alert in firing] == [e2e.namespace]


async def _counted(controller: ControllerProcess, name: str) -> bool:
    return controller.metric(name) > 0


async def _scraped_twice(prometheus: PrometheusServer, metric: str, namespace: str) -> bool:
    counts = prometheus.query(
        f'count_over_time({metric}{{namespace="{namespace}"}}[{RATE_INTERVAL}])'
    )
    return any(float(series["value"][1]) >= 2 for series in counts)
