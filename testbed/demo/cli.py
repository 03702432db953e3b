"""The demo's command line."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from testbed.demo.plan import (
    DEFAULT_DURATION,
    DEFAULT_OUT,
    FAST_DURATION,
    REAL_DEFAULT_DURATION,
    REAL_EVERY,
)
from testbed.demo.scenario import Demo, Options


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="scripts/demo.sh",
        description=(
            "Run the controller from deploy/ on a local control plane with simulated Jibris, "
            "play a scripted day of recordings, and draw what happened."
        ),
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"length of the scenario in seconds (default {DEFAULT_DURATION:g}; "
        f"{FAST_DURATION:g} with --fast)",
    )
    parser.add_argument("--fast", action="store_true", help="a shorter run, as the tests use")
    parser.add_argument(
        "--real-jibri",
        action="store_true",
        help="real Jibris built from source (scripts/build-jibri.sh) instead of simulated ones: "
        f"a recording every {REAL_EVERY:g} s, none crashes (default duration "
        f"{REAL_DEFAULT_DURATION:g} s; needs root, Chromium and nftables)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the scenario (default 7)")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="where to write the timeline PNG (default out/demo-timeline.png)",
    )
    args = parser.parse_args(argv)
    duration = args.duration
    if duration is None:
        fast = FAST_DURATION if args.fast else DEFAULT_DURATION
        duration = REAL_DEFAULT_DURATION if args.real_jibri and not args.fast else fast
    least = 3 * REAL_EVERY if args.real_jibri else 20
    if duration < least:
        parser.error(f"--duration must be at least {least:g} seconds")
    return Options(
        duration=duration, seed=args.seed, out=args.out.resolve(), real_jibri=args.real_jibri
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    # Errors from the testbed (kubelet, simulated Jibris) only; the controllers' logs are read
    # and summarized above.
    logging.basicConfig(level=logging.ERROR, format="! %(name)s: %(message)s")
    logging.getLogger("testbed.demo").setLevel(logging.WARNING)
    return Demo(options).run()
