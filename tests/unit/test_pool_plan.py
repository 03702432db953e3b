"""The pool plan: what a round writes, its status and Events, the memory it keeps, when it
looks again. Plain values in, a plan out; no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jibri_pod_controller.core.decisions import Failed, ProbeFailure, ProbeResult, Reported
from jibri_pod_controller.core.jibri import BusyStatus
from jibri_pod_controller.core.pods import ANNOTATION_BUSY_SINCE, Phase, PodFacts
from jibri_pod_controller.core.poolplan import (
    DemandInput,
    Graceful,
    PoolPlan,
    PoolRead,
    Problem,
    TermMemory,
    plan_pool,
    stamp,
    status_patch,
)
from jibri_pod_controller.core.pools import (
    ANNOTATION_DETACHED_FROM,
    DeploymentFacts,
    PoolMemory,
)
from jibri_pod_controller.core.scaledown import (
    ANNOTATION_DELETION_COST,
    DELETION_COST_MAY_GO,
    Asked,
    BlockReason,
    ShutdownOutcome,
)

NOW = datetime(2026, 6, 3, 12, 0, tzinfo=UTC)
BUSY_LABELS = {"app": "jibri", "state": "busy"}
IDLE_LABELS = {"app": "jibri", "state": "idle"}
IDLE = Reported(BusyStatus.IDLE)
REFUSED = Failed(ProbeFailure.CONNECT)


def deployment(replicas: int) -> DeploymentFacts:
    return DeploymentFacts(
        name="jibri",
        uid="d1",
        replicas=replicas,
        resource_version="7",
        selector={"matchLabels": IDLE_LABELS},
        template_labels=IDLE_LABELS,
    )


def spare(name: str, *, ready: bool = True, restarts: int = 0, **kw: Any) -> PodFacts:
    return PodFacts(
        name=name,
        namespace="ns",
        uid=f"u-{name}",
        labels=IDLE_LABELS,
        phase=Phase.RUNNING,
        pod_ips=(f"10.0.0.{len(name)}",),
        owner_kind="ReplicaSet",
        owner_name="jibri-abc",
        ready=ready,
        restart_count=restarts,
        created=NOW - timedelta(hours=1),
        **kw,
    )


def busy(name: str, since: datetime = NOW) -> PodFacts:
    return PodFacts(
        name=name,
        namespace="ns",
        uid=f"u-{name}",
        labels=BUSY_LABELS,
        annotations={ANNOTATION_DETACHED_FROM: "jibri", ANNOTATION_BUSY_SINCE: stamp(since)},
        phase=Phase.RUNNING,
        pod_ips=("10.9.9.9",),
        ready=True,
    )


def read(
    spec: Mapping[str, Any],
    *,
    replicas: int,
    spares: Sequence[PodFacts] = (),
    busy_pods: Sequence[PodFacts] = (),
    status: Mapping[str, Any] | None = None,
    hpa: frozenset[str] = frozenset(),
    missing: bool = False,
) -> PoolRead:
    return PoolRead(
        name="pool",
        generation=3,
        spec={"deploymentName": "jibri", "maxSpare": 10, "scaleDownDelaySeconds": 0, **spec},
        status=dict(status or {}),
        deployment=None if missing else deployment(replicas),
        hpa_targets=hpa,
        selected=tuple(spares),
        busy_labelled=tuple(busy_pods),
    )


def plan(
    pool: PoolRead,
    *,
    memory: TermMemory | None = None,
    answers: Mapping[str, ProbeResult] | None = None,
    graceful: bool = True,
    now: datetime = NOW,
    demand: DemandInput | None = None,
) -> PoolPlan:
    """The first plan, then, if it asks for probes, the plan with the answers (by pod name;
    IDLE unless told otherwise)."""
    first = plan_pool(
        pool,
        memory=memory or TermMemory(),
        probes=None,
        now=now,
        busy_labels=BUSY_LABELS,
        graceful=graceful,
        demand=demand,
    )
    if not first.probe:
        return first
    probes = {p.uid: (answers or {}).get(p.name, IDLE) for p in first.probe}
    return plan_pool(
        pool,
        memory=memory or TermMemory(),
        probes=probes,
        now=now,
        busy_labels=BUSY_LABELS,
        graceful=graceful,
        demand=demand,
    )


def condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_steady_pool_writes_nothing_after_its_first_status() -> None:
    pool = read({"minSpare": 2}, replicas=2, spares=[spare("a"), spare("b")])
    first = plan(pool)
    assert (first.replicas, first.probe, first.marks, first.shut_down) == (None, (), (), ())
    assert first.status["spare"] == 2
    assert condition(first.status, "ScaleDownBlocked")["status"] == "False"
    assert condition(first.status, "GracefulScaleDown")["reason"] == Graceful.USED
    again = plan(replace(pool, status=first.status))
    assert status_patch(first.status, again.status) == {}
    assert again.events == ()
    assert again.recheck_in is None


def test_a_scale_down_asks_then_confirms_then_scales_once() -> None:
    spares = [spare("a"), spare("b"), spare("c")]
    pool = read({"minSpare": 1}, replicas=3, spares=spares)
    asking = plan(pool)
    assert [p.name for p in asking.shut_down] == ["a", "b"]
    assert asking.replicas is None
    assert asking.recheck_in == 0.25
    memory = asking.memory.with_asked(
        {p.uid: Asked(NOW, 0, ShutdownOutcome.ACCEPTED) for p in asking.shut_down}
    )
    later = NOW + timedelta(seconds=0.3)
    confirmed = plan(
        replace(pool, status=asking.status),
        memory=memory,
        answers={"a": REFUSED, "b": REFUSED},
        now=later,
    )
    assert confirmed.replicas == 1
    assert sorted(confirmed.picks) == ["a", "b"]
    assert {p.name: c for p, c in confirmed.marks} == {
        "a": DELETION_COST_MAY_GO,
        "b": DELETION_COST_MAY_GO,
    }
    assert confirmed.status["replicas"] == 1
    assert confirmed.status["leaving"] == 2
    assert confirmed.status["spare"] == 1  # the two leaving are no spares any more
    assert confirmed.status_if_unscaled["replicas"] == 3
    assert "lastScaleTime" not in confirmed.status_if_unscaled
    assert confirmed.scale_event is not None
    assert confirmed.scale_event.reason == "ScaledDown"


def test_a_blocked_scale_down_is_said_once_and_keeps_its_clock() -> None:
    looping = spare("looping", ready=False, restarts=9)
    pool = read(
        {"minSpare": 1, "scaleDownDelaySeconds": 60},
        replicas=3,
        spares=[looping, spare("a"), spare("b")],
    )
    since = NOW - timedelta(seconds=120)
    memory = TermMemory(sizing=PoolMemory(desired=3, below_since=since))
    first = plan(pool, memory=memory, answers={"looping": REFUSED})
    assert first.replicas is None
    assert first.blocked is not None
    assert first.blocked.reason is BlockReason.NO_ANSWER
    blocked = condition(first.status, "ScaleDownBlocked")
    assert (blocked["status"], blocked["reason"]) == ("True", "SpareNotAnswering")
    assert "looping" in blocked["message"]
    assert [e.reason for e in first.events] == ["ScaleDownBlocked"]
    assert first.recheck_in is None  # the next period, not a spin
    # The clock that made the scale-down due is kept: it goes on as soon as it can.
    assert first.memory.sizing.below_since == since
    assert first.status["belowSince"] == stamp(since)
    # The next round, still blocked: no Event, no status write.
    second = plan(
        replace(pool, status=first.status),
        memory=first.memory,
        answers={"looping": Failed(ProbeFailure.TIMEOUT)},
        now=NOW + timedelta(seconds=5),
    )
    assert second.events == ()
    assert status_patch(first.status, second.status) == {}
    # Unblocked: the condition clears, the scale-down happens.
    third = plan(
        replace(pool, status=second.status, selected=(spare("a"), spare("b"))),
        memory=second.memory,
        now=NOW + timedelta(seconds=10),
    )
    assert condition(third.status, "ScaleDownBlocked")["status"] == "False"
    assert third.memory.sizing.below_since == since  # asking: the clock still runs


def test_a_short_wait_is_no_news() -> None:
    """A scale-down that waits less than ``settle`` (a detach the ReplicaSet releases a
    moment later) sets no condition and records no Event; one that lasts does, once."""
    detached = replace(busy("b"), owner_kind="ReplicaSet", owner_name="jibri-abc")
    pool = read({"minSpare": 0}, replicas=2, spares=[spare("a")], busy_pods=[detached])
    settle = timedelta(seconds=5)

    def at(seconds: float, memory: TermMemory, status: Mapping[str, Any]) -> PoolPlan:
        return plan_pool(
            replace(pool, status=status),
            memory=memory,
            probes=None,
            now=NOW + timedelta(seconds=seconds),
            busy_labels=BUSY_LABELS,
            graceful=True,
            settle=settle,
        )

    first = at(0, TermMemory(), {})
    assert first.waiting_for is not None
    assert first.waiting_for.reason is BlockReason.DETACH_NOT_RELEASED
    assert (first.blocked, first.events, first.replicas) == (None, (), None)
    assert condition(first.status, "ScaleDownBlocked")["status"] == "False"
    assert first.recheck_in == 5.0  # looked at again when it would be news
    later = at(5, first.memory, first.status)
    assert later.blocked is not None
    assert [e.reason for e in later.events] == ["ScaleDownBlocked"]
    assert condition(later.status, "ScaleDownBlocked")["reason"] == "DetachNotReleased"
    assert at(9, later.memory, later.status).events == ()
    # A new term starts from the status: still blocked since the condition's transition.
    again = at(10, TermMemory.from_status(later.status), later.status)
    assert (again.events, status_patch(later.status, again.status)) == ((), {})


def test_a_left_over_mark_is_cleared_when_no_scale_down_is_wanted() -> None:
    """A refused scale write left a mark: the next round, with the scale-down no longer
    wanted, clears it."""
    marked = spare("a", annotations={ANNOTATION_DELETION_COST: DELETION_COST_MAY_GO})
    pool = read({"minSpare": 2}, replicas=2, spares=[marked, spare("b")])
    cleared = plan(pool)
    assert [(p.name, cost) for p, cost in cleared.marks] == [("a", None)]


def test_a_spare_found_busy_is_detached_and_the_scale_down_waits() -> None:
    spares = [spare("a"), spare("b")]
    pool = read({"minSpare": 0}, replicas=2, spares=spares)
    found = plan(pool, answers={"a": Reported(BusyStatus.BUSY)}, graceful=False)
    assert [p.name for p in found.detach] == ["a"]
    assert found.replicas is None


@pytest.mark.parametrize(
    ("graceful", "memory", "reason", "event"),
    [
        (False, TermMemory(), Graceful.OFF, False),
        (True, TermMemory(), Graceful.USED, False),
        (True, TermMemory(no_api="spare x: internal API unreachable"), Graceful.UNREACHABLE, False),
    ],
)
def test_the_graceful_condition(
    graceful: bool, memory: TermMemory, reason: Graceful, event: bool
) -> None:
    pool = read({"minSpare": 1}, replicas=1, spares=[spare("a")])
    got = plan(pool, memory=memory, graceful=graceful)
    assert condition(got.status, "GracefulScaleDown")["reason"] == reason
    assert any(e.reason == "GracefulShutdownUnavailable" for e in got.events) is (
        reason is Graceful.UNREACHABLE
    )


def test_an_unreachable_internal_api_is_said_in_the_status_and_falls_back() -> None:
    a, b = spare("a"), spare("b")
    pool = read({"minSpare": 1}, replicas=2, spares=[a, b])
    memory = TermMemory(
        asked={
            p.uid: Asked(NOW, 0, ShutdownOutcome.UNREACHABLE, "ClientConnectorError")
            for p in (a, b)
        }
    )
    got = plan(pool, memory=memory)
    assert got.replicas == 1
    graceful = condition(got.status, "GracefulScaleDown")
    assert (graceful["status"], graceful["reason"]) == ("False", "InternalApiUnreachable")
    assert "ClientConnectorError" in graceful["message"]
    assert [e.reason for e in got.events] == ["GracefulShutdownUnavailable"]
    # Said once: with that status stored, the next round has no Event.
    again = plan(replace(pool, status=got.status), memory=got.memory)
    assert again.events == ()


def test_a_new_term_starts_from_the_status() -> None:
    status = {
        "desiredSpare": 4,
        "belowSince": "2026-06-03T11:55:00Z",
        "recentStarts": [{"at": "2026-06-03T11:59:00Z", "uid": "u1"}, {"at": "bad"}],
        "conditions": [
            {
                "type": "GracefulScaleDown",
                "status": "False",
                "reason": "InternalApiUnreachable",
                "message": "spare x: refused",
            }
        ],
    }
    memory = TermMemory.from_status(status)
    assert memory.sizing == PoolMemory(desired=4, below_since=NOW - timedelta(minutes=5))
    assert memory.starts == {"u1": NOW - timedelta(minutes=1)}
    assert memory.asked == {}
    assert memory.no_api == "spare x: refused"
    assert TermMemory.from_status({}) == TermMemory()


def test_asked_shutdowns_of_pods_that_are_gone_are_forgotten() -> None:
    pool = read({"minSpare": 1}, replicas=1, spares=[spare("a")])
    memory = TermMemory(asked={"u-gone": Asked(NOW, 0, ShutdownOutcome.ACCEPTED)})
    assert plan(pool, memory=memory).memory.asked == {}


@pytest.mark.parametrize(
    ("pool", "problem"),
    [
        (read({"minSpare": 1}, replicas=1, missing=True), Problem.DEPLOYMENT_MISSING),
        (read({"minSpare": 1}, replicas=1, hpa=frozenset({"jibri"})), Problem.HPA_CONFLICT),
        (read({"minSpare": 5, "maxSpare": 1}, replicas=1), Problem.INVALID_SPEC),
    ],
)
def test_a_problem_plans_a_status_and_nothing_else(pool: PoolRead, problem: Problem) -> None:
    got = plan(pool)
    assert got.problem is problem
    assert (got.replicas, got.marks, got.shut_down, got.detach) == (None, (), (), ())
    ready = condition(got.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", problem.value)
    assert [e.reason for e in got.events] == [problem.value]
    assert plan(replace(pool, status=got.status)).events == ()


def test_the_demand_input_is_a_seam() -> None:
    """The plan sizes from the demand it is given (a forecast) instead of the measured one."""
    spec = {"minSpare": 1, "demand": {"shortfallProbability": 0.01, "windowSeconds": 900}}
    pool = read(spec, replicas=1, spares=[spare("a")], busy_pods=[busy("b", NOW)])
    measured = plan(pool)
    assert measured.decision is not None
    assert measured.decision.desired == 1  # no lead time measured yet
    assert measured.status["recentStarts"] == [{"at": stamp(NOW), "uid": "u-b"}]
    forecast = plan(pool, demand=DemandInput(rate=0.1, lead_time=60.0))
    assert forecast.decision is not None
    assert (forecast.decision.desired, forecast.replicas) == (10, 10)
    assert forecast.status["startRate"] == 0.1
    assert forecast.status["leadTimeSeconds"] == 60.0


def test_a_held_scale_down_asks_to_be_looked_at_when_due() -> None:
    pool = read({"minSpare": 1, "scaleDownDelaySeconds": 30}, replicas=3, spares=[spare("a")] * 1)
    held = plan(pool)
    assert held.replicas is None
    assert held.recheck_in == 30.0
