"""Run the benchmarks: ``python -m bench.run [--smoke] [--only 1,2] [--controller-command CMD]``.

One control plane (etcd, kube-apiserver, kube-controller-manager) and one fake kubelet serve the
whole run; each figure gets fresh namespaces. Figure 4 (a whole recording, ten minutes by
default) runs in the background while the others run. Prints a table, writes the raw results
as JSON and a plot to ``--out`` (bench/results/ by default), and, after a complete full run,
rewrites the generated part of docs/performance.md. Exits non-zero if a figure could not be
measured (a missed goal is a result, not an error).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
import traceback
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from kubernetes_asyncio import client as k8s

from bench import burst, failover, memory, reconcile, report, resend, sweep, writes
from bench.harness import Bench, Impl, Scale, parse_impls
from bench.results import TITLES, FigureResult
from testbed.cluster import REPO
from testbed.observing import machine

RESULTS = REPO / "bench" / "results"
DOCS = REPO / "docs" / "performance.md"
ALL = (1, 2, 3, 4, 5, 6, 7)

T = TypeVar("T")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark the controller on a real local control plane (see "
        "docs/performance.md).",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny version of every figure (for CI)"
    )
    parser.add_argument("--only", default="", help="figures to run, e.g. 1,3 (5 implies 1 and 2)")
    parser.add_argument(
        "--controller-command",
        action="append",
        default=[],
        metavar="CMD",
        help="command that starts the controller under test (repeatable; default: "
        "python -m jibri_pod_controller); configured by the same environment variables",
    )
    parser.add_argument(
        "--controller-label",
        action="append",
        default=[],
        metavar="NAME",
        help="a name for each --controller-command, in the same order",
    )
    parser.add_argument(
        "--recording-minutes",
        type=float,
        default=None,
        help="length of figure 4's recording (default 10 in a full run, 10 seconds in a smoke run)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results are written")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="attach py-spy to the controller during figures 1, 2 and 6 (numbers are flagged "
        "and docs are not updated)",
    )
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument(
        "--update-docs",
        action="store_true",
        help="rewrite docs/performance.md even after a partial run",
    )
    docs.add_argument("--no-docs", action="store_true", help="never touch docs/performance.md")
    return parser.parse_args(argv)


def selected(only: str) -> list[int]:
    if not only.strip():
        return list(ALL)
    figures = {int(x) for x in only.replace(" ", "").split(",") if x}
    unknown = figures - set(ALL)
    if unknown:
        raise SystemExit(f"--only: no figure {sorted(unknown)}; figures are {ALL}")
    if 5 in figures:
        figures |= {1, 2}
    return sorted(figures)


def cpu_pressure() -> float | None:
    """Microseconds some task waited for a CPU, system-wide, so far (Linux PSI)."""
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some"):
                return float(line.rpartition("total=")[2])
    except (OSError, ValueError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    here = machine()
    return {
        "nproc": here.cores,
        "cpu_model": here.cpu,
        "memory_gib": round(here.memory_bytes / 2**30, 1),
        "python": here.python,
        "kernel": here.kernel,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


async def guarded(figure: int, impl: str, work: Awaitable[T]) -> T | FigureResult:
    try:
        return await work
    except Exception as exc:
        traceback.print_exc()
        return FigureResult(figure, impl, error=f"{type(exc).__name__}: {exc}"[:2000])


async def measure(
    args: argparse.Namespace, scale: Scale, impls: list[Impl], figures: list[int], workdir: Path
) -> tuple[dict[int, dict[str, FigureResult]], dict[str, Any]]:
    results: dict[int, dict[str, FigureResult]] = {f: {} for f in figures}
    context: dict[str, Any] = {}

    def note(figure: int, impl: Impl, outcome: FigureResult | Any) -> None:
        assert isinstance(outcome, FigureResult)
        results[figure][impl.label] = outcome
        state = "error" if outcome.error else "done"
        print(f"figure {figure} [{impl.label}]: {state}", flush=True)

    print(f"starting the control plane and the fake kubelet (work dir {workdir})", flush=True)
    bench = await Bench.open(workdir, scale, profile=args.profile)
    try:
        version = await k8s.VersionApi(bench.admin).get_code()
        context["kubernetes"] = version.git_version
        background: dict[str, asyncio.Task[Any]] = {}
        if 4 in figures:
            # Its set-up (a Deployment, a detach) is done before the other figures start, so
            # only its once-a-period resends overlap them.
            for impl in impls:
                print(f"figure 4 [{impl.label}]: starting a recording", flush=True)
                recording = asyncio.Event()
                task = asyncio.create_task(
                    guarded(4, impl.label, writes.run(bench, impl, recording))
                )
                background[impl.label] = task
                waiting = asyncio.create_task(recording.wait())
                await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
        for impl in impls:
            if 1 in figures:
                print(f"figure 1 [{impl.label}]: burst of {scale.burst_pods}", flush=True)
                note(1, impl, await guarded(1, impl.label, burst.run(bench, impl)))
            if 6 in figures:
                print(f"figure 6 [{impl.label}]: resend throughput", flush=True)
                note(6, impl, await guarded(6, impl.label, resend.run(bench, impl)))
            if 3 in figures:
                print(f"figure 3 [{impl.label}]: failover", flush=True)
                note(3, impl, await guarded(3, impl.label, failover.run(bench, impl)))
        if 2 in figures:
            print(f"figure 2: sweeps of {', '.join(map(str, scale.sweep_sizes))} pods", flush=True)
            swept = await guarded(2, "*", sweep.run(bench, impls))
            for impl in impls:
                if isinstance(swept, FigureResult):
                    note(2, impl, FigureResult(2, impl.label, error=swept.error))
                else:
                    note(2, impl, swept[impl.label])
        if 7 in figures:
            for impl in impls:
                print(
                    f"figure 7 [{impl.label}]: {scale.pool_count} JibriPools x "
                    f"{scale.pool_pods} pods",
                    flush=True,
                )
                note(7, impl, await guarded(7, impl.label, reconcile.run(bench, impl)))
        for impl in impls:
            if impl.label in background:
                print(f"figure 4 [{impl.label}]: waiting for the recording to end", flush=True)
                note(4, impl, await background[impl.label])
        if 5 in figures:
            for impl in impls:
                note(
                    5,
                    impl,
                    memory.derive(
                        impl.label, results[1].get(impl.label), results[2].get(impl.label)
                    ),
                )
    finally:
        print("stopping the control plane", flush=True)
        await bench.close()
    return results, context


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    figures = selected(args.only)
    minutes: float | None = args.recording_minutes
    scale = (
        Scale.tiny(recording_minutes=minutes)
        if args.smoke
        else Scale.full(recording_minutes=10.0 if minutes is None else minutes)
    )
    impls = parse_impls(args.controller_command, args.controller_label)
    started = time.monotonic()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out: Path = args.out.resolve()
    workdir = out / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    pressure = cpu_pressure()
    results, context = asyncio.run(measure(args, scale, impls, figures, workdir))
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    after = cpu_pressure()
    if pressure is not None and after is not None:
        # Share of the run's wall time in which at least one task waited for a CPU.
        share = (after - pressure) / 1e6 / (time.monotonic() - started)
        machine["cpu_pressure_some_pct"] = round(100 * share, 1)
    machine["kubernetes"] = context.get("kubernetes", "unknown")
    doc: dict[str, Any] = {
        "started": started_at,
        "mode": "smoke" if args.smoke else "full",
        "profiled": args.profile,
        "duration_s": round(time.monotonic() - started, 1),
        "command": "python -m bench.run " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine,
        "implementations": [
            {
                "label": i.label,
                "command": shlex.join(i.command),
                # This interpreter, by name: the docs must not show a path of this machine.
                "shown_as": shlex.join("python" if a == sys.executable else a for a in i.command),
            }
            for i in impls
        ],
        "figures": {
            str(f): {
                "title": TITLES[f],
                "results": {label: r.to_json() for label, r in results[f].items()},
            }
            for f in figures
        },
    }
    json_path = out / f"{stamp}.json"
    png_path = out / f"{stamp}.png"
    report.write_json(doc, json_path)
    report.plot(doc, png_path)
    print()
    print(report.table(doc))
    print(f"\nraw results: {json_path}\nplot: {png_path}\nlogs: {workdir}")
    errors = [
        f"figure {f} [{label}]: {r.error}"
        for f, by_impl in results.items()
        for label, r in by_impl.items()
        if r.error
    ]
    complete = figures == list(ALL) and not args.smoke and not args.profile and not errors
    if not args.no_docs and (complete or args.update_docs):
        report.update_docs(doc, png_path, DOCS)
        print(f"updated {DOCS.relative_to(REPO)}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
