"""What a chaos run is made of: its names, its fault kinds and Jibri fates, its JibriPools, and
its sizes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NAMESPACE = "chaos"
REPLICAS = ("controller-a", "controller-b", "controller-c")
ISSUER, AUDIENCE, KID = "jibri-chaos", "jibri-pod-controller", "chaos-key-1"
LEASE_NAME = "jibri-pod-controller-lease"
BYSTANDER = "web-frontend"
API_KINDS = (
    "proxy-latency",
    "proxy-throttle-429",
    "proxy-error-500",
    "proxy-error-503",
    "proxy-reset",
    "proxy-blackhole",
    "proxy-outage",
    "proxy-compress",
    "apiserver-restart",
    "etcd-restart",
)
CONTROLLER_KINDS = ("controller-sigkill", "controller-sigterm", "controller-sigstop")
FATES = (
    "lost-busy",
    "lost-expired",
    "duplicated",
    "reordered",
    "crash",
    "health-blackhole",
    "health-hang",
    "health-garbage",
    "health-huge",
    "resend-died",
)
FORGERIES = ("wrong-source", "wrong-token", "other-pod", "non-jibri", "busy-for-spare")
OPERATOR_KINDS = ("jibri-rollout", "jibri-pod-deleted")
GRACE_SECONDS = 120
"""The Jibri pods' terminationGracePeriodSeconds: above the longest recording of a run."""


@dataclass(frozen=True)
class ChaosPool:
    """A JibriPool of the run and the Deployment it sizes (both named ``name``)."""

    name: str
    share: float
    """The share of the recordings that start on this pool's spares."""
    closes_on_odd_minutes: bool
    """Its schedule window closes at the start of odd (else even) minutes: a scale-down."""
    spec: Mapping[str, Any]


POOL_PERIOD = 2
"""POOL_RECONCILE_PERIOD of the replicas in these runs."""
SCALE_DOWN_DELAY = 5
POOLS = (
    ChaosPool(
        "pool-day",
        share=0.2,
        closes_on_odd_minutes=True,
        spec={
            "minSpare": 1,
            "maxSpare": 5,
            "maxTotal": 8,
            "scaleDownDelaySeconds": SCALE_DOWN_DELAY,
            "schedule": [{"start": "*/2 * * * *", "durationMinutes": 1, "minSpare": 4}],
        },
    ),
    ChaosPool(
        "pool-demand",
        share=0.2,
        closes_on_odd_minutes=False,
        spec={
            "minSpare": 1,
            "maxSpare": 6,
            "maxTotal": 8,
            "scaleDownDelaySeconds": SCALE_DOWN_DELAY,
            "demand": {"shortfallProbability": 0.05, "windowSeconds": 60, "startupSeconds": 2},
            "schedule": [{"start": "1-59/2 * * * *", "durationMinutes": 1, "minSpare": 3}],
        },
    ),
)
HAND = "hand"
"""The group of the Deployment whose replicas are set by hand."""


@dataclass(frozen=True)
class Size:
    recordings: int
    workload_seconds: float
    spares: int
    recording_seconds: tuple[float, float]
    fault_seconds: tuple[float, float]
    """How long one proxy fault or outage lasts."""
    fault_gap: tuple[float, float]
    """Quiet time between two faults of a stream."""
    recovery_seconds: float
    lease: tuple[int, int, int] = (8, 5, 1)
    """LEASE_DURATION, LEASE_RENEW_DEADLINE, LEASE_RETRY_PERIOD."""
    sweep_interval: int = 3
    status_period: float = 8.0
    forge_every: float = 0.5
    burst_gap: tuple[float, float] = (80, 120)
    """Between two bursts of recordings that take a pool to its budget."""
    operator_gap: tuple[float, float] = (60, 100)
    """Between two of the operator's rollouts or deletes of a recording pod."""


SIZES = {
    # Spares enough that the pod lists exceed 128 KB (kube-apiserver then compresses them when
    # asked to: the proxy-compress fault) and fill most of a list page.
    "ci": Size(
        recordings=70,
        workload_seconds=75,
        spares=55,
        recording_seconds=(8, 22),
        fault_seconds=(3, 6),
        fault_gap=(0.5, 2),
        recovery_seconds=60,
        burst_gap=(40, 50),
        operator_gap=(15, 25),
    ),
    "full": Size(
        recordings=560,
        workload_seconds=660,
        spares=60,
        recording_seconds=(15, 45),
        fault_seconds=(4, 12),
        fault_gap=(3, 10),
        recovery_seconds=90,
    ),
}
