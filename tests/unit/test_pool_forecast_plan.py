"""The forecast in a pool's plan: its status next to what is applied, its condition, the history
stored at most every five minutes and read back at a new term (or begun anew, and said so),
Recommend against Apply. Plain values in, a plan out; no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from jibri_pod_controller.core.forecast import (
    Basis,
    ForecastState,
    History,
    Season,
    decode,
    encode,
    record,
)
from jibri_pod_controller.core.poolplan import (
    PoolPlan,
    TermMemory,
    status_patch,
    stored_history,
)
from tests.unit.test_pool_plan import NOW, busy, condition, plan, read, spare

UTC_DAY = Season("UTC")
DAY = timedelta(days=1)
CLUSTER = 10
"""Starts a day at 12:00 (NOW's time of day) in the stored history."""


def spec(mode: str = "Recommend", **forecast: Any) -> dict[str, Any]:
    return {
        "minSpare": 1,
        "maxSpare": 40,
        "demand": {
            "shortfallProbability": 0.01,
            "windowSeconds": 60,
            "startupSeconds": 30,
            "mode": mode,
            "forecast": {"timeZone": "UTC", **forecast},
        },
    }


def history_with_clusters(
    days: int = 2, *, until: datetime = NOW - timedelta(minutes=1), extra: tuple[datetime, ...] = ()
) -> History:
    """Days before NOW's, recorded whole by a round every five minutes up to ``until``, each
    with a cluster at 12:00; and ``extra`` starts."""
    first = NOW - days * DAY - timedelta(hours=12)  # a midnight
    starts = [
        (first + day * DAY + timedelta(hours=12, seconds=i)).timestamp()
        for day in range(days)
        for i in range(CLUSTER)
    ] + [t.timestamp() for t in extra]
    history = History(UTC_DAY)
    at = first
    while at <= until:
        history = record(
            history, [t for t in starts if t <= at.timestamp()], now=at.timestamp(), weeks=2
        )
        at += timedelta(minutes=5)
    return record(
        history, [t for t in starts if t <= until.timestamp()], now=until.timestamp(), weeks=2
    )


def go(
    raw: Mapping[str, Any],
    *,
    memory: TermMemory | None = None,
    status: Mapping[str, Any] | None = None,
    now: datetime = NOW,
    replicas: int = 1,
    busy_pods: tuple[Any, ...] = (),
) -> PoolPlan:
    pool = read(
        raw, replicas=replicas, spares=[spare("a")], busy_pods=busy_pods, status=status or {}
    )
    if memory is None:
        memory = TermMemory.from_status(pool.status)
    return plan(pool, memory=memory, now=now)


def with_outlook(got: PoolPlan) -> TermMemory:
    """The memory once the outlook the plan asked for was built (as the loop does)."""
    assert got.outlook is not None
    return got.memory.with_outlook(got.outlook.build())


STATUS_KEYS = {
    "mode",
    "basis",
    "spares",
    "forecast",
    "reactive",
    "expectedStarts",
    "recommendedSpare",
    "recommendedBound",
    "referenceDays",
    "historyDays",
    "historyStarts",
    "historyBytes",
    "historyStoredAt",
}


def test_a_new_pool_records_says_it_has_no_history_and_asks_for_an_outlook() -> None:
    got = go(spec())
    forecast = got.status["forecast"]
    assert set(forecast) == STATUS_KEYS
    assert (forecast["basis"], forecast["mode"], forecast["historyDays"]) == (
        "NoHistory",
        "Recommend",
        0,
    )
    said = condition(got.status, "Forecast")
    assert (said["status"], said["reason"]) == ("False", "NoHistory")
    assert "recording from 2026-06-04T00:00:00Z" in said["message"]
    assert "the reactive estimate alone" in said["message"]
    assert got.outlook is not None
    assert got.memory.forecast is not None
    # Stored at the first round: a successor finds the record's beginning.
    assert decode(got.status["startHistory"]).first_day == UTC_DAY.day(NOW.timestamp()) + 1
    assert forecast["historyBytes"] == len(got.status["startHistory"])


def test_the_history_is_stored_at_most_every_five_minutes() -> None:
    memory, status = None, None
    stored = []
    for seconds in (0, 60, 299, 300, 360, 600):
        got = go(spec(), memory=memory, status=status, now=NOW + timedelta(seconds=seconds))
        if "startHistory" in status_patch(status or {}, got.status):
            stored.append(seconds)
        memory, status = got.memory, {**(status or {}), **got.status}
    assert stored == [0, 300, 600]


def test_recent_starts_keep_what_the_stored_history_lacks() -> None:
    started = busy("b", NOW + timedelta(seconds=10))
    first = go(spec(), busy_pods=(started,))  # stored at NOW, before the start
    later = go(
        spec(),
        memory=first.memory,
        status=first.status,
        now=NOW + timedelta(seconds=200),
        busy_pods=(started,),
    )
    # 190 s old, past the 60 s window, but not in the stored history yet: kept.
    assert [s["uid"] for s in later.status["recentStarts"]] == ["u-b"]
    stored = go(
        spec(),
        memory=later.memory,
        status=later.status,
        now=NOW + timedelta(seconds=300),
        busy_pods=(started,),
    )
    assert decode(stored.status["startHistory"]).starts == 1
    after = go(
        spec(),
        memory=stored.memory,
        status=stored.status,
        now=NOW + timedelta(seconds=301),
        busy_pods=(started,),
    )
    assert after.status["recentStarts"] == []


def test_a_new_term_goes_on_from_the_stored_history() -> None:
    stored_at = NOW - timedelta(seconds=30)
    old, new = NOW - timedelta(seconds=50), NOW - timedelta(seconds=20)
    history = history_with_clusters(until=stored_at, extra=(old,))
    assert history.latest == old.timestamp()
    status = {
        "startHistory": encode(history),
        "recentStarts": [{"at": old.isoformat(), "uid": "u-old"}],
        "forecast": {"historyStoredAt": stored_at.isoformat()},
    }
    pods = (busy("old", old), busy("new", new))
    got = go(spec("Apply"), status=status, busy_pods=pods)
    assert got.memory.forecast is not None
    # The start the stored history has is not counted again; the one since is.
    assert got.memory.forecast.history.starts == history.starts + 1
    assert "startHistory" not in got.status, "stored 30 s ago: not due"
    assert got.events == ()
    # Its outlook built: the next round sizes the pool from the history's cluster.
    memory = with_outlook(got)
    sized = go(spec("Apply"), memory=memory, status={**status, **got.status}, busy_pods=pods)
    assert sized.decision is not None
    assert sized.decision.bound == "forecast"
    assert sized.replicas is not None
    assert sized.replicas > CLUSTER
    forecast = sized.status["forecast"]
    assert (forecast["basis"], forecast["referenceDays"], forecast["historyDays"]) == (
        "History",
        2,
        2,
    )
    assert forecast["recommendedSpare"] == sized.decision.desired
    said = condition(sized.status, "Forecast")
    assert (said["status"], said["reason"]) == ("True", "History")
    assert said["message"] == "forecast from 2 reference days of the same kind (2 days recorded)"


RESETS = [
    pytest.param("not a history", "could not be read", id="unreadable"),
    pytest.param(
        encode(History(Season("Europe/Berlin"))),
        "was kept on another clock (Europe/Berlin, not UTC)",
        id="another time zone",
    ),
    pytest.param(
        encode(History(Season("UTC", day_seconds=120.0))),
        "another clock (UTC, a day of 120 s, not UTC)",
        id="another day length",
    ),
]


@pytest.mark.parametrize(("stored", "said"), RESETS)
def test_a_history_that_cannot_be_used_begins_anew_and_says_so(stored: str, said: str) -> None:
    got = go(spec(), status={"startHistory": stored})
    [event] = got.events
    assert (event.reason, event.warning) == ("ForecastHistoryReset", True)
    assert said in event.message
    assert said in condition(got.status, "Forecast")["message"]
    # The new one is stored at once, over the one that could not be used.
    assert decode(got.status["startHistory"]).season == UTC_DAY
    again = go(spec(), memory=got.memory, status={**got.status}, now=NOW + timedelta(seconds=5))
    assert again.events == ()


def test_a_time_zone_changed_during_a_term_begins_anew() -> None:
    first = go(spec())
    got = go(spec(timeZone="Europe/Berlin"), memory=first.memory, status=first.status)
    [event] = got.events
    assert "the forecast's clock changed (UTC to Europe/Berlin)" in event.message
    assert got.memory.forecast is not None
    assert got.memory.forecast.history.season == Season("Europe/Berlin")


@pytest.mark.parametrize("mode", ["Recommend", "Apply"])
def test_recommend_applies_nothing_and_says_what_apply_would_set(mode: str) -> None:
    history = history_with_clusters()
    status = {"startHistory": encode(history)}
    memory = with_outlook(go(spec(mode), status=status))
    got = go(spec(mode), memory=memory, status=status)
    assert got.decision is not None
    forecast = got.status["forecast"]
    assert forecast["basis"] == "History"
    assert forecast["recommendedBound"] == "forecast"
    assert forecast["recommendedSpare"] > CLUSTER
    ready = condition(got.status, "Ready")["message"]
    if mode == "Recommend":
        assert (got.replicas, got.decision.desired, got.decision.bound) == (None, 1, "minSpare")
        assert f"the forecast would ask for {forecast['recommendedSpare']}" in ready
        assert "mode Recommend: not applied" in ready
    else:
        assert got.replicas == got.decision.desired == forecast["recommendedSpare"]
        assert "would ask" not in ready


def test_without_a_lead_time_it_records_and_forecasts_nothing() -> None:
    raw = spec()
    raw["demand"]["startupSeconds"] = 0  # and no pod measured Ready
    pool = read(raw, replicas=1, spares=[replace(spare("a"), ready_since=None)])
    got = plan(pool)
    said = condition(got.status, "Forecast")
    assert (said["status"], said["reason"]) == ("False", "LeadTimeUnknown")
    assert got.outlook is None
    assert got.status["forecast"]["spares"] == 0
    assert got.memory.forecast is not None


def test_turned_off_its_status_goes_and_its_history_stays() -> None:
    on = go(spec())
    off_spec = spec()
    off_spec["demand"]["forecast"] = {"enabled": False}
    off = go(off_spec, memory=on.memory, status=on.status)
    patch = status_patch(on.status, off.status)
    assert patch["forecast"] is None
    assert "startHistory" not in patch
    assert all(c["type"] != "Forecast" for c in off.status["conditions"])
    assert off.memory.forecast is None


def test_a_leader_shutting_down_stores_the_history_it_has() -> None:
    got = go(spec(), busy_pods=(busy("b", NOW - timedelta(seconds=5)),))
    later = NOW + timedelta(seconds=42)
    patch = stored_history(got.memory, now=later)
    assert patch is not None
    assert set(patch) == {"startHistory", "forecast"}
    assert decode(patch["startHistory"]).starts == 1
    assert patch["forecast"] == {
        "historyBytes": len(patch["startHistory"]),
        "historyStoredAt": "2026-06-03T12:00:42Z",
    }
    assert stored_history(TermMemory(), now=later) is None
    assert (
        stored_history(TermMemory(forecast=ForecastState(History(UTC_DAY))), now=later) is not None
    )


def test_the_answer_is_the_reactive_estimate_before_the_outlook_is_built() -> None:
    history = history_with_clusters()
    starts = (busy("b1", NOW - timedelta(seconds=40)), busy("b2", NOW - timedelta(seconds=50)))
    got = go(spec("Apply"), status={"startHistory": encode(history)}, busy_pods=starts)
    forecast = got.status["forecast"]
    assert forecast["basis"] == Basis.NO_HISTORY.value
    assert forecast["spares"] == forecast["reactive"] > 0
    assert got.decision is not None
    assert got.decision.bound == "demand"
