"""The checker of a chaos run: a recorded history in, violations of I1-I9 and figures out.

Pure: `check(history)` reads only the `History` value it is given (the run in `testbed.chaos`
builds it from the simulated Jibris' ground truth, the API server's audit log, the controllers'
log lines, the fault log and its own probes), so each rule is tested with small hand-made
histories (tests/testbed/test_chaoscheck.py).

What each invariant means here, and the bounds it is held to:

- I1: every delete of a pod by the controllers (audit) happened while its Jibri was not BUSY
  (ground truth at the write's time). The one exception is a configured reaping rule that
  exists to end live recordings
  (``busy-too-long``, only when MAX_BUSY_SECONDS is set); each such delete is listed.
- I2: every finished pod (its Jibri reported EXPIRED, or it crashed after being detached) was
  deleted, within `bound` of finishing; the worst time is reported split by "a replica was up"
  and "during an outage".
- I3: no pod was detached twice; every recording that lasted longer than `bound` was detached;
  the Deployment ends with exactly its spares (one replacement per pod that left it).
- I4: a pod that carried the busy labels never carried the idle ones again.
- I5: as I3's "was detached", for recordings whose BUSY webhooks were all lost; worst time.
- I6: no write to a non-Jibri pod; no write that the ground truth does not justify (a detach of
  a pod that never was BUSY, a delete of a pod that was IDLE and never crashed) on a pod that a
  forged webhook named.
- I7: no replica exited unless the run killed it, and one stopped with SIGTERM exited 0; no
  replica failed to answer webhooks for longer than `webhook_slack` plus the API outage and its
  own downtime in that span; no two replicas kept sweeping together for longer than the renew
  deadline.
- I8: no Jibri was stopped while BUSY, whichever path deleted its pod (the controllers, a
  ReplicaSet's scale-down or rollout, an operator): the deleter is named from the audit log.
  A pod deleted while recording whose recording went on to its end is counted, not failed.
- I9: each JibriPool's pods (from the kubelet's first sight of a pod until it terminates) stay
  within its maxTotal, over by at most as many pods as the pool had detached since a pool
  period plus the slack before the span over the budget began, and over for no longer than
  that period plus the slack plus the API outages and lost leaders in the span.
- Leaks: at the end, no busy-labelled pod and no spare whose Jibri is not IDLE.
- Testbed: no simulated Jibri fell silent without a fate asking for it.

``bound(a, b)`` = lease duration + 2 sweep intervals + slack, plus the API outages and per-pod
health faults overlapping [a, b], plus one lease duration per controller fault overlapping it
(each lost leader costs at most a lease).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "API_OUTAGE_KINDS",
    "CONTROLLER_FAULT_KINDS",
    "Action",
    "Deletion",
    "EndPod",
    "Exit",
    "Fact",
    "Forged",
    "History",
    "Limits",
    "PoolLimit",
    "Probe",
    "Report",
    "Silence",
    "Sweep",
    "Violation",
    "Window",
    "Write",
    "check",
    "events_around",
    "history_from_json",
    "main",
]

API_OUTAGE_KINDS = frozenset(
    {
        "proxy-latency",
        "proxy-throttle-429",
        "proxy-error-500",
        "proxy-error-503",
        "proxy-reset",
        "proxy-blackhole",
        "proxy-outage",
        "apiserver-restart",
        "etcd-restart",
    }
)
CONTROLLER_FAULT_KINDS = frozenset(
    {"controller-sigkill", "controller-sigterm", "controller-sigstop"}
)
HEALTH_FAULT_KINDS = frozenset({"health-blackhole", "health-hang", "health-garbage", "health-huge"})
INVARIANTS = ("I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9", "leaks", "testbed")
PROCESS_ENDS = ("CRASH", "EXIT")
"""Statuses that end a Jibri process by itself (a crash; an exit after a graceful shutdown):
the container is restarted, and the new process never held the old one's recording."""
"""The invariants, plus ``testbed``: the run itself misbehaved (a simulated Jibri fell silent
with no fate asking for it), so what it proves is less than it claims."""


@dataclass(frozen=True)
class Window:
    """A fault, or a span a replica was down, from `start` to `end` (wall seconds)."""

    kind: str
    start: float
    end: float
    target: str = ""
    """The replica or pod it hit, if any."""


@dataclass(frozen=True)
class Fact:
    """Ground truth from the fake kubelet: ``started``, ``labels``, ``status``, ``stopped``."""

    t: float
    event: str
    pod: str
    status: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Write:
    """A write to a pod by the controllers' identity (audit log): ``patch`` or ``delete``."""

    t: float
    verb: str
    pod: str
    code: int
    what: str = ""
    """For a patch, what its body changes: ``detach`` (the busy labels), ``annotate`` (only
    annotations: a pool's deletion-cost mark, a session mark); empty when not known."""


@dataclass(frozen=True)
class Action:
    """A controller's log line for a write it made (``detach``/``delete``, with its reason)."""

    t: float
    replica: str
    pod: str
    action: str
    reason: str
    result: str


@dataclass(frozen=True)
class Probe:
    """The run's own unauthenticated webhook to a replica: answered within 2 s or not."""

    t: float
    replica: str
    ok: bool


@dataclass(frozen=True)
class Forged:
    t: float
    kind: str
    pod: str
    code: int


@dataclass(frozen=True)
class Exit:
    t: float
    replica: str
    code: int | None
    by: str
    """What the run did to it: ``sigkill``, ``sigterm``, or ``""`` (it exited by itself)."""


@dataclass(frozen=True)
class Sweep:
    t: float
    replica: str


@dataclass(frozen=True)
class Deletion:
    """A DELETE of a pod accepted by the API server, by anyone (audit log): ``who`` is the
    user (the controllers' identity, kube-controller-manager's ReplicaSet or the run itself)."""

    t: float
    pod: str
    who: str


@dataclass(frozen=True)
class PoolLimit:
    """A JibriPool of the run: its pods carry the label ``pool: <name>``."""

    name: str
    max_total: int
    period: float
    """POOL_RECONCILE_PERIOD: the pool decides again at least this often."""


@dataclass(frozen=True)
class Silence:
    """A simulated Jibri that stopped speaking: ``kind`` is ``silenced`` (every webhook
    withheld) or ``resend-died`` (its periodic status resend stopped for good)."""

    t: float
    pod: str
    kind: str


@dataclass(frozen=True)
class EndPod:
    pod: str
    labels: Mapping[str, str]
    status: str


@dataclass(frozen=True)
class Limits:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    sweep_interval: float = 3.0
    slack: float = 10.0
    stall_gap: float = 3.0
    """Seconds without any probe or forged webhook of the run that mean the run stood still."""
    webhook_slack: float = 4.0
    """Seconds a replica may leave probes unanswered: the probe period (1 s), Jibri's 2 s
    timeout, and one second of scheduling on a loaded machine."""
    spares: int = 3
    busy_labels: Mapping[str, str] = field(
        default_factory=lambda: {"app": "jibri", "state": "busy"}
    )
    idle_labels: Mapping[str, str] = field(
        default_factory=lambda: {"app": "jibri", "state": "idle"}
    )
    recording_reapers: frozenset[str] = frozenset()
    """Reasons of configured rules that may end a live recording (``busy-too-long``)."""


@dataclass(frozen=True)
class History:
    facts: Sequence[Fact] = ()
    writes: Sequence[Write] = ()
    actions: Sequence[Action] = ()
    faults: Sequence[Window] = ()
    down: Sequence[Window] = ()
    """Spans each replica was down on purpose (killed or stopped, until ready again)."""
    probes: Sequence[Probe] = ()
    forged: Sequence[Forged] = ()
    exits: Sequence[Exit] = ()
    sweeps: Sequence[Sweep] = ()
    lost_busy: frozenset[str] = frozenset()
    """Pods whose BUSY webhooks were all withheld."""
    resend_died: frozenset[str] = frozenset()
    """Pods whose Jibri's periodic resend was made to die (and whose EXPIRED was lost): only
    the sweeper can find them finished."""
    silences: Sequence[Silence] = ()
    """Every Jibri found silent at the end of its life or of the run, on purpose or not."""
    deletions: Sequence[Deletion] = ()
    pools: Sequence[PoolLimit] = ()
    bystanders: frozenset[str] = frozenset()
    """Non-Jibri pods in the namespace."""
    end_pods: Sequence[EndPod] = ()
    replicas: Sequence[str] = ()
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class Violation:
    invariant: str
    t: float
    pod: str
    message: str


@dataclass(frozen=True)
class Report:
    violations: tuple[Violation, ...]
    reaped: tuple[tuple[str, str], ...]
    """Deletes of live recordings by a configured rule: (pod, reason)."""
    figures: Mapping[str, Any]

    @property
    def ok(self) -> bool:
        return not self.violations

    def per_invariant(self) -> dict[str, int]:
        counts = Counter(v.invariant for v in self.violations)
        return {name: counts.get(name, 0) for name in INVARIANTS}


# --------------------------------------------------------------------------------------------
# Spans


def _overlap(windows: Iterable[Window], a: float, b: float) -> float:
    """Seconds of [a, b] covered by the union of `windows`."""
    spans = sorted((max(w.start, a), min(w.end, b)) for w in windows if w.end > a and w.start < b)
    total, cursor = 0.0, a
    for start, end in spans:
        start = max(start, cursor)
        if end > start:
            total += end - start
            cursor = end
    return total


def _count_overlapping(windows: Iterable[Window], a: float, b: float) -> int:
    return sum(1 for w in windows if w.end >= a and w.start <= b)


def _has(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


@dataclass
class _Pod:
    name: str
    statuses: list[tuple[float, str]] = field(default_factory=list)
    labels: list[tuple[float, Mapping[str, str]]] = field(default_factory=list)
    created: float | None = None
    """When the kubelet first saw the pod (it may never have started)."""
    started: float | None = None
    terminating: float | None = None
    stopped: tuple[float, str] | None = None

    @property
    def pool(self) -> str | None:
        """The JibriPool whose Deployment made this pod (its ``pool`` label), if any."""
        return self.labels[0][1].get("pool") if self.labels else None

    def status_at(self, t: float) -> str:
        current = "IDLE"
        for at, status in self.statuses:
            if at > t:
                break
            current = "IDLE" if status == "CRASH" else status
        return current

    def first(self, status: str, after: float = float("-inf")) -> float | None:
        return next((at for at, s in self.statuses if s == status and at >= after), None)


class _Checker:
    def __init__(self, history: History) -> None:
        self.h = history
        self.limits = history.limits
        self.violations: list[Violation] = []
        self.reaped: list[tuple[str, str]] = []
        self.pods: dict[str, _Pod] = {}
        for fact in sorted(history.facts, key=lambda f: f.t):
            pod = self.pods.setdefault(fact.pod, _Pod(fact.pod))
            if fact.event == "created":
                pod.created = fact.t
                pod.labels.append((fact.t, fact.labels))
            elif fact.event == "started":
                pod.started = fact.t
                pod.labels.append((fact.t, fact.labels))
            elif fact.event == "labels":
                pod.labels.append((fact.t, fact.labels))
            elif fact.event == "status":
                pod.statuses.append((fact.t, fact.status))
            elif fact.event == "terminating":
                pod.terminating = fact.t
            elif fact.event == "stopped":
                pod.stopped = (fact.t, fact.status)
        ok = [w for w in history.writes if 200 <= w.code < 300]
        self.detaches: dict[str, list[float]] = defaultdict(list)
        self.deletes: dict[str, list[float]] = defaultdict(list)
        for write in sorted(ok, key=lambda w: w.t):
            if write.verb == "delete":
                self.deletes[write.pod].append(write.t)
            elif write.verb == "patch" and write.what in ("", "detach"):
                self.detaches[write.pod].append(write.t)
        self.outages = [w for w in history.faults if w.kind in API_OUTAGE_KINDS]
        self.controller_faults = [w for w in history.faults if w.kind in CONTROLLER_FAULT_KINDS]
        self.all_down = self._all_replicas_down()
        self.stalls = self._stalls()
        self.forged_targets: dict[str, float] = {}
        for forged in history.forged:
            self.forged_targets.setdefault(forged.pod, forged.t)
            self.forged_targets[forged.pod] = min(self.forged_targets[forged.pod], forged.t)

    def add(self, invariant: str, t: float, pod: str, message: str) -> None:
        self.violations.append(Violation(invariant, t, pod, message))

    def _all_replicas_down(self) -> list[Window]:
        """Spans during which every replica was down."""
        replicas = list(self.h.replicas)
        if not replicas:
            return []
        points = sorted({w.start for w in self.h.down} | {w.end for w in self.h.down})
        spans: list[Window] = []
        for a, b in itertools.pairwise(points):
            mid = (a + b) / 2
            down = {w.target for w in self.h.down if w.start <= mid < w.end}
            if all(r in down for r in replicas):
                spans.append(Window("all-replicas-down", a, b))
        return spans

    def _stalls(self) -> list[Window]:
        """Spans in which the run itself recorded nothing although it should have.

        The run probes every replica that is up each second and forges a webhook every half
        second; a silence of more than `stall_gap` seconds in both, outside the spans in which
        every replica was down, means the run's own process (or the whole machine) stood
        still: the Jibris, the proxy and the prober with it. What the controllers did then
        cannot be judged, so a stall counts as an outage for the bounds.
        """
        own = sorted([p.t for p in self.h.probes] + [f.t for f in self.h.forged])
        stalls = []
        for a, b in itertools.pairwise(own):
            if b - a - _overlap(self.all_down, a, b) > self.limits.stall_gap:
                stalls.append(Window("run-stalled", a, b))
        return stalls

    def outage_windows(self, pod: str) -> list[Window]:
        health = [w for w in self.h.faults if w.kind in HEALTH_FAULT_KINDS and w.target == pod]
        return self.outages + self.all_down + self.stalls + health

    def bound(self, pod: str, a: float, b: float) -> float:
        limits = self.limits
        return (
            limits.lease_duration
            + 2 * limits.sweep_interval
            + limits.slack
            + _overlap(self.outage_windows(pod), a, b)
            + limits.lease_duration * _count_overlapping(self.controller_faults, a, b)
        )

    # -- the invariants

    def i1_and_i6(self) -> None:
        reasons: dict[str, list[Action]] = defaultdict(list)
        for action in self.h.actions:
            if action.action == "delete" and action.result == "done":
                reasons[action.pod].append(action)
        for name, times in self.deletes.items():
            pod = self.pods.get(name, _Pod(name))
            for t in times:
                status = pod.status_at(t)
                crashed = any(s in PROCESS_ENDS and at <= t for at, s in pod.statuses)
                if name in self.h.bystanders:
                    self.add("I6", t, name, "the controllers deleted a non-Jibri pod")
                elif status == "BUSY":
                    logged = [a.reason for a in reasons.get(name, ())]
                    rule = next((r for r in logged if r in self.limits.recording_reapers), None)
                    if rule is not None:
                        self.reaped.append((name, rule))
                    else:
                        self.add(
                            "I1",
                            t,
                            name,
                            f"deleted while its Jibri was recording (logged reasons: {logged})",
                        )
                elif status == "IDLE" and not crashed:
                    invariant = "I6" if self._forged_before(name, t) else "I1"
                    self.add(invariant, t, name, "deleted while IDLE (it never crashed)")
        for name, times in self.detaches.items():
            pod = self.pods.get(name, _Pod(name))
            for t in times:
                if name in self.h.bystanders:
                    self.add("I6", t, name, "the controllers patched a non-Jibri pod")
                elif (busy := pod.first("BUSY")) is None or busy > t:
                    invariant = "I6" if self._forged_before(name, t) else "I3"
                    self.add(invariant, t, name, "detached but its Jibri was never BUSY before")

    def _forged_before(self, pod: str, t: float) -> bool:
        first = self.forged_targets.get(pod)
        return first is not None and first <= t

    def i2(self) -> dict[str, float]:
        worst = {"up": 0.0, "outage": 0.0, "resend_died": 0.0}
        for pod in self.pods.values():
            if pod.name in self.h.bystanders:
                continue
            finished = pod.first("EXPIRED")
            crash = next((at for at, s in pod.statuses if s in PROCESS_ENDS), None)
            detached = self.detaches.get(pod.name)
            if finished is None and crash is not None and detached and pod.first("BUSY"):
                finished = max(crash, detached[0])
            if finished is None:
                continue
            gone = [t for t in self.deletes.get(pod.name, ()) if t >= finished - 1.0]
            end = gone[0] if gone else (pod.stopped[0] if pod.stopped is not None else None)
            if end is None:
                self.add("I2", finished, pod.name, "finished but never deleted")
                continue
            took = max(0.0, end - finished)
            # A replica was up unless the API path was down, every replica was down, or the
            # pod's own health answers were broken (a lost EXPIRED then cannot be learnt).
            during_outage = _overlap(self.outage_windows(pod.name), finished, end) > 0
            key = "outage" if during_outage else "up"
            worst[key] = max(worst[key], took)
            if pod.name in self.h.resend_died:  # only the sweeper could find it finished
                worst["resend_died"] = max(worst["resend_died"], took)
            limit = self.bound(pod.name, finished, end)
            if took > limit:
                self.add(
                    "I2",
                    end,
                    pod.name,
                    f"deleted {took:.1f} s after finishing (bound {limit:.1f} s)",
                )
        return worst

    def i3_i5(self) -> dict[str, float]:
        worst = {"detach": 0.0, "missed_busy_detach": 0.0}
        for pod in self.pods.values():
            if pod.name in self.h.bystanders:
                continue
            detached = self.detaches.get(pod.name, [])
            if len(detached) > 1:
                self.add("I3", detached[1], pod.name, f"detached {len(detached)} times")
            busy = pod.first("BUSY")
            if busy is None:
                continue
            ends = [at for at, s in pod.statuses if at > busy and s in ("EXPIRED", *PROCESS_ENDS)]
            end = ends[0] if ends else (pod.stopped[0] if pod.stopped else None)
            missed = pod.name in self.h.lost_busy
            invariant = "I5" if missed else "I3"
            if detached:
                took = max(0.0, detached[0] - busy)
                key = "missed_busy_detach" if missed else "detach"
                worst[key] = max(worst[key], took)
                limit = self.bound(pod.name, busy, detached[0])
                if took > limit:
                    self.add(
                        invariant,
                        detached[0],
                        pod.name,
                        f"detached {took:.1f} s after BUSY (bound {limit:.1f} s)",
                    )
                continue
            if end is None:
                self.add(invariant, busy, pod.name, "BUSY until the end and never detached")
                continue
            limit = self.bound(pod.name, busy, end)
            if end - busy > limit:
                self.add(
                    invariant,
                    end,
                    pod.name,
                    f"recorded {end - busy:.1f} s and was never detached (bound {limit:.1f} s)",
                )
        # The hand-sized Deployment's replicas stay put; a pool's move (I9 judges those).
        spares = [
            p
            for p in self.h.end_pods
            if p.pod not in self.h.bystanders
            and _has(p.labels, self.limits.idle_labels)
            and "pool" not in p.labels
        ]
        if len(spares) != self.limits.spares:
            self.add(
                "I3",
                float("inf"),
                "",
                f"{len(spares)} spares at the end, expected {self.limits.spares}",
            )
        # One replacement per pod that left the Deployment (detached, or deleted as a spare).
        jibris = [
            p
            for p in self.pods.values()
            if p.name not in self.h.bystanders and p.started is not None and p.pool is None
        ]
        left = sum(
            1
            for p in jibris
            if any(_has(labels, self.limits.busy_labels) for _, labels in p.labels)
            or (
                p.stopped is not None
                and p.labels
                and _has(p.labels[-1][1], self.limits.idle_labels)
            )
        )
        if self.h.end_pods and len(jibris) != self.limits.spares + left:
            self.add(
                "I3",
                float("inf"),
                "",
                f"{len(jibris)} pods ran for {self.limits.spares} spares and {left} that left "
                "the Deployment: not one replacement each",
            )
        return worst

    def i4(self) -> None:
        for pod in self.pods.values():
            was_busy: float | None = None
            for at, labels in pod.labels:
                if _has(labels, self.limits.busy_labels):
                    was_busy = at if was_busy is None else was_busy
                elif was_busy is not None and _has(labels, self.limits.idle_labels):
                    self.add("I4", at, pod.name, "back in its Deployment after being detached")
                    break

    def i7(self) -> dict[str, float]:
        for exit_ in self.h.exits:
            if not exit_.by:
                self.add("I7", exit_.t, exit_.replica, f"exited by itself with code {exit_.code}")
            elif exit_.by == "sigterm" and exit_.code != 0:
                self.add("I7", exit_.t, exit_.replica, f"exited {exit_.code} after SIGTERM")
        worst_gap = 0.0
        by_replica: dict[str, list[Probe]] = defaultdict(list)
        for probe in sorted(self.h.probes, key=lambda p: p.t):
            by_replica[probe.replica].append(probe)
        for replica, probes in by_replica.items():
            down = [w for w in self.h.down if w.target == replica]
            # A run of unanswered probes, from the answer before it (or the first probe) to the
            # answer after it (or the last probe), minus the time the run had this replica down
            # on purpose, plus the API outages and the run's own stalls then. A silence without
            # a probe in it is the run's, not the replica's.
            spans: list[tuple[float, float]] = []
            last_ok = probes[0].t
            failing = False
            for probe in probes:
                if probe.ok:
                    if failing:
                        spans.append((last_ok, probe.t))
                    last_ok, failing = probe.t, False
                else:
                    failing = True
            if failing:
                spans.append((last_ok, probes[-1].t))
            for a, b in spans:
                gap = b - a - _overlap(down, a, b)
                allowed = self.limits.webhook_slack + _overlap(self.outages + self.stalls, a, b)
                worst_gap = max(worst_gap, gap)
                if gap > allowed:
                    self.add(
                        "I7",
                        b,
                        replica,
                        f"answered no webhook for {gap:.1f} s (allowed {allowed:.1f} s)",
                    )
        worst_double = self._double_leaders()
        return {"webhook_gap": worst_gap, "double_sweeping": worst_double}

    def _double_leaders(self) -> float:
        """The longest time two replicas were both sweeping.

        Each sweep line at t claims [t, t + interval]; claims of one replica that follow within
        one more interval merge into one sweeping period. Two replicas' periods must not
        overlap for longer than the renew deadline.
        """
        interval = self.limits.sweep_interval
        periods: dict[str, list[tuple[float, float]]] = {}
        by_replica: dict[str, list[float]] = defaultdict(list)
        for sweep in self.h.sweeps:
            by_replica[sweep.replica].append(sweep.t)
        for replica, times in by_replica.items():
            merged: list[tuple[float, float]] = []
            for t in sorted(times):
                if merged and t <= merged[-1][1] + interval:
                    merged[-1] = (merged[-1][0], t + interval)
                else:
                    merged.append((t, t + interval))
            periods[replica] = merged
        worst = 0.0
        names = sorted(periods)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                for a_start, a_end in periods[a]:
                    for b_start, b_end in periods[b]:
                        both = min(a_end, b_end) - max(a_start, b_start)
                        if both <= 0:
                            continue
                        worst = max(worst, both)
                        if both > self.limits.renew_deadline:
                            at = max(a_start, b_start)
                            self.add(
                                "I7", at, f"{a}+{b}", f"{a} and {b} both swept for {both:.1f} s"
                            )
        return worst

    def i8(self) -> dict[str, int]:
        """No Jibri stopped while it recorded, whichever path deleted its pod (the controllers,
        a ReplicaSet's scale-down or rollout, a human): a deletion while recording must wait
        for the recording (the preStop hook), and nothing else may end one."""
        first: dict[str, Deletion] = {}
        for each in sorted(self.h.deletions, key=lambda d: d.t):
            first.setdefault(each.pod, each)
        kept = 0
        for pod in self.pods.values():
            deletion: Deletion | None = first.get(pod.name)
            killed = pod.stopped is not None and pod.stopped[1] == "BUSY"
            if killed:
                assert pod.stopped is not None
                who = f"deleted by {deletion.who}" if deletion is not None else "not deleted"
                self.add("I8", pod.stopped[0], pod.name, f"stopped while recording ({who})")
            elif deletion is not None and pod.status_at(deletion.t) == "BUSY":
                kept += 1  # deleted while recording, and the recording went on to its end
        return {"deleted_while_recording_and_kept": kept}

    def i9(self) -> dict[str, float]:
        """Busy + spare pods of a pool within its maxTotal, from the kubelet's view of the pods
        (from its first sight of a pod until the pod terminates). A ReplicaSet replaces a pod
        as soon as it is detached, before the pool can lower its replicas, so each detach at
        the budget's edge may put one pod over for a moment: at any instant the pool may be
        over by as many pods as were detached since it could last lower its replicas (the last
        pool period plus the slack; within a span over the budget, since that long before the
        span began: a span lengthened by an outage or a lost leader gathers the detaches made
        meanwhile), and each span over the budget must end within a pool period plus the
        slack, plus the API outages and lost leaders in that span."""
        worst = {"over_budget_seconds": 0.0, "over_budget_times": 0.0, "over_budget_pods": 0.0}
        window = self.limits.slack
        for pool in self.h.pools:
            members = {p.name for p in self.pods.values() if p.pool == pool.name}
            detached = sorted(t for name in members for t in self.detaches.get(name, ()))
            changes: list[tuple[float, int, str]] = []
            for pod in self.pods.values():
                born = pod.created if pod.created is not None else pod.started
                if pod.pool != pool.name or born is None:
                    continue
                changes.append((born, 1, pod.name))
                end = pod.terminating
                if end is None and pod.stopped is not None:
                    end = pod.stopped[0]
                if end is not None:
                    changes.append((end, -1, pod.name))
            changes.sort(key=lambda c: (c[0], c[1]))  # at one instant, departures first
            count, over_since = 0, None
            for t, step, name in changes:
                count += step
                over = count - pool.max_total
                worst["over_budget_pods"] = max(worst["over_budget_pods"], over)
                # Each detach since the pool could last lower its replicas may add a pod: those
                # of the last period plus the slack, or, while a span over the budget goes on
                # (its length bounded below, outages and lost leaders included), those since a
                # period plus the slack before the span began.
                since = (t if over_since is None else over_since) - pool.period - window
                recent = sum(1 for d in detached if since <= d <= t)
                # An arrival puts the pool over; a departure only shortens a span (timed below).
                if step > 0 and over > recent:
                    self.add(
                        "I9",
                        t,
                        name,
                        f"pool {pool.name}: {count} pods, maxTotal {pool.max_total}, "
                        f"{recent} detached in the last {t - since:g} s",
                    )
                if over > 0 and over_since is None:
                    over_since = t
                elif over <= 0 and over_since is not None:
                    self._over_budget(pool, over_since, t, worst)
                    over_since = None
            if over_since is not None:
                self._over_budget(pool, over_since, float("inf"), worst)
        return worst

    def _over_budget(
        self, pool: PoolLimit, since: float, until: float, worst: dict[str, float]
    ) -> None:
        limits = self.limits
        end = until if until != float("inf") else max((f.t for f in self.h.facts), default=since)
        took = end - since
        worst["over_budget_seconds"] = max(worst["over_budget_seconds"], took)
        worst["over_budget_times"] += 1
        allowed = (
            pool.period
            + limits.slack
            + _overlap(self.outages + self.all_down + self.stalls, since, end)
            + limits.lease_duration * _count_overlapping(self.controller_faults, since, end)
        )
        if until == float("inf") or took > allowed:
            self.add(
                "I9",
                since,
                "",
                f"pool {pool.name}: over maxTotal {pool.max_total} for {took:.1f} s "
                f"(allowed {allowed:.1f} s)",
            )

    def accidental_silences(self) -> None:
        """A silence no fate explains is a failure of the testbed, not of the controller."""
        for silence in self.h.silences:
            if silence.kind == "resend-died" and silence.pod in self.h.resend_died:
                continue
            self.add(
                "testbed",
                silence.t,
                silence.pod,
                f"the simulated Jibri fell silent ({silence.kind}) with no fate asking for it",
            )

    def leaks(self) -> int:
        leaked = 0
        for pod in self.h.end_pods:
            if pod.pod in self.h.bystanders:
                continue
            if _has(pod.labels, self.limits.busy_labels):
                leaked += 1
                self.add("leaks", float("inf"), pod.pod, f"busy-labelled at the end ({pod.status})")
            elif pod.status not in ("IDLE", ""):
                leaked += 1
                self.add(
                    "leaks", float("inf"), pod.pod, f"a spare reporting {pod.status} at the end"
                )
        return leaked


def check(history: History) -> Report:
    """Every violation of I1-I9 (and the testbed's) in `history`, what was reaped, the figures."""
    checker = _Checker(history)
    checker.i1_and_i6()
    i2 = checker.i2()
    i35 = checker.i3_i5()
    checker.i4()
    i7 = checker.i7()
    leaked = checker.leaks()
    checker.accidental_silences()
    i8 = checker.i8()
    i9 = checker.i9()
    recordings = sum(1 for p in checker.pods.values() if p.first("BUSY") is not None)
    figures = {
        "recordings": recordings,
        "faults": dict(sorted(Counter(w.kind for w in history.faults).items())),
        "forged_webhooks": len(history.forged),
        "forged_accepted": sum(1 for f in history.forged if 200 <= f.code < 300),
        "worst_seconds": {
            "expired_to_delete_replica_up": round(i2["up"], 2),
            "expired_to_delete_during_outage": round(i2["outage"], 2),
            "expired_to_delete_resend_died": round(i2["resend_died"], 2),
            "busy_to_detach": round(i35["detach"], 2),
            "missed_busy_to_detach": round(i35["missed_busy_detach"], 2),
            "webhook_gap": round(i7["webhook_gap"], 2),
            "double_sweeping": round(i7["double_sweeping"], 2),
            "over_budget": round(i9["over_budget_seconds"], 2),
        },
        "over_budget_times": int(i9["over_budget_times"]),
        "over_budget_pods": int(i9["over_budget_pods"]),
        "deleted_while_recording_and_kept": i8["deleted_while_recording_and_kept"],
        "leaked_pods": leaked,
        "run_stalls": [
            {"start": round(w.start, 3), "seconds": round(w.end - w.start, 1)}
            for w in checker.stalls
        ],
    }
    violations = tuple(sorted(checker.violations, key=lambda v: (v.t, v.invariant, v.pod)))
    return Report(violations, tuple(checker.reaped), figures)


def events_around(history: History, *, t: float, pod: str, radius: float = 10.0) -> list[str]:
    """A readable timeline of what happened to `pod` (and every fault) near `t`."""
    if t == float("inf"):
        t = max((f.t for f in history.facts), default=0.0)
    lines: list[tuple[float, str]] = []

    def near(at: float) -> bool:
        return abs(at - t) <= radius

    for fact in history.facts:
        if fact.pod == pod and (near(fact.t) or fact.event != "labels"):
            detail = fact.status or dict(fact.labels)
            lines.append((fact.t, f"jibri {fact.pod}: {fact.event} {detail}"))
    for write in history.writes:
        if write.pod == pod:
            lines.append((write.t, f"audit: {write.verb} {write.pod} -> {write.code}"))
    for action in history.actions:
        if action.pod == pod:
            lines.append(
                (
                    action.t,
                    f"{action.replica}: {action.action} {action.pod} "
                    f"({action.reason}, {action.result})",
                )
            )
    for forged in history.forged:
        if forged.pod == pod:
            lines.append((forged.t, f"forged {forged.kind} for {forged.pod} -> {forged.code}"))
    for window in [*history.faults, *history.down]:
        if window.start - radius <= t <= window.end + radius:
            lines.append(
                (
                    window.start,
                    f"fault {window.kind} {window.target} until +{window.end - window.start:.1f} s",
                )
            )
    return [f"{at:.3f} ({at - t:+.1f} s) {text}" for at, text in sorted(lines)]


def history_from_json(data: Mapping[str, Any]) -> History:
    """The `History` written by a run as JSON (``history.json``), to check it again."""

    def rows(name: str, kind: Any) -> list[Any]:
        return [kind(**row) for row in data.get(name) or ()]

    return History(
        facts=rows("facts", Fact),
        writes=rows("writes", Write),
        actions=rows("actions", Action),
        faults=rows("faults", Window),
        down=rows("down", Window),
        probes=rows("probes", Probe),
        forged=rows("forged", Forged),
        exits=rows("exits", Exit),
        sweeps=rows("sweeps", Sweep),
        lost_busy=frozenset(data.get("lost_busy") or ()),
        resend_died=frozenset(data.get("resend_died") or ()),
        silences=rows("silences", Silence),
        deletions=rows("deletions", Deletion),
        pools=rows("pools", PoolLimit),
        bystanders=frozenset(data.get("bystanders") or ()),
        end_pods=rows("end_pods", EndPod),
        replicas=list(data.get("replicas") or ()),
        limits=Limits(
            **{
                **data["limits"],
                "recording_reapers": frozenset(data["limits"].get("recording_reapers") or ()),
            }
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m testbed.chaoscheck out/chaos/seed-N/history.json``: check a run again."""
    import json
    import sys

    paths = list(sys.argv[1:] if argv is None else argv)
    failed = 0
    for path in paths:
        with open(path) as f:
            history = history_from_json(json.load(f))
        report = check(history)
        print(f"{path}: {len(report.violations)} violations; {dict(report.figures)}")
        for violation in report.violations:
            print(f"  [{violation.invariant}] {violation.pod}: {violation.message}")
        failed += not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
