"""The Kubernetes API, as the controller uses it: a few calls, named errors, no models inward.

`Cluster` is the seam: the HTTP layer, the sweeper and the elector depend on this protocol, the
component tests give them a hand-written in-memory fake, and `KubeCluster` implements it over
`ApiClient`, a thin HTTP/1.1 client on aiohttp: JSON in, JSON out, by path. (A generated client
library was here before; it imported ~860 modules and held 38 MiB for a dozen calls, all but
three of which bypassed its models already.) Where the credentials come from is `credentials`.

Errors are mapped once, here, to a small hierarchy: 404 becomes `NotFound`, 409 (and a failed
precondition) `Conflict`, 401/403 `Forbidden`, and everything transient (timeouts, connection
errors, 429, 5xx) `Unavailable`, which carries Retry-After when the server sent one.

Bodies are decoded as the server encoded them. This client asks for none
(``Accept-Encoding: identity``), but a proxy in front of kube-apiserver may ask for gzip on its
behalf, and kube-apiserver then compresses answers above 128 KB: ``gzip`` and ``deflate`` are
decoded (streamed, for watches), and any other ``Content-Encoding`` is refused by name
(`Undecodable`) before a byte of it is parsed.

A watch that goes silent without closing (a half-open connection, a proxy that stopped
forwarding) is noticed: kube-apiserver sends a BOOKMARK on a quiet watch about once a minute
(`BOOKMARK_INTERVAL_SECONDS`), so a watch that has sent nothing at all for longer than that plus
a margin (`watch_silence`) is given up (`Silent`) and the caller lists again. client-go relies
on HTTP/2 pings for this; this client speaks HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import orjson
from multidict import CIMultiDict

from jibri_pod_controller.adapters import credentials
from jibri_pod_controller.adapters.credentials import ClientCertificate, Endpoint, Location
from jibri_pod_controller.core.leasing import LeaseRecord
from jibri_pod_controller.core.pods import PodFacts, PodParseError, parse_pod

MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "jibri-pod-controller"
CONNECTIONS = 64
"""Connections to the API server at most: a burst of detaches queues behind them rather than
opening one per request. Each TLS connection holds its buffers; with 16, a 200-webhook burst
waited for connections whenever the API server was slow (each of its answers holds one)."""
WATCH_LINE_MAX = 16 * 1024 * 1024
BOOKMARK_INTERVAL_SECONDS = 60.0
"""kube-apiserver sends a BOOKMARK on a quiet watch (when asked: ``allowWatchBookmarks``) a
minute after the previous one, and one 2 s before the watch's ``timeoutSeconds`` runs out.
Measured on v1.36.3 (bench/watch_bookmarks.py, docs/credentials.md): gaps of 57.7 to 60.8 s; a
watch of 60 s or less may get none before the server ends it."""
WATCH_SILENCE_MARGIN_SECONDS = 15.0


def watch_silence(timeout_seconds: float) -> float:
    """How long a live watch can send nothing at all: the next bookmark, or the server's end
    of the watch, whichever comes first, plus a margin for a busy server. A longer silence is
    a dead connection (75 s for the 300 s watches the controller asks for)."""
    return min(timeout_seconds, BOOKMARK_INTERVAL_SECONDS) + WATCH_SILENCE_MARGIN_SECONDS


DECODED_PIECE = 1024 * 1024
"""Decompressed output is produced in pieces of at most this size, whatever the input holds."""

log = logging.getLogger("jibri_pod_controller.kube")


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


class Silent(Unavailable):
    """A watch sent nothing, not even a BOOKMARK, for longer than a live one ever does."""

    kind = "silent"


class Undecodable(KubeError):
    """The answer came in a Content-Encoding this client does not decode (or a broken one)."""

    kind = "undecodable"


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


def content_coding(headers: Mapping[str, str], what: str) -> str:
    """The response's content coding: "" (none), "gzip" or "deflate"; `Undecodable` for any
    other, named (br, zstd, compress, or a stack of several)."""
    value = headers.get("Content-Encoding", "")
    coding = value.strip().lower()
    if coding in ("", "identity"):
        return ""
    if coding in ("gzip", "x-gzip"):
        return "gzip"
    if coding == "deflate":
        return "deflate"
    raise Undecodable(
        f"{what}: the answer is in Content-Encoding {value[:60]!r}, which this client does not "
        "decode (only gzip and deflate); is a proxy asking for it?"
    )


class BodyDecoder:
    """Streaming gzip or deflate decoding: feed the bytes as they arrive, in any pieces.

    gzip may hold several members one after the other; deflate is the zlib format HTTP names,
    or raw deflate, which some servers send instead (told apart by the zlib header). An empty
    body is an empty body, whatever its coding.
    """

    def __init__(self, coding: str, what: str) -> None:
        self._coding = coding
        self._what = what
        self._pending = b""
        self._inflater: Any = None
        self._ended = False
        """The current stream (gzip member, deflate stream) is complete."""
        self._fed = False

    def _start(self) -> bool:
        if self._coding == "gzip":
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            return True
        if len(self._pending) < 2:
            return False
        first, second = self._pending[0], self._pending[1]
        zlib_header = first & 0x0F == 8 and (first << 8 | second) % 31 == 0
        self._inflater = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        return True

    def feed(self, data: bytes) -> Iterator[bytes]:
        if not data:
            return
        self._fed = True
        if self._inflater is None:
            self._pending += data
            if not self._start():
                return
            data, self._pending = self._pending, b""
        try:
            while data:
                if self._ended:
                    if self._coding != "gzip":
                        return  # bytes after the end of a deflate stream mean nothing
                    self._start()  # the next gzip member
                    self._ended = False
                out = self._inflater.decompress(data, DECODED_PIECE)
                if out:
                    yield out
                while len(out) == DECODED_PIECE and not self._inflater.unconsumed_tail:
                    out = self._inflater.decompress(b"", DECODED_PIECE)
                    if out:
                        yield out
                if self._inflater.eof:
                    self._ended = True
                    data = self._inflater.unused_data
                else:
                    data = self._inflater.unconsumed_tail
        except zlib.error as exc:
            raise Undecodable(f"{self._what}: a broken {self._coding} body ({exc})") from None

    def finish(self) -> None:
        """The body ended: it must have ended where the compressed stream ends."""
        if self._fed and not self._ended:
            raise Undecodable(f"{self._what}: a truncated {self._coding} body")


def decode_body(raw: bytes, coding: str, what: str) -> bytes:
    if not coding:
        return raw
    decoder = BodyDecoder(coding, what)
    out = b"".join(decoder.feed(raw))
    decoder.finish()
    return out


async def read_body(response: aiohttp.ClientResponse, what: str) -> bytes:
    """The whole body of ``response``, decoded."""
    raw = await response.read()
    return decode_body(raw, content_coding(response.headers, what), what)


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
    settled once from the configuration. No compression asked for: on a cluster network gzip
    costs the API server and this process more CPU than it saves (what comes compressed anyway
    is decoded). A 401 with a credential that can change (a rotated ServiceAccount token, a token
    file, an exec plugin) gets a fresh one and is retried once.

    The client certificate is asked of the endpoint before each request (a cached value, but for
    an exec plugin whose credential expired, or certificate files looked at again once a
    second). When it changed, a new TLS context and connection pool present it from then on,
    and the previous pool is closed with its connections, those in use included (client-go
    closes them too when an exec plugin rotates its certificate): a watch on one is cut and
    listed again.
    """

    def __init__(self, endpoint: Endpoint, *, connections: int = CONNECTIONS) -> None:
        self.endpoint = endpoint
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._presented: ClientCertificate | None = None
        self._rotating = asyncio.Lock()
        self._in_use: dict[aiohttp.ClientSession, set[aiohttp.ClientResponse]] = {}
        """The responses being read, by pool: closing a pool does not tell their readers."""
        self.rotations = 0
        """How many times the client certificate changed during the run."""

    def _new_session(self, context: ssl.SSLContext | bool) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._connections, ssl=context, enable_cleanup_closed=False
        )
        return aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            auto_decompress=False,
            headers={
                "Accept": "application/json",
                "Accept-Encoding": "identity",
                "User-Agent": COMPONENT,
            },
        )

    def _replaces(self, certificate: ClientCertificate | None) -> bool:
        """Whether ``certificate`` is a newer one than the pool presents."""
        if certificate == self._presented:
            return False
        # Never back: a request that fetched the certificate before a rotation is late.
        return (
            certificate is None
            or self._presented is None
            or (certificate.serial > self._presented.serial)
        )

    async def session(self) -> aiohttp.ClientSession:
        """The pool that presents the current client certificate (a new one if it changed)."""
        source = self.endpoint.certificate
        certificate = await source.certificate() if source is not None else None
        if self._session is not None and not self._replaces(certificate):
            return self._session
        async with self._rotating:
            if self._session is not None and not self._replaces(certificate):
                return self._session  # another request put it in place meanwhile
            tls = self.endpoint.tls
            # Building the context reads the CA bundle and the key pair from files: in a
            # worker thread (2 ms with a CA bundle, 50 ms with the system's).
            context: ssl.SSLContext | bool = (
                await asyncio.to_thread(tls.context, certificate) if tls is not None else True
            )
            old, self._session = self._session, self._new_session(context)
            self._presented = certificate
        if old is not None:
            self.rotations += 1
            log.info(
                "client certificate changed: new connections present it, the previous ones "
                "are closed",
                extra={"rotations": self.rotations},
            )
            # aiohttp closes a pool's connections without waking whoever reads a response on
            # one (a watch would wait for its read timeout): close those responses first.
            for response in self._in_use.pop(old, set()):
                response.close()
            await old.close()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _headers(self, body: bytes | None, content_type: str) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict(self.endpoint.headers)
        if body is not None:
            headers["Content-Type"] = content_type
        source = self.endpoint.token
        token = await source.token() if source is not None else ""
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif self.endpoint.basic_auth is not None:
            user, password = self.endpoint.basic_auth
            encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {encoded}"
        return headers

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
        """The response to one request, released on exit; errors are the caller's to map.

        An answer in a Content-Encoding this client cannot decode raises `Undecodable` here,
        before any of it is read.
        """
        source = self.endpoint.token
        url = self.endpoint.server + path
        for attempt in (1, 2):
            # The token first: it refreshes an expired credential, certificate included.
            headers = await self._headers(body, content_type)
            session = await self.session()
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
            in_use = self._in_use.setdefault(session, set())
            in_use.add(response)
            try:
                content_coding(response.headers, f"{method.lower()} {path}")
                yield response
            finally:
                in_use.discard(response)
                if not in_use and self._in_use.get(session) is in_use:
                    del self._in_use[session]
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
        """The body of a successful answer (decoded); an error status or a transport failure
        raises the matching `KubeError`."""
        try:
            async with self.open(
                method,
                path,
                query=query,
                body=body,
                content_type=content_type,
                limits=aiohttp.ClientTimeout(total=seconds),
            ) as response:
                raw = await read_body(response, what)
                if response.status >= 400:
                    raise _status_error(response.status, raw, response.headers, what)
                return raw
        except Exception as exc:
            raise translate(exc, what) from exc


async def _lines(
    response: aiohttp.ClientResponse, what: str, *, silence: float | None = None
) -> AsyncIterator[bytes]:
    """The newline-delimited lines of a streamed body (decoded), however the chunks fall.

    With ``silence``, the read timeout of the request: nothing received for that long raises
    `Silent`.
    """
    coding = content_coding(response.headers, what)
    decoder = BodyDecoder(coding, what) if coding else None
    pending = b""
    while True:
        try:
            chunk = await response.content.readany()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            if silence is None:
                raise translate(exc, what) from exc
            raise Silent(
                f"{what}: nothing received for {silence:g} s, not even a bookmark: the "
                "connection is taken for dead"
            ) from exc
        except Exception as exc:
            raise translate(exc, what) from exc
        if not chunk:
            if decoder is not None:
                decoder.finish()
            if pending.strip():
                yield pending
            return
        pieces = decoder.feed(chunk) if decoder is not None else (chunk,)
        for piece in pieces:
            pending += piece
            if b"\n" not in piece:
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


async def load_api_client(location: Location, env: Mapping[str, str]) -> ApiClient:
    """A client for the credentials at ``location`` (`credentials.locate`), read now.

    Raises `credentials.CredentialsError` (one line) when they are broken.
    """
    endpoint = await credentials.read(location, env)
    log.info(
        "Kubernetes API",
        extra={"server": endpoint.server, "credentials": endpoint.source, "notes": endpoint.notes},
    )
    return ApiClient(endpoint)


class KubeCluster:
    """`Cluster` over `ApiClient`, for one namespace."""

    def __init__(
        self,
        api: ApiClient,
        *,
        namespace: str,
        request_timeout: float = 10.0,
        watch_silence: float | None = None,
    ) -> None:
        self._api = api
        self._ns = namespace
        self._timeout = request_timeout
        self._watch_silence = watch_silence
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
        # The server ends the watch after timeoutSeconds. The read timeout is the silence
        # allowed: a live watch sends a bookmark at least every minute or so.
        silence = self._watch_silence or watch_silence(timeout_seconds)
        timeout = aiohttp.ClientTimeout(total=None, connect=self._timeout, sock_read=silence)
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    response = await stack.enter_async_context(
                        self._api.open("GET", path, query=params, limits=timeout)
                    )
                    if response.status >= 400:
                        raw = await read_body(response, what)
                        raise _status_error(response.status, raw, response.headers, what)
                except Exception as exc:
                    raise translate(exc, what) from exc
                async for line in _lines(response, what, silence=silence):
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
