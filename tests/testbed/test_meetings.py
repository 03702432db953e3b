"""The meeting fortnight the policy benchmark plays: each feature it claims is in the data.

Counts over a generated fortnight: clusters after :00 and :30, working days against weekends,
the lunch dip, the second region's own day, the weekly events at the same local time every
week (across a DST change too), the lengths' tail, and the seed.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from bench.daysim import Demand
from bench.meetings import MeetingShape, Region, meeting_weeks, recurring_events

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(scope="module")
def weeks() -> Demand:
    return meeting_weeks(1)


def _local(demand: Demand, offset: float, zone: ZoneInfo = BERLIN) -> datetime:
    return (demand.t0 + timedelta(seconds=offset)).astimezone(zone)


def test_seeded(weeks: Demand) -> None:
    assert meeting_weeks(1) == weeks
    assert meeting_weeks(2).recordings != weeks.recordings
    assert weeks.duration == 14 * 86_400.0  # no DST change in the default fortnight
    assert _local(weeks, 0.0).strftime("%a %H:%M") == "Mon 00:00"


def test_starts_cluster_just_after_the_hour_and_the_half_hour(weeks: Demand) -> None:
    minutes = [0] * 60
    for r in weeks.recordings:
        local = _local(weeks, r.start)
        if local.weekday() < 5 and 9 <= local.hour < 17:
            minutes[local.minute] += 1
    after_slots = sum(minutes[0:4]) + sum(minutes[30:34])
    elsewhere = sum(minutes[10:25]) + sum(minutes[40:55])
    # Eight minutes after the slots hold far more than thirty minutes away from them.
    assert after_slots > 2 * elsewhere


def test_working_days_weekends_and_the_lunch_dip(weeks: Demand) -> None:
    per_day = [0] * 14
    hours = [0] * 24
    for r in weeks.recordings:
        local = _local(weeks, r.start)
        per_day[(local.date() - date(2026, 4, 13)).days] += 1
        if local.weekday() < 5:
            hours[local.hour] += 1
    for week in (0, 7):
        working, weekend = per_day[week : week + 5], per_day[week + 5 : week + 7]
        assert min(working) > 4 * max(weekend)
    assert hours[12] < 0.75 * hours[10]
    assert hours[12] < 0.75 * hours[14]
    assert hours[3] < 0.05 * hours[10]


def test_the_second_region_adds_its_own_day() -> None:
    one = MeetingShape(regions=(Region("Europe/Berlin", 700.0, recurring_events=0),))
    two = MeetingShape(
        regions=(
            Region("Europe/Berlin", 700.0, recurring_events=0),
            Region("America/New_York", 350.0, recurring_events=0),
        )
    )

    def evening(shape: MeetingShape) -> int:
        demand = meeting_weeks(3, shape)
        return sum(
            1
            for r in demand.recordings
            if _local(demand, r.start).weekday() < 5 and 19 <= _local(demand, r.start).hour < 22
        )

    # 19:00 to 22:00 in Berlin is 13:00 to 16:00 in New York: that region's afternoon.
    assert evening(two) > 4 * evening(one)


@pytest.mark.parametrize("first_day", [date(2026, 4, 13), date(2026, 3, 23)])
def test_weekly_events_recur_at_the_same_local_time(first_day: date) -> None:
    # The second fortnight crosses Berlin's spring DST change (29 March 2026). Almost no other
    # meetings, so that what starts after an event's slot is the event.
    shape = MeetingShape(
        first_day=first_day,
        regions=(
            Region("Europe/Berlin", 1.0, recurring_events=3),
            Region("America/New_York", 1.0, recurring_events=3),
        ),
        night_per_hour=0.0,
    )
    demand = meeting_weeks(5, shape)
    slots: dict[tuple[str, int, time], int] = {}
    for event in recurring_events(shape, 5):  # two events may share a slot
        key = (event.region, event.weekday, event.at)
        slots[key] = slots.get(key, 0) + event.size
    assert slots
    for (region, weekday, at), size in slots.items():
        for week in (0, 7):
            day = first_day + timedelta(days=week + weekday)
            slot = datetime.combine(day, at, tzinfo=ZoneInfo(region))
            begin = (slot - demand.t0).total_seconds()
            seen = [r for r in demand.recordings if begin <= r.start <= begin + 60 + 120]
            assert abs(len(seen) - size) <= size * 0.15 + 2, (region, weekday, at, week)


def test_lengths_have_a_long_tail(weeks: Demand) -> None:
    lengths = sorted(r.length for r in weeks.recordings)
    median = lengths[len(lengths) // 2]
    assert 20 * 60 < median < 60 * 60
    assert lengths[-1] > 5 * median
    assert lengths[-1] <= 8 * 3_600.0


def test_one_off_bursts_and_skipped_weeks_are_optional() -> None:
    plain = meeting_weeks(2)
    stressed = meeting_weeks(2, MeetingShape(one_off_per_workday=1.0, recurring_cancelled=0.5))
    assert len(stressed.bursts) != len(plain.bursts)
    assert stressed.recordings != plain.recordings
