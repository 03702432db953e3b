"""Which Kubernetes permissions the controller needs, and what is lost without the others.

A pure table. *Required* permissions gate readiness: without them the controller cannot do
its job (read, detach and delete Jibri pods, hold the Lease). *Optional* ones only make it
better; each names what is lost without it, so a Role like the original tool's (pods
get/list/patch/delete and the Lease, no watch, no events) runs a working, ready controller
that says once, at start-up, what it does without. `assess` turns the answers of the access
reviews into that verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Feature(StrEnum):
    """What an optional permission enables; the code asks `Assessment.has` by feature."""

    WATCH = "watch"
    EVENTS = "events"
    OWNER_CHECK = "owner-check"
    POOLS = "pools"


@dataclass(frozen=True)
class Permission:
    verb: str
    resource: str
    group: str = ""
    name: str = ""

    def __str__(self) -> str:
        target = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {target}" + (f"/{self.name}" if self.name else "")


@dataclass(frozen=True)
class OptionalPermission:
    permission: Permission
    feature: Feature
    lost: str
    """What the controller does without it, for the start-up log line and docs/security.md."""


def required_permissions(*, lease_name: str) -> tuple[Permission, ...]:
    return (
        Permission("get", "pods"),
        Permission("list", "pods"),
        Permission("patch", "pods"),
        Permission("delete", "pods"),
        Permission("create", "leases", "coordination.k8s.io"),
        Permission("get", "leases", "coordination.k8s.io", lease_name),
        Permission("update", "leases", "coordination.k8s.io", lease_name),
    )


OPTIONAL_PERMISSIONS: tuple[OptionalPermission, ...] = (
    OptionalPermission(
        Permission("watch", "pods"),
        Feature.WATCH,
        "no pod cache: every webhook reads its pod with a GET and every sweep lists the pods",
    ),
    OptionalPermission(
        Permission("create", "events"),
        Feature.EVENTS,
        "no Kubernetes Events on detached and deleted pods (log lines and metrics remain)",
    ),
    OptionalPermission(
        Permission("get", "replicasets", "apps"),
        Feature.OWNER_CHECK,
        "a detach that leaves a pod in its ReplicaSet (a Deployment selector that matches the "
        "busy labels) is not detected",
    ),
    *(
        OptionalPermission(
            permission,
            Feature.POOLS,
            "JibriPools are not reconciled: Deployment replicas stay as set by hand",
        )
        for permission in (
            Permission("list", "jibripools", "jibri-pod-controller.io"),
            Permission("watch", "jibripools", "jibri-pod-controller.io"),
            Permission("patch", "jibripools/status", "jibri-pod-controller.io"),
            Permission("get", "deployments", "apps"),
            Permission("update", "deployments/scale", "apps"),
            Permission("list", "horizontalpodautoscalers", "autoscaling"),
        )
    ),
)


@dataclass(frozen=True)
class Assessment:
    missing_required: tuple[str, ...]
    missing_optional: tuple[OptionalPermission, ...]

    @property
    def ready(self) -> bool:
        return not self.missing_required

    def has(self, feature: Feature) -> bool:
        return all(o.feature is not feature for o in self.missing_optional)

    @property
    def lost(self) -> dict[str, str]:
        """Missing optional permission -> what is lost."""
        return {str(o.permission): o.lost for o in self.missing_optional}


def all_permissions(
    *, lease_name: str, optional: tuple[OptionalPermission, ...] = OPTIONAL_PERMISSIONS
) -> tuple[Permission, ...]:
    return required_permissions(lease_name=lease_name) + tuple(o.permission for o in optional)


def assess(
    allowed: Mapping[Permission, bool],
    *,
    lease_name: str,
    optional: tuple[OptionalPermission, ...] = OPTIONAL_PERMISSIONS,
) -> Assessment:
    """The verdict from access-review answers; a permission with no answer counts as missing."""
    return Assessment(
        missing_required=tuple(
            str(p) for p in required_permissions(lease_name=lease_name) if not allowed.get(p)
        ),
        missing_optional=tuple(o for o in optional if not allowed.get(o.permission)),
    )
