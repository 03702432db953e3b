"""The demo's summary: recordings, spares, the controllers' detaches and deletes, how fast
they came, and every write of the controllers' ServiceAccount in the audit log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from testbed.cluster import REPO, all_write_events, service_account_user
from testbed.controlplane import ControlPlane
from testbed.demo.console import Console
from testbed.demo.outcome import Action, Outcome, Recording, RecState, Sample
from testbed.demo.plan import NAMESPACE, REPLICAS, SPARES, Fate


def print_summary(
    console: Console,
    out: Outcome,
    recordings: Mapping[str, Recording],
    *,
    plane: ControlPlane,
    png: Path,
) -> None:
    """The summary after the run, ``png`` the timeline drawn of it."""
    recs = list(recordings.values())
    started = [r for r in recs if r.pod is not None]
    finished = [r for r in started if r.plan.fate is not Fate.CRASHES]
    lost = [r for r in finished if r.plan.fate is Fate.WEBHOOK_LOST]
    crashed = [r for r in started if r.plan.fate is Fate.CRASHES]
    away = [r for r in recs if r.state is RecState.TURNED_AWAY]
    ramp = out.ramp_done if out.ramp_done is not None else 0.0
    after_ramp = [s.spare for s in out.samples if s.t >= ramp]
    lowest = min(after_ramp) if after_ramp else 0
    final = out.samples[-1] if out.samples else Sample(0, 0, 0, 0)
    done = [a for a in out.actions if a.result == "done"]
    others = Counter(a.result for a in out.actions if a.result != "done")

    console.line()
    console.line("summary")
    console.line(
        f"  recordings    {len(started)} started, {len(finished)} finished "
        f"({len(lost)} with its EXPIRED webhook lost), {len(crashed)} crashed, "
        f"{len(away)} turned away"
    )
    console.line(
        f"  spare pods    lowest {lowest} after the ramp-up (done at {ramp:.1f} s), "
        f"target {SPARES}, {final.spare} at the end with {final.busy} busy"
    )
    for kind in ("detach", "delete"):
        group = [a for a in done if a.action == kind]
        by = Counter((a.source, a.reason) for a in group)
        parts = ", ".join(
            f"{n} {reason} via {source}"
            for (source, reason), n in sorted(
                by.items(), key=lambda kv: (kv[0][0] != "webhook", -kv[1], kv[0])
            )
        )
        label = "detaches" if kind == "detach" else "deletes"
        console.line(f"  {label:<13} {len(group)}: {parts or 'none'}")
    if others:
        meaning = {
            "gone": "the pod was gone already",
            "failed": "refused by the API, e.g. a conflict with a write that came first",
        }
        extra = "; ".join(
            f"{n} {result}: {meaning.get(result, result)}" for result, n in sorted(others.items())
        )
        console.line(f"  not done      {extra}")
    replicas = []
    for replica in REPLICAS:
        mine = Counter(a.source for a in done if a.replica == replica)
        what = ", ".join(f"{n} via {source}" for source, n in sorted(mine.items()))
        lease = " (Lease holder)" if replica == out.leader else ""
        replicas.append(f"{replica}{lease}: {what or 'no writes'}")
    console.line(f"  by replica    {'; '.join(replicas)}")
    console.line(f"  reaction      {_latencies(done, recordings)}")
    hooks = ", ".join(f"{r} {out.webhooks.get(r, 0)}" for r in REPLICAS)
    console.line(f"  webhooks      answered: {hooks}")
    console.line(f"  API writes    {_writes(plane)}")
    shown = png.relative_to(REPO) if png.is_relative_to(REPO) else png
    console.line(f"  timeline      {shown}")
    if out.violations:
        console.line(f"  result        {len(out.violations)} invariant(s) violated:")
        for v in out.violations:
            console.line(f"                - {v}")
    else:
        console.line(
            "  result        OK: no live recording lost its pod, every used pod was detached "
            f"and deleted, {SPARES} spares at the end"
        )


def _latencies(done: Sequence[Action], recordings: Mapping[str, Recording]) -> str:
    """How long after each request to a Jibri the controllers acted on its pod."""
    first: dict[tuple[str, str], float] = {}
    for a in done:
        first.setdefault((a.action, a.pod), a.t)
    detach, delete, special = [], [], []
    for rec in recordings.values():
        if rec.pod is None or rec.started is None:
            continue
        if ("detach", rec.pod) in first:
            detach.append(first[("detach", rec.pod)] - rec.started)
        if ("delete", rec.pod) in first and rec.ended is not None:
            seconds = first[("delete", rec.pod)] - rec.ended
            if rec.plan.fate is Fate.FINISHES:
                delete.append(seconds)
            else:
                what = "lost EXPIRED" if rec.plan.fate is Fate.WEBHOOK_LOST else "crash"
                when = f"{seconds:.1f} s" if seconds >= 0 else "deleted before it ended"
                special.append(f"{what} {when}")

    def spread(values: list[float]) -> str:
        if not values:
            return "-"
        values = sorted(values)
        return f"median {values[len(values) // 2]:.2f} s, max {values[-1]:.2f} s"

    return (
        f"startService -> detach {spread(detach)}; stopService -> delete {spread(delete)}; "
        f"by the sweep: {', '.join(special) or '-'}"
    )


def _writes(plane: ControlPlane) -> str:
    user = service_account_user(NAMESPACE)
    events = all_write_events(plane, namespace=NAMESPACE, username=user)
    ok: Counter[tuple[str, str]] = Counter()
    refused: Counter[str] = Counter()
    for e in events:
        key = ((e.get("objectRef") or {}).get("resource", "?"), str(e.get("verb")))
        code = int((e.get("responseStatus") or {}).get("code", 0))
        if 200 <= code < 300:
            ok[key] += 1
        else:
            refused[f"{key[0]} {key[1]} {code}"] += 1
    order = {"pods": 0, "events": 1, "leases": 2}
    verbs = {"create": 0, "patch": 1, "update": 2, "delete": 3}

    def rank(item: tuple[tuple[str, str], int]) -> tuple[int, str, int, str]:
        (resource, verb), _ = item
        return order.get(resource, 9), resource, verbs.get(verb, 9), verb

    groups: dict[str, list[str]] = {}
    for (resource, verb), n in sorted(ok.items(), key=rank):
        groups.setdefault(resource, []).append(f"{n} {verb}")
    text = "; ".join(f"{resource} {' + '.join(v)}" for resource, v in groups.items())
    total = sum(ok.values())
    line = f"{total} by the controllers' ServiceAccount (audit log): {text}"
    if refused:
        what = ", ".join(f"{n} {k}" for k, n in sorted(refused.items()))
        line += f"; refused: {what}"
    return line
