"""A simulated day of recordings against one spare pool: the demand, the pods, the ReplicaSet.

Nothing here decides how many spares to keep; a `Sizer` does (bench/policy.py has them, the
demand-based one calling the controller's own `decide_pool`). This module plays the world
around it, event by event on a simulated clock:

- A recording starts: Jicofo takes a Ready spare (the oldest). If there is none, the start is a
  *shortfall* ("all recorders are currently busy"); the recording is lost, not retried.
- The Jibri turns BUSY at once but is still one of the Deployment's pods until its webhook has
  reached the controller and the detach has landed (the webhook latency). Then it leaves the
  ReplicaSet, which creates a replacement (a moment later, `rs_delay`).
- A replacement is Ready after a start-up time drawn from `Startup` (Jibri with Chrome: tens of
  seconds). Its creation-to-Ready time is what the controller measures as the lead time.
- The recording ends: the Jibri reports EXPIRED and the controller deletes the pod.
- The ReplicaSet keeps exactly ``replicas`` idle-labelled pods. When it has too many it deletes
  starting pods first, then the newest Ready ones, never one that has turned BUSY but is not
  detached yet (the pool's scale-down protects those).

Cost is the idle pod-hours: the time pods spent starting or waiting as spares.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

# ---------------------------------------------------------------------------------------------
# Demand


@dataclass(frozen=True)
class Recording:
    start: float
    """Seconds after the simulated day's zero."""
    length: float
    """Seconds."""


@dataclass(frozen=True)
class Demand:
    t0: datetime
    """What the simulated clock's zero is, tz-aware UTC (schedule windows need the real time)."""
    duration: float
    """Seconds simulated."""
    recordings: tuple[Recording, ...]
    bursts: tuple[float, ...] = ()
    """When the sudden bursts begin (for the plot)."""
    source: str = ""


@dataclass(frozen=True)
class DayShape:
    """A working day's recordings: quiet nights, a morning and an afternoon peak, bursts."""

    day: date = date(2026, 3, 10)
    """A Tuesday."""
    time_zone: str = "Europe/Berlin"
    night_per_hour: float = 1.0
    daytime_per_hour: float = 10.0
    """The level between the peaks and into the evening, from about 07:00 to 21:00."""
    morning_per_hour: float = 110.0
    morning_hour: float = 10.0
    afternoon_per_hour: float = 90.0
    afternoon_hour: float = 14.5
    peak_width_hours: float = 1.3
    bursts: int = 3
    burst_size: tuple[int, int] = (12, 24)
    """A large meeting's breakout rooms all starting their recordings at once."""
    burst_spread_seconds: float = 20.0
    median_length_minutes: float = 25.0
    length_sigma: float = 1.0
    """Log-normal lengths: a heavy right tail (a few recordings run for hours)."""
    max_length_hours: float = 8.0

    def per_hour(self, hour: float) -> float:
        """Starts per hour at a local time of day (hours since midnight), bursts aside."""
        day = 1.0 / (1.0 + math.exp(-(hour - 7.0) * 2.0)) / (1.0 + math.exp((hour - 21.0) * 2.0))
        morning = math.exp(-0.5 * ((hour - self.morning_hour) / self.peak_width_hours) ** 2)
        afternoon = math.exp(-0.5 * ((hour - self.afternoon_hour) / self.peak_width_hours) ** 2)
        return (
            self.night_per_hour
            + self.daytime_per_hour * day
            + self.morning_per_hour * morning
            + self.afternoon_per_hour * afternoon
        )


def synthetic_day(seed: int, shape: DayShape | None = None, *, hours: float = 24.0) -> Demand:
    """One seeded day of recordings (a non-homogeneous Poisson process, by thinning)."""
    shape = shape or DayShape()
    rng = random.Random(seed)
    zone = ZoneInfo(shape.time_zone)
    t0 = datetime.combine(shape.day, time(0), tzinfo=zone).astimezone(UTC)
    duration = hours * 3600.0
    peak = max(shape.per_hour(h / 10) for h in range(0, 241)) / 3600.0

    def length(median_minutes: float, sigma: float) -> float:
        value = rng.lognormvariate(math.log(median_minutes * 60.0), sigma)
        return min(value, shape.max_length_hours * 3600.0)

    recordings: list[Recording] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= duration:
            break
        if rng.random() * peak <= _local_rate(shape, t0, t, zone):
            recordings.append(Recording(t, length(shape.median_length_minutes, shape.length_sigma)))
    # The simulated zero is local midnight, so (DST days aside) hour h is h x 3600 s.
    bursts = sorted(rng.uniform(9.0, 17.0) * 3600.0 for _ in range(shape.bursts))
    for begin in bursts:
        if begin >= duration:
            continue
        for _ in range(rng.randint(*shape.burst_size)):
            start = begin + rng.uniform(0.0, shape.burst_spread_seconds)
            recordings.append(Recording(start, length(20.0, 0.3)))
    recordings.sort(key=lambda r: r.start)
    return Demand(
        t0=t0,
        duration=duration,
        recordings=tuple(recordings),
        bursts=tuple(b for b in bursts if b < duration),
        source=f"synthetic day, seed {seed}",
    )


def _local_hour(zone: ZoneInfo, t0: datetime, t: float) -> float:
    local = (t0 + timedelta(seconds=t)).astimezone(zone)
    return local.hour + local.minute / 60.0 + local.second / 3600.0


def _local_rate(shape: DayShape, t0: datetime, t: float, zone: ZoneInfo) -> float:
    return shape.per_hour(_local_hour(zone, t0, t)) / 3600.0


class DemandFileError(ValueError):
    """A replay file that cannot be read: names the line and what is wrong."""


def _parse_time(text: str, *, line: int) -> datetime:
    value = text.strip()
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise DemandFileError(
            f"line {line}: {value!r} is neither Unix seconds nor an ISO 8601 time"
        ) from exc
    if parsed.tzinfo is None:
        raise DemandFileError(f"line {line}: {value!r} has no UTC offset (add Z or +01:00)")
    return parsed.astimezone(UTC)


def replay(path: Path) -> Demand:
    """Recordings from a CSV of ``start,end`` (see docs/performance.md for the format).

    The simulated clock starts at the hour of the first start (UTC) and runs until the last
    end.
    """
    rows: list[tuple[datetime, datetime]] = []
    with path.open(newline="") as handle:
        for number, fields in enumerate(csv.reader(handle), start=1):
            if not fields or fields[0].lstrip().startswith("#"):
                continue
            if number == 1 and fields[0].strip().lower() == "start":
                continue
            if len(fields) != 2:
                raise DemandFileError(f"line {number}: expected two fields, start,end")
            start = _parse_time(fields[0], line=number)
            end = _parse_time(fields[1], line=number)
            if end < start:
                raise DemandFileError(f"line {number}: end {fields[1]!r} is before start")
            rows.append((start, end))
    if not rows:
        raise DemandFileError(f"{path}: no recordings")
    first = min(start for start, _ in rows)
    t0 = first.replace(minute=0, second=0, microsecond=0)
    recordings = sorted(
        (Recording((s - t0).total_seconds(), (e - s).total_seconds()) for s, e in rows),
        key=lambda r: r.start,
    )
    duration = max(r.start + r.length for r in recordings)
    return Demand(
        t0=t0, duration=duration, recordings=tuple(recordings), source=f"replay of {path.name}"
    )


def compress(demand: Demand, *, factor: float, keep: float = 1.0, seed: int = 0) -> Demand:
    """The same day ``factor`` times faster (starts and lengths), keeping a seeded ``keep``
    share of the recordings: a day's shape in minutes, for a real cluster to play."""
    if factor <= 0 or not 0 < keep <= 1:
        raise ValueError(f"factor {factor} must be > 0 and keep {keep} in (0, 1]")
    rng = random.Random(f"compress-{seed}")
    kept = tuple(
        Recording(r.start / factor, r.length / factor)
        for r in demand.recordings
        if rng.random() < keep
    )
    return Demand(
        t0=demand.t0,
        duration=demand.duration / factor,
        recordings=kept,
        bursts=tuple(b / factor for b in demand.bursts),
        source=f"{demand.source}, {factor:g}x faster, {keep:.0%} of the recordings",
    )


def write_csv(demand: Demand, path: Path) -> None:
    """The demand as a replay file (ISO 8601 times in UTC), e.g. to edit and replay."""
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["start", "end"])
        for r in demand.recordings:
            start = demand.t0 + timedelta(seconds=r.start)
            end = start + timedelta(seconds=r.length)
            out.writerow([start.isoformat(), end.isoformat()])


# ---------------------------------------------------------------------------------------------
# The world's timings


@dataclass(frozen=True)
class Startup:
    """Creation to Ready of a Jibri pod: scheduling and container start, then Chrome and the
    Jibri JVM (log-normal), now and then a slow node or an image pull on top."""

    fixed_seconds: float = 6.0
    median_seconds: float = 25.0
    sigma: float = 0.35
    slow_fraction: float = 0.03
    slow_extra_seconds: tuple[float, float] = (20.0, 60.0)

    def sample(self, rng: random.Random) -> float:
        value = self.fixed_seconds + rng.lognormvariate(math.log(self.median_seconds), self.sigma)
        if rng.random() < self.slow_fraction:
            value += rng.uniform(*self.slow_extra_seconds)
        return value


@dataclass(frozen=True)
class UniformStartup:
    """Creation to Ready uniformly between two bounds (the testbed kubelet's delay and
    jitter, plus what the control plane adds)."""

    low_seconds: float
    high_seconds: float

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low_seconds, self.high_seconds)


class StartupModel(Protocol):
    def sample(self, rng: random.Random) -> float: ...


@dataclass(frozen=True)
class World:
    startup: StartupModel = field(default_factory=Startup)
    webhook_median_seconds: float = 0.2
    """Jibri's BUSY webhook until the detach has landed (log-normal, sigma 0.5)."""
    rs_delay_seconds: float = 0.1
    """A change (detach, delete, new replicas) until the ReplicaSet has acted on it."""
    sample_seconds: float = 60.0
    """How often the plotted time series is sampled."""


# ---------------------------------------------------------------------------------------------
# The pool, as a sizer sees it


@dataclass(frozen=True)
class View:
    """What a sizer can observe at a reconcile, as the controller would from the API."""

    t: float
    now: datetime
    zero: float
    """Unix seconds of the simulated clock's zero: ``zero + t`` is now, and ``zero`` plus a
    detach's time is when it happened, the same float at every reconcile."""
    busy: int
    """Detached (BUSY) pods."""
    claimed: int
    """Pods that turned BUSY but are not detached yet (they still look idle)."""
    spare_ready: int
    starting: int
    replicas: int
    detaches: Sequence[float]
    """When the detaches of the last hour happened (sim seconds, oldest first)."""
    lead_times: Sequence[float]
    """Creation-to-Ready seconds of the most recent replacements."""


class Sizer(Protocol):
    name: str
    period: float
    """Seconds between reconciles (math.inf: never)."""
    on_events: bool
    """Also reconciles right after each detach and each delete."""

    def initial(self) -> int: ...

    def reconcile(self, view: View) -> int | None:
        """Desired replicas (the Deployment's), or None to leave them."""
        ...


class _State(Enum):
    STARTING = "starting"
    READY = "ready"
    CLAIMED = "claimed"
    BUSY = "busy"


@dataclass
class _Pod:
    created: float
    state: _State


@dataclass(frozen=True)
class Sample:
    t: float
    spare_ready: int
    idle: int
    busy: int
    replicas: int


@dataclass
class Period:
    """The figures of one part of the simulated time (e.g. the second week)."""

    begin: float
    end: float
    recordings: int = 0
    shortfalls: int = 0
    idle_pod_hours: float = 0.0
    busy_pod_hours: float = 0.0
    scale_writes: int = 0


@dataclass
class Outcome:
    name: str
    recordings: int
    shortfalls: list[float]
    idle_pod_hours: float
    busy_pod_hours: float
    peak_pods: int
    scale_writes: int
    samples: list[Sample]
    zero_spare_seconds: float
    periods: list[Period] = field(default_factory=list)
    """The same figures split at ``simulate``'s ``split`` times."""

    @property
    def shortfall_percent(self) -> float:
        return 100.0 * len(self.shortfalls) / self.recordings if self.recordings else 0.0


_SPLIT, _ARRIVE, _DETACH, _READY, _END, _RS, _RECONCILE, _SAMPLE = range(8)


def simulate(
    demand: Demand,
    sizer: Sizer,
    *,
    world: World | None = None,
    seed: int = 0,
    split: Sequence[float] = (),
) -> Outcome:
    """Play the day against ``sizer``. The same seed gives every sizer the same start-up times
    and webhook latencies, in order of need. ``split``: times (seconds, ascending) at which the
    figures are also cut into `Period` s (e.g. a week), reported in ``Outcome.periods``."""
    world = world or World()
    startup_rng = random.Random(f"startup-{seed}")
    latency_rng = random.Random(f"webhook-{seed}")
    pods: dict[int, _Pod] = {}
    ids = iter(range(1, 1 << 62))
    events: list[tuple[float, int, int, int]] = []
    sequence = iter(range(1 << 62))

    def at(when: float, kind: int, arg: int = 0) -> None:
        heapq.heappush(events, (when, next(sequence), kind, arg))

    replicas = sizer.initial()
    for _ in range(replicas):
        pods[next(ids)] = _Pod(created=0.0, state=_State.READY)
    tally = dict.fromkeys(_State, 0)
    """Pods by state, kept as they change (counting them at every event is what took time)."""
    tally[_State.READY] = replicas
    detaches: deque[float] = deque()
    lead_times: deque[float] = deque(maxlen=20)
    shortfalls: list[float] = []
    samples: list[Sample] = []
    writes = 0
    rs_pending = False
    idle_seconds = busy_seconds = zero_seconds = 0.0
    peak = len(pods)
    last_t = 0.0
    edges = [0.0, *(t for t in split if 0.0 < t < demand.duration), demand.duration]
    periods = [Period(begin, end) for begin, end in itertools.pairwise(edges)]
    current = periods[0]
    for index, edge in enumerate(edges[1:-1], start=1):
        at(edge, _SPLIT, index)

    for index, recording in enumerate(demand.recordings):
        at(recording.start, _ARRIVE, index)
    if math.isfinite(sizer.period):
        at(0.0, _RECONCILE)
    at(0.0, _SAMPLE)

    def counts() -> tuple[int, int, int, int]:
        return (
            tally[_State.STARTING],
            tally[_State.READY],
            tally[_State.CLAIMED],
            tally[_State.BUSY],
        )

    def move(pod: _Pod, state: _State) -> None:
        tally[pod.state] -= 1
        tally[state] += 1
        pod.state = state

    def rs_soon(now: float) -> None:
        nonlocal rs_pending
        if not rs_pending:
            rs_pending = True
            at(now + world.rs_delay_seconds, _RS)

    def reconcile(now: float) -> None:
        nonlocal replicas, writes
        while detaches and detaches[0] < now - 3600.0:
            detaches.popleft()
        starting, ready, claimed, busy = counts()
        view = View(
            t=now,
            now=demand.t0 + timedelta(seconds=now),
            zero=demand.t0.timestamp(),
            busy=busy,
            claimed=claimed,
            spare_ready=ready + claimed,
            starting=starting,
            replicas=replicas,
            detaches=detaches,
            lead_times=lead_times,
        )
        desired = sizer.reconcile(view)
        if desired is not None and desired != replicas:
            replicas = desired
            writes += 1
            current.scale_writes += 1
            rs_soon(now)

    while events:
        now, _, kind, arg = heapq.heappop(events)
        if now > demand.duration:
            break
        starting, ready, claimed, busy = counts()
        span = now - last_t
        idle_seconds += span * (starting + ready)
        busy_seconds += span * (claimed + busy)
        current.idle_pod_hours += span * (starting + ready) / 3600.0
        current.busy_pod_hours += span * (claimed + busy) / 3600.0
        if ready == 0:
            zero_seconds += span
        last_t = now
        if kind == _SPLIT:
            current = periods[arg]
        elif kind == _ARRIVE:
            current.recordings += 1
            candidates = [(p.created, i) for i, p in pods.items() if p.state is _State.READY]
            if not candidates:
                shortfalls.append(now)
                current.shortfalls += 1
                continue
            _, pod_id = min(candidates)
            move(pods[pod_id], _State.CLAIMED)
            latency = latency_rng.lognormvariate(math.log(world.webhook_median_seconds), 0.5)
            at(now + latency, _DETACH, pod_id)
            at(now + demand.recordings[arg].length, _END, pod_id)
        elif kind == _DETACH:
            pod = pods.get(arg)
            if pod is None or pod.state is not _State.CLAIMED:
                continue
            move(pod, _State.BUSY)
            detaches.append(now)
            rs_soon(now)
            if sizer.on_events:
                reconcile(now)
        elif kind == _END:
            pod = pods.pop(arg, None)
            if pod is None:
                continue
            tally[pod.state] -= 1
            if pod.state is _State.CLAIMED:
                rs_soon(now)
            if sizer.on_events:
                reconcile(now)
        elif kind == _READY:
            pod = pods.get(arg)
            if pod is not None and pod.state is _State.STARTING:
                move(pod, _State.READY)
                lead_times.append(now - pod.created)
        elif kind == _RS:
            rs_pending = False
            labelled = [
                (i, p) for i, p in pods.items() if p.state is not _State.BUSY
            ]  # the ReplicaSet's pods
            missing = replicas - len(labelled)
            for _ in range(missing):
                pod_id = next(ids)
                pods[pod_id] = _Pod(created=now, state=_State.STARTING)
                tally[_State.STARTING] += 1
                at(now + world.startup.sample(startup_rng), _READY, pod_id)
            if missing < 0:
                order = sorted(
                    (p.state is not _State.STARTING, -p.created, i)
                    for i, p in labelled
                    if p.state is not _State.CLAIMED
                )
                for _, _, pod_id in order[:-missing]:
                    tally[pods.pop(pod_id).state] -= 1
            peak = max(peak, len(pods))
        elif kind == _RECONCILE:
            reconcile(now)
            at(now + sizer.period, _RECONCILE)
        elif kind == _SAMPLE:
            samples.append(Sample(now, ready + claimed, starting + ready, busy + claimed, replicas))
            at(now + world.sample_seconds, _SAMPLE)
        peak = max(peak, len(pods))

    starting, ready, claimed, busy = counts()
    tail = max(0.0, demand.duration - last_t)
    idle_seconds += tail * (starting + ready)
    busy_seconds += tail * (claimed + busy)
    current.idle_pod_hours += tail * (starting + ready) / 3600.0
    current.busy_pod_hours += tail * (claimed + busy) / 3600.0
    return Outcome(
        name=sizer.name,
        recordings=len(demand.recordings),
        shortfalls=shortfalls,
        idle_pod_hours=idle_seconds / 3600.0,
        busy_pod_hours=busy_seconds / 3600.0,
        peak_pods=peak,
        scale_writes=writes,
        samples=samples,
        zero_spare_seconds=zero_seconds,
        periods=periods,
    )


def starts_per_hour(demand: Demand, *, bucket_seconds: float = 600.0) -> list[tuple[float, float]]:
    """(bucket start, starts per hour) over the day, for the plot."""
    buckets = max(1, math.ceil(demand.duration / bucket_seconds))
    counts = [0] * buckets
    for r in demand.recordings:
        counts[min(buckets - 1, int(r.start // bucket_seconds))] += 1
    return [(i * bucket_seconds, c * 3600.0 / bucket_seconds) for i, c in enumerate(counts)]


def concurrent_peak(recordings: Iterable[Recording]) -> int:
    """The most recordings running at once, had every one found a spare."""
    edges = sorted(
        [(r.start, 1) for r in recordings] + [(r.start + r.length, -1) for r in recordings]
    )
    best = running = 0
    for _, step in edges:
        running += step
        best = max(best, running)
    return best
