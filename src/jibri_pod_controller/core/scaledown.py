"""Which spares a scale-down may take, in the ReplicaSet's own order: one pure function.

The ReplicaSet, not this controller, picks the pods a lower ``replicas`` deletes, and it
deletes exactly ``(its live pods) - replicas`` of them (``manageReplicas``: active pods, that
is not terminating and not finished, minus ``spec.replicas``). So the count is taken from the
live spares, never from the Deployment's ``replicas``: a scale-down written a moment ago whose
pods are still live is already in that count, and counting it again would hand the
ReplicaSet a pod nobody checked.

The ReplicaSet's order (``ActivePodsWithRanks.Less``) is: unscheduled before scheduled (all
alike here), Pending before Unknown before Running, not Ready before Ready, then the lowest
``pod-deletion-cost``, then details (ready time, restarts, age). So the spares are walked
in that order, group by group; within a group the pods chosen get the lowest cost
(`DELETION_COST_MAY_GO`), every other spare's cost is cleared, and the walk stops at the first
group that still holds a spare not known to be safe: the ReplicaSet would reach it next.

A spare is safe to delete when no recording can be running on it or start on it:

- it is Pending (no Jibri process yet);
- it accepted Jibri's own ``gracefulShutdown`` (internal API) and its API has since closed:
  Jibri decided, under its own lock, that it was idle and exited, and no recording can start
  on a process that is exiting; a Jibri that was recording when asked keeps recording,
  reports BUSY, and is detached instead;
- or, without the internal API (``JIBRI_INTERNAL_API_PORT=0``, or a pod whose internal API
  does not answer), it answered IDLE to the probe of this round. That is today's method, and
  it leaves a window: a recording handed to it between the probe and the ReplicaSet's delete
  is lost, unless the pod's preStop hook (deploy/jibri) lets it finish.

A Jibri that accepted a graceful shutdown and whose container was restarted since (the
kubelet restarts an exited container) is a new process: IDLE again, and asked again.

One more hazard: a Ready spare that did not answer may turn not Ready before the ReplicaSet
acts, and not Ready goes before any deletion cost. So when the pods chosen include Ready ones,
every other running spare must have answered; otherwise the scale-down is blocked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from jibri_pod_controller.core.decisions import Failed, ProbeFailure, ProbeResult, Reported
from jibri_pod_controller.core.jibri import BusyStatus
from jibri_pod_controller.core.pods import Phase, PodFacts

ANNOTATION_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"

DELETION_COST_MAY_GO = "-100"
"""The cost of a spare the ReplicaSet may delete first."""

CONFIRM_STEP = timedelta(seconds=0.25)
"""How soon after a graceful shutdown is asked to look again (Jibri closes its APIs within
about 0.2 s of accepting one when idle)."""

CONFIRM_TIMEOUT = timedelta(seconds=10)
"""How long a Jibri that accepted a graceful shutdown may keep answering IDLE before it is
taken as one that ignores the request (then today's method applies to it)."""


class ShutdownOutcome(StrEnum):
    """The answer to ``POST /jibri/api/internal/v1.0/gracefulShutdown``."""

    ACCEPTED = "accepted"
    """200: Jibri exits once idle (at once when idle)."""
    UNREACHABLE = "unreachable"
    """No connection, a reset or a timeout: the internal API is not open to the controller
    (``internal-api-host`` left at 127.0.0.1, or a NetworkPolicy)."""
    REFUSED = "refused"
    """An answer other than 200: not Jibri's internal API on that port."""


@dataclass(frozen=True)
class Asked:
    """A graceful shutdown asked of one pod in this term, and how it was answered."""

    at: datetime
    restart_count: int
    """The pod's restart count when asked: a higher one means a new Jibri process."""
    outcome: ShutdownOutcome
    detail: str = ""


class Standing(StrEnum):
    """What one live spare is, for a scale-down."""

    NOT_STARTED = "not-started"
    """Pending: no Jibri process yet."""
    GONE = "gone"
    """Accepted a graceful shutdown; its API has closed since."""
    LEAVING = "leaving"
    """Accepted a graceful shutdown; its API has not closed yet."""
    IDLE = "idle"
    """Answered IDLE (or EXPIRED); may be asked to shut down."""
    IDLE_NO_API = "idle-no-internal-api"
    """Answered IDLE; no graceful shutdown to be had (off, or its internal API does not
    answer): safe for this round only (today's method)."""
    BUSY = "busy"
    """Answered BUSY: recording, its webhook not landed. Detached, never deleted."""
    UNKNOWN = "unknown"
    """No answer, or nothing to ask (no address)."""


SAFE = frozenset({Standing.NOT_STARTED, Standing.GONE, Standing.IDLE_NO_API})


class BlockReason(StrEnum):
    """Why a scale-down waits (the reason of the pool's ScaleDownBlocked condition)."""

    DETACH_NOT_RELEASED = "DetachNotReleased"
    ROLLOUT = "RolloutInProgress"
    NO_ANSWER = "SpareNotAnswering"


@dataclass(frozen=True)
class Blocked:
    reason: BlockReason
    pod: str
    message: str
    """Stable while the cause lasts (the condition's message: a change is a new Event)."""
    detail: str = ""
    """What was seen this round (for the log line)."""


@dataclass(frozen=True)
class ScaleDown:
    """What a pool's scale-down may do this round."""

    replicas: int
    """The lowest replicas that are safe now (never below the target; the current value, or
    above it, when spares must be waited for)."""
    probe: tuple[PodFacts, ...] = ()
    """Spares to probe before anything can be decided (then plan again with the answers)."""
    marks: tuple[tuple[PodFacts, str | None], ...] = ()
    """Deletion-cost annotations to write: (pod, cost or None to remove)."""
    ask: tuple[PodFacts, ...] = ()
    """Spares to ask for a graceful shutdown."""
    detach: tuple[PodFacts, ...] = ()
    """Spares found BUSY: detach them (they keep their recording)."""
    picks: tuple[str, ...] = ()
    """Names of the spares counted as going (safe now)."""
    waiting: bool = False
    """Spares were asked (or are to be) and not confirmed gone yet: look again soon."""
    blocked: Blocked | None = None
    no_api: tuple[tuple[str, str], ...] = ()
    """(pod, why) for each spare taken by today's method for want of its internal API."""
    standings: Mapping[str, Standing] = field(default_factory=dict)
    """By pod uid, for the spares that were judged."""


def _phase_rank(pod: PodFacts) -> int:
    return {Phase.PENDING: 0, Phase.UNKNOWN: 1}.get(pod.phase, 2)


def rs_group(pod: PodFacts) -> tuple[int, bool]:
    """The ReplicaSet's first two sort keys that this controller does not set: phase, then
    Ready (not Ready first). Within a group the deletion cost decides."""
    return _phase_rank(pod), pod.ready


def standing(
    pod: PodFacts,
    probe: ProbeResult | None,
    asked: Asked | None,
    *,
    graceful: bool,
    now: datetime,
) -> Standing:
    """What ``pod`` is for a scale-down, from this round's probe and what it was asked."""
    if pod.phase is Phase.PENDING:
        return Standing.NOT_STARTED
    if asked is not None and asked.restart_count != pod.restart_count:
        asked = None  # a new Jibri process since: what the old one answered is moot
    if isinstance(probe, Reported) and probe.status is BusyStatus.BUSY:
        return Standing.BUSY
    if asked is not None and asked.outcome is ShutdownOutcome.ACCEPTED:
        if isinstance(probe, Failed) and probe.failure is ProbeFailure.CONNECT:
            return Standing.GONE
        if now - asked.at < CONFIRM_TIMEOUT:
            return Standing.LEAVING
    if not isinstance(probe, Reported):
        return Standing.UNKNOWN
    if graceful and asked is None:
        return Standing.IDLE
    return Standing.IDLE_NO_API


def _no_api_reason(asked: Asked | None, graceful: bool) -> str:
    if not graceful:
        return "graceful shutdown off (JIBRI_INTERNAL_API_PORT=0)"
    if asked is None:
        return ""
    if asked.outcome is ShutdownOutcome.ACCEPTED:
        return "accepted a graceful shutdown but kept answering IDLE"
    return f"internal API {asked.outcome.value}: {asked.detail}".rstrip(": ")


def _preference(pod: PodFacts, state: Standing) -> tuple[int, float, str]:
    """Within a group: the spares already on their way out first, then those already
    judged (asked in vain, or with graceful shutdown off: asking another would only cost a
    round each when the internal API is closed to the controller), then the youngest (the
    ReplicaSet's own preference, which keeps the longest-warm spares)."""
    order = {
        Standing.NOT_STARTED: 0,
        Standing.GONE: 0,
        Standing.LEAVING: 1,
        Standing.IDLE_NO_API: 2,
        Standing.IDLE: 3,
        Standing.BUSY: 4,
        Standing.UNKNOWN: 4,
    }[state]
    created = -pod.created.timestamp() if pod.created is not None else 0.0
    return order, created, pod.name


def _why_unknown(pod: PodFacts, probe: ProbeResult | None) -> str:
    where = f"{pod.phase.value}, {'Ready' if pod.ready else 'not Ready'}"
    if isinstance(probe, Failed):
        return f"health probe: {probe.failure.value} {probe.detail}".rstrip() + f" ({where})"
    return f"no address ({where})"


def plan_scale_down(
    *,
    spares: Sequence[PodFacts],
    busy: Sequence[PodFacts],
    replicas: int,
    target: int,
    probes: Mapping[str, ProbeResult] | None,
    asked: Mapping[str, Asked],
    graceful: bool,
    now: datetime,
) -> ScaleDown:
    """The replicas that are safe now on the way to ``target``, and what makes more safe.

    ``spares``: the live (not terminating, not finished) idle-labelled pods the Deployment's
    selector matches; ``busy``: the pool's detached pods; ``replicas``: the Deployment's now;
    ``probes``: this round's answers by pod uid (None before probing); ``asked``: the graceful
    shutdowns asked this term, by pod uid; ``graceful``: whether the internal API is used.
    """
    running = [p for p in spares if p.phase is not Phase.PENDING]
    going = len(spares) - target
    if target >= replicas and going <= 0:
        # Nothing for the ReplicaSet to delete at the target: no mark is needed anywhere.
        return ScaleDown(replicas=target, marks=_marks(running, chosen=()))

    # Lowering at all (or leaving pods for the ReplicaSet to delete) needs a ReplicaSet that
    # counts what this controller counts; a raise is always safe.
    unreleased = [p for p in busy if p.owner_kind == "ReplicaSet"]
    if unreleased:
        pod = unreleased[0]
        return ScaleDown(
            replicas=max(replicas, target),
            blocked=Blocked(
                BlockReason.DETACH_NOT_RELEASED,
                pod.name,
                f"busy pod {pod.name} is still owned by ReplicaSet {pod.owner_name}: until "
                "the ReplicaSet has seen its detach, a lower count could make it pick that pod",
            ),
        )
    owners = sorted({p.owner_name or "" for p in spares if p.owner_kind == "ReplicaSet"})
    if len(owners) > 1:
        return ScaleDown(
            replicas=max(replicas, target),
            blocked=Blocked(
                BlockReason.ROLLOUT,
                "",
                f"the spares belong to ReplicaSets {', '.join(owners)}: a rollout is in "
                "progress, and the Deployment would share a scale-down between them",
            ),
        )

    if going <= 0:
        return ScaleDown(replicas=target, marks=_marks(running, chosen=()))
    not_started = len(spares) - len(running)
    if not_started >= going:
        # The usual case at the budget's edge: the replacement the ReplicaSet just created
        # for a detached pod goes first, and it cannot be recording. No probe needed.
        return ScaleDown(replicas=target, marks=_marks(running, chosen=()))
    if probes is None:
        return ScaleDown(replicas=replicas, probe=tuple(running))

    states = {
        p.uid: standing(p, probes.get(p.uid), asked.get(p.uid), graceful=graceful, now=now)
        for p in running
    }
    detach = tuple(p for p in running if states[p.uid] is Standing.BUSY)
    groups: dict[tuple[int, bool], list[PodFacts]] = {}
    for pod in sorted(running, key=rs_group):
        groups.setdefault(rs_group(pod), []).append(pod)

    need = going - not_started
    walked: list[list[PodFacts]] = []
    chosen: list[PodFacts] = []
    ask: list[PodFacts] = []
    leaving: list[PodFacts] = []
    blocked: Blocked | None = None
    for members in groups.values():
        if need <= 0:
            break
        members.sort(key=lambda p: _preference(p, states[p.uid]))
        walked.append(members)
        for pod in members:
            state = states[pod.uid]
            if need <= 0 or state in (Standing.BUSY, Standing.UNKNOWN):
                continue
            if state in SAFE:
                chosen.append(pod)
            elif state is Standing.LEAVING:
                leaving.append(pod)
            else:
                ask.append(pod)
            need -= 1
        stuck = [p for p in members if states[p.uid] is Standing.UNKNOWN]
        if need > 0 and stuck:
            blocked = Blocked(
                BlockReason.NO_ANSWER,
                stuck[0].name,
                f"spare {stuck[0].name} does not answer: the ReplicaSet would delete it next",
                _why_unknown(stuck[0], probes.get(stuck[0].uid)),
            )
            break

    picked = {p.uid for p in (*chosen, *ask, *leaving)}
    if any(p.ready for p in running if p.uid in picked):
        # A Ready pick is safe only while no other spare can turn not Ready and go first: one
        # that did not answer (a Jibri still on its way out included) might.
        safe_ids = {p.uid for p in chosen}
        jumpers = [
            p
            for p in running
            if p.uid not in safe_ids
            and (
                states[p.uid] is Standing.UNKNOWN
                or (states[p.uid] is Standing.LEAVING and isinstance(probes.get(p.uid), Failed))
            )
        ]
        if jumpers:
            pod = jumpers[0]
            blocked = Blocked(
                BlockReason.NO_ANSWER,
                pod.name,
                f"spare {pod.name} does not answer: it could turn not Ready and be deleted "
                "before the spares chosen to go",
                _why_unknown(pod, probes.get(pod.uid)),
            )
            chosen = [p for p in chosen if not p.ready]
            ask = [p for p in ask if not p.ready]
            leaving = [p for p in leaving if not p.ready]

    # What the ReplicaSet may take is a prefix of its order: the marked (chosen) spares of a
    # group go first within it, and the next group is reached only once all of this one is
    # gone. So a group with any spare not chosen ends the count, whatever comes after it.
    counted: list[PodFacts] = []
    ids = {p.uid for p in chosen}
    for members in walked:
        mine = [p for p in members if p.uid in ids]
        counted += mine
        if len(mine) < len(members):
            break
    allowed = max(target, len(spares) - not_started - len(counted))
    if detach:
        # A detach lets the ReplicaSet create a replacement, which it deletes first (Pending):
        # ask nobody else until that is known, or a spare would be shut down for nothing.
        ask = []
    waiting = bool(ask or leaving)
    if detach or waiting:
        # Lower once the detaches have landed and the shutdowns are confirmed: one write.
        allowed = max(allowed, replicas)
    no_api = tuple(
        (p.name, _no_api_reason(asked.get(p.uid), graceful))
        for p in counted
        if states[p.uid] is Standing.IDLE_NO_API
    )
    return ScaleDown(
        replicas=allowed,
        marks=_marks(running, chosen=counted),
        ask=tuple(ask),
        detach=detach,
        picks=tuple(p.name for p in counted),
        waiting=waiting,
        blocked=blocked,
        no_api=no_api,
        standings=states,
    )


def _marks(
    running: Sequence[PodFacts], *, chosen: Sequence[PodFacts]
) -> tuple[tuple[PodFacts, str | None], ...]:
    """The annotation writes that leave exactly ``chosen`` with the lowest cost: a mark left
    behind (by a refused scale write, or a scale-down no longer wanted) is cleared."""
    ids = {p.uid for p in chosen}
    out = []
    for pod in running:
        wanted = DELETION_COST_MAY_GO if pod.uid in ids else None
        if pod.annotations.get(ANNOTATION_DELETION_COST) != wanted:
            out.append((pod, wanted))
    return tuple(out)
