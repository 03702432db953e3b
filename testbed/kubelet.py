"""A fake kubelet: makes pods look like running Jibris on a control plane without nodes.

It watches pods and, for each new pod without an IP, gives it a loopback address of its own
(127.1.0.0 - 127.255.255.255; Linux routes all of 127.0.0.0/8 to `lo`, so a server can bind each
one), reports the pod Running with that address but not Ready through `pods/status` (as a
real kubelet reports the address before the containers are up), then starts a simulated Jibri
bound to it if the pod's first container sets `SIM_JIBRI=true`, and reports the pod Ready. A
pod whose first container sets `SIM_READY_DELAY_SECONDS` (or any pod, with the kubelet's
`ready_delay`) stays not Ready, its Jibri not started, for that many seconds (plus up to
`SIM_READY_JITTER_SECONDS`, uniformly): a Jibri whose Chrome takes its time. Before all this,
a pod whose first container sets `SIM_PENDING_SECONDS` stays Pending (no address, no
container) for that long, as a real node's scheduling and container start keep it. A pod
annotated `testbed.jibri-pod-controller.io/real-jibri: "true"` runs a real Jibri instead (a
`RealJibri` runner), on an address of its own network namespace (`testbed.realjibri`).

A pod's Jibri is run as a container's process (a `JibriRunner`: start, signal, an exit code to
await, a command to exec in its context). When its process ends by itself (a Jibri that shut
down gracefully exits 255), the pod turns not Ready at once and, under restartPolicy Always (a
Deployment's pods), the container is restarted after the kubelet's back-off (10 s, doubling to
5 min, reset after 10 min of running) with its restartCount one higher and a fresh Jibri that
reports IDLE; ``lastState.terminated`` shows the exit code.

When a pod is deleted (it gets a deletionTimestamp), its container is ended as a kubelet does:
the first container's preStop exec hook runs, for at most the grace period (the deletion's
``deletionGracePeriodSeconds``, else the pod's ``terminationGracePeriodSeconds``); then SIGTERM,
and SIGKILL once the grace period is over (SIGTERM gets at least 2 s after a hook that used it
all); a pod removed from the API meanwhile is killed at once. Then the pod is removed with grace
period 0, as a kubelet does once its containers are gone.

Simulated Jibris share this host's loopback, one address each; a pod has no 127.0.0.1 of its
own. So a hook that speaks to ``127.0.0.1`` or ``localhost`` (deploy/jibri's preStop calls
Jibri's internal API there) is run on this host with those names replaced by the pod's own
address, where its Jibri listens (`in_pod`); the rest of the command runs as written (``sh``,
``curl``, ``sleep`` from this host).

Pods are tracked by uid, never by name: a ReplicaSet or a test may reuse a name, and a Jibri must
never outlive the pod it belongs to. Addresses are unique within the process and never reused,
so a stale address can never reach a newer pod.

    python -m testbed.kubelet --kubeconfig admin.kubeconfig --namespace demo
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import errno
import ipaddress
import logging
import math
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import aiohttp
import uvloop
from kubernetes_asyncio.client import ApiClient, CoreV1Api, V1DeleteOptions, V1Preconditions
from kubernetes_asyncio.client.exceptions import ApiException

from testbed.kube import api_status, new_api_client
from testbed.observing import Changed, Interrupted, Listed, watch_pods
from testbed.realjibri import HEALTH_PORT, RealJibris, wants_real_jibri
from testbed.simjibri import SimJibri, SimJibriConfig, config_from_env

__all__ = [
    "FakeKubelet",
    "JibriRunner",
    "KubeletThread",
    "SimRunner",
    "allocate_ip",
    "in_pod",
    "main",
    "run_in_thread",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

SIM_JIBRI_ENV = "SIM_JIBRI"
READY_DELAY_ENV = "SIM_READY_DELAY_SECONDS"
READY_JITTER_ENV = "SIM_READY_JITTER_SECONDS"
PENDING_ENV = "SIM_PENDING_SECONDS"
"""Seconds a pod stays Pending (no address, no container) before this kubelet runs it: the
scheduling, the sandbox and the container start of a real node."""
HOST_IP = "127.0.0.1"
NODE_NAME = "fake-kubelet"
"""The node the pods with a preStop hook are bound to (see `FakeKubelet._bind`)."""
CALL_TIMEOUT_S = 30.0
PATCH_ATTEMPTS = 5
FINALIZE_ATTEMPTS = 30
CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready")

# --------------------------------------------------------------------------------------------
# Addresses

_RANGE_START = int(ipaddress.IPv4Address("127.1.0.0"))
_RANGE_SIZE = int(ipaddress.IPv4Address("127.255.255.255")) + 1 - _RANGE_START
# Each process starts at .0.2 of its own block of 65,536 addresses, chosen by its pid, so that
# kubelets in processes running side by side (a demo, parallel test runs) rarely meet; a bind that
# still collides moves the pod on to the next address before it is reported.
_offset = (os.getpid() % 255) * 65536 + 2
_allocated = 0
_ip_lock = threading.Lock()
BIND_ATTEMPTS = 20


def allocate_ip() -> str:
    """A loopback address in 127.1.0.0/16 - 127.255.0.0/16 not handed out before in this process."""
    global _allocated
    with _ip_lock:
        while _allocated < _RANGE_SIZE:
            candidate = _RANGE_START + (_offset + _allocated) % _RANGE_SIZE
            _allocated += 1
            if candidate & 0xFF not in (0, 255):
                return str(ipaddress.IPv4Address(candidate))
    raise RuntimeError("all loopback addresses from 127.1.0.0 to 127.255.255.255 were used")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# A container's process

DEFAULT_GRACE_S = 30.0
"""``terminationGracePeriodSeconds`` when the pod does not set it (the API server's default)."""
MIN_GRACE_AFTER_HOOK_S = 2.0
"""The kubelet gives SIGTERM at least this long, even when the preStop hook took the whole
grace period (``minimumGracePeriodInSeconds``)."""
BACK_OFF_S = 10.0
"""The first wait before a restart of an exited container; it doubles with each exit..."""
BACK_OFF_MAX_S = 300.0
"""...up to this..."""
BACK_OFF_RESET_S = 600.0
"""...and starts over once a container ran this long."""
_LOOPBACK = re.compile(r"\b(127\.0\.0\.1|localhost)\b")


class JibriRunner(Protocol):
    """A pod's Jibri as the kubelet runs its container: started, signalled, its exit code
    awaited, and a command run in its context (an exec hook). `SimRunner` runs a simulated
    Jibri in this process; a real Jibri process is another runner of the same shape."""

    async def start(self) -> None:
        """Start the process; raise if it cannot (an address already in use, say)."""

    def signal(self, signum: int) -> None:
        """Send SIGTERM or SIGKILL (the exit is then seen in `exited`)."""

    @property
    def exited(self) -> asyncio.Future[int]:
        """Resolves with the exit code when the process ends, by itself or by a signal."""
        raise NotImplementedError

    async def exec(self, command: Sequence[str], *, timeout: float) -> int:
        """Run ``command`` in the container's context; its exit code (137 when it was killed:
        the timeout passed, or the container's process ended and took it along)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the process left (after its exit, or to stop it for good)."""


def in_pod(argument: str, address: str) -> str:
    """An exec argument as seen from inside a simulated pod: its loopback is its address."""
    return _LOOPBACK.sub(address, argument)


class SimRunner:
    """A simulated Jibri as a container's process.

    The simulated Jibris of all pods share this host's loopback, one address each, and a
    pod has no loopback of its own. So an exec command that speaks to ``127.0.0.1`` or
    ``localhost`` (a preStop hook calling Jibri's internal API, as deploy/jibri's does) is run
    on this host with those names replaced by the pod's address, where its Jibri listens
    (`in_pod`); anything else in the command runs as written. SIGTERM and SIGKILL both end
    the simulated process at once: a JVM's shutdown hooks save no recording either.
    """

    def __init__(
        self,
        config: SimJibriConfig,
        *,
        on_restart: Callable[[int], Awaitable[bool]],
        on_change: Callable[[str, float], None],
    ) -> None:
        self.address = config.host
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.jibri = SimJibri(
            config, on_restart=on_restart, on_change=on_change, on_exit=self._ended
        )
        self._signalled: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.jibri.start()

    @property
    def exited(self) -> asyncio.Future[int]:
        return self._exited

    def _ended(self, code: int) -> None:
        if not self._exited.done():
            self._exited.set_result(code)

    def signal(self, signum: int) -> None:
        if self._exited.done() or self._signalled is not None:
            return

        async def end() -> None:
            await self.jibri.stop()
            self._ended(128 + signum)

        self._signalled = asyncio.get_running_loop().create_task(end())

    async def exec(self, command: Sequence[str], *, timeout: float) -> int:
        argv = [in_pod(argument, self.address) for argument in command]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        output = asyncio.ensure_future(process.communicate())
        either: set[asyncio.Future[Any]] = {output, self._exited}
        try:
            await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Out of time, the container's process gone (it takes its execs along), or the
            # pod removed meanwhile (cancelled): the command goes with it.
            if not output.done():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            out, _ = await output
        code = process.returncode if process.returncode is not None else 137
        tail = out.decode(errors="replace").strip()[-300:]
        log.info("exec in %s: %s -> %d %s", self.address, argv[:1], code, tail)
        return 137 if code < 0 else code

    async def close(self) -> None:
        await self.jibri.stop()
        if self._signalled is not None:
            await self._signalled


@dataclass(frozen=True)
class _Spec:
    """What the kubelet takes from a pod's spec to run and end its container."""

    pre_stop: tuple[str, ...] | None = None
    """The first container's ``lifecycle.preStop.exec.command``."""
    grace: float = DEFAULT_GRACE_S
    """``terminationGracePeriodSeconds``."""
    restart_policy: str = "Always"

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> _Spec:
        spec = pod.get("spec") or {}
        first = (spec.get("containers") or [{}])[0]
        hook = ((first.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}
        command = hook.get("command")
        grace = spec.get("terminationGracePeriodSeconds")
        return cls(
            pre_stop=tuple(str(a) for a in command) if command else None,
            grace=float(grace) if isinstance(grace, int | float) else DEFAULT_GRACE_S,
            restart_policy=str(spec.get("restartPolicy") or "Always"),
        )


# --------------------------------------------------------------------------------------------
# One pod


@dataclass
class _Container:
    name: str
    image: str


@dataclass
class _Exit:
    """A container's last termination, as ``lastState.terminated`` shows it."""

    code: int
    started_at: str
    finished_at: str


@dataclass
class _Pod:
    uid: str
    namespace: str
    name: str
    ip: str
    containers: list[_Container]
    env: dict[str, str]
    started_at: str = field(default_factory=_now)
    runner: JibriRunner | None = None
    restart_count: int = 0
    running_since: str | None = None
    """When the current container started; None while none runs (not started, or waiting)."""
    last_exit: _Exit | None = None
    waiting: str | None = None
    """Why no container runs: ``CrashLoopBackOff`` between an exit and the restart."""
    finished: str | None = None
    """``Succeeded`` or ``Failed`` once a container that is not restarted exited."""
    terminating: bool = False
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    start_task: asyncio.Task[None] | None = None
    reported: bool = False
    start_error: Exception | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ready_since: str | None = None
    """When the pod turned Ready; None while it is not."""
    not_ready_since: str | None = None
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    spec: _Spec = field(default_factory=lambda: _Spec())
    grace: float | None = None
    """The grace period of the deletion (``deletionGracePeriodSeconds``), once deleted."""
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the pod is gone from the API while still terminating: no grace is left."""
    crash_loop: bool = False
    """Its container dies as soon as it is restarted (see `FakeKubelet.crash_loop`)."""
    manifest: dict[str, Any] | None = None
    """The pod as listed, if it asks for a real Jibri (`testbed.realjibri`)."""

    @property
    def simulated(self) -> bool:
        return self.env.get(SIM_JIBRI_ENV, "").lower() == "true"

    @property
    def jibri(self) -> SimJibri | None:
        return self.runner.jibri if isinstance(self.runner, SimRunner) else None

    def status(self) -> dict[str, Any]:
        """The whole status this kubelet reports (sent as a strategic merge patch)."""
        statuses = []
        for index, container in enumerate(self.containers):
            first = index == 0
            status: dict[str, Any] = {
                "name": container.name,
                "image": container.image,
                "imageID": f"sim://{container.image}",
                "containerID": f"sim://{self.uid}/{container.name}",
                "ready": self.ready_since is not None,
                "started": not first or self.running_since is not None,
                "restartCount": self.restart_count if first else 0,
                "state": {"running": {"startedAt": self.running_since or self.started_at}},
            }
            if first and self.waiting is not None:
                status["state"] = {"waiting": {"reason": self.waiting}}
            if first and self.last_exit is not None:
                terminated = {
                    "exitCode": self.last_exit.code,
                    "reason": "Completed" if self.last_exit.code == 0 else "Error",
                    "startedAt": self.last_exit.started_at,
                    "finishedAt": self.last_exit.finished_at,
                    "containerID": f"sim://{self.uid}/{container.name}",
                }
                status["lastState"] = {"terminated": terminated}
                if self.finished is not None:
                    status["state"] = {"terminated": terminated}
            statuses.append(status)
        return {
            "phase": self.finished or "Running",
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.started_at,
            "conditions": [self._condition(kind) for kind in CONDITIONS],
            "containerStatuses": statuses,
        }

    def _condition(self, kind: str) -> dict[str, str]:
        if kind in ("ContainersReady", "Ready"):
            if self.ready_since is None:
                since = self.not_ready_since or self.started_at
                return {"type": kind, "status": "False", "lastTransitionTime": since}
            return {"type": kind, "status": "True", "lastTransitionTime": self.ready_since}
        return {"type": kind, "status": "True", "lastTransitionTime": self.started_at}

    def pending_delay(self) -> float:
        return _seconds(self.env, PENDING_ENV, 0.0)

    def ready_delay(self, default: float) -> float:
        """Seconds from start to Ready: the pod's own setting, or the kubelet's."""
        delay = _seconds(self.env, READY_DELAY_ENV, default)
        jitter = _seconds(self.env, READY_JITTER_ENV, 0.0)
        return delay + (random.uniform(0.0, jitter) if jitter else 0.0)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={raw!r}: expected seconds, a number >= 0")
    return value


def _seconds_between(start: str, end: str) -> float:
    parse = datetime.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def _plain_env(pod: Mapping[str, Any]) -> dict[str, str]:
    containers = pod.get("spec", {}).get("containers") or [{}]
    env: dict[str, str] = {}
    for entry in containers[0].get("env") or []:
        if "value" in entry and "valueFrom" not in entry:
            env[entry["name"]] = str(entry["value"])
    return env


# --------------------------------------------------------------------------------------------
# The kubelet


class FakeKubelet:
    """Runs the pods of one namespace (or of all, with `namespace=None`) on loopback addresses.

    `api` is an `ApiClient` (the caller keeps owning it) or the path of a kubeconfig (an admin
    one: the kubelet patches `pods/status` and deletes pods). `health_port_env` names the env
    entry holding the simulated Jibri's HTTP API port; `endpoint_of` reports it. `ready_delay`
    is the seconds from start to Ready for pods that do not set `SIM_READY_DELAY_SECONDS`
    (default 0: Ready at once, reported in one status update).

    `ground_truth`, if given, receives one dict per fact, as it happens: ``{"t": wall time,
    "event": ..., "pod", "uid", "namespace"}`` with event ``started`` (plus ``ip``,
    ``labels``), ``labels`` (a change seen by the watch, plus ``labels``), ``status`` (a change
    of the Jibri's busyStatus, plus ``status``: IDLE, BUSY, EXPIRED, CRASH, EXIT when the process
    ended by itself, and IDLE again when an exited container was restarted), ``created`` (the
    pod was first seen, plus ``labels``; it may be deleted before it ever starts),
    ``terminating`` (the pod's deletion was seen: its preStop hook starts) and ``stopped`` (plus
    ``status``:
    the Jibri's busyStatus when it was stopped, or EXIT when it had exited by itself before).
    """

    def __init__(
        self,
        api: ApiClient | str | os.PathLike[str],
        namespace: str | None,
        *,
        health_port_env: str = "SIM_JIBRI_PORT",
        ground_truth: Callable[[dict[str, Any]], None] | None = None,
        ready_delay: float = 0.0,
    ) -> None:
        if not math.isfinite(ready_delay) or ready_delay < 0:
            raise ValueError(f"ready_delay {ready_delay}: expected seconds, a number >= 0")
        self.namespace = namespace
        self.health_port_env = health_port_env
        self._ground_truth = ground_truth
        self.ready_delay = ready_delay
        self._api_arg = api
        self._api: ApiClient | None = api if isinstance(api, ApiClient) else None
        self._owns_api = not isinstance(api, ApiClient)
        self._pods: dict[str, _Pod] = {}
        self._runners: set[JibriRunner] = set()
        """Every simulated Jibri started and not closed yet."""
        self._by_name: dict[tuple[str, str], str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self._closed = False
        self.real_jibris = RealJibris()
        """Pods annotated for a real Jibri (`testbed.realjibri`) run one of these."""

    # -- lifecycle

    async def start(self) -> None:
        """Start watching; returns once the pods that exist now have been listed."""
        if self._watcher is not None:
            raise RuntimeError("FakeKubelet already started")
        if self._api is None:
            assert not isinstance(self._api_arg, ApiClient)
            self._api = await new_api_client(self._api_arg)
        self._watcher = asyncio.create_task(self._watch_forever(), name="fake-kubelet-watch")
        synced = asyncio.create_task(self._synced.wait())
        await asyncio.wait({synced, self._watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not synced.done():
            synced.cancel()
            failure = self._watcher.exception() if not self._watcher.cancelled() else None
            await self.stop()
            raise RuntimeError(f"the fake kubelet cannot list pods: {failure!r}") from failure

    async def stop(self) -> None:
        """Stop watching and stop every simulated Jibri; pods are left as they are."""
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pod in list(self._pods.values()):
            await self._stop_jibri(pod)
        # And any runner a race left behind (a container started for a pod that was ending):
        # no Jibri of this kubelet outlives it.
        for runner in list(self._runners):
            with contextlib.suppress(Exception):
                await runner.close()
        self._runners.clear()
        await self.real_jibris.close()
        self._pods.clear()
        self._by_name.clear()
        if self._owns_api and self._api is not None:
            await self._api.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- lookups (by the pod's current name; a reused name means the newest pod)

    def ip_of(self, name: str, namespace: str | None = None) -> str:
        """The address given to the running pod `name`; KeyError if there is none."""
        return self._pod(name, namespace).ip

    def jibri(self, name: str, namespace: str | None = None) -> SimJibri:
        """The simulated Jibri of the running pod `name`; KeyError if there is none."""
        pod = self._pod(name, namespace)
        if pod.jibri is None:
            raise KeyError(f"pod {pod.namespace}/{name} runs no simulated Jibri (yet)")
        return pod.jibri

    def endpoint_of(self, name: str, namespace: str | None = None) -> tuple[str, int | None]:
        """(address, port of the Jibri HTTP API): the simulated Jibri's bound port, else the
        pod's `health_port_env` entry; None if neither is known."""
        pod = self._pod(name, namespace)
        if pod.jibri is not None:
            return pod.ip, pod.jibri.port
        if pod.manifest is not None:
            return pod.ip, HEALTH_PORT
        port = pod.env.get(self.health_port_env, "").strip()
        return pod.ip, int(port) if port.isdigit() else None

    def crash_loop(self, name: str, namespace: str | None = None) -> None:
        """Make pod `name`'s container crash now and at every restart (a Jibri that cannot
        start): Running, not Ready, its API refusing connections, restarted after ever longer
        back-offs, its restartCount rising. KeyError if there is no such pod."""
        pod = self._pod(name, namespace)
        pod.crash_loop = True
        if pod.runner is not None and not pod.runner.exited.done():
            pod.runner.signal(signal.SIGKILL)

    def running(self) -> dict[str, str]:
        """Name -> address of every pod this kubelet runs now (and has not yet stopped)."""
        return {p.name: p.ip for p in self._pods.values() if not p.terminating}

    async def wait_running(self, name: str, namespace: str | None = None) -> str:
        """Wait until pod `name` runs here, Ready, and its status is reported; return its
        address.

        Raises if it failed to start; bound the wait with `asyncio.timeout`."""
        while True:
            try:
                pod = self._pod(name, namespace)
            except KeyError:
                pass
            else:
                if pod.start_error is not None:
                    raise RuntimeError(
                        f"pod {pod.namespace}/{name} failed to start: {pod.start_error!r}"
                    ) from pod.start_error
                if pod.reported:
                    return pod.ip
            await asyncio.sleep(0.05)

    def _pod(self, name: str, namespace: str | None) -> _Pod:
        namespace = namespace or self.namespace
        if namespace is None:
            matches = [p for p in self._pods.values() if p.name == name and not p.terminating]
            if len(matches) == 1:
                return matches[0]
            if matches:
                raise KeyError(f"pod name {name!r} is ambiguous across namespaces; name one")
            raise KeyError(f"no running pod {name!r}")
        uid = self._by_name.get((namespace, name))
        pod = self._pods.get(uid) if uid is not None else None
        if pod is None or pod.terminating:
            raise KeyError(f"no running pod {namespace}/{name}")
        return pod

    # -- watching

    @property
    def _core(self) -> CoreV1Api:
        assert self._api is not None
        return CoreV1Api(self._api)

    async def _watch_forever(self) -> None:
        assert self._api is not None
        async with watch_pods(self._api, self.namespace) as events:
            async for event in events:
                match event:
                    case Listed(pods=pods):
                        for pod in pods:
                            self._on_pod(pod, deleted=False)
                        for uid in event.missing(list(self._pods)):
                            self._on_gone(self._pods[uid], still_exists=False)
                        self._synced.set()
                    case Changed(pod=pod):
                        self._on_pod(pod, deleted=event.deleted)
                    case Interrupted(reason="failed", error=error):
                        log.warning("pod watch failed (%r); retrying", error)
                    case Interrupted(reason="resourceVersion expired"):
                        log.info("watch resourceVersion expired; listing again")

    # -- reacting

    def _on_pod(self, obj: Mapping[str, Any], *, deleted: bool) -> None:
        meta = obj["metadata"]
        uid: str = meta["uid"]
        known = self._pods.get(uid)
        if deleted or meta.get("deletionTimestamp"):
            if known is not None:
                grace = meta.get("deletionGracePeriodSeconds")
                self._on_gone(
                    known,
                    still_exists=not deleted,
                    grace=float(grace) if isinstance(grace, int | float) else None,
                )
            elif not deleted and not obj.get("status", {}).get("podIP"):
                # Terminating before it ever ran here: nothing to stop, just finalize it.
                self._spawn(self._finalize(meta["namespace"], meta["name"], uid))
            return
        if known is not None:
            labels = dict(meta.get("labels") or {})
            if labels != known.labels:
                known.labels = labels
                self._emit(known, "labels", labels=labels)
            return  # already running here
        if obj.get("status", {}).get("podIP"):
            return  # run by someone else (another kubelet)
        containers = [
            _Container(name=c["name"], image=c.get("image", ""))
            for c in obj.get("spec", {}).get("containers") or []
        ]
        pod = _Pod(
            uid=uid,
            namespace=meta["namespace"],
            name=meta["name"],
            ip=allocate_ip(),
            containers=containers,
            env=_plain_env(obj),
            labels=dict(meta.get("labels") or {}),
            spec=_Spec.of(obj),
            manifest=dict(obj) if wants_real_jibri(obj) else None,
        )
        self._pods[uid] = pod
        self._by_name[(pod.namespace, pod.name)] = uid
        self._emit(pod, "created", labels=dict(pod.labels))
        pod.start_task = self._spawn(self._run(pod))

    def _on_gone(self, pod: _Pod, *, still_exists: bool, grace: float | None = None) -> None:
        if grace is not None:
            pod.grace = grace if pod.grace is None else min(pod.grace, grace)
        if pod.terminating:
            if not still_exists:
                pod.killed.set()  # removed from the API: no grace left to give
            return
        pod.terminating = True
        pod.gone.set()
        if not still_exists:
            pod.killed.set()
        self._emit(pod, "terminating")
        self._spawn(self._terminate(pod, still_exists=still_exists))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, pod: _Pod) -> None:
        try:
            pending = pod.pending_delay()
            if pending > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pod.gone.wait(), pending)
                if pod.terminating:
                    return
            if pod.manifest is not None:
                pod.ip = self.real_jibris.allocate()  # on the pods' network, not loopback
            delay = pod.ready_delay(self.ready_delay)
            if pod.spec.pre_stop:
                await self._bind(pod)
            # Running with an address, not Ready, before the Jibri starts: a real kubelet
            # reports the pod's address once its sandbox has one, and a real Jibri (a JVM,
            # Chrome) takes seconds before it can send its first webhook.
            await self._report(pod)
            if delay > 0:
                log.info(
                    "pod %s/%s starts on %s, Ready in %.1f s",
                    pod.namespace,
                    pod.name,
                    pod.ip,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pod.gone.wait(), delay)
                if pod.terminating:
                    return
            if pod.simulated or pod.manifest is not None:
                await self._start_jibri(pod)
            pod.running_since = pod.ready_since = _now()
            await self._report(pod)
            pod.reported = True
            self._emit(pod, "started", ip=pod.ip, labels=dict(pod.labels))
            log.info("pod %s/%s runs on %s", pod.namespace, pod.name, pod.ip)
            if pod.runner is not None:
                self._spawn(self._watch_exit(pod, pod.runner))
        except Exception as exc:
            pod.start_error = exc
            log.exception("cannot start pod %s/%s", pod.namespace, pod.name)

    async def _watch_exit(self, pod: _Pod, runner: JibriRunner) -> None:
        """A container whose process ended by itself (a Jibri that shut down gracefully):
        not Ready at once, then, under restartPolicy Always (a Deployment's pods), restarted
        after the kubelet's back-off (10 s, doubling to 5 min, reset after 10 min of running),
        its restart count one higher, with a fresh Jibri that reports IDLE."""
        quick_exits = 0
        while True:
            code = await runner.exited
            if pod.terminating:
                return  # the termination sequence owns the rest
            ended = _now()
            ran = _seconds_between(pod.running_since or pod.started_at, ended)
            quick_exits = 0 if ran >= BACK_OFF_RESET_S else quick_exits + 1
            pod.last_exit = _Exit(code, pod.running_since or pod.started_at, ended)
            pod.running_since = pod.ready_since = None
            pod.not_ready_since = ended
            await runner.close()
            self._runners.discard(runner)
            policy = pod.spec.restart_policy
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                pod.finished = "Succeeded" if code == 0 else "Failed"
                await self._report(pod)
                log.info("pod %s/%s: its container exited %d", pod.namespace, pod.name, code)
                return
            pod.waiting = "CrashLoopBackOff"
            while True:
                await self._report(pod)
                back_off = min(BACK_OFF_MAX_S, BACK_OFF_S * 2 ** (quick_exits - 1))
                log.info(
                    "pod %s/%s: its container exited %d; restarting in %g s",
                    pod.namespace,
                    pod.name,
                    pod.last_exit.code,
                    back_off,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pod.gone.wait(), back_off)
                if pod.gone.is_set():
                    return
                pod.restart_count += 1
                if not pod.crash_loop:
                    break
                now = _now()  # the restarted container dies at once
                pod.last_exit = _Exit(1, now, now)
                quick_exits += 1
            pod.waiting = None
            if pod.terminating or pod.stopped.is_set():
                return  # its termination began meanwhile: no container is started for it
            await self._start_jibri(pod)
            if pod.terminating or pod.stopped.is_set():
                # The termination came while this container started, and may have stopped
                # the previous one only: stop this one too, or it would outlive its pod.
                assert pod.runner is not None
                await pod.runner.close()
                return
            pod.running_since = pod.ready_since = _now()
            await self._report(pod)
            self._emit(pod, "status", status="IDLE")  # a new process
            assert pod.runner is not None
            runner = pod.runner

    async def _start_jibri(self, pod: _Pod) -> None:
        if pod.manifest is not None:
            real = await self.real_jibris.runner(pod.manifest, address=pod.ip, core=self._core)
            pod.runner = real
            await real.start()
            return
        for attempt in range(1, BIND_ATTEMPTS + 1):
            config = config_from_env(pod.name, pod.ip, pod.env)
            # Known before it starts, so that a stop during start-up closes it too.
            pod.runner = SimRunner(
                config,
                on_restart=self._restart_hook(pod),
                on_change=self._status_hook(pod),
            )
            self._runners.add(pod.runner)
            try:
                await pod.runner.start()
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == BIND_ATTEMPTS or pod.reported:
                    raise
                await pod.runner.close()
                log.info(
                    "%s:%d is taken (by another process?); trying another address",
                    pod.ip,
                    config.port,
                )
                pod.ip = allocate_ip()

    def _emit(self, pod: _Pod, event: str, *, t: float | None = None, **facts: Any) -> None:
        if self._ground_truth is not None:
            self._ground_truth(
                {
                    "t": time.time() if t is None else t,
                    "event": event,
                    "pod": pod.name,
                    "uid": pod.uid,
                    "namespace": pod.namespace,
                    **facts,
                }
            )

    def _status_hook(self, pod: _Pod) -> Callable[[str, float], None]:
        def on_change(status: str, at: float) -> None:
            self._emit(pod, "status", t=at, status=status)

        return on_change

    def _restart_hook(self, pod: _Pod) -> Callable[[int], Awaitable[bool]]:
        async def on_restart(restart_count: int) -> bool:
            # A crash and a quick restart keep the pod (and its address); only the container
            # status changes. Awaited before the restarted Jibri reports again, so the API
            # shows the restart first, as with a real kubelet. A terminating pod's container
            # is never restarted: its crashed Jibri stays dead, and the pod goes.
            if pod.terminating:
                return False
            now = _now()
            pod.last_exit = _Exit(1, pod.running_since or pod.started_at, now)
            pod.running_since = now
            pod.restart_count += 1
            try:
                await self._report(pod)
            except (ApiException, aiohttp.ClientError, TimeoutError):
                log.exception("reporting the restart of pod %s/%s failed", pod.namespace, pod.name)
            return True

        return on_restart

    async def _bind(self, pod: _Pod) -> None:
        """Assign the pod to this kubelet's node, as a scheduler does. The API server deletes
        an unscheduled pod at once, with no grace period; a scheduled one only gets its
        deletionTimestamp, and the kubelet ends its containers (preStop hook, SIGTERM, SIGKILL)
        before it removes the pod. Done for pods with a preStop hook, the ones that need the
        grace period; the others are removed at once, as before, for the same cost."""
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.name, "uid": pod.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
        }
        for attempt in range(1, PATCH_ATTEMPTS + 1):
            try:
                # Raw: the client cannot read the Status this call answers with as a Binding.
                core: Any = self._core
                response = await core.create_namespaced_pod_binding(
                    pod.name,
                    pod.namespace,
                    binding,
                    _preload_content=False,
                    _request_timeout=CALL_TIMEOUT_S,
                )
                async with response:
                    body = await response.read()
                if response.status in (201, 200, 409):  # 409: bound already
                    return
                if response.status == 404 or attempt == PATCH_ATTEMPTS:
                    raise ApiException(status=response.status, reason=body[:300].decode())
            except (aiohttp.ClientError, TimeoutError):
                if attempt == PATCH_ATTEMPTS:
                    raise
            await asyncio.sleep(0.1 * 2**attempt)

    async def _report(self, pod: _Pod) -> None:
        """Patch the pod's status with what this kubelet knows now (serialized per pod)."""
        async with pod.status_lock:
            for attempt in range(1, PATCH_ATTEMPTS + 1):
                if pod.terminating:
                    return
                try:
                    await self._core.patch_namespaced_pod_status(
                        pod.name,
                        pod.namespace,
                        {"status": pod.status()},
                        _request_timeout=CALL_TIMEOUT_S,
                    )
                    return
                except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                    status = api_status(exc)
                    if status == 404:
                        return  # deleted meanwhile; the watch stops its Jibri
                    if attempt == PATCH_ATTEMPTS or status in (400, 403, 422):
                        raise
                    await asyncio.sleep(0.1 * 2**attempt)

    async def _terminate(self, pod: _Pod, *, still_exists: bool) -> None:
        """The kubelet's termination: the preStop hook, then SIGTERM, then SIGKILL when the
        grace period (the deletion's, else ``terminationGracePeriodSeconds``) is over; the
        hook has the whole period, SIGTERM what is left of it but at least 2 s. Then the pod
        is removed (grace period 0), as a kubelet does once its containers are gone."""
        if pod.start_task is not None and not pod.start_task.done():
            # Let a start in progress finish, so that the Jibri it starts is stopped too.
            with contextlib.suppress(Exception):
                await asyncio.shield(pod.start_task)
        runner = pod.runner
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (pod.grace if pod.grace is not None else pod.spec.grace)
        if runner is not None and not runner.exited.done() and not pod.killed.is_set():
            if pod.spec.pre_stop:
                log.info("pod %s/%s: preStop hook", pod.namespace, pod.name)
                hook = asyncio.ensure_future(
                    runner.exec(pod.spec.pre_stop, timeout=max(0.0, deadline - loop.time()))
                )
                await self._until(hook, pod, deadline)
                if not hook.done():
                    hook.cancel()
                deadline = max(deadline, loop.time() + MIN_GRACE_AFTER_HOOK_S)
            if not runner.exited.done():
                runner.signal(signal.SIGTERM)
                await self._until(runner.exited, pod, deadline)
        if runner is not None and not runner.exited.done():
            runner.signal(signal.SIGKILL)
            await runner.exited
        if pod.reported:
            status = pod.jibri.busy_status.value if pod.jibri is not None else None
            if runner is not None and runner.exited.done() and runner.exited.result() == 255:
                status = "EXIT"  # it ended by itself (a graceful shutdown)
            self._emit(pod, "stopped", status=status)
        await self._stop_jibri(pod)
        self._pods.pop(pod.uid, None)
        if self._by_name.get((pod.namespace, pod.name)) == pod.uid:
            del self._by_name[(pod.namespace, pod.name)]
        log.info("pod %s/%s on %s stopped", pod.namespace, pod.name, pod.ip)
        if still_exists:
            await self._finalize(pod.namespace, pod.name, pod.uid)

    @staticmethod
    async def _until(step: asyncio.Future[Any], pod: _Pod, deadline: float) -> None:
        """Wait for ``step`` until ``deadline``, or until the pod is gone from the API."""
        killed = asyncio.ensure_future(pod.killed.wait())
        try:
            await asyncio.wait(
                {step, killed},
                timeout=max(0.0, deadline - asyncio.get_running_loop().time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            killed.cancel()

    async def _stop_jibri(self, pod: _Pod) -> None:
        if pod.runner is not None and not pod.stopped.is_set():
            try:
                await pod.runner.close()
            except Exception:
                log.exception("stopping the Jibri of pod %s/%s failed", pod.namespace, pod.name)
            self._runners.discard(pod.runner)
        if pod.manifest is not None and not pod.stopped.is_set():
            await self.real_jibris.release(pod.uid)  # its network namespace
        pod.stopped.set()

    async def _finalize(self, namespace: str, name: str, uid: str) -> None:
        """Remove a terminating pod whose containers are gone (grace period 0, this uid only).

        Retried while the API server is unreachable or answers 5xx or 429 (it may be
        restarting): a pod left terminating would never go away.
        """
        for attempt in range(1, FINALIZE_ATTEMPTS + 1):
            try:
                await self._core.delete_namespaced_pod(
                    name,
                    namespace,
                    body=V1DeleteOptions(
                        grace_period_seconds=0, preconditions=V1Preconditions(uid=uid)
                    ),
                    _request_timeout=CALL_TIMEOUT_S,
                )
                return
            except ApiException as exc:
                if exc.status in (404, 409):  # gone already, or a newer pod has the name
                    return
                transient = exc.status == 429 or (exc.status or 0) >= 500
                if not transient or attempt == FINALIZE_ATTEMPTS:
                    log.warning("finalizing pod %s/%s failed: %s", namespace, name, exc.reason)
                    return
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt == FINALIZE_ATTEMPTS:
                    log.warning("finalizing pod %s/%s failed: %r", namespace, name, exc)
                    return
            await asyncio.sleep(min(5.0, 0.2 * 2**attempt))


# --------------------------------------------------------------------------------------------
# In a thread of its own


class KubeletThread:
    """A `FakeKubelet` running in its own event loop in a background thread.

    Lookups are plain calls; anything async on the kubelet or a Jibri goes through `call`,
    which runs a coroutine in the kubelet's loop and returns its result.
    """

    def __init__(self, kubelet_factory: Callable[[], FakeKubelet]) -> None:
        self._factory = kubelet_factory
        self._loop = asyncio.new_event_loop()
        self._ready: Future[FakeKubelet] = Future()
        self._stop_requested: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="fake-kubelet", daemon=True)

    @property
    def kubelet(self) -> FakeKubelet:
        return self._ready.result()

    def start(self, timeout: float = 60) -> Self:
        self._thread.start()
        try:
            self._ready.result(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        """Run `coro` in the kubelet's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def ip_of(self, name: str, namespace: str | None = None) -> str:
        return self.call(_const(lambda: self.kubelet.ip_of(name, namespace)))

    def jibri(self, name: str, namespace: str | None = None) -> SimJibri:
        return self.call(_const(lambda: self.kubelet.jibri(name, namespace)))

    def endpoint_of(self, name: str, namespace: str | None = None) -> tuple[str, int | None]:
        return self.call(_const(lambda: self.kubelet.endpoint_of(name, namespace)))

    def running(self) -> dict[str, str]:
        return self.call(_const(self.kubelet.running))

    def crash_loop(self, name: str, namespace: str | None = None) -> None:
        self.call(_const(lambda: self.kubelet.crash_loop(name, namespace)))

    def wait_running(self, name: str, namespace: str | None = None, *, timeout: float = 30) -> str:
        return self.call(
            asyncio.wait_for(self.kubelet.wait_running(name, namespace), timeout),
            timeout=timeout + 5,
        )

    def stop(self, timeout: float = 60) -> None:
        if self._thread.is_alive():
            stop = self._stop_requested
            if stop is not None:
                self._loop.call_soon_threadsafe(stop.set)
            self._thread.join(timeout)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                log.exception("the fake kubelet thread failed")
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            asyncio.set_event_loop(None)

    async def _serve(self) -> None:
        self._stop_requested = asyncio.Event()
        kubelet = self._factory()
        await kubelet.start()
        try:
            self._ready.set_result(kubelet)
            await self._stop_requested.wait()
        finally:
            await kubelet.stop()


async def _const(get: Callable[[], T]) -> T:
    return get()


@contextlib.contextmanager
def run_in_thread(
    kubeconfig: str | os.PathLike[str],
    namespace: str | None,
    *,
    health_port_env: str = "SIM_JIBRI_PORT",
    ready_delay: float = 0.0,
) -> Iterator[KubeletThread]:
    """Run a `FakeKubelet` in a background thread for the duration of the `with` block."""
    path = Path(kubeconfig)
    thread = KubeletThread(
        lambda: FakeKubelet(
            path, namespace, health_port_env=health_port_env, ready_delay=ready_delay
        )
    ).start()
    try:
        yield thread
    finally:
        thread.stop()


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.kubelet",
        description="Run pods (and simulated Jibris) on loopback addresses until Ctrl-C.",
    )
    parser.add_argument("--kubeconfig", required=True, type=Path, help="an admin kubeconfig")
    parser.add_argument("--namespace", help="watch only this namespace (default: all)")
    parser.add_argument("--health-port-env", default="SIM_JIBRI_PORT")
    parser.add_argument(
        "--ready-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=f"start to Ready for pods that do not set {READY_DELAY_ENV} (default 0)",
    )
    args = parser.parse_args(argv)
    if not math.isfinite(args.ready_delay) or args.ready_delay < 0:
        parser.error("--ready-delay: expected seconds, a number >= 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with FakeKubelet(
            args.kubeconfig,
            args.namespace,
            health_port_env=args.health_port_env,
            ready_delay=args.ready_delay,
        ):
            log.info("watching pods in %s", args.namespace or "all namespaces")
            await stop.wait()

    # uvloop, as the controller runs on: the simulated Jibris answer every probe of a sweep, and
    # on asyncio's own loop their CPU, not the controller's, would set the sweep's pace.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
