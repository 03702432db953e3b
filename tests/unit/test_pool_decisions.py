"""The pool sizing decision: a table over min, max, budget, schedule windows (incl. DST),
hysteresis, demand and a missing Deployment, plus the spec parser."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jibri_pod_controller.core.forecast import Basis, ForecastSpares
from jibri_pod_controller.core.pods import Phase, PodFacts
from jibri_pod_controller.core.poolplan import Problem, pool_conditions
from jibri_pod_controller.core.pools import (
    ANNOTATION_DETACHED_FROM,
    Blocked,
    Bound,
    DemandMode,
    DemandSpec,
    ForecastSpec,
    PodIndex,
    PoolDecision,
    PoolMemory,
    PoolObservation,
    PoolSpec,
    PoolSpecError,
    ScheduleWindow,
    decide_pool,
    deployment_of,
    measured_lead_time,
    parse_pool_spec,
    sort_pool_pods,
)
from jibri_pod_controller.core.selectors import label_selector

NOW = datetime(2026, 6, 3, 12, 0, tzinfo=UTC)  # a Wednesday
SPEC = PoolSpec(
    deployment_name="jibri",
    min_spare=2,
    max_spare=20,
    max_total=50,
    scale_down_delay_seconds=300,
)


def seen(
    *, busy: int = 0, ready: int = 2, starting: int = 0, replicas: int | None = 2, **kw: float
) -> PoolObservation:
    return PoolObservation(busy=busy, spare_ready=ready, starting=starting, replicas=replicas, **kw)


def decide(
    spec: PoolSpec = SPEC,
    observed: PoolObservation | None = None,
    *,
    now: datetime = NOW,
    last: PoolMemory | None = None,
) -> PoolDecision:
    return decide_pool(spec, observed or seen(), now=now, last=last or PoolMemory())


WORKDAY = ScheduleWindow(start="0 8 * * 1-5", duration_minutes=600, min_spare=10, time_zone="UTC")
DEMAND = DemandSpec(shortfall_probability=0.01, window_seconds=900, startup_seconds=0)


@pytest.mark.parametrize(
    ("name", "spec", "observed", "last", "replicas", "desired", "bound"),
    [
        ("steady at minSpare: no write", SPEC, seen(replicas=2), None, None, 2, Bound.MIN_SPARE),
        ("below minSpare: raise at once", SPEC, seen(replicas=0), None, 2, 2, Bound.MIN_SPARE),
        (
            "minSpare 0 allowed",
            replace(SPEC, min_spare=0),
            seen(replicas=0),
            None,
            None,
            0,
            Bound.MIN_SPARE,
        ),
        (
            "above minSpare: held (hysteresis starts)",
            SPEC,
            seen(replicas=5),
            None,
            None,
            5,
            Bound.MIN_SPARE,
        ),
        (
            "held long enough: lowered",
            SPEC,
            seen(replicas=5),
            PoolMemory(desired=5, below_since=NOW - timedelta(seconds=300)),
            2,
            2,
            Bound.MIN_SPARE,
        ),
        (
            "held not long enough: still held",
            SPEC,
            seen(replicas=5),
            PoolMemory(desired=5, below_since=NOW - timedelta(seconds=299)),
            None,
            5,
            Bound.MIN_SPARE,
        ),
        (
            "delay 0: lowered at once",
            replace(SPEC, scale_down_delay_seconds=0),
            seen(replicas=5),
            None,
            2,
            2,
            Bound.MIN_SPARE,
        ),
        (
            "maxSpare caps minSpare-raised value",
            replace(SPEC, min_spare=3, max_spare=3),
            seen(replicas=1),
            None,
            3,
            3,
            Bound.MIN_SPARE,
        ),
        (
            "above maxSpare: lowered at once, no hysteresis",
            replace(SPEC, max_spare=4),
            seen(replicas=9),
            None,
            4,
            4,
            Bound.MIN_SPARE,
        ),
        (
            "budget binds: maxTotal - busy",
            SPEC,
            seen(busy=49, replicas=2),
            None,
            1,
            1,
            Bound.BUDGET,
        ),
        ("budget full: zero spares", SPEC, seen(busy=50, replicas=1), None, 0, 0, Bound.BUDGET),
        (
            "budget over-full: still zero, never negative",
            SPEC,
            seen(busy=55, replicas=0),
            None,
            None,
            0,
            Bound.BUDGET,
        ),
        (
            "no maxTotal: no budget",
            replace(SPEC, max_total=None),
            seen(busy=500),
            None,
            None,
            2,
            Bound.MIN_SPARE,
        ),
        (
            "schedule window raises minSpare",
            replace(SPEC, schedule=(WORKDAY,)),
            seen(),
            None,
            10,
            10,
            Bound.SCHEDULE,
        ),
        (
            "schedule window capped by maxSpare",
            replace(SPEC, max_spare=6, schedule=(WORKDAY,)),
            seen(),
            None,
            6,
            6,
            Bound.MAX_SPARE,
        ),
        (
            "schedule window capped by budget",
            replace(SPEC, schedule=(WORKDAY,)),
            seen(busy=45),
            None,
            5,
            5,
            Bound.BUDGET,
        ),
        (
            "missing Deployment: no write",
            SPEC,
            seen(replicas=None, ready=0),
            None,
            None,
            None,
            Bound.MIN_SPARE,
        ),
    ],
)
def test_decide_pool_table(
    name: str,
    spec: PoolSpec,
    observed: PoolObservation,
    last: PoolMemory | None,
    replicas: int | None,
    desired: int | None,
    bound: Bound,
) -> None:
    decision = decide(spec, observed, last=last)
    assert (decision.replicas, decision.desired, decision.bound) == (replicas, desired, bound)


def test_missing_deployment_is_blocked_and_keeps_memory() -> None:
    last = PoolMemory(desired=4, below_since=NOW)
    decision = decide(observed=seen(replicas=None, ready=0), last=last)
    assert decision.blocked is Blocked.DEPLOYMENT_MISSING
    assert decision.memory.desired == 4
    assert decision.spare_exhausted


def test_budget_exhausted_flag_only_when_the_budget_binds() -> None:
    assert decide(observed=seen(busy=49)).budget_exhausted
    assert not decide(observed=seen(busy=48)).budget_exhausted


def test_spare_exhausted_when_no_ready_spare() -> None:
    assert decide(observed=seen(ready=0, starting=2)).spare_exhausted
    assert not decide(observed=seen(ready=1, starting=1)).spare_exhausted


def test_hysteresis_walks_through_time() -> None:
    """A fall in demand is held for the delay, then applied; a rise during the hold cancels it."""
    spec = replace(SPEC, schedule=(WORKDAY,))
    end_of_day = datetime(2026, 6, 3, 18, 0, tzinfo=UTC)  # the window closes at 18:00
    d1 = decide(spec, seen(replicas=10), now=end_of_day)
    assert (d1.replicas, d1.scale_down_at) == (None, end_of_day + timedelta(seconds=300))
    d2 = decide(spec, seen(replicas=10), now=end_of_day + timedelta(seconds=200), last=d1.memory)
    assert d2.replicas is None
    assert d2.memory.below_since == end_of_day
    d3 = decide(spec, seen(replicas=10), now=end_of_day + timedelta(seconds=300), last=d2.memory)
    assert (d3.replicas, d3.memory.below_since) == (2, None)
    # A rise while held resets the clock.
    d4 = decide(spec, seen(replicas=10), now=end_of_day, last=PoolMemory(below_since=NOW))
    assert d4.replicas == 2  # below since long ago: due
    d5 = decide(replace(SPEC, min_spare=10), seen(replicas=10), now=end_of_day, last=d1.memory)
    assert (d5.replicas, d5.memory.below_since) == (None, None)


def test_budget_lowers_at_once_despite_hysteresis() -> None:
    decision = decide(observed=seen(busy=49, replicas=5))
    assert (decision.replicas, decision.bound, decision.scale_down_at) == (1, Bound.BUDGET, None)
    # The budget cuts at once; the way further down to the wish waits for the delay.
    decision = decide(observed=seen(busy=47, replicas=5))
    assert (decision.replicas, decision.wanted, decision.bound) == (3, 2, Bound.MIN_SPARE)
    assert decision.scale_down_at == NOW + timedelta(seconds=300)


def test_partial_hold_between_cap_and_wish() -> None:
    """Above maxSpare: cut to maxSpare at once; the rest of the way down waits for the delay."""
    decision = decide(replace(SPEC, max_spare=6), seen(replicas=9))
    assert decision.replicas == 6
    assert decision.scale_down_at == NOW + timedelta(seconds=300)


@pytest.mark.parametrize(
    ("window", "now", "active"),
    [
        (WORKDAY, datetime(2026, 6, 3, 8, 0, tzinfo=UTC), True),  # the first minute
        (WORKDAY, datetime(2026, 6, 3, 7, 59, 59, tzinfo=UTC), False),
        (WORKDAY, datetime(2026, 6, 3, 17, 59, 59, tzinfo=UTC), True),
        (WORKDAY, datetime(2026, 6, 3, 18, 0, tzinfo=UTC), False),  # the end is exclusive
        (WORKDAY, datetime(2026, 6, 6, 12, 0, tzinfo=UTC), False),  # Saturday
        # Time zone: 08:00 in Berlin is 06:00 UTC in summer, 07:00 UTC in winter.
        (replace(WORKDAY, time_zone="Europe/Berlin"), datetime(2026, 6, 3, 6, 0, tzinfo=UTC), True),
        (
            replace(WORKDAY, time_zone="Europe/Berlin"),
            datetime(2026, 1, 7, 6, 30, tzinfo=UTC),
            False,
        ),
        (replace(WORKDAY, time_zone="Europe/Berlin"), datetime(2026, 1, 7, 7, 0, tzinfo=UTC), True),
        # Spring forward (Berlin, 2026-03-29 02:00 -> 03:00): a 02:30 start fires at 03:00 local
        # (01:00 UTC) and lasts its 60 minutes of elapsed time.
        (
            ScheduleWindow("30 2 * * *", 60, 5, "Europe/Berlin"),
            datetime(2026, 3, 29, 0, 59, tzinfo=UTC),
            False,
        ),
        (
            ScheduleWindow("30 2 * * *", 60, 5, "Europe/Berlin"),
            datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
            True,
        ),
        (
            ScheduleWindow("30 2 * * *", 60, 5, "Europe/Berlin"),
            datetime(2026, 3, 29, 1, 59, tzinfo=UTC),
            True,
        ),
        (
            ScheduleWindow("30 2 * * *", 60, 5, "Europe/Berlin"),
            datetime(2026, 3, 29, 2, 0, tzinfo=UTC),
            False,
        ),
        # Fall back (2026-10-25 03:00 -> 02:00): 02:30 happens twice; the window starts once,
        # at the first (00:30 UTC), and is over before the second 02:30 (01:30 UTC).
        (
            ScheduleWindow("30 2 * * *", 45, 5, "Europe/Berlin"),
            datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
            True,
        ),
        (
            ScheduleWindow("30 2 * * *", 45, 5, "Europe/Berlin"),
            datetime(2026, 10, 25, 1, 14, tzinfo=UTC),
            True,
        ),
        (
            ScheduleWindow("30 2 * * *", 45, 5, "Europe/Berlin"),
            datetime(2026, 10, 25, 1, 35, tzinfo=UTC),
            False,
        ),
        # A 10-hour window across the fall-back night (22:00 CEST = 20:00 UTC) lasts 10 hours
        # of elapsed time, to 06:00 UTC, not to 08:00 local (07:00 UTC).
        (
            ScheduleWindow("0 22 * * *", 600, 5, "Europe/Berlin"),
            datetime(2026, 10, 25, 5, 59, tzinfo=UTC),
            True,
        ),
        (
            ScheduleWindow("0 22 * * *", 600, 5, "Europe/Berlin"),
            datetime(2026, 10, 25, 6, 0, tzinfo=UTC),
            False,
        ),
        # A window that outlasts its period is active at the overlap.
        (ScheduleWindow("0 * * * *", 90, 5, "UTC"), datetime(2026, 6, 3, 12, 45, tzinfo=UTC), True),
    ],
)
def test_schedule_window_active(window: ScheduleWindow, now: datetime, active: bool) -> None:
    assert window.active_at(now) is active
    decision = decide(replace(SPEC, schedule=(window,)), now=now)
    assert (decision.bound is Bound.SCHEDULE) is (active and window.min_spare > SPEC.min_spare)


def test_two_windows_the_higher_wins() -> None:
    low = replace(WORKDAY, min_spare=4)
    decision = decide(replace(SPEC, schedule=(low, WORKDAY)))
    assert (decision.desired, decision.active_windows) == (10, (0, 1))


@pytest.mark.parametrize(
    ("name", "demand", "observed", "desired", "bound"),
    [
        ("rate 0: minSpare", DEMAND, seen(start_rate=0.0, lead_time=60.0), 2, Bound.MIN_SPARE),
        ("lead time unknown: minSpare", DEMAND, seen(start_rate=1.0), 2, Bound.MIN_SPARE),
        # 0.1/s x 60 s = Poisson(6): P(X > 12) ~ 0.0088 <= 0.01, P(X > 11) ~ 0.02.
        ("demand above minSpare", DEMAND, seen(start_rate=0.1, lead_time=60.0), 12, Bound.DEMAND),
        (
            "configured startup wins over measured",
            replace(DEMAND, startup_seconds=60.0),
            seen(start_rate=0.1, lead_time=1.0),
            12,
            Bound.DEMAND,
        ),
        (
            "huge rate: maxSpare",
            DEMAND,
            seen(start_rate=100.0, lead_time=60.0),
            20,
            Bound.MAX_SPARE,
        ),
        (
            "demand capped by the budget",
            DEMAND,
            seen(busy=40, start_rate=0.1, lead_time=60.0),
            10,
            Bound.BUDGET,
        ),
    ],
)
def test_demand_policy(
    name: str, demand: DemandSpec, observed: PoolObservation, desired: int, bound: Bound
) -> None:
    decision = decide(replace(SPEC, demand=demand), observed)
    assert (decision.desired, decision.bound) == (desired, bound)


@given(
    busy=st.integers(0, 100),
    replicas=st.integers(0, 100),
    rate=st.floats(0, 10),
    lead=st.floats(0, 600),
    max_total=st.one_of(st.none(), st.integers(0, 80)),
    below=st.one_of(st.none(), st.integers(0, 1000)),
)
def test_never_above_the_limits(
    busy: int, replicas: int, rate: float, lead: float, max_total: int | None, below: int | None
) -> None:
    spec = replace(SPEC, max_total=max_total, demand=DEMAND)
    last = PoolMemory(below_since=None if below is None else NOW - timedelta(seconds=below))
    decision = decide(
        spec, seen(busy=busy, replicas=replicas, start_rate=rate, lead_time=lead), last=last
    )
    assert decision.desired is not None
    assert decision.desired <= SPEC.max_spare
    if max_total is not None:
        assert decision.desired <= max(0, max_total - busy)
    assert decision.desired >= min(decision.wanted, replicas) or decision.desired == decision.wanted
    assert (decision.replicas is None) is (decision.desired == replicas)


def test_parse_pool_spec_full() -> None:
    spec = parse_pool_spec(
        {
            "deploymentName": "jibri",
            "minSpare": 2,
            "maxSpare": 20,
            "maxTotal": 50,
            "scaleDownDelaySeconds": 300,
            "schedule": [
                {
                    "start": "0 8 * * 1-5",
                    "durationMinutes": 600,
                    "minSpare": 10,
                    "timeZone": "Europe/Berlin",
                }
            ],
            "demand": {"shortfallProbability": 0.01, "windowSeconds": 900},
        }
    )
    assert spec == PoolSpec(
        deployment_name="jibri",
        min_spare=2,
        max_spare=20,
        max_total=50,
        scale_down_delay_seconds=300.0,
        schedule=(ScheduleWindow("0 8 * * 1-5", 600, 10, "Europe/Berlin"),),
        demand=DemandSpec(0.01, 900.0, 0.0),
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"maxSpare": 3}, "deploymentName"),
        ({"deploymentName": "j", "minSpare": 4, "maxSpare": 3}, "minSpare"),
        ({"deploymentName": "j", "maxSpare": "3"}, "maxSpare"),
        ({"deploymentName": "j", "maxSpare": 3, "maxTotal": -1}, "maxTotal"),
        (
            {
                "deploymentName": "j",
                "maxSpare": 3,
                "schedule": [{"start": "61 * * * *", "durationMinutes": 5, "minSpare": 1}],
            },
            "not cron",
        ),
        (
            {
                "deploymentName": "j",
                "maxSpare": 3,
                "schedule": [
                    {
                        "start": "0 8 * * *",
                        "durationMinutes": 5,
                        "minSpare": 1,
                        "timeZone": "Mars/Olympus",
                    }
                ],
            },
            "timeZone",
        ),
        (
            {"deploymentName": "j", "maxSpare": 3, "demand": {"shortfallProbability": 0}},
            "shortfallProbability",
        ),
    ],
)
def test_parse_pool_spec_refuses(raw: dict[str, object], message: str) -> None:
    with pytest.raises(PoolSpecError, match=message):
        parse_pool_spec(raw)


# -- the forecast ---------------------------------------------------------------------------


def answer(spares: int, basis: Basis = Basis.HISTORY, reactive: int = 0) -> ForecastSpares:
    return ForecastSpares(
        spares=spares,
        forecast=spares - reactive,
        reactive=reactive,
        expected=1.0,
        unexpected_rate=0.0,
        basis=basis,
    )


FORECAST = ForecastSpec(time_zone="Europe/Berlin")
APPLIED = replace(DEMAND, forecast=FORECAST, mode=DemandMode.APPLY)
RECOMMENDED = replace(DEMAND, forecast=FORECAST)  # the default mode
REACTIVE = 5  # spares_for_demand(rate 0.02/s, lead 60 s, p 0.01): a Poisson(1.2) tail


@pytest.mark.parametrize(
    ("demand", "observed", "desired", "bound"),
    [
        pytest.param(
            APPLIED,
            seen(start_rate=0.02, lead_time=60.0, forecast=answer(12)),
            12,
            Bound.FORECAST,
            id="Apply: the forecast's spares, bound forecast",
        ),
        pytest.param(
            APPLIED,
            seen(start_rate=0.02, lead_time=60.0, forecast=answer(3, Basis.NO_HISTORY)),
            3,
            Bound.DEMAND,
            id="Apply without history: its reactive estimate, bound demand",
        ),
        pytest.param(
            APPLIED,
            seen(start_rate=0.02, lead_time=60.0, forecast=answer(1)),
            2,
            Bound.MIN_SPARE,
            id="Apply: minSpare still the floor",
        ),
        pytest.param(
            APPLIED,
            seen(start_rate=0.02, lead_time=60.0, forecast=answer(90)),
            20,
            Bound.MAX_SPARE,
            id="Apply: maxSpare still the cap",
        ),
        pytest.param(
            RECOMMENDED,
            seen(start_rate=0.02, lead_time=60.0, forecast=answer(12)),
            REACTIVE,
            Bound.DEMAND,
            id="Recommend: the measured rate sizes it, the forecast is ignored",
        ),
        pytest.param(
            APPLIED,
            seen(start_rate=0.02, lead_time=60.0),
            REACTIVE,
            Bound.DEMAND,
            id="Apply, no forecast this round: the measured rate",
        ),
        pytest.param(
            APPLIED,
            seen(start_rate=0.02, forecast=answer(12)),
            2,
            Bound.MIN_SPARE,
            id="no lead time: no demand sizing at all",
        ),
    ],
)
def test_the_forecast_in_the_decision(
    demand: DemandSpec, observed: PoolObservation, desired: int, bound: Bound
) -> None:
    decision = decide(replace(SPEC, demand=demand), replace(observed, replicas=desired))
    assert (decision.desired, decision.bound) == (desired, bound)


def test_parse_the_forecast() -> None:
    raw = {
        "deploymentName": "jibri",
        "maxSpare": 20,
        "demand": {
            "mode": "Apply",
            "forecast": {
                "historyWeeks": 3,
                "timeZone": "Europe/Berlin",
                "regions": ["America/New_York", "Europe/Berlin", "America/New_York"],
            },
        },
    }
    demand = parse_pool_spec(raw).demand
    assert demand == DemandSpec(
        0.01,
        900.0,
        0.0,
        forecast=ForecastSpec(3, "Europe/Berlin", ("America/New_York",)),
        mode=DemandMode.APPLY,
    )
    assert demand.forecast_applied
    defaults = parse_pool_spec({**raw, "demand": {"forecast": {}}}).demand
    assert defaults == DemandSpec(0.01, 900.0, 0.0, forecast=ForecastSpec(2, "UTC", ()))
    assert not defaults.forecast_applied, "Recommend unless told"
    off = parse_pool_spec({**raw, "demand": {"forecast": {"enabled": False}}}).demand
    assert off is not None
    assert off.forecast is None


@pytest.mark.parametrize(
    ("forecast", "message"),
    [
        ({"timeZone": "Mars/Olympus"}, "spec.demand.forecast.timeZone 'Mars/Olympus'"),
        ({"timeZone": ""}, "spec.demand.forecast.timeZone must be an IANA"),
        ({"regions": ["UTC", "Europe/Nowhere"]}, r"regions\[1\] 'Europe/Nowhere'"),
        ({"regions": "Europe/Berlin"}, "regions must be a list"),
        ({"regions": ["UTC"] * 5}, "at most 4"),
        ({"historyWeeks": 0}, "historyWeeks must be between 1 and 4"),
        ({"historyWeeks": 5}, "historyWeeks must be between 1 and 4"),
        ({"historyWeeks": "2"}, "spec.demand.forecast.historyWeeks must be an integer"),
        ({"enabled": "yes"}, "enabled must be true or false"),
        ("on", "spec.demand.forecast must be an object"),
    ],
)
def test_parse_the_forecast_refuses(forecast: object, message: str) -> None:
    raw = {"deploymentName": "j", "maxSpare": 3, "demand": {"forecast": forecast}}
    with pytest.raises(PoolSpecError, match=message):
        parse_pool_spec(raw)


def test_parse_refuses_an_unknown_mode() -> None:
    raw = {"deploymentName": "j", "maxSpare": 3, "demand": {"mode": "apply"}}
    with pytest.raises(PoolSpecError, match=r"spec\.demand\.mode 'apply' must be Recommend"):
        parse_pool_spec(raw)


# -- the pure helpers the pool loop uses ---------------------------------------------------


def facts(name: str, **kw: object) -> PodFacts:
    return PodFacts(name=name, namespace="ns", uid=f"u-{name}", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("owner_kind", "owner_name", "labels", "expected"),
    [
        ("ReplicaSet", "jibri-7c9f8d6b5", {"pod-template-hash": "7c9f8d6b5"}, "jibri"),
        ("ReplicaSet", "my-jibri-7c9f8d6b5", {"pod-template-hash": "7c9f8d6b5"}, "my-jibri"),
        ("ReplicaSet", "jibri-7c9f8d6b5", {}, None),  # no hash: not a Deployment's pod
        ("ReplicaSet", "other-abc", {"pod-template-hash": "7c9f8d6b5"}, None),
        ("ReplicaSet", "-7c9f8d6b5", {"pod-template-hash": "7c9f8d6b5"}, None),
        ("StatefulSet", "jibri", {"pod-template-hash": "x"}, None),
        (None, None, {"pod-template-hash": "x"}, None),  # already detached
    ],
)
def test_deployment_of(
    owner_kind: str | None, owner_name: str | None, labels: dict[str, str], expected: str | None
) -> None:
    pod = facts("p", owner_kind=owner_kind, owner_name=owner_name, labels=labels)
    assert deployment_of(pod) == expected


def test_pod_index_matches_as_the_selector_does() -> None:
    pods = [
        facts("a", labels={"app": "jibri", "state": "idle", "pool": "1"}),
        facts("b", labels={"app": "jibri", "state": "idle", "pool": "2"}),
        facts("c", labels={"app": "jibri", "state": "busy", "pool": "1"}),
        facts("d", labels={"app": "jibri", "state": "idle"}),
        facts("e", labels={"app": "jibri", "state": "idle", "pool": "1", "canary": "y"}),
    ]
    index = PodIndex(pods)
    selectors: list[dict[str, object]] = [
        {"matchLabels": {"app": "jibri", "state": "idle", "pool": "1"}},
        {"matchLabels": {"state": "idle"}},
        {
            "matchLabels": {"pool": "1"},
            "matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}],
        },
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["2"]}]},
    ]
    for selector in selectors:
        expected = [p.name for p in pods if label_selector(selector).matches(p.labels)]
        assert [p.name for p in index.matching(label_selector(selector))] == expected, selector
    assert [p.name for p in index.with_labels({"state": "busy"})] == ["c"]
    assert index.with_labels({"state": "gone"}) == []


def test_sort_pool_pods_and_lead_time() -> None:
    created = NOW - timedelta(minutes=10)
    ready = facts(
        "r",
        labels={"state": "idle"},
        ready=True,
        created=created,
        ready_since=created + timedelta(seconds=40),
    )
    starting = facts("s", labels={"state": "idle"})
    going = facts("g", labels={"state": "idle"}, ready=True, deleting=True)
    mine = facts(
        "b",
        labels={"state": "busy"},
        created=created,
        ready=True,
        ready_since=created + timedelta(seconds=20),
        annotations={ANNOTATION_DETACHED_FROM: "jibri"},
    )
    theirs = facts("o", labels={"state": "busy"}, annotations={ANNOTATION_DETACHED_FROM: "other"})
    done = facts(
        "d",
        labels={"state": "busy"},
        phase=Phase.SUCCEEDED,
        annotations={ANNOTATION_DETACHED_FROM: "jibri"},
    )
    pods = sort_pool_pods(
        selected=[ready, starting, going],
        busy_labelled=[mine, theirs, done],
        deployment="jibri",
        busy_labels={"state": "busy"},
    )
    assert (pods.spare_ready, pods.starting, pods.busy) == ((ready,), (starting,), (mine,))
    assert measured_lead_time(pods) == 40.0
    assert (
        measured_lead_time(
            sort_pool_pods(selected=[], busy_labelled=[], deployment="x", busy_labels={})
        )
        is None
    )


def test_conditions_for_a_decision_and_a_problem() -> None:
    decision = decide(observed=seen(busy=50, ready=0, replicas=0))
    ready, budget, spare, blocked = pool_conditions(decision, problem=None, detail="ok", spec=SPEC)
    assert (ready.status, budget.status, spare.status, blocked.status) == (True, True, True, False)
    assert "maxTotal 50" in budget.message
    (refused,) = pool_conditions(None, problem=Problem.HPA_CONFLICT, detail="an HPA", spec=SPEC)
    assert (refused.type, refused.status, refused.reason) == ("Ready", False, "ReplicasOwnedByHPA")
