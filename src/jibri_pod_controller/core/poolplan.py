"""One plan per JibriPool and round: every decision the pool loop applies, in one pure call.

As Agones' fleet autoscaler computes and its controller only applies: the loop reads (the
pool, its Deployment, its pods, the answers of the spares it was told to probe), calls
`plan_pool`, and carries the plan out: detaches, graceful shutdowns, deletion-cost marks, the
scale write, the status, the Events. It clamps nothing, retries with no arithmetic of its own
and rebuilds no memory.

The plan is built in this order:

1. the spec parsed, the Deployment checked (missing, a selector that still matches the busy
   labels, an HPA on it): any problem plans a status and nothing else;
2. the pods counted (a spare asked to shut down is leaving, not a spare);
3. the demand input (`DemandInput`: the start rate and the lead time the demand policy sizes
   from; the measured one unless the caller gives another) and, with ``demand.forecast``,
   the forecast's round (`core.forecast.forecast_round`: the starts recorded in the pool's
   history, the spares it forecasts, the outlook to build next);
4. the spare count wanted (`decide_pool`: bounds and hysteresis), and in ``Recommend`` mode
   also the count the forecast would have asked for;
5. the way there (`plan_scale_down`: what the ReplicaSet will delete and what makes it safe);
6. the status, the conditions, the Events of the transitions, the memory to keep, and when
   to look again.

What a leader remembers of a pool (`TermMemory`) belongs to its Lease term: at a new term it
is rebuilt from the pool's status (`TermMemory.from_status`), never carried over. The forecast's
history is stored in the status too (``startHistory``, encoded), at most every
`core.forecast.store_interval` (five minutes of a real day) and when a leader shuts down
(`stored_history`); the starts since the last store stay in ``recentStarts`` meanwhile, so a
new leader finds every start in one or the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from jibri_pod_controller.core.decisions import ProbeResult
from jibri_pod_controller.core.demand import estimate_start_rate
from jibri_pod_controller.core.forecast import (
    REAL_DAY,
    Basis,
    ForecastError,
    ForecastSpares,
    ForecastState,
    History,
    Outlook,
    OutlookRequest,
    Season,
    decode,
    encode,
    forecast_round,
    references,
    store_interval,
)
from jibri_pod_controller.core.pods import ANNOTATION_BUSY_SINCE, PodFacts
from jibri_pod_controller.core.pools import (
    Bound,
    DemandMode,
    DeploymentFacts,
    PoolDecision,
    PoolMemory,
    PoolObservation,
    PoolPods,
    PoolSpec,
    PoolSpecError,
    decide_pool,
    demand_lead_time,
    measured_lead_time,
    parse_pool_spec,
    sort_pool_pods,
)
from jibri_pod_controller.core.scaledown import (
    CONFIRM_STEP,
    Asked,
    Blocked,
    ScaleDown,
    ShutdownOutcome,
    Standing,
    plan_scale_down,
)
from jibri_pod_controller.core.selectors import SelectorError, label_selector

MAX_RECENT_STARTS = 2000
"""The CRD's maxItems for status.recentStarts."""
MAX_STORED_HISTORY = 1024 * 1024
"""The CRD's maxLength for status.startHistory: a longer one is not stored (the etcd object
limit is about 1.5 MiB); a pool of 1,000 starts a day keeps about 11 KiB."""


class Problem(StrEnum):
    """Why a pool cannot be reconciled: the Ready condition's reason; nothing is written."""

    INVALID_SPEC = "InvalidSpec"
    DEPLOYMENT_MISSING = "DeploymentMissing"
    SELECTOR_MATCHES_BUSY = "SelectorMatchesBusyLabels"
    HPA_CONFLICT = "ReplicasOwnedByHPA"


class ConditionType(StrEnum):
    READY = "Ready"
    BUDGET_EXHAUSTED = "BudgetExhausted"
    SPARE_EXHAUSTED = "SpareExhausted"
    SCALE_DOWN_BLOCKED = "ScaleDownBlocked"
    GRACEFUL_SCALE_DOWN = "GracefulScaleDown"
    FORECAST = "Forecast"


class ForecastReason(StrEnum):
    """The Forecast condition's reasons."""

    HISTORY = "History"
    NO_HISTORY = "NoHistory"
    LEAD_TIME_UNKNOWN = "LeadTimeUnknown"


class Graceful(StrEnum):
    """The GracefulScaleDown condition's reasons."""

    USED = "InternalApi"
    OFF = "InternalApiOff"
    UNREACHABLE = "InternalApiUnreachable"


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class DemandInput:
    """What the demand policy sizes the pool from: the seam where a forecast plugs in."""

    rate: float
    """Recording starts per second to plan for."""
    lead_time: float | None
    """Seconds from asking for a replacement to its being Ready; None while unknown."""


@dataclass(frozen=True)
class PoolRead:
    """What the loop read for one pool this round (no probe answers: see `plan_pool`)."""

    name: str
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    """The pool's status as stored (this controller's own writing)."""
    deployment: DeploymentFacts | None
    hpa_targets: frozenset[str] = frozenset()
    selected: tuple[PodFacts, ...] = ()
    """The pods the Deployment's selector matches."""
    busy_labelled: tuple[PodFacts, ...] = ()
    """Pods carrying the busy labels (any pool's)."""


@dataclass(frozen=True)
class TermMemory:
    """What the leader keeps of a pool between rounds, within one Lease term."""

    sizing: PoolMemory = field(default_factory=PoolMemory)
    starts: Mapping[str, datetime] = field(default_factory=dict)
    """Recording starts by pod uid (the demand policy's input; kept in the status)."""
    asked: Mapping[str, Asked] = field(default_factory=dict)
    """Graceful shutdowns asked this term, by pod uid (only live pods are kept)."""
    no_api: str | None = None
    """Why the last scale-down could not use the internal API; None when it could."""
    blocked: tuple[str, str] | None = None
    """The (reason, message) a scale-down waits for, and since when (`blocked_since`)."""
    blocked_since: datetime | None = None
    forecast: ForecastState | None = None
    """The forecast's history and outlook; None until the first round with the forecast on
    (then read from ``status.startHistory``)."""
    history_stored_at: datetime | None = None
    """When the history was last stored in the status."""
    forecast_note: str = ""
    """Why the history was begun anew this term (shown until it has a reference day)."""

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> TermMemory:
        """The memory a new term starts from: what the pool's status says, nothing else."""
        desired = status.get("desiredSpare")
        starts: dict[str, datetime] = {}
        for entry in status.get("recentStarts") or ():
            at = parse_time(entry.get("at")) if isinstance(entry, Mapping) else None
            if at is not None:
                starts[str(entry.get("uid"))] = at
        graceful = condition_of(status, ConditionType.GRACEFUL_SCALE_DOWN)
        no_api = None
        if graceful is not None and graceful.get("reason") == Graceful.UNREACHABLE:
            no_api = str(graceful.get("message") or "")
        held = condition_of(status, ConditionType.SCALE_DOWN_BLOCKED)
        blocked, blocked_since = None, None
        if held is not None and held.get("status") == "True":
            blocked = (str(held.get("reason") or ""), str(held.get("message") or ""))
            blocked_since = parse_time(held.get("lastTransitionTime"))
        forecast = status.get("forecast")
        stored_at = None
        if isinstance(forecast, Mapping):
            stored_at = parse_time(forecast.get("historyStoredAt"))
        return cls(
            sizing=PoolMemory(
                desired=desired if isinstance(desired, int) else None,
                below_since=parse_time(status.get("belowSince")),
            ),
            starts=starts,
            no_api=no_api,
            blocked=blocked,
            blocked_since=blocked_since,
            history_stored_at=stored_at,
        )

    def with_outlook(self, outlook: Outlook) -> TermMemory:
        """The memory with an outlook built off the loop since the round that asked for it."""
        if self.forecast is None:
            return self
        return replace(self, forecast=self.forecast.with_outlook(outlook))

    def with_asked(self, outcomes: Mapping[str, Asked]) -> TermMemory:
        """The memory with the answers to the graceful shutdowns just asked."""
        if not outcomes:
            return self
        return replace(self, asked={**self.asked, **outcomes})


@dataclass(frozen=True)
class PoolEvent:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class ForecastReport:
    """The forecast's figures of a round, for the status, the metrics and the log."""

    mode: DemandMode
    answer: ForecastSpares | None
    """None while the lead time is unknown."""
    recommended: int
    """The spares the pool would want with the forecast applied (bounds included)."""
    recommended_bound: Bound
    reference_days: int
    history_days: int
    history_starts: int
    history_age: float
    """Seconds since the history's first wholly recorded day began (0 without one)."""
    history_bytes: int
    """The size of the history as stored in the status."""
    stored: bool
    """This round stores the history."""


@dataclass(frozen=True)
class PoolPlan:
    """Everything one pool's round does, decided."""

    pool: str
    problem: Problem | None = None
    detail: str = ""
    spec: PoolSpec | None = None
    decision: PoolDecision | None = None
    observation: PoolObservation | None = None
    probe: tuple[PodFacts, ...] = ()
    """Probe these spares and plan again with their answers; nothing else is planned yet."""
    replicas: int | None = None
    """The replicas to write (with the Deployment's resourceVersion); None when unchanged."""
    deployment: DeploymentFacts | None = None
    """The Deployment as read."""
    detach: tuple[PodFacts, ...] = ()
    shut_down: tuple[PodFacts, ...] = ()
    marks: tuple[tuple[PodFacts, str | None], ...] = ()
    picks: tuple[str, ...] = ()
    """Spares counted as going by this round's write."""
    blocked: Blocked | None = None
    """Why the scale-down waits, once it has waited for it ``settle`` long (reported)."""
    waiting_for: Blocked | None = None
    """Why the scale-down waits this round, reported or not yet."""
    graceful: Condition | None = None
    status: Mapping[str, Any] = field(default_factory=dict)
    """The status to write when every write succeeds."""
    status_if_unscaled: Mapping[str, Any] = field(default_factory=dict)
    """The status to write when the scale write is refused."""
    memory: TermMemory = field(default_factory=TermMemory)
    events: tuple[PoolEvent, ...] = ()
    """Events of this round's transitions (a problem, a block, the internal API lost)."""
    scale_event: PoolEvent | None = None
    """The Event of the scale write, recorded only if it succeeded."""
    recheck_in: float | None = None
    """Seconds until this pool wants another round; None: the next period is soon enough."""
    forecast: ForecastReport | None = None
    outlook: OutlookRequest | None = None
    """An outlook to build (off the loop) and hand to the memory (`TermMemory.with_outlook`)."""


# -- time ------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the checks ------------------------------------------------------------------------------


def check_deployment(
    deployment: DeploymentFacts, *, hpa_targets: frozenset[str], busy_labels: Mapping[str, str]
) -> tuple[Problem | None, str]:
    """A Deployment this pool must not size: its selector keeps busy pods, or an HPA owns it."""
    detached_labels = {**deployment.template_labels, **busy_labels}
    busy_selector = ",".join(f"{k}={v}" for k, v in sorted(busy_labels.items()))
    try:
        selector = label_selector(deployment.selector)
        selector.query()  # an empty selector is refused too
        still_selected = selector.matches(detached_labels)
    except SelectorError as exc:
        return Problem.SELECTOR_MATCHES_BUSY, f"Deployment selector unusable: {exc}"
    if still_selected:
        return (
            Problem.SELECTOR_MATCHES_BUSY,
            f"Deployment {deployment.name!r}'s selector still matches a pod relabelled "
            f"with the busy labels {busy_selector}: a detach would not take it out",
        )
    if deployment.name in hpa_targets:
        return (
            Problem.HPA_CONFLICT,
            f"an HorizontalPodAutoscaler targets Deployment {deployment.name!r}: it owns the "
            "replicas, so this pool writes nothing",
        )
    return None, ""


# -- demand ----------------------------------------------------------------------------------


def remember_starts(
    starts: Mapping[str, datetime], pods: PoolPods, *, window: float, now: datetime
) -> dict[str, datetime]:
    """The recording starts of the last ``window`` seconds: those remembered, and those the
    pool's busy pods show (their busy-since annotation)."""
    merged = dict(starts)
    for pod in pods.busy:
        at = parse_time(pod.annotations.get(ANNOTATION_BUSY_SINCE))
        if at is not None:
            merged.setdefault(pod.uid, at)
    horizon = now - timedelta(seconds=window)
    return {u: t for u, t in merged.items() if horizon <= t <= now}


def measured_demand(
    spec: PoolSpec, starts: Mapping[str, datetime], pods: PoolPods, *, now: datetime
) -> DemandInput:
    """The demand the pool's own history shows: the start rate over the spec's window and
    the lead time measured from its pods."""
    rate = 0.0
    if spec.demand is not None:
        rate = estimate_start_rate(
            [t.timestamp() for t in starts.values()],
            now=now.timestamp(),
            window=spec.demand.window_seconds,
        )
    return DemandInput(rate=rate, lead_time=measured_lead_time(pods))


# -- the plan --------------------------------------------------------------------------------


def plan_pool(
    read: PoolRead,
    *,
    memory: TermMemory,
    probes: Mapping[str, ProbeResult] | None,
    now: datetime,
    busy_labels: Mapping[str, str],
    graceful: bool,
    settle: timedelta = timedelta(0),
    demand: DemandInput | None = None,
    day_seconds: float = REAL_DAY,
) -> PoolPlan:
    """One pool's plan for this round.

    ``probes``: the answers of the spares a first plan asked to probe (`PoolPlan.probe`),
    by pod uid; None for the first plan. ``graceful``: whether spares are asked to shut down
    through Jibri's internal API. ``settle``: how long a scale-down may wait for one reason
    before it is reported (condition, Event, metric): a wait that ends within it (a detach
    the ReplicaSet releases a moment later) is no news. ``demand``: the demand input, when
    the caller has its own; else the measured one. ``day_seconds``: the length of the
    forecast's day (a real day; shorter only in tests, see FORECAST_DAY_SECONDS).
    """
    try:
        spec = parse_pool_spec(read.spec)
    except PoolSpecError as exc:
        return _problem(read, Problem.INVALID_SPEC, str(exc), None, memory, now)
    deployment = read.deployment
    if deployment is None:
        detail = f"Deployment {spec.deployment_name!r} not found in this namespace"
        return _problem(read, Problem.DEPLOYMENT_MISSING, detail, spec, memory, now)
    problem, detail = check_deployment(
        deployment, hpa_targets=read.hpa_targets, busy_labels=busy_labels
    )
    if problem is not None:
        return _problem(read, problem, detail, spec, memory, now)

    pods = sort_pool_pods(
        selected=list(read.selected),
        busy_labelled=list(read.busy_labelled),
        deployment=deployment.name,
        busy_labels=busy_labels,
    )
    spares = (*pods.starting, *pods.spare_ready)
    live = {p.uid for p in spares}
    asked = {u: a for u, a in memory.asked.items() if u in live}
    leaving = {
        p.uid
        for p in spares
        if (a := asked.get(p.uid)) is not None
        and a.outcome is ShutdownOutcome.ACCEPTED
        and a.restart_count == p.restart_count
    }
    starts = dict(memory.starts)
    wanted_forecast = spec.demand.forecast if spec.demand is not None else None
    season = None
    if wanted_forecast is not None:
        season = Season(wanted_forecast.time_zone, day_seconds)
    if spec.demand is not None:
        keep = spec.demand.window_seconds
        if season is not None and memory.history_stored_at is not None:
            # The starts since the history was last stored stay in recentStarts, so that a
            # new leader finds them there (the stored history does not have them yet).
            keep = max(keep, (now - memory.history_stored_at).total_seconds())
        starts = remember_starts(starts, pods, window=keep, now=now)
    measured = measured_demand(spec, starts, pods, now=now)
    demand = demand if demand is not None else measured
    spare_ready = sum(1 for p in pods.spare_ready if p.uid not in leaving)
    forecast_round_ = None
    note, reset = memory.forecast_note, None
    if spec.demand is not None and wanted_forecast is not None and season is not None:
        state, note, reset = _forecast_state(memory, read.status, season, starts)
        forecast_round_ = forecast_round(
            state,
            starts={uid: t.timestamp() for uid, t in starts.items()},
            now=now.timestamp(),
            weeks=wanted_forecast.weeks,
            exhausted=spare_ready == 0,
            lead_time=demand_lead_time(spec.demand, demand.lead_time),
            shortfall_probability=spec.demand.shortfall_probability,
            window=spec.demand.window_seconds,
            regions=wanted_forecast.regions,
        )
    observation = PoolObservation(
        busy=len(pods.busy),
        spare_ready=spare_ready,
        starting=sum(1 for p in pods.starting if p.uid not in leaving),
        replicas=deployment.replicas,
        start_rate=demand.rate,
        lead_time=demand.lead_time,
        forecast=forecast_round_.answer if forecast_round_ is not None else None,
    )
    decision = decide_pool(spec, observation, now=now, last=memory.sizing)
    assert decision.desired is not None  # the Deployment exists
    report: ForecastReport | None = None
    stored_status: dict[str, Any] = {}
    stored_at = memory.history_stored_at
    if forecast_round_ is not None:
        report, stored_status, stored_at, note = _forecast_report(
            read,
            spec=spec,
            observation=observation,
            decision=decision,
            memory=memory,
            history=forecast_round_.state.history,
            store=reset is not None,
            note=note,
            now=now,
        )

    step = plan_scale_down(
        spares=spares,
        busy=pods.busy,
        replicas=deployment.replicas,
        target=decision.desired,
        probes=probes,
        asked=asked,
        graceful=graceful,
        now=now,
    )
    if step.probe:
        return PoolPlan(pool=read.name, spec=spec, probe=step.probe, memory=memory)

    replicas = step.replicas if step.replicas != deployment.replicas else None
    final = step.replicas
    sizing = decision.memory
    if final > decision.desired:
        # Not lowered, or only partly (a spare to wait for, or blocked): the hysteresis clock
        # keeps running, so the scale-down is due again as soon as it can go on.
        sizing = PoolMemory(desired=decision.desired, below_since=memory.sizing.below_since or now)
    no_api = _no_api(memory.no_api, step, graceful)
    held_key = (step.blocked.reason.value, step.blocked.message) if step.blocked else None
    held_since = None
    if held_key is not None:
        same = memory.blocked == held_key and memory.blocked_since is not None
        held_since = memory.blocked_since if same else now
    reported = step.blocked if held_since is not None and now - held_since >= settle else None
    kept = TermMemory(
        sizing=sizing,
        starts=starts,
        asked=asked,
        no_api=no_api,
        blocked=held_key,
        blocked_since=held_since,
        forecast=forecast_round_.state if forecast_round_ is not None else None,
        history_stored_at=stored_at if forecast_round_ is not None else None,
        forecast_note=note if forecast_round_ is not None else "",
    )
    graceful_condition = _graceful_condition(graceful, no_api)
    status, unscaled = _statuses(
        read,
        spec=spec,
        decision=decision,
        observation=observation,
        memory=kept,
        written=replicas,
        blocked=reported,
        graceful=graceful_condition,
        leaving=len(leaving),
        now=now,
        forecast=report,
        stored=stored_status,
    )
    events = _transitions(read.status, reported, graceful_condition, problem=None)
    if reset is not None:
        events += (PoolEvent("ForecastHistoryReset", reset, warning=True),)
    scale_event = None
    if replicas is not None:
        direction = "ScaledUp" if replicas > deployment.replicas else "ScaledDown"
        scale_event = PoolEvent(
            direction,
            f"replicas {deployment.replicas} -> {replicas} (bound {decision.bound}: "
            f"{observation.busy} busy, {observation.spare_ready} spare, "
            f"{observation.starting} starting)",
        )
    return PoolPlan(
        pool=read.name,
        spec=spec,
        decision=decision,
        observation=observation,
        replicas=replicas,
        deployment=deployment,
        detach=step.detach,
        shut_down=step.ask,
        marks=step.marks,
        picks=step.picks,
        blocked=reported,
        waiting_for=step.blocked,
        graceful=graceful_condition,
        status=status,
        status_if_unscaled=unscaled,
        memory=kept,
        events=events,
        scale_event=scale_event,
        recheck_in=_recheck_in(
            step,
            decision,
            now,
            reported_at=None if reported or held_since is None else held_since + settle,
        ),
        forecast=report,
        outlook=forecast_round_.request if forecast_round_ is not None else None,
    )


# -- the forecast ----------------------------------------------------------------------------


def _clock(season: Season) -> str:
    day = "" if season.day_seconds == REAL_DAY else f", a day of {season.day_seconds:g} s"
    return f"{season.time_zone}{day}"


def _forecast_state(
    memory: TermMemory, status: Mapping[str, Any], season: Season, starts: Mapping[str, datetime]
) -> tuple[ForecastState, str, str | None]:
    """The forecast's state for this round, its note, and why it was begun anew (None if it
    was not): the term's own, or at the term's first round the one the status stores (the
    starts it already holds are those up to its latest)."""
    state = memory.forecast
    if state is not None and state.history.season == season:
        return state, memory.forecast_note, None
    if state is not None:
        why = (
            f"the forecast's clock changed ({_clock(state.history.season)} to "
            f"{_clock(season)}): its history began anew"
        )
        return ForecastState(History(season)), why, why
    text = status.get("startHistory")
    if not isinstance(text, str) or not text:
        return ForecastState(History(season)), "", None
    try:
        history = decode(text)
    except ForecastError as exc:
        why = f"status.startHistory could not be read ({exc}): the history began anew"
        return ForecastState(History(season)), why, why
    if history.season != season:
        why = (
            f"status.startHistory was kept on another clock ({_clock(history.season)}, "
            f"not {_clock(season)}): the history began anew"
        )
        return ForecastState(History(season)), why, why
    latest = history.latest
    recorded = frozenset(
        uid for uid, t in starts.items() if latest is not None and t.timestamp() <= latest
    )
    return ForecastState(history, recorded=recorded), "", None


def _forecast_report(
    read: PoolRead,
    *,
    spec: PoolSpec,
    observation: PoolObservation,
    decision: PoolDecision,
    memory: TermMemory,
    history: History,
    store: bool,
    note: str,
    now: datetime,
) -> tuple[ForecastReport, dict[str, Any], datetime | None, str]:
    """The forecast's report, the history to store (if due), when it was stored, the note."""
    assert spec.demand is not None
    season = history.season
    stored_at = memory.history_stored_at
    text = read.status.get("startHistory")
    size = len(text) if isinstance(text, str) else 0
    stored_status: dict[str, Any] = {}
    due = stored_at is None or (now - stored_at).total_seconds() >= store_interval(season)
    if store or due:
        encoded = encode(history)
        stored_at = now  # not tried again before the interval, whatever the outcome
        if len(encoded) <= MAX_STORED_HISTORY:
            stored_status["startHistory"] = encoded
            size = len(encoded)
        else:
            note = (
                f"the history encodes to {len(encoded)} bytes, more than status.startHistory "
                f"holds ({MAX_STORED_HISTORY}): it is kept in memory only"
            )
    if spec.demand.mode is DemandMode.APPLY:
        recommended = decision
    else:
        applied = replace(spec, demand=replace(spec.demand, mode=DemandMode.APPLY))
        recommended = decide_pool(applied, observation, now=now, last=memory.sizing)
    today = season.day(now.timestamp())
    same_kind, _ = references(history, today)
    age = 0.0
    if history.first_day is not None and history.first_day <= today:
        age = max(0.0, now.timestamp() - season.start_of(history.first_day))
    answer = observation.forecast
    if answer is not None and answer.basis is Basis.HISTORY:
        note = ""  # it has history now: what was lost before no longer matters
    report = ForecastReport(
        mode=spec.demand.mode,
        answer=answer,
        recommended=recommended.wanted,
        recommended_bound=recommended.bound,
        reference_days=len(same_kind),
        history_days=history.full_days(today),
        history_starts=history.starts,
        history_age=age,
        history_bytes=size,
        stored="startHistory" in stored_status,
    )
    return report, stored_status, stored_at, note


def stored_history(memory: TermMemory, *, now: datetime) -> dict[str, Any] | None:
    """The status merge patch that stores the history now (a leader shutting down), or None
    when there is none. Only ``startHistory`` and the forecast's two history fields change."""
    if memory.forecast is None:
        return None
    encoded = encode(memory.forecast.history)
    if len(encoded) > MAX_STORED_HISTORY:
        return None
    return {
        "startHistory": encoded,
        "forecast": {"historyBytes": len(encoded), "historyStoredAt": stamp(now)},
    }


def _no_api(previous: str | None, step: ScaleDown, graceful: bool) -> str | None:
    if not graceful:
        return None
    if step.no_api:
        pod, why = step.no_api[0]
        return f"spare {pod}: {why}"
    if any(s in (Standing.GONE, Standing.LEAVING) for s in step.standings.values()):
        return None  # a spare accepted a graceful shutdown: the internal API works
    return previous


def _recheck_in(
    step: ScaleDown, decision: PoolDecision, now: datetime, *, reported_at: datetime | None
) -> float | None:
    """When to look again: a graceful shutdown to confirm, a held scale-down coming due, a
    wait to report if it lasts. A blocked scale-down otherwise waits for the next period."""
    moments = [m for m in (decision.scale_down_at, reported_at) if m is not None]
    waits = [max(0.0, (m - now).total_seconds()) for m in moments]
    if step.waiting:
        waits.append(CONFIRM_STEP.total_seconds())
    return min(waits) if waits else None


def _problem(
    read: PoolRead,
    problem: Problem,
    detail: str,
    spec: PoolSpec | None,
    memory: TermMemory,
    now: datetime,
) -> PoolPlan:
    conditions = pool_conditions(None, problem=problem, detail=detail, spec=spec)
    status = {
        "observedGeneration": read.generation,
        "conditions": serialize_conditions(read.status, conditions, now, read.generation),
    }
    return PoolPlan(
        pool=read.name,
        problem=problem,
        detail=detail,
        spec=spec,
        status=status,
        status_if_unscaled=status,
        memory=memory,
        events=_transitions(read.status, None, None, problem=(problem, detail)),
    )


# -- status ----------------------------------------------------------------------------------


def _graceful_condition(graceful: bool, no_api: str | None) -> Condition:
    if not graceful:
        return Condition(
            ConditionType.GRACEFUL_SCALE_DOWN,
            False,
            Graceful.OFF,
            "JIBRI_INTERNAL_API_PORT=0: spares are taken by probe and deletion cost",
        )
    if no_api is not None:
        return Condition(ConditionType.GRACEFUL_SCALE_DOWN, False, Graceful.UNREACHABLE, no_api)
    return Condition(
        ConditionType.GRACEFUL_SCALE_DOWN,
        True,
        Graceful.USED,
        "spares leave through Jibri's own graceful shutdown",
    )


def pool_conditions(
    decision: PoolDecision | None,
    *,
    problem: Problem | None,
    detail: str,
    spec: PoolSpec | None,
    blocked: Blocked | None = None,
    graceful: Condition | None = None,
    forecast: Condition | None = None,
) -> tuple[Condition, ...]:
    """The pool's conditions for a decision (or for a problem that stopped one)."""
    if problem is not None:
        ready = Condition(ConditionType.READY, False, problem.value, detail)
    else:
        ready = Condition(ConditionType.READY, True, "Reconciled", detail)
    if decision is None:
        return (ready,)
    if decision.budget_exhausted and spec is not None:
        budget = Condition(
            ConditionType.BUDGET_EXHAUSTED,
            True,
            "MaxTotalReached",
            f"busy + desired spares would exceed maxTotal {spec.max_total}: "
            f"{decision.wanted} spares allowed",
        )
    else:
        budget = Condition(ConditionType.BUDGET_EXHAUSTED, False, "WithinBudget", "")
    if decision.spare_exhausted:
        spare = Condition(
            ConditionType.SPARE_EXHAUSTED,
            True,
            "NoReadySpare",
            "no Ready spare: a recording start now finds none",
        )
    else:
        spare = Condition(ConditionType.SPARE_EXHAUSTED, False, "SpareReady", "")
    if blocked is not None:
        held = Condition(
            ConditionType.SCALE_DOWN_BLOCKED, True, blocked.reason.value, blocked.message
        )
    else:
        held = Condition(ConditionType.SCALE_DOWN_BLOCKED, False, "NotBlocked", "")
    extra = tuple(c for c in (graceful, forecast) if c is not None)
    return (ready, budget, spare, held, *extra)


def condition_of(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for entry in status.get("conditions") or ():
        if isinstance(entry, Mapping) and entry.get("type") == kind:
            return entry
    return None


def serialize_conditions(
    status: Mapping[str, Any], conditions: tuple[Condition, ...], now: datetime, generation: int
) -> list[dict[str, Any]]:
    """The conditions as the API wants them; lastTransitionTime moves only when the status
    does, so an unchanged round writes nothing."""
    out = []
    for condition in conditions:
        value = "True" if condition.status else "False"
        previous = condition_of(status, condition.type.value)
        since = (
            previous.get("lastTransitionTime")
            if previous is not None and previous.get("status") == value
            else stamp(now)
        )
        out.append(
            {
                "type": condition.type.value,
                "status": value,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )
    return out


def _statuses(
    read: PoolRead,
    *,
    spec: PoolSpec,
    decision: PoolDecision,
    observation: PoolObservation,
    memory: TermMemory,
    written: int | None,
    blocked: Blocked | None,
    graceful: Condition,
    leaving: int,
    now: datetime,
    forecast: ForecastReport | None = None,
    stored: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The status if the scale write succeeds, and if it is refused."""
    detail = f"{decision.desired} spares wanted (bound {decision.bound})"
    if decision.scale_down_at is not None:
        detail += f"; {decision.wanted} after {stamp(decision.scale_down_at)}"
    if forecast is not None and forecast.mode is DemandMode.RECOMMEND:
        detail += (
            f"; the forecast would ask for {forecast.recommended} "
            f"(bound {forecast.recommended_bound}, mode Recommend: not applied)"
        )
    conditions = pool_conditions(
        decision,
        problem=None,
        detail=detail,
        spec=spec,
        blocked=blocked,
        graceful=graceful,
        forecast=_forecast_condition(forecast, memory) if forecast is not None else None,
    )
    status: dict[str, Any] = {
        "observedGeneration": read.generation,
        "spare": observation.spare_ready,
        "busy": observation.busy,
        "starting": observation.starting,
        "leaving": leaving,
        "desiredSpare": decision.desired,
        "replicas": observation.replicas,
        "bound": str(decision.bound),
        "belowSince": stamp(memory.sizing.below_since) if memory.sizing.below_since else None,
        "conditions": serialize_conditions(read.status, conditions, now, read.generation),
    }
    if spec.demand is not None:
        status["startRate"] = round(observation.start_rate, 6)
        status["leadTimeSeconds"] = (
            round(decision.lead_time, 3) if decision.lead_time is not None else None
        )
        recent = sorted(memory.starts.items(), key=lambda item: item[1])[-MAX_RECENT_STARTS:]
        status["recentStarts"] = [{"at": stamp(t), "uid": u} for u, t in recent]
    if forecast is not None:
        status["forecast"] = _forecast_status(forecast, memory)
        status.update(stored or {})
    elif read.status.get("forecast") is not None:
        status["forecast"] = None  # turned off: the history itself is kept
    unscaled = dict(status)
    if written is not None:
        status["replicas"] = written
        status["lastScaleTime"] = stamp(now)
    return status, unscaled


def _forecast_status(report: ForecastReport, memory: TermMemory) -> dict[str, Any]:
    """``status.forecast``: the same keys every round (a merge patch leaves a key that is no
    longer sent in place)."""
    answer = report.answer
    out: dict[str, Any] = {
        "mode": report.mode.value,
        "basis": answer.basis.value if answer is not None else Basis.NO_HISTORY.value,
        "spares": answer.spares if answer is not None else 0,
        "forecast": answer.forecast if answer is not None else 0,
        "reactive": answer.reactive if answer is not None else 0,
        "expectedStarts": round(answer.expected, 1) if answer is not None else 0.0,
        "recommendedSpare": report.recommended,
        "recommendedBound": report.recommended_bound.value,
        "referenceDays": report.reference_days,
        "historyDays": report.history_days,
        "historyStarts": report.history_starts,
        "historyBytes": report.history_bytes,
    }
    if memory.history_stored_at is not None:
        out["historyStoredAt"] = stamp(memory.history_stored_at)
    return out


def _forecast_condition(report: ForecastReport, memory: TermMemory) -> Condition:
    """Whether the forecast has history to go by, and if not, why and since when."""
    note = f"; {memory.forecast_note}" if memory.forecast_note else ""
    if report.answer is None:
        return Condition(
            ConditionType.FORECAST,
            False,
            ForecastReason.LEAD_TIME_UNKNOWN,
            "no lead time yet (startupSeconds 0, and no replacement measured Ready): the "
            f"history is recorded, nothing is forecast{note}",
        )
    days = f"{report.history_days} day{'s' if report.history_days != 1 else ''} recorded"
    if report.answer.basis is Basis.HISTORY:
        return Condition(
            ConditionType.FORECAST,
            True,
            ForecastReason.HISTORY,
            f"forecast from {report.reference_days} reference day"
            f"{'s' if report.reference_days != 1 else ''} of the same kind ({days})",
        )
    history = memory.forecast.history if memory.forecast is not None else None
    since = ""
    if history is not None and history.first_day is not None:
        begins = history.season.start_of(history.first_day)
        since = f", recording from {stamp(datetime.fromtimestamp(begins, UTC))}"
    return Condition(
        ConditionType.FORECAST,
        False,
        ForecastReason.NO_HISTORY,
        "no wholly recorded day of the same kind (working day or weekend) yet"
        f"{since} ({days}): the reactive estimate alone{note}",
    )


def status_patch(stored: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``status`` that differ from the ``stored`` status (a merge patch: a None
    removes a field); empty when nothing changed, so an unchanged round writes nothing."""
    return {k: v for k, v in status.items() if stored.get(k) != v}


def _transitions(
    stored: Mapping[str, Any],
    blocked: Blocked | None,
    graceful: Condition | None,
    *,
    problem: tuple[Problem, str] | None,
) -> tuple[PoolEvent, ...]:
    """Warning Events for what changed for the worse since the stored status: once per
    transition, never once per round."""
    events = []
    ready = condition_of(stored, ConditionType.READY)
    if problem is not None and (ready is None or ready.get("reason") != problem[0].value):
        events.append(PoolEvent(problem[0].value, problem[1], warning=True))
    held = condition_of(stored, ConditionType.SCALE_DOWN_BLOCKED)
    if blocked is not None and (
        held is None
        or held.get("status") != "True"
        or (held.get("reason"), held.get("message")) != (blocked.reason.value, blocked.message)
    ):
        said = f"{blocked.message} ({blocked.detail})" if blocked.detail else blocked.message
        events.append(PoolEvent("ScaleDownBlocked", said, warning=True))
    before = condition_of(stored, ConditionType.GRACEFUL_SCALE_DOWN)
    if (
        graceful is not None
        and graceful.reason == Graceful.UNREACHABLE
        and (before is None or before.get("reason") != Graceful.UNREACHABLE)
    ):
        events.append(PoolEvent("GracefulShutdownUnavailable", graceful.message, warning=True))
    return tuple(events)
