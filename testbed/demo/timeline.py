"""The demo's timeline: the pods over time, and below, what the scenario and the controllers
did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from testbed.demo.outcome import Action, Outcome, Sample
from testbed.demo.plan import SPARES

WEBHOOK_COLOR, SWEEP_COLOR = "#1f6fb4", "#d62728"
SPARE_COLOR, BUSY_COLOR, TOTAL_COLOR = "#2ca02c", "#ff7f0e", "#7f7f7f"
LOST_COLOR = "#9467bd"


def write_timeline(path: Path, outcome: Outcome, *, end: float, title: str) -> None:
    """Spare, busy and total pods over time; below, every request the scenario made, every
    detach and delete the controllers made, and every sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    samples = outcome.samples or [Sample(0.0, 0, 0, 0)]
    times = [s.t for s in samples] + [max(end, samples[-1].t)]

    def series(values: list[int]) -> list[int]:
        return [*values, values[-1]]

    fig = plt.figure(figsize=(12, 7.5), dpi=110)
    grid = fig.add_gridspec(2, 1, height_ratios=[3, 1.6], hspace=0.06)
    top = fig.add_subplot(grid[0])
    bottom = fig.add_subplot(grid[1], sharex=top)

    # Pods over time.
    if outcome.ramp_done is not None:
        top.axvspan(0, outcome.ramp_done, color="#000000", alpha=0.07, lw=0, label="ramp-up")
    top.axhline(SPARES, color=SPARE_COLOR, ls=":", lw=1.2, label=f"target: {SPARES} spares")
    top.step(
        times,
        series([s.total for s in samples]),
        where="post",
        color=TOTAL_COLOR,
        lw=1.2,
        ls="--",
        label="all Jibri pods",
    )
    top.step(
        times,
        series([s.busy for s in samples]),
        where="post",
        color=BUSY_COLOR,
        lw=2,
        label="busy: detached, recording or waiting for deletion",
    )
    top.step(
        times,
        series([s.spare for s in samples]),
        where="post",
        color=SPARE_COLOR,
        lw=2.4,
        label="spare: idle-labelled and Ready",
    )
    highest = max(s.total for s in samples)
    special = [m for m in outcome.marks if m.kind in ("lost", "crash")]
    for i, mark in enumerate(special):
        lost = mark.kind == "lost"
        color = LOST_COLOR if lost else SWEEP_COLOR
        text = "EXPIRED webhook lost" if lost else "busy Jibri crashed"
        top.axvline(mark.t, color=color, ls="-.", lw=1, alpha=0.8)
        # Text away from the nearer edge; a label close to the previous one goes lower.
        left = mark.t > 0.55 * times[-1]
        close = i > 0 and abs(mark.t - special[i - 1].t) < 0.25 * times[-1]
        top.annotate(
            f"{text} ({mark.recording})",
            xy=(mark.t, highest + 1.6),
            xytext=(-5 if left else 5, -14 if close else 0),
            textcoords="offset points",
            ha="right" if left else "left",
            va="center",
            fontsize=8,
            color=color,
        )
    top.set_ylim(0, highest + 2)
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_ylabel("pods")
    top.set_title(title, pad=26)
    top.grid(True, axis="y", alpha=0.3)
    top.legend(
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=5,
        fontsize=8,
        frameon=False,
        handlelength=2.5,
    )
    top.tick_params(labelbottom=False)

    # What happened, one row per kind.
    rows = {
        "recording starts": 4,
        "detaches": 3,
        "recording ends": 2,
        "deletes": 1,
        "sweeps (Lease holder)": 0,
    }

    def row(name: str, ts: list[float], **style: Any) -> None:
        bottom.scatter(ts, [rows[name]] * len(ts), zorder=3, **style)

    row(
        "recording starts",
        [m.t for m in outcome.marks if m.kind == "start"],
        marker="|",
        s=170,
        color="black",
    )
    row(
        "recording ends",
        [m.t for m in outcome.marks if m.kind == "stop"],
        marker="|",
        s=170,
        color="black",
    )
    row(
        "recording ends",
        [m.t for m in outcome.marks if m.kind == "lost"],
        marker="o",
        s=55,
        color=LOST_COLOR,
    )
    row(
        "recording ends",
        [m.t for m in outcome.marks if m.kind == "crash"],
        marker="X",
        s=70,
        color=SWEEP_COLOR,
    )
    done = [a for a in outcome.actions if a.result == "done"]
    for action, name, marker in (("detach", "detaches", "^"), ("delete", "deletes", "v")):
        for source, color in (("webhook", WEBHOOK_COLOR), ("sweep", SWEEP_COLOR)):
            ts = [a.t for a in done if a.action == action and a.source == source]
            row(name, ts, marker=marker, s=60, color=color, edgecolors="black", linewidths=0.4)
    # Name the rule behind each sweep action; actions of one sweep are stacked.
    labelled: list[Action] = []
    for a in sorted((a for a in done if a.source == "sweep"), key=lambda a: a.t):
        stack = sum(b.action == a.action and a.t - b.t < 1.0 for b in labelled)
        labelled.append(a)
        bottom.annotate(
            a.reason,
            xy=(a.t, rows["deletes" if a.action == "delete" else "detaches"]),
            xytext=(7, -12 - 9 * stack),
            textcoords="offset points",
            fontsize=7,
            va="center",
            color=SWEEP_COLOR,
        )
    row("sweeps (Lease holder)", outcome.sweeps, marker="o", s=12, color=TOTAL_COLOR)
    bottom.set_yticks(list(rows.values()), list(rows.keys()), fontsize=8)
    bottom.set_ylim(-0.7, 4.7)
    bottom.grid(True, axis="x", alpha=0.3)
    bottom.set_xlim(0, times[-1])
    bottom.set_xlabel("seconds since the Jibri Deployment was created")
    legend = [
        Line2D([], [], ls="", marker="^", color="#bbbbbb", mec="black", mew=0.4, label="detach"),
        Line2D([], [], ls="", marker="v", color="#bbbbbb", mec="black", mew=0.4, label="delete"),
        Patch(color=WEBHOOK_COLOR, label="via webhook"),
        Patch(color=SWEEP_COLOR, label="via sweep"),
        Line2D([], [], ls="", marker="|", color="black", ms=10, label="startService / stopService"),
        Line2D([], [], ls="", marker="o", color=LOST_COLOR, label="stopService, webhook lost"),
        Line2D([], [], ls="", marker="X", color=SWEEP_COLOR, label="Jibri crash"),
    ]
    bottom.legend(
        handles=legend,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.3),
        ncol=7,
        fontsize=8,
        frameon=False,
    )

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
