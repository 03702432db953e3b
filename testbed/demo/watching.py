"""What the demo sees of the cluster and the controllers: every pod of its namespace through a
list and a watch (`testbed.observing`), counted as it changes, and the controllers' log lines
as they are written."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client as k8s

from testbed.cluster import BUSY_LABELS, IDLE_LABELS, ControllerProcess
from testbed.demo.console import Console
from testbed.demo.outcome import Outcome, Sample
from testbed.demo.plan import NAMESPACE, SPARES
from testbed.observing import Changed, Interrupted, Listed, LogTail, watch_pods

log = logging.getLogger("testbed.demo")


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    labels: Mapping[str, str]
    ready: bool
    deleting: bool
    ip: str | None

    @property
    def spare(self) -> bool:
        return _has(self.labels, IDLE_LABELS) and self.ready and not self.deleting

    @property
    def busy(self) -> bool:
        return _has(self.labels, BUSY_LABELS) and not self.deleting


def _has(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def _pod_view(obj: Mapping[str, Any]) -> PodView:
    meta, status = obj["metadata"], obj.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    return PodView(
        name=meta["name"],
        uid=meta["uid"],
        labels=dict(meta.get("labels") or {}),
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
        ip=status.get("podIP"),
    )


class PodWatch:
    """Keeps every pod of the namespace in memory (list, then watch) and samples the counts."""

    def __init__(
        self,
        api: k8s.ApiClient,
        console: Console,
        outcome: Outcome,
        on_leaving: Callable[[PodView], None],
    ) -> None:
        self._api = api
        self._console = console
        self._outcome = outcome
        self._on_leaving = on_leaving
        """Told of each pod that gets a deletionTimestamp or disappears."""
        self.pods: dict[str, PodView] = {}
        self.synced = asyncio.Event()
        self.changed = asyncio.Event()

    def counts(self) -> tuple[int, int, int]:
        pods = self.pods.values()
        return sum(p.spare for p in pods), sum(p.busy for p in pods), len(self.pods)

    def spares(self) -> list[PodView]:
        return sorted((p for p in self.pods.values() if p.spare and p.ip), key=lambda p: p.name)

    def _sample(self) -> None:
        if self._console.t0 is None:
            return
        spare, busy, total = self.counts()
        t = self._console.now()
        samples = self._outcome.samples
        if not samples or (samples[-1].spare, samples[-1].busy, samples[-1].total) != (
            spare,
            busy,
            total,
        ):
            samples.append(Sample(t, spare, busy, total))
        if self._outcome.ramp_done is None and spare >= SPARES:
            self._outcome.ramp_done = t
        self.changed.set()

    def _update(self, obj: Mapping[str, Any], deleted: bool) -> None:
        view = _pod_view(obj)
        before = self.pods.get(view.uid)
        if deleted:
            self.pods.pop(view.uid, None)
        else:
            self.pods[view.uid] = view
        if (deleted or view.deleting) and not (before is not None and before.deleting):
            self._on_leaving(view)
        self._sample()

    async def run(self) -> None:
        async with watch_pods(self._api, NAMESPACE, timeout_seconds=300) as events:
            async for event in events:
                match event:
                    case Listed(pods=pods):
                        for uid in event.missing(list(self.pods)):
                            self._on_leaving(self.pods.pop(uid))
                        for pod in pods:
                            self._update(pod, deleted=False)
                        self.synced.set()
                    case Changed(pod=pod):
                        self._update(pod, deleted=event.deleted)
                    case Interrupted(reason="failed", error=error):
                        log.warning("pod watch failed (%r); watching again", error)


class ControllerLogs:
    """The controllers' JSON log lines as they are written."""

    def __init__(self) -> None:
        self._tails: dict[str, LogTail] = {}

    def new_entries(
        self, controllers: Sequence[ControllerProcess]
    ) -> list[tuple[str, dict[str, Any]]]:
        """(replica, line) of every line written since the last call, all replicas' in the
        order they were written (the timestamps are ISO, UTC)."""
        batch: list[tuple[str, str, dict[str, Any]]] = []
        for controller in controllers:
            tail = self._tails.setdefault(controller.name, LogTail(controller.log_path))
            batch.extend((str(e.get("ts", "")), controller.name, e) for e in tail.new_entries())
        return [(replica, entry) for _, replica, entry in sorted(batch, key=lambda item: item[0])]
