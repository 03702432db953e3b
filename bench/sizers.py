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
from dataclasses import dataclass, field, replace

from bench.daysim import View
from jibri_pod_controller.core.demand import estimate_start_rate, lead_time, spares_for_demand
from jibri_pod_controller.core.forecast import (
    REAL_DAY,
    Basis,
    ForecastState,
    History,
    OutlookRequest,
    Season,
    Tuning,
    forecast_round,
    record,
    reference_samples,
)
from jibri_pod_controller.core.pools import (
    Bound,
    DemandMode,
    PoolMemory,
    PoolObservation,
    PoolSpec,
    decide_pool,
    demand_lead_time,
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


@dataclass
class Forecasting:
    """A pool sized from its own history (core.forecast) as well as from its recent starts,
    through the controller's own calls: `forecast_round` (the history recorded from the
    detaches as the controller sees them, the outlook renewed when it no longer holds, the
    spares for the moment) and `decide_pool` with the forecast applied (bounds, caps,
    hysteresis; the bound is ``forecast``, or ``demand`` while there is no history). The one
    difference: the controller builds an outlook off its event loop and uses it from its next
    round; here it is built at once. ``spec.demand`` gives the accepted shortfall probability,
    the reactive window and the forecast (its time zone, weeks and regions)."""

    spec: PoolSpec
    name: str
    day_seconds: float = REAL_DAY
    """The length of the forecast's day (a compressed day for a compressed scenario)."""
    tuning: Tuning = field(default_factory=Tuning)
    period: float = 5.0
    on_events: bool = True
    memory: PoolMemory = field(default_factory=PoolMemory)
    bounds: dict[str, float] = field(default_factory=dict)
    basis: dict[str, float] = field(default_factory=dict)
    """Seconds each `Basis` was in force."""
    state: ForecastState | None = None
    _last: tuple[float, str, str] | None = None

    def __post_init__(self) -> None:
        demand = self.spec.demand
        assert demand is not None, "a forecasting pool needs spec.demand"
        assert demand.forecast is not None, "a forecasting pool needs spec.demand.forecast"
        self.spec = replace(self.spec, demand=replace(demand, mode=DemandMode.APPLY))

    @property
    def season(self) -> Season:
        assert self.spec.demand is not None
        assert self.spec.demand.forecast is not None
        return Season(self.spec.demand.forecast.time_zone, day_seconds=self.day_seconds)

    def initial(self) -> int:
        return self.spec.min_spare

    def reconcile(self, view: View) -> int | None:
        demand = self.spec.demand
        assert demand is not None
        assert demand.forecast is not None
        now = view.zero + view.t
        starts: dict[str, float] = {}
        seen: dict[float, int] = {}
        for t in view.detaches:  # a detach's identity: its time, and which of equal times
            same = seen[t] = seen.get(t, -1) + 1
            starts[f"{t!r}#{same}"] = view.zero + t
        measured = lead_time(view.lead_times)
        step = forecast_round(
            self.state or ForecastState(History(self.season)),
            starts=starts,
            now=now,
            weeks=demand.forecast.weeks,
            exhausted=view.spare_ready == 0,
            lead_time=demand_lead_time(demand, measured),
            shortfall_probability=demand.shortfall_probability,
            window=demand.window_seconds,
            regions=demand.forecast.regions,
            tuning=self.tuning,
            build=OutlookRequest.build,
        )
        self.state = step.state
        observed = PoolObservation(
            busy=view.busy,
            spare_ready=view.spare_ready,
            starting=view.starting,
            replicas=view.replicas,
            lead_time=measured,
            forecast=step.answer,
        )
        decision = decide_pool(self.spec, observed, now=view.now, last=self.memory)
        self.memory = decision.memory
        basis = (step.answer.basis if step.answer is not None else Basis.NO_HISTORY).value
        if self._last is not None:
            since, last_bound, last_basis = self._last
            self.bounds[last_bound] = self.bounds.get(last_bound, 0.0) + view.t - since
            self.basis[last_basis] = self.basis.get(last_basis, 0.0) + view.t - since
        self._last = (view.t, decision.bound.value, basis)
        return decision.replicas


@dataclass
class Prototype:
    """The rough forecast this design started from, kept for comparison: at each moment, the
    most starts within the lead time plus a minute after the same local time on the last five
    days of the same kind, times 1.5, or the reactive Poisson estimate (core.demand) if that
    asks for more. Read from the same history (core.forecast) as `Forecasting`."""

    spec: PoolSpec
    name: str
    season: Season = field(default_factory=Season)
    period: float = 5.0
    on_events: bool = True
    memory: PoolMemory = field(default_factory=PoolMemory)
    bounds: dict[str, float] = field(default_factory=dict)
    history: History | None = None
    _cached: tuple[int, int, list[int]] | None = None
    """First bucket, window in buckets, and the forecast per bucket from there."""

    def initial(self) -> int:
        return self.spec.min_spare

    def reconcile(self, view: View) -> int | None:
        demand = self.spec.demand
        assert demand is not None, "the prototype needs spec.demand"
        now = view.zero + view.t
        starts = [view.zero + t for t in view.detaches]
        history = record(
            self.history or History(self.season),
            starts,
            now=now,
            weeks=2,
            exhausted=view.spare_ready == 0,
        )
        self.history = history
        lead = demand.startup_seconds or lead_time(view.lead_times)
        floor = self.spec.min_spare
        if lead is not None:
            season = self.season
            bucket = season.bucket(now)
            window = math.ceil((lead + 60.0) / season.bucket_seconds)
            cached = self._cached
            if (
                cached is None
                or cached[1] != window
                or not cached[0] <= bucket < cached[0] + len(cached[2])
            ):
                per_day = season.buckets_per_day
                last = min(bucket + per_day // 24, (bucket // per_day + 1) * per_day - 1)
                samples = reference_samples(
                    history, first=bucket, last=last, window=window, ahead=0, slack=0
                )
                values = [math.ceil(1.5 * max(d[-5:])) if d else 0 for d in samples.daily]
                cached = self._cached = (bucket, window, values[: last - bucket + 1])
            forecast = cached[2][bucket - cached[0]]
            rate = estimate_start_rate(starts, now=now, window=demand.window_seconds)
            reactive = spares_for_demand(
                rate=rate, lead_time=lead, shortfall_probability=demand.shortfall_probability
            )
            floor = max(floor, forecast, reactive)
        observed = PoolObservation(
            busy=view.busy,
            spare_ready=view.spare_ready,
            starting=view.starting,
            replicas=view.replicas,
        )
        decision = decide_pool(
            replace(self.spec, min_spare=floor, demand=None),
            observed,
            now=view.now,
            last=self.memory,
        )
        self.memory = decision.memory
        return decision.replicas
