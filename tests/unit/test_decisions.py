"""Decisions: full tables, the duplicate and reorder cases, and the never-delete properties."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jibri_pod_controller.core.config import ReapPolicy
from jibri_pod_controller.core.decisions import (
    Action,
    Delete,
    Detach,
    Failed,
    Nothing,
    Policy,
    ProbeFailure,
    ProbeResult,
    Reason,
    Reported,
    busy_since,
    decide_on_report,
    decide_on_sweep,
    is_stuck_busy,
    is_unresponsive,
    probe_order,
    records_session_on,
    restarted_since_detach,
    started_before_detach,
)
from jibri_pod_controller.core.jibri import BusyStatus, SessionState
from jibri_pod_controller.core.pods import (
    ANNOTATION_BUSY_SINCE,
    ANNOTATION_RESTARTS_AT_BUSY,
    ANNOTATION_SESSION_ON,
    ANNOTATION_SESSIONS_WATCHED,
    Phase,
    PodFacts,
    has_labels,
)

IDLE_LABELS = {"app": "jibri", "state": "idle", "pod-template-hash": "7c9f8d6b5"}
BUSY = {"app": "jibri", "state": "busy"}
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CREATED = NOW - timedelta(hours=1)
DETACHED_AT = NOW - timedelta(minutes=30)

IDLE, BUSY_STATUS, EXPIRED = BusyStatus.IDLE, BusyStatus.BUSY, BusyStatus.EXPIRED


def pod(
    *,
    busy: bool = False,
    deleting: bool = False,
    phase: Phase = Phase.RUNNING,
    restarts: int = 0,
    restarts_at_busy: int | None = 0,
    annotations: Mapping[str, str] | None = None,
    started: datetime | None = None,
) -> PodFacts:
    notes: dict[str, str] = {}
    if busy:
        notes[ANNOTATION_BUSY_SINCE] = DETACHED_AT.isoformat(timespec="seconds")
        if restarts_at_busy is not None:
            notes[ANNOTATION_RESTARTS_AT_BUSY] = str(restarts_at_busy)
    notes.update(annotations or {})
    return PodFacts(
        name="jibri-7c9f8d6b5-x4k2p",
        namespace="jitsi",
        uid="u-1",
        labels={**BUSY, "pod-template-hash": "7c9f8d6b5"} if busy else IDLE_LABELS,
        annotations=notes,
        phase=phase,
        pod_ips=("10.0.0.1",),
        deleting=deleting,
        owner_kind=None if busy else "ReplicaSet",
        restart_count=restarts,
        created=CREATED,
        resource_version="7",
        containers_started=started,
    )


# -- webhook reports --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "subject", "expected"),
    [
        (IDLE, pod(), Nothing(Reason.IDLE)),
        (BUSY_STATUS, pod(), Detach(Reason.BUSY_REPORTED)),
        (EXPIRED, pod(), Delete(Reason.EXPIRED_REPORTED)),
        # BUSY resent every minute: the second one finds the labels and writes nothing.
        (BUSY_STATUS, pod(busy=True), Nothing(Reason.ALREADY_DETACHED)),
        # A late IDLE after BUSY never re-attaches.
        (IDLE, pod(busy=True), Nothing(Reason.IDLE)),
        (EXPIRED, pod(busy=True), Delete(Reason.EXPIRED_REPORTED)),
        # BUSY after EXPIRED: the pod is terminating, nothing to do.
        (BUSY_STATUS, pod(deleting=True), Nothing(Reason.TERMINATING)),
        (BUSY_STATUS, pod(busy=True, deleting=True), Nothing(Reason.TERMINATING)),
        (EXPIRED, pod(busy=True, deleting=True), Nothing(Reason.TERMINATING)),
        (IDLE, pod(deleting=True), Nothing(Reason.TERMINATING)),
        # A finished pod that still reports is decided on its report.
        (EXPIRED, pod(busy=True, phase=Phase.SUCCEEDED), Delete(Reason.EXPIRED_REPORTED)),
    ],
)
def test_decide_on_report(status: BusyStatus, subject: PodFacts, expected: Action) -> None:
    assert decide_on_report(status=status, pod=subject, busy_labels=BUSY) == expected


def test_reports_in_every_order_only_move_forward() -> None:
    """BUSY, BUSY, IDLE (late), EXPIRED, BUSY (late): one detach, one delete, nothing else."""
    current = pod()
    actions: list[Action] = []
    for status in (BUSY_STATUS, BUSY_STATUS, IDLE, EXPIRED, BUSY_STATUS):
        action = decide_on_report(status=status, pod=current, busy_labels=BUSY)
        actions.append(action)
        if isinstance(action, Detach):
            current = pod(busy=True)
        elif isinstance(action, Delete):
            current = pod(busy=True, deleting=True)
    assert actions == [
        Detach(Reason.BUSY_REPORTED),
        Nothing(Reason.ALREADY_DETACHED),
        Nothing(Reason.IDLE),
        Delete(Reason.EXPIRED_REPORTED),
        Nothing(Reason.TERMINATING),
    ]


# -- sweeps -----------------------------------------------------------------------------------

DEFAULT = Policy()
KEEP = Policy(restarted=ReapPolicy.KEEP, finished=ReapPolicy.KEEP)
MAX_AGE = Policy(max_busy_seconds=600)
KEPT = Nothing(Reason.POLICY_KEEP, attention=True)
TIMEOUT = Failed(ProbeFailure.TIMEOUT)


@pytest.mark.parametrize(
    ("subject", "probe", "policy", "expected"),
    [
        # Spare pods.
        (pod(), Reported(IDLE), DEFAULT, Nothing(Reason.SPARE)),
        (pod(), Reported(BUSY_STATUS), DEFAULT, Detach(Reason.MISSED_BUSY)),
        (pod(), Reported(EXPIRED), DEFAULT, Delete(Reason.EXPIRED_REPORTED)),
        (pod(), TIMEOUT, DEFAULT, Nothing(Reason.NO_ANSWER)),
        (pod(), TIMEOUT, MAX_AGE, Nothing(Reason.NO_ANSWER)),
        (pod(phase=Phase.PENDING), None, DEFAULT, Nothing(Reason.NOT_RUNNING)),
        (pod(phase=Phase.FAILED), None, DEFAULT, Nothing(Reason.NOT_RUNNING)),
        # Busy-labelled pods.
        (pod(busy=True), Reported(BUSY_STATUS), DEFAULT, Nothing(Reason.RECORDING)),
        (pod(busy=True), Reported(EXPIRED), DEFAULT, Delete(Reason.EXPIRED_REPORTED)),
        (pod(busy=True), Reported(EXPIRED), KEEP, Delete(Reason.EXPIRED_REPORTED)),
        (pod(busy=True), TIMEOUT, DEFAULT, Nothing(Reason.NO_ANSWER)),
        (pod(busy=True), Failed(ProbeFailure.INVALID), DEFAULT, Nothing(Reason.NO_ANSWER)),
        (pod(busy=True, phase=Phase.PENDING), None, DEFAULT, Nothing(Reason.NOT_RUNNING)),
        # IDLE from a busy-labelled pod: only a visible restart makes it reapable.
        (
            pod(busy=True),
            Reported(IDLE),
            DEFAULT,
            Nothing(Reason.IDLE_WHILE_BUSY_LABELLED, attention=True),
        ),
        (
            pod(busy=True, restarts=1),
            Reported(IDLE),
            DEFAULT,
            Delete(Reason.RESTARTED_WHILE_BUSY),
        ),
        (pod(busy=True, restarts=1), Reported(IDLE), KEEP, KEPT),
        (
            pod(busy=True, restarts=2, restarts_at_busy=2),
            Reported(IDLE),
            DEFAULT,
            Nothing(Reason.IDLE_WHILE_BUSY_LABELLED, attention=True),
        ),
        (
            pod(busy=True, restarts=3, restarts_at_busy=2),
            Reported(IDLE),
            DEFAULT,
            Delete(Reason.RESTARTED_WHILE_BUSY),
        ),
        # The process answering IDLE was already running at the detach: the BUSY came from an
        # earlier process that crashed, and the detach landed after the restart.
        (
            pod(
                busy=True,
                restarts=1,
                restarts_at_busy=1,
                started=DETACHED_AT - timedelta(seconds=5),
            ),
            Reported(IDLE),
            DEFAULT,
            Delete(Reason.RESTARTED_BEFORE_DETACH),
        ),
        (
            pod(busy=True, restarts=1, restarts_at_busy=1, started=DETACHED_AT),
            Reported(IDLE),
            DEFAULT,
            Delete(Reason.RESTARTED_BEFORE_DETACH),
        ),
        (pod(busy=True, started=DETACHED_AT - timedelta(seconds=5)), Reported(IDLE), KEEP, KEPT),
        # Started after the detach without a restart counted is no evidence: keep, and flag it.
        (
            pod(busy=True, started=DETACHED_AT + timedelta(seconds=5)),
            Reported(IDLE),
            DEFAULT,
            Nothing(Reason.IDLE_WHILE_BUSY_LABELLED, attention=True),
        ),
        # Still recording: a start time never matters then.
        (
            pod(busy=True, started=DETACHED_AT - timedelta(seconds=5)),
            Reported(BUSY_STATUS),
            DEFAULT,
            Nothing(Reason.RECORDING),
        ),
        (
            pod(busy=True, restarts=1, restarts_at_busy=None),
            Reported(IDLE),
            DEFAULT,
            Delete(Reason.RESTARTED_WHILE_BUSY),
        ),
        # A restart of a busy pod that still records is not reaped.
        (pod(busy=True, restarts=1), Reported(BUSY_STATUS), DEFAULT, Nothing(Reason.RECORDING)),
        # Finished while busy-labelled.
        (pod(busy=True, phase=Phase.FAILED), None, DEFAULT, Delete(Reason.FINISHED_WHILE_BUSY)),
        (pod(busy=True, phase=Phase.SUCCEEDED), None, DEFAULT, Delete(Reason.FINISHED_WHILE_BUSY)),
        (pod(busy=True, phase=Phase.FAILED), None, KEEP, KEPT),
        # Maximum busy age: off by default, measured from the busy-since annotation.
        (pod(busy=True), Reported(BUSY_STATUS), MAX_AGE, Delete(Reason.BUSY_TOO_LONG)),
        (pod(busy=True), TIMEOUT, MAX_AGE, Delete(Reason.BUSY_TOO_LONG)),
        (pod(busy=True, phase=Phase.PENDING), None, MAX_AGE, Delete(Reason.BUSY_TOO_LONG)),
        (
            pod(busy=True),
            Reported(BUSY_STATUS),
            Policy(max_busy_seconds=3600),
            Nothing(Reason.RECORDING),
        ),
        # Terminating pods are left alone whatever they say.
        (pod(deleting=True), Reported(EXPIRED), DEFAULT, Nothing(Reason.TERMINATING)),
        (
            pod(busy=True, deleting=True),
            Reported(BUSY_STATUS),
            MAX_AGE,
            Nothing(Reason.TERMINATING),
        ),
        (
            pod(busy=True, deleting=True, phase=Phase.FAILED),
            None,
            DEFAULT,
            Nothing(Reason.TERMINATING),
        ),
    ],
)
def test_decide_on_sweep(
    subject: PodFacts, probe: ProbeResult | None, policy: Policy, expected: Action
) -> None:
    action = decide_on_sweep(pod=subject, probe=probe, busy_labels=BUSY, policy=policy, now=NOW)
    assert action == expected


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (
            {ANNOTATION_BUSY_SINCE: "2025-06-01T11:00:00+00:00"},
            datetime(2025, 6, 1, 11, tzinfo=UTC),
        ),
        ({ANNOTATION_BUSY_SINCE: "2025-06-01T11:00:00Z"}, datetime(2025, 6, 1, 11, tzinfo=UTC)),
        # A hand-edited value without a zone is read as UTC, as every Kubernetes time is.
        ({ANNOTATION_BUSY_SINCE: "2025-06-01T11:00:00"}, datetime(2025, 6, 1, 11, tzinfo=UTC)),
        ({ANNOTATION_BUSY_SINCE: "garbage"}, CREATED),
        ({}, CREATED),
    ],
)
def test_busy_since(annotations: dict[str, str], expected: datetime) -> None:
    assert busy_since(pod(annotations=annotations)) == expected


@pytest.mark.parametrize(
    ("restarts", "baseline", "restarted"),
    [(0, "0", False), (1, "0", True), (1, "1", False), (1, "x", True), (0, "x", False)],
)
def test_restarted_since_detach(restarts: int, baseline: str, restarted: bool) -> None:
    subject = pod(restarts=restarts, annotations={ANNOTATION_RESTARTS_AT_BUSY: baseline})
    assert restarted_since_detach(subject) is restarted


@pytest.mark.parametrize(
    ("annotations", "started", "expected"),
    [
        ({ANNOTATION_BUSY_SINCE: "2025-06-01T11:30:00+00:00"}, DETACHED_AT, True),
        ({ANNOTATION_BUSY_SINCE: "2025-06-01T11:30:00Z"}, DETACHED_AT - timedelta(hours=1), True),
        ({ANNOTATION_BUSY_SINCE: "2025-06-01T11:30:00"}, DETACHED_AT, True),  # naive: UTC
        (
            {ANNOTATION_BUSY_SINCE: "2025-06-01T11:30:00+00:00"},
            DETACHED_AT + timedelta(seconds=1),
            False,
        ),
        # No record of the detach, no start time, or an unreadable one: no evidence.
        ({}, DETACHED_AT - timedelta(hours=1), False),
        ({ANNOTATION_BUSY_SINCE: "2025-06-01T11:30:00+00:00"}, None, False),
        ({ANNOTATION_BUSY_SINCE: "yesterday"}, DETACHED_AT, False),
    ],
)
def test_started_before_detach(
    annotations: dict[str, str], started: datetime | None, expected: bool
) -> None:
    subject = replace(pod(), annotations=annotations, containers_started=started)
    assert started_before_detach(subject) is expected


def test_a_naive_busy_since_does_not_break_the_max_age_rule() -> None:
    subject = pod(busy=True, annotations={ANNOTATION_BUSY_SINCE: "2025-06-01T11:00:00"})
    action = decide_on_sweep(pod=subject, probe=TIMEOUT, busy_labels=BUSY, policy=MAX_AGE, now=NOW)
    assert action == Delete(Reason.BUSY_TOO_LONG)


# -- properties -------------------------------------------------------------------------------

_timestamps = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)
)
_annotation_values = st.one_of(
    _timestamps.map(lambda t: t.isoformat()),
    st.sampled_from(["", "garbage", "2025-06-01T11:00:00", "0", "3", "-1", "1e3", "\u00e9"]),
)


@st.composite
def pods(draw: st.DrawFn) -> PodFacts:
    labels = draw(
        st.sampled_from(
            [
                BUSY,
                {**BUSY, "x": "y"},
                IDLE_LABELS,
                {"app": "jibri"},
                {"app": "jibri", "state": "BUSY"},
            ]
        )
    )
    annotations = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    ANNOTATION_BUSY_SINCE,
                    ANNOTATION_RESTARTS_AT_BUSY,
                    ANNOTATION_SESSIONS_WATCHED,
                    ANNOTATION_SESSION_ON,
                    "other",
                ]
            ),
            st.one_of(_annotation_values, st.just("true")),
        )
    )
    return PodFacts(
        name="p",
        namespace="n",
        uid="u",
        labels=labels,
        annotations=annotations,
        phase=draw(st.sampled_from(list(Phase))),
        pod_ips=draw(st.sampled_from([(), ("10.0.0.1",)])),
        deleting=draw(st.booleans()),
        owner_kind=draw(st.sampled_from([None, "ReplicaSet"])),
        restart_count=draw(st.integers(min_value=0, max_value=5)),
        created=draw(st.one_of(st.none(), _timestamps)),
        containers_started=draw(st.one_of(st.none(), _timestamps)),
    )


policies = st.builds(
    Policy,
    restarted=st.sampled_from(list(ReapPolicy)),
    finished=st.sampled_from(list(ReapPolicy)),
    max_busy_seconds=st.sampled_from([0.0, 60.0, 3600.0, 86400.0 * 400]),
    stuck_seconds=st.sampled_from([0.0, 60.0, 3600.0]),
    stuck=st.sampled_from(list(ReapPolicy)),
)
failures = st.one_of(st.none(), st.builds(Failed, st.sampled_from(list(ProbeFailure))))
probes = st.one_of(failures, st.builds(Reported, st.sampled_from(list(BusyStatus))))


def _fired_too_long(subject: PodFacts, policy: Policy) -> bool:
    since = busy_since(subject)
    return (
        policy.max_busy_seconds > 0
        and since is not None
        and (NOW - since).total_seconds() > policy.max_busy_seconds
    )


@settings(max_examples=200, deadline=None)
@given(subject=pods(), probe=failures, policy=policies)
def test_no_answer_never_deletes_on_its_own(
    subject: PodFacts, probe: Failed | None, policy: Policy
) -> None:
    action = decide_on_sweep(pod=subject, probe=probe, busy_labels=BUSY, policy=policy, now=NOW)
    assert not isinstance(action, Detach)
    if isinstance(action, Delete):
        detached = has_labels(subject.labels, BUSY)
        finished_rule = detached and subject.finished and policy.finished is ReapPolicy.DELETE
        assert not subject.deleting
        assert finished_rule or (detached and _fired_too_long(subject, policy))
        # and never the stuck-BUSY rule: it needs Jibri to answer BUSY
        assert action.reason in (Reason.FINISHED_WHILE_BUSY, Reason.BUSY_TOO_LONG)


@settings(max_examples=200, deadline=None)
@given(subject=pods(), probe=probes, policy=policies)
def test_every_sweep_delete_has_a_cause(
    subject: PodFacts, probe: ProbeResult | None, policy: Policy
) -> None:
    action = decide_on_sweep(pod=subject, probe=probe, busy_labels=BUSY, policy=policy, now=NOW)
    detached = has_labels(subject.labels, BUSY)
    if isinstance(action, Detach):
        assert probe == Reported(BUSY_STATUS)
        assert not detached
    if isinstance(action, Delete):
        assert not subject.deleting
        causes = {
            Reason.EXPIRED_REPORTED: probe == Reported(EXPIRED),
            Reason.FINISHED_WHILE_BUSY: detached
            and subject.finished
            and policy.finished is ReapPolicy.DELETE,
            Reason.RESTARTED_WHILE_BUSY: detached
            and probe == Reported(IDLE)
            and restarted_since_detach(subject)
            and policy.restarted is ReapPolicy.DELETE,
            Reason.RESTARTED_BEFORE_DETACH: detached
            and probe == Reported(IDLE)
            and started_before_detach(subject)
            and policy.restarted is ReapPolicy.DELETE,
            Reason.BUSY_TOO_LONG: detached and _fired_too_long(subject, policy),
            Reason.UNRESPONSIVE_WHILE_BUSY: False,  # never without time spent unresponsive
            Reason.STUCK_BUSY: detached
            and probe == Reported(BUSY_STATUS)
            and subject.annotations.get(ANNOTATION_SESSIONS_WATCHED) == "true"
            and ANNOTATION_SESSION_ON not in subject.annotations
            and policy.stuck is ReapPolicy.DELETE
            and policy.stuck_seconds > 0,
        }
        assert causes[action.reason]


# -- unresponsive busy pods ---------------------------------------------------------------------

UNRESPONSIVE = Policy(unresponsive_seconds=1800)
TIMEOUT = Failed(ProbeFailure.TIMEOUT)


def sick(*, ready: bool = False, phase: Phase = Phase.RUNNING, busy: bool = True) -> PodFacts:
    return replace(pod(busy=busy, phase=phase), ready=ready)


@pytest.mark.parametrize(
    ("subject", "probe", "policy", "seconds", "expected"),
    [
        # Off by default: counted (see is_unresponsive), never deleted.
        (sick(), Failed(ProbeFailure.CONNECT), DEFAULT, 10**6, Nothing(Reason.NO_ANSWER)),
        (sick(), None, DEFAULT, 10**6, Nothing(Reason.NOT_RUNNING)),
        # On: only after the whole period without a break.
        (sick(), Failed(ProbeFailure.TIMEOUT), UNRESPONSIVE, 1799, Nothing(Reason.NO_ANSWER)),
        (
            sick(),
            Failed(ProbeFailure.TIMEOUT),
            UNRESPONSIVE,
            1800,
            Delete(Reason.UNRESPONSIVE_WHILE_BUSY),
        ),
        (sick(), None, UNRESPONSIVE, 3600, Delete(Reason.UNRESPONSIVE_WHILE_BUSY)),
        # Ready, or answering, or a spare: never.
        (
            sick(ready=True),
            Failed(ProbeFailure.TIMEOUT),
            UNRESPONSIVE,
            3600,
            Nothing(Reason.NO_ANSWER),
        ),
        (sick(), Reported(BUSY_STATUS), UNRESPONSIVE, 3600, Nothing(Reason.RECORDING)),
        (
            sick(busy=False),
            Failed(ProbeFailure.TIMEOUT),
            UNRESPONSIVE,
            3600,
            Nothing(Reason.NO_ANSWER),
        ),
    ],
)
def test_the_unresponsive_busy_pod_rule(
    subject: PodFacts, probe: ProbeResult | None, policy: Policy, seconds: float, expected: Action
) -> None:
    action = decide_on_sweep(
        pod=subject,
        probe=probe,
        busy_labels=BUSY,
        policy=policy,
        now=NOW,
        unresponsive_for=seconds,
    )
    assert action == expected


@pytest.mark.parametrize(
    ("subject", "probe", "expected"),
    [
        (sick(), Failed(ProbeFailure.CONNECT), True),
        (sick(), None, True),
        (sick(ready=True), Failed(ProbeFailure.CONNECT), False),
        (sick(), Reported(IDLE), False),
        (sick(busy=False), Failed(ProbeFailure.CONNECT), False),
        (sick(phase=Phase.FAILED), None, False),
        (replace(sick(), deleting=True), None, False),
    ],
)
def test_is_unresponsive(subject: PodFacts, probe: ProbeResult | None, expected: bool) -> None:
    assert is_unresponsive(pod=subject, probe=probe, busy_labels=BUSY) is expected


@settings(max_examples=200, deadline=None)
@given(subject=pods(), status=st.sampled_from(list(BusyStatus)))
def test_report_writes_follow_the_status(subject: PodFacts, status: BusyStatus) -> None:
    action = decide_on_report(status=status, pod=subject, busy_labels=BUSY)
    if isinstance(action, Delete):
        assert status is EXPIRED
    if isinstance(action, Detach):
        assert status is BUSY_STATUS
        assert not has_labels(subject.labels, BUSY)
    if subject.deleting or status is IDLE:
        assert isinstance(action, Nothing)


def test_pods_silent_last_time_are_probed_first_and_the_rest_keep_their_order() -> None:
    listed = [replace(pod(), uid=f"uid-{i}", name=f"jibri-{i}") for i in range(6)]
    order = probe_order(listed, {"uid-4", "uid-1", "uid-gone"})
    assert [p.name for p in order] == [
        "jibri-1",
        "jibri-4",
        "jibri-0",
        "jibri-2",
        "jibri-3",
        "jibri-5",
    ]
    assert probe_order(listed, set()) == listed


# -- stuck BUSY ---------------------------------------------------------------------------------

STUCK_KEEP = Policy(stuck_seconds=300)
STUCK_DELETE = Policy(stuck_seconds=300, stuck=ReapPolicy.DELETE)
WATCHED = {ANNOTATION_SESSIONS_WATCHED: "true"}
SESSION_ON = {**WATCHED, ANNOTATION_SESSION_ON: "2025-06-01T11:30:05+00:00"}


def busy_for(minutes: float, annotations: Mapping[str, str] = WATCHED) -> PodFacts:
    detached = NOW - timedelta(minutes=minutes)
    return pod(
        busy=True,
        annotations={**annotations, ANNOTATION_BUSY_SINCE: detached.isoformat(timespec="seconds")},
    )


@pytest.mark.parametrize(
    ("subject", "probe", "policy", "stuck", "expected"),
    [
        # Detection off (the default): never stuck, whatever the pod says.
        (busy_for(600), Reported(BUSY_STATUS), DEFAULT, False, Nothing(Reason.RECORDING)),
        # BUSY, no session ON, past the bound: stuck; kept (and counted) or deleted.
        (
            busy_for(6),
            Reported(BUSY_STATUS),
            STUCK_KEEP,
            True,
            Nothing(Reason.POLICY_KEEP, attention=True),
        ),
        (busy_for(6), Reported(BUSY_STATUS), STUCK_DELETE, True, Delete(Reason.STUCK_BUSY)),
        # Within the bound: not yet.
        (busy_for(4), Reported(BUSY_STATUS), STUCK_DELETE, False, Nothing(Reason.RECORDING)),
        # A session turned ON: a recording, however long.
        (
            busy_for(600, SESSION_ON),
            Reported(BUSY_STATUS),
            STUCK_DELETE,
            False,
            Nothing(Reason.RECORDING),
        ),
        # Detached before detection was on: a missing session ON proves nothing.
        (busy_for(600, {}), Reported(BUSY_STATUS), STUCK_DELETE, False, Nothing(Reason.RECORDING)),
        # Jibri says something else, or nothing: other rules (or none) apply.
        (
            busy_for(600),
            Failed(ProbeFailure.TIMEOUT),
            STUCK_DELETE,
            False,
            Nothing(Reason.NO_ANSWER),
        ),
        (busy_for(600), Reported(EXPIRED), STUCK_DELETE, False, Delete(Reason.EXPIRED_REPORTED)),
        # A spare reporting BUSY is detached first, whatever its annotations.
        (
            pod(annotations=WATCHED),
            Reported(BUSY_STATUS),
            STUCK_DELETE,
            False,
            Detach(Reason.MISSED_BUSY),
        ),
        # Terminating: nothing.
        (
            replace(busy_for(600), deleting=True),
            Reported(BUSY_STATUS),
            STUCK_DELETE,
            False,
            Nothing(Reason.TERMINATING),
        ),
        # MAX_BUSY_SECONDS fires first when both do.
        (
            busy_for(600),
            Reported(BUSY_STATUS),
            replace(STUCK_KEEP, max_busy_seconds=3600),
            True,
            Delete(Reason.BUSY_TOO_LONG),
        ),
    ],
)
def test_the_stuck_busy_rule(
    subject: PodFacts, probe: ProbeResult, policy: Policy, stuck: bool, expected: Action
) -> None:
    found = is_stuck_busy(
        pod=subject, probe=probe, busy_labels=BUSY, stuck_seconds=policy.stuck_seconds, now=NOW
    )
    assert found is stuck
    action = decide_on_sweep(pod=subject, probe=probe, busy_labels=BUSY, policy=policy, now=NOW)
    assert action == expected


@pytest.mark.parametrize(
    ("state", "subject", "stuck_seconds", "expected"),
    [
        (SessionState.ON, busy_for(1), 300, True),
        (SessionState.ON, pod(), 300, True),  # ON may reach us before the detach lands
        (SessionState.ON, busy_for(1), 0, False),  # detection off: no write, ever
        (SessionState.ON, busy_for(1, SESSION_ON), 300, False),  # written once
        (SessionState.OFF, busy_for(1), 300, False),
        (SessionState.PENDING, busy_for(1), 300, False),
        (SessionState.ON, replace(busy_for(1), deleting=True), 300, False),
    ],
)
def test_records_session_on(
    state: SessionState, subject: PodFacts, stuck_seconds: float, expected: bool
) -> None:
    assert records_session_on(state=state, pod=subject, stuck_seconds=stuck_seconds) is expected
