"""How many spares a JibriPool wants now: one pure function, `decide_pool`.

The pool's Deployment holds only spares (a busy Jibri is detached from it), so the spare count
the pool wants is the Deployment's ``replicas``. The value is built in this order, and the
`Bound` that set it last is reported:

1. ``minSpare``, raised by any schedule window active at ``now`` (``schedule``);
2. raised by the demand policy, if configured and the lead time is known: the reactive
   estimate of the measured start rate (``demand``), or, with the forecast on in ``Apply``
   mode, the forecast's spares (``forecast``; ``demand`` while it has no history to go by);
3. capped by ``maxSpare`` (``maxSpare``) and by the budget ``maxTotal - busy`` (``budget``).

Raising happens at once. Lowering waits: only after the wanted value has stayed below the
current replicas for ``scaleDownDelaySeconds`` (hysteresis, like an HPA's scale-down
stabilization). The two caps are the exception: ``maxSpare`` and the budget are limits, not
wishes, so replicas above them come down at once.

A schedule window's duration is elapsed time from its start (computed in UTC), and its start
follows cron in the window's time zone: a start in the hour skipped by a DST change fires at
the first minute after the gap, a start in the repeated hour fires once (cronsim's semantics,
which are Debian cron's).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from jibri_pod_controller.core.demand import lead_time, spares_for_demand
from jibri_pod_controller.core.forecast import Basis, ForecastError, ForecastSpares, Season
from jibri_pod_controller.core.pods import PodFacts, has_labels
from jibri_pod_controller.core.selectors import Selector

ANNOTATION_DETACHED_FROM = "jibri-pod-controller/detached-from"
"""The Deployment a pod was detached from, recorded with the detach, so a busy pod is still
counted for the pool of that Deployment once its labels no longer match the selector."""


class PoolSpecError(ValueError):
    """A JibriPool spec that the schema let through but that cannot be used (a cron expression
    or a time zone that does not parse)."""


MAX_HISTORY_WEEKS = 4
"""The longest history a forecast keeps (the CRD's maximum): four weeks of a busy pool stay
well under the etcd object limit (docs/pools.md gives the sizes)."""
MAX_REGIONS = 4


@dataclass(frozen=True)
class ScheduleWindow:
    start: str
    """A five-field cron expression, in ``time_zone``."""
    duration_minutes: int
    min_spare: int
    time_zone: str = "UTC"

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise PoolSpecError(f"schedule timeZone {self.time_zone!r} is unknown") from exc
        try:
            CronSim(self.start, datetime.now(ZoneInfo(self.time_zone)))
        except CronSimError as exc:
            raise PoolSpecError(f"schedule start {self.start!r} is not cron: {exc}") from exc
        if self.duration_minutes <= 0:
            raise PoolSpecError("schedule durationMinutes must be positive")
        if self.min_spare < 0:
            raise PoolSpecError("schedule minSpare must not be negative")

    def active_at(self, now: datetime) -> bool:
        """True when the latest start at or before ``now`` is less than the duration ago."""
        # Look forward from the window's length ago: the window is active when the first start
        # after that point is not after ``now``. (Forward, because cronsim's reverse iteration
        # ignores the fold of a repeated hour.) The duration is elapsed time, so it is measured
        # in timestamps: a window across a DST change lasts exactly its minutes.
        length = self.duration_minutes * 60
        since = now.timestamp() - length
        origin = datetime.fromtimestamp(since - 60, UTC).astimezone(ZoneInfo(self.time_zone))
        for start in itertools.islice(CronSim(self.start, origin), 3):
            if start.timestamp() > since:
                return start.timestamp() <= now.timestamp()
        return False


class DemandMode(StrEnum):
    """What the forecast does with its spares."""

    RECOMMEND = "Recommend"
    """Shown in the status and the metrics only; the pool is sized as without the forecast."""
    APPLY = "Apply"
    """The forecast sizes the pool."""


@dataclass(frozen=True)
class ForecastSpec:
    """``spec.demand.forecast``: the pool's own history of starts, by local time of day."""

    weeks: int = 2
    """How many weeks of history are kept."""
    time_zone: str = "UTC"
    """The pool's time zone: meetings are booked, and start, on its wall clock."""
    regions: tuple[str, ...] = ()
    """Other time zones whose users record through the pool (their DST changes on other
    dates move their clusters against the pool's clock)."""


@dataclass(frozen=True)
class DemandSpec:
    shortfall_probability: float
    window_seconds: float
    startup_seconds: float = 0.0
    """The replacement lead time; 0 means: use the one measured from the pool's own pods."""
    forecast: ForecastSpec | None = None
    """None: the reactive estimate alone."""
    mode: DemandMode = DemandMode.RECOMMEND
    """What the forecast does (nothing without one)."""

    @property
    def forecast_applied(self) -> bool:
        return self.forecast is not None and self.mode is DemandMode.APPLY


@dataclass(frozen=True)
class PoolSpec:
    deployment_name: str
    min_spare: int
    max_spare: int
    max_total: int | None
    scale_down_delay_seconds: float
    schedule: tuple[ScheduleWindow, ...] = ()
    demand: DemandSpec | None = None


@dataclass(frozen=True)
class DeploymentFacts:
    """What a pool needs of its Deployment."""

    name: str
    uid: str
    replicas: int
    resource_version: str
    selector: Mapping[str, Any]
    template_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PoolObservation:
    busy: int
    """Detached Jibri pods of this pool that are not terminating."""
    spare_ready: int
    """Idle-labelled pods of the Deployment that are Ready."""
    starting: int
    """Idle-labelled pods of the Deployment that are not Ready yet."""
    replicas: int | None
    """The Deployment's ``spec.replicas``; None when the Deployment is missing."""
    start_rate: float = 0.0
    """Estimated recording starts per second."""
    lead_time: float | None = None
    """Measured creation-to-Ready seconds of recent replacements; None until measured."""
    forecast: ForecastSpares | None = None
    """What the forecast asks for now (core.forecast); None without a forecast or a lead
    time."""


@dataclass(frozen=True)
class PoolMemory:
    """What the last decision left behind; the controller keeps it in the JibriPool status."""

    desired: int | None = None
    below_since: datetime | None = None
    """Since when the wanted value has been below the current replicas (hysteresis)."""


class Bound(StrEnum):
    DEMAND = "demand"
    FORECAST = "forecast"
    MIN_SPARE = "minSpare"
    SCHEDULE = "schedule"
    MAX_SPARE = "maxSpare"
    BUDGET = "budget"


class Blocked(StrEnum):
    """Why a pool writes nothing at all."""

    DEPLOYMENT_MISSING = "DeploymentMissing"


@dataclass(frozen=True)
class PoolDecision:
    replicas: int | None
    """The replicas to write; None when nothing is to be written (unchanged, or blocked)."""
    bound: Bound
    """Which bound set ``wanted``."""
    memory: PoolMemory
    wanted: int = 0
    """The spare count the bounds ask for now, before hysteresis."""
    desired: int | None = None
    """The spare count the Deployment should have now (after hysteresis); None when blocked."""
    demand_spares: int | None = None
    """What the demand policy alone asks for (the forecast's spares when it is applied); None
    without a policy or a lead time."""
    lead_time: float | None = None
    """The lead time the demand policy used (configured or measured)."""
    budget_exhausted: bool = False
    """busy + what the other bounds want would exceed maxTotal."""
    spare_exhausted: bool = False
    """No Ready spare right now."""
    scale_down_at: datetime | None = None
    """When a held scale-down will happen, if one is held."""
    blocked: Blocked | None = None
    active_windows: tuple[int, ...] = field(default=())
    """Indexes of the schedule windows active at ``now``."""


def floor_at(spec: PoolSpec, now: datetime) -> tuple[int, Bound, tuple[int, ...]]:
    """minSpare raised by the schedule windows active at ``now``."""
    floor, bound = spec.min_spare, Bound.MIN_SPARE
    active = tuple(i for i, w in enumerate(spec.schedule) if w.active_at(now))
    for i in active:
        if spec.schedule[i].min_spare > floor:
            floor, bound = spec.schedule[i].min_spare, Bound.SCHEDULE
    return floor, bound, active


def demand_lead_time(demand: DemandSpec, measured: float | None) -> float | None:
    """The lead time the demand policy sizes for: ``startupSeconds`` when set, else the one
    measured from the pool's pods (None until measured)."""
    return demand.startup_seconds if demand.startup_seconds > 0 else measured


def decide_pool(
    spec: PoolSpec, observed: PoolObservation, *, now: datetime, last: PoolMemory
) -> PoolDecision:
    """The replicas a pool's Deployment should have now, and which bound decided them."""
    wanted, bound, active = floor_at(spec, now)

    demand_spares: int | None = None
    lead: float | None = None
    if spec.demand is not None:
        lead = demand_lead_time(spec.demand, observed.lead_time)
        if lead is not None:
            by = Bound.DEMAND
            if spec.demand.forecast_applied and observed.forecast is not None:
                demand_spares = observed.forecast.spares
                if observed.forecast.basis is Basis.HISTORY:
                    by = Bound.FORECAST
            else:
                demand_spares = spares_for_demand(
                    rate=observed.start_rate,
                    lead_time=lead,
                    shortfall_probability=spec.demand.shortfall_probability,
                )
            if demand_spares > wanted:
                wanted, bound = demand_spares, by

    cap = spec.max_spare
    if wanted > cap:
        wanted, bound = cap, Bound.MAX_SPARE
    budget_exhausted = False
    if spec.max_total is not None:
        room = max(0, spec.max_total - observed.busy)
        if wanted > room:
            wanted, bound, budget_exhausted = room, Bound.BUDGET, True
        cap = min(cap, room)

    spare_exhausted = observed.spare_ready == 0
    current = observed.replicas
    if current is None:
        return PoolDecision(
            replicas=None,
            bound=bound,
            memory=PoolMemory(desired=last.desired, below_since=None),
            wanted=wanted,
            desired=None,
            demand_spares=demand_spares,
            lead_time=lead,
            budget_exhausted=budget_exhausted,
            spare_exhausted=spare_exhausted,
            blocked=Blocked.DEPLOYMENT_MISSING,
            active_windows=active,
        )

    below_since: datetime | None = None
    scale_down_at: datetime | None = None
    if wanted >= current:
        desired = wanted
    else:
        held = min(current, cap)  # the limits apply at once
        if wanted >= held:
            desired = wanted
        else:
            below_since = last.below_since or now
            due = below_since + timedelta(seconds=max(0.0, spec.scale_down_delay_seconds))
            if now >= due:
                desired, below_since = wanted, None
            else:
                desired, scale_down_at = held, due

    return PoolDecision(
        replicas=desired if desired != current else None,
        bound=bound,
        memory=PoolMemory(desired=desired, below_since=below_since),
        wanted=wanted,
        desired=desired,
        demand_spares=demand_spares,
        lead_time=lead,
        budget_exhausted=budget_exhausted,
        spare_exhausted=spare_exhausted,
        scale_down_at=scale_down_at,
        active_windows=active,
    )


def _int(
    raw: Mapping[str, Any], key: str, default: int | None = None, *, within: str = "spec"
) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PoolSpecError(f"{within}.{key} must be an integer")
    return value


def _number(raw: Mapping[str, Any], key: str, default: float, *, within: str = "spec") -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PoolSpecError(f"{within}.{key} must be a number")
    return float(value)


def parse_pool_spec(raw: Mapping[str, Any]) -> PoolSpec:
    """A JibriPool's ``spec`` as a `PoolSpec`. The CRD schema already refuses most bad values
    at admission; this repeats the checks the controller relies on, and parses what CEL cannot
    (cron expressions, time zones)."""
    name = raw.get("deploymentName")
    if not isinstance(name, str) or not name:
        raise PoolSpecError("spec.deploymentName must be a non-empty string")
    min_spare = _int(raw, "minSpare", 0)
    max_spare = _int(raw, "maxSpare")
    max_total = _int(raw, "maxTotal") if raw.get("maxTotal") is not None else None
    if not 0 <= min_spare <= max_spare:
        raise PoolSpecError("spec.minSpare must be between 0 and spec.maxSpare")
    if max_total is not None and max_total < 0:
        raise PoolSpecError("spec.maxTotal must not be negative")
    delay = _number(raw, "scaleDownDelaySeconds", 300.0)
    if delay < 0:
        raise PoolSpecError("spec.scaleDownDelaySeconds must not be negative")
    windows = []
    for entry in raw.get("schedule") or ():
        if not isinstance(entry, Mapping):
            raise PoolSpecError("spec.schedule entries must be objects")
        start = entry.get("start")
        zone = entry.get("timeZone", "UTC")
        if not isinstance(start, str) or not isinstance(zone, str):
            raise PoolSpecError("spec.schedule[].start and timeZone must be strings")
        windows.append(
            ScheduleWindow(
                start=start,
                duration_minutes=_int(entry, "durationMinutes"),
                min_spare=_int(entry, "minSpare"),
                time_zone=zone,
            )
        )
    demand = None
    raw_demand = raw.get("demand")
    if raw_demand is not None:
        if not isinstance(raw_demand, Mapping):
            raise PoolSpecError("spec.demand must be an object")
        p = _number(raw_demand, "shortfallProbability", 0.01, within="spec.demand")
        window = _number(raw_demand, "windowSeconds", 900.0, within="spec.demand")
        startup = _number(raw_demand, "startupSeconds", 0.0, within="spec.demand")
        if not 0 < p < 1:
            raise PoolSpecError("spec.demand.shortfallProbability must be between 0 and 1")
        if window <= 0 or startup < 0:
            raise PoolSpecError("spec.demand windowSeconds must be > 0, startupSeconds >= 0")
        mode = raw_demand.get("mode", DemandMode.RECOMMEND.value)
        if mode not in {m.value for m in DemandMode}:
            raise PoolSpecError(f"spec.demand.mode {mode!r} must be Recommend or Apply")
        demand = DemandSpec(
            shortfall_probability=p,
            window_seconds=window,
            startup_seconds=startup,
            forecast=_forecast(raw_demand.get("forecast")),
            mode=DemandMode(mode),
        )
    return PoolSpec(
        deployment_name=name,
        min_spare=min_spare,
        max_spare=max_spare,
        max_total=max_total,
        scale_down_delay_seconds=delay,
        schedule=tuple(windows),
        demand=demand,
    )


def _zone(value: Any, field: str) -> str:
    """An IANA time zone, checked the way the forecast's clock will use it."""
    if not isinstance(value, str) or not value:
        raise PoolSpecError(f"{field} must be an IANA time zone name")
    try:
        Season(value)
    except ForecastError as exc:
        raise PoolSpecError(f"{field} {value!r} is not a known time zone") from exc
    return value


def _forecast(raw: Any) -> ForecastSpec | None:
    """``spec.demand.forecast``: None when absent or ``enabled: false``."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise PoolSpecError("spec.demand.forecast must be an object")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise PoolSpecError("spec.demand.forecast.enabled must be true or false")
    weeks = _int(raw, "historyWeeks", 2, within="spec.demand.forecast")
    if not 1 <= weeks <= MAX_HISTORY_WEEKS:
        raise PoolSpecError(
            f"spec.demand.forecast.historyWeeks must be between 1 and {MAX_HISTORY_WEEKS}"
        )
    zone = _zone(raw.get("timeZone", "UTC"), "spec.demand.forecast.timeZone")
    regions = raw.get("regions") or []
    if not isinstance(regions, list) or len(regions) > MAX_REGIONS:
        raise PoolSpecError(
            f"spec.demand.forecast.regions must be a list of at most {MAX_REGIONS} time zones"
        )
    names = tuple(
        _zone(name, f"spec.demand.forecast.regions[{i}]") for i, name in enumerate(regions)
    )
    if not enabled:
        return None
    return ForecastSpec(
        weeks=weeks, time_zone=zone, regions=tuple(sorted({n for n in names if n != zone}))
    )


def deployment_of(pod: PodFacts) -> str | None:
    """The Deployment that owns ``pod`` through its ReplicaSet, or None.

    A Deployment names its ReplicaSets ``<deployment>-<pod-template-hash>`` and labels their
    pods with that hash, so the name follows from the pod alone (no read, on any replica).
    """
    template_hash = pod.labels.get("pod-template-hash")
    if pod.owner_kind != "ReplicaSet" or not pod.owner_name or not template_hash:
        return None
    suffix = f"-{template_hash}"
    if not pod.owner_name.endswith(suffix) or len(pod.owner_name) == len(suffix):
        return None
    return pod.owner_name.removesuffix(suffix)


class PodIndex:
    """The pods of one snapshot, looked up by a Deployment's selector without walking them
    all for every pool: grouped once by the values of the selector's matchLabels keys."""

    def __init__(self, pods: list[PodFacts]) -> None:
        self.pods = pods
        self._groups: dict[tuple[str, ...], dict[tuple[str | None, ...], list[PodFacts]]] = {}

    def with_labels(self, wanted: Mapping[str, str]) -> list[PodFacts]:
        keys = tuple(sorted(wanted))
        return self._group(keys).get(tuple(wanted[k] for k in keys), [])

    def matching(self, selector: Selector) -> list[PodFacts]:
        """The pods ``selector`` matches."""
        wanted = selector.equalities()
        candidates = self.with_labels(wanted) if wanted else self.pods
        if len(wanted) == len(selector.requirements):
            return list(candidates)
        return [p for p in candidates if selector.matches(p.labels)]

    def _group(self, keys: tuple[str, ...]) -> dict[tuple[str | None, ...], list[PodFacts]]:
        group = self._groups.get(keys)
        if group is None:
            group = {}
            for pod in self.pods:
                group.setdefault(tuple(map(pod.labels.get, keys)), []).append(pod)
            self._groups[keys] = group
        return group


@dataclass(frozen=True)
class PoolPods:
    """A pool's pods, sorted by role."""

    spare_ready: tuple[PodFacts, ...]
    starting: tuple[PodFacts, ...]
    busy: tuple[PodFacts, ...]


def sort_pool_pods(
    *,
    selected: list[PodFacts],
    busy_labelled: list[PodFacts],
    deployment: str,
    busy_labels: Mapping[str, str],
) -> PoolPods:
    """``selected``: pods the Deployment's selector matches; ``busy_labelled``: pods carrying
    the busy labels. Terminating and finished pods count for nothing."""

    def live(pod: PodFacts) -> bool:
        return not pod.deleting and not pod.finished

    spares = [p for p in selected if live(p) and not has_labels(p.labels, busy_labels)]
    busy = [
        p
        for p in busy_labelled
        if live(p) and p.annotations.get(ANNOTATION_DETACHED_FROM) == deployment
    ]
    return PoolPods(
        spare_ready=tuple(p for p in spares if p.ready),
        starting=tuple(p for p in spares if not p.ready),
        busy=tuple(busy),
    )


def measured_lead_time(pods: PoolPods, *, quantile: float = 0.9) -> float | None:
    """Creation to Ready of the pool's pods (those whose Ready condition has not flipped since
    they started: a spare and a busy pod alike), at ``quantile``."""
    durations = [
        (p.ready_since - p.created).total_seconds()
        for p in (*pods.spare_ready, *pods.busy)
        if p.ready_since is not None and p.created is not None
    ]
    return lead_time(durations, quantile=quantile)
