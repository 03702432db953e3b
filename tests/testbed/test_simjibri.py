"""The simulated Jibri speaks the real Jibri's wire protocol and injects the documented faults."""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from itertools import count
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from testbed.ports import listen_port
from testbed.simjibri import (
    BusyStatus,
    Fidelity,
    HealthMode,
    JwtSigning,
    SimJibri,
    SimJibriConfig,
    config_from_env,
    parse_cli,
)

HEALTH = "/jibri/api/v1.0/health"
START = "/jibri/api/v1.0/startService"
STOP = "/jibri/api/v1.0/stopService"
START_BODY = {
    "sessionId": "rec-1",
    "callParams": {"callUrlInfo": {"baseUrl": "https://meet.example", "callName": "room"}},
    "callLoginParams": {"domain": "recorder.meet.example", "username": "u", "password": "p"},
    "sinkType": "FILE",
}
HEALTHY = {"healthStatus": "HEALTHY", "details": {}}
_hosts = count(10)


def next_host() -> str:
    """A fresh loopback address per simulator, so tests never share a listener."""
    return f"127.0.3.{next(_hosts)}"


@dataclass
class Webhook:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    remote: str | None


@dataclass
class Receiver:
    """A webhook subscriber that records every request."""

    base: str
    queue: asyncio.Queue[Webhook] = field(default_factory=asyncio.Queue)
    status: int = 200

    async def next(self, path: str | None = None, within: float = 2.0) -> Webhook:
        """The next webhook (for ``path`` if given; others are dropped)."""
        async with asyncio.timeout(within):
            while True:
                hook = await self.queue.get()
                if path is None or hook.path.endswith(path):
                    return hook

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await self.next(within=seconds)
        except TimeoutError:
            return True
        return False


def _receiver_app(rec: Receiver) -> web.AppRunner:
    async def handle(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        await rec.queue.put(Webhook(request.path, dict(request.headers), body, request.remote))
        return web.Response(status=rec.status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    return web.AppRunner(app)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(base="")
    runner = _receiver_app(rec)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.base = f"http://127.0.0.1:{port}/webhook/pod-a"
    yield rec
    await runner.cleanup()


@asynccontextmanager
async def late_receiver() -> AsyncIterator[tuple[Receiver, Callable[[], Awaitable[None]]]]:
    """A subscriber whose address is known (and refuses connections) until ``open()``."""
    host, port = next_host(), listen_port()
    rec = Receiver(base=f"http://{host}:{port}/webhook/pod-a")
    runner = _receiver_app(rec)
    await runner.setup()

    async def open_() -> None:
        await web.TCPSite(runner, host, port).start()

    try:
        yield rec, open_
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        yield session


@asynccontextmanager
async def running(
    *subscribers: str, host: str | None = None, **kwargs: Any
) -> AsyncIterator[SimJibri]:
    options = {
        k: kwargs.pop(k)
        for k in ("on_restart", "clock", "refresh_token_on_restart", "on_change", "on_exit")
        if k in kwargs
    }
    kwargs.setdefault("internal_port", 0)
    config = SimJibriConfig(
        pod_name="pod-a",
        host=host or next_host(),
        port=0,
        webhook_subscribers=subscribers,
        **kwargs,
    )
    sim = SimJibri(config, **options)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, str, Any]:
    async with http.get(url) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.json()


async def post(http: aiohttp.ClientSession, url: str, body: object = None) -> int:
    async with http.post(url, json=body) as resp:
        await resp.read()
        return resp.status


def write_key(path: Path, key: rsa.RSAPrivateKey, pkcs1: bool = True) -> Path:
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if pkcs1
        else serialization.PrivateFormat.PKCS8
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    )
    return path


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def signing(key_path: Path, ttl: int = 3600) -> JwtSigning:
    return JwtSigning(
        key_path=key_path,
        kid="jibri-2024",
        issuer="jibri",
        audience="jibri-pod-controller",
        ttl_seconds=ttl,
    )


# --------------------------------------------------------------------------- health and control


async def test_health_shape_follows_the_lifecycle(http: aiohttp.ClientSession) -> None:
    async with running() as sim:
        health = sim.base_url + HEALTH
        status, content_type, body = await get_json(http, health)
        assert (status, content_type) == (200, "application/json")
        assert body == {"status": {"busyStatus": "IDLE", "health": HEALTHY}}

        assert await post(http, sim.base_url + START, START_BODY) == 200
        assert sim.busy_status is BusyStatus.BUSY
        assert sim.session_id == "rec-1"
        _, _, body = await get_json(http, health)
        # Jibri's HTTP API starts its services with no environment context
        assert body == {"status": {"busyStatus": "BUSY", "health": HEALTHY}}

        assert await post(http, sim.base_url + STOP) == 200
        _, _, body = await get_json(http, health)
        assert body == {"status": {"busyStatus": "EXPIRED", "health": HEALTHY}}


async def test_start_is_refused_unless_idle(http: aiohttp.ClientSession) -> None:
    async with running() as sim:
        assert await post(http, sim.base_url + START, {"sessionId": "a"}) == 200
        async with http.post(sim.base_url + START, json={"sessionId": "b"}) as resp:
            assert resp.status == 412
            assert await resp.text() == "Jibri is currently busy"
        assert sim.session_id == "a"
        assert await post(http, sim.base_url + STOP) == 200
        assert await post(http, sim.base_url + START, {"sessionId": "c"}) == 412
        assert await post(http, sim.base_url + STOP) == 200
        assert sim.busy_status is BusyStatus.EXPIRED


async def test_bad_requests(http: aiohttp.ClientSession) -> None:
    async with running() as sim:
        # Jibri's catch-all answers a body it cannot read: 500, empty
        async with http.post(sim.base_url + START, data=b"{nope") as resp:
            assert (resp.status, resp.reason, await resp.read()) == (500, "Server Error", b"")
        assert await post(http, sim.base_url + START, ["not", "an", "object"]) == 500
        assert await post(http, sim.base_url + HEALTH) == 405
        async with http.get(sim.base_url + "/elsewhere") as resp:
            assert resp.status == 404
        assert await post(http, sim.base_url + "/_sim/mode", {"health": "sleepy"}) == 400
        assert await post(http, sim.base_url + "/_sim/webhooks", {"enabled": "no"}) == 400
        assert sim.busy_status is BusyStatus.IDLE


async def test_sip_address_comes_from_the_request_and_no_environment_context(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with running(receiver.base) as sim:
        body = {
            **START_BODY,
            "sinkType": "GATEWAY",
            "sipClientParams": {"sipAddress": "sip:room@example"},
            "environmentContext": {"name": "prod"},
        }
        assert await post(http, sim.base_url + START, body) == 200
        _, _, health = await get_json(http, sim.base_url + HEALTH)
        assert "environmentContext" not in health
        hook = await receiver.next("/v1/session/status")
        assert hook.body["session"]["sipAddress"] == "sip:room@example"


async def test_a_session_started_over_xmpp_reports_its_environment(
    http: aiohttp.ClientSession,
) -> None:
    async with running() as sim:
        assert await sim.start_recording("s", environment="prod")
        _, _, health = await get_json(http, sim.base_url + HEALTH)
        assert health["environmentContext"] == {"name": "prod"}


# --------------------------------------------------------------------------- webhooks


async def test_status_webhooks_at_start_up_and_on_change(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with running(receiver.base) as sim:
        hook = await receiver.next()
        assert hook.path == "/webhook/pod-a/v1/status"
        assert hook.body == {
            "jibriId": "pod-a",
            "status": {"busyStatus": "IDLE", "health": HEALTHY},
        }
        assert hook.headers["Content-Type"] == "application/json"
        assert "Authorization" not in hook.headers
        assert sim.webhooks_sent == 1

        assert await post(http, sim.base_url + START, START_BODY) == 200
        assert sim.webhooks_sent == 3  # status BUSY and session ON, sent on the change
        busy = await receiver.next("/v1/status")
        assert busy.body == {
            "jibriId": "pod-a",
            "status": {"busyStatus": "BUSY", "health": HEALTHY},
        }

        assert await post(http, sim.base_url + STOP) == 200
        expired = await receiver.next("/v1/status")
        assert expired.body["status"]["busyStatus"] == "EXPIRED"
        assert sim.webhooks_sent == 5


async def test_status_webhooks_are_resent_periodically(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with running(receiver.base, status_period=0.15) as sim:
        await receiver.next()
        assert await post(http, sim.base_url + START, START_BODY) == 200
        first = await receiver.next("/v1/status")
        for _ in range(2):
            again = await receiver.next("/v1/status", within=1.0)
            assert again.body == first.body
            assert again.body["status"]["busyStatus"] == "BUSY"


async def test_session_webhooks(http: aiohttp.ClientSession, receiver: Receiver) -> None:
    async with running(receiver.base, jibri_id="jibri-7") as sim:
        assert await post(http, sim.base_url + START, START_BODY) == 200
        on = await receiver.next("/v1/session/status")
        assert on.path == "/webhook/pod-a/v1/session/status"
        assert on.headers["Content-Type"] == "application/json"
        assert on.body == {
            "jibriId": "jibri-7",
            "session": {
                "sessionId": "rec-1",
                "status": "ON",
                "sipAddress": None,
                "failure": None,
                "shouldRetry": None,
            },
        }
        assert await post(http, sim.base_url + STOP) == 200
        off = await receiver.next("/v1/session/status")
        assert off.body["session"] == {**on.body["session"], "status": "OFF"}
        expired = await receiver.next("/v1/status")
        assert expired.body["status"]["busyStatus"] == "EXPIRED"
        assert expired.body["jibriId"] == "jibri-7"


async def test_webhooks_leave_from_the_pod_address(receiver: Receiver) -> None:
    async with running(receiver.base, host="127.0.0.7"):
        hook = await receiver.next()
        assert hook.remote == "127.0.0.7"


async def test_every_subscriber_gets_every_webhook(receiver: Receiver) -> None:
    other = receiver.base.replace("/pod-a", "/other")
    async with running(receiver.base, other) as sim:
        paths = {(await receiver.next()).path for _ in range(2)}
        assert paths == {"/webhook/pod-a/v1/status", "/webhook/other/v1/status"}
        assert sim.webhooks_sent == 2


async def test_failed_webhooks_are_counted_and_not_retried(receiver: Receiver) -> None:
    receiver.status = 503
    unreachable = "http://127.0.0.1:9/webhook/pod-a"
    async with running(receiver.base, unreachable) as sim:
        await receiver.next()
        await sim.drain_webhooks()
        assert (sim.webhooks_sent, sim.webhooks_failed) == (2, 2)
        assert await receiver.nothing_within(0.2)


async def test_silent_mode_keeps_transitions_but_sends_nothing(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with running(receiver.base, status_period=0.1) as sim:
        await receiver.next()
        assert await post(http, sim.base_url + "/_sim/webhooks", {"enabled": False}) == 200
        await sim.drain_webhooks()
        while not receiver.queue.empty():
            receiver.queue.get_nowait()
        sent = sim.webhooks_sent

        assert await post(http, sim.base_url + START, START_BODY) == 200
        assert await post(http, sim.base_url + STOP) == 200
        assert sim.busy_status is BusyStatus.EXPIRED
        assert await receiver.nothing_within(0.3)
        assert sim.webhooks_sent == sent

        assert await post(http, sim.base_url + "/_sim/webhooks", {"enabled": True}) == 200
        hook = await receiver.next("/v1/status", within=1.0)
        assert hook.body["status"]["busyStatus"] == "EXPIRED"


# --------------------------------------------------------------------------- crash


async def test_crash_restarts_idle_and_reports_it(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    restarts: list[int] = []

    async def on_restart(restart_count: int) -> None:
        await asyncio.sleep(0)
        restarts.append(restart_count)

    async with running(receiver.base, on_restart=on_restart) as sim:
        assert await post(http, sim.base_url + START, START_BODY) == 200
        await sim.drain_webhooks()
        while not receiver.queue.empty():
            receiver.queue.get_nowait()

        async with http.post(sim.base_url + "/_sim/crash") as resp:
            state = await resp.json()
        assert restarts == [1]
        assert state["busyStatus"] == "IDLE"
        assert state["restartCount"] == 1
        assert sim.restart_count == 1
        assert sim.session_id is None
        hook = await receiver.next()
        assert hook.path.endswith("/v1/status")
        assert hook.body["status"]["busyStatus"] == "IDLE"
        _, _, health = await get_json(http, sim.base_url + HEALTH)
        assert health == {"status": {"busyStatus": "IDLE", "health": HEALTHY}}

        await sim.crash()
        assert restarts == [1, 2]


async def test_ground_truth_records_every_change_and_crash() -> None:
    seen: list[str] = []
    async with running(on_change=lambda status, at: seen.append(status)) as sim:
        assert await sim.start_recording("s1")
        await sim.crash()
        assert await sim.start_recording("s2")
        assert await sim.stop_recording()
        assert [status for _, status in sim.history] == ["BUSY", "CRASH", "BUSY", "EXPIRED"]
        assert seen == ["BUSY", "CRASH", "BUSY", "EXPIRED"]
        times = [at for at, _ in sim.history]
        assert times == sorted(times)


async def test_send_status_resends_or_replays_an_old_status(receiver: Receiver) -> None:
    async with running(receiver.base) as sim:
        assert (await receiver.next("/v1/status")).body["status"]["busyStatus"] == "IDLE"
        assert await sim.start_recording()
        assert (await receiver.next("/v1/status")).body["status"]["busyStatus"] == "BUSY"
        sim.send_status()
        assert (await receiver.next("/v1/status")).body["status"]["busyStatus"] == "BUSY"
        sim.send_status(BusyStatus.IDLE)  # a late delivery of the IDLE sent before
        assert (await receiver.next("/v1/status")).body["status"]["busyStatus"] == "IDLE"
        assert sim.busy_status is BusyStatus.BUSY


async def test_state_endpoint(http: aiohttp.ClientSession) -> None:
    async with running() as sim:
        _, _, state = await get_json(http, sim.base_url + "/_sim/state")
        assert state == {
            "podName": "pod-a",
            "jibriId": "pod-a",
            "busyStatus": "IDLE",
            "sessionId": None,
            "restartCount": 0,
            "webhooksSent": 0,
            "webhooksFailed": 0,
            "webhooksEnabled": True,
            "healthMode": "normal",
            "exiting": False,
            "exitCode": None,
            "resendDied": False,
            "silentSince": None,
            "webhooksLost": 0,
        }


# --------------------------------------------------------------------------- health faults


async def set_mode(http: aiohttp.ClientSession, sim: SimJibri, mode: str) -> None:
    assert await post(http, sim.base_url + "/_sim/mode", {"health": mode}) == 200


async def test_hang_mode_never_answers_health(http: aiohttp.ClientSession) -> None:
    async with running() as sim:
        await set_mode(http, sim, "hang")
        with pytest.raises(TimeoutError):
            await http.get(sim.base_url + HEALTH, timeout=aiohttp.ClientTimeout(total=0.3))
        status, _, state = await get_json(http, sim.base_url + "/_sim/state")
        assert (status, state["healthMode"]) == (200, "hang")
        hanging = asyncio.ensure_future(http.get(sim.base_url + HEALTH))
        await asyncio.sleep(0.05)
    # stopping the simulator drops the hanging request instead of answering it
    with pytest.raises(aiohttp.ClientError):
        await hanging


async def test_garbage_mode(http: aiohttp.ClientSession) -> None:
    async with running() as sim:
        await set_mode(http, sim, "garbage")
        async with http.get(sim.base_url + HEALTH) as resp:
            assert resp.status == 200
            raw = await resp.read()
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)


async def test_huge_mode(http: aiohttp.ClientSession) -> None:
    async with running() as sim:
        await set_mode(http, sim, "huge")
        async with http.get(sim.base_url + HEALTH) as resp:
            assert resp.status == 200
            raw = await resp.read()
        assert len(raw) > 4 * 1024 * 1024
        assert orjson.loads(raw)["status"]["busyStatus"] == "IDLE"


async def test_unknown_status_mode(http: aiohttp.ClientSession) -> None:
    async with running() as sim:
        await set_mode(http, sim, "unknown-status")
        _, _, body = await get_json(http, sim.base_url + HEALTH)
        assert body == {"status": {"busyStatus": "SLEEPING", "health": HEALTHY}}
        await set_mode(http, sim, "normal")
        _, _, body = await get_json(http, sim.base_url + HEALTH)
        assert body["status"]["busyStatus"] == "IDLE"


async def test_blackhole_mode_and_the_way_back(http: aiohttp.ClientSession) -> None:
    quick = aiohttp.ClientTimeout(total=0.3)
    async with running() as sim:
        await set_mode(http, sim, "blackhole")
        await asyncio.sleep(0.05)
        for path in (HEALTH, "/_sim/state"):
            async with aiohttp.ClientSession(timeout=quick) as fresh:
                with pytest.raises(TimeoutError):
                    await fresh.get(sim.base_url + path)
        # the connection is accepted: it is the answer that never comes
        reader, writer = await asyncio.open_connection(sim.config.host, sim.port)
        writer.write(b"GET /jibri/api/v1.0/health HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.2)
        writer.close()

        await sim.set_health_mode(HealthMode.NORMAL)
        _, _, body = await get_json(http, sim.base_url + HEALTH)
        assert body["status"]["busyStatus"] == "IDLE"


# --------------------------------------------------------------------------- internal API

GRACEFUL = "/jibri/api/internal/v1.0/gracefulShutdown"
SHUTDOWN = "/jibri/api/internal/v1.0/shutdown"
CONFIG_CHANGED = "/jibri/api/internal/v1.0/notifyConfigChanged"
REAL = Fidelity.real()


async def raw_exchange(host: str, port: int, request: bytes) -> bytes:
    """Send raw bytes, read the answer until the server closes the connection."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), 2.0)
    finally:
        writer.close()
        await writer.wait_closed()


async def refuses_connections(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def apis_refuse_within(sim: SimJibri, seconds: float) -> bool:
    """Both APIs refuse connections, at the latest ``seconds`` from now."""
    addresses = [
        (sim.config.host, sim.port),
        (sim.config.effective_internal_host, sim.internal_port),
    ]
    deadline = time.monotonic() + seconds
    for host, port in addresses:
        while not await refuses_connections(host, port):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
    return True


async def test_internal_api_answers_like_ktor_on_jetty() -> None:
    async with running() as sim:
        assert await sim.start_recording("s")  # busy: the config change waits, nothing exits
        host, port = sim.config.host, sim.internal_port
        close = b"Host: jibri\r\nConnection: close\r\n"
        ok = await raw_exchange(
            host, port, b"POST " + CONFIG_CHANGED.encode() + b" HTTP/1.1\r\n" + close + b"\r\n"
        )
        assert ok == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        wrong_method = await raw_exchange(
            host, port, b"GET " + GRACEFUL.encode() + b" HTTP/1.1\r\n" + close + b"\r\n"
        )
        assert wrong_method == (
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        unknown = await raw_exchange(
            host, port, b"POST /jibri/api/v1.0/health HTTP/1.1\r\n" + close + b"\r\n"
        )
        assert (
            unknown == b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        # the external API does not serve the internal one
        async with aiohttp.ClientSession() as http:
            assert await post(http, sim.base_url + GRACEFUL) == 404
        assert sim.busy_status is BusyStatus.BUSY
        assert not sim.exiting


async def test_internal_api_listens_on_its_own_host_and_port() -> None:
    host = next_host()
    async with running(host=host, internal_host="127.0.0.1") as sim:
        assert sim.internal_port not in (0, sim.port)
        assert sim.internal_base_url == f"http://127.0.0.1:{sim.internal_port}"
        assert await refuses_connections(host, sim.internal_port)
        assert not await refuses_connections("127.0.0.1", sim.internal_port)


async def test_graceful_shutdown_when_idle_exits_255_without_a_webhook(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    codes: list[int] = []
    async with running(
        receiver.base, status_period=0.2, exit_delay=0.6, on_exit=codes.append
    ) as sim:
        await receiver.next()
        asked = time.monotonic()
        assert await post(http, sim.internal_base_url + GRACEFUL) == 200
        assert await apis_refuse_within(sim, 0.2)
        assert sim.exiting
        assert not sim.exited.done()
        assert await asyncio.wait_for(sim.exited, 2.0) == 255
        assert 0.5 <= time.monotonic() - asked < 1.5
        assert sim.exit_code == 255
        assert codes == [255]
        assert [status for _, status in sim.history] == ["EXIT"]
        # no webhook at all: no status change, and the periodic resend is gone
        assert await receiver.nothing_within(0.5)
        assert sim.busy_status is BusyStatus.IDLE


async def test_graceful_shutdown_when_expired_exits_at_once(
    http: aiohttp.ClientSession,
) -> None:
    async with running(exit_delay=0.1) as sim:
        assert await sim.start_recording("s")
        assert await sim.stop_recording()
        assert await post(http, sim.internal_base_url + GRACEFUL) == 200
        assert await asyncio.wait_for(sim.exited, 2.0) == 255
        assert [status for _, status in sim.history] == ["BUSY", "EXPIRED", "EXIT"]


@pytest.mark.parametrize("fidelity", [Fidelity(), REAL], ids=["default", "real"])
async def test_graceful_shutdown_when_busy_exits_after_the_session(
    http: aiohttp.ClientSession, receiver: Receiver, fidelity: Fidelity
) -> None:
    async with running(receiver.base, status_period=0.2, exit_delay=0.3, fidelity=fidelity) as sim:
        assert await sim.start_recording("rec-1")
        assert await post(http, sim.internal_base_url + GRACEFUL) == 200
        # the recording goes on: busy, its API up, its status still resent
        await asyncio.sleep(0.3)
        assert not sim.exiting
        assert sim.busy_status is BusyStatus.BUSY
        _, _, health = await get_json(http, sim.base_url + HEALTH)
        assert health["status"]["busyStatus"] == "BUSY"
        assert await post(http, sim.base_url + START, {"sessionId": "other"}) == 412
        await sim.drain_webhooks()
        while not receiver.queue.empty():
            receiver.queue.get_nowait()

        assert await post(http, sim.base_url + STOP) == 200
        assert await asyncio.wait_for(sim.exited, 2.0) == 255
        hooks = []
        while not receiver.queue.empty():
            hooks.append(receiver.queue.get_nowait())
        sent = [(h.path.rsplit("/v1/", 1)[1], h.body) for h in hooks]
        off = (
            "session/status",
            {
                "jibriId": "pod-a",
                "session": {
                    "sessionId": "rec-1",
                    "status": "OFF",
                    "sipAddress": None,
                    "failure": None,
                    "shouldRetry": None,
                },
            },
        )
        expired = (
            "status",
            {
                "jibriId": "pod-a",
                "status": {
                    "busyStatus": "EXPIRED",
                    "health": HEALTHY,
                },
            },
        )
        if fidelity.no_expired_after_graceful_shutdown:
            # Jibri runs the exit before it publishes EXPIRED: the session is over (the ground
            # truth says EXPIRED), but no webhook tells it
            assert sent == [off]
            assert [s for _, s in sim.history] == ["BUSY", "EXPIRED", "EXIT"]
        else:
            assert sent == [off, expired]
            assert [s for _, s in sim.history] == ["BUSY", "EXPIRED", "EXIT"]


async def test_shutdown_stops_the_session_at_once(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with running(receiver.base, exit_delay=0.2) as sim:
        assert await sim.start_recording("rec-1")
        await receiver.next("/v1/session/status")
        assert await post(http, sim.internal_base_url + SHUTDOWN) == 200
        off = await receiver.next("/v1/session/status")
        assert off.body["session"]["status"] == "OFF"
        assert (await receiver.next("/v1/status")).body["status"]["busyStatus"] == "EXPIRED"
        assert await apis_refuse_within(sim, 0.2)
        assert await asyncio.wait_for(sim.exited, 2.0) == 255


async def test_config_change_exits_0_when_idle_and_the_last_request_wins(
    http: aiohttp.ClientSession,
) -> None:
    async with running(exit_delay=0) as sim:
        assert await post(http, sim.internal_base_url + CONFIG_CHANGED) == 200
        assert await asyncio.wait_for(sim.exited, 2.0) == 0
    async with running(exit_delay=0) as sim:
        assert await sim.start_recording("s")
        assert await post(http, sim.internal_base_url + GRACEFUL) == 200
        assert await post(http, sim.internal_base_url + CONFIG_CHANGED) == 200
        assert await sim.stop_recording()
        assert await asyncio.wait_for(sim.exited, 2.0) == 0


async def test_an_exiting_jibri_takes_no_recording_and_does_not_crash() -> None:
    async with running(exit_delay=0.3) as sim:
        await sim.graceful_shutdown()
        assert sim.exiting
        assert not await sim.start_recording("late")
        await sim.crash()
        assert sim.restart_count == 0
        assert await asyncio.wait_for(sim.exited, 2.0) == 255


async def test_stop_during_the_exit_leaves_it_unresolved() -> None:
    async with running(exit_delay=5) as sim:
        await sim.graceful_shutdown()
        exited = sim.exited
    assert not exited.done()
    assert sim.exit_code is None


async def test_an_internal_port_clash_fails_the_start() -> None:
    host = next_host()
    async with running(host=host) as first:
        clash = SimJibri(
            SimJibriConfig(pod_name="pod-b", host=host, port=0, internal_port=first.internal_port)
        )
        with pytest.raises(OSError, match="address already in use") as caught:
            await clash.start()
        assert caught.value.errno == errno.EADDRINUSE
        await clash.stop()


# --------------------------------------------------------------------------- the real Jibri's ways


def test_the_real_preset_turns_every_behaviour_on() -> None:
    assert all(getattr(REAL, name) for name in Fidelity.__dataclass_fields__)
    assert not any(getattr(Fidelity(), name) for name in Fidelity.__dataclass_fields__)


async def test_webhooks_go_chunked_with_ktor_headers(receiver: Receiver) -> None:
    async with running(receiver.base):
        hook = await receiver.next()
    assert hook.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in hook.headers
    assert "Accept-Encoding" not in hook.headers
    assert hook.headers["User-Agent"] == "ktor-client"
    assert hook.headers["Content-Type"] == "application/json"
    assert (hook.headers["Accept"], hook.headers["Accept-Charset"]) == ("application/json", "UTF-8")


async def test_health_over_http_1_0_has_no_length_and_closes() -> None:
    async with running() as sim:
        answer = await raw_exchange(
            sim.config.host, sim.port, b"GET /jibri/api/v1.0/health HTTP/1.0\r\n\r\n"
        )
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head == b"HTTP/1.0 200 OK\r\nContent-Type: application/json"
    assert orjson.loads(body) == {"status": {"busyStatus": "IDLE", "health": HEALTHY}}


async def test_health_over_http_1_1_is_chunked() -> None:
    async with running() as sim:
        answer = await raw_exchange(
            sim.config.host,
            sim.port,
            b"GET /jibri/api/v1.0/health HTTP/1.1\r\nHost: j\r\nConnection: close\r\n\r\n",
        )
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head == (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close"
    )
    size, rest = body.split(b"\r\n", 1)
    assert orjson.loads(rest[: int(size, 16)])["status"]["busyStatus"] == "IDLE"
    assert rest[int(size, 16) :] == b"\r\n0\r\n\r\n"


@pytest.mark.parametrize("fidelity", [Fidelity(), REAL], ids=["default", "real"])
async def test_the_resend_dies_after_one_unreachable_tick(fidelity: Fidelity) -> None:
    async with (
        late_receiver() as (rec, open_),
        running(rec.base, status_period=0.2, fidelity=fidelity) as sim,
    ):
        await sim.drain_webhooks()  # the first tick: connection refused
        await open_()
        if fidelity.resend_dies_when_unreachable:
            assert await rec.nothing_within(0.6)
            assert sim.resend_died
            # events still go out
            assert await sim.start_recording("s")
            assert (await rec.next("/v1/status")).body["status"]["busyStatus"] == "BUSY"
            assert (await rec.next("/v1/session/status")).body["session"]["status"] == "ON"
            assert await rec.nothing_within(0.6)
        else:
            hook = await rec.next("/v1/status", within=1.0)
            assert hook.body["status"]["busyStatus"] == "IDLE"
            assert not sim.resend_died


async def test_a_timed_out_tick_does_not_stop_the_resend() -> None:
    accepted: list[asyncio.StreamWriter] = []
    second_tick = asyncio.Event()

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        if len(accepted) >= 2:
            second_tick.set()

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        async with running(
            f"http://127.0.0.1:{port}/webhook/pod-a", status_period=0.5, fidelity=REAL
        ) as sim:
            await sim.drain_webhooks()  # 2 s: Jibri's client timeout
            await asyncio.wait_for(second_tick.wait(), 1.0)
            assert not sim.resend_died
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_busy_is_stuck_when_the_subscriber_was_unreachable(
    http: aiohttp.ClientSession,
) -> None:
    async with late_receiver() as (rec, open_), running(rec.base, fidelity=REAL) as sim:
        async with http.post(sim.base_url + START, json=START_BODY) as resp:
            assert (resp.status, await resp.read()) == (500, b"")
        assert sim.busy_status is BusyStatus.BUSY
        assert sim.session_id is None
        _, _, health = await get_json(http, sim.base_url + HEALTH)
        assert health == {"status": {"busyStatus": "BUSY", "health": HEALTHY}}
        # "No service active": stopService changes nothing, no EXPIRED
        assert await post(http, sim.base_url + STOP) == 200
        assert sim.busy_status is BusyStatus.BUSY
        assert [s for _, s in sim.history] == ["BUSY"]
        # a later start finds no service either, and takes the session
        await open_()
        assert await post(http, sim.base_url + START, {"sessionId": "again"}) == 200
        on = await rec.next("/v1/session/status")
        assert on.body["session"]["sessionId"] == "again"
        assert sim.busy_status is BusyStatus.BUSY  # no change, so no BUSY webhook
        assert await post(http, sim.base_url + STOP) == 200
        expired = await rec.next("/v1/status")
        assert expired.body["status"]["busyStatus"] == "EXPIRED"


async def test_without_the_switch_an_unreachable_subscriber_does_not_stop_a_start(
    http: aiohttp.ClientSession,
) -> None:
    async with late_receiver() as (rec, _), running(rec.base) as sim:
        assert await post(http, sim.base_url + START, START_BODY) == 200
        assert sim.session_id == "rec-1"


async def test_a_stuck_busy_jibri_exits_at_once_on_graceful_shutdown() -> None:
    async with (
        late_receiver() as (rec, _),
        running(rec.base, fidelity=REAL, exit_delay=0) as sim,
    ):
        assert not await sim.start_recording("s")
        assert sim.busy_status is BusyStatus.BUSY
        await sim.graceful_shutdown()
        assert await asyncio.wait_for(sim.exited, 2.0) == 255


@pytest.mark.parametrize("fidelity", [Fidelity(), REAL], ids=["default", "real"])
async def test_start_when_expired(
    http: aiohttp.ClientSession, receiver: Receiver, fidelity: Fidelity
) -> None:
    async with running(receiver.base, fidelity=fidelity) as sim:
        assert await post(http, sim.base_url + START, {"sessionId": "a"}) == 200
        assert await post(http, sim.base_url + STOP) == 200
        assert sim.busy_status is BusyStatus.EXPIRED
        code = await post(http, sim.base_url + START, {"sessionId": "b"})
        if fidelity.start_when_expired:
            assert code == 200
            assert (sim.busy_status, sim.session_id) == (BusyStatus.BUSY, "b")
            assert [s for _, s in sim.history] == ["BUSY", "EXPIRED", "BUSY"]
        else:
            assert code == 412
            assert sim.busy_status is BusyStatus.EXPIRED


async def test_a_port_clash_leaves_a_process_without_api_that_keeps_reporting_idle(
    receiver: Receiver,
) -> None:
    host = next_host()
    async with running(host=host) as first:
        # the internal port is taken: Jibri binds it first, so neither API comes up
        clash = SimJibri(
            SimJibriConfig(
                pod_name="pod-a",
                host=host,
                port=first.port,
                internal_port=first.internal_port,
                webhook_subscribers=(receiver.base,),
                status_period=0.2,
                fidelity=REAL,
            )
        )
        await clash.start()
        try:
            assert isinstance(clash.api_error, OSError)
            assert clash.api_error.errno == errno.EADDRINUSE
            for _ in range(3):
                hook = await receiver.next("/v1/status", within=1.0)
                assert hook.body["status"]["busyStatus"] == "IDLE"
            assert hook.remote == host
        finally:
            await clash.stop()


async def test_a_clash_on_the_http_port_keeps_the_internal_api() -> None:
    host = next_host()
    async with running(host=host) as first:
        clash = SimJibri(
            SimJibriConfig(
                pod_name="pod-b",
                host=host,
                port=first.port,
                internal_port=0,
                exit_delay=0,
                fidelity=REAL,
            )
        )
        await clash.start()
        try:
            assert clash.api_error is not None
            async with aiohttp.ClientSession() as http:
                assert await post(http, clash.internal_base_url + CONFIG_CHANGED) == 200
            assert await asyncio.wait_for(clash.exited, 2.0) == 0
        finally:
            await clash.stop()


# --------------------------------------------------------------------------- silence


async def test_health_faults_leave_the_status_resend_and_its_session_alone(
    receiver: Receiver,
) -> None:
    """A health fault never silences a Jibri: every mode, the black hole and back included,
    leaves the periodic resend running on the same client session."""
    async with running(receiver.base, status_period=0.15) as sim:
        await receiver.next()
        assert await sim.start_recording("s")
        for mode in [*HealthMode, HealthMode.NORMAL]:
            await sim.set_health_mode(mode)
            await asyncio.sleep(0.05)
        assert await sim.stop_recording()
        await sim.drain_webhooks()
        while not receiver.queue.empty():
            receiver.queue.get_nowait()
        for _ in range(3):
            hook = await receiver.next("/v1/status", within=1.0)
            assert hook.body["status"]["busyStatus"] == "EXPIRED"


async def test_the_chaos_health_fate_silences_a_jibri_for_good(receiver: Receiver) -> None:
    """The chaos run's health fates lose the EXPIRED webhook half the time by silencing the
    Jibri, and never restore it: the Jibri then never speaks again, resends included."""
    async with running(receiver.base, status_period=0.15) as sim:
        assert await sim.start_recording("s")
        await sim.set_health_mode(HealthMode.HANG)
        sim.set_webhooks_enabled(False)  # "the EXPIRED webhook lost half the time"
        assert await sim.stop_recording()
        await sim.set_health_mode(HealthMode.NORMAL)  # the fault ends; webhooks stay off
        await sim.drain_webhooks()
        while not receiver.queue.empty():
            receiver.queue.get_nowait()
        assert await receiver.nothing_within(0.6)  # four periods: silent for good
        assert sim.silent_since is not None
        assert sim.state()["silentSince"] == sim.silent_since


async def test_one_lost_status_webhook_is_followed_by_the_resend(receiver: Receiver) -> None:
    async with running(receiver.base, status_period=0.3) as sim:
        await receiver.next()
        assert await sim.start_recording("s")
        await sim.drain_webhooks()
        while not receiver.queue.empty():
            receiver.queue.get_nowait()
        sim.lose_next_status_webhook()
        assert await sim.stop_recording()
        off = await receiver.next()
        assert off.path.endswith("/v1/session/status")  # the session webhook still goes
        expired = await receiver.next("/v1/status", within=1.0)  # the next tick's resend
        assert expired.body["status"]["busyStatus"] == "EXPIRED"
        assert (sim.webhooks_lost, sim.silent_since) == (1, None)


async def test_kill_resend_stops_the_periodic_webhook_but_not_the_events(
    receiver: Receiver,
) -> None:
    async with running(receiver.base, status_period=0.15) as sim:
        await receiver.next()
        sim.kill_resend()
        assert sim.resend_died
        assert await receiver.nothing_within(0.5)
        assert await sim.start_recording("s")
        assert (await receiver.next("/v1/status")).body["status"]["busyStatus"] == "BUSY"
        await sim.crash()  # a new process: its resend runs again
        assert not sim.resend_died
        for _ in range(2):
            hook = await receiver.next("/v1/status", within=1.0)
            assert hook.body["status"]["busyStatus"] == "IDLE"


# --------------------------------------------------------------------------- JWT


async def test_jwt_is_signed_like_jibri(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, receiver: Receiver
) -> None:
    key_path = write_key(tmp_path / "key.pem", rsa_key)
    issued = time.time()
    now = [issued]
    async with running(
        receiver.base, jwt=signing(key_path, ttl=3600), status_period=0.1, clock=lambda: now[0]
    ):
        first = await receiver.next()
        now[0] += 7200  # past the token's expiry: Jibri never signs another
        second = await receiver.next()
    scheme, token = first.headers["Authorization"].split(" ")
    assert scheme == "Bearer"
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": "jibri-2024"}
    claims = jwt.decode(
        token,
        rsa_key.public_key(),
        algorithms=["RS256"],
        audience="jibri-pod-controller",
        issuer="jibri",
        options={"require": ["exp", "iss", "aud"]},
    )
    assert set(claims) == {"iss", "aud", "exp"}
    assert claims["aud"] == ["jibri-pod-controller"]
    assert abs(claims["exp"] - (issued + 3600)) <= 2
    # built once at start-up: every later request carries the very same token
    assert second.headers["Authorization"] == first.headers["Authorization"]


async def test_jwt_ttl_has_jibris_ten_minute_floor(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, receiver: Receiver
) -> None:
    key_path = write_key(tmp_path / "key.pem", rsa_key)
    async with running(receiver.base, jwt=signing(key_path, ttl=5), clock=lambda: 1000.0):
        hook = await receiver.next()
    token = hook.headers["Authorization"].removeprefix("Bearer ")
    assert jwt.decode(token, options={"verify_signature": False})["exp"] == 1600


async def test_token_from_a_stale_clock_is_already_expired(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, receiver: Receiver
) -> None:
    key_path = write_key(tmp_path / "key.pem", rsa_key)
    stale = time.time() - 7200
    async with running(receiver.base, jwt=signing(key_path, ttl=3600), clock=lambda: stale):
        hook = await receiver.next()
    token = hook.headers["Authorization"].removeprefix("Bearer ")
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(
            token, rsa_key.public_key(), algorithms=["RS256"], audience="jibri-pod-controller"
        )


@pytest.mark.parametrize("refresh", [True, False])
async def test_a_restart_signs_a_new_token_unless_disabled(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, receiver: Receiver, refresh: bool
) -> None:
    key_path = write_key(tmp_path / "key.pem", rsa_key)
    now = [1_000_000.0]
    async with running(
        receiver.base,
        jwt=signing(key_path),
        clock=lambda: now[0],
        refresh_token_on_restart=refresh,
    ) as sim:
        before = (await receiver.next()).headers["Authorization"]
        now[0] += 500
        await sim.crash()
        after = (await receiver.next()).headers["Authorization"]
    assert (before != after) is refresh


async def test_pkcs8_key_means_no_authorization_header(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, receiver: Receiver
) -> None:
    key_path = write_key(tmp_path / "key.pem", rsa_key, pkcs1=False)
    assert b"BEGIN PRIVATE KEY" in key_path.read_bytes()
    async with running(receiver.base, jwt=signing(key_path)):
        hook = await receiver.next()
    assert "Authorization" not in hook.headers


async def test_missing_key_file_means_no_authorization_header(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with running(receiver.base, jwt=signing(tmp_path / "absent.pem")):
        hook = await receiver.next()
    assert "Authorization" not in hook.headers


# --------------------------------------------------------------------------- many instances


async def test_many_instances_share_a_port_on_distinct_addresses(
    http: aiohttp.ClientSession,
) -> None:
    first = SimJibri(SimJibriConfig(pod_name="jibri-0", host="127.0.4.1", port=0))
    await first.start()
    others = [
        SimJibri(
            replace(first.config, pod_name=f"jibri-{i}", host=f"127.0.4.{i + 1}", port=first.port)
        )
        for i in range(1, 30)
    ]
    sims = [first, *others]
    try:
        await asyncio.gather(*(sim.start() for sim in others))
        assert len({sim.port for sim in sims}) == 1
        await others[4].start_recording("x")
        _, _, body = await get_json(http, others[4].base_url + HEALTH)
        assert body["status"]["busyStatus"] == "BUSY"
        _, _, body = await get_json(http, others[5].base_url + HEALTH)
        assert body["status"]["busyStatus"] == "IDLE"
    finally:
        await asyncio.gather(*(sim.stop() for sim in sims))


async def test_stop_is_idempotent_and_start_only_once() -> None:
    sim = SimJibri(SimJibriConfig(pod_name="pod-a", host=next_host(), port=0))
    await sim.stop()
    sim = SimJibri(SimJibriConfig(pod_name="pod-a", host=next_host(), port=0))
    await sim.start()
    with pytest.raises(RuntimeError):
        await sim.start()
    await sim.stop()
    await sim.stop()


# --------------------------------------------------------------------------- configuration


def test_config_from_env_substitutes_the_pod_name(tmp_path: Path) -> None:
    env = {
        "SIM_JIBRI_PORT": "2300",
        "SIM_JIBRI_ID": "$POD_NAME",
        "SIM_JIBRI_WEBHOOK_SUBSCRIBERS": (
            "http://ctl.ns.svc.cluster.local/webhook/$POD_NAME, http://other/${POD_NAME}/x,"
        ),
        "SIM_JIBRI_STATUS_PERIOD": "0.5",
        "SIM_JIBRI_JWT_KEY_PATH": str(tmp_path / "k.pem"),
        "SIM_JIBRI_JWT_KID": "kid-1",
        "SIM_JIBRI_JWT_ISSUER": "jibri",
        "SIM_JIBRI_JWT_AUDIENCE": "jibri-pod-controller",
        "SIM_JIBRI_JWT_TTL": "7200",
        "SIM_JIBRI_INTERNAL_API_PORT": "3400",
        "SIM_JIBRI_INTERNAL_API_HOST": "127.0.0.1",
        "SIM_JIBRI_EXIT_DELAY": "0.5",
        "SIM_JIBRI_REAL_BEHAVIOURS": "resend-dies-when-unreachable, start_when_expired",
    }
    config = config_from_env("jibri-abc", "10.0.0.5", env)
    assert config == SimJibriConfig(
        pod_name="jibri-abc",
        host="10.0.0.5",
        port=2300,
        jibri_id="jibri-abc",
        webhook_subscribers=(
            "http://ctl.ns.svc.cluster.local/webhook/jibri-abc",
            "http://other/jibri-abc/x",
        ),
        status_period=0.5,
        jwt=JwtSigning(tmp_path / "k.pem", "kid-1", "jibri", "jibri-pod-controller", 7200),
        internal_port=3400,
        internal_host="127.0.0.1",
        exit_delay=0.5,
        fidelity=Fidelity(resend_dies_when_unreachable=True, start_when_expired=True),
    )
    assert SimJibriConfig.from_env("jibri-abc", "10.0.0.5", env) == config


def test_config_from_env_defaults() -> None:
    config = config_from_env("jibri-abc", "10.0.0.5", {})
    assert config == SimJibriConfig(pod_name="jibri-abc", host="10.0.0.5")
    assert (config.port, config.status_period, config.jwt) == (2222, 60.0, None)
    assert config.effective_jibri_id == "jibri-abc"
    assert (config.internal_port, config.effective_internal_host) == (3333, "10.0.0.5")
    assert (config.exit_delay, config.fidelity) == (5.0, Fidelity())
    assert config_from_env("j", "10.0.0.5", {"SIM_JIBRI_REAL_BEHAVIOURS": "all"}).fidelity == REAL


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"SIM_JIBRI_PORT": "http"}, "SIM_JIBRI_PORT"),
        ({"SIM_JIBRI_STATUS_PERIOD": "soon"}, "SIM_JIBRI_STATUS_PERIOD"),
        ({"SIM_JIBRI_STATUS_PERIOD": "0"}, "status_period"),
        ({"SIM_JIBRI_JWT_KEY_PATH": "/k.pem", "SIM_JIBRI_JWT_KID": "k"}, "SIM_JIBRI_JWT_AUDIENCE"),
        ({"SIM_JIBRI_INTERNAL_API_PORT": "3333x"}, "SIM_JIBRI_INTERNAL_API_PORT"),
        ({"SIM_JIBRI_EXIT_DELAY": "-1"}, "exit_delay"),
        ({"SIM_JIBRI_REAL_BEHAVIOURS": "all,stuck"}, "SIM_JIBRI_REAL_BEHAVIOURS: unknown"),
    ],
)
def test_config_from_env_rejects_malformed_values(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        config_from_env("jibri-abc", "10.0.0.5", env)


def test_command_line() -> None:
    config = parse_cli(
        ["--host", "127.0.0.9", "--pod-name", "x", "--subscriber", "http://c/webhook/$POD_NAME"]
    )
    assert config == SimJibriConfig(
        pod_name="x", host="127.0.0.9", webhook_subscribers=("http://c/webhook/x",)
    )
    config = parse_cli(
        ["--pod-name", "x", "--internal-port", "0", "--exit-delay", "1", "--real-behaviours", "all"]
    )
    assert (config.internal_port, config.exit_delay, config.fidelity) == (0, 1.0, REAL)


@pytest.mark.parametrize("turns", [0, 1, 2, 3, 5, 8])
async def test_a_stop_while_it_starts_leaves_nothing_listening(turns: int) -> None:
    """The kubelet stops a runner it is still starting when the pod goes meanwhile: whatever
    the moment, the stopped Jibri listens on neither port afterwards (a listener bound after
    the stop was never closed, and the connections it then accepted were left open)."""
    host = next_host()
    config = SimJibriConfig(pod_name="pod-a", host=host, port=0, internal_port=0)
    sim = SimJibri(config)
    starting = asyncio.ensure_future(sim.start())
    for _ in range(turns):
        await asyncio.sleep(0)
    await sim.stop()
    await starting
    for port in (sim.port, sim.internal_port):
        if port != 0:  # 0: it never bound that port
            assert await refuses_connections(host, port), port
