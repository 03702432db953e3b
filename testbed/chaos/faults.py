"""The fault streams: the controllers (SIGKILL, SIGTERM, SIGSTOP of a replica, the Lease holder
more often) and the API path (the proxy's faults, kube-apiserver and etcd restarted); and the
monitor that notices a replica exiting by itself."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from testbed.chaos.plan import API_KINDS, CONTROLLER_KINDS, LEASE_NAME, NAMESPACE
from testbed.chaos.state import Replica, Run
from testbed.chaoscheck import Exit, Window
from testbed.faultproxy import Fault, FaultKind
from testbed.observing import wait_until


def leader_weighted(run: Run, rng: random.Random, leader: str | None) -> str:
    names = sorted(run.replicas)
    if leader in run.replicas and rng.random() < 0.6:
        return leader
    return rng.choice(names)


async def leader(run: Run) -> str | None:
    assert run.admin is not None
    try:
        lease = await k8s.CoordinationV1Api(run.admin).read_namespaced_lease(
            LEASE_NAME, NAMESPACE, _request_timeout=2
        )
    except (ApiException, aiohttp.ClientError, TimeoutError, OSError):
        return None
    holder: str | None = lease.spec.holder_identity if lease.spec else None
    return holder or None


async def wait_serving(run: Run, replica: Replica, timeout: float = 90.0) -> None:
    async def ready() -> bool:
        status, _ = await asyncio.to_thread(replica.process.get, "/readyz", 1.0)
        return status == 200

    try:
        await wait_until(ready, timeout=timeout, interval=0.3, what=f"{replica.process.name}")
    except TimeoutError:
        run.say(f"{replica.process.name} not ready after {timeout:.0f} s")


async def restart(run: Run, replica: Replica) -> None:
    replica.process.start()
    replica.expect_exit = ""
    await wait_serving(run, replica)
    since = replica.down_since or time.time()
    run.down.append(Window("replica-down", since, time.time(), replica.process.name))
    replica.down_since = None


async def monitor(run: Run) -> None:
    """Notice a replica that exits on its own: a violation (I7); it is started again."""
    while run.running:
        for replica in run.replicas.values():
            proc = replica.process.process
            if proc is None or replica.expect_exit or replica.down_since is not None:
                continue
            code = proc.poll()
            if code is not None:
                now = time.time()
                run.exits.append(Exit(now, replica.process.name, code, ""))
                run.say(f"{replica.process.name} exited by itself ({code}); starting it")
                replica.down_since = now
                await restart(run, replica)
        await asyncio.sleep(0.5)


async def controller_faults(run: Run) -> None:
    rng = run.rng("controller-faults")
    kinds = list(CONTROLLER_KINDS)  # each kind once first, in a random order
    rng.shuffle(kinds)
    lease_duration = run.size.lease[0]
    await asyncio.sleep(rng.uniform(3, 8))
    while run.running:
        kind = kinds.pop() if kinds else rng.choice(CONTROLLER_KINDS)
        name = leader_weighted(run, rng, await leader(run))
        replica = run.replicas[name]
        pause = rng.uniform(2, 6)
        start = time.time()
        proc = replica.process.process
        assert proc is not None
        if kind == "controller-sigstop":
            replica.stopped = True
            replica.down_since = start
            replica.process.signal(signal.SIGSTOP)
            await asyncio.sleep(lease_duration + rng.uniform(2, 5))
            replica.process.signal(signal.SIGCONT)
            replica.stopped = False
            run.down.append(Window("replica-down", start, time.time(), name))
            replica.down_since = None
        else:
            how = "sigkill" if kind == "controller-sigkill" else "sigterm"
            replica.expect_exit = how
            replica.down_since = start
            replica.process.signal(signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
            try:
                code: int | None = await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                replica.process.signal(signal.SIGKILL)
                code = await asyncio.to_thread(proc.wait, 10)
                code = None if how == "sigterm" else code
            run.exits.append(Exit(time.time(), name, code, how))
            await asyncio.sleep(pause)
            await restart(run, replica)
        run.fault(kind, start, time.time(), name)
        await asyncio.sleep(rng.uniform(*run.size.fault_gap) + 2)


async def api_faults(run: Run) -> None:
    rng = run.rng("api-faults")
    assert run.proxy is not None
    assert run.plane is not None
    kinds = list(API_KINDS)
    rng.shuffle(kinds)
    await asyncio.sleep(rng.uniform(2, 5))
    while run.running:
        kind = kinds.pop() if kinds else rng.choice(API_KINDS)
        hold = rng.uniform(*run.size.fault_seconds)
        start = time.time()
        if kind == "apiserver-restart":
            await asyncio.to_thread(run.plane.kill_component, "kube-apiserver")
            await asyncio.sleep(rng.uniform(0.5, 2))
            await asyncio.to_thread(run.plane.start_component, "kube-apiserver")
        elif kind == "etcd-restart":
            await asyncio.to_thread(run.plane.kill_component, "etcd")
            await asyncio.sleep(rng.uniform(0.5, 2))
            await asyncio.to_thread(run.plane.start_component, "etcd")
        elif kind == "proxy-outage":
            await run.proxy.begin_outage()
            await asyncio.sleep(hold)
            await run.proxy.end_outage()
        else:
            fault_kind = FaultKind(kind.removeprefix("proxy-"))
            whole = fault_kind in (FaultKind.BLACKHOLE, FaultKind.COMPRESS)
            probability = 1.0 if whole else rng.uniform(0.3, 1.0)
            run.proxy.set_fault(
                Fault(
                    fault_kind,
                    probability=probability,
                    latency=rng.uniform(0.2, 1.0),
                    retry_after=rng.randint(1, 2),
                )
            )
            await asyncio.sleep(hold)
            run.proxy.set_fault(None)
        run.fault(kind, start, time.time())
        await asyncio.sleep(rng.uniform(*run.size.fault_gap))
