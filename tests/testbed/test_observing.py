"""testbed.observing: the pod watch against a scripted API server (a list, then watches that end,
expire or break), the log tail, polling and the machine's description."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException

from testbed.observing import (
    Changed,
    Interrupted,
    Listed,
    LogTail,
    PodEvent,
    Watching,
    machine,
    wait_until,
    watch_pods,
)

NAMESPACE = "demo"


def pod(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": version}}


def event(kind: str, obj: Mapping[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def watching(query: Mapping[str, str]) -> bool:
    return query.get("watch", "").lower() == "true"  # the client sends "True"


@dataclass
class Watch:
    lines: list[bytes]
    hold: bool = False
    """Keep the stream open after the lines (until the client closes it), else end it."""
    status: int = 200


@dataclass
class FakeApiServer:
    """Answers pod lists and watches of one namespace from a script, one connection each, and
    records every request and when each held watch was closed by the client."""

    lists: list[tuple[int, str, list[dict[str, Any]]]]
    """(HTTP status, resourceVersion, items) for each list, in order."""
    watches: list[Watch]
    requests: list[dict[str, str]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            url = urllib.parse.urlsplit(target)
            query = dict(urllib.parse.parse_qsl(url.query))
            assert url.path == f"/api/v1/namespaces/{NAMESPACE}/pods", url.path
            self.requests.append(query)
            if watching(query):
                await self._watch(reader, writer, self.watches.pop(0))
            else:
                status, version, items = self.lists.pop(0)
                body = json.dumps({"metadata": {"resourceVersion": version}, "items": items})
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
                )
                await writer.drain()
        finally:
            writer.close()

    async def _watch(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watch: Watch
    ) -> None:
        writer.write(
            f"HTTP/1.1 {watch.status} X\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
        )
        for line in watch.lines:
            writer.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        await writer.drain()
        if not watch.hold:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the client closes or aborts the connection
        self.closed.set()


@contextlib.asynccontextmanager
async def serving(server: FakeApiServer) -> AsyncIterator[ApiClient]:
    """An API client of ``server``, while it runs."""
    listener = await server.start()
    client = ApiClient(Configuration(host=f"http://127.0.0.1:{server.port}"))
    try:
        yield client
    finally:
        await client.close()
        listener.close()
        await listener.wait_closed()


async def collect(client: ApiClient, until: int) -> list[PodEvent]:
    """The first ``until`` events; leaving the loop closes the watch."""
    seen: list[PodEvent] = []
    async with watch_pods(client, NAMESPACE) as events:
        async for each in events:
            seen.append(each)
            if len(seen) == until:
                break
    return seen


async def test_lists_watches_from_the_last_version_and_lists_again_when_it_expired() -> None:
    server = FakeApiServer(
        lists=[(200, "10", [pod("a", "9")]), (200, "20", [pod("b", "19")])],
        watches=[
            Watch([event("ADDED", pod("c", "11")), event("BOOKMARK", pod("", "12"))]),
            Watch(
                [
                    event("MODIFIED", pod("c", "13")),
                    event("ERROR", {"code": 410, "message": "too old resource version"}),
                ]
            ),
            Watch([event("DELETED", pod("b", "21"))], hold=True),
        ],
    )
    async with serving(server) as client:
        seen = await asyncio.wait_for(collect(client, until=10), 10)
        # Leaving the loop closed the held watch at once.
        await asyncio.wait_for(server.closed.wait(), 2)

    summary = [(type(e).__name__, getattr(e, "kind", ""), getattr(e, "reason", "")) for e in seen]
    assert summary == [
        ("Listed", "", ""),
        ("Watching", "", ""),
        ("Changed", "ADDED", ""),
        ("Interrupted", "", "stream ended"),
        ("Watching", "", ""),
        ("Changed", "MODIFIED", ""),
        ("Interrupted", "", "resourceVersion expired"),
        ("Listed", "", ""),
        ("Watching", "", ""),
        ("Changed", "DELETED", ""),
    ]
    first, relisted = (e for e in seen if isinstance(e, Listed))
    assert [p["metadata"]["name"] for p in first.pods] == ["a"]
    assert [p["metadata"]["name"] for p in relisted.pods] == ["b"]
    assert relisted.missing(["uid-a", "uid-b", "uid-c"]) == ["uid-a", "uid-c"]
    assert [e.version for e in seen if isinstance(e, Watching)] == ["10", "12", "20"]
    deleted = seen[-1]
    assert isinstance(deleted, Changed)
    assert deleted.deleted
    # The bookmark moved the version on; each watch started where the last one stopped.
    watched = [r for r in server.requests if watching(r)]
    assert [r["resourceVersion"] for r in watched] == ["10", "12", "20"]
    assert all(r["allowWatchBookmarks"].lower() == "true" for r in watched)


async def test_a_consumers_exception_aborts_the_stream_at_once() -> None:
    server = FakeApiServer(
        lists=[(200, "5", [])], watches=[Watch([event("ADDED", pod("x", "6"))], hold=True)]
    )

    async def consume(client: ApiClient) -> None:
        async with watch_pods(client, NAMESPACE) as events:
            async for each in events:
                if isinstance(each, Changed):
                    raise RuntimeError("the consumer failed")

    async with serving(server) as client:
        with pytest.raises(RuntimeError) as failure:
            await asyncio.wait_for(consume(client), 10)
        # The exception (still held here, its traceback with it) keeps the consumer's frame,
        # and the generator it iterated, alive: only the `async with` closed the stream.
        await asyncio.wait_for(server.closed.wait(), 2)
        assert failure.value.__traceback__ is not None


async def test_a_refused_first_list_ends_the_watch_with_its_error() -> None:
    server = FakeApiServer(lists=[(403, "1", [])], watches=[])
    async with serving(server) as client:
        with pytest.raises(ApiException) as refused:
            await asyncio.wait_for(collect(client, until=1), 10)
    assert refused.value.status == 403
    assert len(server.requests) == 1


async def test_a_broken_watch_is_opened_again_from_its_version() -> None:
    server = FakeApiServer(
        lists=[(200, "7", [])],
        watches=[Watch([], status=500), Watch([event("ADDED", pod("y", "8"))], hold=True)],
    )
    async with serving(server) as client:
        seen = await asyncio.wait_for(collect(client, until=4), 10)
    broken = seen[1]
    assert isinstance(broken, Interrupted)
    assert isinstance(broken.error, ApiException)
    assert broken.error.status == 500
    assert [type(e) for e in seen] == [Listed, Interrupted, Watching, Changed]
    watched = [r["resourceVersion"] for r in server.requests if watching(r)]
    assert watched == ["7", "7"]


def test_log_tail_returns_each_complete_json_line_once(tmp_path: Path) -> None:
    log = tmp_path / "controller.log"
    tail = LogTail(log)
    assert tail.new_entries() == []  # not written yet
    log.write_bytes(b'{"msg": "one"}\nnot json\n[1, 2]\n{"msg": "tw')
    assert tail.new_entries() == [{"msg": "one"}]
    with log.open("ab") as f:
        f.write(b'o"}\n')
    assert tail.new_entries() == [{"msg": "two"}]
    assert tail.new_entries() == []


async def test_wait_until_returns_the_first_truthy_value_or_names_what_it_waited_for() -> None:
    answers = iter([None, 0, [], ["ready"]])

    async def check() -> list[str] | int | None:
        return next(answers)

    assert await wait_until(check, timeout=5, interval=0.01) == ["ready"]

    async def never() -> bool:
        return False

    with pytest.raises(TimeoutError, match="waiting for the impossible"):
        await wait_until(never, timeout=0.05, interval=0.01, what="the impossible")


def test_machine_describes_this_host() -> None:
    here = machine()
    assert here.cores == os.cpu_count()
    assert here.cpu
    assert here.memory_bytes > 0
    assert here.python.count(".") == 2
