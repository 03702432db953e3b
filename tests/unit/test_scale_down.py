"""The scale-down plan against the ReplicaSet's own deletion order: tables for each case, and a
property: whatever the spares answer, the pods a ReplicaSet may delete at the planned replicas
(ties broken against us, Ready spares that did not answer turning not Ready) are all safe."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jibri_pod_controller.core.decisions import Failed, ProbeFailure, ProbeResult, Reported
from jibri_pod_controller.core.jibri import BusyStatus
from jibri_pod_controller.core.pods import Phase, PodFacts
from jibri_pod_controller.core.scaledown import (
    ANNOTATION_DELETION_COST,
    CONFIRM_TIMEOUT,
    DELETION_COST_MAY_GO,
    SAFE,
    Asked,
    BlockReason,
    ScaleDown,
    ShutdownOutcome,
    Standing,
    plan_scale_down,
    standing,
)

NOW = datetime(2026, 6, 3, 12, 0, tzinfo=UTC)
IDLE = Reported(BusyStatus.IDLE)
BUSY = Reported(BusyStatus.BUSY)
REFUSED = Failed(ProbeFailure.CONNECT, "ConnectionRefusedError")
TIMEOUT = Failed(ProbeFailure.TIMEOUT)


def spare(
    name: str,
    *,
    ready: bool = True,
    phase: Phase = Phase.RUNNING,
    age: int = 60,
    restarts: int = 0,
    cost: str | None = None,
    owner: str = "jibri-abc",
) -> PodFacts:
    return PodFacts(
        name=name,
        namespace="ns",
        uid=f"u-{name}",
        labels={"app": "jibri", "state": "idle"},
        annotations={ANNOTATION_DELETION_COST: cost} if cost is not None else {},
        phase=phase,
        pod_ips=("10.0.0.1",) if phase is not Phase.PENDING else (),
        owner_kind="ReplicaSet",
        owner_name=owner,
        ready=ready,
        restart_count=restarts,
        created=NOW - timedelta(minutes=age),
    )


def accepted(pod: PodFacts, *, ago: float = 1.0) -> Asked:
    return Asked(
        at=NOW - timedelta(seconds=ago),
        restart_count=pod.restart_count,
        outcome=ShutdownOutcome.ACCEPTED,
    )


def plan(
    spares: Sequence[PodFacts],
    *,
    target: int,
    replicas: int | None = None,
    probed: bool = True,
    answers: Mapping[str, ProbeResult] | None = None,
    asked: Mapping[str, Asked] | None = None,
    graceful: bool = True,
    busy: Sequence[PodFacts] = (),
) -> ScaleDown:
    """``answers`` by pod name (every running spare answers IDLE unless told otherwise);
    ``probed=False``: the first plan, before any probe."""
    probes = {p.uid: (answers or {}).get(p.name, IDLE) for p in spares} if probed else None
    return plan_scale_down(
        spares=spares,
        busy=busy,
        replicas=len(spares) if replicas is None else replicas,
        target=target,
        probes=probes,
        asked={f"u-{k}": v for k, v in (asked or {}).items()},
        graceful=graceful,
        now=NOW,
    )


def costs(step: ScaleDown) -> dict[str, str | None]:
    return {pod.name: cost for pod, cost in step.marks}


# -- the counting fix: what the ReplicaSet will delete comes from its live pods ---------------


@pytest.mark.parametrize("graceful", [False, True])
def test_a_retry_never_counts_the_same_spare_twice(graceful: bool) -> None:
    """Replicas 3, wanted 1; a answers IDLE (or has shut down), b and c do not answer. The
    first round lowers to 2; a retry while a is still live must not lower to 1, or the
    ReplicaSet deletes b or c, neither of which ever answered."""
    a = spare("a", ready=False, cost=DELETION_COST_MAY_GO)  # its Jibri went: not Ready
    b, c = spare("b", age=2), spare("c", age=3)
    answers = {"a": IDLE if not graceful else REFUSED, "b": TIMEOUT, "c": TIMEOUT}
    asked = {"a": accepted(a)} if graceful else {}
    first = plan([a, b, c], target=1, replicas=3, answers=answers, asked=asked, graceful=graceful)
    assert first.replicas == 2
    retry = plan([a, b, c], target=1, replicas=2, answers=answers, asked=asked, graceful=graceful)
    assert retry.replicas == 2  # the old count (replicas - 1 found idle) said 1
    assert retry.blocked is not None
    assert retry.blocked.reason is BlockReason.NO_ANSWER
    assert retry.blocked.pod in ("b", "c")
    assert costs(retry) == {}  # a keeps its mark, nobody else gets one


def test_nothing_to_delete_at_the_target_clears_every_mark() -> None:
    """A mark left behind (a refused scale write, a scale-down no longer wanted) goes."""
    a, b = spare("a", cost=DELETION_COST_MAY_GO), spare("b", cost="5")
    step = plan([a, b], target=2, replicas=2, probed=False)
    assert (step.replicas, step.probe) == (2, ())
    assert costs(step) == {"a": None, "b": None}
    raised = plan([a, b], target=4, replicas=2, probed=False)
    assert raised.replicas == 4


def test_a_detach_the_replica_set_has_not_seen_holds_every_lowering() -> None:
    """At the budget's edge: the busy pod's replacement does not exist yet, so the live
    spares are already at the target; lowering replicas now could still make the
    ReplicaSet (which has not seen the detach) delete the recording pod."""
    detached = replace(spare("busy"), labels={"app": "jibri", "state": "busy"})
    step = plan([spare("a")], target=1, replicas=2, probed=False, busy=[detached])
    assert step.replicas == 2
    assert step.blocked is not None
    assert (step.blocked.reason, step.blocked.pod) == (BlockReason.DETACH_NOT_RELEASED, "busy")
    released = replace(detached, owner_kind=None, owner_name=None)
    assert plan([spare("a")], target=1, replicas=2, probed=False, busy=[released]).replicas == 1
    # A raise never waits.
    assert plan([spare("a")], target=3, replicas=2, probed=False, busy=[detached]).replicas == 3


def test_a_rollout_holds_a_scale_down() -> None:
    pods = [spare("a", owner="jibri-old"), spare("b", owner="jibri-new"), spare("c")]
    step = plan(pods, target=1, replicas=3, probed=False)
    assert step.replicas == 3
    assert step.blocked is not None
    assert step.blocked.reason is BlockReason.ROLLOUT
    assert "jibri-new" in step.blocked.message


def test_pending_spares_go_first_without_a_probe() -> None:
    pods = [spare("new", phase=Phase.PENDING), spare("a"), spare("b")]
    step = plan(pods, target=2, replicas=3, probed=False)
    assert (step.replicas, step.probe, step.ask) == (2, (), ())


def test_no_probe_answers_yet_asks_for_them() -> None:
    pods = [spare("new", phase=Phase.PENDING), spare("a"), spare("b")]
    step = plan(pods, target=1, replicas=3, probed=False)
    assert [p.name for p in step.probe] == ["a", "b"]
    assert step.replicas == 3


# -- graceful shutdown -------------------------------------------------------------------------


def test_idle_spares_are_asked_first_and_the_scale_waits() -> None:
    old, young, younger = spare("old", age=90), spare("young", age=20), spare("younger", age=5)
    step = plan([old, young, younger], target=1)
    assert [p.name for p in step.ask] == ["younger", "young"]  # the ReplicaSet's own choice
    assert (step.replicas, step.waiting, step.picks) == (3, True, ())
    assert costs(step) == {}  # no mark before a spare is known to be gone


def test_spares_gone_after_accepting_are_marked_and_counted() -> None:
    a, b, c = spare("a"), spare("b"), spare("c")
    asked = {"a": accepted(a), "b": accepted(b)}
    step = plan([a, b, c], target=1, answers={"a": REFUSED, "b": REFUSED}, asked=asked)
    assert (step.replicas, step.ask, step.waiting) == (1, (), False)
    assert costs(step) == {"a": DELETION_COST_MAY_GO, "b": DELETION_COST_MAY_GO}
    assert sorted(step.picks) == ["a", "b"]


def test_a_spare_that_took_a_recording_before_the_request_is_detached_not_counted() -> None:
    a, b, c = spare("a"), spare("b"), spare("c")
    asked = {"a": accepted(a), "b": accepted(b)}
    step = plan([a, b, c], target=1, answers={"a": REFUSED, "b": BUSY}, asked=asked)
    assert [p.name for p in step.detach] == ["b"]
    assert step.replicas == 3  # lowered once the detach has landed
    assert costs(step) == {"a": DELETION_COST_MAY_GO}


def test_accepted_but_not_yet_closed_is_waited_for() -> None:
    a, b = spare("a"), spare("b")
    step = plan([a, b], target=1, answers={"a": IDLE}, asked={"a": accepted(a, ago=0.1)})
    assert (step.replicas, step.waiting, step.ask, step.standings["u-a"]) == (
        2,
        True,
        (),
        Standing.LEAVING,
    )
    late = CONFIRM_TIMEOUT.total_seconds() + 1
    stale = plan([a], target=0, answers={"a": IDLE}, asked={"a": accepted(a, ago=late)})
    assert stale.standings["u-a"] is Standing.IDLE_NO_API  # ignored the request: today's way
    assert stale.replicas == 0
    assert stale.no_api == (("a", "accepted a graceful shutdown but kept answering IDLE"),)


def test_a_restarted_jibri_is_a_new_process_and_is_asked_again() -> None:
    """A spare that shut down and whose container the kubelet restarted before the
    ReplicaSet deleted it: IDLE again, and could take a recording. The pending deletion is
    taken back (replicas raised) until it is gone again."""
    a = spare("a", restarts=1, cost=DELETION_COST_MAY_GO)
    b = spare("b")
    asked = {"a": Asked(NOW - timedelta(seconds=30), 0, ShutdownOutcome.ACCEPTED)}
    step = plan([a, b], target=1, replicas=1, asked=asked)
    assert [p.name for p in step.ask] == ["a"] or [p.name for p in step.ask] == ["b"]
    assert step.replicas == 2
    assert costs(step) == {"a": None}


def test_an_unreachable_internal_api_falls_back_to_the_probe() -> None:
    a, b = spare("a", age=9), spare("b", age=1)
    unreachable = Asked(NOW, 0, ShutdownOutcome.UNREACHABLE, "ClientConnectorError")
    step = plan([a, b], target=1, asked={"a": unreachable, "b": unreachable})
    assert step.standings["u-b"] is Standing.IDLE_NO_API
    assert (step.replicas, step.picks) == (1, ("b",))
    assert step.no_api == (("b", "internal API unreachable: ClientConnectorError"),)
    # A spare asked in vain goes before asking another (one round each, were the internal
    # API closed to the controller).
    mixed = plan([a, b], target=1, asked={"a": unreachable})
    assert (mixed.ask, mixed.picks, mixed.replicas) == ((), ("a",), 1)


def test_graceful_off_is_the_probe_and_the_marks() -> None:
    a, b, c = spare("a", age=3), spare("b", age=2), spare("c", age=1)
    step = plan([a, b, c], target=1, graceful=False)
    assert (step.replicas, step.ask) == (1, ())
    assert costs(step) == {"b": DELETION_COST_MAY_GO, "c": DELETION_COST_MAY_GO}
    assert step.no_api[0][1] == "graceful shutdown off (JIBRI_INTERNAL_API_PORT=0)"


# -- blocked -----------------------------------------------------------------------------------


def test_a_crash_looping_spare_blocks_and_says_which() -> None:
    """Running, not Ready, never answers: the ReplicaSet would delete it first, and it may
    have been handed a recording in one of its short lives."""
    looping = spare("looping", ready=False, restarts=7)
    pods = [looping, spare("a"), spare("b")]
    step = plan(pods, target=1, answers={"looping": REFUSED})
    assert step.replicas == 3
    assert step.blocked is not None
    assert (step.blocked.reason, step.blocked.pod) == (BlockReason.NO_ANSWER, "looping")
    assert "connect" in step.blocked.detail
    assert step.ask == ()


def test_a_ready_spare_that_did_not_answer_blocks_ready_picks() -> None:
    """It could turn not Ready before the ReplicaSet acts, and not Ready goes before any
    mark; the not-Ready picks are still fine (a newcomer to their group has no mark)."""
    slow = spare("slow")
    a, b = spare("a"), spare("b")
    gone_not_ready = spare("g", ready=False)
    asked = {"a": accepted(a), "g": accepted(gone_not_ready)}
    answers = {"slow": TIMEOUT, "a": REFUSED, "g": REFUSED}
    step = plan([slow, a, b, gone_not_ready], target=2, answers=answers, asked=asked)
    assert step.blocked is not None
    assert (step.blocked.reason, step.blocked.pod) == (BlockReason.NO_ANSWER, "slow")
    assert step.replicas == 3  # g only
    assert costs(step) == {"g": DELETION_COST_MAY_GO}


def test_not_ready_picks_need_no_answer_from_the_ready_spares() -> None:
    slow = spare("slow")
    g = spare("g", ready=False)
    step = plan(
        [slow, g], target=1, answers={"slow": TIMEOUT, "g": REFUSED}, asked={"g": accepted(g)}
    )
    assert (step.replicas, step.blocked) == (1, None)


@pytest.mark.parametrize(
    ("probe", "asked", "graceful", "expected"),
    [
        (IDLE, None, True, Standing.IDLE),
        (IDLE, None, False, Standing.IDLE_NO_API),
        (Reported(BusyStatus.EXPIRED), None, True, Standing.IDLE),
        (BUSY, None, True, Standing.BUSY),
        (TIMEOUT, None, True, Standing.UNKNOWN),
        (REFUSED, None, True, Standing.UNKNOWN),
        (None, None, True, Standing.UNKNOWN),
        (REFUSED, "accepted", True, Standing.GONE),
        (TIMEOUT, "accepted", True, Standing.LEAVING),
        (IDLE, "accepted", True, Standing.LEAVING),
        (BUSY, "accepted", True, Standing.BUSY),
        (IDLE, "unreachable", True, Standing.IDLE_NO_API),
        (TIMEOUT, "unreachable", True, Standing.UNKNOWN),
        (REFUSED, "restarted", True, Standing.UNKNOWN),
        (IDLE, "restarted", True, Standing.IDLE),
    ],
)
def test_standing(
    probe: ProbeResult | None, asked: str | None, graceful: bool, expected: Standing
) -> None:
    pod = spare("p", restarts=1)
    record = {
        None: None,
        "accepted": Asked(NOW, 1, ShutdownOutcome.ACCEPTED),
        "unreachable": Asked(NOW, 1, ShutdownOutcome.UNREACHABLE),
        "restarted": Asked(NOW, 0, ShutdownOutcome.ACCEPTED),
    }[asked]
    assert standing(pod, probe, record, graceful=graceful, now=NOW) is expected
    assert standing(spare("n", phase=Phase.PENDING), None, None, graceful=True, now=NOW) is (
        Standing.NOT_STARTED
    )


# -- the property: the ReplicaSet only ever finds safe spares ----------------------------------


def may_delete(pods: Sequence[PodFacts], count: int, flip: set[str]) -> set[str]:
    """Every pod a ReplicaSet could delete when deleting ``count`` of ``pods``, with the
    spares named in ``flip`` turned not Ready, and every tie broken against us."""
    if count <= 0:
        return set()

    def key(pod: PodFacts) -> tuple[int, bool, int]:
        ready = pod.ready and pod.name not in flip
        phase = {Phase.PENDING: 0, Phase.UNKNOWN: 1}.get(pod.phase, 2)
        cost = int(pod.annotations.get(ANNOTATION_DELETION_COST) or 0)
        return phase, ready, cost

    ordered = sorted(pods, key=key)
    last = key(ordered[min(count, len(ordered)) - 1])
    return {p.name for p in ordered if key(p) <= last}


ANSWERS = st.sampled_from(["idle", "busy", "timeout", "refused", "none"])
ASKED = st.sampled_from(["no", "accepted", "accepted-long-ago", "unreachable", "restarted"])


@settings(max_examples=400)
@given(
    specs=st.lists(
        st.tuples(
            st.sampled_from([Phase.PENDING, Phase.RUNNING, Phase.RUNNING, Phase.UNKNOWN]),
            st.booleans(),
            ANSWERS,
            ASKED,
            st.sampled_from([None, DELETION_COST_MAY_GO, "0", "-500", "7"]),
        ),
        min_size=1,
        max_size=7,
    ),
    target=st.integers(0, 7),
    pending_deletions=st.integers(0, 3),
    graceful=st.booleans(),
)
def test_the_replica_set_only_finds_safe_spares(
    specs: list[tuple[Phase, bool, str, str, str | None]],
    target: int,
    pending_deletions: int,
    graceful: bool,
) -> None:
    pods, probes, asked = [], {}, {}
    for i, (phase, ready, answer, ask, cost) in enumerate(specs):
        pod = spare(
            f"p{i}",
            ready=ready and phase is not Phase.PENDING,
            phase=phase,
            age=i,
            cost=cost,
            restarts=1,
        )
        pods.append(pod)
        if phase is not Phase.PENDING:
            probes[pod.uid] = {
                "idle": IDLE,
                "busy": BUSY,
                "timeout": TIMEOUT,
                "refused": REFUSED,
                "none": None,
            }[answer]
        long_ago = NOW - CONFIRM_TIMEOUT - timedelta(seconds=1)
        record = {
            "no": None,
            "accepted": Asked(NOW, 1, ShutdownOutcome.ACCEPTED),
            "accepted-long-ago": Asked(long_ago, 1, ShutdownOutcome.ACCEPTED),
            "unreachable": Asked(NOW, 1, ShutdownOutcome.UNREACHABLE),
            "restarted": Asked(NOW, 0, ShutdownOutcome.ACCEPTED),
        }[ask]
        if record is not None:
            asked[pod.uid] = record
    probes = {u: r for u, r in probes.items() if r is not None}
    replicas = max(0, len(pods) - pending_deletions)
    step = plan_scale_down(
        spares=pods,
        busy=(),
        replicas=replicas,
        target=target,
        probes=probes,
        asked=asked,
        graceful=graceful,
        now=NOW,
    )
    assert step.replicas >= target
    assert step.replicas >= min(replicas, target) or step.replicas == target
    if step.probe:
        return
    marks = {pod.uid: cost for pod, cost in step.marks}
    marked = [
        replace(p, annotations={ANNOTATION_DELETION_COST: marks[p.uid]} if marks[p.uid] else {})
        if p.uid in marks
        else p
        for p in pods
    ]
    safe = {p.name for p in pods if step.standings.get(p.uid, Standing.NOT_STARTED) in SAFE}
    unknown_ready = {
        p.name
        for p in pods
        if p.ready
        and (
            step.standings.get(p.uid) is Standing.UNKNOWN
            or (
                step.standings.get(p.uid) is Standing.LEAVING
                and isinstance(probes.get(p.uid), Failed)
            )
        )
    }
    for flip in (set(), unknown_ready):
        doomed = may_delete(marked, len(pods) - step.replicas, flip)
        assert doomed <= safe, (doomed - safe, step)
    if step.replicas < replicas:
        assert not step.detach
        assert not step.ask
