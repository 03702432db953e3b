"""What is measured, and how much of it: the implementations under test and the sizes of every
figure (full, or a smoke run of seconds)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.cluster import DEFAULT_COMMAND


@dataclass(frozen=True)
class Impl:
    """A controller implementation under test: a label and the command that starts it."""

    label: str
    command: tuple[str, ...]


def parse_impls(commands: Sequence[str], labels: Sequence[str]) -> list[Impl]:
    """One `Impl` per ``--controller-command``; ``python``/``python3`` means this interpreter.

    By default, this controller from its own environment (`testbed.cluster.DEFAULT_COMMAND`):
    runtime dependencies only, as in the image."""
    if not commands:
        commands = [shlex.join(DEFAULT_COMMAND)]
        labels = labels or ["jibri-pod-controller"]
    impls: list[Impl] = []
    for index, text in enumerate(commands):
        argv = shlex.split(text)
        if not argv:
            raise ValueError("--controller-command: empty command")
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        if index < len(labels):
            label = labels[index]
        elif argv[1:3] == ["-m", "jibri_pod_controller"]:
            label = "jibri-pod-controller"
        else:
            label = Path(argv[0]).name
        if label in {i.label for i in impls}:
            label = f"{label}-{index + 1}"
        impls.append(Impl(label=label, command=tuple(argv)))
    return impls


@dataclass(frozen=True)
class Scale:
    """The sizes of every figure: full (what the goals are about) or smoke (seconds, for CI)."""

    smoke: bool
    burst_pods: int
    burst_rounds: int
    burst_timeout: float
    sweep_sizes: tuple[int, ...]
    sweep_samples: int
    """Sweeps kept per size (after one discarded warm-up sweep)."""
    blackhole_every: int
    failover_repeats: int
    lease_env: Mapping[str, str]
    recording_seconds: float
    status_period: float
    resend_pods: int
    resend_warmup: float
    resend_seconds: float
    resend_concurrency: int
    open_loop_seconds: float
    """Seconds counted at each offered rate of figure 6's open loop (after its warm-up)."""
    pool_count: int
    """Figure 7: JibriPools (each with a Deployment of ``pool_pods``)."""
    pool_pods: int
    pool_idle_seconds: float
    pool_steady_seconds: float
    pool_burst: int
    """Recordings started across the pools at once."""
    pool_settle_seconds: float
    """Wait after every pool has written its status, before the steady window."""

    @classmethod
    def full(cls, *, recording_minutes: float) -> Scale:
        return cls(
            smoke=False,
            burst_pods=200,
            burst_rounds=5,
            burst_timeout=30.0,
            sweep_sizes=(500, 1000, 2000, 5000),
            sweep_samples=3,
            blackhole_every=50,
            failover_repeats=3,
            lease_env={},
            recording_seconds=recording_minutes * 60,
            status_period=60.0,
            resend_pods=200,
            resend_warmup=3.0,
            resend_seconds=15.0,
            resend_concurrency=32,
            open_loop_seconds=10.0,
            pool_count=20,
            pool_pods=250,
            pool_idle_seconds=60.0,
            pool_steady_seconds=180.0,
            pool_burst=100,
            pool_settle_seconds=11.0,
        )

    @classmethod
    def tiny(cls, *, recording_minutes: float | None = None) -> Scale:
        return cls(
            smoke=True,
            burst_pods=20,
            burst_rounds=1,
            burst_timeout=15.0,
            sweep_sizes=(50, 100),
            sweep_samples=1,
            blackhole_every=50,
            failover_repeats=1,
            # Short lease timings, so a takeover after SIGKILL takes seconds, not 15.
            lease_env={
                "LEASE_DURATION": "3",
                "LEASE_RENEW_DEADLINE": "2",
                "LEASE_RETRY_PERIOD": "0.5",
            },
            recording_seconds=10.0 if recording_minutes is None else recording_minutes * 60,
            status_period=3.0,
            resend_pods=20,
            resend_warmup=0.5,
            resend_seconds=2.0,
            resend_concurrency=32,
            open_loop_seconds=1.0,
            pool_count=2,
            pool_pods=10,
            pool_idle_seconds=3.0,
            pool_steady_seconds=5.0,
            pool_burst=4,
            pool_settle_seconds=2.0,
        )
