"""Prometheus metrics, in one registry owned by the application (never the global one)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

PREFIX = "jibri_pod_controller_"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
_SWEEP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.info = Info(PREFIX + "build", "Version of the controller.", registry=r)
        self.webhooks = Counter(
            PREFIX + "webhooks_total",
            "Webhooks received, by kind (status, session), reported status and HTTP code.",
            ["kind", "status", "code"],
            registry=r,
        )
        self.webhook_rejections = Counter(
            PREFIX + "webhook_rejections_total",
            "Webhooks refused without any write, by reason.",
            ["reason"],
            registry=r,
        )
        self.actions = Counter(
            PREFIX + "actions_total",
            "Actions decided, by action (detach, delete, none), reason, source and result.",
            ["action", "reason", "source", "result"],
            registry=r,
        )
        self.api_errors = Counter(
            PREFIX + "api_errors_total",
            "Failed Kubernetes API calls, by operation and error kind.",
            ["operation", "kind"],
            registry=r,
        )
        self.detach_latency = Histogram(
            PREFIX + "detach_latency_seconds",
            "From a BUSY webhook's arrival to the API server's answer to the detach.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.sweep_duration = Histogram(
            PREFIX + "sweep_duration_seconds",
            "Duration of one full sweep (list, probe, act).",
            buckets=_SWEEP_BUCKETS,
            registry=r,
        )
        self.sweeps = Counter(
            PREFIX + "sweeps_total", "Sweeps, by result (ok, failed).", ["result"], registry=r
        )
        self.last_sweep = Gauge(
            PREFIX + "last_successful_sweep_timestamp_seconds",
            "Unix time of the last sweep that listed every Jibri pod.",
            registry=r,
        )
        self.probes = Counter(
            PREFIX + "pods_probed_total", "Health probes sent to Jibri pods.", registry=r
        )
        self.probe_failures = Counter(
            PREFIX + "probe_failures_total",
            "Health probes without a valid answer, by reason.",
            ["reason"],
            registry=r,
        )
        self.leader = Gauge(
            PREFIX + "leader", "1 while this replica holds the Lease and sweeps.", registry=r
        )
        self.leader_transitions = Counter(
            PREFIX + "leader_transitions_total",
            "Times this replica started or stopped leading, by direction.",
            ["direction"],
            registry=r,
        )
        self.lease_resignations = Counter(
            PREFIX + "lease_resignations_total",
            "Times this replica gave the Lease up because it could not do the leader's work, by "
            "reason (sweeper-failing: the sweep loop kept crashing; sweep-incomplete: its sweeps "
            "kept failing to list the Jibri pods).",
            ["reason"],
            registry=r,
        )
        self.sweeps_incomplete_in_a_row = Gauge(
            PREFIX + "sweeps_incomplete_in_a_row",
            "Sweeps of this leader in a row that could not list every Jibri pod (0 after a "
            "complete one).",
            registry=r,
        )
        self.jibri_pods = Gauge(
            PREFIX + "jibri_pods",
            "Jibri pods seen by the last sweep, by role (spare, busy) and reported status.",
            ["role", "reported"],
            registry=r,
        )
        self.ready = Gauge(
            PREFIX + "ready", "1 while the Kubernetes API answers this replica.", registry=r
        )
        self.events_failed = Counter(
            PREFIX + "events_failed_total",
            "Kubernetes Events that could not be recorded.",
            registry=r,
        )
        self.loop_restarts = Counter(
            PREFIX + "loop_restarts_total",
            "Background loops restarted after an unexpected failure, by loop.",
            ["loop"],
            registry=r,
        )
        self.permission_missing = Gauge(
            PREFIX + "permission_missing",
            "1 for each Kubernetes permission the Role does not grant, by permission and "
            "whether it is required (not ready) or optional (a feature lost).",
            ["permission", "required"],
            registry=r,
        )
        self.key_load_errors = Counter(
            PREFIX + "key_load_errors_total",
            "Webhook key files that could not be loaded (the previous keys were kept), by file.",
            ["file"],
            registry=r,
        )
        self.token_rejections = Counter(
            PREFIX + "token_rejections_total",
            "Webhook tokens refused (401), by reason.",
            ["reason"],
            registry=r,
        )
        self.detach_ineffective = Counter(
            PREFIX + "detach_ineffective_total",
            "Busy pods whose ReplicaSet selector still matches after the detach (it did not "
            "take the pod out of its Deployment), by where it was found (detach, startup).",
            ["where"],
            registry=r,
        )
        self.unresponsive_busy_pods = Gauge(
            PREFIX + "unresponsive_busy_pods",
            "Busy-labelled pods that are not Ready and whose Jibri does not answer, at the "
            "last sweep (see UNRESPONSIVE_BUSY_POD_SECONDS).",
            registry=r,
        )
        self.stuck_busy_pods = Gauge(
            PREFIX + "stuck_busy_pods",
            "Busy-labelled pods whose Jibri reports BUSY with no session ever ON for longer than "
            "STUCK_BUSY_SECONDS, at the last sweep (0 while detection is off).",
            registry=r,
        )
        self.pod_cache_synced = Gauge(
            PREFIX + "pod_cache_synced",
            "1 while the watch-fed pod cache is listed and its watch is live; 0 while webhooks "
            "read pods with a GET and sweeps list them.",
            registry=r,
        )
        self.address_waits = Counter(
            PREFIX + "webhook_address_waits_total",
            "Webhooks from a pod the cache holds without an address yet, which waited for the "
            "watch to bring it, by outcome (arrived, timed-out: then a GET).",
            ["outcome"],
            registry=r,
        )
