"""Pool sizing from demand: the Poisson spare count, the start-rate estimate, the lead time.

Tables for the values, Hypothesis for the shape: more demand never asks for fewer spares, and
the estimate follows a rise within an eighth of its window but forgets a busy past only slowly.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jibri_pod_controller.core.demand import estimate_start_rate, lead_time, spares_for_demand
from jibri_pod_controller.core.pools import (
    Bound,
    DemandSpec,
    PoolMemory,
    PoolObservation,
    PoolSpec,
    decide_pool,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)

# Expected values are Poisson quantiles: the smallest N with P(X <= N) >= 1 - p, X ~ Poisson(rate
# x lead time); e.g. for a mean of 1, P(X <= 3) = 0.981 and P(X <= 4) = 0.9963.
SPARES = [
    # (rate per second, lead time s, shortfall probability, spares)
    pytest.param(0.0, 60.0, 0.01, 0, id="no starts: no spare"),
    pytest.param(0.02, 0.0, 0.01, 0, id="instant replacements: no spare"),
    pytest.param(-1.0, 60.0, 0.01, 0, id="a negative rate counts as none"),
    pytest.param(1e-5, 100.0, 0.01, 0, id="mean 0.001: P(X = 0) already 0.999"),
    pytest.param(0.01, 50.0, 0.01, 3, id="mean 0.5"),
    pytest.param(0.02, 50.0, 0.01, 4, id="mean 1, p 1%"),
    pytest.param(0.02, 50.0, 0.05, 3, id="mean 1, p 5%"),
    pytest.param(0.05, 60.0, 0.001, 10, id="mean 3, p 0.1%"),
    pytest.param(0.2, 50.0, 0.01, 18, id="mean 10"),
    pytest.param(2.0, 50.0, 0.01, 124, id="mean 100: log space, no underflow"),
    pytest.param(2.0, 50.0, 0.001, 132, id="mean 100, p 0.1%"),
    pytest.param(1e6, 60.0, 0.01, 10_000, id="a huge rate: the limit"),
    pytest.param(math.inf, 60.0, 0.01, 10_000, id="an infinite rate: the limit"),
    pytest.param(0.02, 50.0, 1.0, 0, id="every shortfall accepted: no spare"),
]


@pytest.mark.parametrize(("rate", "lead", "p", "expected"), SPARES)
def test_spares_for_demand(rate: float, lead: float, p: float, expected: int) -> None:
    assert spares_for_demand(rate=rate, lead_time=lead, shortfall_probability=p) == expected


def test_the_limit_is_the_callers() -> None:
    assert spares_for_demand(rate=1e6, lead_time=60, shortfall_probability=0.01, limit=40) == 40


@pytest.mark.parametrize(
    ("rate", "lead", "p"),
    [
        pytest.param(math.nan, 60.0, 0.01, id="rate NaN"),
        pytest.param(0.1, math.nan, 0.01, id="lead time NaN"),
        pytest.param(0.1, 60.0, math.nan, id="probability NaN"),
        pytest.param(0.1, 60.0, 0.0, id="probability 0: infinitely many spares"),
        pytest.param(0.1, 60.0, -0.5, id="probability negative"),
    ],
)
def test_spares_for_demand_refuses_what_has_no_answer(rate: float, lead: float, p: float) -> None:
    with pytest.raises(ValueError, match=r"rate|lead|probability"):
        spares_for_demand(rate=rate, lead_time=lead, shortfall_probability=p)


# The same maths through the pool decision: what the controller actually writes.


def _spec(*, max_total: int | None = None, startup: float = 0.0) -> PoolSpec:
    return PoolSpec(
        deployment_name="jibri",
        min_spare=2,
        max_spare=40,
        max_total=max_total,
        scale_down_delay_seconds=300.0,
        demand=DemandSpec(
            shortfall_probability=0.01, window_seconds=900.0, startup_seconds=startup
        ),
    )


def _observed(
    *, busy: int = 0, rate: float, lead: float | None, replicas: int = 0
) -> PoolObservation:
    # replicas 0 by default, so that any wanted value is a change and shows as `replicas`.
    return PoolObservation(
        busy=busy, spare_ready=0, starting=0, replicas=replicas, start_rate=rate, lead_time=lead
    )


POOL = [
    # (spec, observation, replicas written, bound)
    pytest.param(
        _spec(), _observed(rate=0.0, lead=40.0), 2, Bound.MIN_SPARE, id="rate 0: minSpare"
    ),
    pytest.param(_spec(), _observed(rate=0.2, lead=50.0), 18, Bound.DEMAND, id="mean 10: demand"),
    pytest.param(
        _spec(), _observed(rate=0.2, lead=None), 2, Bound.MIN_SPARE, id="lead time unknown yet"
    ),
    pytest.param(
        _spec(startup=50.0),
        _observed(rate=0.2, lead=None),
        18,
        Bound.DEMAND,
        id="lead time unknown, configured",
    ),
    pytest.param(
        _spec(startup=50.0),
        _observed(rate=0.2, lead=5.0),
        18,
        Bound.DEMAND,
        id="configured lead time wins over the measured",
    ),
    pytest.param(_spec(), _observed(rate=1e6, lead=60.0), 40, Bound.MAX_SPARE, id="huge: maxSpare"),
    pytest.param(
        _spec(max_total=30),
        _observed(busy=20, rate=0.2, lead=50.0),
        10,
        Bound.BUDGET,
        id="the budget binds: maxTotal - busy",
    ),
    pytest.param(
        _spec(max_total=30),
        _observed(busy=35, rate=0.2, lead=50.0, replicas=3),
        0,
        Bound.BUDGET,
        id="over budget: no spare at all, at once",
    ),
]


@pytest.mark.parametrize(("spec", "observed", "replicas", "bound"), POOL)
def test_pool_sized_from_demand(
    spec: PoolSpec, observed: PoolObservation, replicas: int, bound: Bound
) -> None:
    decision = decide_pool(spec, observed, now=NOW, last=PoolMemory())
    assert (decision.replicas, decision.bound) == (replicas, bound)


# The shape.

rates = st.floats(min_value=0.0, max_value=50.0, allow_nan=False)
leads = st.floats(min_value=0.0, max_value=600.0, allow_nan=False)
probabilities = st.floats(min_value=1e-6, max_value=0.5)


@settings(max_examples=400, deadline=None)
@given(rate=rates, more=rates, lead=leads, p=probabilities)
def test_more_starts_never_fewer_spares(rate: float, more: float, lead: float, p: float) -> None:
    low = spares_for_demand(rate=rate, lead_time=lead, shortfall_probability=p)
    high = spares_for_demand(rate=rate + more, lead_time=lead, shortfall_probability=p)
    assert high >= low


@settings(max_examples=400, deadline=None)
@given(rate=rates, lead=leads, longer=leads, p=probabilities)
def test_longer_lead_time_never_fewer_spares(
    rate: float, lead: float, longer: float, p: float
) -> None:
    low = spares_for_demand(rate=rate, lead_time=lead, shortfall_probability=p)
    high = spares_for_demand(rate=rate, lead_time=lead + longer, shortfall_probability=p)
    assert high >= low


@settings(max_examples=200, deadline=None)
@given(rate=rates, lead=leads, p=probabilities, stricter=st.floats(min_value=0.01, max_value=1.0))
def test_a_stricter_probability_never_fewer_spares(
    rate: float, lead: float, p: float, stricter: float
) -> None:
    loose = spares_for_demand(rate=rate, lead_time=lead, shortfall_probability=p)
    strict = spares_for_demand(rate=rate, lead_time=lead, shortfall_probability=p * stricter)
    assert strict >= loose


WINDOW = 900.0


def _steady(rate: float, *, begin: float, end: float) -> list[float]:
    """Starts evenly spaced at ``rate`` per second from ``begin`` until ``end``."""
    if rate <= 0:
        return []
    step = 1.0 / rate
    count = int((end - begin) * rate)
    return [end - i * step for i in range(count)][::-1]


@settings(max_examples=200, deadline=None)
@given(
    before=st.floats(min_value=0.0, max_value=0.05),
    factor=st.floats(min_value=2.0, max_value=50.0),
)
def test_estimate_follows_a_rise_within_an_eighth_of_the_window(
    before: float, factor: float
) -> None:
    after = max(before, 0.01) * factor
    now = 10_000.0
    rise = now - WINDOW / 8
    starts = _steady(before, begin=now - 2 * WINDOW, end=rise) + _steady(after, begin=rise, end=now)
    estimate = estimate_start_rate(starts, now=now, window=WINDOW)
    # The last eighth holds after x WINDOW/8 starts, give or take the one at its edge.
    assert estimate >= after - 8 / WINDOW


@settings(max_examples=200, deadline=None)
@given(
    before=st.floats(min_value=0.01, max_value=1.0),
    quiet=st.floats(min_value=0.0, max_value=WINDOW / 2),
)
def test_estimate_forgets_a_busy_past_slowly(before: float, quiet: float) -> None:
    now = 10_000.0
    stop = now - quiet
    starts = _steady(before, begin=stop - 2 * WINDOW, end=stop)
    estimate = estimate_start_rate(starts, now=now, window=WINDOW)
    # Starts stopped ``quiet`` seconds ago (at most half the window): the whole window still
    # holds the busy past that has not aged out.
    assert estimate >= before * (WINDOW - quiet) / WINDOW - 1 / WINDOW
    # ... and once the whole window is quiet, nothing is left.
    assert estimate_start_rate(starts, now=stop + WINDOW + 1, window=WINDOW) == 0.0


@settings(max_examples=200, deadline=None)
@given(
    starts=st.lists(st.floats(min_value=0.0, max_value=2_000.0), max_size=60),
    extra=st.floats(min_value=0.0, max_value=2_000.0),
)
def test_one_more_start_never_lowers_the_estimate(starts: list[float], extra: float) -> None:
    now = 2_000.0
    before = estimate_start_rate(starts, now=now, window=WINDOW)
    assert estimate_start_rate([*starts, extra], now=now, window=WINDOW) >= before
    # Never below the plain average over the window.
    recent = [t for t in starts if now - WINDOW <= t <= now]
    assert before >= len(recent) / WINDOW - 1e-12


ESTIMATES = [
    # (starts, now, window, expected)
    pytest.param([], 100.0, 900.0, 0.0, id="no starts"),
    pytest.param([50.0], 100.0, 0.0, 0.0, id="no window"),
    pytest.param([200.0], 100.0, 900.0, 0.0, id="a start in the future is ignored"),
    pytest.param([0.0], 1000.0, 900.0, 0.0, id="older than the window"),
    pytest.param([990.0], 1000.0, 800.0, 1 / 100, id="one start just now: 1 per eighth"),
    pytest.param(
        [float(t) for t in range(200, 1000, 8)], 1000.0, 800.0, 0.125, id="steady: its rate"
    ),
]


@pytest.mark.parametrize(("starts", "now", "window", "expected"), ESTIMATES)
def test_estimate_start_rate(
    starts: list[float], now: float, window: float, expected: float
) -> None:
    assert estimate_start_rate(starts, now=now, window=window) == pytest.approx(expected)


LEADS = [
    pytest.param([], None, id="none measured yet"),
    pytest.param([-1.0, math.nan, math.inf], None, id="only nonsense"),
    pytest.param([30.0], 30.0, id="one"),
    pytest.param([float(s) for s in range(1, 11)], 9.0, id="p90 of 1..10, nearest rank"),
    pytest.param([20.0] * 9 + [120.0], 20.0, id="one slow pod in ten does not set p90"),
    pytest.param([20.0] * 8 + [120.0, 121.0], 120.0, id="two in ten do"),
]


@pytest.mark.parametrize(("durations", "expected"), LEADS)
def test_lead_time(durations: list[float], expected: float | None) -> None:
    assert lead_time(durations) == expected
