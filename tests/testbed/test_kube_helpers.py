"""testbed.kube.abort_stream: a watch stopped mid-stream leaves no socket behind, even against a
server that never completes TLS's shutdown (what let a test's watch outlive its event loop)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from testbed.controlplane import _issue, _new_ca
from testbed.kube import abort_stream


class SilentTlsServer:
    """Answers one streaming GET per connection, then never reads again: a client's
    close_notify is never answered, so a graceful close never completes."""

    def __init__(self, tmp_path: Path) -> None:
        ca = _new_ca("test-ca")
        leaf = _issue(ca, common_name="server", server_names=["127.0.0.1"])
        (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
        (tmp_path / "server.pem").write_bytes(leaf.cert_pem + leaf.key_pem)
        self.client_context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(str(tmp_path / "server.pem"))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._held: list[ssl.SSLSocket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            tls = self._context.wrap_socket(raw, server_side=True)
            request = b""
            while b"\r\n\r\n" not in request:
                request += tls.recv(4096)
            tls.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n3\r\n{}\n\r\n"
            )
            self._held.append(tls)  # open, unread: the close_notify waits in the kernel

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for held in self._held:
            held.close()
        self._listener.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SilentTlsServer]:
    running = SilentTlsServer(tmp_path)
    try:
        yield running
    finally:
        running.close()


def _graceful(response: aiohttp.ClientResponse) -> None:
    response.close()


@pytest.mark.parametrize(("finish", "socket_left_open"), [(_graceful, True), (abort_stream, False)])
async def test_an_aborted_stream_closes_its_socket_at_once(
    server: SilentTlsServer,
    finish: Callable[[aiohttp.ClientResponse], None],
    socket_left_open: bool,
) -> None:
    connector = aiohttp.TCPConnector(ssl=server.client_context)
    async with aiohttp.ClientSession(connector=connector) as session:
        response = await session.get(f"https://127.0.0.1:{server.port}/watch")
        assert await response.content.readline() == b"{}\n"
        assert response.connection is not None
        transport = response.connection.transport
        assert transport is not None
        raw = transport.get_extra_info("socket")
        finish(response)
        await asyncio.sleep(0.2)
        try:
            # A graceful close waits for the server's close_notify, which never comes.
            assert (raw.fileno() != -1) is socket_left_open
        finally:
            transport.abort()  # what the graceful case would leave behind
            await asyncio.sleep(0)
