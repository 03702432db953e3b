"""What happened: the recordings as they were played, the pods counted over time, what the
controllers did, and the violations found."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

from testbed.demo.plan import PlannedRecording


class RecState(enum.Enum):
    PLANNED = "planned"
    LIVE = "live"
    ENDED = "ended"
    """stopService was called (or about to be), or the Jibri crashed: deleting is allowed."""
    TURNED_AWAY = "turned-away"


@dataclass
class Recording:
    plan: PlannedRecording
    state: RecState = RecState.PLANNED
    pod: str | None = None
    uid: str | None = None
    ip: str | None = None
    started: float | None = None
    ended: float | None = None


@dataclass(frozen=True)
class Sample:
    t: float
    spare: int
    busy: int
    total: int


@dataclass(frozen=True)
class Action:
    """A detach or delete, as a controller logged it."""

    t: float
    replica: str
    action: str
    pod: str
    reason: str
    source: str
    result: str


@dataclass(frozen=True)
class Mark:
    """Something the scenario did, for the timeline."""

    t: float
    kind: str  # start, stop, lost, crash
    recording: str


@dataclass
class Outcome:
    samples: list[Sample] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    ramp_done: float | None = None
    webhooks: Counter[str] = field(default_factory=Counter)
    sweeps: list[float] = field(default_factory=list)
    leader: str | None = None
