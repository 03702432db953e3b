"""The forecast from a pool's own history: its clock, its record, its encoding, its spares.

Tables for the clock across DST changes and for the encoding's refusals; Hypothesis for the
round trip and the shape of the spares (more history never asks for fewer; a compressed day
forecasts what a real one does).
"""

from __future__ import annotations

import base64
import math
import random
import struct
import zlib
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jibri_pod_controller.core.demand import estimate_start_rate, spares_for_demand
from jibri_pod_controller.core.forecast import (
    BUCKETS_PER_DAY,
    Basis,
    DayStarts,
    ForecastError,
    History,
    Season,
    Tuning,
    build_outlook,
    decode,
    encode,
    forecast_spares,
    lead_step,
    nb_quantile,
    record,
    reference_samples,
    region_shifts,
)

BERLIN = Season("Europe/Berlin")


def _t(iso: str) -> float:
    return datetime.fromisoformat(iso).astimezone(UTC).timestamp()


def _local(season: Season, iso: str) -> tuple[int, float]:
    """The weekday and the local hour of the day of a time, as the season sees it."""
    day, offset = divmod(season.bucket(_t(iso)), season.buckets_per_day)
    return Season.weekday(day), offset * season.bucket_seconds / 3600


# ---------------------------------------------------------------------------------------------
# The clock

CLOCK = [
    # (zone, time, weekday (0 Monday), local hour)
    pytest.param("UTC", "2026-04-13T08:00:00Z", 0, 8.0, id="UTC: a Monday at 08:00"),
    pytest.param("Europe/Berlin", "2026-04-13T08:00:00Z", 0, 10.0, id="Berlin in summer: +2"),
    pytest.param("Europe/Berlin", "2026-01-01T00:00:00Z", 3, 1.0, id="Berlin in winter: +1"),
    pytest.param("America/New_York", "2026-04-13T03:00:00Z", 6, 23.0, id="New York: Sunday"),
    # Spring forward in Berlin (2026-03-29, 02:00 CET -> 03:00 CEST): 02:xx does not exist.
    pytest.param("Europe/Berlin", "2026-03-29T00:59:50Z", 6, 1 + 3590 / 3600, id="before spring"),
    pytest.param("Europe/Berlin", "2026-03-29T01:00:00Z", 6, 3.0, id="after spring: 03:00"),
    # Fall back (2026-10-25, 03:00 CEST -> 02:00 CET): 02:30 happens twice, in the same bucket.
    pytest.param("Europe/Berlin", "2026-10-25T00:30:00Z", 6, 2.5, id="02:30 CEST"),
    pytest.param("Europe/Berlin", "2026-10-25T01:30:00Z", 6, 2.5, id="02:30 CET, an hour later"),
]


@pytest.mark.parametrize(("zone", "iso", "weekday", "hour"), CLOCK)
def test_local_time_of_day_and_week(zone: str, iso: str, weekday: int, hour: float) -> None:
    assert _local(Season(zone), iso) == (weekday, pytest.approx(hour))


def test_the_same_wall_clock_time_across_a_dst_change_is_the_same_bucket() -> None:
    # 10:00 in Berlin on the Friday before the spring change (09:00 UTC) and on the Friday
    # after it (08:00 UTC): a week apart in buckets, to the bucket.
    before = BERLIN.bucket(_t("2026-03-27T09:00:00Z"))
    after = BERLIN.bucket(_t("2026-04-03T08:00:00Z"))
    assert after - before == 7 * BUCKETS_PER_DAY


@settings(max_examples=300, deadline=None)
@given(
    t=st.floats(min_value=1.6e9, max_value=2.0e9),
    day=st.sampled_from([86_400.0, 3_600.0, 600.0, 60.0]),
)
def test_a_day_later_is_the_same_time_of_day_for_any_day_length(t: float, day: float) -> None:
    season = Season("UTC", day_seconds=day)
    assert season.bucket(t + day) - season.bucket(t) == season.buckets_per_day
    assert Season.weekday(season.day(t + 7 * day)) == Season.weekday(season.day(t))


def test_a_compressed_day_keeps_its_hours_in_place() -> None:
    # A 600 s day in Berlin: the UTC offset (one hour in winter) is one hour of that day.
    season = Season("Europe/Berlin", day_seconds=600.0)
    midnight = 600.0 * 20_454  # 1 January 2026 00:00 UTC is a multiple of any day length here
    offset = season.local_seconds(midnight) - midnight
    assert offset == pytest.approx(600.0 / 24)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"time_zone": "Mars/Olympus"}, "unknown", id="zone"),
        pytest.param({"day_seconds": 0.0}, "above 0", id="no day"),
        pytest.param({"day_seconds": float("nan")}, "above 0", id="NaN day"),
        pytest.param({"buckets_per_day": 70_000}, "65535", id="too many buckets"),
    ],
)
def test_a_season_refuses_what_has_no_clock(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ForecastError, match=message):
        Season(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The record

MONDAY = _t("2026-04-13T00:00:00+02:00")
DAY = 86_400.0


def test_record_begins_at_the_next_midnight_and_counts_each_start_once() -> None:
    history = record(History(BERLIN), [], now=MONDAY + 3_600.0, weeks=2)
    assert history.first_day == BERLIN.day(MONDAY) + 1
    starts = [MONDAY + 4_000.0, MONDAY + 4_000.0, MONDAY + 5_000.0]
    history = record(history, starts, now=MONDAY + 6_000.0, weeks=2)
    assert history.starts == 3  # two recordings may start in the same second
    again = record(history, starts, now=MONDAY + 7_000.0, weeks=2)
    assert again.starts == 3, "a start at or before the latest recorded is not counted again"
    assert again.latest == MONDAY + 5_000.0
    ignored = record(
        again, [MONDAY + 9_000.0, float("nan"), float("inf")], now=MONDAY + 8_000.0, weeks=2
    )
    assert ignored.starts == 3, "a start in the future (or not a number) is ignored"


def test_record_from_midnight_counts_that_day() -> None:
    history = record(History(BERLIN), [], now=MONDAY, weeks=2)
    assert history.first_day == BERLIN.day(MONDAY)


def test_record_forgets_days_older_than_its_weeks() -> None:
    history = History(BERLIN)
    for day in range(20):
        now = MONDAY + day * DAY + 36_000.0
        history = record(history, [now - 1.0], now=now, weeks=2)
    today = BERLIN.day(MONDAY + 19 * DAY)
    assert [d.day for d in history.days] == list(range(today - 14, today + 1))
    assert history.first_day == today - 14


def test_a_long_pause_makes_its_days_gaps() -> None:
    history = record(History(BERLIN), [], now=MONDAY, weeks=2)
    for step in range(1, 13):  # every 10 minutes for two hours: no gap
        history = record(history, [], now=MONDAY + 600.0 * step, weeks=2)
    assert history.gaps == ()
    history = record(history, [], now=MONDAY + 2 * DAY + 3_600.0, weeks=2)
    first = BERLIN.day(MONDAY)
    assert history.gaps == (first, first + 1, first + 2)
    assert history.first_day == first


def _recorded(season: Season, starts: list[float], *, begin: float, end: float) -> History:
    """The history a controller reconciling every 5 minutes from ``begin`` to ``end`` keeps
    of ``starts``."""
    history = History(season)
    step = season.day_seconds / 288
    now = begin
    while True:
        history = record(history, [t for t in starts if t <= now], now=now, weeks=2)
        if now >= end:
            return history
        now = min(end, now + step)


# ---------------------------------------------------------------------------------------------
# The encoding


def _busy_history(season: Season, *, per_day: int, days: int, seed: int = 1) -> History:
    """``per_day`` starts a day, three quarters of them in clusters just after :00 and :30."""
    rng = random.Random(seed)
    history = record(History(season), [], now=MONDAY, weeks=2)
    for day in range(days):
        base = MONDAY + day * DAY
        starts = []
        for _ in range(per_day):
            if rng.random() < 0.75:
                slot = rng.randrange(8 * 2, 18 * 2) * 1_800.0
                starts.append(base + slot + rng.lognormvariate(4.6, 0.7) - 60.0)
            else:
                starts.append(base + rng.uniform(0, DAY))
        history = record(history, starts, now=base + DAY - 1.0, weeks=2)
    return history


def test_round_trip_and_size_of_a_pool_of_1000_starts_a_day() -> None:
    history = _busy_history(BERLIN, per_day=1_000, days=15)
    assert 14_000 < history.starts <= 15_000
    text = encode(history)
    assert decode(text) == history
    assert len(text) < 20 * 1024, len(text)


def test_a_day_is_never_larger_than_a_byte_per_bucket() -> None:
    # A start in every bucket, 1 to 3 at random, for two weeks and a day: dense days.
    rng = random.Random(3)
    days = tuple(
        DayStarts(
            day,
            bytes(_packed([b for b in range(BUCKETS_PER_DAY) for _ in range(rng.randint(1, 3))])),
        )
        for day in range(20_000, 20_015)
    )
    history = History(BERLIN, first_day=20_000, latest=1.0, days=days)
    text = encode(history)
    assert decode(text) == history
    raw = zlib.decompress(base64.b64decode(text))
    assert len(raw) <= 15 * (BUCKETS_PER_DAY + 8) + 64


def _packed(offsets: list[int]) -> bytes:
    from array import array

    return array("H", offsets).tobytes()


histories = st.builds(
    lambda days, first, latest, gaps: History(
        BERLIN,
        first_day=first,
        latest=latest,
        gaps=tuple(sorted(set(gaps))),
        days=tuple(
            DayStarts(day, _packed(sorted(offsets))) for day, offsets in sorted(days.items())
        ),
    ),
    st.dictionaries(
        st.integers(min_value=-5, max_value=30_000),
        st.lists(st.integers(min_value=0, max_value=BUCKETS_PER_DAY - 1), max_size=40),
        max_size=6,
    ),
    st.none() | st.integers(min_value=-10, max_value=30_000),
    st.none() | st.floats(min_value=0, max_value=3e9),
    st.lists(st.integers(min_value=0, max_value=30_000), max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(history=histories)
def test_encode_decode_round_trip(history: History) -> None:
    assert decode(encode(history)) == history


def _raw(history: History) -> bytes:
    return zlib.decompress(base64.b64decode(encode(history)))


def _text(raw: bytes) -> str:
    return base64.b64encode(zlib.compress(raw)).decode()


ONE_DAY = History(
    BERLIN, first_day=20_000, latest=5.0, days=(DayStarts(20_000, _packed([3, 3, 9])),)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("@@not base64@@", "not base64", id="not base64"),
        pytest.param("é", "not base64", id="not ASCII"),
        pytest.param(base64.b64encode(b"hello").decode(), "not zlib", id="not zlib"),
        pytest.param(_text(b"XXXX" + _raw(ONE_DAY)[4:]), "unknown format", id="magic"),
        pytest.param(_text(_raw(ONE_DAY)[:-2]), "truncated", id="truncated"),
        pytest.param(_text(_raw(ONE_DAY) + b"\0"), "trailing", id="trailing"),
        pytest.param(
            base64.b64encode(zlib.compress(_raw(ONE_DAY))[:-4]).decode(),
            "truncated",
            id="zlib cut short",
        ),
        pytest.param("A" * (3 * 1024 * 1024), "more than", id="too long"),
        pytest.param(
            _text(_raw(ONE_DAY).replace(b"Europe/Berlin", b"Europe/Nowher")),
            "unknown",
            id="unknown zone",
        ),
    ],
)
def test_decode_refuses_what_encode_did_not_write(text: str, message: str) -> None:
    with pytest.raises(ForecastError, match=message):
        decode(text)


def test_decode_refuses_starts_outside_their_day_and_days_out_of_order() -> None:
    tiny = Season("UTC", buckets_per_day=10)
    header = b"JPF1" + bytes([3]) + b"UTC" + struct.pack("<d", 86_400.0) + bytes([10])
    header += struct.pack("<dd", float("nan"), float("nan")) + bytes([0, 0])
    assert decode(_text(header + bytes([0, 0]))) == History(tiny)  # no days, no marks
    outside = header + bytes([1, 2, 0, 1, 10, 0])  # day 1, sparse, one start at bucket 10
    with pytest.raises(ForecastError, match="outside its day"):
        decode(_text(outside))
    backwards = header + bytes([2, 4, 0, 0, 1, 0, 0, 0])  # day 2, then day 2 - 0 = 2 again
    with pytest.raises(ForecastError, match="not in order"):
        decode(_text(backwards))
    unknown = header + bytes([1, 2, 7])
    with pytest.raises(ForecastError, match="unknown day form"):
        decode(_text(unknown))


def test_a_round_without_a_ready_spare_marks_its_bucket_once() -> None:
    history = record(History(BERLIN), [], now=MONDAY, weeks=2)
    for now in (MONDAY + 100.0, MONDAY + 101.0, MONDAY + 105.0, MONDAY + 200.0):
        history = record(history, [], now=now, weeks=2, exhausted=True)
    history = record(history, [], now=MONDAY + 300.0, weeks=2, exhausted=False)
    [marks] = history.short
    assert (marks.day, marks.view().tolist()) == (BERLIN.day(MONDAY), [10, 20])
    assert decode(encode(history)) == history


def test_counts_where_the_pool_ran_dry_are_scaled_up() -> None:
    # Ten starts seen at 10:00 on Monday; the pool had no Ready spare from 10:00:10 to
    # 10:00:40: starts then were lost. Tuesday's sample for the window from 10:00 is scaled
    # up by its share without a spare (4 of 5 buckets: five times, capped at `lost`).
    ten = MONDAY + 36_000.0
    history = record(History(BERLIN), [], now=MONDAY, weeks=2)
    now = MONDAY
    while now < MONDAY + DAY:
        now += 5.0
        seen = [ten + i for i in range(10)]
        dry = ten + 10.0 <= now < ten + 50.0
        history = record(history, [t for t in seen if t <= now], now=now, weeks=2, exhausted=dry)
    tuesday_ten = BERLIN.bucket(ten + DAY)

    def sample(lost: float) -> int:
        samples = reference_samples(
            history, first=tuesday_ten, last=tuesday_ten, window=5, ahead=0, slack=0, lost=lost
        )
        [(count,)] = samples.daily
        return count

    assert sample(1.0) == 10
    assert sample(4.0) == 40
    assert sample(8.0) == 50


# ---------------------------------------------------------------------------------------------
# The spares

LEAD = 40.0
P = 0.01


def _with_clusters(
    season: Season, *, days: int, at_hour: float, size: int, weekdays: set[int] | None = None
) -> tuple[History, float]:
    """``days`` days of history (from a Monday, local midnight) with ``size`` starts within
    20 s (of a real day) of ``at_hour`` local time each day (on ``weekdays`` only, if given);
    the history and the start of the next day (Unix seconds)."""
    day_length = season.day_seconds
    # Local midnight of a Monday (in the season's days) on or after MONDAY.
    day = math.ceil(MONDAY / day_length)
    day += -Season.weekday(day) % 7
    zero = day * day_length
    zero -= season.local_seconds(zero) - zero
    assert season.bucket(zero) == day * season.buckets_per_day
    starts = [
        zero + day * day_length + (at_hour / 24 + 20.0 / DAY * (i + 0.5) / size) * day_length
        for day in range(days)
        if weekdays is None or day % 7 in weekdays
        for i in range(size)
    ]
    end = zero + days * day_length
    return _recorded(season, starts, begin=zero, end=end), end


def _spares_at(history: History, t: float, *, scale: float = 1.0) -> int:
    """The spares at ``t``; ``scale``: the day's length over a real day's, which the lead time
    and the reactive window follow."""
    lead, window = LEAD * scale, 900.0 * scale
    outlook = build_outlook(
        history,
        now=t,
        lead_time=lead,
        shortfall_probability=P,
        window=window,
        horizon=3_600.0 * scale,
    )
    return forecast_spares(
        outlook, starts=(), now=t, lead_time=lead, window=window, shortfall_probability=P
    ).spares


def test_a_daily_cluster_is_covered_before_it_begins() -> None:
    history, tomorrow = _with_clusters(BERLIN, days=3, at_hour=10.0, size=30)
    ten = tomorrow + 10 * 3_600.0  # 10:00 in Berlin
    assert _spares_at(history, ten - 600.0) == 0, "nothing seen at 09:50"
    assert _spares_at(history, ten - 30.0) >= 30, "30 starts seen at 10:00 each day"
    assert _spares_at(history, ten + 600.0) == 0


def test_a_weekly_event_is_covered_on_its_weekday_only() -> None:
    # Thirty starts at 15:00 on Wednesdays (day 2 of the week) for two weeks.
    history, monday = _with_clusters(BERLIN, days=14, at_hour=15.0, size=30, weekdays={2})
    wednesday, thursday = monday + 2 * DAY, monday + 3 * DAY
    three = 15 * 3_600.0 - 30.0  # just before 15:00
    on_its_day = _spares_at(history, wednesday + three)
    assert on_its_day >= 30
    # On the other days it is two of ten working days: the typical level there is its share,
    # not the event.
    assert _spares_at(history, thursday + three) < on_its_day / 2


def test_a_cluster_at_10_local_is_forecast_at_10_local_after_the_dst_change() -> None:
    # Two weeks of clusters at 10:00 in Berlin up to Sunday 29 March 2026 (the spring change):
    # the Monday after, 10:00 local is 08:00 UTC, no longer 09:00.
    ten = [_t(f"2026-03-{day:02d}T10:00:00+0{1 if day < 29 else 2}:00") for day in range(16, 30)]
    assert [BERLIN.day(t) for t in ten] == list(range(BERLIN.day(ten[0]), BERLIN.day(ten[0]) + 14))
    starts = [t + i for t in ten for i in range(20)]
    monday = _t("2026-03-30T00:00:00+02:00")
    history = _recorded(BERLIN, starts, begin=_t("2026-03-16T00:00:00+01:00"), end=monday)
    at_ten = _spares_at(history, _t("2026-03-30T07:59:40Z"))
    assert at_ten >= 20
    # 09:00 UTC, where a clock in UTC would put the cluster, is 11:00 local: only what the
    # slots around share of it (see Tuning.phase).
    assert _spares_at(history, _t("2026-03-30T08:59:40Z")) < at_ten / 2


REGION_SHIFTS = [
    # (reference day, day, shift in buckets of Berlin's day for New York's clusters)
    pytest.param("2026-03-02", "2026-03-06", (), id="the same week: no change"),
    pytest.param("2026-03-06", "2026-03-09", (-360,), id="New York on summer time first"),
    pytest.param("2026-03-23", "2026-03-30", (360,), id="Berlin catches up"),
    pytest.param("2026-03-02", "2026-03-30", (), id="both changed: no difference"),
    pytest.param("2026-10-26", "2026-11-02", (360,), id="autumn: New York a week later"),
]


@pytest.mark.parametrize(("then", "now", "shifts"), REGION_SHIFTS)
def test_region_shifts(then: str, now: str, shifts: tuple[int, ...]) -> None:
    day = BERLIN.day(_t(f"{now}T12:00:00+01:00"))
    reference = BERLIN.day(_t(f"{then}T12:00:00+01:00"))
    regions = ("America/New_York", "Europe/Paris")  # Paris moves with Berlin: never a shift
    assert region_shifts(BERLIN, regions, day=day, reference=reference) == shifts


def test_a_second_region_keeps_its_own_clock() -> None:
    # A weekday cluster at 13:00 in New York, a pool in Berlin: 19:00 for the pool until New
    # York changes to summer time (Sunday 8 March 2026), 18:00 for the three weeks after.
    days = [date(2026, 3, 2) + timedelta(days=i) for i in range(14)]
    starts = [
        datetime.combine(day, time(13, 0, 5), ZoneInfo("America/New_York")).timestamp() + i
        for day in days
        if day.weekday() < 5
        for i in range(20)
    ]
    begin = datetime.combine(days[0], time(0), ZoneInfo("Europe/Berlin")).timestamp()
    history = _recorded(BERLIN, starts, begin=begin, end=begin + 11 * DAY)  # up to Friday 13th
    friday = begin + 11 * DAY  # 13 March
    six, seven = friday + 18 * 3_600.0 - 30.0, friday + 19 * 3_600.0 - 30.0

    def spares(t: float, regions: tuple[str, ...]) -> int:
        outlook = build_outlook(
            history, now=t, lead_time=LEAD, shortfall_probability=P, regions=regions
        )
        return forecast_spares(
            outlook, starts=(), now=t, lead_time=LEAD, window=900.0, shortfall_probability=P
        ).spares

    # Told of New York, the pool covers 18:00 from the week-old days too; it keeps 19:00
    # (where the older days saw the cluster) as well.
    assert spares(six, ("America/New_York",)) >= 20
    assert spares(seven, ("America/New_York",)) >= 20
    # Not told, it covers 18:00 only from this week's days (Monday to Thursday: four of
    # eight working days), less than told.
    assert spares(six, ()) < spares(six, ("America/New_York",))


@pytest.mark.parametrize("hour", [9.0, 9.95, 9.99, 10.0, 10.004, 10.5])
def test_a_compressed_day_forecasts_what_a_real_day_does(hour: float) -> None:
    # The same days 100 times faster, with a lead time 100 times shorter: the same spares at
    # the same time of day. (With a real lead time, a compressed cluster is seen from further
    # ahead, which is the point of keeping the lead time real.)
    real, real_next = _with_clusters(BERLIN, days=3, at_hour=10.0, size=30)
    fast = Season("Europe/Berlin", day_seconds=864.0)
    short, short_next = _with_clusters(fast, days=3, at_hour=10.0, size=30)
    assert real.starts == short.starts == 90
    assert [d.view().tolist() for d in real.days] == [d.view().tolist() for d in short.days]
    assert _spares_at(real, real_next + hour * 3_600.0) == _spares_at(
        short, short_next + hour / 24 * 864.0, scale=0.01
    )


@pytest.mark.parametrize(
    ("lead", "step"),
    [
        # Steps of 86,400 s x 1.1^k: ..., 31.690, 34.859, 38.345, ..., 51.037, ...
        pytest.param(0.0, 0.0, id="no lead time"),
        pytest.param(31.0, 31.690, id="31 s"),
        pytest.param(31.6899, 31.690, id="a step is its own step"),
        pytest.param(31.7, 34.859, id="just above it: the next"),
        pytest.param(48.0, 51.037, id="48 s"),
    ],
)
def test_lead_step_rounds_up_by_tenths(lead: float, step: float) -> None:
    assert lead_step(lead) == pytest.approx(step, abs=1e-3)
    # The grid is in units of the day: a day 100 times shorter rounds alike.
    assert lead_step(lead / 100, day_seconds=864.0) == pytest.approx(step / 100, abs=1e-5)


def test_an_outlook_holds_until_its_stretch_ends_or_its_inputs_change() -> None:
    history, tomorrow = _with_clusters(BERLIN, days=3, at_hour=10.0, size=30)
    now = tomorrow + 9 * 3_600.0
    outlook = build_outlook(history, now=now, lead_time=40.0, shortfall_probability=P)
    same = {"lead_time": 40.0, "shortfall_probability": P, "tuning": Tuning()}
    assert outlook.holds(now=now, **same)
    assert outlook.holds(now=now + 3_000.0, **same)
    assert outlook.holds(now=now, **{**same, "lead_time": 39.0})  # the same step
    assert not outlook.holds(now=now + 4_000.0, **same), "an hour of the day is its stretch"
    assert not outlook.holds(now=now, **{**same, "lead_time": 45.0})
    assert not outlook.holds(now=now, **{**same, "shortfall_probability": 0.001})
    assert not outlook.holds(now=now, **{**same, "tuning": Tuning(slack=0)})
    assert not outlook.holds(now=now, **same, regions=("America/New_York",))
    late = build_outlook(
        history, now=tomorrow + DAY - 60.0, lead_time=40.0, shortfall_probability=P
    )
    assert late.last == BERLIN.bucket(tomorrow + DAY) - 1, "it ends with its day"


def test_without_history_the_reactive_estimate_alone_and_it_says_so() -> None:
    starts = tuple(MONDAY + 30.0 * i for i in range(20))
    now = MONDAY + 610.0
    expected = spares_for_demand(
        rate=estimate_start_rate(starts, now=now, window=900.0),
        lead_time=LEAD,
        shortfall_probability=P,
    )
    assert expected > 0
    for outlook in (
        None,
        build_outlook(
            record(History(BERLIN), [], now=now - 1.0, weeks=2),
            now=now,
            lead_time=LEAD,
            shortfall_probability=P,
        ),
    ):
        answer = forecast_spares(
            outlook, starts=starts, now=now, lead_time=LEAD, window=900.0, shortfall_probability=P
        )
        assert (answer.spares, answer.forecast, answer.basis) == (expected, 0, Basis.NO_HISTORY)


def test_starts_history_expected_are_not_counted_twice() -> None:
    # History says 30 starts around 10:00; today they come: the reactive part stays small,
    # because they were expected. A burst history did not expect raises it.
    history, tomorrow = _with_clusters(BERLIN, days=3, at_hour=10.0, size=30)
    ten = tomorrow + 10 * 3_600.0
    expected = tuple(ten + 20.0 * i / 30 for i in range(30))
    now = ten + 25.0
    outlook = build_outlook(history, now=now, lead_time=LEAD, shortfall_probability=P)
    seen = forecast_spares(
        outlook, starts=expected, now=now, lead_time=LEAD, window=900.0, shortfall_probability=P
    )
    assert seen.basis is Basis.HISTORY
    assert seen.reactive <= 2
    surprise = tuple(ten + 1_800.0 + i for i in range(30))
    later = forecast_spares(
        outlook,
        starts=surprise,
        now=ten + 1_830.0,
        lead_time=LEAD,
        window=900.0,
        shortfall_probability=P,
    )
    assert later.forecast < 5  # the half hour shares a little of the hour's cluster
    assert later.reactive >= 15


# The shape of the spares.


@settings(max_examples=40, deadline=None)
@given(
    extra=st.lists(st.floats(min_value=0.0, max_value=3 * DAY - 2.0), min_size=1, max_size=40),
    at=st.floats(min_value=0.0, max_value=DAY),
)
def test_more_history_never_asks_for_fewer_spares(extra: list[float], at: float) -> None:
    base = [MONDAY + day * DAY + 36_000.0 + i for day in range(3) for i in range(12)]
    few = _recorded(BERLIN, base, begin=MONDAY, end=MONDAY + 3 * DAY)
    more = _recorded(BERLIN, base + [MONDAY + t for t in extra], begin=MONDAY, end=MONDAY + 3 * DAY)
    assert more.starts == few.starts + len(extra)
    tomorrow = MONDAY + 3 * DAY
    assert _spares_at(more, tomorrow + at) >= _spares_at(few, tomorrow + at)


means = st.floats(min_value=0.0, max_value=200.0)
risks = st.floats(min_value=1e-4, max_value=0.5)
dispersions = st.floats(min_value=0.5, max_value=100.0)


@settings(max_examples=300, deadline=None)
@given(mean=means, more=means, p=risks, k=dispersions)
def test_nb_quantile_grows_with_the_mean_and_tends_to_poisson(
    mean: float, more: float, p: float, k: float
) -> None:
    assert nb_quantile(mean + more, k, shortfall_probability=p) >= nb_quantile(
        mean, k, shortfall_probability=p
    )
    poisson = spares_for_demand(rate=mean, lead_time=1.0, shortfall_probability=p)
    assert nb_quantile(mean, None, shortfall_probability=p) == poisson
    # A very large dispersion is a Poisson, give or take the last step of the sum.
    assert abs(nb_quantile(mean, 1e9, shortfall_probability=p) - poisson) <= 1


def test_nb_quantile_values() -> None:
    # Mean 10 and dispersion 10 (variance 20): P(X <= 22) = 0.98997, P(X <= 23) = 0.99323.
    assert nb_quantile(10.0, 10.0, shortfall_probability=0.01) == 23
    assert nb_quantile(10.0, 10.0, shortfall_probability=0.0101) == 22
    assert nb_quantile(0.0, 10.0, shortfall_probability=0.01) == 0
    with pytest.raises(ForecastError, match="dispersion"):
        nb_quantile(1.0, 0.0, shortfall_probability=0.01)
