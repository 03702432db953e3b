"""The demo's scripted day: its parameters, and the recordings it plays (when each starts and
ends, and what becomes of it)."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from testbed.cluster import REPO

NAMESPACE = "jibri-demo"
SPARES = 3
STATUS_PERIOD = 10.0
SWEEP_INTERVAL = 5
REPLICAS = ("controller-a", "controller-b")
WEBHOOK_REPLICA, SWEEP_REPLICA = REPLICAS
KID = "demo-key-1"
DEFAULT_DURATION = 90.0
FAST_DURATION = 25.0
DEFAULT_OUT = REPO / "out" / "demo-timeline.png"
FAILURE_LOGS = REPO / "out" / "demo-logs"
SPARE_WAIT = 10.0
"""How long a recording waits for an idle Jibri before it is turned away."""
RECOVERY_GRACE = 20.0
"""After the scenario, how long the pool may take to return to its target."""
REAL_DEFAULT_DURATION = 150.0
REAL_EVERY = 25.0
"""With real Jibris, a recording every this many seconds (each takes a JVM and a browser)."""
REAL_RECOVERY_GRACE = 90.0
"""Real replacements start one after another, a JVM each."""
STATUS_EVERY = 1.0


class Fate(enum.Enum):
    FINISHES = "finishes"
    WEBHOOK_LOST = "webhook-lost"
    """Its Jibri's webhooks are silenced just before stopService: EXPIRED never arrives."""
    CRASHES = "crashes"
    """Its Jibri crashes mid-recording and its container restarts idle."""


@dataclass(frozen=True)
class PlannedRecording:
    id: str
    start_at: float
    end_at: float
    fate: Fate


def make_plan(
    duration: float, rng: random.Random, *, every: float = 7.0, crash: bool = True
) -> list[PlannedRecording]:
    """About one recording per 7 s, arriving over the first 70 % of ``duration`` (one in each
    of as many equal slots, at a random moment of its slot), each 10-30 % of ``duration`` long
    and over by 85 %: the rest shows the pool at rest.

    The second recording loses its EXPIRED webhook and a later one crashes; both end by 75 %,
    so the sweeper (every SWEEP_INTERVAL seconds) acts within the scenario. With ``every``, one
    per that many seconds instead; without ``crash``, none crashes.
    """
    count = max(5 if crash else 3, round(duration / every))
    first, last = 0.06 * duration, 0.7 * duration
    slot = (last - first) / count
    arrivals = [rng.uniform(first + i * slot, first + (i + 1) * slot) for i in range(count)]
    for i in range(1, count):  # at most one arrival per 0.6 s: three spares are enough
        arrivals[i] = max(arrivals[i], arrivals[i - 1] + 0.6)
    crashing = rng.randrange(2, count - 1) if crash else -1
    plan = []
    for i, start in enumerate(arrivals):
        fate = Fate.WEBHOOK_LOST if i == 1 else Fate.CRASHES if i == crashing else Fate.FINISHES
        latest = (0.85 if fate is Fate.FINISHES else 0.75) * duration
        length = rng.uniform(0.1 * duration, 0.3 * duration)
        end = max(start + 0.08 * duration, min(start + length, latest))
        plan.append(PlannedRecording(f"rec-{i + 1:02d}", start, end, fate))
    return plan
