"""The contract-only front passes webhooks on as they came: with a length, or chunked as Jibri
sends them."""

from __future__ import annotations

import asyncio

import pytest

from bench.contract_only import _forward


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        (b"Content-Length: 13\r\n", b'{"jibriId":1}'),
        (b"Transfer-Encoding: chunked\r\n", b'd\r\n{"jibriId":1}\r\n0\r\n\r\n'),
    ],
    ids=["length", "chunked"],
)
async def test_a_webhook_reaches_the_controller_whole(framing: bytes, body: bytes) -> None:
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def controller(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        rest = await reader.readexactly(len(body))
        received.set_result(head + rest)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(controller, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    front = await asyncio.start_server(lambda r, w: _forward(up_port, r, w), "127.0.0.1", 0)
    port = front.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /webhook/jibri-0/v1/status HTTP/1.1\r\nHost: c\r\n"
            b"Content-Type: application/json\r\n" + framing + b"\r\n" + body
        )
        answer = await asyncio.wait_for(reader.read(), 2)
        writer.close()
        forwarded = await asyncio.wait_for(received, 2)
    finally:
        front.close()
        upstream.close()
        await front.wait_closed()
        await upstream.wait_closed()
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert forwarded.endswith(b"\r\n\r\n" + body)
    assert framing in forwarded
