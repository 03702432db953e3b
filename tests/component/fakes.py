"""Hand-written fakes of the controller's neighbours, for component tests.

`FakeCluster` implements `kube.Cluster` in memory, with the API server semantics the controller
relies on: every change bumps a pod's ``resourceVersion``; a merge patch of labels and
annotations carries the pod's uid (another uid is refused with 422, as the API server does) and,
when given, a ``resourceVersion`` (409 on mismatch); a delete carries a uid precondition (409 on
mismatch) and returns False when the pod is already gone; Lease writes are optimistic. Every
write request is recorded in ``writes`` (refused ones too), so a test can assert the exact list
of writes, or that there were none. Faults are injected per method: a queue of exceptions raised
by the next calls, a delay before each call, and hooks run at the start of the next call (to let
"another replica" change a pod in between).

`FakeClock` is virtual time for loops that take a monotonic clock, a wall clock and a sleep.
`JibriSigner` signs webhook tokens the way Jibri's ``jwt-info`` does.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import heapq
import hmac
import itertools
import json
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from jibri_pod_controller.adapters import kube
from jibri_pod_controller.core.config import Settings, load_settings
from jibri_pod_controller.core.leasing import LeaseRecord
from jibri_pod_controller.core.pods import PodFacts, parse_pod, parse_selector

NAMESPACE = "jibri"
IDLE_LABELS = {"app": "jibri", "state": "idle"}
BUSY_LABELS = {"app": "jibri", "state": "busy"}


def make_settings(**env: str) -> Settings:
    """Settings as the controller would read them, with webhooks unauthenticated by default."""
    base = {"NAMESPACE": NAMESPACE, "POD_NAME": "controller-0", "WEBHOOK_AUTH": "none"}
    return load_settings({**base, **env})


# -- pods ---------------------------------------------------------------------------------------


def pod_json(
    name: str,
    *,
    uid: str,
    resource_version: str = "1",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    phase: str = "Running",
    ips: Iterable[str] = ("10.0.0.1",),
    restarts: int = 0,
    owner: str | None = "ReplicaSet",
    deleting: bool = False,
    created: str = "2025-01-01T00:00:00Z",
    ready: bool | None = None,
) -> dict[str, Any]:
    """A pod as the API server returns it (JSON-decoded), reduced to realistic essentials."""
    ip_list = list(ips)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "uid": uid,
        "resourceVersion": resource_version,
        "creationTimestamp": created,
        "labels": dict(IDLE_LABELS if labels is None else labels),
        "annotations": dict(annotations or {}),
    }
    if owner is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": owner,
                "name": "jibri-5d9c7b",
                "uid": "owner-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    if deleting:
        metadata["deletionTimestamp"] = "2025-01-01T01:00:00Z"
        metadata["deletionGracePeriodSeconds"] = 30
    status: dict[str, Any] = {
        "phase": phase,
        "containerStatuses": [
            {"name": "jibri", "ready": phase == "Running", "restartCount": restarts}
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if (phase == "Running" if ready is None else ready) else "False",
            }
        ],
    }
    if ip_list:
        status["podIP"] = ip_list[0]
        status["podIPs"] = [{"ip": ip} for ip in ip_list]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {}, "status": status}


@dataclass(frozen=True)
class Write:
    """One write request as it would go over the wire (method, object name, body)."""

    method: str
    name: str
    body: Any


@dataclass(frozen=True)
class RecordedEvent:
    pod: str
    uid: str
    reason: str
    message: str
    warning: bool


POD_WRITES = ("patch_pod", "delete_pod")
LEASE_WRITES = ("create_lease", "update_lease")


class FakeCluster:
    """`kube.Cluster` in memory. Test-side helpers (``add_pod``, ``change_pod``) are not writes."""

    def __init__(self, *, allowed: Iterable[tuple[str, str, str, str]] | None = None) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.leases: dict[str, kube.StoredLease] = {}
        self.writes: list[Write] = []
        self.events: list[RecordedEvent] = []
        self.pages: list[tuple[str, int]] = []
        """One (selector, page size) per page served by ``list_pods``."""
        self.allowed = None if allowed is None else set(allowed)
        """(verb, resource, group, name) granted; None grants everything."""
        self.delays: dict[str, float] = {}
        self._faults: defaultdict[str, deque[BaseException]] = defaultdict(deque)
        self._hooks: defaultdict[str, deque[Callable[[], object]]] = defaultdict(deque)
        self._versions = itertools.count(100)
        self._uids = itertools.count(1)

    # -- test-side helpers ------------------------------------------------------------------

    def add_pod(self, name: str, **options: Any) -> PodFacts:
        """Create a pod (as the ReplicaSet controller would) and return its facts."""
        options.setdefault("uid", f"uid-{next(self._uids)}-{name}")
        raw = pod_json(name, resource_version=self._next_version(), **options)
        self.pods[name] = raw
        return parse_pod(copy.deepcopy(raw))

    def change_pod(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        restarts: int | None = None,
        deleting: bool | None = None,
    ) -> PodFacts:
        """Someone else (another replica, the kubelet, a human) changes a pod."""
        raw = self.pods[name]
        meta = raw["metadata"]
        if labels is not None:
            meta["labels"].update(labels)
        if annotations is not None:
            meta["annotations"].update(annotations)
        if restarts is not None:
            raw["status"]["containerStatuses"][0]["restartCount"] = restarts
        if deleting:
            meta["deletionTimestamp"] = "2025-01-01T01:00:00Z"
        meta["resourceVersion"] = self._next_version()
        return parse_pod(copy.deepcopy(raw))

    def pod(self, name: str) -> PodFacts | None:
        raw = self.pods.get(name)
        return None if raw is None else parse_pod(copy.deepcopy(raw))

    def fail_next(self, method: str, *errors: BaseException) -> None:
        """The next ``len(errors)`` calls of ``method`` raise these, in order."""
        self._faults[method].extend(errors)

    def before_next(self, method: str, hook: Callable[[], object]) -> None:
        """Run ``hook`` at the start of the next call of ``method`` (after its delay)."""
        self._hooks[method].append(hook)

    def pod_writes(self) -> list[Write]:
        return [w for w in self.writes if w.method in POD_WRITES]

    def lease_writes(self) -> list[Write]:
        return [w for w in self.writes if w.method in LEASE_WRITES]

    # -- plumbing ---------------------------------------------------------------------------

    def _next_version(self) -> str:
        return str(next(self._versions))

    async def _call(self, method: str, write: Write | None = None) -> None:
        # Always yield, as a network call would: concurrent callers interleave here.
        await asyncio.sleep(self.delays.get(method, 0))
        hooks = self._hooks[method]
        if hooks:
            hooks.popleft()()
        if write is not None:
            self.writes.append(write)
        faults = self._faults[method]
        if faults:
            raise faults.popleft()

    # -- kube.Cluster -----------------------------------------------------------------------

    async def get_pod(self, name: str) -> PodFacts | None:
        await self._call("get_pod")
        return self.pod(name)

    async def list_pods(self, *, selector: str, page_size: int) -> AsyncIterator[PodFacts]:
        wanted = parse_selector(selector)
        names = [n for n in sorted(self.pods) if wanted.matches(self.pods[n]["metadata"]["labels"])]
        for start in range(0, max(len(names), 1), page_size):
            await self._call("list_pods")
            self.pages.append((selector, page_size))
            for name in names[start : start + page_size]:
                raw = self.pods.get(name)
                if raw is not None:
                    yield parse_pod(copy.deepcopy(raw))

    async def patch_pod(
        self, *, name: str, uid: str, patch: Mapping[str, Any], resource_version: str = ""
    ) -> PodFacts:
        body = copy.deepcopy(dict(patch))
        meta = {**body.get("metadata", {}), "uid": uid}
        if resource_version:
            meta["resourceVersion"] = resource_version
        body["metadata"] = meta
        await self._call("patch_pod", Write("patch_pod", name, body))
        raw = self.pods.get(name)
        if raw is None:
            raise kube.NotFound(f"patch pod {name}: HTTP 404 Not Found")
        current = raw["metadata"]
        if current["uid"] != uid:
            # What the API server answers: a merge patch cannot change a pod's uid.
            raise kube.Invalid(
                f'patch pod {name}: HTTP 422 Pod "{name}" is invalid: metadata.uid: '
                f'Invalid value: "{uid}": field is immutable'
            )
        if resource_version and current["resourceVersion"] != resource_version:
            raise kube.Conflict(f"patch pod {name}: HTTP 409 the object has been modified")
        unsupported = (set(body) - {"metadata"}) | (
            set(meta) - {"labels", "annotations", "uid", "resourceVersion"}
        )
        if unsupported:
            raise kube.Invalid(f"patch pod {name}: fake cannot patch {sorted(unsupported)}")
        for key in ("labels", "annotations"):
            for k, v in (meta.get(key) or {}).items():
                if v is None:
                    current[key].pop(k, None)
                else:
                    current[key][k] = str(v)
        current["resourceVersion"] = self._next_version()
        return parse_pod(copy.deepcopy(raw))

    async def delete_pod(self, *, name: str, uid: str, resource_version: str = "") -> bool:
        preconditions = {"uid": uid}
        if resource_version:
            preconditions["resourceVersion"] = resource_version
        await self._call("delete_pod", Write("delete_pod", name, {"preconditions": preconditions}))
        raw = self.pods.get(name)
        if raw is None:
            return False
        if raw["metadata"]["uid"] != uid:
            raise kube.Conflict(f"delete pod {name}: HTTP 409 the UID in the precondition differs")
        if resource_version and raw["metadata"]["resourceVersion"] != resource_version:
            raise kube.Conflict(f"delete pod {name}: HTTP 409 the ResourceVersion differs")
        del self.pods[name]
        return True

    async def get_lease(self, name: str) -> kube.StoredLease | None:
        await self._call("get_lease")
        return self.leases.get(name)

    async def create_lease(self, name: str, record: LeaseRecord) -> kube.StoredLease:
        await self._call("create_lease", Write("create_lease", name, record))
        if name in self.leases:
            raise kube.Conflict(f"create lease {name}: HTTP 409 AlreadyExists")
        stored = kube.StoredLease(record, self._next_version())
        self.leases[name] = stored
        return stored

    async def update_lease(
        self, name: str, record: LeaseRecord, *, resource_version: str
    ) -> kube.StoredLease:
        await self._call("update_lease", Write("update_lease", name, record))
        current = self.leases.get(name)
        if current is None:
            raise kube.NotFound(f"update lease {name}: HTTP 404 Not Found")
        if current.resource_version != resource_version:
            raise kube.Conflict(f"update lease {name}: HTTP 409 the object has been modified")
        stored = kube.StoredLease(record, self._next_version())
        self.leases[name] = stored
        return stored

    async def record_event(
        self, *, pod: PodFacts, reason: str, message: str, warning: bool = False
    ) -> None:
        await self._call("record_event")
        self.events.append(RecordedEvent(pod.name, pod.uid, reason, message, warning))

    async def record_lease_event(self, *, name: str, reason: str, message: str) -> None:
        await self._call("record_lease_event")
        self.events.append(RecordedEvent(f"lease/{name}", "", reason, message, True))

    async def can_i(self, *, verb: str, resource: str, group: str = "", name: str = "") -> bool:
        await self._call("can_i")
        if self.allowed is None:
            return True
        return (verb, resource, group, name) in self.allowed or (
            verb,
            resource,
            group,
            "",
        ) in self.allowed


# -- time ---------------------------------------------------------------------------------------

WALL_START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@dataclass(order=True)
class _Sleeper:
    when: float
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class FakeClock:
    """Virtual time: ``sleep`` parks the caller until ``run_until`` moves time past its wake-up.

    Several loops may share one clock; between two wake-ups every runnable task is allowed to
    run until it parks again, so API calls (which only yield) complete in zero virtual time.
    """

    def __init__(self, start: float = 1000.0, *, wall_offset: float = 0.0) -> None:
        self.now = start
        self._start = start
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()
        self.wall_offset = wall_offset

    def monotonic(self) -> float:
        return self.now

    def wall(self, skew: float = 0.0) -> datetime:
        return WALL_START + timedelta(seconds=self.now - self._start + self.wall_offset + skew)

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(
            self._sleepers, _Sleeper(self.now + max(0.0, seconds), next(self._seq), future)
        )
        await future

    @staticmethod
    async def settle(rounds: int = 50) -> None:
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def run_until(self, when: float) -> None:
        """Advance virtual time to ``when``, waking sleepers in order."""
        while True:
            await self.settle()
            while self._sleepers and self._sleepers[0].future.done():
                heapq.heappop(self._sleepers)  # its sleeper was cancelled
            if not self._sleepers or self._sleepers[0].when > when:
                self.now = max(self.now, when)
                await self.settle()
                return
            sleeper = heapq.heappop(self._sleepers)
            self.now = max(self.now, sleeper.when)
            sleeper.future.set_result(None)

    async def advance(self, seconds: float) -> None:
        await self.run_until(self.now + seconds)


# -- Jibri's webhook tokens ---------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class JibriSigner:
    """Signs tokens as Jibri's ``jwt-info`` does: RS256, ``kid``, ``iss``, ``aud`` as a
    one-element array and ``exp``; no ``iat``, ``nbf``, ``jti`` or ``sub``."""

    def __init__(
        self,
        kid: str = "jibri-1",
        *,
        issuer: str = "jibri",
        audience: str = "jibri-pod-controller",
        key: rsa.RSAPrivateKey | None = None,
    ) -> None:
        self.kid = kid
        self.issuer = issuer
        self.audience = audience
        self.key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_jwk(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def token(
        self,
        *,
        ttl: float = 600,
        kid: str | None = None,
        claims: Mapping[str, Any] | None = None,
        drop: Iterable[str] = (),
        now: float | None = None,
    ) -> str:
        issued = time.time() if now is None else now
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": [self.audience],
            "exp": int(issued + ttl),
        }
        payload.update(claims or {})
        for name in drop:
            payload.pop(name, None)
        return jwt.encode(
            payload, self.key, algorithm="RS256", headers={"kid": kid or self.kid, "typ": "JWT"}
        )

    def bearer(self, **options: Any) -> str:
        return f"Bearer {self.token(**options)}"


def forged_token(
    header: Mapping[str, Any], payload: Mapping[str, Any], *, hmac_secret: bytes | None = None
) -> str:
    """A token assembled by hand, for forgeries PyJWT refuses to produce: unsigned (``alg:
    none``), or HMAC-signed with ``hmac_secret`` (such as the RSA public key's PEM bytes)."""
    signing_input = (
        f"{_b64(json.dumps(dict(header)).encode())}.{_b64(json.dumps(dict(payload)).encode())}"
    )
    signature = b""
    if hmac_secret is not None:
        signature = hmac.new(hmac_secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


SM2_PUBLIC_KEY = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoEcz1UBgi0DQgAE+IfNcf69ZjprcMmJ6DAeq9I+C2rB
UsjVYbNxqONaMP4vv/vru/Vqo57Bp6BlqrbllCPgoWyS5wRaPCtSg7NFIw==
-----END PUBLIC KEY-----
"""
"""A Chinese-standard SM2 public key: valid PEM, a type the cryptography library rejects."""
