"""What the controller needs to know about a pod, parsed once at the edge.

A pod arrives from the API as a large JSON object; every decision needs a dozen fields of it.
`parse_pod` extracts them into a frozen `PodFacts` so raw dicts never travel inward.

Label selectors are kept deliberately small: equality (`k=v`, `k==v`), inequality (`k!=v`),
existence (`k`) and non-existence (`!k`). That is all a Jibri selector needs, and the same string
is sent to the API server as `labelSelector`, so both sides agree on what matches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

# Label keys: optional DNS subdomain prefix + "/" + name (63 chars, alnum at both ends).
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*"
_LABEL_KEY = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")
# Pod names are DNS-1123 subdomains.
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)

ANNOTATION_SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
ANNOTATION_BUSY_SINCE = "jibri-pod-controller/busy-since"
ANNOTATION_RESTARTS_AT_BUSY = "jibri-pod-controller/restarts-at-busy"
ANNOTATION_SESSIONS_WATCHED = "jibri-pod-controller/sessions-watched"
"""Set by the detach when stuck-BUSY detection is on: the pod's session webhooks are recorded
from then on, so a missing session ON means something (see `is_stuck_busy`)."""
ANNOTATION_SESSION_ON = "jibri-pod-controller/session-on"
"""When Jibri first reported a session ON for this pod (written once, by the webhook)."""


class PodParseError(ValueError):
    """The API returned a pod object without a field the controller relies on."""


class SelectorError(ValueError):
    """A label selector or label list could not be parsed."""


def is_valid_pod_name(name: str) -> bool:
    # fullmatch: "$" would also accept a trailing newline (a URL's "%0A").
    return len(name) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(name) is not None


class Op(StrEnum):
    EQUALS = "="
    NOT_EQUALS = "!="
    EXISTS = "exists"
    NOT_EXISTS = "!"


@dataclass(frozen=True)
class Requirement:
    key: str
    op: Op
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        match self.op:
            case Op.EQUALS:
                return labels.get(self.key) == self.value
            case Op.NOT_EQUALS:
                return labels.get(self.key) != self.value
            case Op.EXISTS:
                return self.key in labels
            case Op.NOT_EXISTS:
                return self.key not in labels

    def __str__(self) -> str:
        match self.op:
            case Op.EQUALS | Op.NOT_EQUALS:
                return f"{self.key}{self.op.value}{self.value}"
            case Op.EXISTS:
                return self.key
            case Op.NOT_EXISTS:
                return f"!{self.key}"


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _check_key(key: str, text: str) -> str:
    if not _LABEL_KEY.match(key) or len(key) > 316:
        raise SelectorError(f"invalid label key {key!r} in {text!r}")
    return key


def _check_value(value: str, text: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise SelectorError(f"invalid label value {value!r} in {text!r}")
    return value


def parse_selector(text: str) -> Selector:
    """Parse an equality-based label selector such as ``app=jibri,!paused``."""
    requirements: list[Requirement] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            raise SelectorError(f"empty requirement in {text!r}")
        if " in " in part or " notin " in part or "(" in part:
            raise SelectorError(f"set-based requirement {part!r} is not supported")
        if "!=" in part:
            key, value = part.split("!=", 1)
            requirements.append(
                Requirement(
                    _check_key(key.strip(), text), Op.NOT_EQUALS, _check_value(value.strip(), text)
                )
            )
        elif "=" in part:
            key, value = part.split("==", 1) if "==" in part else part.split("=", 1)
            requirements.append(
                Requirement(
                    _check_key(key.strip(), text), Op.EQUALS, _check_value(value.strip(), text)
                )
            )
        elif part.startswith("!"):
            requirements.append(Requirement(_check_key(part[1:].strip(), text), Op.NOT_EXISTS))
        else:
            requirements.append(Requirement(_check_key(part, text), Op.EXISTS))
    return Selector(tuple(requirements))


def parse_labels(text: str) -> dict[str, str]:
    """Parse a label list such as ``app=jibri,state=busy`` (every part must be ``k=v``)."""
    labels: dict[str, str] = {}
    for raw in text.split(","):
        part = raw.strip()
        if "=" not in part or "!=" in part:
            raise SelectorError(f"{part!r} is not of the form key=value in {text!r}")
        key, value = (s.strip() for s in part.split("=", 1))
        key, value = _check_key(key, text), _check_value(value, text)
        if key in labels:
            raise SelectorError(f"label {key!r} given twice in {text!r}")
        labels[key] = value
    return labels


def has_labels(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Whether ``labels`` carries every key of ``wanted`` with its value."""
    return wanted.items() <= labels.items()  # a set comparison: no Python loop per pod


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class PodFacts:
    name: str
    namespace: str
    uid: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    phase: Phase = Phase.PENDING
    pod_ips: tuple[str, ...] = ()
    deleting: bool = False
    owner_kind: str | None = None
    """Kind of the controlling owner (``ReplicaSet`` while the Deployment still owns it)."""
    owner_name: str | None = None
    """Name of the controlling owner."""
    owner_uid: str | None = None
    """uid of the controlling owner (a name may be reused by a newer object)."""
    ready: bool = False
    """The pod's Ready condition is True."""
    restart_count: int = 0
    """Sum of the restart counts of the pod's containers."""
    created: datetime | None = None
    resource_version: str = ""
    ready_since: datetime | None = None
    """When the Ready condition last changed to True (only while ``ready``)."""
    containers_started: datetime | None = None
    """When the most recently started of the pod's running containers started (the kubelet's
    ``state.running.startedAt``); None when none is running or the kubelet did not say."""

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.SUCCEEDED, Phase.FAILED)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def parse_pod(raw: Mapping[str, Any]) -> PodFacts:
    """Extract `PodFacts` from a pod as the API server returns it (JSON-decoded)."""
    meta = raw.get("metadata")
    if not isinstance(meta, dict):
        raise PodParseError("pod without metadata")
    name, uid = meta.get("name"), meta.get("uid")
    if not isinstance(name, str) or not isinstance(uid, str):
        raise PodParseError("pod without name or uid")
    status = raw.get("status") if isinstance(raw.get("status"), dict) else {}
    assert isinstance(status, dict)
    ips: list[str] = []
    for entry in status.get("podIPs") or ():
        if isinstance(entry, dict) and isinstance(entry.get("ip"), str):
            ips.append(entry["ip"])
    if not ips and isinstance(status.get("podIP"), str) and status["podIP"]:
        ips.append(status["podIP"])
    owner_kind = owner_name = owner_uid = None
    for ref in meta.get("ownerReferences") or ():
        if isinstance(ref, dict) and ref.get("controller") is True:
            owner_kind = str(ref.get("kind"))
            owner_name = str(ref.get("name"))
            owner_uid = str(ref.get("uid"))
    ready, ready_since = False, None
    for condition in status.get("conditions") or ():
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
            ready_since = _parse_time(condition.get("lastTransitionTime")) if ready else None
    restarts = 0
    started: datetime | None = None
    for cs in status.get("containerStatuses") or ():
        if not isinstance(cs, dict):
            continue
        if isinstance(cs.get("restartCount"), int):
            restarts += cs["restartCount"]
        state = cs.get("state")
        running = state.get("running") if isinstance(state, dict) else None
        at = _parse_time(running.get("startedAt")) if isinstance(running, dict) else None
        if at is not None and (started is None or at > started):
            started = at
    try:
        phase = Phase(status.get("phase") or "Pending")
    except ValueError:
        phase = Phase.UNKNOWN
    return PodFacts(
        name=name,
        namespace=str(meta.get("namespace") or ""),
        uid=uid,
        labels=_str_map(meta.get("labels")),
        annotations=_str_map(meta.get("annotations")),
        phase=phase,
        pod_ips=tuple(ips),
        deleting=meta.get("deletionTimestamp") is not None,
        owner_kind=owner_kind,
        owner_name=owner_name,
        owner_uid=owner_uid,
        ready=ready,
        restart_count=restarts,
        created=_parse_time(meta.get("creationTimestamp")),
        resource_version=str(meta.get("resourceVersion") or ""),
        ready_since=ready_since,
        containers_started=started,
    )


def label_selector_matches(selector: Any, labels: Mapping[str, str]) -> bool:
    """Whether a Kubernetes ``LabelSelector`` object (a ReplicaSet's ``spec.selector``)
    selects ``labels``: every ``matchLabels`` pair and every ``matchExpressions`` requirement
    (In, NotIn, Exists, DoesNotExist) holds. An empty selector selects everything; one that
    cannot be read selects nothing."""
    if not isinstance(selector, Mapping):
        return False
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        return False
    if any(labels.get(str(k)) != str(v) for k, v in match_labels.items()):
        return False
    for expression in expressions:
        if not isinstance(expression, Mapping):
            return False
        key, operator = str(expression.get("key")), expression.get("operator")
        values = [str(v) for v in expression.get("values") or ()]
        present = key in labels
        if operator == "In":
            ok = present and labels[key] in values
        elif operator == "NotIn":
            ok = not present or labels[key] not in values
        elif operator == "Exists":
            ok = present
        elif operator == "DoesNotExist":
            ok = not present
        else:
            return False
        if not ok:
            return False
    return True
