"""The state of a chaos run in progress: what it recorded so far (the history's raw material),
its replicas, and the generators its streams draw from."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s

from testbed.chaos.plan import HAND, Size
from testbed.chaoscheck import Exit, Forged, Probe, Window
from testbed.cluster import IDLE_LABELS, ControllerProcess
from testbed.controlplane import ControlPlane
from testbed.faultproxy import FaultProxy
from testbed.kubelet import FakeKubelet
from testbed.simjibri import BusyStatus, HealthMode, JwtSigning, SimJibri


def has_labels(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def jibri_group(labels: Mapping[str, str]) -> str:
    """``hand``, or the pool whose Deployment made the pod (its ``pool`` label)."""
    return labels.get("pool", HAND)


@dataclass
class Replica:
    process: ControllerProcess
    expect_exit: str = ""
    """What the run just did to it (``sigkill``/``sigterm``), so an exit is expected."""
    down_since: float | None = None
    stopped: bool = False


@dataclass
class Run:
    seed: int
    size: Size
    out: Path
    say: Callable[[str], None]
    faults: list[Window] = field(default_factory=list)
    down: list[Window] = field(default_factory=list)
    facts: list[dict[str, Any]] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    forged: list[Forged] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    lost_busy: set[str] = field(default_factory=set)
    resend_died: set[str] = field(default_factory=set)
    fates: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    refused_by: Counter[str] = field(default_factory=Counter)
    """Recordings turned away (no spare), by group: ``hand`` or a pool's name."""
    ambushed: int = 0
    """Recordings started silently on a pool's spare a moment before its scale-down."""
    started_at: float = 0.0
    commit: str = ""
    """The commit the run was made on (``-dirty`` when the work tree had changes)."""

    def __post_init__(self) -> None:
        self.replicas: dict[str, Replica] = {}
        self.used: set[str] = set()
        self.jibris: dict[str, SimJibri] = {}
        """Every Jibri a recording was played on (kept after its pod is gone)."""
        self.extra: set[asyncio.Task[None]] = set()
        """Recordings started by the pool streams, awaited before the run recovers."""
        self.labels: dict[str, dict[str, str]] = {}
        self.running = True
        self.kubelet: FakeKubelet | None = None
        self.proxy: FaultProxy | None = None
        self.plane: ControlPlane | None = None
        self.admin: k8s.ApiClient | None = None
        self.signing: JwtSigning | None = None
        self.bad_signing: JwtSigning | None = None

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}/{name}")

    def fault(self, kind: str, start: float, end: float, target: str = "") -> None:
        self.faults.append(Window(kind, start, end, target))
        self.say(
            f"fault {kind} {target} {start - self.started_at:.1f}..{end - self.started_at:.1f} s"
        )

    def on_fact(self, fact: dict[str, Any]) -> None:
        self.facts.append(fact)
        if fact["event"] in ("started", "labels"):
            self.labels[fact["pod"]] = fact["labels"]
        elif fact["event"] == "stopped":
            self.labels.pop(fact["pod"], None)

    def spares(self, group: str = HAND) -> list[str]:
        """Idle-labelled pods of ``group`` whose Jibri is up, IDLE and answers normally."""
        assert self.kubelet is not None
        names = []
        for name in self.kubelet.running():
            labels = self.labels.get(name, {})
            if name in self.used or not has_labels(labels, IDLE_LABELS):
                continue
            if labels.get("pool", HAND) != group:
                continue
            try:
                jibri = self.kubelet.jibri(name)
            except KeyError:
                continue
            if (
                jibri.busy_status is BusyStatus.IDLE
                and jibri.health_mode is HealthMode.NORMAL
                and not jibri.exiting
            ):
                names.append(name)
        return sorted(names)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self.extra.add(task)
        task.add_done_callback(self.extra.discard)
