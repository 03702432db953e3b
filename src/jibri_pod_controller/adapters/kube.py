"""The Kubernetes API, as the controller uses it: a few calls, named errors, no models inward.

`Cluster` is the seam: the HTTP layer, the sweeper and the elector depend on this protocol, the
component tests give them a hand-written in-memory fake, and `KubeCluster` implements it over
`ApiClient`, a thin HTTP/1.1 client on aiohttp: JSON in, JSON out, by path. (A generated client
library was here before; it imported ~860 modules and held 38 MiB for a dozen calls, all but
three of which bypassed its models already.) Where the credentials come from is `credentials`.

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
from typing import Any, Protocol

import aiohttp
import orjson

from jibri_pod_controller.adapters import credentials
from jibri_pod_controller.adapters.credentials import Endpoint
from jibri_pod_controller.core.leasing import LeaseRecord
from jibri_pod_controller.core.pods import PodFacts, PodParseError, parse_pod

MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "jibri-pod-controller"
CONNECTIONS = 64
"""Connections to the API server at most: a burst of detaches queues behind them rather than
opening one per request. Each TLS connection holds its buffers; with 16, a 200-webhook burst
waited for connections whenever the API server was slow (each of its answers holds one)."""
WATCH_LINE_MAX = 16 * 1024 * 1024


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

    async def record_lease_event(self, *, name: str, reason: str, message: str) -> None:
        """A Warning Event about this namespace's Lease ``name`` (the leader's own troubles)."""
        ...


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
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
    """Map a transport exception to the controller's error hierarchy."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return Unavailable(f"{what}: timed out")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return Unavailable(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, credentials.CredentialsError):
        return Forbidden(f"{what}: {exc}")
    return KubeError(f"{what}: {type(exc).__name__}: {exc}")


def _status_error(status: int, body: bytes, headers: Mapping[str, str], what: str) -> KubeError:
    message = ""
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
        message = str(orjson.loads(body).get("message", ""))[:300]
    return error_for_status(
        status, f"{what}: HTTP {status} {message}".strip(), retry_after=_retry_after(headers)
    )


class ApiClient:
    """HTTP/1.1 to one API server: a pooled aiohttp session, the credentials, nothing else.

    No proxy or netrc lookups per request (aiohttp's ``trust_env``): the proxy, if any, was
    settled once from the configuration. No compression: on a cluster network gzip costs the
    API server and this process more CPU than it saves. A 401 with a token that can change (a
    rotated ServiceAccount token, a token file, an exec plugin) re-reads it and retries once.
    """

    def __init__(self, endpoint: Endpoint, *, connections: int = CONNECTIONS) -> None:
        self.endpoint = endpoint
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._connections, ssl=self.endpoint.ssl, enable_cleanup_closed=False
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding",),
                headers={"Accept": "application/json", "User-Agent": COMPONENT},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @contextlib.asynccontextmanager
    async def open(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        limits: aiohttp.ClientTimeout,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to one request, released on exit; errors are the caller's to map."""
        session = self._open()
        source = self.endpoint.token
        url = self.endpoint.server + path
        for attempt in (1, 2):
            headers: dict[str, str] = {}
            if body is not None:
                headers["Content-Type"] = content_type
            if source is not None:
                token = await source.token()
                if token:
                    headers["Authorization"] = f"Bearer {token}"
            response = await session.request(
                method,
                url,
                params=query,
                data=body,
                headers=headers,
                timeout=limits,
                proxy=self.endpoint.proxy,
                server_hostname=self.endpoint.server_name,
                allow_redirects=False,
            )
            if response.status == 401 and attempt == 1 and source and source.refreshable:
                response.release()
                source.invalidate()
                continue
            try:
                yield response
            finally:
                response.release()
            return

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        seconds: float,
    ) -> bytes:
        """The body of a successful answer; an error status or a transport failure raises the
        matching `KubeError`."""
        try:
            async with self.open(
                method,
                path,
                query=query,
                body=body,
                content_type=content_type,
                limits=aiohttp.ClientTimeout(total=seconds),
            ) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise _status_error(response.status, raw, response.headers, what)
                return raw
        except Exception as exc:
            raise translate(exc, what) from exc


async def _lines(response: aiohttp.ClientResponse, what: str) -> AsyncIterator[bytes]:
    """The newline-delimited lines of a streamed body, however the chunks fall."""
    pending = b""
    while True:
        try:
            chunk = await response.content.readany()
        except Exception as exc:
            raise translate(exc, what) from exc
        if not chunk:
            if pending.strip():
                yield pending
            return
        pending += chunk
        if b"\n" not in chunk:
            if len(pending) > WATCH_LINE_MAX:
                raise KubeError(f"{what}: an event over {WATCH_LINE_MAX} bytes")
            continue
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield line


def _lease_from(obj: Mapping[str, Any]) -> StoredLease:
    spec = obj.get("spec") or {}
    return StoredLease(
        record=LeaseRecord(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=_parse_time(spec.get("acquireTime")),
            renew_time=_parse_time(spec.get("renewTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
        ),
        resource_version=str((obj.get("metadata") or {}).get("resourceVersion") or ""),
    )


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value)).astimezone(UTC)
    except ValueError:
        return None


def event_body(
    *, namespace: str, involved: Mapping[str, str], reason: str, message: str, warning: bool
) -> dict[str, Any]:
    """A core/v1 Event about ``involved`` (apiVersion, kind, name, uid), as this controller
    reports it: one occurrence, now, from ``COMPONENT``."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{involved['name']}."},
        "involvedObject": {**involved, "namespace": namespace},
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def _micro_time(value: datetime | None) -> str | None:
    """MicroTime wants exactly six fractional digits, which isoformat() drops at .000000."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _lease_body(name: str, record: LeaseRecord, resource_version: str | None) -> dict[str, Any]:
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


async def load_api_client(kubeconfig: str | None, env: Mapping[str, str]) -> ApiClient:
    """KUBECONFIG when set, else the in-cluster service account, else ~/.kube/config.

    Raises `credentials.CredentialsError` (one line) when there are none or they are broken.
    """
    return ApiClient(await credentials.load(kubeconfig, env))


class KubeCluster:
    """`Cluster` over `ApiClient`, for one namespace."""

    def __init__(self, api: ApiClient, *, namespace: str, request_timeout: float = 10.0) -> None:
        self._api = api
        self._ns = namespace
        self._timeout = request_timeout
        self._pods = f"/api/v1/namespaces/{namespace}/pods"
        self._leases = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    async def close(self) -> None:
        await self._api.close()

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        request_timeout: float | None = None,
    ) -> bytes:
        return await self._api.request(
            method.upper(),
            path,
            what=what,
            query=query,
            body=None if body is None else orjson.dumps(body),
            content_type=content_type,
            seconds=request_timeout or self._timeout,
        )

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
        calls go through here (and `watch_json`), so they depend on this seam only.
        """
        raw = await self._call(
            method,
            path,
            f"{method.lower()} {path}",
            query=query,
            body=body,
            content_type=content_type,
            request_timeout=request_timeout,
        )
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
        # The server ends the watch after timeoutSeconds; the read timeout only catches a
        # connection that went silent (bookmarks arrive about once a minute).
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._timeout, sock_read=timeout_seconds + 30
        )
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    response = await stack.enter_async_context(
                        self._api.open("GET", path, query=params, limits=timeout)
                    )
                    if response.status >= 400:
                        raw = await response.read()
                        raise _status_error(response.status, raw, response.headers, what)
                except Exception as exc:
                    raise translate(exc, what) from exc
                async for line in _lines(response, what):
                    event = orjson.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        code = int(obj.get("code") or 0)
                        raise error_for_status(code, f"{what}: {obj.get('message', '')}"[:300])
                    yield WatchEvent(kind=str(kind), raw=obj)
        except orjson.JSONDecodeError as exc:
            raise KubeError(f"{what}: an event that is not JSON") from exc

    async def get_pod(self, name: str) -> PodFacts | None:
        what = f"get pod {name}"
        try:
            return parse_pod(orjson.loads(await self._call("GET", f"{self._pods}/{name}", what)))
        except NotFound:
            return None

    async def _pages(self, *, selector: str, page_size: int) -> AsyncIterator[dict[str, Any]]:
        """The pages of a paginated list, decoded from raw JSON one at a time."""
        token: str | None = None
        while True:
            query = {"labelSelector": selector, "limit": str(page_size)}
            if token:
                query["continue"] = token
            raw = await self._call(
                "GET", self._pods, "list pods", query=query, request_timeout=self._timeout * 3
            )
            page: dict[str, Any] = orjson.loads(raw)
            del raw
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
        query = {"labelSelector": selector, "resourceVersion": resource_version}
        async for event in self.watch_json(
            self._pods, query=query, timeout_seconds=timeout_seconds
        ):
            yield event

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
        raw = await self._call(
            "PATCH",
            f"{self._pods}/{name}",
            f"patch pod {name}",
            body=body,
            content_type=MERGE_PATCH,
        )
        return parse_pod(orjson.loads(raw))

    async def delete_pod(self, *, name: str, uid: str, resource_version: str = "") -> bool:
        preconditions: dict[str, str] = {"uid": uid}
        if resource_version:
            preconditions["resourceVersion"] = resource_version
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions}
        try:
            await self._call("DELETE", f"{self._pods}/{name}", f"delete pod {name}", body=options)
        except NotFound:
            return False
        return True

    async def get_lease(self, name: str) -> StoredLease | None:
        try:
            raw = await self._call("GET", f"{self._leases}/{name}", f"get lease {name}")
        except NotFound:
            return None
        return _lease_from(orjson.loads(raw))

    async def create_lease(self, name: str, record: LeaseRecord) -> StoredLease:
        body = _lease_body(name, record, None)
        raw = await self._call("POST", self._leases, f"create lease {name}", body=body)
        return _lease_from(orjson.loads(raw))

    async def update_lease(
        self, name: str, record: LeaseRecord, *, resource_version: str
    ) -> StoredLease:
        body = _lease_body(name, record, resource_version)
        raw = await self._call("PUT", f"{self._leases}/{name}", f"update lease {name}", body=body)
        return _lease_from(orjson.loads(raw))

    async def record_event(
        self, *, pod: PodFacts, reason: str, message: str, warning: bool = False
    ) -> None:
        involved = {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid}
        event = event_body(
            namespace=self._ns, involved=involved, reason=reason, message=message, warning=warning
        )
        path = f"/api/v1/namespaces/{self._ns}/events"
        await self._call("POST", path, f"create event for {pod.name}", body=event)

    async def record_lease_event(self, *, name: str, reason: str, message: str) -> None:
        involved = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "name": name}
        event = event_body(
            namespace=self._ns, involved=involved, reason=reason, message=message, warning=True
        )
        path = f"/api/v1/namespaces/{self._ns}/events"
        await self._call("POST", path, f"create event for lease {name}", body=event)

    async def can_i(self, *, verb: str, resource: str, group: str = "", name: str = "") -> bool:
        attributes = {"namespace": self._ns, "verb": verb, "resource": resource, "group": group}
        if name:
            attributes["name"] = name
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        raw = await self._call("POST", path, "self subject access review", body=review)
        return bool((orjson.loads(raw).get("status") or {}).get("allowed"))
