"""Health probes of Jibri pods: bounded concurrency, a timeout per request, a cap on the body.

A probe never raises: every way a Jibri can fail to answer (refused, black-holed, slow, a 500,
a huge or invalid body, an unknown status) becomes a `Failed` value with a reason, so one bad pod
cannot abort or stall a sweep. Connections are not kept alive: each pod is asked once per sweep.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from jibri_pod_controller.decisions import Failed, ProbeFailure, ProbeResult, Reported
from jibri_pod_controller.jibri import InvalidMessage, parse_health

HEALTH_PATH = "/jibri/api/v1.0/health"


def health_url(ip: str, port: int) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}{HEALTH_PATH}"


class Prober:
    def __init__(self, *, port: int, timeout: float, max_bytes: int, concurrency: int) -> None:
        self._port = port
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_bytes = max_bytes
        self._limit = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._concurrency = concurrency

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._concurrency, force_close=True, use_dns_cache=False
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, raise_for_status=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe(self, ip: str) -> ProbeResult:
        async with self._limit:
            try:
                async with asyncio.timeout(self._timeout.total):
                    return await self._get(health_url(ip, self._port))
            except TimeoutError:
                return Failed(ProbeFailure.TIMEOUT)
            except (aiohttp.ClientError, OSError) as exc:
                return Failed(ProbeFailure.CONNECT, type(exc).__name__)

    async def _get(self, url: str) -> ProbeResult:
        async with self._client().get(url, allow_redirects=False) as response:
            if response.status != 200:
                return Failed(ProbeFailure.HTTP_STATUS, str(response.status))
            declared = response.content_length
            if declared is not None and declared > self._max_bytes:
                return Failed(ProbeFailure.TOO_LARGE, str(declared))
            # read(n) returns whatever has arrived so far, not n bytes: collect until the end.
            body = b""
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > self._max_bytes:
                    return Failed(ProbeFailure.TOO_LARGE)
        try:
            return Reported(parse_health(orjson.loads(body)).busy)
        except (orjson.JSONDecodeError, InvalidMessage) as exc:
            return Failed(ProbeFailure.INVALID, str(exc)[:120])
