"""The history of a run, for the checker: the ground truth the fake kubelet recorded, the writes
and deletions in the audit log, the controllers' log lines, and the pods at the end."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client as k8s

from testbed.chaos.plan import BYSTANDER, NAMESPACE, POOL_PERIOD, POOLS, REPLICAS
from testbed.chaos.state import Run, has_labels
from testbed.chaoscheck import (
    Action,
    Deletion,
    EndPod,
    Fact,
    History,
    Limits,
    PoolLimit,
    Silence,
    Sweep,
    Write,
)
from testbed.cluster import BUSY_LABELS, service_account_user
from testbed.controlplane import ADMIN_USER, CONTROLLER_MANAGER_USER, ControlPlane


def _wall(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


ACTIONS_LOGGER = "jibri_pod_controller.actions"
"""The logger of the one line per write (a webhook's canonical line repeats its fields)."""


def _controller_lines(run: Run) -> tuple[list[Action], list[Sweep]]:
    actions: list[Action] = []
    sweeps: list[Sweep] = []
    for name, replica in run.replicas.items():
        for line in replica.process.log_lines():
            ts = line.get("ts")
            if not isinstance(ts, str):
                continue
            if line.get("msg") == "sweep done":
                sweeps.append(Sweep(_wall(ts), name))
            elif line.get("logger") == ACTIONS_LOGGER and line.get("action") in (
                "detach",
                "delete",
            ):
                actions.append(
                    Action(
                        _wall(ts),
                        name,
                        str(line.get("pod")),
                        str(line["action"]),
                        str(line.get("reason")),
                        str(line.get("result", "failed")),
                    )
                )
    return actions, sweeps


def silences(run: Run) -> list[Silence]:
    """Every Jibri of the run that stopped speaking: each one a recording was played on (its
    pod may be gone) and each one still running."""
    assert run.kubelet is not None
    jibris = dict(run.jibris)
    for name in run.kubelet.running():
        with contextlib.suppress(KeyError):
            jibris.setdefault(name, run.kubelet.jibri(name))
    now = time.time()
    found = []
    for name, jibri in sorted(jibris.items()):
        if jibri.silent_since is not None:
            found.append(Silence(jibri.silent_since, name, "silenced"))
        if jibri.resend_died:
            found.append(Silence(now, name, "resend-died"))
    return found


def pool_activity(run: Run) -> dict[str, int]:
    """What the pools did, from the controllers' log lines: scale-downs performed, spares
    asked to shut down gracefully (and how many accepted), spares found BUSY on the way to a
    scale-down (detached, their recordings kept)."""
    counts: Counter[str] = Counter()
    for replica in run.replicas.values():
        for line in replica.process.log_lines():
            msg = str(line.get("msg", ""))
            if msg.startswith("scaled ") and isinstance(line.get("replicas"), int):
                if line["replicas"] < int(line.get("from") or 0):
                    counts["scale_downs"] += 1
                else:
                    counts["scale_ups"] += 1
            elif msg.startswith("asked ") and "shut down gracefully" in msg:
                answers = line.get("pods") or {}
                counts["graceful_shutdowns_asked"] += len(answers)
                counts["graceful_shutdowns_accepted"] += sum(
                    1 for outcome in answers.values() if outcome == "accepted"
                )
            elif line.get("busy_found") == 1:
                counts["found_busy_and_kept"] += 1
    return {
        key: counts.get(key, 0)
        for key in (
            "scale_ups",
            "scale_downs",
            "graceful_shutdowns_asked",
            "graceful_shutdowns_accepted",
            "found_busy_and_kept",
        )
    }


async def end_pods(run: Run) -> list[EndPod]:
    assert run.admin is not None
    assert run.kubelet is not None
    core: Any = k8s.CoreV1Api(run.admin)
    pods = await core.list_namespaced_pod(NAMESPACE)
    result: list[EndPod] = []
    for pod in pods.items:
        if pod.metadata.deletion_timestamp is not None:
            continue
        name = pod.metadata.name
        try:
            status = run.kubelet.jibri(name).busy_status.value
        except KeyError:
            status = ""
        result.append(EndPod(name, dict(pod.metadata.labels or {}), status))
    return result


def extract_history(
    run: Run, plane: ControlPlane, end_pods: list[EndPod], silences: list[Silence]
) -> tuple[History, dict[str, int]]:
    user = service_account_user(NAMESPACE)
    audit = plane.audit_events(username=user, namespace=NAMESPACE)
    writes = [
        Write(
            _wall(e["stageTimestamp"]),
            e["verb"],
            e["objectRef"].get("name", ""),
            int((e.get("responseStatus") or {}).get("code", 0)),
            patch_kind(e.get("requestObject")) if e["verb"] == "patch" else "",
        )
        for e in audit
        if e["objectRef"].get("resource") == "pods" and not e["objectRef"].get("subresource")
    ]
    ok = [e for e in audit if 200 <= int((e.get("responseStatus") or {}).get("code", 0)) < 300]
    counts = {
        "writes": len(audit),
        "writes_ok": len(ok),
        "pod_writes_ok": sum(1 for w in writes if 200 <= w.code < 300),
    }
    who = {
        user: "the controllers",
        CONTROLLER_MANAGER_USER: "a ReplicaSet (kube-controller-manager)",
    }
    who[ADMIN_USER] = "the run (an operator's delete, or the fake kubelet's finalize)"
    deletions = [
        Deletion(
            _wall(e["stageTimestamp"]),
            e["objectRef"].get("name", ""),
            who.get(e.get("user", {}).get("username", ""), e.get("user", {}).get("username", "")),
        )
        for e in plane.audit_events(namespace=NAMESPACE)
        if e["verb"] == "delete"
        and e["objectRef"].get("resource") == "pods"
        and not e["objectRef"].get("subresource")
        and 200 <= int((e.get("responseStatus") or {}).get("code", 0)) < 300
    ]
    actions, sweeps = _controller_lines(run)
    size = run.size
    facts = [
        Fact(f["t"], f["event"], f["pod"], f.get("status") or "", f.get("labels") or {})
        for f in run.facts
    ]
    history = History(
        facts=facts,
        writes=writes,
        actions=actions,
        faults=run.faults,
        down=run.down,
        probes=run.probes,
        forged=run.forged,
        exits=run.exits,
        sweeps=sweeps,
        lost_busy=frozenset(run.lost_busy),
        resend_died=frozenset(run.resend_died),
        silences=silences,
        deletions=deletions,
        pools=[PoolLimit(p.name, int(p.spec["maxTotal"]), POOL_PERIOD) for p in POOLS],
        bystanders=frozenset({BYSTANDER}),
        end_pods=end_pods,
        replicas=REPLICAS,
        limits=Limits(
            lease_duration=size.lease[0],
            renew_deadline=size.lease[1],
            sweep_interval=size.sweep_interval,
            spares=size.spares,
        ),
    )
    return history, counts


def patch_kind(body: Any) -> str:
    """What a pod patch (its body, from the audit log) changes: ``detach`` when it gives the
    pod the busy labels, ``annotate`` when it changes annotations only, else ``other``."""
    meta = body.get("metadata") if isinstance(body, dict) else None
    if not isinstance(meta, dict):
        return "other"
    labels = meta.get("labels")
    if isinstance(labels, dict) and has_labels(labels, BUSY_LABELS):
        return "detach"
    if "annotations" in meta and "labels" not in meta and set(body) == {"metadata"}:
        return "annotate"
    return "other"
