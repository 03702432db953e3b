"""A fault-injecting proxy between the controllers and kube-apiserver.

The controllers' kubeconfig points at this proxy instead of the API server; the proxy forwards
every request and, when told to, misbehaves the way a loaded or broken API path does: added
latency, 429 with ``Retry-After``, 500 and 503, connection resets, a black hole that accepts a
request and never answers, and a total outage (nothing listens on the port for N seconds).

Design (the one choice a reader might get wrong): HTTP-level faults need the HTTP exchange, so
the proxy terminates TLS. It serves with the API server's own certificate and key (signed by the
plane's serving CA for 127.0.0.1, so the controllers' kubeconfig keeps its CA unchanged), it
requires a client certificate signed by the plane's client CA whose subject is exactly the
identity it forwards as, and it connects upstream with that same client certificate (the one
the controllers' kubeconfig carries: every replica shares the ServiceAccount identity). So the
API server still sees the restricted identity, RBAC still applies, and the audit log still
attributes every write to it. A client with any other identity gets 403 from the proxy and
nothing is forwarded. Requests go upstream with the client's own headers and nothing more (an
HTTP client library would add ``Accept-Encoding``, and kube-apiserver would then gzip large
lists the client never asked to be compressed), and answers come back byte for byte, streamed
chunk by chunk, so watches pass through; a reset or an outage also cuts the watches that are
open. Request bodies are read whole (they are small JSON patches and deletes). Compression is
a fault of its own (``COMPRESS``): an access proxy that asks for gzip on the client's behalf, as
some gateways in front of kube-apiserver do.

Faults apply to new requests with a probability (1.0 = every request); every injected fault is
counted by kind. All randomness comes from the `random.Random` handed in, so a seeded run
decides the same way.

    proxy = FaultProxy.for_kubeconfig(kubeconfig, pki_dir=plane.workdir / "pki", ...)
    await proxy.start()
    proxy.set_fault(Fault(FaultKind.THROTTLE, probability=0.5, retry_after=1))
    await proxy.begin_outage(); ...; await proxy.end_outage()
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import logging
import random
import ssl
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from testbed.kube import abort_stream

__all__ = ["Fault", "FaultKind", "FaultProxy", "proxied_kubeconfig"]

log = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy recomputes.
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
"""Headers aiohttp's client adds when the caller did not: the proxy adds none of them."""
CONNECT_TIMEOUT_S: Final = 5.0


class FaultKind(enum.StrEnum):
    LATENCY = "latency"
    THROTTLE = "throttle-429"
    ERROR_500 = "error-500"
    ERROR_503 = "error-503"
    RESET = "reset"
    BLACKHOLE = "blackhole"
    COMPRESS = "compress"
    """Forward with ``Accept-Encoding: gzip`` added: kube-apiserver then gzips answers over
    128 KB, as it does behind an access proxy that asks for compression."""


@dataclass(frozen=True)
class Fault:
    """What to do to a share of the new requests."""

    kind: FaultKind
    probability: float = 1.0
    latency: float = 0.5
    """Seconds added before forwarding (LATENCY)."""
    retry_after: int = 1
    """The ``Retry-After`` seconds of a 429 (THROTTLE)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be within [0, 1], got {self.probability}")
        if self.latency < 0 or self.retry_after < 0:
            raise ValueError("latency and retry_after must not be negative")


@dataclass(frozen=True)
class ListSize:
    wire_bytes: int
    json_bytes: int
    pods: int
    encoding: str
    """The answer's Content-Encoding, empty when none."""


def _is_pod_list(path: str, query: Mapping[str, str]) -> bool:
    """A LIST of pods (not a watch, not one pod): ``/api/v1[/namespaces/<ns>]/pods``."""
    parts = path.strip("/").split("/")
    shape = parts[:2] == ["api", "v1"] and parts[-1] == "pods"
    return shape and len(parts) in (3, 5) and query.get("watch") not in ("true", "1")


def _status_body(code: int, reason: str, message: str) -> bytes:
    """A Kubernetes ``Status`` object, as the API server sends with an error."""
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    ).encode()


def _kubeconfig_user(kubeconfig: dict[str, Any]) -> dict[str, Any]:
    contexts = {c["name"]: c["context"] for c in kubeconfig["contexts"]}
    users = {u["name"]: u["user"] for u in kubeconfig["users"]}
    user: dict[str, Any] = users[contexts[kubeconfig["current-context"]]["user"]]
    return user


def _common_name(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def proxied_kubeconfig(kubeconfig: Path, server: str, out: Path) -> Path:
    """A copy of ``kubeconfig`` (JSON, as the testbed writes them) whose server is ``server``."""
    config = json.loads(kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = server
    out.write_text(json.dumps(config, indent=2))
    out.chmod(0o600)
    return out


class FaultProxy:
    """Forwards HTTPS requests to ``upstream`` as one client identity; injects faults."""

    def __init__(
        self,
        *,
        upstream: str,
        upstream_ca: Path,
        client_cert: Path,
        client_key: Path,
        server_cert: Path,
        server_key: Path,
        client_ca: Path,
        rng: random.Random,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = port
        self._rng = rng
        self._identity = _common_name(client_cert.read_bytes())
        self._upstream_ssl = ssl.create_default_context(cafile=str(upstream_ca))
        self._upstream_ssl.load_cert_chain(str(client_cert), str(client_key))
        self._server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_ssl.load_cert_chain(str(server_cert), str(server_key))
        self._server_ssl.load_verify_locations(cafile=str(client_ca))
        self._server_ssl.verify_mode = ssl.CERT_REQUIRED
        self._fault: Fault | None = None
        self._down = False
        self._server: web.Server | None = None
        self._listener: asyncio.Server | None = None
        self._session: aiohttp.ClientSession | None = None
        self._streams: set[asyncio.Transport] = set()
        self.injected: Counter[str] = Counter()
        """Faults injected so far, by kind (``outage`` counts the outages begun)."""
        self.forwarded = 0
        """Requests forwarded upstream."""
        self.largest_list: ListSize | None = None
        """The largest pod list (a page) answered through the proxy, by decoded size."""
        self.lists: Counter[str] = Counter()
        """Pod lists answered, by Content-Encoding (``identity`` when none)."""

    # -- construction

    @classmethod
    def for_kubeconfig(
        cls, kubeconfig: Path, *, pki_dir: Path, rng: random.Random, workdir: Path
    ) -> FaultProxy:
        """A proxy (not started) forwarding as the identity of ``kubeconfig`` (a testbed one).

        ``pki_dir`` is the local plane's ``pki`` directory (serving CA, client CA, the API
        server's certificate and key); ``workdir`` receives the identity's key files.
        """
        config = json.loads(kubeconfig.read_text())
        user = _kubeconfig_user(config)
        cluster = config["clusters"][0]["cluster"]
        workdir.mkdir(parents=True, exist_ok=True)
        cert, key = workdir / "proxy-client.crt", workdir / "proxy-client.key"
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        key.chmod(0o600)
        proxy = cls(
            upstream=cluster["server"],
            upstream_ca=pki_dir / "serving-ca.crt",
            client_cert=cert,
            client_key=key,
            server_cert=pki_dir / "apiserver.crt",
            server_key=pki_dir / "apiserver.key",
            client_ca=pki_dir / "client-ca.crt",
            rng=rng,
        )
        return proxy

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self._upstream_ssl, limit=0, force_close=False)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # Forward what the client sent, nothing of aiohttp's own.
            skip_auto_headers=_AUTO_HEADERS,
        )
        self._server = web.Server(self._handle, handler_cancellation=True)
        await self._listen()

    async def stop(self) -> None:
        await self._close_listener()
        if self._server is not None:
            await self._server.shutdown(0.5)
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- faults

    @property
    def fault(self) -> Fault | None:
        return self._fault

    def set_fault(self, fault: Fault | None) -> None:
        """Apply ``fault`` to new requests from now on (None: forward faithfully).

        A RESET fault also cuts every connection open now, watches included; so does COMPRESS
        (an access proxy that starts compressing after a reload drops its connections), so the
        clients' next lists, not only their later ones, come compressed.
        """
        self._fault = fault
        if fault is not None and fault.kind in (FaultKind.RESET, FaultKind.COMPRESS):
            self._abort_all()

    async def begin_outage(self) -> None:
        """Stop listening and cut every connection: clients get refused connections."""
        if self._down:
            return
        self._down = True
        self.injected["outage"] += 1
        await self._close_listener()

    async def end_outage(self) -> None:
        """Listen again on the same port."""
        if not self._down:
            return
        self._down = False
        await self._listen()

    # -- internals

    async def _listen(self) -> None:
        assert self._server is not None
        self._listener = await asyncio.get_running_loop().create_server(
            self._server, self.host, self.port, ssl=self._server_ssl, reuse_address=True
        )
        self.port = self._listener.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self._abort_all()
        if listener is not None:
            await listener.wait_closed()

    def _abort_all(self) -> None:
        if self._server is not None:
            for handler in list(self._server.connections):
                if handler.transport is not None:
                    handler.transport.abort()
        for transport in list(self._streams):
            transport.abort()
        self._streams.clear()

    def _measure_list(self, raw: bytes, encoding: str) -> None:
        body = zlib.decompress(raw, wbits=47) if encoding == "gzip" else raw
        pods = len(json.loads(body).get("items") or ())
        size = ListSize(wire_bytes=len(raw), json_bytes=len(body), pods=pods, encoding=encoding)
        if self.largest_list is None or size.json_bytes > self.largest_list.json_bytes:
            self.largest_list = size
        self.lists[encoding or "identity"] += 1

    def _choose(self) -> Fault | None:
        fault = self._fault
        if fault is None or self._rng.random() >= fault.probability:
            return None
        return fault

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        subject = dict(pair[0] for pair in (peer or {}).get("subject", ()))
        if subject.get("commonName") != self._identity:
            return web.Response(
                status=403,
                body=_status_body(403, "Forbidden", "the proxy forwards one identity only"),
                content_type="application/json",
            )
        fault = self._choose()
        if fault is not None:
            self.injected[fault.kind.value] += 1
            if fault.kind is FaultKind.COMPRESS:
                return await self._forward(request, compress=True)
            answer = await self._inject(fault, request)
            if answer is not None:
                return answer
        return await self._forward(request)

    async def _inject(self, fault: Fault, request: web.BaseRequest) -> web.StreamResponse | None:
        """The answer of a fault, or None to forward after all (LATENCY)."""
        kind = fault.kind
        if kind is FaultKind.LATENCY:
            await asyncio.sleep(fault.latency)
            return None
        if kind is FaultKind.THROTTLE:
            return web.Response(
                status=429,
                headers={"Retry-After": str(fault.retry_after)},
                body=_status_body(429, "TooManyRequests", "injected: too many requests"),
                content_type="application/json",
            )
        if kind in (FaultKind.ERROR_500, FaultKind.ERROR_503):
            code = 500 if kind is FaultKind.ERROR_500 else 503
            reason = "InternalError" if code == 500 else "ServiceUnavailable"
            return web.Response(
                status=code,
                body=_status_body(code, reason, f"injected: {code}"),
                content_type="application/json",
            )
        transport = request.transport
        if kind is FaultKind.RESET:
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError  # nothing to answer on a reset connection
        # BLACKHOLE: the request was accepted; never answer it. The client's timeout ends it
        # (handler cancellation stops this coroutine when the connection goes).
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _forward(
        self, request: web.BaseRequest, *, compress: bool = False
    ) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        if compress:
            headers = {k: v for k, v in headers.items() if k.lower() != "accept-encoding"}
            headers["Accept-Encoding"] = "gzip"
        body = await request.read()
        pod_list = request.method == "GET" and _is_pod_list(request.path, request.query)
        kept: list[bytes] = []
        try:
            upstream = await self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # The API server is not there: the client sees its connection dropped, as it would
            # without the proxy.
            log.info("upstream unreachable: %r", exc)
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError from exc
        self.forwarded += 1
        transport = request.transport
        try:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP},
            )
            if transport is not None:
                self._streams.add(transport)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                if pod_list:
                    kept.append(chunk)
                await response.write(chunk)
            await response.write_eof()
            if pod_list and upstream.status == 200:
                self._measure_list(b"".join(kept), upstream.headers.get("Content-Encoding", ""))
            return response
        except (aiohttp.ClientError, OSError) as exc:
            # Upstream died mid-stream (an API server restart): cut the client off too.
            log.info("stream ended: %r", exc)
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError from exc
        finally:
            if transport is not None:
                self._streams.discard(transport)
            if upstream.content.at_eof():
                upstream.release()
            else:
                abort_stream(upstream)  # a half-read stream cannot go back to the pool
