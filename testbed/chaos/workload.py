"""The workload: recordings over a compressed day, each on a spare, each with its fate."""

from __future__ import annotations

import asyncio
import random
import time

from testbed.chaos.plan import FATES, HAND, POOLS
from testbed.chaos.state import Run, jibri_group
from testbed.simjibri import BusyStatus, HealthMode, SimJibri


async def workload(run: Run) -> None:
    size = run.size
    plan_rng = run.rng("plan")
    # A compressed day: arrivals follow a daily curve (quiet night, busy afternoon).
    arrivals: list[float] = []
    while len(arrivals) < size.recordings:
        t = plan_rng.uniform(0, size.workload_seconds * 0.85)
        phase = t / (size.workload_seconds * 0.85)
        if plan_rng.random() < 0.25 + 0.75 * (1 - abs(2 * phase - 1)):
            arrivals.append(t)
    arrivals.sort()
    tasks = [asyncio.create_task(recording(run, i, at)) for i, at in enumerate(arrivals)]
    await asyncio.gather(*tasks)


async def recording(run: Run, index: int, at: float) -> None:
    rng = run.rng(f"recording-{index}")
    await asyncio.sleep(max(0.0, run.started_at + at - time.time()))
    fate = rng.choice(FATES) if rng.random() < 0.6 else "normal"
    length = rng.uniform(*run.size.recording_seconds)
    draw, group = rng.random(), HAND
    for pool in POOLS:
        if draw < pool.share:
            group = pool.name
            break
        draw -= pool.share
    await record_on(run, group, fate, length, rng)


async def record_on(
    run: Run, group: str, fate: str, length: float, rng: random.Random, *, wait: float = 20.0
) -> bool:
    """Play one recording on a spare of ``group`` (waiting up to ``wait`` seconds for one);
    False when it was turned away."""
    if fate == "lost-busy":
        length = max(length, 3 * run.size.sweep_interval + 6)
    assert run.kubelet is not None
    deadline = time.time() + wait
    name = None
    while time.time() < deadline:
        choices = run.spares(group)
        if choices:
            name = rng.choice(choices)
            break
        await asyncio.sleep(0.3)
    if name is None:
        run.refused += 1
        run.refused_by[group] += 1
        return False
    run.used.add(name)
    try:
        jibri = run.kubelet.jibri(name)
    except KeyError:
        run.refused += 1
        run.refused_by[group] += 1
        return False
    run.jibris[name] = jibri
    run.fates[fate] += 1
    return await play(run, jibri, name, fate, length, rng)


async def play(
    run: Run, jibri: SimJibri, name: str, fate: str, length: float, rng: random.Random
) -> bool:
    start = time.time()
    if fate == "lost-busy":
        jibri.set_webhooks_enabled(False)
        run.lost_busy.add(name)
    if not await jibri.start_recording(f"rec-{name}"):
        # A Jibri that began its graceful shutdown a moment ago refuses: Jicofo would ask
        # the next one. Its webhooks are back; nothing was lost.
        jibri.set_webhooks_enabled(True)
        run.lost_busy.discard(name)
        run.fates[fate] -= 1
        run.refused += 1
        run.refused_by[jibri_group(run.labels.get(name, {}))] += 1
        return False
    if fate == "duplicated":
        jibri.send_status()
        jibri.send_status()
    elif fate == "reordered":
        jibri.send_status(BusyStatus.IDLE)
    if fate == "crash":
        await asyncio.sleep(length * rng.uniform(0.2, 0.8))
        run.fault("jibri-crash", time.time(), time.time(), name)
        await jibri.crash()
        return True
    if fate.startswith("health-"):
        mode = HealthMode(fate.removeprefix("health-"))
        # Around the end of the recording, with the EXPIRED webhook lost half the time, so
        # the sweeper meets the bad answers exactly when it matters.
        before = min(length * 0.5, rng.uniform(2, 6))
        await asyncio.sleep(length - before)
        begin = time.time()
        await jibri.set_health_mode(mode)
        await asyncio.sleep(before)
        if rng.random() < 0.5:
            jibri.lose_next_status_webhook()  # the EXPIRED; its resend comes later
        await jibri.stop_recording()
        await asyncio.sleep(rng.uniform(2, 6))
        await jibri.set_health_mode(HealthMode.NORMAL)
        run.fault(fate, begin, time.time(), name)
        return True
    if fate == "resend-died":
        await asyncio.sleep(length * rng.uniform(0.1, 0.9))
        jibri.kill_resend()
        run.resend_died.add(name)
        died = time.time()
        await asyncio.sleep(max(0.0, start + length - time.time()))
        jibri.lose_next_status_webhook()  # the EXPIRED: only the sweeper can see it now
        await jibri.stop_recording()
        run.fault("jibri-resend-died", died, time.time(), name)
        return True
    await asyncio.sleep(length)
    if fate == "lost-busy":
        jibri.set_webhooks_enabled(True)
        run.fault("webhook-lost-busy", start, time.time(), name)
    if fate == "lost-expired":
        jibri.lose_next_status_webhook()  # the EXPIRED; its resend comes later
        run.fault("webhook-lost-expired", time.time(), time.time(), name)
    await jibri.stop_recording()
    if fate == "duplicated":
        jibri.send_status()
        run.fault("webhook-duplicated", start, time.time(), name)
    elif fate == "reordered":
        jibri.send_status(BusyStatus.BUSY)
        run.fault("webhook-reordered", start, time.time(), name)
    return True
