"""The attacker (forged webhooks at a steady rate) and the prober (an unauthenticated webhook to
each replica, once a second)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from testbed.chaos.plan import BYSTANDER, FORGERIES
from testbed.chaos.state import Replica, Run
from testbed.chaoscheck import Forged, Probe
from testbed.cluster import ControllerProcess
from testbed.kubelet import allocate_ip
from testbed.simjibri import build_token


async def attacker(run: Run) -> None:
    rng = run.rng("attacker")
    assert run.kubelet is not None
    assert run.signing is not None
    assert run.bad_signing is not None
    stranger = allocate_ip()
    while run.running:
        await asyncio.sleep(run.size.forge_every)
        up = [r for r in run.replicas.values() if r.down_since is None]
        running = run.kubelet.running()
        jibris = sorted(n for n in running if n != BYSTANDER)
        if not up or len(jibris) < 2:
            continue
        kind = rng.choice(FORGERIES)
        target, other = rng.sample(jibris, 2)
        token = build_token(run.signing, time.time())
        status = "EXPIRED"
        source = running[other]
        if kind == "wrong-source":
            source = stranger
        elif kind == "wrong-token":
            token, source = build_token(run.bad_signing, time.time()), running[target]
        elif kind == "non-jibri":
            if BYSTANDER not in running:
                continue
            target, source = BYSTANDER, running[BYSTANDER]
        elif kind == "busy-for-spare":
            status = "BUSY"
        replica = rng.choice(up)
        code = await post(
            replica.process,
            pod=target,
            source=source,
            body={
                "jibriId": target,
                "status": {
                    "busyStatus": status,
                    "health": {"healthStatus": "HEALTHY", "details": {}},
                },
            },
            token=token,
        )
        run.forged.append(Forged(time.time(), kind, target, code))


async def prober(run: Run) -> None:
    """Each replica, once a second: an unauthenticated webhook (no API call behind it)."""
    await asyncio.gather(*(probe(run, replica) for replica in run.replicas.values()))


async def probe(run: Run, replica: Replica) -> None:
    while run.running:
        await asyncio.sleep(1.0)
        if replica.down_since is not None or replica.stopped:
            continue
        code = await post(replica.process, pod="probe", source="127.0.0.1", body={}, token=None)
        if replica.down_since is None and not replica.stopped:
            run.probes.append(Probe(time.time(), replica.process.name, code != 0))


async def post(
    controller: ControllerProcess,
    *,
    pod: str,
    source: str,
    body: dict[str, Any],
    token: str | None,
) -> int:
    """POST a status webhook from ``source``; the status code, 0 if no answer within 2 s."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    try:
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(
                f"{controller.url}/webhook/{pod}/v1/status",
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=2.0),
            ) as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return 0
