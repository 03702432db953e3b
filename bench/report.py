"""Turning a run's results into a table, a JSON file, a plot and docs/performance.md."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

BEGIN = "<!-- BEGIN GENERATED FIGURES: scripts/bench.sh rewrites everything up to the END line -->"
END = "<!-- END GENERATED FIGURES -->"


def _value(row: dict[str, Any]) -> str:
    value = row["value"]
    if value is None:
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"
    return f"{text} {row['unit']}".strip()


def _goal(row: dict[str, Any]) -> str:
    goal = row["goal"]
    if goal is None:
        return ""
    target = goal["target"]
    text = f"{target:,.0f}" if abs(target) >= 1000 else f"{target:g}"
    return f"{goal['op']} {text} {row['unit']}".strip()


def _verdict(row: dict[str, Any]) -> str:
    if row["pass"] is None:
        return ""
    return "pass" if row["pass"] else "MISS"


def _labels(doc: dict[str, Any]) -> list[str]:
    return [i["label"] for i in doc["implementations"]]


def _rows(doc: dict[str, Any], *, headline_only: bool) -> list[list[str]]:
    """One line per metric: figure, metric, goal, then value and verdict per implementation."""
    labels = _labels(doc)
    lines: list[list[str]] = []
    for number, figure in doc["figures"].items():
        results = figure["results"]
        metrics: list[str] = []
        for label in labels:
            for row in (results.get(label) or {}).get("rows", []):
                if row["metric"] not in metrics and (row["goal"] or not headline_only):
                    metrics.append(row["metric"])
        if not metrics:
            metrics = ["(no result)"]
        for index, metric in enumerate(metrics):
            line = [f"{number}. {figure['title']}" if index == 0 else "", metric, ""]
            for label in labels:
                result = results.get(label) or {}
                row = next((r for r in result.get("rows", []) if r["metric"] == metric), None)
                if row is None:
                    line += ["error" if result.get("error") else "", ""]
                    continue
                line[2] = line[2] or _goal(row)
                line += [_value(row), _verdict(row)]
            lines.append(line)
    return lines


def table(doc: dict[str, Any]) -> str:
    labels = _labels(doc)
    header = ["figure", "metric", "goal"]
    for label in labels:
        header += [label if len(labels) > 1 else "value", ""]
    lines = [header, *_rows(doc, headline_only=False)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for n, line in enumerate(lines):
        text.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    machine = doc["machine"]
    text.append("")
    text.append(
        f"{doc['mode']} run, {doc['duration_s']:.0f} s; {machine['nproc']} CPUs "
        f"({machine['cpu_model']}), Python {machine['python']}, "
        f"Kubernetes {machine.get('kubernetes', '?')}; load average "
        f"{machine['load_average_start'][0]} at start, {machine['load_average_end'][0]} at end"
        + (
            f"; some task waited for a CPU {machine['cpu_pressure_some_pct']}% of the time"
            if "cpu_pressure_some_pct" in machine
            else ""
        )
    )
    for number, figure in doc["figures"].items():
        for label, result in figure["results"].items():
            for item in result.get("notes") or ():
                text.append(f"note: figure {number} [{label}]: {item}")
            if result.get("error"):
                text.append(f"error: figure {number} [{label}]: {result['error']}")
    return "\n".join(text)


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------------------------
# The plot


def _details(doc: dict[str, Any], figure: int, label: str) -> dict[str, Any]:
    result = doc["figures"].get(str(figure), {}).get("results", {}).get(label) or {}
    details: dict[str, Any] = result.get("details") or {}
    return details


def _headline(doc: dict[str, Any], figure: int, label: str) -> list[dict[str, Any]]:
    result = doc["figures"].get(str(figure), {}).get("results", {}).get(label) or {}
    return [r for r in result.get("rows", []) if r["value"] is not None]


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = _labels(doc)
    fig, axes = plt.subplots(2, 3, figsize=(16, 9.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    flat = list(axes.flat)
    for ax, (number, title) in zip(flat, enumerate(_TITLES, start=1), strict=True):
        ax.set_title(f"{number}. {title}", fontsize=11)
        if str(number) not in doc["figures"]:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
    _plot_burst(flat[0], doc, labels, colors)
    _plot_sweep(flat[1], doc, labels, colors)
    _plot_bars(flat[2], doc, labels, colors, 3, "seconds", {0: 17, 1: 3})
    _plot_bars(flat[3], doc, labels, colors, 4, "count", {0: 2}, first=3, goals_only=False)
    _plot_memory(flat[4], doc, labels, colors)
    _plot_resend(flat[5], doc, labels, colors)
    mode = doc["mode"] + (", profiled" if doc.get("profiled") else "")
    machine = doc["machine"]
    fig.suptitle(
        f"jibri-pod-controller benchmarks ({mode}, {doc['started']}; {machine['nproc']} CPUs "
        f"{machine['cpu_model']}, Python {machine['python']}, Kubernetes "
        f"{machine.get('kubernetes', '?')})",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


_TITLES = (
    "Detach latency (send to watch)",
    "Sweep time and CPU vs pods",
    "Failover: standby's first sweep",
    "API writes per recording",
    "Peak RSS",
    "Resend throughput (1 core)",
)


def _plot_burst(ax: Any, doc: dict[str, Any], labels: list[str], colors: list[str]) -> None:
    if "1" not in doc["figures"]:
        return
    for index, label in enumerate(labels):
        details = _details(doc, 1, label)
        for key, style in (("controller", "-"), ("apiserver", ":")):
            values = sorted(x * 1000 for x in (details.get(key) or {}).get("latencies_s", []))
            if not values:
                continue
            share = [(i + 1) / len(values) for i in range(len(values))]
            name = "API server PATCH" if key == "apiserver" else f"{label} webhook"
            ax.plot(values, share, style, color=colors[index % len(colors)], label=name)
    ax.set_xlabel("ms from send until the watch shows the labels")
    ax.set_ylabel("share of pods")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _plot_sweep(ax: Any, doc: dict[str, Any], labels: list[str], colors: list[str]) -> None:
    if "2" not in doc["figures"]:
        return
    for index, label in enumerate(labels):
        sizes = _details(doc, 2, label).get("sizes") or []
        xs = [s["size"] for s in sizes]
        color = colors[index % len(colors)]
        ax.plot(xs, [s["seconds"] for s in sizes], "o-", color=color, label=f"{label} time")
        ax.plot(xs, [s["cpu_s"] for s in sizes], "s--", color=color, label=f"{label} CPU")
    ax.axhline(3, color="grey", linestyle=":", label="goal at 5,000: 3 s")
    ax.set_xlabel("Jibri pods (2% black-holed, 1 s probe timeout)")
    ax.set_ylabel("seconds per sweep")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _plot_bars(
    ax: Any,
    doc: dict[str, Any],
    labels: list[str],
    colors: list[str],
    figure: int,
    ylabel: str,
    goals: dict[int, float],
    first: int = 2,
    goals_only: bool = True,
) -> None:
    if str(figure) not in doc["figures"]:
        return
    width = 0.8 / max(1, len(labels))
    names: list[str] = []
    for index, label in enumerate(labels):
        rows = [r for r in _headline(doc, figure, label) if r["goal"] or not goals_only][:first]
        names = [r["metric"] for r in rows] or names
        xs = [i + index * width for i in range(len(rows))]
        bars = ax.bar(
            xs, [r["value"] for r in rows], width, color=colors[index % len(colors)], label=label
        )
        for bar, row in zip(bars, rows, strict=True):
            ax.annotate(
                f"{row['value']:g}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    for position, goal in goals.items():
        if position < len(names):
            left = position - 0.4 + (0.8 - width) / 2 if len(labels) > 1 else position - 0.4
            ax.hlines(goal, left, left + 0.8, colors="grey", linestyles=":")
    ax.set_xticks([i + width * (len(labels) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels([_wrap(n) for n in names], fontsize=8)
    ax.set_ylabel(ylabel + " (dotted: goal)")
    if len(labels) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def _plot_resend(ax: Any, doc: dict[str, Any], labels: list[str], colors: list[str]) -> None:
    """Answers per second (left axis) and p99 latency (right axis), each with its goal."""
    if "6" not in doc["figures"]:
        return
    right = ax.twinx()
    width = 0.8 / max(1, len(labels))
    for index, label in enumerate(labels):
        rows = [r for r in _headline(doc, 6, label) if r["goal"] is not None][:2]
        for position, (axis, row) in enumerate(zip((ax, right), rows, strict=False)):
            x = position + index * width
            axis.bar(x, row["value"], width, color=colors[index % len(colors)], label=label)
            axis.annotate(f"{row['value']:g}", (x, row["value"]), ha="center", va="bottom")
    ax.axhline(2000, xmax=0.5, color="grey", linestyle=":")
    right.axhline(10, xmin=0.5, color="grey", linestyle=":")
    ax.set_xticks([i + width * (len(labels) - 1) / 2 for i in range(2)])
    ax.set_xticklabels(
        ["answered resends\nper second (left)", "open-loop p99 at\n2,000/s, ms (right)"]
    )
    ax.set_ylabel("per second (dotted: goal 2,000)")
    right.set_ylabel("ms (dotted: goal 10)")
    ax.set_ylim(0, max(2200, ax.get_ylim()[1]))
    right.set_ylim(0, max(11, right.get_ylim()[1]))
    if len(labels) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def _plot_memory(ax: Any, doc: dict[str, Any], labels: list[str], colors: list[str]) -> None:
    if "5" not in doc["figures"]:
        return
    width = 0.8 / max(1, len(labels))
    windows: list[str] = []
    for index, label in enumerate(labels):
        rss: dict[str, float] = _details(doc, 5, label).get("rss_mib") or {}
        windows = list(rss) or windows
        xs = [i + index * width for i in range(len(rss))]
        ax.bar(xs, list(rss.values()), width, color=colors[index % len(colors)], label=label)
        for x, value in zip(xs, rss.values(), strict=True):
            ax.annotate(f"{value:g}", (x, value), ha="center", va="bottom", fontsize=8)
    ax.axhline(96, color="grey", linestyle=":")
    ax.set_xticks([i + width * (len(labels) - 1) / 2 for i in range(len(windows))])
    ax.set_xticklabels([_wrap(w) for w in windows], fontsize=8)
    ax.set_ylabel("MiB (dotted: goal 96)")
    if len(labels) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def _wrap(text: str, width: int = 22) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# docs/performance.md


def markdown(doc: dict[str, Any], image: str) -> str:
    labels = _labels(doc)
    machine = doc["machine"]
    header = "| Figure | Metric | Goal |"
    rule = "|---|---|---|"
    for label in labels:
        header += f" {label if len(labels) > 1 else 'Value'} | |"
        rule += "---:|---|"
    lines = [
        "## Latest figures",
        "",
        f"Measured {doc['started'].replace('T', ' ').replace('+00:00', ' UTC')} by "
        f"`scripts/bench.sh` ({doc['mode']} run, "
        f"{doc['duration_s'] / 60:.1f} minutes in all).",
        "",
        f"- Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB, Linux {machine['kernel']}, Python {machine['python']}; "
        f"Kubernetes {machine.get('kubernetes', '?')} (etcd, kube-apiserver and "
        "kube-controller-manager on the same machine, with the fake kubelet and every simulated "
        "Jibri).",
        f"- Load average (1 min) {machine['load_average_start'][0]} at the start and "
        f"{machine['load_average_end'][0]} at the end"
        + (
            f"; some task was waiting for a CPU {machine['cpu_pressure_some_pct']}% of the time "
            "(Linux PSI)"
            if "cpu_pressure_some_pct" in machine
            else ""
        )
        + ". Other work on the machine makes single runs noisy; figures are medians where "
        "repeats are cheap.",
    ]
    for impl in doc["implementations"]:
        lines.append(f"- Controller `{impl['label']}`: `{impl.get('shown_as', impl['command'])}`.")
    lines += ["", header, rule]
    for row in _rows(doc, headline_only=False):
        figure, metric, goal, *cells = row
        lines.append(f"| {figure} | {metric} | {goal} | " + " | ".join(cells) + " |")
    notes = [
        f"- Figure {number}{f' [{label}]' if len(labels) > 1 else ''}: {item}"
        for number, figure in doc["figures"].items()
        for label, result in figure["results"].items()
        for item in result.get("notes") or ()
    ]
    if notes:
        lines += ["", *notes]
    lines += ["", f"![The figures of this run]({image})", ""]
    return "\n".join(lines)


def update_docs(doc: dict[str, Any], png: Path, docs: Path) -> None:
    """Rewrite the generated section of ``docs`` (and its plot); keep everything else."""
    image = docs.with_suffix(".png")
    shutil.copyfile(png, image)
    generated = f"{BEGIN}\n{markdown(doc, image.name)}{END}"
    text = docs.read_text() if docs.exists() else "# Performance\n\n"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + generated + tail
    else:
        text = text.rstrip("\n") + "\n\n" + generated + "\n"
    docs.write_text(text)
