"""The policy benchmark: ``python -m bench.policy [--smoke] [--seeds 1,2,3] [--replay FILE]``.

Plays the same simulated days (bench/daysim.py) against each spare-count policy
(bench/sizers.py), side by side, and reports per policy the recordings that found no Ready spare,
the idle pod-hours, the peak pods and the scale writes. Writes the raw results as JSON and a plot
to ``--out`` (bench/results/ by default) and, after a full run of the synthetic days, rewrites the
policy section of docs/performance.md and docs/policy.png. Pure simulation: no cluster, seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.daysim import (
    Demand,
    DemandFileError,
    Outcome,
    Sizer,
    World,
    concurrent_peak,
    replay,
    simulate,
    starts_per_hour,
    synthetic_day,
    write_csv,
)
from bench.sizers import Hpa, Pool, Static
from jibri_pod_controller.core.pools import DemandSpec, PoolSpec, ScheduleWindow

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOCS = REPO / "docs" / "performance.md"
BEGIN = "<!-- BEGIN GENERATED POLICY: scripts/policy-bench.sh rewrites up to the END line -->"
END = "<!-- END GENERATED POLICY -->"

STATIC = (4, 8, 12, 16, 20, 24, 28)
HPA_TARGETS = (0.6, 0.7, 0.8, 0.9)
PROBABILITIES = (0.05, 0.01, 0.001)
RESERVE = 24
"""Spares held in working hours by the schedule, for the bursts (the synthetic day's largest
burst is 24 recordings)."""
ZONE = "Europe/Berlin"


def _pool(name: str, **fields: Any) -> Pool:
    spec: dict[str, Any] = {
        "deployment_name": "jibri",
        "min_spare": 2,
        "max_spare": 40,
        "max_total": None,
        "scale_down_delay_seconds": 300.0,
    }
    spec.update(fields)
    return Pool(PoolSpec(**spec), name)


def _reserve() -> tuple[ScheduleWindow, ...]:
    return (ScheduleWindow("0 9 * * 1-5", 480, RESERVE, ZONE),)


def _demand(p: float) -> DemandSpec:
    return DemandSpec(shortfall_probability=p, window_seconds=900.0, startup_seconds=0.0)


@dataclass(frozen=True)
class Entry:
    kind: str
    """static, hpa, schedule, demand."""
    make: Callable[[], Sizer]
    """Every day gets a fresh one."""


def policies(*, smoke: bool) -> dict[str, Entry]:
    statics = (8, 24) if smoke else STATIC
    targets = (0.8,) if smoke else HPA_TARGETS
    probabilities = (0.01,) if smoke else PROBABILITIES
    out: dict[str, Entry] = {}
    for n in statics:
        out[f"static {n}"] = Entry("static", partial(Static, n))
    for target in targets:
        out[f"HPA busy {target:.0%}"] = Entry("hpa", partial(Hpa, target))
    out[f"schedule {RESERVE}"] = Entry(
        "schedule", partial(_pool, f"schedule {RESERVE}", schedule=_reserve())
    )
    for p in probabilities:
        name = f"demand {p:g}"
        out[name] = Entry("demand", partial(_pool, name, demand=_demand(p)))
    for p in probabilities[-2:]:
        name = f"demand {p:g} + schedule {RESERVE}"
        out[name] = Entry(
            "demand",
            partial(_pool, name, demand=_demand(p), schedule=_reserve()),
        )
    return out


@dataclass
class Totals:
    name: str
    kind: str
    recordings: int = 0
    shortfalls: int = 0
    in_bursts: int = 0
    idle_pod_hours: float = 0.0
    busy_pod_hours: float = 0.0
    peak_pods: int = 0
    scale_writes: int = 0
    zero_spare_seconds: float = 0.0
    bounds: dict[str, float] = field(default_factory=dict)

    @property
    def shortfall_percent(self) -> float:
        return 100.0 * self.shortfalls / self.recordings if self.recordings else 0.0

    def add(self, outcome: Outcome, demand: Demand, sizer: Sizer) -> None:
        self.recordings += outcome.recordings
        self.shortfalls += len(outcome.shortfalls)
        self.in_bursts += sum(
            1 for t in outcome.shortfalls if any(b <= t <= b + 180.0 for b in demand.bursts)
        )
        self.idle_pod_hours += outcome.idle_pod_hours
        self.busy_pod_hours += outcome.busy_pod_hours
        self.peak_pods = max(self.peak_pods, outcome.peak_pods)
        self.scale_writes += outcome.scale_writes
        self.zero_spare_seconds += outcome.zero_spare_seconds
        if isinstance(sizer, Pool):
            for bound, seconds in sizer.bounds.items():
                self.bounds[bound] = self.bounds.get(bound, 0.0) + seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "recordings": self.recordings,
            "shortfalls": self.shortfalls,
            "shortfall_percent": round(self.shortfall_percent, 3),
            "shortfalls_in_bursts": self.in_bursts,
            "idle_pod_hours": round(self.idle_pod_hours, 2),
            "busy_pod_hours": round(self.busy_pod_hours, 2),
            "peak_pods": self.peak_pods,
            "scale_writes": self.scale_writes,
            "zero_spare_seconds": round(self.zero_spare_seconds, 1),
            "bound_seconds": {k: round(v, 1) for k, v in sorted(self.bounds.items())},
        }


def run(
    days: Sequence[Demand], entries: dict[str, Entry], *, world: World, seed: int
) -> tuple[dict[str, Totals], dict[str, Outcome]]:
    """Totals over all days per policy, and each policy's outcome on the first day (to plot)."""
    totals = {name: Totals(name, entry.kind) for name, entry in entries.items()}
    first: dict[str, Outcome] = {}
    for index, demand in enumerate(days):
        for name, entry in entries.items():
            sizer = entry.make()
            outcome = simulate(demand, sizer, world=world, seed=seed + index)
            totals[name].add(outcome, demand, sizer)
            if index == 0:
                first[name] = outcome
    return totals, first


# ---------------------------------------------------------------------------------------------
# The goals, as the issue states them


def best_static(totals: dict[str, Totals]) -> Totals | None:
    """The static count with the fewest shortfalls; of those, the cheapest."""
    statics = [t for t in totals.values() if t.kind == "static"]
    return min(statics, key=lambda t: (t.shortfalls, t.idle_pod_hours), default=None)


def goals(totals: dict[str, Totals]) -> list[dict[str, Any]]:
    """Per demand-based policy: against the best static N (no more shortfalls, >= 40% fewer
    idle pod-hours) and against each HPA-style target (fewer shortfalls, no more idle
    pod-hours)."""
    best = best_static(totals)
    hpas = [t for t in totals.values() if t.kind == "hpa"]
    rows: list[dict[str, Any]] = []
    for d in (t for t in totals.values() if t.kind == "demand"):
        row: dict[str, Any] = {"policy": d.name}
        if best is not None and best.idle_pod_hours > 0:
            saving = 1.0 - d.idle_pod_hours / best.idle_pod_hours
            row["static"] = {
                "against": best.name,
                "shortfalls_ok": d.shortfalls <= best.shortfalls,
                "idle_saving_percent": round(100.0 * saving, 1),
                "met": d.shortfalls <= best.shortfalls and saving >= 0.4,
            }
        like = [
            t
            for t in totals.values()
            if t.kind == "static" and t.shortfalls <= d.shortfalls and t.idle_pod_hours > 0
        ]
        if like:
            cheapest = min(like, key=lambda t: t.idle_pod_hours)
            row["like_for_like"] = {
                "against": cheapest.name,
                "idle_saving_percent": round(
                    100.0 * (1.0 - d.idle_pod_hours / cheapest.idle_pod_hours), 1
                ),
            }
        row["hpa"] = {
            h.name: {
                "fewer_shortfalls": d.shortfalls < h.shortfalls,
                "no_more_idle": d.idle_pod_hours <= h.idle_pod_hours,
                "met": d.shortfalls < h.shortfalls and d.idle_pod_hours <= h.idle_pod_hours,
            }
            for h in hpas
        }
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Output


def table(totals: dict[str, Totals]) -> str:
    head = (
        "| Policy | Shortfalls | % | in bursts | Idle pod-hours | Peak pods | Scale writes |\n"
        "|---|--:|--:|--:|--:|--:|--:|\n"
    )
    lines = [
        f"| {t.name} | {t.shortfalls} | {t.shortfall_percent:.2f} | {t.in_bursts} | "
        f"{t.idle_pod_hours:.1f} | {t.peak_pods} | {t.scale_writes} |"
        for t in totals.values()
    ]
    return head + "\n".join(lines) + "\n"


def _hpa_cell(cell: dict[str, bool]) -> str:
    if cell["met"]:
        return "yes"
    reasons = []
    if not cell["fewer_shortfalls"]:
        reasons.append("not fewer shortfalls")
    if not cell["no_more_idle"]:
        reasons.append("more pod-hours")
    return "no: " + ", ".join(reasons)


def goals_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    hpa_names = list(rows[0]["hpa"])
    head = "| Demand-based policy | vs best static N | like for like | " + " | ".join(
        f"vs {name}" for name in hpa_names
    )
    lines = [head + " |", "|---|---|---|" + "---|" * len(hpa_names)]
    for row in rows:
        static = row.get("static")
        if static is None:
            static_cell = "n/a"
        else:
            verdict = "yes" if static["met"] else "no"
            why = "" if static["shortfalls_ok"] else ", more shortfalls"
            static_cell = (
                f"{verdict} ({static['idle_saving_percent']:g}% fewer idle pod-hours than "
                f"{static['against']}{why})"
            )
        like = row.get("like_for_like")
        like_cell = (
            "no static N as good"
            if like is None
            else f"{like['idle_saving_percent']:g}% fewer than {like['against']}"
        )
        cells = [_hpa_cell(row["hpa"][name]) for name in hpa_names]
        lines.append(
            f"| {row['policy']} | {static_cell} | {like_cell} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], first: dict[str, Outcome], demand: Demand, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals = doc["policies"]
    best = doc["best_static"]
    wanted = [best] if best else []
    wanted += [n for n in first if n.startswith("HPA") and n in ("HPA busy 70%", "HPA busy 80%")]
    wanted += [n for n in first if totals[n]["kind"] in ("schedule", "demand")]
    if len(wanted) < 3:
        wanted = list(first)
    fig, axes = plt.subplots(len(wanted) + 1, 1, figsize=(12, 2.0 * (len(wanted) + 1)), sharex=True)
    hours = [s.t / 3600.0 for s in first[wanted[0]].samples]
    top = axes[0]
    rates = starts_per_hour(demand)
    top.bar(
        [t / 3600.0 for t, _ in rates],
        [r for _, r in rates],
        width=600 / 3600.0,
        align="edge",
        color="#bbbbbb",
        label="starts per hour",
    )
    top.plot(hours, [s.busy for s in first[wanted[0]].samples], color="black", label="busy pods")
    for burst in demand.bursts:
        top.axvline(burst / 3600.0, color="tab:red", alpha=0.4, linestyle=":")
    top.set_title(f"Demand: {demand.source} (dotted: bursts)", fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    for ax, name in zip(axes[1:], wanted, strict=True):
        outcome = first[name]
        ax.step(hours, [s.spare_ready for s in outcome.samples], where="post", label="Ready spares")
        ax.step(
            hours,
            [s.replicas for s in outcome.samples],
            where="post",
            alpha=0.6,
            label="replicas",
        )
        if outcome.shortfalls:
            ax.plot(
                [t / 3600.0 for t in outcome.shortfalls],
                [0] * len(outcome.shortfalls),
                "x",
                color="tab:red",
                markersize=8,
                zorder=5,
                label="shortfall",
            )
        ax.set_title(
            f"{name}: {len(outcome.shortfalls)} shortfalls, {outcome.idle_pod_hours:.0f} idle "
            f"pod-hours, {outcome.scale_writes} scale writes (this day)",
            fontsize=10,
        )
        ax.set_ylabel("pods")
        ax.set_ylim(bottom=-1, top=max(5, max(s.replicas for s in outcome.samples) + 3))
        ax.legend(loc="upper left", fontsize=8)
    start = demand.t0.astimezone(ZoneInfo(ZONE))
    axes[-1].set_xlabel(f"hours after {start:%Y-%m-%d %H:%M} ({ZONE})")
    axes[-1].set_xlim(0, demand.duration / 3600.0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def markdown(doc: dict[str, Any], totals: dict[str, Totals], image: str) -> str:
    rows = doc["goals"]
    met_static = [r["policy"] for r in rows if r.get("static", {}).get("met")]
    met_hpa = {r["policy"]: [h for h, cell in r["hpa"].items() if cell["met"]] for r in rows}
    lines = [
        "## Spare-pool policies on a simulated day",
        "",
        f"Generated by `{doc['command']}` on {doc['started']} ({doc['source']}; "
        f"{doc['recordings']} recordings, at most {doc['concurrent_peak']} at once on one day; "
        f"{doc['seconds']:.0f} s wall clock on a shared machine). Totals over the days.",
        "",
        table(totals),
        f"Best static N (fewest shortfalls, then cheapest): **{doc['best_static']}**.",
        "",
        "Goals, per demand-based policy: no more shortfalls than the best static N with at "
        "least 40% fewer idle pod-hours; fewer shortfalls than an HPA-style policy at no more "
        "idle pod-hours. *Like for like*: against the cheapest static N with no more "
        "shortfalls than the policy (not a goal, for scale).",
        "",
        goals_table(rows),
        "Against the best static N, met by: "
        + (", ".join(met_static) if met_static else "none")
        + ". Against an HPA-style target, met by: "
        + ("; ".join(f"{p} (vs {', '.join(h)})" for p, h in met_hpa.items() if h) or "none")
        + ".",
        "",
        f"![Ready spares over the first simulated day per policy, shortfalls marked]({image})",
        "",
    ]
    return "\n".join(lines)


def update_docs(text: str, docs: Path) -> None:
    generated = f"{BEGIN}\n{text}{END}"
    current = docs.read_text() if docs.exists() else ""
    if BEGIN in current and END in current:
        head, _, rest = current.partition(BEGIN)
        _, _, tail = rest.partition(END)
        docs.write_text(head + generated + tail)
    else:
        docs.write_text(current.rstrip("\n") + "\n\n" + generated + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.policy",
        description="Compare spare-pool policies on simulated days (see docs/performance.md).",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="half of one day, a few policies (for CI)"
    )
    parser.add_argument(
        "--seeds", default="1,2,3", help="one synthetic day per seed (default 1,2,3)"
    )
    parser.add_argument(
        "--replay",
        type=Path,
        action="append",
        default=[],
        metavar="CSV",
        help="a day of real recordings instead (start,end per line; repeatable)",
    )
    parser.add_argument(
        "--write-demand",
        type=Path,
        metavar="CSV",
        help="also write the first day's recordings in the replay format",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results are written")
    parser.add_argument("--docs", type=Path, default=DOCS, help=argparse.SUPPRESS)
    parser.add_argument("--no-docs", action="store_true", help="never touch docs/performance.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.replace(" ", "").split(",") if s]
    except ValueError:
        print(f"--seeds: {args.seeds!r} is not a list of integers", file=sys.stderr)
        return 2
    if not seeds:
        print("--seeds: give at least one seed", file=sys.stderr)
        return 2
    began = time.perf_counter()
    if args.replay:
        try:
            days = [replay(path) for path in args.replay]
        except (OSError, DemandFileError) as exc:
            print(f"--replay: {exc}", file=sys.stderr)
            return 2
    else:
        if args.smoke:  # half of the first day: the morning peak and a burst or two
            days = [synthetic_day(seeds[0], hours=12.0)]
        else:
            days = [synthetic_day(seed) for seed in seeds]
    if args.write_demand is not None:
        write_csv(days[0], args.write_demand)
        print(f"wrote {len(days[0].recordings)} recordings to {args.write_demand}")
    entries = policies(smoke=args.smoke)
    totals, first = run(days, entries, world=World(), seed=seeds[0])
    best = best_static(totals)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc: dict[str, Any] = {
        "mode": "smoke" if args.smoke else "full",
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "scripts/policy-bench.sh" + (" --smoke" if args.smoke else ""),
        "source": (
            "; ".join(d.source for d in days)
            if args.replay
            else f"{len(days)} synthetic day{'s' if len(days) > 1 else ''}, "
            + ("seeds " if len(days) > 1 else "seed ")
            + ", ".join(str(s) for s in seeds[: len(days)])
        ),
        "days": len(days),
        "recordings": sum(len(d.recordings) for d in days),
        "concurrent_peak": max(concurrent_peak(d.recordings) for d in days),
        "policies": {name: t.to_json() for name, t in totals.items()},
        "best_static": None if best is None else best.name,
    }
    doc["goals"] = goals(totals)
    doc["seconds"] = round(time.perf_counter() - began, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"policy-{stamp}.json").write_text(
        json.dumps(doc, indent=2, allow_nan=False) + "\n"
    )
    png = args.out / f"policy-{stamp}.png"
    plot(doc, first, days[0], png)
    print(table(totals))
    print(goals_table(doc["goals"]))
    print(f"results: {args.out / f'policy-{stamp}.json'}, plot: {png}")
    if not (args.smoke or args.replay or args.no_docs):
        image = args.docs.parent / "policy.png"
        image.write_bytes(png.read_bytes())
        update_docs(markdown(doc, totals, image.name), args.docs)
        print(f"updated {args.docs} and {image}")
    return 0 if all(math.isfinite(t.idle_pod_hours) for t in totals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
