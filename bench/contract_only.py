"""An implementation with only the original tool's contract, to prove the bench needs no more.

``python -m bench.contract_only`` reads only the original's variables (PORT, JIBRI_HEALTH_PORT,
JIBRI_BUSY_LABELS, SWEEP_INTERVAL, POD_NAME, NAMESPACE, RUST_LOG, and the credentials'
KUBECONFIG), runs this project's controller with nothing else set (no webhook authentication,
plain-text logs, every other setting at its default) on a private port, and serves on PORT
only what the original serves: readiness on ``GET /`` and the two webhook paths. Anything else
(``/metrics``, ``/readyz``, ``/healthz``) is a 404, and no "sweep done" JSON log line is
written, so every figure the bench reports for it is measured from outside.

The forwarding is per connection, one request each, sent on from the client's own address so
that the controller's source-address check still sees the Jibri's pod IP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys

from testbed.ports import listen_port

CONTRACT = (
    "PORT",
    "JIBRI_HEALTH_PORT",
    "JIBRI_BUSY_LABELS",
    "SWEEP_INTERVAL",
    "POD_NAME",
    "NAMESPACE",
    "RUST_LOG",
)
PASSED_THROUGH = ("KUBECONFIG", "HOME", "PATH")
SERVED = re.compile(rb"^(GET / |POST /webhook/[^/ ]+/v1/(session/)?status )HTTP/1\.[01]$")
MAX_HEAD = 64 * 1024
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


async def _chunked_body(reader: asyncio.StreamReader) -> bytes:
    """A chunked body as it is on the wire, up to and with its last chunk and trailers."""
    raw = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        raw += size_line
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise asyncio.IncompleteReadError(bytes(raw), None) from None
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                raw += trailer
            return bytes(raw + b"\r\n")
        raw += await reader.readexactly(size + 2)


async def _forward(
    upstream: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    lines = head[:-4].split(b"\r\n")
    if not SERVED.match(lines[0]):
        writer.write(NOT_FOUND)
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        writer.close()
        return
    kept = [line for line in lines[1:] if not line.lower().startswith(b"connection:")]
    length = 0
    chunked = False
    for line in kept:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value)
        if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    try:
        # Jibri's webhooks come chunked, with no Content-Length: passed on as they came.
        body = await _chunked_body(reader) if chunked else await reader.readexactly(length)
        source = writer.get_extra_info("peername")[0]
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", upstream, local_addr=(source, 0)
        )
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        writer.close()
        return
    up_writer.write(b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n" + body)
    await _pipe(up_reader, writer)
    up_writer.close()


async def _main() -> int:
    env = os.environ
    port = int(env.get("PORT") or "8080")
    upstream = listen_port()  # the child listens on every address: not an ephemeral port
    child_env = {k: env[k] for k in (*CONTRACT, *PASSED_THROUGH) if k in env}
    child_env.update({"PORT": str(upstream), "WEBHOOK_AUTH": "none", "LOG_FORMAT": "text"})
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jibri_pod_controller", env=child_env
    )
    try:
        server = await asyncio.start_server(
            lambda r, w: _forward(upstream, r, w), port=port, reuse_address=True, limit=MAX_HEAD
        )
    except OSError as exc:
        print(f"cannot listen on port {port}: {exc.strerror}", file=sys.stderr, flush=True)
        child.kill()
        await child.wait()
        return 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, child.send_signal, sig)
    code = await child.wait()
    server.close()
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
