"""The controller and the pods seen from outside: a process tree's CPU and memory, the
sweeps a controller logs (or counts in its metrics), and when pods come to carry some labels,
through a watch.

Nothing here asks the controller process anything it would not tell any client, so another
implementation of the same contract is measured the same way.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from kubernetes_asyncio import client as k8s

from testbed.cluster import ControllerProcess
from testbed.observing import Changed, Interrupted, Listed, LogTail, Watching, watch_pods

# ---------------------------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class Sample:
    at: float
    """Wall-clock time (time.time()), comparable with the controller's log timestamps."""
    cpu: float
    """User + system CPU seconds of the process tree so far."""
    rss: int


class Sampler:
    """Samples the RSS and CPU time of a process and its children every ``interval`` seconds.

    ``pid`` is a number or a function giving the current one: a controller may be started again
    (on another port) while it starts, and the samples follow it; CPU time carries over.
    """

    def __init__(self, pid: int | Callable[[], int | None], *, interval: float = 0.1) -> None:
        self._pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self._task: asyncio.Task[None] | None = None
        self._children: list[psutil.Process] = []
        self._children_at = 0.0
        self._current: int | None = None
        self._carried = 0.0
        self._last_cpu = 0.0

    def start(self) -> Sampler:
        self._task = asyncio.create_task(self._run(), name="sampler")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def sample(self) -> Sample | None:
        pid = self._pid() if callable(self._pid) else self._pid
        if pid is None:
            return None
        if pid != self._current:
            if self._current is not None:
                self._carried += self._last_cpu
            self._current, self._children_at, self._last_cpu = pid, 0.0, 0.0
        try:
            root = psutil.Process(pid)
            now = time.monotonic()
            if now - self._children_at > 1.0:
                self._children = root.children(recursive=True)
                self._children_at = now
            cpu = rss = 0.0
            for proc in (root, *self._children):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                    times = proc.cpu_times()
                    cpu += times.user + times.system
                    rss += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None
        self._last_cpu = cpu
        sample = Sample(at=time.time(), cpu=self._carried + cpu, rss=int(rss))
        self.samples.append(sample)
        return sample

    async def _run(self) -> None:
        while True:
            self.sample()  # None while the process is between two starts, or gone
            await asyncio.sleep(self.interval)

    def cpu_at(self, when: float) -> float:
        """CPU seconds at wall time ``when``, interpolated between the samples around it."""
        samples = self.samples
        if not samples:
            return 0.0
        index = bisect.bisect_left(samples, when, key=lambda s: s.at)
        if index == 0:
            return samples[0].cpu
        if index == len(samples):
            return samples[-1].cpu
        before, after = samples[index - 1], samples[index]
        span = after.at - before.at
        share = (when - before.at) / span if span > 0 else 1.0
        return before.cpu + share * (after.cpu - before.cpu)

    def cpu_between(self, start: float, end: float) -> float:
        return max(0.0, self.cpu_at(end) - self.cpu_at(start))

    def rss_peak(self, start: float | None = None, end: float | None = None) -> int:
        values = [
            s.rss
            for s in self.samples
            if (start is None or s.at >= start) and (end is None or s.at <= end)
        ]
        return max(values, default=0)


def run_queue_wait(pid: int) -> float:
    """Seconds the process's threads have spent runnable but waiting for a CPU (schedstat)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[1])
    return total / 1e9


# ---------------------------------------------------------------------------------------------
# Sweeps


@dataclass(frozen=True)
class Sweep:
    end: float
    """Wall-clock time the sweep finished."""
    seconds: float
    pods: int | None
    source: str
    """``log`` (the "sweep done" line) or ``metrics`` (sweeps_total and the duration sum)."""

    @property
    def start(self) -> float:
        return self.end - self.seconds


class SweepTracker:
    """Finds a controller's completed sweeps: from its "sweep done" log lines (fields ``ms``,
    ``pods``) when it writes them, else from its metrics (``sweeps_total`` and
    ``sweep_duration_seconds``), so another implementation can be timed too."""

    def __init__(self, controller: ControllerProcess) -> None:
        self._controller = controller
        self._tail = LogTail(controller.log_path)
        self._from_log: list[Sweep] = []
        self._from_metrics: list[Sweep] = []
        self._count = 0.0
        self._sum = 0.0

    @property
    def sweeps(self) -> list[Sweep]:
        return self._from_log or self._from_metrics

    async def poll(self) -> None:
        for entry in self._tail.new_entries():
            if entry.get("msg") == "sweep done" and "ms" in entry:
                end = datetime.fromisoformat(str(entry["ts"])).timestamp()
                pods = entry.get("pods")
                self._from_log.append(
                    Sweep(
                        end=end,
                        seconds=float(entry["ms"]) / 1000,
                        pods=int(pods) if isinstance(pods, int) else None,
                        source="log",
                    )
                )
        if self._from_log:
            return
        samples = await asyncio.to_thread(self._controller.metrics)
        count = _sum_of(samples, "jibri_pod_controller_sweeps_total")
        total = _sum_of(samples, "jibri_pod_controller_sweep_duration_seconds_sum")
        if count > self._count:
            new = count - self._count
            pods = _sum_of(samples, "jibri_pod_controller_jibri_pods")
            for _ in range(int(new)):
                self._from_metrics.append(
                    Sweep(
                        end=time.time(),
                        seconds=(total - self._sum) / new,
                        pods=int(pods),
                        source="metrics",
                    )
                )
            self._count, self._sum = count, total

    async def wait(self, count: int, *, timeout: float) -> list[Sweep]:
        deadline = time.monotonic() + timeout
        while True:
            await self.poll()
            if len(self.sweeps) >= count:
                return self.sweeps
            process = self._controller.process
            if process is not None and process.poll() is not None:
                raise RuntimeError(
                    f"{self._controller.name} exited {process.returncode}:\n"
                    f"{self._controller.tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(self.sweeps)} of {count} sweeps after {timeout:g} s:\n"
                    f"{self._controller.tail()}"
                )
            await asyncio.sleep(0.2)


def _sum_of(samples: Mapping[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k.partition("{")[0] == name)


# ---------------------------------------------------------------------------------------------
# Pods


class PodWatch:
    """Records when each pod is first seen, through a watch, carrying ``wanted`` labels.

    The time is taken when the event is read from the stream, on this process's monotonic
    clock, which is what the send times are taken on too. Like an informer, it watches again
    from the last resourceVersion when the stream ends (the API server closes a watch whose
    reader falls behind) and lists again when that version is too old; each restart is kept in
    ``restarts`` and a pod first seen by a list is timed at that list.
    """

    def __init__(self, api: k8s.ApiClient, namespace: str, wanted: Mapping[str, str]) -> None:
        self._api = api
        self._namespace = namespace
        self._wanted = dict(wanted)
        self.seen: dict[str, float] = {}
        self.arrivals: dict[str, list[float]] = {}
        """Every time (wall clock) each pod came to carry ``wanted``, not only the first."""
        self._matching: set[str] = set()
        self.events = 0
        self.restarts: list[str] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._open: asyncio.Future[None] | None = None

    def _record(self, pod: Mapping[str, Any], at: float) -> None:
        meta = pod.get("metadata") or {}
        name, labels = meta.get("name"), meta.get("labels") or {}
        if not isinstance(name, str):
            return
        if not all(labels.get(k) == v for k, v in self._wanted.items()):
            self._matching.discard(name)
            return
        if name not in self._matching:
            self._matching.add(name)
            self.arrivals.setdefault(name, []).append(time.time())
        if name not in self.seen:
            self.seen[name] = at
            self._changed.set()

    async def start(self) -> None:
        """Return once the watch is open."""
        self._open = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"watch-{self._namespace}")
        await asyncio.wait({self._open, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()

    async def _run(self) -> None:
        async with watch_pods(self._api, self._namespace, timeout_seconds=1800) as events:
            async for event in events:
                match event:
                    case Listed(pods=pods, at=at):
                        for pod in pods:
                            self._record(pod, at)
                    case Watching():
                        if self._open is not None and not self._open.done():
                            self._open.set_result(None)
                    case Changed(kind="ADDED" | "MODIFIED", pod=pod, at=at):
                        self.events += 1
                        self._record(pod, at)
                    case Interrupted():
                        self.restarts.append(str(event)[:200])

    async def wait(self, names: Iterable[str], *, timeout: float) -> bool:
        wanted = set(names)
        deadline = time.monotonic() + timeout
        while not wanted <= self.seen.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
