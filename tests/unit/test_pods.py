"""Pods as the API returns them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from jibri_pod_controller.core.pods import (
    Phase,
    PodFacts,
    PodParseError,
    has_labels,
    is_valid_pod_name,
    parse_pod,
)

# Trimmed from `kubectl get pod -o json` of a Jibri pod owned by a Deployment's ReplicaSet.
REALISTIC_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "jibri-7c9f8d6b5-x4k2p",
        "generateName": "jibri-7c9f8d6b5-",
        "namespace": "jitsi",
        "uid": "0b3c5e2a-7f1d-4c1e-9a2b-3d4e5f6a7b8c",
        "resourceVersion": "4711",
        "creationTimestamp": "2025-03-01T10:00:00Z",
        "labels": {"app": "jibri", "pod-template-hash": "7c9f8d6b5"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-03-01T09:59:00Z"},
        "ownerReferences": [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": "not-the-controller",
                "uid": "u1",
            },
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "jibri-7c9f8d6b5",
                "uid": "u2",
                "controller": True,
                "blockOwnerDeletion": True,
            },
        ],
    },
    "spec": {"containers": [{"name": "jibri"}, {"name": "sidecar"}]},
    "status": {
        "phase": "Running",
        "podIP": "10.244.1.17",
        "podIPs": [{"ip": "10.244.1.17"}, {"ip": "fd00:10:244:1::11"}],
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2025-03-01T10:00:25Z"},
        ],
        "containerStatuses": [
            {
                "name": "jibri",
                "restartCount": 2,
                "ready": True,
                "state": {"running": {"startedAt": "2025-03-01T10:20:00Z"}},
            },
            {
                "name": "sidecar",
                "restartCount": 1,
                "ready": True,
                "state": {"running": {"startedAt": "2025-03-01T10:00:20Z"}},
            },
        ],
    },
}


def test_parse_realistic_pod() -> None:
    pod = parse_pod(REALISTIC_POD)
    assert pod == PodFacts(
        name="jibri-7c9f8d6b5-x4k2p",
        namespace="jitsi",
        uid="0b3c5e2a-7f1d-4c1e-9a2b-3d4e5f6a7b8c",
        labels={"app": "jibri", "pod-template-hash": "7c9f8d6b5"},
        annotations={"kubectl.kubernetes.io/restartedAt": "2025-03-01T09:59:00Z"},
        phase=Phase.RUNNING,
        pod_ips=("10.244.1.17", "fd00:10:244:1::11"),
        deleting=False,
        owner_kind="ReplicaSet",
        owner_name="jibri-7c9f8d6b5",
        owner_uid="u2",
        ready=True,
        restart_count=3,
        created=datetime(2025, 3, 1, 10, 0, tzinfo=UTC),
        resource_version="4711",
        ready_since=datetime(2025, 3, 1, 10, 0, 25, tzinfo=UTC),
        # The latest start of a running container: the Jibri's own restart.
        containers_started=datetime(2025, 3, 1, 10, 20, tzinfo=UTC),
    )
    assert not pod.finished


def test_parse_detached_terminating_pod() -> None:
    raw: dict[str, Any] = {
        "metadata": {
            "name": "jibri-a",
            "uid": "u",
            "deletionTimestamp": "2025-03-01T11:00:00Z",
            "ownerReferences": [{"kind": "ReplicaSet", "controller": False}],
        },
        "status": {"phase": "Failed", "podIP": "10.0.0.9"},
    }
    pod = parse_pod(raw)
    assert pod.deleting
    assert pod.owner_kind is None
    assert pod.pod_ips == ("10.0.0.9",)
    assert pod.phase is Phase.FAILED
    assert pod.finished
    assert (pod.restart_count, pod.resource_version, pod.created) == (0, "", None)


@pytest.mark.parametrize(
    ("status", "phase", "ips"),
    [
        ({}, Phase.PENDING, ()),
        ({"phase": "Succeeded"}, Phase.SUCCEEDED, ()),
        ({"phase": "Evicted"}, Phase.UNKNOWN, ()),
        ({"phase": "Running", "podIP": ""}, Phase.RUNNING, ()),
        ({"podIPs": [{"ip": "10.0.0.1"}, {"nope": 1}, "10.0.0.2"]}, Phase.PENDING, ("10.0.0.1",)),
    ],
)
def test_parse_status_variants(status: dict[str, Any], phase: Phase, ips: tuple[str, ...]) -> None:
    pod = parse_pod({"metadata": {"name": "p", "uid": "u"}, "status": status})
    assert (pod.phase, pod.pod_ips) == (phase, ips)


def test_parse_tolerates_odd_fields() -> None:
    raw = {
        "metadata": {
            "name": "p",
            "uid": "u",
            "labels": None,
            "annotations": {"n": 1},
            "creationTimestamp": "yesterday",
        },
        "status": {
            "containerStatuses": [
                {"restartCount": "3", "state": {"running": {"startedAt": "soon"}}},
                {"restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                {"state": {"running": None}},
                None,
            ]
        },
    }
    pod = parse_pod(raw)
    assert (pod.labels, pod.annotations) == ({}, {"n": "1"})
    assert pod.created is None
    assert pod.restart_count == 2
    assert pod.containers_started is None


@pytest.mark.parametrize(
    "raw",
    [{}, {"metadata": None}, {"metadata": {"name": "p"}}, {"metadata": {"uid": "u"}}],
)
def test_parse_pod_without_identity(raw: dict[str, Any]) -> None:
    with pytest.raises(PodParseError):
        parse_pod(raw)


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("jibri-7c9f8d6b5-x4k2p", True),
        ("a", True),
        ("a.b-c", True),
        ("0jibri", True),
        ("a" * 253, True),
        ("a" * 254, False),
        ("", False),
        ("UPPER", False),
        ("a..b", False),
        ("-a", False),
        ("a-", False),
        ("a_b", False),
        ("a/b", False),
        ("a b", False),
        ("jibri\n", False),
        ("jibri-0%0A", False),
    ],
)
def test_pod_names(name: str, valid: bool) -> None:
    assert is_valid_pod_name(name) is valid


@pytest.mark.parametrize(
    ("labels", "wanted", "has"),
    [
        ({"app": "jibri", "state": "busy", "x": "y"}, {"app": "jibri", "state": "busy"}, True),
        ({"app": "jibri", "state": "idle"}, {"app": "jibri", "state": "busy"}, False),
        ({"app": "jibri"}, {"app": "jibri", "state": "busy"}, False),
        ({}, {}, True),
    ],
)
def test_has_labels(labels: dict[str, str], wanted: dict[str, str], has: bool) -> None:
    assert has_labels(labels, wanted) is has


def test_ready_needs_the_ready_condition_true() -> None:
    raw = {**REALISTIC_POD, "status": {**REALISTIC_POD["status"], "conditions": []}}
    assert parse_pod(raw).ready is False
    raw["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    assert parse_pod(raw).ready is False
