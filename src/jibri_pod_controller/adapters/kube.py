"""The Kubernetes API, as the controller uses it: a few calls, named errors, no models inward.

`Cluster` is the seam: the HTTP layer, the sweeper and the elector depend on this protocol, the
component tests give them a hand-written in-memory fake, and `KubeCluster` implements it with
kubernetes-asyncio. Pod lists are decoded from raw JSON (the generated models cost ~10x the CPU
on large lists) and paginated.

Errors are mapped once, here, to a small hierarchy: 404 becomes `NotFound`, 409 (and a failed
precondition) `Conflict`, 401/403 `Forbidden`, and everything transient (timeouts, connection
errors, 429, 5xx) `Unavailable`, which carries Retry-After when the server sent one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from jibri_pod_controller.core.leasing import LeaseRecord
from jibri_pod_controller.core.pods import PodFacts, PodParseError, parse_pod

MERGE_PATCH = "application/merge-patch+json"
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
COMPONENT = "jibri-pod-controller"


class KubeError(Exception):
    """A Kubernetes API call failed."""

    kind = "error"


class NotFound(KubeError):
    kind = "not-found"


class Conflict(KubeError):
    kind = "conflict"


class Forbidden(KubeError):
    kind = "forbidden"


class Gone(KubeError):
    """410: the requested resourceVersion was compacted away; list again."""

    kind = "gone"


class Invalid(KubeError):
    kind = "invalid"


class Unavailable(KubeError):
    """Transient: timeout, connection error, 429 or 5xx. Safe to retry later."""

    kind = "unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class WatchEvent:
    kind: str
    """ADDED, MODIFIED, DELETED or BOOKMARK."""
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class StoredLease:
    record: LeaseRecord
    resource_version: str


class Cluster(Protocol):
    async def get_pod(self, name: str) -> PodFacts | None: ...

    def list_pods(self, *, selector: str, page_size: int) -> AsyncIterator[PodFacts]: ...

    async def patch_pod(
        self, *, name: str, uid: str, patch: Mapping[str, Any], resource_version: str = ""
    ) -> PodFacts:
        """Merge-patch a pod; `Conflict` if it changed since ``resource_version`` (when given)."""
        ...

    async def delete_pod(self, *, name: str, uid: str, resource_version: str = "") -> bool:
        """Delete with a uid precondition (and a resourceVersion one when given).

        False when the pod was already gone; `Conflict` when a precondition failed (the message
        says which: "UID" when the name now holds another pod).
        """
        ...

    async def get_lease(self, name: str) -> StoredLease | None: ...

    async def create_lease(self, name: str, record: LeaseRecord) -> StoredLease: ...

    async def update_lease(
        self, name: str, record: LeaseRecord, *, resource_version: str
    ) -> StoredLease: ...

    async def record_event(
        self, *, pod: PodFacts, reason: str, message: str, warning: bool = False
    ) -> None: ...

    async def can_i(self, *, verb: str, resource: str, group: str = "", name: str = "") -> bool: ...


def _retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header (exceptions and raw responses both carry headers)."""
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def error_for_status(status: int, detail: str, *, retry_after: float | None = None) -> KubeError:
    if status == 404:
        return NotFound(detail)
    if status == 409:
        return Conflict(detail)
    if status in (401, 403):
        return Forbidden(detail)
    if status == 410:
        return Gone(detail)
    if status == 422:
        return Invalid(detail)
    if status == 429 or status >= 500 or status == 0:
        return Unavailable(detail, retry_after=retry_after)
    return KubeError(detail)


def translate(exc: BaseException, what: str) -> KubeError:
    """Map a client exception to the controller's error hierarchy."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        status = exc.status or 0
        detail = f"{what}: HTTP {status} {exc.reason or ''}".strip()
        return error_for_status(status, detail, retry_after=_retry_after(exc.headers))
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return Unavailable(f"{what}: timed out")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return Unavailable(f"{what}: {type(exc).__name__}: {exc}")
    return KubeError(f"{what}: {type(exc).__name__}: {exc}")


async def _body(response: Any, what: str) -> bytes:
    """The body of a raw (``_preload_content=False``) response; errors raised as `KubeError`.

    Raw responses do not raise on an error status: the status must be checked here, or a 404
    or a failed precondition would pass for success.
    """
    try:
        body: bytes = await response.read()
    finally:
        response.release()
    status = int(response.status)
    if status < 400:
        return body
    message = ""
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
        message = str(orjson.loads(body).get("message", ""))[:300]
    raise error_for_status(
        status,
        f"{what}: HTTP {status} {message}".strip(),
        retry_after=_retry_after(response.headers),
    )


def _lease_from(obj: Any) -> StoredLease:
    spec = obj.spec
    return StoredLease(
        record=LeaseRecord(
            holder=spec.holder_identity or "",
            lease_duration_seconds=int(spec.lease_duration_seconds or 0),
            acquire_time=spec.acquire_time,
            renew_time=spec.renew_time,
            transitions=int(spec.lease_transitions or 0),
        ),
        resource_version=obj.metadata.resource_version,
    )


def _micro_time(value: datetime | None) -> str | None:
    """MicroTime wants exactly six fractional digits, which isoformat() drops at .000000."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _lease_body(name: str, record: LeaseRecord, resource_version: str | None) -> dict[str, Any]:
    # A plain dict: the generated model would serialise datetimes without MicroTime's format.
    metadata: dict[str, Any] = {"name": name}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    spec = {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.lease_duration_seconds,
        "acquireTime": _micro_time(record.acquire_time),
        "renewTime": _micro_time(record.renew_time),
        "leaseTransitions": record.transitions,
    }
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {k: v for k, v in spec.items() if v is not None},
    }


_PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
)


async def load_api_client(kubeconfig: str | None, env: Mapping[str, str]) -> k8s.ApiClient:
    """The in-cluster service account when present, else KUBECONFIG / ~/.kube/config."""
    if kubeconfig is None and IN_CLUSTER_TOKEN.exists():  # noqa: ASYNC240 - once, at start-up
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
        return _without_env_lookups(k8s.ApiClient(), env)
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return _without_env_lookups(k8s.ApiClient(configuration=configuration), env)


def _without_env_lookups(api: k8s.ApiClient, env: Mapping[str, str]) -> k8s.ApiClient:
    """Stop per-request proxy and netrc lookups when there is no proxy to find.

    kubernetes-asyncio opens its aiohttp session with ``trust_env=True``, so every API request
    looks up proxy variables and ~/.netrc, in a thread. Measured on a burst of 200 detaches,
    that was a fifth of the controller's CPU. With no proxy variable set there is nothing to
    find, so the lookups are switched off (aiohttp lists ``_trust_env`` among the attributes a
    session may have set); with one set, they stay, and proxies work as before.
    """
    if not any(env.get(name) for name in _PROXY_VARIABLES):
        session = getattr(getattr(api, "rest_client", None), "pool_manager", None)
        if isinstance(session, aiohttp.ClientSession):
            session._trust_env = False
    return api


class KubeCluster:
    """`Cluster` over kubernetes-asyncio, for one namespace."""

    def __init__(
        self, api: k8s.ApiClient, *, namespace: str, request_timeout: float = 10.0
    ) -> None:
        self._api = api
        # Typed as Any: the stubs do not describe raw responses (_preload_content=False) or
        # _content_type, which this seam relies on for cheap decoding and merge patches.
        self._core: Any = k8s.CoreV1Api(api)
        self._coordination: Any = k8s.CoordinationV1Api(api)
        self._authz = k8s.AuthorizationV1Api(api)
        self._ns = namespace
        self._timeout = request_timeout

    async def close(self) -> None:
        await self._api.close()

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        request_timeout: float | None = None,
    ) -> Any:
        """One API request by path (e.g. ``/apis/apps/v1/namespaces/ns/deployments/x``).

        Returns the decoded JSON answer; an error status raises the matching `KubeError`. New
        calls go through here (and `watch_json`), so they depend on this seam only, not on
        the client library underneath.
        """
        what = f"{method.lower()} {path}"
        try:
            response = await self._api.call_api(
                path,
                method.upper(),
                query_params=list((query or {}).items()),
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=request_timeout or self._timeout,
            )
            raw = await _body(response, what)
        except Exception as exc:
            raise translate(exc, what) from exc
        return orjson.loads(raw) if raw else None

    async def watch_json(
        self, path: str, *, query: Mapping[str, str], timeout_seconds: int
    ) -> AsyncIterator[WatchEvent]:
        """A watch by path: ``query`` is the list's query (labelSelector, resourceVersion...)."""
        what = f"watch {path}"
        params = {
            **query,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        try:
            response = await self._api.call_api(
                path,
                "GET",
                query_params=list(params.items()),
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout_seconds + 30,
            )
        except Exception as exc:
            raise translate(exc, what) from exc
        try:
            if response.status >= 400:
                await _body(response, what)
            while True:
                try:
                    line = await response.content.readline()
                except Exception as exc:
                    raise translate(exc, what) from exc
                if not line:
                    return
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = int(obj.get("code") or 0)
                    raise error_for_status(code, f"{what}: {obj.get('message', '')}"[:300])
                yield WatchEvent(kind=str(kind), raw=obj)
        finally:
            response.release()

    async def get_pod(self, name: str) -> PodFacts | None:
        what = f"get pod {name}"
        try:
            response = await self._core.read_namespaced_pod(
                name, self._ns, _preload_content=False, _request_timeout=self._timeout
            )
            return parse_pod(orjson.loads(await _body(response, what)))
        except NotFound:
            return None
        except Exception as exc:
            raise translate(exc, what) from exc

    async def _pages(self, *, selector: str, page_size: int) -> AsyncIterator[dict[str, Any]]:
        """The pages of a paginated list, decoded from raw JSON one at a time."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"label_selector": selector, "limit": page_size}
            if token:
                kwargs["_continue"] = token
            try:
                response = await self._core.list_namespaced_pod(
                    self._ns, _preload_content=False, _request_timeout=self._timeout * 3, **kwargs
                )
                page: dict[str, Any] = orjson.loads(await _body(response, "list pods"))
            except Exception as exc:
                raise translate(exc, "list pods") from exc
            yield page
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    async def list_pods(self, *, selector: str, page_size: int) -> AsyncIterator[PodFacts]:
        async for page in self._pages(selector=selector, page_size=page_size):
            for raw in page.get("items") or ():
                yield parse_pod(raw)

    async def list_pods_snapshot(
        self, *, selector: str, page_size: int
    ) -> tuple[list[PodFacts], str]:
        pods: list[PodFacts] = []
        version = ""
        async for page in self._pages(selector=selector, page_size=page_size):
            for raw in page.get("items") or ():
                with contextlib.suppress(PodParseError):
                    pods.append(parse_pod(raw))
            version = str((page.get("metadata") or {}).get("resourceVersion") or version)
        return pods, version

    async def watch_pods_raw(
        self, *, selector: str, resource_version: str, timeout_seconds: int
    ) -> AsyncIterator[WatchEvent]:
        what = "watch pods"
        try:
            response = await self._core.list_namespaced_pod(
                self._ns,
                label_selector=selector,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds,
                _preload_content=False,
                _request_timeout=timeout_seconds + 30,
            )
        except Exception as exc:
            raise translate(exc, what) from exc
        try:
            if response.status >= 400:
                await _body(response, what)
            while True:
                try:
                    line = await response.content.readline()
                except Exception as exc:
                    raise translate(exc, what) from exc
                if not line:
                    return
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = int(obj.get("code") or 0)
                    raise error_for_status(code, f"{what}: {obj.get('message', '')}"[:300])
                yield WatchEvent(kind=str(kind), raw=obj)
        finally:
            response.release()

    async def patch_pod(
        self, *, name: str, uid: str, patch: Mapping[str, Any], resource_version: str = ""
    ) -> PodFacts:
        body = dict(patch)
        # A uid in a merge patch acts as a precondition: the API server refuses to change a
        # pod's uid, so a newer pod that reuses the name is never relabelled. A resourceVersion
        # makes it optimistic: a concurrent change (another replica's detach) gives 409.
        meta: dict[str, Any] = {**dict(body.get("metadata", {})), "uid": uid}
        if resource_version:
            meta["resourceVersion"] = resource_version
        body["metadata"] = meta
        try:
            response = await self._core.patch_namespaced_pod(
                name,
                self._ns,
                body,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            return parse_pod(orjson.loads(await _body(response, f"patch pod {name}")))
        except Exception as exc:
            raise translate(exc, f"patch pod {name}") from exc

    async def delete_pod(self, *, name: str, uid: str, resource_version: str = "") -> bool:
        preconditions = k8s.V1Preconditions(uid=uid, resource_version=resource_version or None)
        options = k8s.V1DeleteOptions(preconditions=preconditions)
        what = f"delete pod {name}"
        try:
            response = await self._core.delete_namespaced_pod(
                name, self._ns, body=options, _preload_content=False, _request_timeout=self._timeout
            )
            await _body(response, what)
            return True
        except NotFound:
            return False
        except Exception as exc:
            raise translate(exc, what) from exc

    async def get_lease(self, name: str) -> StoredLease | None:
        try:
            lease = await self._coordination.read_namespaced_lease(
                name, self._ns, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise translate(exc, f"get lease {name}") from exc
        except Exception as exc:
            raise translate(exc, f"get lease {name}") from exc
        return _lease_from(lease)

    async def create_lease(self, name: str, record: LeaseRecord) -> StoredLease:
        try:
            lease = await self._coordination.create_namespaced_lease(
                self._ns, _lease_body(name, record, None), _request_timeout=self._timeout
            )
        except Exception as exc:
            raise translate(exc, f"create lease {name}") from exc
        return _lease_from(lease)

    async def update_lease(
        self, name: str, record: LeaseRecord, *, resource_version: str
    ) -> StoredLease:
        try:
            lease = await self._coordination.replace_namespaced_lease(
                name,
                self._ns,
                _lease_body(name, record, resource_version),
                _request_timeout=self._timeout,
            )
        except Exception as exc:
            raise translate(exc, f"update lease {name}") from exc
        return _lease_from(lease)

    async def record_event(
        self, *, pod: PodFacts, reason: str, message: str, warning: bool = False
    ) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{pod.name}."},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.name,
                "namespace": self._ns,
                "uid": pod.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        what = f"create event for {pod.name}"
        try:
            # Raw: the typed answer would cost a model and a date parse per Event, for nothing.
            response = await self._core.create_namespaced_event(
                self._ns, event, _preload_content=False, _request_timeout=self._timeout
            )
            await _body(response, what)
        except Exception as exc:
            raise translate(exc, what) from exc

    async def can_i(self, *, verb: str, resource: str, group: str = "", name: str = "") -> bool:
        review = k8s.V1SelfSubjectAccessReview(
            spec=k8s.V1SelfSubjectAccessReviewSpec(
                resource_attributes=k8s.V1ResourceAttributes(
                    namespace=self._ns, verb=verb, resource=resource, group=group, name=name or None
                )
            )
        )
        try:
            result = await self._authz.create_self_subject_access_review(
                review, _request_timeout=self._timeout
            )
        except Exception as exc:
            raise translate(exc, "self subject access review") from exc
        return bool(result.status.allowed)
