"""The probe against raw servers that send exactly the bytes given: replies a real Jibri never
sends must still end as a counted failure, never as an exception or a hang."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from jibri_pod_controller.adapters.probing import Prober
from jibri_pod_controller.core.decisions import Failed, ProbeFailure, Reported
from jibri_pod_controller.core.jibri import BusyStatus

BODY = b'{"status": {"busyStatus": "BUSY", "health": {"healthStatus": "HEALTHY"}}}'


@pytest.fixture
async def serve() -> AsyncIterator[list[asyncio.Server]]:
    servers: list[asyncio.Server] = []
    yield servers
    for server in servers:
        server.close()
        await server.wait_closed()


async def answer(servers: list[asyncio.Server], reply: bytes) -> int:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    servers.append(server)
    port: int = server.sockets[0].getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY,
            Reported(BusyStatus.BUSY),
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + BODY,
            Reported(BusyStatus.BUSY),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4a\r\n"
            + BODY
            + b"\r\n0\r\n\r\n",
            ProbeFailure.INVALID,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + BODY, ProbeFailure.CONNECT),
        (b"HTTP/1.1 200 OK\r\nContent-Length: nine\r\n\r\n" + BODY, ProbeFailure.INVALID),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", ProbeFailure.TOO_LARGE),
        (b"SSH-2.0-OpenSSH\r\n\r\n", ProbeFailure.INVALID),
        (b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", ProbeFailure.HTTP_STATUS),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 20_000 + b"\r\n\r\n" + BODY, ProbeFailure.INVALID),
        (b"", ProbeFailure.CONNECT),
        # Digits that str.isdigit() accepts but HTTP does not: "²" and "¹" are single bytes
        # (0xB2, 0xB9) in the head's latin-1.
        ("HTTP/1.1 2²0 OK\r\nContent-Length: 0\r\n\r\n".encode("latin-1"), ProbeFailure.INVALID),
        ("HTTP/1.1 ²00 OK\r\n\r\n".encode("latin-1"), ProbeFailure.INVALID),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: ²\r\n\r\n".encode("latin-1") + BODY,
            ProbeFailure.INVALID,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 7¹\r\n\r\n".encode("latin-1") + BODY,
            ProbeFailure.INVALID,
        ),
    ],
    ids=[
        "length",
        "close-delimited",
        "chunked",
        "short",
        "bad-length",
        "too-large",
        "not-http",
        "503",
        "huge-head",
        "empty",
        "superscript-status",
        "superscript-status-2",
        "superscript-length",
        "superscript-length-2",
    ],
)
async def test_replies(
    serve: list[asyncio.Server], reply: bytes, expected: Reported | ProbeFailure
) -> None:
    port = await answer(serve, reply)
    result = await Prober(port=port, timeout=2, max_bytes=4096, concurrency=4).probe("127.0.0.1")
    if isinstance(expected, Reported):
        assert result == expected
    else:
        assert isinstance(result, Failed)
        assert result.failure is expected
