"""Leader election decisions: expiry is judged on local observation time, never on the record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jibri_pod_controller.core.leasing import (
    Decision,
    LeaseRecord,
    Observation,
    Step,
    decide,
    observe,
    released,
)

WALL = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
T0 = 5000.0  # local monotonic seconds
ACQUIRED = WALL - timedelta(hours=2)


def record(
    holder: str = "b",
    *,
    renewed: datetime = WALL,
    duration: int = 15,
    transitions: int = 3,
) -> LeaseRecord:
    return LeaseRecord(holder, duration, ACQUIRED, renewed, transitions)


def run(
    current: LeaseRecord | None,
    previous: Observation | None = None,
    *,
    now: float = T0,
    identity: str = "a",
    wall_now: datetime = WALL,
    lease_duration: float = 15,
) -> Decision:
    return decide(
        identity=identity,
        current=current,
        previous=previous,
        now=now,
        wall_now=wall_now,
        lease_duration=lease_duration,
    )


def test_create_when_there_is_no_lease() -> None:
    decision = run(None)
    assert decision == Decision(Step.CREATE, LeaseRecord("a", 15, WALL, WALL, 0), None)


def test_acquire_from_an_empty_holder() -> None:
    decision = run(record(holder="", transitions=4))
    assert decision.step is Step.ACQUIRE
    assert decision.record == LeaseRecord("a", 15, WALL, WALL, 5)


@pytest.mark.parametrize(
    "renewed",
    [
        WALL - timedelta(days=1),  # the holder's clock is far behind ours
        WALL + timedelta(days=1),  # or far ahead
        WALL,
    ],
)
def test_stand_by_while_unexpired_in_local_time(renewed: datetime) -> None:
    first = run(record(renewed=renewed))
    assert first.step is Step.STAND_BY
    assert first.record is None
    assert first.observation == Observation(record(renewed=renewed), T0)
    # Unchanged for almost the lease duration of local time: still standing by.
    later = run(record(renewed=renewed), first.observation, now=T0 + 14.9)
    assert later.step is Step.STAND_BY
    assert later.observation == first.observation


@pytest.mark.parametrize("renewed", [WALL - timedelta(days=1), WALL + timedelta(days=1)])
def test_acquire_after_local_expiry(renewed: datetime) -> None:
    first = run(record(renewed=renewed))
    decision = run(record(renewed=renewed), first.observation, now=T0 + 15)
    assert decision.step is Step.ACQUIRE
    assert decision.record == LeaseRecord("a", 15, WALL, WALL, 4)


def test_a_renewal_restarts_the_local_expiry() -> None:
    first = run(record(renewed=WALL))
    renewed = record(renewed=WALL + timedelta(seconds=2))
    second = run(renewed, first.observation, now=T0 + 10)
    assert second.step is Step.STAND_BY
    assert second.observation == Observation(renewed, T0 + 10)
    assert run(renewed, second.observation, now=T0 + 24.9).step is Step.STAND_BY
    assert run(renewed, second.observation, now=T0 + 25).step is Step.ACQUIRE


def test_the_record_duration_is_what_a_standby_waits() -> None:
    short = record(duration=5)
    first = run(short)
    assert run(short, first.observation, now=T0 + 4.9).step is Step.STAND_BY
    assert run(short, first.observation, now=T0 + 5).step is Step.ACQUIRE


def test_a_first_sight_counts_from_now_even_if_the_record_looks_ancient() -> None:
    """A replica that just started has seen no renewal yet: it waits a full duration."""
    decision = run(record(renewed=WALL - timedelta(days=365)))
    assert decision.step is Step.STAND_BY


def test_renew_keeps_acquire_time_and_transitions() -> None:
    mine = LeaseRecord("a", 10, ACQUIRED, WALL - timedelta(seconds=2), 7)
    decision = run(mine, now=T0, wall_now=WALL)
    assert decision.step is Step.RENEW
    assert decision.record == LeaseRecord("a", 15, ACQUIRED, WALL, 7)


def test_renew_even_if_the_own_record_looks_expired() -> None:
    mine = LeaseRecord("a", 15, ACQUIRED, WALL - timedelta(hours=1), 7)
    assert run(mine).step is Step.RENEW


def test_takeover_increments_transitions() -> None:
    first = run(record(transitions=9))
    decision = run(record(transitions=9), first.observation, now=T0 + 60)
    assert decision.record is not None
    assert decision.record.transitions == 10
    assert (decision.record.holder, decision.record.acquire_time) == ("a", WALL)


def test_duration_is_rounded_to_whole_seconds_and_at_least_one() -> None:
    assert run(None, lease_duration=15.6).record == LeaseRecord("a", 16, WALL, WALL, 0)
    assert run(None, lease_duration=0.2).record == LeaseRecord("a", 1, WALL, WALL, 0)


def test_observe_keeps_the_first_sight_of_an_unchanged_record() -> None:
    seen = observe(None, record(), 1.0)
    assert observe(seen, record(), 9.0) is seen
    changed = observe(seen, record(transitions=4), 9.0)
    assert changed == Observation(record(transitions=4), 9.0)


def test_released_record() -> None:
    mine = LeaseRecord("a", 15, ACQUIRED, WALL - timedelta(seconds=3), 7)
    assert released(mine, WALL) == LeaseRecord("", 1, ACQUIRED, WALL, 7)


def test_a_released_lease_is_acquired_at_once() -> None:
    free = released(record(transitions=7), WALL)
    first = run(free)
    assert first.step is Step.ACQUIRE
    assert first.record == LeaseRecord("a", 15, WALL, WALL, 8)
