"""Leader election decisions, as client-go's ``tryAcquireOrRenew`` makes them.

Expiry is judged from the *local* monotonic time at which this replica last saw the Lease record
change, never from the record's own timestamps, so clock skew between replicas cannot make a
standby steal a lease that is still being renewed. The caller writes with the last-read
``resourceVersion``; a competing writer then gets 409 and simply tries again next period.

There is no fencing: two replicas can briefly both believe they lead. Every destructive action
the leader takes must therefore be safe on its own (deletes carry a uid precondition and follow
a fresh EXPIRED observation).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    lease_duration_seconds: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int

    def same_as(self, other: LeaseRecord | None) -> bool:
        return other is not None and self == other


@dataclass(frozen=True)
class Observation:
    """The last record this replica saw, and when (local monotonic seconds) it last changed."""

    record: LeaseRecord
    changed_at: float


class Step(StrEnum):
    CREATE = "create"
    ACQUIRE = "acquire"
    RENEW = "renew"
    STAND_BY = "stand-by"


@dataclass(frozen=True)
class Decision:
    step: Step
    record: LeaseRecord | None
    """The record to write (for create, acquire and renew)."""
    observation: Observation | None


def observe(previous: Observation | None, current: LeaseRecord, now: float) -> Observation:
    """Remember when the record last changed, in local time."""
    if previous is not None and current.same_as(previous.record):
        return previous
    return Observation(record=current, changed_at=now)


def decide(
    *,
    identity: str,
    current: LeaseRecord | None,
    previous: Observation | None,
    now: float,
    wall_now: datetime,
    lease_duration: float,
) -> Decision:
    """Decide whether to create, acquire, renew or stand by.

    ``now`` is local monotonic time, used for expiry; ``wall_now`` only fills the record's
    timestamps (as client-go does) for humans and other tools to read.
    """
    duration = max(1, round(lease_duration))
    if current is None:
        record = LeaseRecord(identity, duration, wall_now, wall_now, 0)
        return Decision(Step.CREATE, record, None)
    seen = observe(previous, current, now)
    held_by_other = current.holder not in ("", identity)
    if held_by_other and seen.changed_at + current.lease_duration_seconds > now:
        return Decision(Step.STAND_BY, None, seen)
    if current.holder == identity:
        renewed = replace(current, lease_duration_seconds=duration, renew_time=wall_now)
        return Decision(Step.RENEW, renewed, seen)
    acquired = LeaseRecord(identity, duration, wall_now, wall_now, current.transitions + 1)
    return Decision(Step.ACQUIRE, acquired, seen)


def released(record: LeaseRecord, wall_now: datetime) -> LeaseRecord:
    """The record a leader writes on clean shutdown so a standby takes over at once."""
    return replace(record, holder="", lease_duration_seconds=1, renew_time=wall_now)
