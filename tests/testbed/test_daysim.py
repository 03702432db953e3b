"""The simulated day the policy benchmark plays: demand, pods, ReplicaSet and accounting.

Small hand-made days whose outcome is known, so that the benchmark's figures can be trusted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.daysim import (
    Demand,
    DemandFileError,
    Recording,
    UniformStartup,
    World,
    compress,
    replay,
    simulate,
    synthetic_day,
    write_csv,
)
from bench.sizers import Hpa, Pool, Static
from jibri_pod_controller.core.pools import DemandSpec, PoolSpec

T0 = datetime(2026, 3, 10, tzinfo=UTC)


def _day(*recordings: tuple[float, float], hours: float = 1.0) -> Demand:
    return Demand(
        t0=T0,
        duration=hours * 3600.0,
        recordings=tuple(Recording(start, length) for start, length in recordings),
    )


def test_synthetic_day_is_seeded_and_shaped() -> None:
    one, again, other = synthetic_day(1), synthetic_day(1), synthetic_day(2)
    assert one == again
    assert one.recordings != other.recordings
    # t0 is local midnight in Berlin (UTC+1 in March): hour h of the day is h x 3600 s.
    night = [r for r in one.recordings if r.start < 5 * 3600]
    morning = [r for r in one.recordings if 9 * 3600 <= r.start < 11 * 3600]
    assert len(morning) > 10 * len(night)
    assert len(one.bursts) == 3
    for begin in one.bursts:
        burst = [r for r in one.recordings if begin <= r.start <= begin + 20.0]
        assert len(burst) >= 12
    lengths = sorted(r.length for r in one.recordings)
    median = lengths[len(lengths) // 2]
    assert lengths[-1] > 5 * median, "the recording lengths have a heavy tail"


def test_spaced_starts_with_one_spare_never_fall_short() -> None:
    day = _day((60.0, 60.0), (900.0, 60.0), (1800.0, 60.0))
    outcome = simulate(day, Static(1))
    assert outcome.shortfalls == []
    assert outcome.peak_pods == 2  # the busy one and its replacement
    assert outcome.scale_writes == 0


def test_no_spare_means_every_start_falls_short() -> None:
    day = _day((60.0, 60.0), (900.0, 60.0))
    outcome = simulate(day, Static(0))
    assert outcome.shortfalls == [60.0, 900.0]
    assert outcome.shortfall_percent == 100.0
    assert outcome.idle_pod_hours == 0.0


def test_two_starts_at_once_with_one_spare_one_falls_short() -> None:
    outcome = simulate(_day((60.0, 600.0), (61.0, 600.0)), Static(1))
    assert outcome.shortfalls == [61.0]


def test_idle_and_busy_pod_hours() -> None:
    assert simulate(_day(), Static(3)).idle_pod_hours == pytest.approx(3.0)
    outcome = simulate(_day((100.0, 1800.0)), Static(1))
    assert outcome.busy_pod_hours == pytest.approx(0.5)
    # The spare was idle until 100 s; its replacement from about 100 s plus its start-up on.
    assert 0.95 < outcome.idle_pod_hours < 1.0


def test_same_seed_same_outcome() -> None:
    day = synthetic_day(5, hours=11.0)
    first, second = simulate(day, Static(6), seed=3), simulate(day, Static(6), seed=3)
    assert first.shortfalls == second.shortfalls
    assert first.idle_pod_hours == second.idle_pod_hours


def _demand_pool() -> Pool:
    spec = PoolSpec(
        deployment_name="jibri",
        min_spare=1,
        max_spare=30,
        max_total=None,
        scale_down_delay_seconds=300.0,
        demand=DemandSpec(shortfall_probability=0.01, window_seconds=900.0),
    )
    return Pool(spec, "demand")


def test_demand_pool_grows_with_starts_and_shrinks_after() -> None:
    # A start every 10 s for 10 minutes, then nothing for the rest of the hour.
    day = _day(*((600.0 + 10.0 * i, 1200.0) for i in range(60)))
    pool = _demand_pool()
    outcome = simulate(day, pool)
    peak = max(s.replicas for s in outcome.samples)
    assert peak > 3
    assert outcome.samples[-1].replicas == 1
    assert outcome.scale_writes >= 2
    assert set(pool.bounds) == {"minSpare", "demand"}
    assert len(outcome.shortfalls) < len(simulate(day, Static(1)).shortfalls)


def test_hpa_grows_on_the_busy_ratio_and_writes_nothing_when_idle() -> None:
    assert simulate(_day(), Hpa(0.7)).scale_writes == 0
    day = _day(*((600.0 + 10.0 * i, 3000.0) for i in range(60)))
    outcome = simulate(day, Hpa(0.7))
    assert max(s.replicas for s in outcome.samples) > 10
    assert outcome.scale_writes > 0


def test_csv_round_trip(tmp_path: Path) -> None:
    day = synthetic_day(4, hours=10.0)
    path = tmp_path / "day.csv"
    write_csv(day, path)
    back = replay(path)
    assert len(back.recordings) == len(day.recordings)
    shift = back.recordings[0].start - day.recordings[0].start
    for mine, theirs in zip(day.recordings, back.recordings, strict=True):
        assert theirs.start - mine.start == pytest.approx(shift, abs=1e-3)
        assert theirs.length == pytest.approx(mine.length, abs=1e-3)
    assert back.t0.tzinfo is not None


def test_csv_accepts_unix_seconds_comments_and_no_header(tmp_path: Path) -> None:
    path = tmp_path / "day.csv"
    path.write_text(
        "# exported\n1773100800,1773101400\n2026-03-10T01:00:00+01:00,2026-03-10T01:30:00Z\n"
    )
    day = replay(path)
    assert [(r.start, r.length) for r in day.recordings] == [(0.0, 600.0), (0.0, 1800.0 + 3600.0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "start,end\n2026-03-10T08:00:00,2026-03-10T09:00:00Z\n",
            "line 2: .* no UTC offset",
            id="naive",
        ),
        pytest.param(
            "start,end\n2026-03-10T09:00:00Z,2026-03-10T08:00:00Z\n",
            "line 2: end .* before",
            id="backwards",
        ),
        pytest.param("1,2,3\n", "line 1: expected two fields", id="three fields"),
        pytest.param("yesterday,today\n", "line 1: 'yesterday' is neither", id="not a time"),
        pytest.param("start,end\n", "no recordings", id="empty"),
    ],
)
def test_csv_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "day.csv"
    path.write_text(text)
    with pytest.raises(DemandFileError, match=message):
        replay(path)


def test_compress_keeps_the_shape_faster() -> None:
    day = synthetic_day(3)
    fast = compress(day, factor=144.0)
    assert fast.duration == pytest.approx(600.0)
    assert [r.start * 144.0 for r in fast.recordings] == pytest.approx(
        [r.start for r in day.recordings]
    )
    assert fast.bursts == pytest.approx(tuple(b / 144.0 for b in day.bursts))
    some = compress(day, factor=144.0, keep=0.25, seed=1)
    assert some == compress(day, factor=144.0, keep=0.25, seed=1)
    assert 0.15 * len(day.recordings) < len(some.recordings) < 0.35 * len(day.recordings)
    with pytest.raises(ValueError, match="keep"):
        compress(day, factor=144.0, keep=0.0)


def test_uniform_startup_is_what_the_pods_take() -> None:
    world = World(startup=UniformStartup(5.0, 5.0))
    # The replacement is asked for after the webhook (~0.2 s) and the ReplicaSet (0.1 s),
    # then takes exactly 5 s: a start 4 s after the first finds nothing, one 6 s after does.
    early = simulate(_day((100.0, 1800.0), (104.0, 60.0)), Static(1), world=world)
    late = simulate(_day((100.0, 1800.0), (106.0, 60.0)), Static(1), world=world)
    assert (early.shortfalls, late.shortfalls) == ([104.0], [])
    # Starting pods cost as much as waiting ones: one idle pod all along, but for the two
    # moments between a start and its detach (~0.2 s each).
    assert late.idle_pod_hours * 3600 == pytest.approx(3600 - 0.4, abs=0.4)


def test_split_cuts_every_figure_at_the_given_times() -> None:
    # One spare, two hours: a start in each hour, the second hour's two at once (one short).
    day = _day((600.0, 60.0), (4_000.0, 600.0), (4_001.0, 600.0), hours=2.0)
    outcome = simulate(day, Static(1), split=[3_600.0])
    first, second = outcome.periods
    assert (first.begin, first.end, second.begin, second.end) == (0.0, 3_600.0, 3_600.0, 7_200.0)
    assert (first.recordings, first.shortfalls) == (1, 0)
    assert (second.recordings, second.shortfalls) == (2, 1)
    assert first.idle_pod_hours + second.idle_pod_hours == pytest.approx(outcome.idle_pod_hours)
    assert first.busy_pod_hours + second.busy_pod_hours == pytest.approx(outcome.busy_pod_hours)
    assert second.busy_pod_hours == pytest.approx(600.0 / 3_600.0, abs=0.01)
    assert [p.recordings for p in simulate(day, Static(1)).periods] == [3]
