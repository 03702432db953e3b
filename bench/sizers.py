"""The spare-count policies compared on a simulated day (bench/daysim.py plays the day).

- `Static`: the seed's model, ``replicas`` set by hand once. Every start detaches a pod and the
  ReplicaSet starts a replacement; nothing ever scales.
- `Hpa`: what a HorizontalPodAutoscaler on the Deployment does with a busy-ratio metric
  (busy / all Jibri pods that report, e.g. from Prometheus through an external-metrics adapter):
  its algorithm, ``desired = ceil(current x metric / target)`` with the 10% tolerance, on its
  15 s sync period, with its default behaviour (scale up at once, by at most max(4 pods, 100%)
  per 15 s; scale down to the highest recommendation of the last 300 s). The metric it reads is
  one sync period old (a scrape interval).
- `Pool`: the controller's own pool decision, `decide_pool`, with the start rate and lead time
  computed by `core.demand` exactly as the controller computes them, reconciled every few
  seconds and after each detach and delete. Without ``demand`` in its spec it is the
  min/max/schedule pool.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from bench.daysim import View
from jibri_pod_controller.core.demand import estimate_start_rate, lead_time
from jibri_pod_controller.core.pools import (
    Bound,
    PoolMemory,
    PoolObservation,
    PoolSpec,
    decide_pool,
)


@dataclass
class Static:
    spares: int
    name: str = ""
    period: float = math.inf
    on_events: bool = False

    def __post_init__(self) -> None:
        self.name = self.name or f"static {self.spares}"

    def initial(self) -> int:
        return self.spares

    def reconcile(self, view: View) -> int | None:
        return None


@dataclass
class Hpa:
    target: float
    """The busy ratio aimed at, e.g. 0.7."""
    min_replicas: int = 2
    max_replicas: int = 100
    name: str = ""
    period: float = 15.0
    on_events: bool = False
    tolerance: float = 0.1
    down_window: float = 300.0
    _metric: float | None = None
    _history: deque[tuple[float, int]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.name = self.name or f"HPA busy {self.target:.0%}"

    def initial(self) -> int:
        return self.min_replicas

    def reconcile(self, view: View) -> int | None:
        reporting = view.busy + view.spare_ready  # spare_ready includes the claimed
        busy = view.busy + view.claimed
        sample = busy / reporting if reporting else (1.0 if busy else 0.0)
        metric, self._metric = self._metric, sample
        if metric is None:
            return None
        current = view.replicas
        ratio = metric / self.target
        recommended = current if abs(ratio - 1.0) <= self.tolerance else math.ceil(current * ratio)
        recommended = min(self.max_replicas, max(self.min_replicas, recommended))
        self._history.append((view.t, recommended))
        while self._history and self._history[0][0] < view.t - self.down_window:
            self._history.popleft()
        down = max(r for _, r in self._history)
        if recommended > current:
            desired = min(recommended, max(current + 4, current * 2))
        elif down < current:
            desired = down
        else:
            desired = current
        return min(self.max_replicas, max(self.min_replicas, desired))


@dataclass
class Pool:
    spec: PoolSpec
    name: str
    period: float = 5.0
    on_events: bool = True
    memory: PoolMemory = field(default_factory=PoolMemory)
    bounds: dict[str, float] = field(default_factory=dict)
    """Seconds each bound decided the value."""
    _last: tuple[float, Bound] | None = None

    def initial(self) -> int:
        return self.spec.min_spare

    def reconcile(self, view: View) -> int | None:
        demand = self.spec.demand
        rate = (
            0.0
            if demand is None
            else estimate_start_rate(view.detaches, now=view.t, window=demand.window_seconds)
        )
        observed = PoolObservation(
            busy=view.busy,
            spare_ready=view.spare_ready,
            starting=view.starting,
            replicas=view.replicas,
            start_rate=rate,
            lead_time=lead_time(view.lead_times),
        )
        decision = decide_pool(self.spec, observed, now=view.now, last=self.memory)
        self.memory = decision.memory
        if self._last is not None:
            since, bound = self._last
            self.bounds[bound.value] = self.bounds.get(bound.value, 0.0) + view.t - since
        self._last = (view.t, decision.bound)
        return decision.replicas
