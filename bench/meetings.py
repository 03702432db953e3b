"""Weeks of recordings as a meeting platform sees them: ``meeting_weeks(seed)``.

The synthetic day (bench/daysim.py) is a smooth Poisson day with random bursts. Real meeting
platforms see something else, and this generator plays it, day after day for a fortnight or more:

- **Meetings start on the hour and the half hour.** Most recordings belong to scheduled
  meetings, and a meeting's recording starts in the minutes after its slot (people join, then
  someone presses record), so starts come in clusters just after :00 and :30.
- **Working hours, a lunch dip, weekdays and weekends**, each in its region's own time zone.
- **Two regions.** A second time zone six hours behind adds its own working day, which begins
  in the first region's afternoon.
- **Recurring weekly events** (a webinar series, a course's sections, a weekly all-hands with
  breakout rooms): dozens of recordings within a minute or two, at the same local time on the
  same weekday every week, a few more or fewer each week, now and then cancelled.
- **Long-tailed recording lengths**: the meeting's booked length, overrun or cut short, plus a
  few recordings nobody stopped.
- Optionally, **one-off bursts**: a large meeting's breakout rooms at a time nobody could know
  in advance (zero by default; the benchmark reports them as a separate scenario).

Every parameter is a field of `MeetingShape` or `Region`; docs/performance.md lists them with
where each value comes from (most are assumptions, and it says which).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bench.daysim import Demand, Recording

WORKDAY_HOURS = (
    # 00  01   02   03   04   05   06   07   08   09   10   11
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.6, 1.0, 1.3, 1.1,
    # 12  13   14   15   16   17   18   19   20   21   22   23
    0.5, 0.8, 1.25, 1.15, 0.8, 0.35, 0.12, 0.05, 0.0, 0.0, 0.0, 0.0,
)  # fmt: skip
"""Relative share of scheduled meetings starting in each local hour of a working day: rising
from 08:00, the most popular slots at 10:00 and 14:00, a lunch dip at 12:00, tailing off after
16:00 (after a ranking of popular meeting times and the classic business-hours telephone
traffic curve; the exact heights are assumptions)."""

WEEKEND_HOURS = (
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.4, 0.8, 1.0,
    1.0, 0.8, 0.8, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.1, 0.0, 0.0,
)  # fmt: skip
"""A weekend day: fewer meetings, spread through a later, flatter day (an assumption)."""

BOOKED_MINUTES = ((15, 0.05), (30, 0.25), (45, 0.05), (60, 0.40), (90, 0.15), (120, 0.10))
"""A scheduled meeting's booked length and its share: mostly hours and half hours, some longer
(loosely after a published 15-month calendar analysis: 4% under 30 min, 13% 30 min, 42% one
hour, 21% 90 or 120 min; shifted toward shorter meetings for recorded online ones, an
assumption)."""


@dataclass(frozen=True)
class Region:
    time_zone: str
    weekday_recordings: float
    """Recordings on an average working day (the meeting volume times the share recorded)."""
    weekend_share: float = 0.1
    """A weekend day's recordings relative to a working day's."""
    recurring_events: int = 4
    """Weekly recurring events in this region."""


@dataclass(frozen=True)
class MeetingShape:
    first_day: date = date(2026, 4, 13)
    """A Monday; the default fortnight has no DST change in either region."""
    days: int = 14
    regions: tuple[Region, ...] = (
        Region("Europe/Berlin", 700.0, recurring_events=4),
        Region("America/New_York", 350.0, recurring_events=3),
    )
    scheduled_share: float = 0.75
    """Recordings of scheduled meetings on a working day; the rest are ad hoc (an assumption)."""
    weekend_scheduled_share: float = 0.3
    slot_shares: tuple[tuple[int, float], ...] = ((0, 0.6), (30, 0.3), (15, 0.05), (45, 0.05))
    """The minute past the hour a meeting is booked at (calendar defaults; an assumption)."""
    early_seconds: float = 60.0
    join_median_seconds: float = 100.0
    join_sigma: float = 0.7
    """A recording starts ``early_seconds`` before its slot plus a log-normal wait (median
    ``join_median_seconds``): from a minute early to a few minutes late, most in the first two
    minutes after the slot (an assumption)."""
    day_sigma: float = 0.1
    """Day-to-day variation of a region's volume (log-normal; an assumption)."""
    friday_factor: float = 0.85
    """Fridays are quieter (an assumption)."""
    night_per_hour: float = 2.0
    """Recordings an hour at any time of day, per region, on top of everything else."""
    adhoc_median_minutes: float = 20.0
    adhoc_sigma: float = 1.0
    overrun_sigma: float = 0.3
    """A scheduled recording lasts its booked length times a log-normal factor (median 0.9)."""
    forgotten_share: float = 0.01
    """Recordings nobody stopped: 2 to 8 hours."""
    max_length_hours: float = 8.0
    recurring_size: tuple[int, int] = (20, 60)
    """Recordings per recurring event (its rooms)."""
    recurring_spread_seconds: tuple[float, float] = (30.0, 120.0)
    """They start within this many seconds of the event's first recording."""
    recurring_jitter: float = 0.15
    """Each week's size varies by up to this share."""
    recurring_cancelled: float = 0.0
    """Chance an event does not take place in a given week (a holiday, say; 0 by default:
    an event that skips the first week of a fortnight and comes back in the second is
    something no history can know, and the benchmark reports it as a scenario of its own)."""
    one_off_per_workday: float = 0.0
    """One-off bursts (breakout rooms of an unforeseeable meeting) per region and working day."""
    one_off_size: tuple[int, int] = (10, 24)
    one_off_spread_seconds: float = 30.0
    hours: tuple[float, ...] = field(default=WORKDAY_HOURS)
    weekend_hours: tuple[float, ...] = field(default=WEEKEND_HOURS)


@dataclass(frozen=True)
class RecurringEvent:
    region: str
    weekday: int
    """0 is Monday."""
    at: time
    """Local time of the slot."""
    size: int
    spread_seconds: float
    booked_minutes: int


def recurring_events(shape: MeetingShape, seed: int) -> tuple[RecurringEvent, ...]:
    """The seed's weekly events: a working day, a slot on :00 or :30 in working hours."""
    rng = random.Random(f"recurring-{seed}")
    events: list[RecurringEvent] = []
    for region in shape.regions:
        for _ in range(region.recurring_events):
            hour = rng.choice((9, 10, 10, 11, 13, 14, 14, 15, 16))
            events.append(
                RecurringEvent(
                    region=region.time_zone,
                    weekday=rng.randrange(5),
                    at=time(hour, rng.choice((0, 0, 30))),
                    size=rng.randint(*shape.recurring_size),
                    spread_seconds=rng.uniform(*shape.recurring_spread_seconds),
                    booked_minutes=rng.choice((60, 60, 90)),
                )
            )
    return tuple(events)


def _pick(rng: random.Random, table: tuple[tuple[int, float], ...]) -> int:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def meeting_weeks(seed: int, shape: MeetingShape | None = None) -> Demand:
    """``shape.days`` days of recordings from local midnight of ``first_day`` in the first
    region's time zone; seeded (the same seed gives the same recordings)."""
    shape = shape or MeetingShape()
    rng = random.Random(f"meetings-{seed}")
    home = ZoneInfo(shape.regions[0].time_zone)
    t0 = datetime.combine(shape.first_day, time(0), tzinfo=home).astimezone(UTC)
    end = datetime.combine(shape.first_day + timedelta(days=shape.days), time(0), tzinfo=home)
    duration = (end.astimezone(UTC) - t0).total_seconds()
    events = recurring_events(shape, seed)
    starts: list[tuple[float, float]] = []
    bursts: list[float] = []

    def at(local: datetime) -> float:
        return (local.astimezone(UTC) - t0).total_seconds()

    def clip(length: float) -> float:
        return max(30.0, min(length, shape.max_length_hours * 3600.0))

    def scheduled_length(booked: int, delay: float) -> float:
        if rng.random() < shape.forgotten_share:
            return rng.uniform(2.0, shape.max_length_hours) * 3600.0
        factor = rng.lognormvariate(math.log(0.9), shape.overrun_sigma)
        return clip(booked * 60.0 * factor - max(0.0, delay))

    def adhoc_length() -> float:
        if rng.random() < shape.forgotten_share:
            return rng.uniform(2.0, shape.max_length_hours) * 3600.0
        return clip(rng.lognormvariate(math.log(shape.adhoc_median_minutes * 60.0), 1.0))

    def join_delay() -> float:
        wait = rng.lognormvariate(
            math.log(shape.join_median_seconds + shape.early_seconds), shape.join_sigma
        )
        return wait - shape.early_seconds

    # Days are walked per region in that region's own calendar, so that its working day, its
    # weekends and its DST changes are its own; the result is cut to the home fortnight.
    for region in shape.regions:
        zone = ZoneInfo(region.time_zone)
        first = t0.astimezone(zone).date() - timedelta(days=1)
        for offset in range(shape.days + 2):
            day = first + timedelta(days=offset)
            weekend = day.weekday() >= 5
            volume = region.weekday_recordings * rng.lognormvariate(0.0, shape.day_sigma)
            if weekend:
                volume *= region.weekend_share
            elif day.weekday() == 4:
                volume *= shape.friday_factor
            weights = shape.weekend_hours if weekend else shape.hours
            share = shape.weekend_scheduled_share if weekend else shape.scheduled_share
            midnight = datetime.combine(day, time(0), tzinfo=zone)

            def local(hour: float, day: date = day, zone: ZoneInfo = zone) -> datetime:
                # Wall-clock time on ``day``: meetings are booked in local time, DST or not.
                h = int(hour)
                m = (hour - h) * 60.0
                wall = datetime.combine(day, time(h, int(m)), tzinfo=zone)
                return wall + timedelta(seconds=(m - int(m)) * 60.0)

            # Scheduled meetings: a slot, then the recording a minute or two after it.
            for _ in range(_poisson(rng, volume * share)):
                hour = rng.choices(range(24), weights=weights)[0]
                minute = _pick(rng, shape.slot_shares)
                delay = join_delay()
                start = at(local(hour + minute / 60.0)) + delay
                starts.append((start, scheduled_length(_pick(rng, BOOKED_MINUTES), delay)))
            # Ad hoc recordings: any minute, in proportion to the day's activity.
            smooth = [
                0.5 * weights[h] + 0.25 * (weights[h - 1] + weights[(h + 1) % 24])
                for h in range(24)
            ]
            for _ in range(_poisson(rng, volume * (1.0 - share))):
                when = rng.choices(range(24), weights=smooth)[0] + rng.random()
                starts.append((at(local(when)), adhoc_length()))
            # A trickle at any hour (other continents, night owls).
            for _ in range(_poisson(rng, shape.night_per_hour * 24.0)):
                starts.append((at(midnight) + rng.uniform(0.0, 86_400.0), adhoc_length()))
            if weekend:
                continue
            for event in events:
                if event.region != region.time_zone or event.weekday != day.weekday():
                    continue
                if rng.random() < shape.recurring_cancelled:
                    continue
                jitter = 1.0 + rng.uniform(-shape.recurring_jitter, shape.recurring_jitter)
                first_start = at(datetime.combine(day, event.at, tzinfo=zone)) + rng.uniform(
                    0.0, 60.0
                )
                bursts.append(first_start)
                for _ in range(max(1, round(event.size * jitter))):
                    start = first_start + rng.uniform(0.0, event.spread_seconds)
                    starts.append((start, scheduled_length(event.booked_minutes, 60.0)))
            for _ in range(_poisson(rng, shape.one_off_per_workday)):
                hour = rng.choices(range(24), weights=weights)[0]
                begin = at(local(hour + rng.choice((0, 30)) / 60.0)) + rng.uniform(300.0, 1200.0)
                bursts.append(begin)
                for _ in range(rng.randint(*shape.one_off_size)):
                    start = begin + rng.uniform(0.0, shape.one_off_spread_seconds)
                    starts.append((start, clip(rng.lognormvariate(math.log(1200.0), 0.3))))
    recordings = tuple(
        sorted(
            (Recording(start, length) for start, length in starts if 0.0 <= start < duration),
            key=lambda r: r.start,
        )
    )
    return Demand(
        t0=t0,
        duration=duration,
        recordings=recordings,
        bursts=tuple(sorted(b for b in bursts if 0.0 <= b < duration)),
        source=f"meeting weeks, seed {seed}",
    )


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method for small means, a rounded normal for large ones)."""
    if mean <= 0:
        return 0
    if mean > 60:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count
