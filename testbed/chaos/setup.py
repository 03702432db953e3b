"""Setting a chaos run up (the namespace, the keys, the fake kubelet, the fault proxy, three
replicas, the Jibri Deployments and their JibriPools) and waiting, after it, for the pods to
settle."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from kubernetes_asyncio import client as k8s

from testbed.chaos.plan import (
    AUDIENCE,
    BYSTANDER,
    GRACE_SECONDS,
    HAND,
    ISSUER,
    KID,
    NAMESPACE,
    POOL_PERIOD,
    POOLS,
    REPLICAS,
    Size,
)
from testbed.chaos.state import Replica, Run, has_labels, jibri_group
from testbed.cluster import (
    BUSY_LABELS,
    IDLE_LABELS,
    JIBRIPOOL_CRD,
    ControllerProcess,
    apply,
    controller_kubeconfig,
    create_namespace,
    install_crds,
    jibri_deployment,
    jibri_pool,
    make_webhook_keys,
    rbac_manifests,
)
from testbed.controlplane import ControlPlane
from testbed.faultproxy import FaultProxy, proxied_kubeconfig
from testbed.kube import new_api_client
from testbed.kubelet import FakeKubelet
from testbed.ports import listen_port
from testbed.simjibri import BusyStatus, JwtSigning


async def set_up(run: Run, plane: ControlPlane) -> None:
    size = run.size
    assert plane.workdir is not None
    run.admin = admin = await new_api_client(plane.admin_kubeconfig)
    await create_namespace(admin, NAMESPACE)
    await apply(admin, rbac_manifests(NAMESPACE))
    keys_dir = run.out / "keys"
    (keys_dir / "bad").mkdir(parents=True, exist_ok=True)
    keys = make_webhook_keys(keys_dir, kid=KID, issuer=ISSUER, audience=AUDIENCE)
    bad = make_webhook_keys(keys_dir / "bad", kid=KID, issuer=ISSUER, audience=AUDIENCE)
    run.signing = JwtSigning(keys.jibri.key_path, KID, ISSUER, AUDIENCE, 3600)
    run.bad_signing = JwtSigning(bad.jibri.key_path, KID, ISSUER, AUDIENCE, 3600)

    await install_crds(admin, JIBRIPOOL_CRD)
    run.kubelet = FakeKubelet(admin, NAMESPACE, ground_truth=run.on_fact)
    await run.kubelet.start()

    kubeconfig = controller_kubeconfig(plane, NAMESPACE)
    run.proxy = FaultProxy.for_kubeconfig(
        kubeconfig, pki_dir=plane.workdir / "pki", rng=run.rng("proxy"), workdir=run.out / "proxy"
    )
    await run.proxy.start()
    proxied = proxied_kubeconfig(kubeconfig, run.proxy.url, run.out / "controller.kubeconfig")
    lease_duration, renew, retry = size.lease
    for name in REPLICAS:
        process = ControllerProcess(
            name=name,
            kubeconfig=proxied,
            namespace=NAMESPACE,
            log_path=run.out / f"{name}.log",
            port=listen_port(),
            env={
                "SWEEP_INTERVAL": str(size.sweep_interval),
                "LEASE_DURATION": str(lease_duration),
                "LEASE_RENEW_DEADLINE": str(renew),
                "LEASE_RETRY_PERIOD": str(retry),
                "JWT_KEYS_DIR": str(keys.directory),
                "JWT_ISSUER": ISSUER,
                "JWT_AUDIENCE": AUDIENCE,
                "POOL_RECONCILE_PERIOD": str(POOL_PERIOD),
                "LOG_LEVEL": "info",
            },
        )
        run.replicas[name] = Replica(process.start())
    for replica in run.replicas.values():
        await replica.process.wait_ready(60)
    # A pod that is no Jibri, which forged webhooks name.
    core: Any = k8s.CoreV1Api(admin)
    await core.create_namespaced_pod(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": BYSTANDER, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        },
    )
    subscribers = [r.process.webhook_base() for r in run.replicas.values()]
    deployments = [
        chaos_deployment(HAND, size.spares, subscribers, size, keys.jibri),
        *(chaos_deployment(p.name, 1, subscribers, size, keys.jibri) for p in POOLS),
    ]
    pools = [
        jibri_pool(namespace=NAMESPACE, name=p.name, spec={"deploymentName": p.name, **p.spec})
        for p in POOLS
    ]
    await apply(admin, [*deployments, *pools])
    deadline = time.monotonic() + 60
    while len(run.spares()) < size.spares:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(run.spares())} of {size.spares} spares came up")
        await asyncio.sleep(0.3)


def chaos_deployment(
    group: str, replicas: int, subscribers: Sequence[str], size: Size, jwt: Any
) -> dict[str, Any]:
    """A Jibri Deployment of the run: deploy/jibri's preStop hook, a grace period above the
    longest recording, and the real Jibri's silence after a graceful shutdown (no EXPIRED).
    A pool's Deployment selects its own pods (``pool: <name>``)."""
    doc = jibri_deployment(
        namespace=NAMESPACE,
        replicas=replicas,
        subscribers=subscribers,
        name="jibri" if group == HAND else group,
        status_period=size.status_period,
        jwt=jwt,
        pre_stop=True,
        grace_seconds=GRACE_SECONDS,
    )
    if group != HAND:
        doc["spec"]["selector"]["matchLabels"]["pool"] = group
        doc["spec"]["template"]["metadata"]["labels"]["pool"] = group
        # A budget held through rollouts (docs/pools.md, The budget): no surge pod.
        doc["spec"]["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
        }
    env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
    env += [
        {"name": "SIM_JIBRI_REAL_BEHAVIOURS", "value": "no_expired_after_graceful_shutdown"},
        {"name": "SIM_JIBRI_EXIT_DELAY", "value": "1"},
    ]
    if group != HAND:
        # A new pod is Pending for a few seconds on a real node (scheduling, sandbox, container
        # start): a pool lowering its replicas at the budget's edge takes such a replacement
        # before it can be handed a recording. Instantly running pods would chain
        # replacements behind every detach of a burst.
        env.append({"name": "SIM_PENDING_SECONDS", "value": "3"})
    return doc


async def recover(run: Run) -> None:
    """Every fault is over; wait until the pods settle (or the recovery period ends)."""
    assert run.kubelet is not None
    deadline = time.monotonic() + run.size.recovery_seconds
    while time.monotonic() < deadline:
        running = run.kubelet.running()
        busy = [n for n in running if has_labels(run.labels.get(n, {}), BUSY_LABELS)]
        idle = [n for n in running if has_labels(run.labels.get(n, {}), IDLE_LABELS)]
        spares = [n for n in idle if jibri_group(run.labels.get(n, {})) == HAND]
        settled = not busy and len(spares) == run.size.spares
        with contextlib.suppress(KeyError):
            if settled and all(run.kubelet.jibri(n).busy_status is BusyStatus.IDLE for n in idle):
                await asyncio.sleep(2 * run.size.sweep_interval)  # and it stays so
                return
        await asyncio.sleep(1.0)
