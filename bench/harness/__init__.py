"""The benchmarks' side of the testbed: the bench (one control plane and one fake kubelet
process for the whole run, a fresh namespace per figure, controllers started from a command
line with their restricted identity), what it measures and at which sizes, and what observes
the controller and the pods from outside.

Everything is measured from outside the controller process, so another implementation of the
same contract (environment variables, webhook paths, metrics) can be measured the same way.
"""

from bench.harness.bench import (
    JIBRI_PORT,
    MERGE_PATCH,
    MIB,
    START_BODY,
    START_SERVICE,
    Bench,
    PodInfo,
    detach_like_patch,
    jibri_sessions,
    read_raw,
    status_body,
)
from bench.harness.observing import PodWatch, Sampler, SweepTracker, run_queue_wait
from bench.harness.scale import Impl, Scale, parse_impls

__all__ = [
    "JIBRI_PORT",
    "MERGE_PATCH",
    "MIB",
    "START_BODY",
    "START_SERVICE",
    "Bench",
    "Impl",
    "PodInfo",
    "PodWatch",
    "Sampler",
    "Scale",
    "SweepTracker",
    "detach_like_patch",
    "jibri_sessions",
    "parse_impls",
    "read_raw",
    "run_queue_wait",
    "status_body",
]
