"""The chaos run's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import testbed.chaos
from testbed.chaos.plan import SIZES
from testbed.chaos.report import write_docs
from testbed.chaos.runner import run
from testbed.chaoscheck import events_around
from testbed.cluster import REPO


def main(argv: Sequence[str] | None = None) -> int:
    # The package's docstring, whose first line says what the command does.
    description = (testbed.chaos.__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="scripts/chaos.sh", description=description)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--out", type=Path, default=None, help="default: out/chaos/seed-N")
    parser.add_argument(
        "--write-docs", action="store_true", help="record the run in docs/reliability.*"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    out = args.out or REPO / "out" / "chaos" / f"seed-{seed}"
    print(f"seed {seed} (reproduce with --seed {seed} --size {args.size})", flush=True)

    def say(text: str) -> None:
        print(f"{datetime.now().strftime('%H:%M:%S')} {text}", flush=True)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    # A Jibri logs each webhook that fails; under these faults that is most of them.
    logging.getLogger("testbed.simjibri").setLevel(logging.ERROR)
    report, history, result = asyncio.run(run(seed, SIZES[args.size], out, say=say))
    print(json.dumps(result, indent=2))
    if args.write_docs:
        write_docs(result)
    if report.ok:
        print(f"seed {seed}: no violations; history and report in {out}")
        return 0
    print(f"seed {seed}: {len(report.violations)} violations:")
    for violation in report.violations[:20]:
        print(f"\n[{violation.invariant}] {violation.pod}: {violation.message}")
        for line in events_around(history, t=violation.t, pod=violation.pod)[-30:]:
            print(f"    {line}")
    print(f"\nseed {seed}: see {out}")
    return 1
