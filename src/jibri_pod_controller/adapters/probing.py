"""Health probes of Jibri pods: bounded concurrency, a timeout per request, a cap on the body.

A probe never raises: every way a Jibri can fail to answer (refused, black-holed, slow, a 500,
a huge or invalid body, an unknown status) becomes a `Failed` value with a reason, so one bad pod
cannot abort or stall a sweep.

The request is a plain HTTP/1.0 GET on an asyncio protocol, not an aiohttp client request nor
an asyncio stream. The sweeper sends one request per pod and per sweep to a different address
each time, so there is nothing to pool, and the probe's CPU is most of a sweep's. Measured on
5,000 probes, 100 at a time, against a trivial local server: aiohttp's client 0.58 ms of CPU
per probe, streams 0.21 ms, this protocol 0.20 ms on asyncio's loop and 0.09 ms on uvloop (the
loop the controller runs on). HTTP/1.0 keeps the reply simple: no chunked encoding, and the
server closes the connection after the body.
"""

from __future__ import annotations

import asyncio
from typing import cast

import orjson

from jibri_pod_controller.core.decisions import Failed, ProbeFailure, ProbeResult, Reported
from jibri_pod_controller.core.jibri import InvalidMessage, parse_health

HEALTH_PATH = "/jibri/api/v1.0/health"
MAX_HEADER_BYTES = 16 * 1024


class _BadResponse(Exception):
    pass


def health_request(ip: str, port: int) -> bytes:
    """The HTTP/1.0 request for a Jibri's health API (IPv6 hosts in brackets)."""
    host = f"[{ip}]" if ":" in ip else ip
    return (
        f"GET {HEALTH_PATH} HTTP/1.0\r\nHost: {host}:{port}\r\n"
        "Accept: application/json\r\nUser-Agent: jibri-pod-controller\r\n\r\n"
    ).encode()


def _is_ascii_digits(text: str) -> bool:
    """HTTP's DIGIT is 0-9 only; ``str.isdigit`` is also true for "²" or "٣"."""
    return text.isascii() and text.isdigit()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and (lower-cased) headers of an HTTP/1.x response head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not _is_ascii_digits(parts[1]):
        raise _BadResponse(f"bad status line {lines[0][:40]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _decode(body: bytes) -> ProbeResult:
    try:
        return Reported(parse_health(orjson.loads(body)).busy)
    except (orjson.JSONDecodeError, InvalidMessage) as exc:
        return Failed(ProbeFailure.INVALID, str(exc)[:120])


class _Exchange(asyncio.Protocol):
    """One health request on a fresh connection; ``done`` gets the result once it is known."""

    def __init__(self, request: bytes, max_bytes: int, done: asyncio.Future[ProbeResult]) -> None:
        self._request = request
        self._max_bytes = max_bytes
        self._done = done
        self._buffer = bytearray()
        self._head_read = False
        self._length: int | None = None

    def _finish(self, result: ProbeResult) -> None:
        if not self._done.done():
            self._done.set_result(result)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Typed loosely: uvloop's transports implement the interface without subclassing it.
        cast(asyncio.WriteTransport, transport).write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._done.done():
            return
        self._buffer += data
        if not self._head_read and not self._read_head():
            return
        if self._length is not None:
            if len(self._buffer) >= self._length:
                self._finish(_decode(bytes(self._buffer[: self._length])))
        elif len(self._buffer) > self._max_bytes:
            self._finish(Failed(ProbeFailure.TOO_LARGE))

    def _read_head(self) -> bool:
        """Parse the head once it is complete; False while it is not, or when it ends it."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEADER_BYTES:
            if end > MAX_HEADER_BYTES or len(self._buffer) > MAX_HEADER_BYTES + 4:
                self._finish(Failed(ProbeFailure.INVALID, "response head too large"))
            return False
        try:
            status, headers = _parse_head(bytes(self._buffer[:end]))
        except _BadResponse as exc:
            self._finish(Failed(ProbeFailure.INVALID, str(exc)))
            return False
        if status != 200:
            self._finish(Failed(ProbeFailure.HTTP_STATUS, str(status)))
            return False
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._finish(Failed(ProbeFailure.INVALID, "chunked reply to an HTTP/1.0 request"))
            return False
        declared = headers.get("content-length")
        if declared is not None:
            if not _is_ascii_digits(declared):
                self._finish(Failed(ProbeFailure.INVALID, "bad content-length"))
                return False
            if int(declared) > self._max_bytes:
                self._finish(Failed(ProbeFailure.TOO_LARGE, declared))
                return False
            self._length = int(declared)
        del self._buffer[: end + 4]
        self._head_read = True
        return True

    def _ended(self, exc: Exception | None) -> None:
        if exc is not None:
            self._finish(Failed(ProbeFailure.CONNECT, type(exc).__name__))
        elif self._head_read and self._length is None:
            self._finish(_decode(bytes(self._buffer)))  # a close-delimited body is complete
        else:
            self._finish(Failed(ProbeFailure.CONNECT, "closed before the end of the reply"))

    def eof_received(self) -> bool | None:
        self._ended(None)
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)


class Prober:
    def __init__(self, *, port: int, timeout: float, max_bytes: int, concurrency: int) -> None:
        self._port = port
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._limit = asyncio.Semaphore(concurrency)

    async def close(self) -> None:
        """Nothing is pooled; kept so the lifecycle reads the same as for other clients."""

    async def probe(self, ip: str) -> ProbeResult:
        async with self._limit:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[ProbeResult] = loop.create_future()
            request = health_request(ip, self._port)
            transport: asyncio.BaseTransport | None = None
            try:
                async with asyncio.timeout(self._timeout):
                    transport, _ = await loop.create_connection(
                        lambda: _Exchange(request, self._max_bytes, done), ip, self._port
                    )
                    return await done
            except TimeoutError:
                return Failed(ProbeFailure.TIMEOUT)
            except OSError as exc:
                return Failed(ProbeFailure.CONNECT, type(exc).__name__)
            finally:
                if transport is not None:
                    transport.close()
