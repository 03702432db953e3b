"""What to do with a Jibri pod, given what Jibri said and what the pod looks like.

These functions are pure: plain values in, a frozen action out. They encode the invariants:

- A pod is deleted only when Jibri itself reported EXPIRED in this very decision (webhook or
  health API), or a configured reaping rule fired. Unreachable pods and invalid answers never
  lead to a delete on their own.
- State only moves forward. IDLE never re-attaches a pod; BUSY on a pod that already carries the
  busy labels needs no write (Jibri resends its status every minute); anything for a pod that is
  already terminating is a no-op.

A stuck BUSY is the one state Jibri never leaves by itself: when its webhook subscriber is
unreachable at the moment it goes BUSY, startService fails but Jibri keeps reporting BUSY, with no
session ever ON. Only the session webhooks tell it from a recording, and they reach whichever
replica the Service picks while the sweeper runs on the Lease holder; so the first session ON is
recorded on the pod itself (`records_session_on`), and the sweeper reads it (`is_stuck_busy`).

A subtle point: a busy-labelled pod whose Jibri reports IDLE is not a stale report in
single-use mode. Jibri never returns from BUSY to IDLE; the container restarted, so the
recording it held is already lost. The reaping rule for it requires the restart to be
visible in ``restartCount`` (compared with the count recorded when the pod was detached), so a
report that merely arrives late cannot trigger it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from jibri_pod_controller.core.config import ReapPolicy
from jibri_pod_controller.core.jibri import BusyStatus, SessionState
from jibri_pod_controller.core.pods import (
    ANNOTATION_BUSY_SINCE,
    ANNOTATION_RESTARTS_AT_BUSY,
    ANNOTATION_SESSION_ON,
    ANNOTATION_SESSIONS_WATCHED,
    PodFacts,
    has_labels,
)


class Reason(StrEnum):
    # Writes.
    BUSY_REPORTED = "busy-reported"
    MISSED_BUSY = "busy-missed-webhook"
    EXPIRED_REPORTED = "expired-reported"
    RESTARTED_WHILE_BUSY = "restarted-while-busy"
    RESTARTED_BEFORE_DETACH = "restarted-before-detach"
    FINISHED_WHILE_BUSY = "finished-while-busy"
    BUSY_TOO_LONG = "busy-too-long"
    UNRESPONSIVE_WHILE_BUSY = "unresponsive-while-busy"
    STUCK_BUSY = "stuck-busy"
    # No write.
    ALREADY_DETACHED = "already-detached"
    TERMINATING = "terminating"
    IDLE = "idle"
    SPARE = "spare"
    RECORDING = "recording"
    IDLE_WHILE_BUSY_LABELLED = "idle-while-busy-labelled"
    POLICY_KEEP = "policy-keep"
    NO_ANSWER = "no-answer"
    NOT_RUNNING = "not-running"


@dataclass(frozen=True)
class Detach:
    reason: Reason


@dataclass(frozen=True)
class Delete:
    reason: Reason


@dataclass(frozen=True)
class Nothing:
    reason: Reason
    attention: bool = False
    """True when an operator should look (a rule matched but its policy is `keep`, or an
    unexplained state); it is logged at warning level and counted."""


Action = Detach | Delete | Nothing


def decide_on_report(
    *, status: BusyStatus, pod: PodFacts, busy_labels: Mapping[str, str]
) -> Action:
    """Decide what a status webhook from a verified Jibri pod leads to."""
    if pod.deleting:
        return Nothing(Reason.TERMINATING)
    match status:
        case BusyStatus.EXPIRED:
            return Delete(Reason.EXPIRED_REPORTED)
        case BusyStatus.BUSY:
            if has_labels(pod.labels, busy_labels):
                return Nothing(Reason.ALREADY_DETACHED)
            return Detach(Reason.BUSY_REPORTED)
        case BusyStatus.IDLE:
            return Nothing(Reason.IDLE)


@dataclass(frozen=True)
class Policy:
    restarted: ReapPolicy = ReapPolicy.DELETE
    finished: ReapPolicy = ReapPolicy.DELETE
    max_busy_seconds: float = 0.0
    unresponsive_seconds: float = 0.0
    """If > 0: delete a busy-labelled pod unresponsive (see `is_unresponsive`) for this long."""
    stuck_seconds: float = 0.0
    """If > 0: a pod BUSY with no session ON for this long is stuck (see `is_stuck_busy`)."""
    stuck: ReapPolicy = ReapPolicy.KEEP


class ProbeFailure(StrEnum):
    TIMEOUT = "timeout"
    CONNECT = "connect"
    HTTP_STATUS = "http-status"
    TOO_LARGE = "too-large"
    INVALID = "invalid"
    NO_IP = "no-ip"


@dataclass(frozen=True)
class Reported:
    status: BusyStatus


@dataclass(frozen=True)
class Failed:
    failure: ProbeFailure
    detail: str = ""


ProbeResult = Reported | Failed


def busy_since(pod: PodFacts) -> datetime | None:
    since = pod.created
    raw = pod.annotations.get(ANNOTATION_BUSY_SINCE)
    if raw is not None:
        try:
            since = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            since = pod.created
    # A hand-edited annotation may lack a zone; Kubernetes times are UTC, and comparing a naive
    # time with ``now`` would raise instead of deciding.
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return since


def restarted_since_detach(pod: PodFacts) -> bool:
    raw = pod.annotations.get(ANNOTATION_RESTARTS_AT_BUSY, "0")
    try:
        baseline = int(raw)
    except ValueError:
        baseline = 0
    return pod.restart_count > baseline


def started_before_detach(pod: PodFacts) -> bool:
    """The running Jibri process was already running when the pod was detached.

    A Jibri in single-use mode that was BUSY never reports IDLE again. So if the process that
    answers IDLE now started before the detach (and the restart count has not risen since),
    it never was the busy one: the BUSY that detached the pod came from an earlier process,
    which crashed after sending it, and the detach landed after the restart (a slow API path,
    or a webhook delivered late). Its recording is as lost as after a restart seen in
    ``restartCount``. Both times are whole seconds, hence the ``<=``.
    """
    raw = pod.annotations.get(ANNOTATION_BUSY_SINCE)
    if raw is None or pod.containers_started is None:
        return False
    try:
        detached_at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return False
    if detached_at.tzinfo is None:
        detached_at = detached_at.replace(tzinfo=UTC)
    return pod.containers_started <= detached_at


def _apply(policy: ReapPolicy, reason: Reason) -> Action:
    if policy is ReapPolicy.DELETE:
        return Delete(reason)
    return Nothing(Reason.POLICY_KEEP, attention=True)


def _too_long(pod: PodFacts, policy: Policy, now: datetime) -> bool:
    if policy.max_busy_seconds <= 0:
        return False
    since = busy_since(pod)
    return since is not None and (now - since).total_seconds() > policy.max_busy_seconds


def is_unresponsive(
    *, pod: PodFacts, probe: ProbeResult | None, busy_labels: Mapping[str, str]
) -> bool:
    """A busy-labelled pod that is not Ready and whose Jibri gave no answer (or could not be
    asked: no IP, not running). Its container crash-loops or its node is gone; while it stays
    so, it blocks node drains through the busy PodDisruptionBudget."""
    return (
        has_labels(pod.labels, busy_labels)
        and not pod.deleting
        and not pod.finished
        and not pod.ready
        and not isinstance(probe, Reported)
    )


def records_session_on(*, state: SessionState, pod: PodFacts, stuck_seconds: float) -> bool:
    """Whether a session webhook is written down on its pod: the first session ON, when
    stuck-BUSY detection is on (``stuck_seconds`` > 0) and the pod is not on its way out."""
    return (
        stuck_seconds > 0
        and state is SessionState.ON
        and not pod.deleting
        and ANNOTATION_SESSION_ON not in pod.annotations
    )


def is_stuck_busy(
    *,
    pod: PodFacts,
    probe: ProbeResult | None,
    busy_labels: Mapping[str, str],
    stuck_seconds: float,
    now: datetime,
) -> bool:
    """A busy-labelled pod whose Jibri reports BUSY with no session ever ON, for longer than
    ``stuck_seconds`` since its detach.

    Only pods detached while detection was on (they carry ``sessions-watched``) are judged: on a
    pod detached before, a missing session ON proves nothing.
    """
    if stuck_seconds <= 0 or not has_labels(pod.labels, busy_labels) or pod.deleting:
        return False
    if pod.annotations.get(ANNOTATION_SESSIONS_WATCHED) != "true":
        return False
    if ANNOTATION_SESSION_ON in pod.annotations:
        return False
    if probe != Reported(BusyStatus.BUSY):
        return False
    since = busy_since(pod)
    return since is not None and (now - since).total_seconds() > stuck_seconds


def probe_order(pods: Sequence[PodFacts], silent: Set[str]) -> list[PodFacts]:
    """The order of a sweep's probes: pods whose last probe failed (uids in ``silent``) first.

    A silent Jibri holds a probe slot for the whole PROBE_TIMEOUT. Started first, those waits
    overlap the quick probes of all the others; left in list order, the last of them starts
    near the end of the sweep and adds a whole timeout to it. Otherwise the list's order.
    """
    return sorted(pods, key=lambda pod: pod.uid not in silent)


def decide_on_sweep(
    *,
    pod: PodFacts,
    probe: ProbeResult | None,
    busy_labels: Mapping[str, str],
    policy: Policy,
    now: datetime,
    unresponsive_for: float = 0.0,
) -> Action:
    """Decide what the sweeper does with one Jibri pod after probing it.

    ``probe`` is None when the pod was not probed because it is not running.
    ``unresponsive_for`` is how long, in seconds without a break, the sweeper has seen the
    pod unresponsive (`is_unresponsive`); 0 when it is not.
    """
    if pod.deleting:
        return Nothing(Reason.TERMINATING)
    detached = has_labels(pod.labels, busy_labels)
    if detached and pod.finished:
        return _apply(policy.finished, Reason.FINISHED_WHILE_BUSY)
    if isinstance(probe, Reported) and probe.status is BusyStatus.EXPIRED:
        return Delete(Reason.EXPIRED_REPORTED)
    if isinstance(probe, Reported) and probe.status is BusyStatus.IDLE:
        if not detached:
            return Nothing(Reason.SPARE)
        if restarted_since_detach(pod):
            return _apply(policy.restarted, Reason.RESTARTED_WHILE_BUSY)
        if started_before_detach(pod):
            return _apply(policy.restarted, Reason.RESTARTED_BEFORE_DETACH)
        return Nothing(Reason.IDLE_WHILE_BUSY_LABELLED, attention=True)
    if isinstance(probe, Reported) and not detached:
        return Detach(Reason.MISSED_BUSY)
    # Busy-labelled and recording, unreachable, invalid or not running.
    if detached and _too_long(pod, policy, now):
        return Delete(Reason.BUSY_TOO_LONG)
    if (
        policy.unresponsive_seconds > 0
        and unresponsive_for >= policy.unresponsive_seconds
        and is_unresponsive(pod=pod, probe=probe, busy_labels=busy_labels)
    ):
        return Delete(Reason.UNRESPONSIVE_WHILE_BUSY)
    if is_stuck_busy(
        pod=pod, probe=probe, busy_labels=busy_labels, stuck_seconds=policy.stuck_seconds, now=now
    ):
        return _apply(policy.stuck, Reason.STUCK_BUSY)
    if isinstance(probe, Reported):
        return Nothing(Reason.RECORDING)
    if probe is None:
        return Nothing(Reason.NOT_RUNNING)
    return Nothing(Reason.NO_ANSWER)
