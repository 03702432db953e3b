"""The pool demo: a JibriPool sizes the Jibri Deployment through a schedule window and a burst.

A local control plane and the fake kubelet; deploy/'s RBAC and deploy/crds/ in the namespace
``jibri-pool-demo``; one controller; a Deployment of simulated Jibris and a JibriPool with
``minSpare: 2``, ``maxTotal: 8`` and a one-minute schedule window that raises minSpare to 4.
In the window a burst of recordings starts (more than the budget allows spares for), and the
recordings end one by one. The run is sampled four times a second and drawn: the desired
spares (the pool's status), the Deployment's replicas, Ready spares, busy pods and the budget
line. It exits non-zero if a recording pod vanished while recording or busy + replicas ever
exceeded maxTotal by more than one.

    python -m testbed.pool_demo                      # about 2 minutes, out/pool-timeline.png
    python -m testbed.pool_demo --out /tmp/pool.png
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s

from testbed.cluster import (
    BUSY_LABELS,
    IDLE_LABELS,
    JIBRIPOOL_CRD,
    JIBRIPOOL_GROUP,
    JIBRIPOOL_PLURAL,
    JIBRIPOOL_VERSION,
    REPO,
    ControllerProcess,
    apply,
    controller_kubeconfig,
    create_namespace,
    install_crds,
    jibri_deployment,
    jibri_pool,
    make_webhook_keys,
    rbac_manifests,
    service_account_user,
    start_recording,
    stop_recording,
)
from testbed.controlplane import ControlPlane
from testbed.kube import new_api_client
from testbed.kubelet import run_in_thread

NAMESPACE = "jibri-pool-demo"
MAX_TOTAL = 8
MIN_SPARE, WINDOW_MIN_SPARE = 2, 4
BURST = 9
"""Recordings in the burst: more than maxTotal, so the budget binds and some are turned away."""
DEFAULT_OUT = REPO / "out" / "pool-timeline.png"
LEAD_SECONDS = 10
"""The least time from the pool's creation to the window: enough to settle at minSpare (one
reconcile a second, a spare Ready within a second or two). The window starts on a whole minute,
so the demo waits this long plus up to a minute more."""


@dataclass
class Sample:
    t: float
    desired: int
    replicas: int
    spare: int
    busy: int


@dataclass
class Run:
    started: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)
    recording: dict[str, str] = field(default_factory=dict)
    """Pod name -> pod IP of the recordings in progress."""
    lost: list[str] = field(default_factory=list)
    turned_away: int = 0
    window: tuple[float, float] = (0.0, 0.0)
    burst_at: float = 0.0

    def now(self) -> float:
        return time.monotonic() - self.started


def is_ready(pod: Any) -> bool:
    return pod.metadata.deletion_timestamp is None and any(
        c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or ())
    )


async def sample(api: k8s.ApiClient, run: Run, stop: asyncio.Event) -> None:
    core, apps, objects = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.CustomObjectsApi(api)
    while not stop.is_set():
        pods = (await core.list_namespaced_pod(NAMESPACE)).items
        live = [p for p in pods if p.metadata.deletion_timestamp is None]
        busy = {
            p.metadata.name
            for p in live
            if all((p.metadata.labels or {}).get(k) == v for k, v in BUSY_LABELS.items())
        }
        spare = [
            p
            for p in live
            if all((p.metadata.labels or {}).get(k) == v for k, v in IDLE_LABELS.items())
            and is_ready(p)
        ]
        names = {p.metadata.name for p in pods}
        for name in list(run.recording):
            if name not in names:
                run.lost.append(name)
                del run.recording[name]
        deployment = await apps.read_namespaced_deployment("jibri", NAMESPACE)
        pool: Any = await objects.get_namespaced_custom_object(
            JIBRIPOOL_GROUP, JIBRIPOOL_VERSION, NAMESPACE, JIBRIPOOL_PLURAL, "jibri"
        )
        status = pool.get("status") or {}
        run.samples.append(
            Sample(
                t=run.now(),
                desired=int(status.get("desiredSpare") or 0),
                replicas=int(deployment.spec.replicas or 0),
                spare=len(spare),
                busy=len(busy),
            )
        )
        await asyncio.sleep(0.25)


async def play(api: k8s.ApiClient, run: Run, rng: random.Random) -> None:
    """The burst: recordings start on Ready spares as fast as they appear; each lasts 10-30 s."""
    core = k8s.CoreV1Api(api)
    ends: list[tuple[float, str]] = []
    run.burst_at = run.now()
    for n in range(BURST):
        deadline = time.monotonic() + 8
        target = None
        while target is None and time.monotonic() < deadline:
            pods = (await core.list_namespaced_pod(NAMESPACE, label_selector="state=idle")).items
            free = [p for p in pods if is_ready(p) and p.metadata.name not in run.recording]
            target = free[0] if free else None
            if target is None:
                await asyncio.sleep(0.2)
        if target is None:
            run.turned_away += 1  # no Ready spare: the budget holds
            continue
        ip = target.status.pod_ip
        if await start_recording(ip, session_id=f"burst-{n}") == 200:
            run.recording[target.metadata.name] = ip
            ends.append((time.monotonic() + rng.uniform(10, 30), target.metadata.name))
        # Close together, yet each detach at the edge settles before the next one arrives.
        await asyncio.sleep(rng.uniform(0.8, 1.5))
    for end, name in sorted(ends):
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        if name in run.recording:
            await stop_recording(run.recording.pop(name))


async def install_crd(api: k8s.ApiClient) -> None:
    """deploy/crds/ (once per cluster), Established."""
    await install_crds(api, JIBRIPOOL_CRD)


async def set_up(
    api: k8s.ApiClient,
    plane: ControlPlane,
    workdir: Path,
    *,
    namespace: str,
    replicas: int,
    env: dict[str, str] | None = None,
) -> ControllerProcess:
    """A namespace with deploy/'s RBAC, the CRD, one ready controller, a Jibri Deployment."""
    await create_namespace(api, namespace)
    await apply(api, rbac_manifests(namespace))
    await install_crd(api)
    keys = make_webhook_keys(
        workdir, kid="pool-demo", issuer="jibri", audience="jibri-pod-controller"
    )
    controller = ControllerProcess(
        name="controller-a",
        kubeconfig=controller_kubeconfig(plane, namespace),
        namespace=namespace,
        log_path=workdir / "controller-a.log",
        env={
            "JWT_KEYS_DIR": str(keys.directory),
            "JWT_ISSUER": "jibri",
            "SWEEP_INTERVAL": "5",
            "POOL_RECONCILE_PERIOD": "1",
            **(env or {}),
        },
    ).start()
    await controller.wait_ready()
    print(f"controller ready as {service_account_user(namespace)} (deploy/rbac.yaml)")
    await apply(
        api,
        [
            jibri_deployment(
                namespace=namespace,
                replicas=replicas,
                subscribers=[controller.webhook_base()],
                jwt=keys.jibri,
            )
        ],
    )
    return controller


def next_window(now: datetime, lead: float) -> datetime:
    """The first whole minute at least ``lead`` seconds from ``now``."""
    start = (now + timedelta(seconds=lead)).replace(second=0, microsecond=0)
    return start if start >= now + timedelta(seconds=lead) else start + timedelta(minutes=1)


async def main_async(out: Path, seed: int, workdir: Path, plane: ControlPlane) -> int:
    rng = random.Random(seed)
    api = await new_api_client(plane.admin_kubeconfig)
    controller: ControllerProcess | None = None
    run = Run()
    stop = asyncio.Event()
    try:
        controller = await set_up(api, plane, workdir, namespace=NAMESPACE, replicas=1)
        window = next_window(datetime.now(UTC), lead=LEAD_SECONDS)
        spec = {
            "deploymentName": "jibri",
            "minSpare": MIN_SPARE,
            "maxSpare": 6,
            "maxTotal": MAX_TOTAL,
            "scaleDownDelaySeconds": 5,
            "schedule": [
                {
                    "start": f"{window.minute} {window.hour} * * *",
                    "durationMinutes": 1,
                    "minSpare": WINDOW_MIN_SPARE,
                    "timeZone": "UTC",
                }
            ],
        }
        await apply(api, [jibri_pool(namespace=NAMESPACE, name="jibri", spec=spec)])
        print(
            f"JibriPool jibri: minSpare {MIN_SPARE}, maxTotal {MAX_TOTAL}, a window at "
            f"{window:%H:%M} UTC for 1 min (minSpare {WINDOW_MIN_SPARE})"
        )
        sampler = asyncio.create_task(sample(api, run, stop))
        offset = (window - datetime.now(UTC)).total_seconds()
        run.window = (run.now() + offset, run.now() + offset + 60)
        await asyncio.sleep(max(0.0, offset + 15))
        print(f"t={run.now():.0f}s: a burst of {BURST} recordings")
        await play(api, run, rng)
        await asyncio.sleep(max(0.0, run.window[1] + 12 - run.now()))
        stop.set()
        await sampler
        writes = [
            e
            for e in plane.audit_events(
                username=service_account_user(NAMESPACE), namespace=NAMESPACE
            )
            if (e.get("objectRef") or {}).get("subresource") == "scale"
        ]
    finally:
        if controller is not None:
            controller.stop()
        await api.close()
    over = [s for s in run.samples if s.busy + s.replicas > MAX_TOTAL]
    worst = max((s.busy + s.replicas for s in run.samples), default=0)
    print(
        f"samples {len(run.samples)}; scale writes {len(writes)}; peak busy+replicas {worst} "
        f"(maxTotal {MAX_TOTAL}); samples above the budget {len(over)}; "
        f"recordings turned away {run.turned_away}; recordings lost {len(run.lost)}"
    )
    draw(out, run)
    print(f"timeline: {out}")
    return 1 if run.lost or worst > MAX_TOTAL + 1 else 0


def draw(out: Path, run: Run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t for s in run.samples]
    fig, ax = plt.subplots(figsize=(11, 5), dpi=110)
    ax.axvspan(*run.window, color="#fde9b8", label=f"schedule window (minSpare {WINDOW_MIN_SPARE})")
    ax.step(
        t, [s.desired for s in run.samples], where="post", label="desired spares (status)", lw=2
    )
    ax.step(
        t, [s.replicas for s in run.samples], where="post", label="Deployment replicas", ls="--"
    )
    ax.step(t, [s.spare for s in run.samples], where="post", label="Ready spares", alpha=0.7)
    ax.step(t, [s.busy for s in run.samples], where="post", label="busy (recording)", alpha=0.7)
    ax.step(
        t, [s.busy + s.replicas for s in run.samples], where="post", label="busy + replicas", lw=0.8
    )
    ax.axhline(MAX_TOTAL, color="red", ls=":", label=f"budget maxTotal {MAX_TOTAL}")
    ax.axvline(run.burst_at, color="grey", lw=0.8)
    ax.set_xlabel("seconds")
    ax.set_ylabel("pods")
    ax.set_title("JibriPool: minSpare 2, a schedule window, a burst under maxTotal 8")
    ax.legend(loc="upper left", fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="jibri-pool-demo-"))
    plane = ControlPlane.start(workdir / "plane")
    try:
        with run_in_thread(plane.admin_kubeconfig, NAMESPACE):
            return asyncio.run(main_async(args.out, args.seed, workdir, plane))
    finally:
        plane.stop()


if __name__ == "__main__":
    sys.exit(main())
