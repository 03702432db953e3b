"""The election loop against the in-memory cluster, in virtual time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from jibri_pod_controller.adapters import kube
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.core.config import LeaseTimings
from jibri_pod_controller.core.leasing import LeaseRecord
from jibri_pod_controller.loops.electing import Elector
from tests.component.fakes import FakeClock, FakeCluster

LEASE = "jibri-pod-controller-lease"
TIMINGS = LeaseTimings(duration=15, renew_deadline=10, retry_period=2)
# A standby retries every retry period plus up to 20 % jitter.
SLACK = TIMINGS.retry_period * 1.2


@dataclass
class Candidate:
    name: str
    elector: Elector
    metrics: Metrics
    started: list[float] = field(default_factory=list)
    stopped: list[float] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        return self.elector.leading.is_set()

    async def crash(self) -> None:
        """Stop campaigning without releasing, as a killed process would."""
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


Spawn = Callable[..., Awaitable[Candidate]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
async def spawn(clock: FakeClock, cluster: FakeCluster) -> AsyncIterator[Spawn]:
    candidates: list[Candidate] = []

    async def _spawn(name: str, *, skew: float = 0.0, run: bool = True) -> Candidate:
        metrics = Metrics()
        elector = Elector(
            cluster=cluster,
            metrics=metrics,
            name=LEASE,
            identity=name,
            timings=TIMINGS,
            monotonic=clock.monotonic,
            wall_clock=lambda: clock.wall(skew),
            sleep=clock.sleep,
            jitter=lambda: 1.0,
        )
        candidate = Candidate(name, elector, metrics)
        if run:
            candidate.task = asyncio.create_task(
                elector.run(
                    lambda: candidate.started.append(clock.now),
                    lambda: candidate.stopped.append(clock.now),
                )
            )
        candidates.append(candidate)
        await clock.settle()
        return candidate

    yield _spawn
    for candidate in candidates:
        if candidate.task is not None:
            await candidate.crash()


def holder(cluster: FakeCluster) -> str | None:
    stored = cluster.leases.get(LEASE)
    return None if stored is None else stored.record.holder


async def test_acquires_a_missing_lease(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster
) -> None:
    a = await spawn("a")
    assert a.leading
    assert a.started == [clock.now]
    stored = cluster.leases[LEASE]
    assert stored.record == LeaseRecord("a", 15, clock.wall(), clock.wall(), 0)
    assert [w.method for w in cluster.writes] == ["create_lease"]


async def test_acquires_an_empty_lease(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster
) -> None:
    cluster.leases[LEASE] = kube.StoredLease(LeaseRecord("", 1, None, None, 4), "7")
    a = await spawn("a")
    assert a.leading
    assert cluster.leases[LEASE].record.transitions == 5
    assert [w.method for w in cluster.writes] == ["update_lease"]


async def test_leader_renews_every_retry_period(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster
) -> None:
    a = await spawn("a")
    acquired = cluster.leases[LEASE].record.acquire_time
    await clock.advance(60)
    assert a.leading
    assert a.stopped == []
    renewals = [w for w in cluster.writes if w.method == "update_lease"]
    assert len(renewals) == 30
    record = cluster.leases[LEASE].record
    assert (record.holder, record.transitions, record.acquire_time) == ("a", 0, acquired)
    assert record.renew_time == clock.wall()


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
async def test_a_standby_does_not_take_a_renewed_lease(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster, skew: float
) -> None:
    """Even when the leader's clock is an hour off, so its renewTime looks stale or future."""
    a = await spawn("a", skew=skew)
    b = await spawn("b")
    await clock.advance(120)
    assert a.leading
    assert not b.leading
    assert b.started == []
    assert {w.body.holder for w in cluster.lease_writes()} == {"a"}
    assert cluster.leases[LEASE].record.transitions == 0


async def test_a_standby_takes_over_after_the_leader_dies(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster
) -> None:
    a = await spawn("a", skew=-3600)
    b = await spawn("b")
    await clock.advance(30)
    await a.crash()
    last_renewal = clock.now
    await clock.advance(TIMINGS.duration - SLACK)
    assert not b.leading  # the lease is still valid as b sees it
    await clock.advance(3 * SLACK)
    assert b.leading
    (started,) = b.started
    # b saw the last renewal at most one retry after it happened, waited a full lease duration
    # from then on its own clock, and noticed the expiry at its next retry.
    assert last_renewal + TIMINGS.duration <= started
    assert started <= last_renewal + TIMINGS.duration + 2 * SLACK
    record = cluster.leases[LEASE].record
    assert (record.holder, record.transitions) == ("b", 1)


async def test_a_leader_that_cannot_renew_stops_within_the_renew_deadline(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster
) -> None:
    a = await spawn("a")
    await clock.advance(10)
    last_renewal = clock.now
    cluster.fail_next("get_lease", *(kube.Unavailable("get lease: timed out") for _ in range(100)))
    await clock.advance(TIMINGS.renew_deadline + TIMINGS.retry_period)
    assert not a.leading
    (stopped,) = a.stopped
    assert stopped <= last_renewal + TIMINGS.renew_deadline
    # It stopped before anyone else could see the lease as expired.
    assert stopped < last_renewal + TIMINGS.duration
    assert a.metrics.registry.get_sample_value("jibri_pod_controller_leader") == 0
    assert (
        a.metrics.registry.get_sample_value(
            "jibri_pod_controller_leader_transitions_total", {"direction": "stopped"}
        )
        == 1
    )


async def test_a_leader_whose_updates_fail_stops_too(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster
) -> None:
    a = await spawn("a")
    await clock.advance(4)
    last_renewal = clock.now
    cluster.fail_next(
        "update_lease", *(kube.Unavailable("update lease: HTTP 503") for _ in range(100))
    )
    await clock.advance(TIMINGS.renew_deadline + TIMINGS.retry_period)
    assert a.stopped
    assert a.stopped[0] <= last_renewal + TIMINGS.renew_deadline


async def test_a_leader_regains_the_lease_when_the_api_returns(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster
) -> None:
    a = await spawn("a")
    cluster.fail_next("get_lease", *(kube.Unavailable("down") for _ in range(6)))
    await clock.advance(30)
    assert len(a.stopped) == 1
    assert len(a.started) == 2
    assert a.leading
    assert cluster.leases[LEASE].record.holder == "a"


async def test_release_hands_over_at_once(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster
) -> None:
    a = await spawn("a")
    b = await spawn("b")
    await clock.advance(7)
    await a.crash()
    await a.elector.release()
    record = cluster.leases[LEASE].record
    assert (record.holder, record.lease_duration_seconds) == ("", 1)
    released_at = clock.now
    await clock.advance(SLACK + 0.1)
    assert b.leading
    assert b.started[0] <= released_at + SLACK
    assert cluster.leases[LEASE].record.holder == "b"


async def test_release_when_not_leading_writes_nothing(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster
) -> None:
    await spawn("a")
    b = await spawn("b")
    writes = len(cluster.writes)
    await b.elector.release()
    assert len(cluster.writes) == writes
    assert holder(cluster) == "a"


async def test_release_after_losing_the_lease_is_harmless(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster
) -> None:
    a = await spawn("a")
    await a.crash()
    # Someone else took the lease meanwhile (a's resourceVersion is now stale).
    stored = cluster.leases[LEASE]
    cluster.leases[LEASE] = kube.StoredLease(
        LeaseRecord("b", 15, clock.wall(), clock.wall(), 1), stored.resource_version + "0"
    )
    await a.elector.release()
    assert holder(cluster) == "b"


async def test_two_electors_racing_for_a_missing_lease(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster
) -> None:
    a = await spawn("a", run=False)
    b = await spawn("b", run=False)
    for c in (a, b):
        c.task = asyncio.create_task(
            c.elector.run(lambda c=c: c.started.append(clock.now), lambda c=c: c.stopped.append(0))
        )
    await clock.advance(60)
    assert [a.leading, b.leading].count(True) == 1
    leader, other = (a, b) if a.leading else (b, a)
    assert other.started == []
    assert holder(cluster) == leader.name
    # Both tried to create it; the API server refused the second.
    assert [w.method for w in cluster.writes[:2]] == ["create_lease", "create_lease"]


async def test_two_standbys_racing_for_an_expired_lease(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster
) -> None:
    cluster.leases[LEASE] = kube.StoredLease(LeaseRecord("gone", 15, None, None, 2), "5")
    b = await spawn("b")
    c = await spawn("c")
    await clock.advance(60)
    assert [b.leading, c.leading].count(True) == 1
    record = cluster.leases[LEASE].record
    assert record.transitions == 3
    assert (b.started or c.started)[0] >= clock.now - 60 + TIMINGS.duration


async def test_a_standby_wakes_when_the_lease_expires_not_at_its_next_retry(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster
) -> None:
    a = await spawn("a")
    b = await spawn("b")
    await clock.advance(30)
    await a.crash()
    await clock.advance(SLACK)  # b has now read the last record a ever wrote
    observed = b.elector._observed
    assert observed is not None
    assert observed.record.holder == "a"
    await clock.advance(TIMINGS.duration + 2 * SLACK)
    (started,) = b.started
    expiry = observed.changed_at + TIMINGS.duration
    assert expiry <= started <= expiry + 0.05


async def test_a_leader_that_resigns_hands_over_and_stands_back(
    spawn: Spawn, clock: FakeClock, cluster: FakeCluster
) -> None:
    a = await spawn("a")
    b = await spawn("b")
    await clock.advance(5)
    assert a.leading
    resigned_at = clock.now
    a.elector.resign()  # its sweeper cannot run
    await clock.advance(TIMINGS.retry_period + SLACK + 0.2)
    assert not a.leading
    assert a.stopped
    assert a.stopped[0] <= resigned_at + TIMINGS.retry_period
    assert b.leading  # well before the lease would have expired
    assert b.started[0] < resigned_at + TIMINGS.duration
    # a does not grab the Lease back while it stands back, nor after: b renews it.
    await clock.advance(3 * TIMINGS.duration)
    assert b.leading
    assert not a.leading
    assert holder(cluster) == "b"


async def test_resign_when_not_leading_does_nothing(spawn: Spawn, clock: FakeClock) -> None:
    a = await spawn("a")
    b = await spawn("b")
    await clock.advance(5)
    b.elector.resign()
    await clock.advance(10)
    assert a.leading
    assert not b.leading
    assert b.stopped == []
