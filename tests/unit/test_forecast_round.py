"""A forecast round, as the pool plan and the benchmark both run it: the starts recorded once
by identity, the outlook renewed before it ends (or at once when it no longer holds), what
answers while one is being built elsewhere, and how often a history is worth storing."""

from __future__ import annotations

import dataclasses

import pytest

from jibri_pod_controller.core.forecast import (
    REAL_DAY,
    Basis,
    ForecastState,
    History,
    Outlook,
    OutlookRequest,
    Season,
    Tuning,
    build_outlook,
    forecast_round,
    forecast_spares,
    gap_seconds,
    record,
    store_interval,
)
from tests.unit.test_forecast import BERLIN, DAY, MONDAY, _with_clusters

LEAD = 40.0
P = 0.01
WINDOW = 900.0
HOUR = 3_600.0


def round_at(
    state: ForecastState,
    now: float,
    *,
    starts: dict[str, float] | None = None,
    lead: float | None = LEAD,
    p: float = P,
    build: bool = False,
) -> tuple[ForecastState, object, OutlookRequest | None]:
    step = forecast_round(
        state,
        starts=starts or {},
        now=now,
        weeks=2,
        exhausted=False,
        lead_time=lead,
        shortfall_probability=p,
        window=WINDOW,
        build=OutlookRequest.build if build else None,
    )
    return step.state, step.answer, step.request


@pytest.mark.parametrize(
    ("day", "gap", "store"),
    [
        pytest.param(REAL_DAY, 600.0, 300.0, id="a real day: 10 and 5 minutes"),
        pytest.param(REAL_DAY / 2, 300.0, 150.0, id="half a day: its share"),
        pytest.param(3_600.0, 60.0, 30.0, id="an hour: never below a minute"),
        pytest.param(120.0, 60.0, 30.0, id="a test's two minutes"),
    ],
)
def test_a_gap_is_a_share_of_the_day_but_never_under_a_minute(
    day: float, gap: float, store: float
) -> None:
    season = Season("UTC", day_seconds=day)
    assert (gap_seconds(season), store_interval(season)) == (gap, store)


def test_a_pause_of_a_slow_round_in_a_compressed_day_is_no_gap() -> None:
    season = Season("UTC", day_seconds=120.0)
    zero = season.start_of(season.day(MONDAY) + 1)
    history = record(History(season), [], now=zero, weeks=1)
    history = record(history, [], now=zero + 30.0, weeks=1)  # a quarter of the day
    assert history.gaps == ()
    history = record(history, [], now=zero + 95.0, weeks=1)
    assert history.gaps == (season.day(zero),)


def test_a_start_seen_a_round_late_counts_when_its_caller_knows_it_is_new() -> None:
    history = record(History(BERLIN), [MONDAY + 20.0], now=MONDAY + 30.0, weeks=2)
    late = MONDAY + 10.0  # before the latest recorded, seen only now
    assert record(history, [late], now=MONDAY + 40.0, weeks=2).starts == 1
    assert record(history, [late], now=MONDAY + 40.0, weeks=2, fresh=True).starts == 2


def test_a_round_records_each_start_once_by_identity() -> None:
    state = ForecastState(History(BERLIN))
    state, _, _ = round_at(state, MONDAY + 60.0, starts={"b": MONDAY + 50.0})
    # "a" started before "b" but is seen a round later; "b" is offered again.
    starts = {"a": MONDAY + 40.0, "b": MONDAY + 50.0}
    state, _, _ = round_at(state, MONDAY + 70.0, starts=starts)
    state, _, _ = round_at(state, MONDAY + 80.0, starts=starts)
    assert state.history.starts == 2
    assert state.recorded == frozenset({"a", "b"})
    # A start "in the future" (a clock ahead) is not recorded, and not forgotten either.
    state, _, _ = round_at(state, MONDAY + 90.0, starts={"c": MONDAY + 95.0})
    assert (state.history.starts, state.recorded) == (2, frozenset())
    state, _, _ = round_at(state, MONDAY + 100.0, starts={"c": MONDAY + 95.0})
    assert (state.history.starts, state.recorded) == (3, frozenset({"c"}))


def test_without_a_lead_time_the_history_is_recorded_and_nothing_forecast() -> None:
    state, answer, request = round_at(
        ForecastState(History(BERLIN)), MONDAY + 60.0, starts={"a": MONDAY + 1.0}, lead=None
    )
    assert (answer, request, state.history.starts) == (None, None, 1)


def test_the_first_round_asks_for_an_outlook_and_answers_reactively_meanwhile() -> None:
    history, tomorrow = _with_clusters(BERLIN, days=3, at_hour=10.0, size=30)
    now = tomorrow + 10 * HOUR - 20.0  # just before the cluster
    state, answer, request = round_at(ForecastState(history), now)
    assert request is not None
    assert request.at == now
    assert answer is not None
    assert (answer.basis, answer.forecast) == (Basis.NO_HISTORY, 0)
    # Built elsewhere and handed back: the next round answers from history.
    state = state.with_outlook(request.build())
    state, answer, request = round_at(state, now + 1.0)
    assert request is None
    assert answer is not None
    assert answer.basis is Basis.HISTORY
    assert answer.forecast > 10
    # The benchmark builds it at once: the same answer in its first round.
    _, at_once, _ = round_at(ForecastState(history), now + 1.0, build=True)
    assert at_once == answer


def test_an_outlook_of_another_clock_is_not_taken() -> None:
    history, tomorrow = _with_clusters(BERLIN, days=2, at_hour=10.0, size=5)
    other = build_outlook(
        dataclasses.replace(history, season=Season("UTC")),
        now=tomorrow + 9 * HOUR,
        lead_time=LEAD,
        shortfall_probability=P,
    )
    assert ForecastState(history).with_outlook(other).outlook is None


def _held(history: History, at: float) -> ForecastState:
    """A state holding the outlook a round at ``at`` asked for."""
    request = OutlookRequest(history, at, LEAD, P, WINDOW + HOUR, Tuning(), ())
    return ForecastState(history, outlook=request.build())


RENEWALS = [
    # (built at, now, the request's moment: None for none, "now", "midnight")
    pytest.param(9 * HOUR, 9 * HOUR + 600.0, None, id="an hour ahead: it holds"),
    pytest.param(9 * HOUR, 9 * HOUR + 2_800.0, "now", id="its last quarter: the next, from now"),
    pytest.param(9 * HOUR, 10 * HOUR + 60.0, "now", id="past its end: at once"),
    pytest.param(23 * HOUR + 1_800.0, 23 * HOUR + 2_100.0, None, id="ends at midnight: holds"),
    pytest.param(23 * HOUR, DAY - 400.0, "midnight", id="near midnight: the next day's"),
]


@pytest.mark.parametrize(("built", "now", "at"), RENEWALS)
def test_an_outlook_is_renewed_before_it_ends(built: float, now: float, at: str | None) -> None:
    history, tomorrow = _with_clusters(BERLIN, days=3, at_hour=10.0, size=30)
    state = _held(history, tomorrow + built)
    _, _, request = round_at(state, tomorrow + now)
    if at is None:
        assert request is None
        return
    assert request is not None
    assert request.at == (tomorrow + now if at == "now" else tomorrow + DAY)
    # The next one covers now, and reaches back a whole reactive window from it.
    outlook = request.build()
    bucket = BERLIN.bucket(tomorrow + now)
    assert outlook.covers(BERLIN.bucket(tomorrow + now - WINDOW), bucket)


def test_a_lead_time_a_step_away_still_answers_while_the_next_outlook_is_built() -> None:
    history, tomorrow = _with_clusters(BERLIN, days=3, at_hour=10.0, size=30)
    now = tomorrow + 10 * HOUR - 20.0
    state = _held(history, now - 60.0)
    _, answer, request = round_at(state, now, lead=LEAD * 1.5)
    assert request is not None
    assert request.lead_time == LEAD * 1.5
    assert answer is not None
    assert answer.basis is Basis.HISTORY
    # Another risk is another forecast: the reactive estimate alone until it is built.
    _, answer, request = round_at(state, now, p=0.001)
    assert request is not None
    assert answer is not None
    assert answer.basis is Basis.NO_HISTORY


def test_an_outlook_reaching_back_into_yesterday_answers_by_yesterdays_references() -> None:
    # Monday to Friday recorded; an outlook built for Saturday reaches back into Friday night.
    history, saturday = _with_clusters(BERLIN, days=5, at_hour=10.0, size=5)
    outlook: Outlook = build_outlook(
        history, now=saturday, lead_time=LEAD, shortfall_probability=P, window=2 * HOUR
    )
    friday_night = saturday - 600.0
    assert (outlook.references_at(BERLIN.bucket(friday_night)), outlook.reference_days) == (4, 0)
    at_night = forecast_spares(
        outlook, starts=(), now=friday_night, lead_time=LEAD, window=WINDOW, shortfall_probability=P
    )
    on_saturday = forecast_spares(
        outlook,
        starts=(),
        now=saturday + 60.0,
        lead_time=LEAD,
        window=WINDOW,
        shortfall_probability=P,
    )
    assert (at_night.basis, on_saturday.basis) == (Basis.HISTORY, Basis.NO_HISTORY)
