"""Spares from the pool's own history of recording starts: a forecast by time of day and week.

Why it exists: meetings start on the hour and the half hour, so recordings start in clusters
just after :00 and :30; a weekly event starts dozens within a minute or two. A replacement spare
takes the lead time L (half a minute or more) to be Ready, so a pool that only reacts to the
starts it has seen (core.demand) is always late for a cluster. But the clusters repeat, every
working day and every week, and the pool has seen them before.

The clock (`Season`). Every start is placed in *local* time: the wall clock of the pool's time
zone, in buckets of a day / 8,640 (10 s of a real day). Meetings are booked in wall-clock time,
so "the same time yesterday" is the same wall-clock time, across a DST change too (the repeated
hour of an autumn change lands twice in the same buckets; the skipped hour of a spring change
stays empty). The length of a day is a parameter, ``Season.day_seconds``: an end-to-end test
compresses a day into minutes, and everything else is counted in buckets of a day and follows
(only the lead time and the reactive window stay real seconds: a pod takes as long to start).

The history (`History`, kept by `record`): per local day, the bucket of each start, for the
last ``weeks`` weeks, and the buckets in which the pool had no Ready spare (a start then was
lost, and never seen). Encoded (`encode`) it is a short base64 string for the pool's status:
a fortnight of a pool of about 1,000 starts a working day (14,000 starts) is 10.5 KiB.

The forecast (`build_outlook` for a stretch of the day, then `forecast_spares` at each moment),
for the spares needed at t: a spare asked for now is Ready about L later, and the starts within
one L of each other each take a spare before any replacement is Ready. So for each moment s
in [t, t + L]:

- the *level*: the mean, over the reference days of the same kind (working days, or weekend
  days), of the starts within L after s at the same local time (a count where the pool had no
  Ready spare scaled up for the starts it lost); never below the same mean over five minutes
  around, nor below the mean at the same minute of the neighbouring hours and half hours
  (steadier where few days are known);
- the spares for it: the Poisson tail of the level at the pool's accepted shortfall probability;

and the forecast is the highest of those over [t, t + L], or, if higher, the most starts the
same weekday one and two weeks back saw within L of t (give or take a minute), with 20% to
spare: a weekly event. `Tuning` holds these choices; docs/performance.md gives the figures that
chose them and those of the alternatives.

What history did not predict is left to the reactive estimate of core.demand, applied to the
recent starts beyond what the forecast had already covered, so a day busier than usual, or a
burst nobody has seen before, still raises the pool. Without one wholly recorded reference day
(a new pool, a lost history) the answer is exactly the reactive estimate, and says so
(`Basis.NO_HISTORY`).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import dataclasses
import math
import struct
import zlib
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jibri_pod_controller.core.demand import RATE_SCALES, spares_for_demand

REAL_DAY = 86_400.0
BUCKETS_PER_DAY = 8_640
"""10 s buckets at a real day's length; the bucket shrinks with a compressed day."""
WEEK_DAYS = 7
_EPOCH_WEEKDAY = 3
"""Local day 0 (1970-01-01) was a Thursday; Monday is 0."""


class ForecastError(ValueError):
    """A forecast setting or an encoded history that cannot be used; names what is wrong."""


@dataclass(frozen=True)
class Season:
    """Where a start falls in the day and the week: local wall-clock time in ``time_zone``,
    with a day of ``day_seconds`` (a real day unless a test compresses it)."""

    time_zone: str = "UTC"
    day_seconds: float = REAL_DAY
    buckets_per_day: int = BUCKETS_PER_DAY

    def __post_init__(self) -> None:
        if not (math.isfinite(self.day_seconds) and self.day_seconds > 0):
            raise ForecastError(f"a day of {self.day_seconds} seconds: must be above 0")
        if not 1 <= self.buckets_per_day <= 0xFFFF:
            raise ForecastError(f"{self.buckets_per_day} buckets a day: must be 1 to 65535")
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ForecastError(f"time zone {self.time_zone!r} is unknown") from exc

    @cached_property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @property
    def bucket_seconds(self) -> float:
        return self.day_seconds / self.buckets_per_day

    def local_seconds(self, t: float) -> float:
        """``t`` (Unix seconds) on the local wall clock, as seconds since local day 0. The
        zone's offset is scaled with the day, so a compressed day keeps its hours in place."""
        offset = datetime.fromtimestamp(t, self._zone).utcoffset()
        shift = 0.0 if offset is None else offset.total_seconds()
        return t + shift * (self.day_seconds / REAL_DAY)

    def start_of(self, day: int) -> float:
        """The first moment (Unix seconds) of local day ``day``. (Where a DST change skips
        midnight itself, the first moment after the gap.)"""
        target = day * self.day_seconds
        t = target
        for _ in range(3):  # the offset at the answer, not at the guess
            t = target - (self.local_seconds(t) - t)
        return t

    def bucket(self, t: float) -> int:
        """The local bucket of ``t``, counted from local day 0."""
        return math.floor(self.local_seconds(t) / self.bucket_seconds)

    def day(self, t: float) -> int:
        return self.bucket(t) // self.buckets_per_day

    @staticmethod
    def weekday(day: int) -> int:
        """0 for Monday to 6 for Sunday."""
        return (day + _EPOCH_WEEKDAY) % WEEK_DAYS

    @staticmethod
    def weekend(day: int) -> bool:
        return Season.weekday(day) >= 5


@dataclass(frozen=True)
class DayStarts:
    """The starts of one local day: the bucket (within the day) of each, ascending."""

    day: int
    offsets: bytes
    """Native unsigned 16-bit integers (``array('H')``), one per start."""

    @property
    def count(self) -> int:
        return len(self.offsets) // 2

    def view(self) -> Sequence[int]:
        return memoryview(self.offsets).cast("H")


@dataclass(frozen=True)
class History:
    """A pool's recording starts by local day, for the forecast."""

    season: Season
    first_day: int | None = None
    """The first local day wholly recorded (None: nothing recorded yet). Earlier days are not
    samples; later ones without a start had none."""
    latest: float | None = None
    """The latest start recorded: a start at or before it counts as recorded already."""
    recorded_until: float | None = None
    """The ``now`` of the last `record`: starts up to then have been offered."""
    gaps: tuple[int, ...] = ()
    """Local days during which recording stopped for longer than `GAP`: not samples."""
    days: tuple[DayStarts, ...] = ()
    """Days with starts, oldest first."""
    short: tuple[DayStarts, ...] = ()
    """Per day, the buckets in which a round saw no Ready spare (each once): a start then
    found none and was never seen, so the count there is a floor (see `reference_samples`)."""

    @property
    def starts(self) -> int:
        return sum(d.count for d in self.days)

    def full_days(self, today: int) -> int:
        """Wholly recorded days before ``today``."""
        return 0 if self.first_day is None else max(0, today - self.first_day)


GAP = 1 / 144
"""A pause between two `record` calls longer than this share of a day (10 minutes of a real
one) may have lost recordings that began and ended within it: the days it touches are no
longer samples. A failover's few seconds are not a gap: the recordings that started meanwhile
are still running when the new leader looks."""
MIN_GAP = 60.0
"""Seconds: a shorter pause is never a gap, however short the day. A failover, or a round late
on a loaded machine, takes as long whatever the day's length; a day compressed into minutes
for a test would otherwise see one in every slow round."""


def gap_seconds(season: Season) -> float:
    """The pause between two records beyond which the days it touches are gaps."""
    return max(GAP * season.day_seconds, MIN_GAP)


def store_interval(season: Season) -> float:
    """How often a history is worth storing (seconds): half of `gap_seconds`, five minutes of
    a real day. A leader that stops just before a store leaves a history that old; its
    successor, a failover later, still finds the pause shorter than a gap (and finds the
    starts since the store among the pool's recent starts)."""
    return gap_seconds(season) / 2


def record(
    history: History,
    starts: Iterable[float],
    *,
    now: float,
    weeks: int,
    exhausted: bool = False,
    fresh: bool = False,
) -> History:
    """``history`` with ``starts`` (Unix seconds) added, and the days more than ``weeks``
    weeks before the day of ``now`` dropped. A start after ``now``, at or before
    ``history.latest`` or not a number is ignored (so the same start offered twice counts
    once); with ``fresh``, the caller offers only starts it never offered before (it knows
    them by identity), and one at or before ``latest`` (seen a round late) counts too.
    ``exhausted``: the pool has no Ready spare at ``now`` (its bucket is marked). The first
    call begins the record: its day counts from the next local midnight (or from ``now`` if
    that is one); a later call more than `gap_seconds` after the previous one marks the days
    in between as gaps."""
    if weeks < 1:
        raise ForecastError(f"a history of {weeks} weeks: must be at least 1")
    season = history.season
    per_day = season.buckets_per_day
    new = sorted(
        t
        for t in starts
        if math.isfinite(t) and t <= now and (fresh or history.latest is None or t > history.latest)
    )
    bucket = season.bucket(now)
    today = bucket // per_day
    oldest = today - WEEK_DAYS * weeks
    previous = history.recorded_until
    gap = previous is not None and now - previous > gap_seconds(season)
    marked = not exhausted or _marked(history.short, bucket, per_day)
    if (
        not new
        and marked
        and not gap
        and history.first_day is not None
        and history.first_day >= oldest
        and (not history.days or history.days[0].day >= oldest)
        and (not history.gaps or history.gaps[0] >= oldest)
        and (not history.short or history.short[0].day >= oldest)
    ):  # the common case: nothing to add, nothing to drop
        until = now if previous is None else max(previous, now)
        return dataclasses.replace(history, recorded_until=until)
    days = {d.day: d for d in history.days}
    added: dict[int, list[int]] = {}
    for t in new:
        day, offset = divmod(season.bucket(t), per_day)
        added.setdefault(day, []).append(offset)
    for day, offsets in added.items():
        merged = array("H")
        if day in days:
            merged.frombytes(days[day].offsets)
        merged.extend(offsets)
        days[day] = DayStarts(day, array("H", sorted(merged)).tobytes())
    short = {d.day: d for d in history.short}
    if not marked:
        marks = array("H")
        if today in short:
            marks.frombytes(short[today].offsets)
        marks.append(bucket % per_day)
        short[today] = DayStarts(today, array("H", sorted(marks)).tobytes())
    first_day = history.first_day
    if first_day is None:
        first_day = today if bucket % per_day == 0 else today + 1
    gaps = set(history.gaps)
    if gap and previous is not None:
        gaps.update(range(season.day(previous), today + 1))
    latest = history.latest
    if new and (latest is None or new[-1] > latest):
        latest = new[-1]
    return History(
        season=season,
        first_day=max(first_day, oldest),
        latest=latest,
        recorded_until=now if previous is None else max(previous, now),
        gaps=tuple(sorted(d for d in gaps if d >= oldest)),
        days=tuple(days[d] for d in sorted(days) if d >= oldest),
        short=tuple(short[d] for d in sorted(short) if d >= oldest),
    )


def _marked(short: tuple[DayStarts, ...], bucket: int, per_day: int) -> bool:
    day, offset = divmod(bucket, per_day)
    for marks in reversed(short):  # today's, if any, is the last
        if marks.day == day:
            view = marks.view()
            at = bisect.bisect_left(view, offset)
            return at < len(view) and view[at] == offset
        if marks.day < day:
            return False
    return False


# ---------------------------------------------------------------------------------------------
# Encoding: a short string for the pool's status

_MAGIC = b"JPF1"
MAX_ENCODED = 2 * 1024 * 1024
"""An encoded history longer than this is refused before it is decoded (the etcd object limit
is about 1.5 MiB, so no stored history is larger)."""
_MAX_RAW = 16 * 1024 * 1024


def _varint(value: int, out: bytearray) -> None:
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def varint(self, what: str) -> int:
        value = shift = 0
        while True:
            if self.at >= len(self.data):
                raise ForecastError(f"history truncated in {what}")
            byte = self.data[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ForecastError(f"history: {what} is not a number")

    def take(self, size: int, what: str) -> bytes:
        if self.at + size > len(self.data):
            raise ForecastError(f"history truncated in {what}")
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value // 2 if value % 2 == 0 else -(value + 1) // 2


def _write_days(days: tuple[DayStarts, ...], per_day: int, out: bytearray) -> None:
    _varint(len(days), out)
    previous = 0
    for day in days:
        _varint(_zigzag(day.day - previous), out)
        previous = day.day
        offsets = day.view()
        sparse = bytearray()
        _varint(len(offsets), sparse)
        last = 0
        for offset in offsets:
            _varint(offset - last, sparse)
            last = offset
        if len(sparse) <= per_day:
            out.append(0)
            out += sparse
        else:
            counts = [0] * per_day
            for offset in offsets:
                counts[offset] += 1
            out.append(1)
            for count in counts:
                _varint(count, out)


def _read_days(data: _Reader, per_day: int) -> tuple[DayStarts, ...]:
    days: list[DayStarts] = []
    previous = 0
    for _ in range(data.varint("the number of days")):
        day = previous + _unzigzag(data.varint("a day"))
        if days and day <= days[-1].day:
            raise ForecastError("history's days are not in order")
        previous = day
        form = data.take(1, "a day's form")[0]
        offsets = array("H")
        if form == 0:
            at = 0
            for _ in range(data.varint("a day's starts")):
                at += data.varint("a start")
                if at >= per_day:
                    raise ForecastError(f"history has a start outside its day ({at})")
                offsets.append(at)
        elif form == 1:
            for bucket in range(per_day):
                count = data.varint("a bucket's count")
                if count > _MAX_RAW:
                    raise ForecastError("history has an impossible count")
                offsets.extend([bucket] * count)
        else:
            raise ForecastError(f"history has an unknown day form {form}")
        days.append(DayStarts(day, offsets.tobytes()))
    return tuple(days)


def encode(history: History) -> str:
    """The history as base64 text (zlib-compressed). Each day is written either as its starts
    (the gaps between their buckets) or, when that is shorter, as a count per bucket, so a
    day never takes more than about one byte per bucket before compression while no bucket
    holds 128 starts: two weeks and a day at most some 130 KiB raw, and in practice a small
    fraction of that (docs/performance.md gives the sizes)."""
    season = history.season
    out = bytearray(_MAGIC)
    zone = season.time_zone.encode()
    _varint(len(zone), out)
    out += zone
    out += struct.pack("<d", season.day_seconds)
    _varint(season.buckets_per_day, out)
    out += struct.pack(
        "<dd",
        math.nan if history.latest is None else history.latest,
        math.nan if history.recorded_until is None else history.recorded_until,
    )
    _varint(len(history.gaps), out)
    for gap in history.gaps:
        _varint(_zigzag(gap), out)
    if history.first_day is None:
        out.append(0)
    else:
        out.append(1)
        _varint(_zigzag(history.first_day), out)
    for days in (history.days, history.short):
        _write_days(days, season.buckets_per_day, out)
    return base64.b64encode(zlib.compress(bytes(out), 9)).decode("ascii")


def decode(text: str) -> History:
    """The history `encode` wrote; a `ForecastError` naming the fault for anything else."""
    if len(text) > MAX_ENCODED:
        raise ForecastError(f"history of {len(text)} characters: more than {MAX_ENCODED}")
    try:
        packed = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ForecastError("history is not base64") from exc
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(packed, _MAX_RAW)
    except zlib.error as exc:
        raise ForecastError("history is not zlib data") from exc
    if inflate.unconsumed_tail or not inflate.eof:
        raise ForecastError("history is truncated or too large")
    data = _Reader(raw)
    if data.take(len(_MAGIC), "its header") != _MAGIC:
        raise ForecastError("history has an unknown format")
    try:
        zone = data.take(data.varint("the time zone"), "the time zone").decode()
    except UnicodeDecodeError as exc:
        raise ForecastError("history's time zone is not text") from exc
    (day_seconds,) = struct.unpack("<d", data.take(8, "the day length"))
    per_day = data.varint("the buckets a day")
    season = Season(time_zone=zone, day_seconds=day_seconds, buckets_per_day=per_day)
    latest, recorded_until = struct.unpack("<dd", data.take(16, "the times"))
    if math.isinf(latest) or math.isinf(recorded_until):
        raise ForecastError("history's times are not finite")
    gaps = tuple(_unzigzag(data.varint("a gap")) for _ in range(data.varint("the gaps")))
    has_first = data.take(1, "the first day")[0]
    if has_first not in (0, 1):
        raise ForecastError("history's first day is malformed")
    first_day = _unzigzag(data.varint("the first day")) if has_first else None
    days = _read_days(data, per_day)
    short = _read_days(data, per_day)
    if data.at != len(raw):
        raise ForecastError("history has trailing data")
    return History(
        season=season,
        first_day=first_day,
        latest=None if math.isnan(latest) else latest,
        recorded_until=None if math.isnan(recorded_until) else recorded_until,
        gaps=gaps,
        days=days,
        short=short,
    )


# ---------------------------------------------------------------------------------------------
# The forecast


@dataclass(frozen=True)
class Tuning:
    """How history becomes spares. Not part of a pool's spec: the defaults are the choices the
    policy benchmark measured best (docs/performance.md lists the alternatives and their
    figures)."""

    ahead: float = 1.0
    """Look this many lead times ahead: a spare asked for now is Ready about one lead time
    later, so the spares must already cover what starts then."""
    window: float = 1.0
    """The starts that consume spares before their replacements are Ready: within this many
    lead times."""
    trim: float = 0.0
    """The level of the same kind of days is the mean of their counts without the highest
    ``trim`` share of them (a weekly event on another weekday need not raise every day)."""
    dispersion: float | None = None
    """k of a negative binomial around that level (variance = level + level^2 / k); None: a
    Poisson."""
    slack: int = 6
    """Buckets (a minute of a real day) either side of the same weekday's samples: a weekly
    event begins a little earlier or later from one week to the next."""
    growth: float = 0.2
    """The same weekday's peak is covered with this much to spare: a weekly event has a few
    more or fewer recordings each week."""
    smooth: int = 30
    """The level is never below the mean count of the same kind of days over this many
    buckets either side (five minutes of a real day): a steadier estimate of the background
    where few days are known (a weekend has two a week)."""
    phase: int = 2
    """The level is never below the mean at the same minute of the hour or half hour over this
    many half hours either side (meetings start on the hour and the half hour, every hour): a
    steadier estimate of a slot's cluster where few days are known."""
    lost: float = 8.0
    """A reference day's count in a window where the pool had no Ready spare is scaled up by
    the window's share without one (the starts then were lost, unseen), by at most this
    factor; 1: taken as seen."""
    surprise: bool = True
    """The reactive estimate counts only the starts beyond the forecast's own tail (what it
    had already covered), not all those beyond its mean."""


@dataclass(frozen=True)
class Samples:
    """What the reference days saw around each bucket of a range (see `reference_samples`)."""

    first: int
    """The range's first local bucket."""
    daily: tuple[tuple[int, ...], ...]
    """From ``first`` to ``ahead`` buckets past the range: per bucket, the starts each
    reference day of the same kind saw within ``window`` buckets from it."""
    weekly: tuple[tuple[int, ...], ...]
    """Per bucket of the range: per reference day of the same weekday, the most starts it saw
    within ``window`` buckets beginning between ``slack`` before the bucket and ``ahead`` +
    ``slack`` after it."""
    expected: tuple[float, ...]
    """Per bucket of the range: the starts expected in it (the larger of the two kinds'
    means)."""


def references(history: History, day: int) -> tuple[list[int], list[int]]:
    """The reference days for ``day``: of the same kind, and the same weekday weeks back;
    only wholly recorded days, within the history, before ``day``."""
    if history.first_day is None:
        return [], []
    kind = Season.weekend(day)
    gaps = set(history.gaps)
    candidates = [r for r in range(history.first_day, day) if r not in gaps]
    same_kind = [r for r in candidates if Season.weekend(r) == kind]
    same_weekday = [r for r in candidates if (day - r) % WEEK_DAYS == 0]
    return same_kind, same_weekday


def reference_samples(
    history: History,
    *,
    first: int,
    last: int,
    window: int,
    ahead: int,
    slack: int,
    lost: float = 1.0,
    regions: tuple[str, ...] = (),
) -> Samples:
    """The samples of `Samples` for the local buckets ``first`` to ``last``; a window's count
    is scaled up where the pool had no Ready spare (see `Tuning.lost`). ``regions``: other
    time zones whose wall clock the pool's users keep (see `region_shifts`)."""
    season = history.season
    per_day = season.buckets_per_day
    by_day = {d.day: d for d in history.days}
    marks = {d.day: d for d in history.short}
    window, ahead, slack = max(1, window), max(0, ahead), max(0, slack)
    daily: list[tuple[int, ...]] = []
    weekly: list[tuple[int, ...]] = []
    expected: list[float] = []

    def window_sums(origin: int, length: int) -> list[int]:
        sums = _window_sums(_counts(by_day, per_day, origin, length), window)
        if lost > 1 and marks:
            short = _window_sums(_counts(marks, per_day, origin, length), window)
            sums = [
                n if e == 0 else math.ceil(n * min(lost, window / max(window - e, 1e-9)))
                for n, e in zip(sums, short, strict=True)
            ]
        return sums

    bucket = first
    while bucket <= last + ahead:
        day, begin = divmod(bucket, per_day)
        end = min(per_day - 1, begin + (last + ahead - bucket))  # this day's part
        span = end - begin + 1
        judged = max(0, min(span, last - bucket + 1))  # of which in the range itself
        same_kind, same_weekday = references(history, day)
        counts: dict[int, list[int]] = {}
        sums: dict[int, list[int]] = {}
        peaks: dict[int, list[int]] = {}
        length = 2 * slack + span + ahead + window
        for ref in {*same_kind, *same_weekday}:
            origin = ref * per_day + begin - slack
            counts[ref] = _counts(by_day, per_day, origin, length)
            sums[ref] = window_sums(origin, length)
            for shift in region_shifts(season, regions, day=day, reference=ref):
                # Where another region's clock moved against the pool's since then, its
                # clusters come earlier or later by as much: take the larger of both views.
                moved = window_sums(origin - shift, length)
                sums[ref] = [max(a, b) for a, b in zip(sums[ref], moved, strict=True)]
            if ref in same_weekday:
                peaks[ref] = _sliding_max(sums[ref], 2 * slack + ahead + 1)
        for i in range(span):
            daily.append(tuple(sums[r][slack + i] for r in same_kind))
        for i in range(judged):
            weekly.append(tuple(peaks[r][i] for r in same_weekday))
            kind_mean = (
                sum(counts[r][slack + i] for r in same_kind) / len(same_kind) if same_kind else 0
            )
            week_mean = (
                sum(counts[r][slack + i] for r in same_weekday) / len(same_weekday)
                if same_weekday
                else 0
            )
            expected.append(max(kind_mean, week_mean))
        bucket += span
    return Samples(first=first, daily=tuple(daily), weekly=tuple(weekly), expected=tuple(expected))


def region_shifts(
    season: Season, regions: tuple[str, ...], *, day: int, reference: int
) -> tuple[int, ...]:
    """Buckets by which the clusters of each region in ``regions`` moved in the pool's local
    time between local day ``reference`` and ``day`` (non-zero ones only, each once): a
    meeting at 13:00 in New York is at 19:00 in Berlin most of the year, but at 18:00 in the
    weeks when one has changed to summer time and the other not yet."""
    if not regions:
        return ()
    own = ZoneInfo(season.time_zone)
    scale = season.day_seconds / REAL_DAY / season.bucket_seconds
    then = season.start_of(reference) + season.day_seconds / 2
    now = season.start_of(day) + season.day_seconds / 2
    shifts: set[int] = set()
    for name in regions:
        zone = ZoneInfo(name)
        moved = _offset(own, now) - _offset(zone, now) - (_offset(own, then) - _offset(zone, then))
        if moved:
            shifts.add(round(moved * scale))
    return tuple(sorted(s for s in shifts if s))


def _offset(zone: ZoneInfo, t: float) -> float:
    offset = datetime.fromtimestamp(t, zone).utcoffset()
    return 0.0 if offset is None else offset.total_seconds()


def _counts(by_day: dict[int, DayStarts], per_day: int, first: int, length: int) -> list[int]:
    """Starts per bucket for ``length`` local buckets from bucket ``first``."""
    counts = [0] * length
    for day in range(first // per_day, (first + length - 1) // per_day + 1):
        starts = by_day.get(day)
        if starts is None:
            continue
        offsets = starts.view()
        base = day * per_day - first
        low = bisect.bisect_left(offsets, -base)
        high = bisect.bisect_left(offsets, length - base)
        for j in range(low, high):
            counts[offsets[j] + base] += 1
    return counts


def _sliding_max(values: Sequence[int], width: int) -> list[int]:
    """For each i with a full window, the largest of values[i : i + width] (in one pass)."""
    out: list[int] = []
    kept: deque[int] = deque()  # indexes of values in decreasing order
    for i, value in enumerate(values):
        while kept and values[kept[-1]] <= value:
            kept.pop()
        kept.append(i)
        if kept[0] <= i - width:
            kept.popleft()
        if i >= width - 1:
            out.append(values[kept[0]])
    return out


def _window_sums(counts: list[int], window: int) -> list[int]:
    """For each bucket, the starts within ``window`` buckets from it (cut short at the end)."""
    running = [0]
    for c in counts:
        running.append(running[-1] + c)
    size = len(counts)
    return [running[min(size, s + window)] - running[s] for s in range(size)]


def level(daily: Sequence[int], *, trim: float) -> float:
    """The typical count of the same kind of days: their mean without the highest ``trim``
    share."""
    if not daily:
        return 0.0
    ranked = sorted(daily)
    kept = ranked[: max(1, len(ranked) - math.floor(trim * len(ranked)))]
    return sum(kept) / len(kept)


def nb_quantile(
    mean: float, dispersion: float | None, *, shortfall_probability: float, limit: int = 10_000
) -> int:
    """The smallest N with P(X > N) <= ``shortfall_probability`` for X negative binomial with
    this mean and variance mean + mean^2 / dispersion (a Poisson for None)."""
    if mean <= 0 or shortfall_probability >= 1:
        return 0
    if dispersion is None or not math.isfinite(dispersion):
        return spares_for_demand(
            rate=mean, lead_time=1.0, shortfall_probability=shortfall_probability, limit=limit
        )
    if not dispersion > 0:
        raise ForecastError(f"dispersion {dispersion} must be above 0")
    q = mean / (dispersion + mean)  # the failure chance of one trial
    target = math.log1p(-shortfall_probability)
    log_pmf = dispersion * math.log1p(-q)  # P(X = 0)
    log_cdf = log_pmf
    for k in range(limit):
        if log_cdf >= target:
            return k
        log_pmf += math.log((k + dispersion) / (k + 1)) + math.log(q)
        high, low = max(log_cdf, log_pmf), min(log_cdf, log_pmf)
        log_cdf = high + math.log1p(math.exp(low - high))
    return limit


def spares_from_samples(
    samples: Samples,
    *,
    ahead: int,
    shortfall_probability: float,
    tuning: Tuning,
    half_hour: int = 0,
    margin: int = 0,
) -> list[int]:
    """Per bucket of the samples' range but ``margin`` buckets at either end, the forecast
    spares: the tail (at the accepted probability) of the typical count of the same kind of
    days, its highest over the next ``ahead`` buckets; or, if higher, the same weekday's peak
    with `Tuning.growth` to spare. ``half_hour``: buckets in half an hour (`Tuning.phase`)."""
    cache: dict[float, int] = {}
    tails: list[int] = []
    levels = [level(counts, trim=tuning.trim) for counts in samples.daily]
    if tuning.phase and half_hour:
        size = len(levels)
        pooled = []
        for i in range(size):
            around = [
                levels[i + j * half_hour]
                for j in range(-tuning.phase, tuning.phase + 1)
                if 0 <= i + j * half_hour < size
            ]
            pooled.append(sum(around) / len(around))
        levels = [max(a, b) for a, b in zip(levels, pooled, strict=True)]
    if tuning.smooth:
        running = [0.0]
        for value in levels:
            running.append(running[-1] + value)
        size = len(levels)
        broad = [
            (running[min(size, i + tuning.smooth + 1)] - running[max(0, i - tuning.smooth)])
            / (min(size, i + tuning.smooth + 1) - max(0, i - tuning.smooth))
            for i in range(size)
        ]
        levels = [max(a, b) for a, b in zip(levels, broad, strict=True)]
    for value in levels:
        # Up to the next 1/64: the same tail for nearly the same level, computed once.
        typical = math.ceil(value * 64 - 1e-9) / 64
        tail = cache.get(typical)
        if tail is None:
            tail = cache[typical] = nb_quantile(
                typical, tuning.dispersion, shortfall_probability=shortfall_probability
            )
        tails.append(tail)
    highest = _sliding_max(tails, ahead + 1)
    spares: list[int] = []
    for i in range(margin, len(samples.weekly) - margin):
        peaks = samples.weekly[i]
        daily = highest[i]
        weekly = math.ceil(max(peaks) * (1.0 + tuning.growth)) if peaks else 0
        spares.append(max(daily, weekly))
    return spares


class Basis(StrEnum):
    """What the forecast's spares rest on."""

    HISTORY = "History"
    """Reference days were found: the forecast plus the reactive estimate of the rest."""
    NO_HISTORY = "NoHistory"
    """Not one wholly recorded reference day: the reactive estimate alone."""


@dataclass(frozen=True)
class Outlook:
    """The forecast spares and expected starts for a stretch of local buckets (up to the end
    of one local day: the next day has one more reference day; it may reach back into the
    day before)."""

    season: Season
    first: int
    spares: tuple[int, ...]
    """Per bucket from ``first``: the spares the forecast asks for."""
    expected: tuple[float, ...]
    """Per bucket from ``first``: the starts history expects in it."""
    lead_time: float
    """The lead time it was built for."""
    shortfall_probability: float
    tuning: Tuning
    reference_days: int
    """Reference days of the same kind for the day it ends in (0: nothing to forecast from)."""
    regions: tuple[str, ...] = ()
    reference_days_before: int = 0
    """The same for the day before, for the buckets of it the outlook reaches back to."""

    def references_at(self, bucket: int) -> int:
        """Reference days of the same kind for the day of ``bucket``."""
        per_day = self.season.buckets_per_day
        return (
            self.reference_days
            if bucket // per_day == self.last // per_day
            else (self.reference_days_before)
        )

    @property
    def last(self) -> int:
        return self.first + len(self.spares) - 1

    def covers(self, first: int, last: int) -> bool:
        return self.first <= first and last <= self.last

    def holds(
        self,
        *,
        now: float,
        lead_time: float,
        shortfall_probability: float,
        tuning: Tuning,
        regions: tuple[str, ...] = (),
    ) -> bool:
        """Whether it still answers for ``now``: it covers the moment and was built for the
        same risk, tuning, regions and lead time (as `lead_step` rounds it)."""
        return (
            lead_step(lead_time, day_seconds=self.season.day_seconds) == self.lead_time
            and self.shortfall_probability == shortfall_probability
            and self.tuning == tuning
            and self.regions == regions
            and self.covers(self.season.bucket(now), self.season.bucket(now))
        )


LEAD_STEP = 1.1


def lead_step(lead_time: float, *, day_seconds: float = REAL_DAY) -> float:
    """The lead time rounded up to a step of 10% (on a grid in units of the day, so that a
    compressed day rounds alike): the measured lead time (a quantile of the last
    replacements) wanders a little from one replacement to the next, and an outlook is built
    for the step, not for every wobble."""
    if lead_time <= 0:
        return 0.0
    steps = math.ceil(math.log(lead_time / day_seconds) / math.log(LEAD_STEP) - 1e-6)
    return float(day_seconds * LEAD_STEP**steps)


def build_outlook(
    history: History,
    *,
    now: float,
    lead_time: float,
    shortfall_probability: float,
    window: float = 900.0,
    horizon: float | None = None,
    tuning: Tuning = Tuning(),
    regions: tuple[str, ...] = (),
) -> Outlook:
    """The forecast from ``window`` seconds before ``now`` (what the reactive estimate compares
    with) to ``horizon`` after it (an hour of the season's day by default), or to the end of
    the local day if that is sooner, for the lead time rounded up by `lead_step`. Built once
    for a stretch of time and looked up at each moment with `forecast_spares`: the reference
    days do not change while today goes on (`Outlook.holds` says when to build another)."""
    if horizon is None:
        horizon = history.season.day_seconds / 24
    if not (lead_time >= 0 and math.isfinite(lead_time)):
        raise ForecastError(f"lead time {lead_time} must be a number of seconds, 0 or more")
    for name in regions:
        Season(name)  # a ForecastError for a zone that does not exist
    season = history.season
    lead_time = lead_step(lead_time, day_seconds=season.day_seconds)
    per_day = season.buckets_per_day
    today = season.day(now)
    first = season.bucket(now - max(0.0, window))
    last = min(season.bucket(now + max(0.0, horizon)), (today + 1) * per_day - 1)
    width = season.bucket_seconds
    ahead = math.ceil(tuning.ahead * lead_time / width)
    half_hour = per_day // 48
    margin = tuning.phase * half_hour
    samples = reference_samples(
        history,
        first=first - margin,
        last=max(first, last) + margin,
        window=math.ceil(tuning.window * lead_time / width),
        ahead=ahead,
        slack=tuning.slack,
        lost=tuning.lost,
        regions=regions,
    )
    spares = spares_from_samples(
        samples,
        ahead=ahead,
        shortfall_probability=shortfall_probability,
        tuning=tuning,
        half_hour=half_hour,
        margin=margin,
    )
    same_kind, _ = references(history, today)
    before, _ = references(history, today - 1)
    return Outlook(
        season=season,
        first=first,
        spares=tuple(spares),
        expected=samples.expected[margin : len(samples.expected) - margin],
        lead_time=lead_time,
        shortfall_probability=shortfall_probability,
        tuning=tuning,
        reference_days=len(same_kind),
        regions=regions,
        reference_days_before=len(before),
    )


@dataclass(frozen=True)
class ForecastSpares:
    """What the forecast asks for at one moment, and why."""

    spares: int
    """``forecast`` + ``reactive``: the spares the pool wants for its demand."""
    forecast: int
    """From history: the spares that covered this time of day on the reference days."""
    reactive: int
    """The Poisson estimate (core.demand) for the starts history did not expect."""
    expected: float
    """Starts history expects within the next lead time."""
    unexpected_rate: float
    """Starts per second above what history expected, recently."""
    basis: Basis


def unexpected_rate(
    outlook: Outlook | None, starts: Sequence[float], *, now: float, window: float
) -> float:
    """Recent starts per second above what ``outlook`` expected, measured like
    `core.demand.estimate_start_rate` (over the window and its last half, quarter and eighth,
    the highest wins). Without an outlook, all of the recent rate."""
    if window <= 0:
        return 0.0
    ages = sorted(now - t for t in starts if 0 <= now - t <= window)
    season = outlook.season if outlook is not None else None
    best = 0.0
    for scale in RATE_SCALES:
        span = window / scale
        seen = bisect.bisect_right(ages, span)
        expected = 0.0
        if outlook is not None and season is not None:
            expected = _expected_between(outlook, season.bucket(now - span), season.bucket(now))
            if outlook.tuning.surprise:
                # Only starts beyond what the forecast's own tail allowed for are a surprise.
                expected = float(
                    nb_quantile(
                        expected,
                        outlook.tuning.dispersion,
                        shortfall_probability=outlook.shortfall_probability,
                    )
                )
        best = max(best, (seen - expected) / span)
    return best


def _expected_between(outlook: Outlook, first: int, last: int) -> float:
    low = max(first, outlook.first) - outlook.first
    high = min(last, outlook.last) - outlook.first
    return sum(outlook.expected[low : high + 1]) if high >= low else 0.0


def forecast_spares(
    outlook: Outlook | None,
    *,
    starts: Sequence[float],
    now: float,
    lead_time: float,
    window: float,
    shortfall_probability: float,
) -> ForecastSpares:
    """The spares the pool's demand asks for at ``now``: the outlook's forecast for this
    moment plus the reactive estimate (core.demand) of the recent starts it did not expect.
    ``starts``: the recent recording starts (Unix seconds, those within ``window`` count).
    Without an outlook covering ``now``, or one without reference days, the reactive
    estimate of all recent starts alone (`Basis.NO_HISTORY`)."""
    if outlook is not None:
        bucket = outlook.season.bucket(now)
        if not outlook.covers(bucket, bucket) or outlook.references_at(bucket) == 0:
            outlook = None
    rate = unexpected_rate(outlook, starts, now=now, window=window)
    reactive = spares_for_demand(
        rate=rate, lead_time=lead_time, shortfall_probability=shortfall_probability
    )
    if outlook is None:
        return ForecastSpares(
            spares=reactive,
            forecast=0,
            reactive=reactive,
            expected=0.0,
            unexpected_rate=rate,
            basis=Basis.NO_HISTORY,
        )
    bucket = outlook.season.bucket(now)
    forecast = outlook.spares[bucket - outlook.first]
    ahead = outlook.season.bucket(now + lead_time)
    return ForecastSpares(
        spares=forecast + reactive,
        forecast=forecast,
        reactive=reactive,
        expected=_expected_between(outlook, bucket, ahead),
        unexpected_rate=rate,
        basis=Basis.HISTORY,
    )


# ---------------------------------------------------------------------------------------------
# A round: what the controller's pool plan and the policy benchmark both run


@dataclass(frozen=True)
class ForecastState:
    """What a pool's forecast keeps from one round to the next."""

    history: History
    outlook: Outlook | None = None
    """The latest outlook built for the history (see `forecast_round`)."""
    recorded: frozenset[str] = frozenset()
    """The identities of the offered starts already recorded: a start seen a round late,
    earlier than the latest one recorded, still counts once."""

    def with_outlook(self, outlook: Outlook) -> ForecastState:
        """The state with an outlook built meanwhile (off the caller's loop); unchanged if
        the outlook is of another clock (the history was begun anew since)."""
        if outlook.season != self.history.season:
            return self
        return dataclasses.replace(self, outlook=outlook)


@dataclass(frozen=True)
class OutlookRequest:
    """An outlook to build: `build_outlook`'s arguments, for a caller that builds it
    elsewhere (the controller, on a worker thread)."""

    history: History
    at: float
    lead_time: float
    shortfall_probability: float
    window: float
    """How far before ``at`` the outlook reaches back (`build_outlook`'s ``window``)."""
    tuning: Tuning
    regions: tuple[str, ...]

    def build(self) -> Outlook:
        return build_outlook(
            self.history,
            now=self.at,
            lead_time=self.lead_time,
            shortfall_probability=self.shortfall_probability,
            window=self.window,
            tuning=self.tuning,
            regions=self.regions,
        )


@dataclass(frozen=True)
class ForecastRound:
    state: ForecastState
    answer: ForecastSpares | None
    """The spares for now; None while the lead time is unknown."""
    request: OutlookRequest | None
    """An outlook to build and hand back (`ForecastState.with_outlook`); None when the one
    held will do."""


def forecast_round(
    state: ForecastState,
    *,
    starts: Mapping[str, float],
    now: float,
    weeks: int,
    exhausted: bool,
    lead_time: float | None,
    shortfall_probability: float,
    window: float,
    regions: tuple[str, ...] = (),
    tuning: Tuning = Tuning(),
    build: Callable[[OutlookRequest], Outlook] | None = None,
) -> ForecastRound:
    """One round of a pool's forecast: the starts not recorded yet recorded (``starts``: the
    recent ones, Unix seconds by identity), the spares for ``now`` from the outlook held, and
    a new outlook asked for when that one no longer holds or is about to end.

    ``build``: build an outlook asked for at once and use it (the benchmark); without it the
    request is returned and the answer uses the outlook held, or the reactive estimate alone
    where none covers ``now`` (the controller, which builds it off its event loop: about a
    round, once an hour of the day)."""
    new = [t for uid, t in starts.items() if uid not in state.recorded]
    history = record(state.history, new, now=now, weeks=weeks, exhausted=exhausted, fresh=True)
    recorded = frozenset(
        uid for uid, t in starts.items() if uid in state.recorded or (math.isfinite(t) and t <= now)
    )
    outlook = state.outlook
    if outlook is not None and outlook.season != history.season:
        outlook = None
    request = None
    answer = None
    if lead_time is not None:
        request = _renewal(
            outlook,
            history,
            now=now,
            lead_time=lead_time,
            shortfall_probability=shortfall_probability,
            window=window,
            tuning=tuning,
            regions=regions,
        )
        if request is not None and build is not None:
            outlook, request = build(request), None
        usable = outlook
        if usable is not None and not (
            usable.covers(usable.season.bucket(now), usable.season.bucket(now))
            and usable.shortfall_probability == shortfall_probability
            and usable.tuning == tuning
            and usable.regions == regions
        ):
            usable = None  # a lead time a step away still answers while the next is built
        answer = forecast_spares(
            usable,
            starts=list(starts.values()),
            now=now,
            lead_time=lead_time,
            window=window,
            shortfall_probability=shortfall_probability,
        )
    return ForecastRound(ForecastState(history, outlook, recorded), answer, request)


RENEW = 1 / 4
"""An outlook is renewed once less than this share of its horizon (an hour of the day) is
left, so the next is ready before it ends."""


def _renewal(
    outlook: Outlook | None,
    history: History,
    *,
    now: float,
    lead_time: float,
    shortfall_probability: float,
    window: float,
    tuning: Tuning,
    regions: tuple[str, ...],
) -> OutlookRequest | None:
    """The outlook to build next, if the one held no longer holds or is about to end."""
    season = history.season

    horizon = season.day_seconds / 24

    def ask(at: float) -> OutlookRequest:
        # Reaching back the horizon as well as the reactive window, an outlook built ahead
        # of time still holds what was expected over the whole window of every round that
        # uses it (the reactive estimate counts only the starts beyond those).
        return OutlookRequest(
            history, at, lead_time, shortfall_probability, window + horizon, tuning, regions
        )

    if outlook is None or not outlook.holds(
        now=now,
        lead_time=lead_time,
        shortfall_probability=shortfall_probability,
        tuning=tuning,
        regions=regions,
    ):
        return ask(now)
    left = (outlook.last + 1 - season.bucket(now)) * season.bucket_seconds
    if left > horizon * RENEW:
        return None
    today = season.day(now)
    if outlook.last < (today + 1) * season.buckets_per_day - 1:
        return ask(now)  # one built now reaches further
    # It ends with the day: the next one is built for the next day, reaching back into this
    # one far enough to cover now.
    return ask(season.start_of(today + 1))
