"""The chaos checker on small hand-made histories: a clean one passes, and each variant breaks
exactly the invariant it is built to break."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest

from testbed.chaoscheck import (
    Action,
    Deletion,
    EndPod,
    Exit,
    Fact,
    Forged,
    History,
    Limits,
    PoolLimit,
    Probe,
    Silence,
    Sweep,
    Window,
    Write,
    check,
    events_around,
    history_from_json,
)

IDLE = {"app": "jibri", "state": "idle"}
BUSY = {"app": "jibri", "state": "busy"}
LIMITS = Limits(lease_duration=8, renew_deadline=5, sweep_interval=3, slack=5, spares=1)


def recording(pod: str = "p1", *, busy: float = 10, expired: float = 30) -> list[Fact]:
    return [
        Fact(0, "started", pod, labels=IDLE),
        Fact(busy, "status", pod, status="BUSY"),
        Fact(busy + 1, "labels", pod, labels=BUSY),
        Fact(expired, "status", pod, status="EXPIRED"),
        Fact(expired + 1.5, "stopped", pod, status="EXPIRED"),
    ]


def clean() -> History:
    return History(
        facts=[*recording(), Fact(0, "started", "p2", labels=IDLE)],
        writes=[Write(11, "patch", "p1", 200), Write(31, "delete", "p1", 200)],
        actions=[
            Action(11, "a", "p1", "detach", "busy-reported", "done"),
            Action(31, "a", "p1", "delete", "expired-reported", "done"),
        ],
        probes=[Probe(float(t), "a", True) for t in range(40)],
        sweeps=[Sweep(float(t), "a") for t in range(0, 40, 3)],
        end_pods=[EndPod("p2", IDLE, "IDLE")],
        replicas=["a", "b"],
        bystanders=frozenset({"web"}),
        limits=LIMITS,
    )


def invariants(history: History) -> list[str]:
    return sorted({v.invariant for v in check(history).violations})


def test_a_clean_history_passes_and_reports_its_figures() -> None:
    report = check(clean())
    assert report.ok, report.violations
    assert report.figures["recordings"] == 1
    assert report.figures["worst_seconds"]["expired_to_delete_replica_up"] == 1.0
    assert report.figures["worst_seconds"]["busy_to_detach"] == 1.0
    assert report.per_invariant() == dict.fromkeys(
        ("I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9", "leaks", "testbed"), 0
    )


def test_i1_a_delete_while_recording() -> None:
    history = replace(
        clean(), writes=[Write(11, "patch", "p1", 200), Write(20, "delete", "p1", 200)]
    )
    assert invariants(history) == ["I1"]


def test_i1_a_configured_rule_that_ends_recordings_is_listed_not_failed() -> None:
    history = replace(
        clean(),
        writes=[Write(11, "patch", "p1", 200), Write(20, "delete", "p1", 200)],
        actions=[Action(20, "a", "p1", "delete", "busy-too-long", "done")],
        limits=replace(LIMITS, recording_reapers=frozenset({"busy-too-long"})),
    )
    report = check(history)
    assert report.ok, report.violations
    assert report.reaped == (("p1", "busy-too-long"),)


def test_i8_a_recording_pod_stopped_by_someone_else() -> None:
    facts = [f for f in recording() if f.event != "status" or f.status != "EXPIRED"]
    facts = [f if f.event != "stopped" else replace(f, status="BUSY") for f in facts]
    history = replace(clean(), facts=[*facts, Fact(0, "started", "p2", labels=IDLE)], writes=[])
    assert "I8" in invariants(history)


def test_i2_a_finished_pod_never_deleted() -> None:
    facts = [f for f in clean().facts if f.event != "stopped"]
    history = replace(clean(), facts=facts, writes=[Write(11, "patch", "p1", 200)])
    assert invariants(history) == ["I2"]


def test_i2_a_late_delete_fails_with_a_replica_up_but_not_during_an_outage() -> None:
    late = replace(clean(), writes=[Write(11, "patch", "p1", 200), Write(80, "delete", "p1", 200)])
    assert invariants(late) == ["I2"]
    outage = replace(late, faults=[Window("apiserver-restart", 32, 80)])
    report = check(outage)
    assert report.ok, report.violations
    assert report.figures["worst_seconds"]["expired_to_delete_during_outage"] == 50.0


def test_i3_a_second_detach() -> None:
    history = replace(clean(), writes=[*clean().writes, Write(15, "patch", "p1", 200)])
    assert invariants(history) == ["I3"]


def test_i3_a_long_recording_never_detached() -> None:
    history = replace(clean(), writes=[Write(31, "delete", "p1", 200)])
    assert invariants(history) == ["I3"]


def test_i3_too_few_spares_at_the_end() -> None:
    history = replace(clean(), end_pods=[])
    assert invariants(history) == ["I3"]


def test_i3_a_second_replacement_for_one_detach() -> None:
    extra = [Fact(12, "started", "p3", labels=IDLE)]
    history = replace(
        clean(),
        facts=[*clean().facts, *extra],
        end_pods=[*clean().end_pods, EndPod("p3", BUSY, "IDLE")],
    )
    assert "I3" in invariants(history)


def test_i4_a_pod_back_in_its_deployment() -> None:
    history = replace(clean(), facts=[*clean().facts, Fact(20, "labels", "p1", labels=IDLE)])
    assert invariants(history) == ["I4"]


def test_i5_a_missed_busy_never_detached() -> None:
    history = replace(clean(), writes=[Write(31, "delete", "p1", 200)], lost_busy=frozenset({"p1"}))
    assert invariants(history) == ["I5"]


def test_i6_a_write_to_a_non_jibri_pod() -> None:
    history = replace(
        clean(),
        writes=[*clean().writes, Write(5, "delete", "web", 200)],
        forged=[Forged(4.9, "non-jibri", "web", 403)],
    )
    assert invariants(history) == ["I6"]


def test_i6_a_forged_busy_that_detached_a_spare() -> None:
    history = replace(
        clean(),
        writes=[*clean().writes, Write(6, "patch", "p2", 200)],
        forged=[Forged(5.9, "busy-for-spare", "p2", 200)],
    )
    assert invariants(history) == ["I6"]


@pytest.mark.parametrize(
    ("exit_", "expected"),
    [
        (Exit(12, "a", 1, ""), ["I7"]),
        (Exit(12, "a", 1, "sigterm"), ["I7"]),
        (Exit(12, "a", 0, "sigterm"), []),
        (Exit(12, "a", -9, "sigkill"), []),
    ],
)
def test_i7_exits(exit_: Exit, expected: list[str]) -> None:
    assert invariants(replace(clean(), exits=[exit_])) == expected


def test_i7_a_webhook_gap_is_allowed_only_while_down_or_during_an_outage() -> None:
    gap = [p if not 10 <= p.t <= 20 else replace(p, ok=False) for p in clean().probes]
    assert invariants(replace(clean(), probes=gap)) == ["I7"]
    down = replace(clean(), probes=gap, down=[Window("replica-down", 9, 21, "a")])
    assert invariants(down) == []
    outage = replace(clean(), probes=gap, faults=[Window("proxy-outage", 9, 21)])
    assert invariants(outage) == []
    silent_at_the_end = [p if p.t < 30 else replace(p, ok=False) for p in clean().probes]
    assert invariants(replace(clean(), probes=silent_at_the_end)) == ["I7"]
    # No probe sent for 10 s is the run's silence, not the replica's.
    unprobed = [p for p in clean().probes if not 10 <= p.t <= 20]
    assert invariants(replace(clean(), probes=unprobed)) == []


def test_a_stall_of_the_run_itself_counts_as_an_outage() -> None:
    """Nothing recorded by the run for 9 s: the machine stood still, not the controllers."""
    frozen = [p for p in clean().probes if not 31 <= p.t <= 38]
    late = replace(
        clean(),
        probes=frozen,
        writes=[Write(11, "patch", "p1", 200), Write(50, "delete", "p1", 200)],
    )
    report = check(late)
    assert report.ok, report.violations
    assert report.figures["run_stalls"] == [{"start": 30.0, "seconds": 9.0}]
    # The same late delete with the run recording all along is a violation.
    assert invariants(replace(late, probes=clean().probes)) == ["I2"]


def test_i7_two_replicas_sweeping_together_beyond_the_renew_deadline() -> None:
    short = [Sweep(12.0, "b")]
    assert invariants(replace(clean(), sweeps=[*clean().sweeps, *short])) == []
    long = [Sweep(float(t), "b") for t in range(12, 30, 3)]
    assert invariants(replace(clean(), sweeps=[*clean().sweeps, *long])) == ["I7"]


def test_leaks_a_busy_pod_left_at_the_end() -> None:
    history = replace(clean(), end_pods=[*clean().end_pods, EndPod("p9", BUSY, "EXPIRED")])
    assert invariants(history) == ["leaks"]


def test_a_jibri_silenced_with_no_fate_asking_is_a_testbed_failure() -> None:
    history = replace(clean(), silences=[Silence(25, "p1", "silenced")])
    report = check(history)
    assert invariants(history) == ["testbed"]
    (violation,) = report.violations
    assert (violation.pod, violation.t) == ("p1", 25)
    assert "no fate asking for it" in violation.message
    # A resend that died by accident is one too; the same death asked for by a fate is not.
    died = replace(clean(), silences=[Silence(40, "p1", "resend-died")])
    assert invariants(died) == ["testbed"]
    assert invariants(replace(died, resend_died=frozenset({"p1"}))) == []


def test_a_jibri_whose_resend_died_is_held_to_the_sweepers_bound() -> None:
    on_purpose = {"resend_died": frozenset({"p1"}), "silences": [Silence(40, "p1", "resend-died")]}
    # Deleted 4 s after EXPIRED: within the bound, and reported as its own worst time.
    late = replace(clean(), writes=[Write(11, "patch", "p1", 200), Write(34, "delete", "p1", 200)])
    report = check(replace(late, **on_purpose))
    assert report.ok, report.violations
    assert report.figures["worst_seconds"]["expired_to_delete_resend_died"] == 4.0
    # Never deleted (its pod still there at the end): I2 and a leak, whatever its fate.
    facts = [f for f in clean().facts if f.event != "stopped"]
    never = replace(
        clean(),
        facts=facts,
        writes=[Write(11, "patch", "p1", 200)],
        end_pods=[*clean().end_pods, EndPod("p1", BUSY, "EXPIRED")],
        **on_purpose,
    )
    assert invariants(never) == ["I2", "leaks"]


POOL_IDLE = {**IDLE, "pool": "day"}
POOL_BUSY = {**BUSY, "pool": "day"}
RS = "system:kube-controller-manager"


def test_i8_a_recording_killed_by_a_replicaset_scale_down_is_named_with_its_deleter() -> None:
    facts = [
        Fact(0, "started", "q1", labels=POOL_IDLE),
        Fact(10, "status", "q1", status="BUSY"),  # silently: its BUSY webhook was lost
        Fact(11, "terminating", "q1"),
        Fact(12, "stopped", "q1", status="BUSY"),  # SIGKILLed with its recording
    ]
    history = replace(clean(), facts=[*clean().facts, *facts], deletions=[Deletion(11, "q1", RS)])
    report = check(history)
    (violation,) = [v for v in report.violations if v.invariant == "I8"]
    assert violation.pod == "q1"
    assert RS in violation.message


def test_i8_a_recording_deleted_gracefully_goes_on_and_is_counted_as_kept() -> None:
    facts = [
        Fact(0, "started", "q1", labels=POOL_IDLE),
        Fact(10, "status", "q1", status="BUSY"),
        Fact(10.5, "labels", "q1", labels=POOL_BUSY),
        Fact(11, "terminating", "q1"),  # a rollout: the preStop hook waits for the recording
        Fact(30, "status", "q1", status="EXIT"),  # the recording ended; Jibri exited (no EXPIRED)
        Fact(30.5, "stopped", "q1", status="EXIT"),
    ]
    history = replace(
        clean(),
        facts=[*clean().facts, *facts],
        writes=[*clean().writes, Write(10.5, "patch", "q1", 200)],
        actions=[*clean().actions, Action(10.5, "a", "q1", "detach", "busy-reported", "done")],
        deletions=[Deletion(11, "q1", RS)],
    )
    report = check(history)
    assert report.ok, report.violations
    assert report.figures["deleted_while_recording_and_kept"] == 1


def _pool_history(*facts: Fact, detached: tuple[float, ...] = (), max_total: int = 2) -> History:
    """Pool "day" at its budget (d1, d2), d1 found recording and detached at each of
    ``detached`` (the writes), plus ``facts``."""
    busy = [Fact(19.5, "status", "d1", status="BUSY")] if detached else []
    return replace(
        clean(),
        facts=[
            *clean().facts,
            Fact(0, "created", "d1", labels=POOL_IDLE),
            Fact(0, "created", "d2", labels=POOL_IDLE),
            *busy,
            *facts,
        ],
        writes=[*clean().writes, *(Write(t, "patch", "d1", 200, "detach") for t in detached)],
        pools=[PoolLimit("day", max_total=max_total, period=1.0)],
        end_pods=[*clean().end_pods, EndPod("d2", POOL_IDLE, "IDLE")],
    )


def test_i9_one_pod_over_the_budget_after_a_detach_is_allowed_and_measured() -> None:
    history = _pool_history(
        Fact(20, "created", "d3", labels=POOL_IDLE),  # the replacement of d1, detached at 20
        Fact(22.5, "terminating", "d3"),  # the pool lowered its replicas
        Fact(23, "stopped", "d3", status="IDLE"),
        detached=(20,),
    )
    report = check(history)
    assert "I9" not in invariants(history), report.violations
    assert report.figures["worst_seconds"]["over_budget"] == 2.5
    assert (report.figures["over_budget_times"], report.figures["over_budget_pods"]) == (1, 1)


def test_i9_over_the_budget_without_a_detach_or_for_too_long_or_by_more_than_the_detaches() -> None:
    no_detach = _pool_history(
        Fact(20, "created", "d3", labels=POOL_IDLE),
        Fact(21, "terminating", "d3"),
    )
    assert "I9" in invariants(no_detach)
    too_long = _pool_history(
        Fact(20, "created", "d3", labels=POOL_IDLE),
        Fact(40, "terminating", "d3"),  # 20 s over: more than the period (1) and the slack (5)
        detached=(20,),
    )
    assert "I9" in invariants(too_long)
    two_over = _pool_history(
        Fact(20, "created", "d3", labels=POOL_IDLE),
        Fact(20.2, "created", "d4", labels=POOL_IDLE),
        Fact(21, "terminating", "d3"),
        Fact(21, "terminating", "d4"),
        detached=(20,),
    )
    report = check(two_over)
    assert "I9" in invariants(two_over)
    assert any("4 pods, maxTotal 2, 1 detached" in v.message for v in report.violations)
    # An API outage over the span lengthens the allowance by its length.
    outage = replace(too_long, faults=[Window("proxy-outage", 19, 35)])
    assert "I9" not in invariants(outage)


def test_i9_a_pod_leaving_an_over_budget_pool_is_no_new_violation() -> None:
    # Two detaches put the pool two over during an API outage (which lengthens the span's
    # allowance); the replacements leave after the detaches' window: leaving is no new overshoot.
    history = replace(
        _pool_history(
            Fact(20, "created", "d3", labels=POOL_IDLE),
            Fact(20.5, "created", "d4", labels=POOL_IDLE),
            Fact(30.0, "terminating", "d3"),
            Fact(31.0, "terminating", "d4"),
            detached=(19.8, 20.3),
        ),
        faults=[Window("proxy-outage", 20, 35)],
    )
    assert "I9" not in invariants(history), check(history).violations


def test_i9_a_span_lengthened_by_a_lost_leader_gathers_the_detaches_made_meanwhile() -> None:
    # The leader is lost (a controller fault) while d1 and then d5 are detached 10 s apart:
    # each replacement stays until a new leader lowers the replicas, within the span's
    # allowance (period + slack + one lease).
    lost_leader = replace(
        _pool_history(
            Fact(20, "created", "d3", labels=POOL_IDLE),
            Fact(30, "created", "d4", labels=POOL_IDLE),
            Fact(33, "terminating", "d3"),
            Fact(33, "terminating", "d4"),
            detached=(20, 30),
        ),
        faults=[Window("controller-sigkill", 19, 25)],
    )
    assert "I9" not in invariants(lost_leader), check(lost_leader).violations
    # Detaches long before the span began count for nothing: one detach, two pods over.
    earlier = replace(
        _pool_history(
            Fact(20, "created", "d3", labels=POOL_IDLE),
            Fact(30, "created", "d4", labels=POOL_IDLE),
            Fact(31, "terminating", "d3"),
            Fact(31, "terminating", "d4"),
            detached=(2, 30),
        ),
        faults=[Window("controller-sigkill", 19, 25)],
    )
    report = check(earlier)
    assert any("4 pods, maxTotal 2, 1 detached" in v.message for v in report.violations)


def test_events_around_show_the_pod_and_the_faults() -> None:
    history = replace(clean(), faults=[Window("proxy-reset", 28, 29)])
    lines = events_around(history, t=31, pod="p1")
    assert any("audit: delete p1 -> 200" in line for line in lines)
    assert any("fault proxy-reset" in line for line in lines)


def test_a_history_written_as_json_checks_the_same() -> None:
    broken = replace(
        clean(), writes=[Write(11, "patch", "p1", 200), Write(20, "delete", "p1", 200)]
    )
    for history in (clean(), broken):
        text = json.dumps(asdict(history), default=list)
        again = history_from_json(json.loads(text))
        assert check(again) == check(history)
