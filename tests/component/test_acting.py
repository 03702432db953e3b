"""The actuator against the in-memory cluster: the writes it makes, the Events, dry-run."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from jibri_pod_controller.adapters import kube
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.core.decisions import Delete, Detach, Nothing, Reason
from jibri_pod_controller.core.pods import (
    ANNOTATION_BUSY_SINCE,
    ANNOTATION_RESTARTS_AT_BUSY,
    ANNOTATION_SAFE_TO_EVICT,
)
from jibri_pod_controller.loops.acting import Actuator, Result, Source
from tests.component.fakes import BUSY_LABELS, FakeCluster, RecordedEvent, Write

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def actuator(cluster: FakeCluster, *, dry_run: bool = False) -> Actuator:
    return Actuator(
        cluster=cluster,
        metrics=Metrics(),
        busy_labels=BUSY_LABELS,
        dry_run=dry_run,
        wall_clock=lambda: NOW,
    )


def count(act: Actuator, action: str, reason: str, source: str, result: str) -> float | None:
    return act.metrics.registry.get_sample_value(
        "jibri_pod_controller_actions_total",
        {"action": action, "reason": reason, "source": source, "result": result},
    )


async def test_detach_writes_one_merge_patch_and_an_event() -> None:
    cluster = FakeCluster()
    pod = cluster.add_pod("jibri-a", restarts=2, ips=["10.0.0.7"])
    act = actuator(cluster)
    result = await act.apply(Detach(Reason.BUSY_REPORTED), pod, source=Source.WEBHOOK)
    await act.drain()
    assert result is Result.DONE
    assert cluster.writes == [
        Write(
            "patch_pod",
            "jibri-a",
            {
                "metadata": {
                    "labels": BUSY_LABELS,
                    "annotations": {
                        ANNOTATION_SAFE_TO_EVICT: "false",
                        ANNOTATION_BUSY_SINCE: "2025-06-01T12:00:00+00:00",
                        ANNOTATION_RESTARTS_AT_BUSY: "2",
                    },
                    "uid": pod.uid,
                    "resourceVersion": pod.resource_version,
                }
            },
        )
    ]
    after = cluster.pod("jibri-a")
    assert after is not None
    assert after.labels == BUSY_LABELS
    assert after.annotations[ANNOTATION_SAFE_TO_EVICT] == "false"
    assert [(e.pod, e.uid, e.reason, e.warning) for e in cluster.events] == [
        ("jibri-a", pod.uid, "JibriDetached", False)
    ]
    assert "busy-reported" in cluster.events[0].message
    assert count(act, "detach", "busy-reported", "webhook", "done") == 1
    assert (
        act.metrics.registry.get_sample_value("jibri_pod_controller_detach_latency_seconds_count")
        == 1
    )


async def test_delete_carries_the_uid_and_records_an_event() -> None:
    cluster = FakeCluster()
    pod = cluster.add_pod("jibri-a")
    act = actuator(cluster)
    result = await act.apply(Delete(Reason.EXPIRED_REPORTED), pod, source=Source.SWEEP)
    await act.drain()
    assert result is Result.DONE
    assert cluster.writes == [
        Write(
            "delete_pod",
            "jibri-a",
            {"preconditions": {"uid": pod.uid, "resourceVersion": pod.resource_version}},
        )
    ]
    assert cluster.pods == {}
    assert cluster.events == [
        RecordedEvent(
            "jibri-a", pod.uid, "JibriDeleted", "Deleted: expired-reported (via sweep)", False
        )
    ]
    assert count(act, "delete", "expired-reported", "sweep", "done") == 1


async def test_nothing_writes_nothing() -> None:
    cluster = FakeCluster()
    pod = cluster.add_pod("jibri-a")
    act = actuator(cluster)
    assert await act.apply(Nothing(Reason.IDLE), pod, source=Source.WEBHOOK) is Result.NONE
    await act.drain()
    assert (cluster.writes, cluster.events) == ([], [])
    assert count(act, "none", "idle", "webhook", "none") == 1


@pytest.mark.parametrize(
    ("action", "kind"),
    [(Detach(Reason.MISSED_BUSY), "detach"), (Delete(Reason.RESTARTED_WHILE_BUSY), "delete")],
)
async def test_dry_run_writes_nothing(action: Detach | Delete, kind: str) -> None:
    cluster = FakeCluster()
    pod = cluster.add_pod("jibri-a")
    act = actuator(cluster, dry_run=True)
    assert await act.apply(action, pod, source=Source.SWEEP) is Result.DRY_RUN
    await act.drain()
    assert (cluster.writes, cluster.events) == ([], [])
    assert cluster.pod("jibri-a") == pod
    assert count(act, kind, action.reason, "sweep", "dry-run") == 1


async def test_patch_of_a_vanished_pod_is_gone() -> None:
    cluster = FakeCluster()
    pod = cluster.add_pod("jibri-a")
    del cluster.pods["jibri-a"]
    act = actuator(cluster)
    assert await act.apply(Detach(Reason.BUSY_REPORTED), pod, source=Source.WEBHOOK) is Result.GONE
    await act.drain()
    assert [w.method for w in cluster.writes] == ["patch_pod"]
    assert cluster.events == []
    assert count(act, "detach", "busy-reported", "webhook", "gone") == 1


async def test_delete_of_a_vanished_pod_is_gone() -> None:
    cluster = FakeCluster()
    pod = cluster.add_pod("jibri-a")
    del cluster.pods["jibri-a"]
    act = actuator(cluster)
    result = await act.apply(Delete(Reason.EXPIRED_REPORTED), pod, source=Source.WEBHOOK)
    assert result is Result.GONE
    await act.drain()
    assert cluster.events == []


async def test_delete_never_hits_a_newer_pod_of_the_same_name() -> None:
    cluster = FakeCluster()
    stale = cluster.add_pod("jibri-a")
    del cluster.pods["jibri-a"]
    newer = cluster.add_pod("jibri-a")
    act = actuator(cluster)
    result = await act.apply(Delete(Reason.EXPIRED_REPORTED), stale, source=Source.SWEEP)
    await act.drain()
    assert result is Result.GONE
    assert cluster.writes == [
        Write(
            "delete_pod",
            "jibri-a",
            {"preconditions": {"uid": stale.uid, "resourceVersion": stale.resource_version}},
        )
    ]
    assert cluster.pod("jibri-a") == newer
    assert cluster.events == []


async def test_detach_never_relabels_a_newer_pod_of_the_same_name() -> None:
    cluster = FakeCluster()
    stale = cluster.add_pod("jibri-a")
    del cluster.pods["jibri-a"]
    newer = cluster.add_pod("jibri-a")
    act = actuator(cluster)
    result = await act.apply(Detach(Reason.BUSY_REPORTED), stale, source=Source.SWEEP)
    await act.drain()
    assert result is Result.GONE
    assert [(w.method, w.body["metadata"]["uid"]) for w in cluster.writes] == [
        ("patch_pod", stale.uid)
    ]
    assert cluster.pod("jibri-a") == newer
    assert cluster.events == []


async def test_a_conflicting_detach_is_raised_for_the_caller_to_re_read() -> None:
    cluster = FakeCluster()
    stale = cluster.add_pod("jibri-a")
    cluster.change_pod("jibri-a", labels={"other": "change"})
    act = actuator(cluster)
    with pytest.raises(kube.Conflict):
        await act.apply(Detach(Reason.BUSY_REPORTED), stale, source=Source.WEBHOOK)
    pod = cluster.pod("jibri-a")
    assert pod is not None
    assert pod.labels["state"] == "idle"
    assert count(act, "detach", "busy-reported", "webhook", "failed") == 1


async def test_an_api_error_is_counted_and_raised() -> None:
    cluster = FakeCluster()
    pod = cluster.add_pod("jibri-a")
    cluster.fail_next("delete_pod", kube.Unavailable("HTTP 503"))
    act = actuator(cluster)
    with pytest.raises(kube.Unavailable):
        await act.apply(Delete(Reason.EXPIRED_REPORTED), pod, source=Source.WEBHOOK)
    await act.drain()
    assert "jibri-a" in cluster.pods
    assert cluster.events == []
    assert count(act, "delete", "expired-reported", "webhook", "failed") == 1
    assert (
        act.metrics.registry.get_sample_value(
            "jibri_pod_controller_api_errors_total", {"operation": "delete", "kind": "unavailable"}
        )
        == 1
    )


async def test_a_failed_event_does_not_fail_the_action() -> None:
    cluster = FakeCluster()
    pod = cluster.add_pod("jibri-a")
    cluster.fail_next("record_event", kube.Forbidden("HTTP 403"))
    act = actuator(cluster)
    result = await act.apply(Delete(Reason.EXPIRED_REPORTED), pod, source=Source.WEBHOOK)
    await act.drain()
    assert result is Result.DONE
    assert cluster.pods == {}
    assert cluster.events == []
    assert act.metrics.registry.get_sample_value("jibri_pod_controller_events_failed_total") == 1


async def test_events_do_not_delay_the_action() -> None:
    cluster = FakeCluster()
    cluster.delays["record_event"] = 0.2
    pod = cluster.add_pod("jibri-a")
    act = actuator(cluster)
    await act.apply(Delete(Reason.EXPIRED_REPORTED), pod, source=Source.WEBHOOK)
    assert cluster.events == []
    await act.drain()
    assert [e.reason for e in cluster.events] == ["JibriDeleted"]


async def test_without_the_events_permission_no_event_is_attempted() -> None:
    cluster = FakeCluster()
    pod = cluster.add_pod("jibri-a")
    act = actuator(cluster)
    act.events = False
    assert await act.apply(Detach(Reason.BUSY_REPORTED), pod, source=Source.WEBHOOK) is (
        Result.DONE
    )
    await act.drain()
    assert [w.method for w in cluster.writes] == ["patch_pod"]
    assert cluster.events == []


class ReplicaSets:
    """The owning ReplicaSets' selectors, as the API server would return them."""

    def __init__(self, selectors: dict[str, dict[str, object]]) -> None:
        self.selectors = selectors
        self.asked: list[str] = []

    async def __call__(self, name: str, uid: str) -> dict[str, object] | None:
        self.asked.append(name)
        return self.selectors.get(name)


async def test_a_detach_that_leaves_the_pod_in_its_replica_set_is_reported() -> None:
    cluster = FakeCluster()
    pod = cluster.add_pod("jibri-a")  # owned by ReplicaSet jibri-5d9c7b
    act = actuator(cluster)
    # The Deployment selects app=jibri only: the busy labels still match it.
    act.replica_sets = ReplicaSets({"jibri-5d9c7b": {"matchLabels": {"app": "jibri"}}})
    result = await act.apply(Detach(Reason.BUSY_REPORTED), pod, source=Source.WEBHOOK)
    await act.drain()
    assert result is Result.NOT_DETACHED
    assert count(act, "detach", "busy-reported", "webhook", "not-detached") == 1
    assert count(act, "detach", "busy-reported", "webhook", "done") is None
    sample = act.metrics.registry.get_sample_value
    assert sample("jibri_pod_controller_detach_ineffective_total", {"where": "detach"}) == 1
    assert [(e.reason, e.warning) for e in cluster.events] == [("JibriNotDetached", True)]


async def test_a_detach_that_takes_the_pod_out_is_done() -> None:
    cluster = FakeCluster()
    pod = cluster.add_pod("jibri-a")
    act = actuator(cluster)
    sets = ReplicaSets({"jibri-5d9c7b": {"matchLabels": {"app": "jibri", "state": "idle"}}})
    act.replica_sets = sets
    result = await act.apply(Detach(Reason.BUSY_REPORTED), pod, source=Source.WEBHOOK)
    await act.drain()
    assert result is Result.DONE
    assert sets.asked == ["jibri-5d9c7b"]
    assert [e.reason for e in cluster.events] == ["JibriDetached"]


async def test_an_unreadable_replica_set_does_not_undo_a_detach() -> None:
    cluster = FakeCluster()
    pod = cluster.add_pod("jibri-a")
    act = actuator(cluster)

    async def failing(name: str, uid: str) -> dict[str, object] | None:
        raise kube.Unavailable("get replicaset: timed out")

    act.replica_sets = failing
    assert await act.apply(Detach(Reason.BUSY_REPORTED), pod, source=Source.WEBHOOK) is (
        Result.DONE
    )


async def test_a_replica_set_selector_with_an_unknown_operator_is_counted_not_trusted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The check cannot be made: the detach stands, as when the ReplicaSet cannot be read, and
    # the selector it could not evaluate is counted and logged instead of passing silently.
    cluster = FakeCluster()
    pod = cluster.add_pod("jibri-a")
    act = actuator(cluster)
    act.replica_sets = ReplicaSets(
        {"jibri-5d9c7b": {"matchExpressions": [{"key": "app", "operator": "Near"}]}}
    )
    with caplog.at_level(logging.WARNING, logger="jibri_pod_controller.actions"):
        result = await act.apply(Detach(Reason.BUSY_REPORTED), pod, source=Source.WEBHOOK)
    await act.drain()
    assert result is Result.DONE
    assert [w.method for w in cluster.writes] == ["patch_pod"]
    sample = act.metrics.registry.get_sample_value
    errors = {"operation": "get-replicaset", "kind": "invalid"}
    assert sample("jibri_pod_controller_api_errors_total", errors) == 1
    assert sample("jibri_pod_controller_detach_ineffective_total", {"where": "detach"}) is None
    assert [r.getMessage() for r in caplog.records] == ["cannot evaluate the ReplicaSet's selector"]
    assert "Near" in caplog.records[0].__dict__["error"]
