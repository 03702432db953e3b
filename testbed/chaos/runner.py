"""One chaos run, from a fresh control plane to its checked history."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from testbed.chaos.attacker import attacker, prober
from testbed.chaos.faults import api_faults, controller_faults, monitor
from testbed.chaos.history import end_pods, extract_history, silences
from testbed.chaos.plan import POOLS, Size
from testbed.chaos.pools import ambushes, bursts, operator
from testbed.chaos.report import source_commit, summary
from testbed.chaos.setup import recover, set_up
from testbed.chaos.state import Run
from testbed.chaos.workload import workload
from testbed.chaoscheck import History, Report, check
from testbed.controlplane import ControlPlane


async def run(
    seed: int, size: Size, out: Path, *, say: Callable[[str], None] = print
) -> tuple[Report, History, dict[str, Any]]:
    """Do one chaos run and check it; the plane and every process are stopped at the end."""
    await asyncio.to_thread(shutil.rmtree, out, ignore_errors=True)
    await asyncio.to_thread(out.mkdir, parents=True)
    load_start = os.getloadavg()[0]
    began = time.monotonic()
    say(f"chaos run: seed {seed}, {size.recordings} recordings over {size.workload_seconds:.0f} s")
    plane = await asyncio.to_thread(ControlPlane.start, out / "plane")
    state = Run(seed=seed, size=size, out=out, say=say, commit=source_commit())
    state.plane = plane
    tasks: list[asyncio.Task[None]] = []
    try:
        await set_up(state, plane)
        say(f"set up in {time.monotonic() - began:.0f} s; faults and workload start")
        state.started_at = time.time()
        # Once the workload is done, the fault streams and the attacker end their current
        # step (a stopped replica is continued, an outage ended); the pool streams, which only
        # wait between their steps, are cancelled, and the recordings they started awaited.
        # The monitor and the prober run on until the end.
        faults = [
            asyncio.create_task(stream)
            for stream in (api_faults(state), controller_faults(state), attacker(state))
        ]
        pool_streams = [
            asyncio.create_task(stream)
            for stream in (
                bursts(state),
                operator(state),
                *(ambushes(state, pool) for pool in POOLS),
            )
        ]
        tasks = [
            asyncio.create_task(monitor(state)),
            asyncio.create_task(prober(state)),
            *faults,
            *pool_streams,
        ]
        await workload(state)
        say(f"workload done at {time.time() - state.started_at:.0f} s; faults stop")
        state.running = False
        for task in pool_streams:
            task.cancel()
        await asyncio.gather(*faults)
        await asyncio.gather(*pool_streams, return_exceptions=True)
        while state.extra:  # the recordings the pool streams started
            await asyncio.gather(*state.extra)
        await recover(state)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        at_end = await end_pods(state)
        history, counts = extract_history(state, plane, at_end, silences(state))
    finally:
        state.running = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for replica in state.replicas.values():
            if replica.stopped:
                replica.process.signal(signal.SIGCONT)
            await asyncio.to_thread(replica.process.stop)
        if state.kubelet is not None:
            await state.kubelet.stop()
        if state.proxy is not None:
            await state.proxy.stop()
        if state.admin is not None:
            await state.admin.close()
        await asyncio.to_thread(plane.stop, keep_logs_in=out / "plane-logs")
    report = check(history)
    result = summary(
        state,
        report,
        counts,
        load=(load_start, os.getloadavg()[0]),
        seconds=time.monotonic() - began,
    )
    (out / "history.json").write_text(json.dumps(asdict(history), default=list, indent=1))
    (out / "report.json").write_text(json.dumps(result, indent=2))
    return report, history, result
