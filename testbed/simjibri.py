"""A simulated Jibri in single-use mode, for end-to-end tests, the demo and benchmarks.

It speaks the wire protocol of the real Jibri (``jibri-protocol.md``; what the project relies on,
with the tests that show it, is in ``docs/protocol.md``):

* the HTTP API on ``(host, port)``: ``GET /jibri/api/v1.0/health`` (its JSON streamed as Ktor's
  Jackson writes it: chunked over HTTP/1.1, close-delimited over HTTP/1.0) and the
  unauthenticated control endpoints ``POST /jibri/api/v1.0/startService`` (IDLE -> BUSY, 412
  when a service runs) and ``POST /jibri/api/v1.0/stopService`` (BUSY -> EXPIRED, single use);
  answers carry the headers of Ktor's Jetty engine (no ``Date``, no ``Server``);
* the status webhook ``POST {base}/v1/status`` to every subscriber, at start-up, on every change of
  ``busyStatus`` and every ``status_period`` seconds, and the session webhook
  ``POST {base}/v1/session/status`` when a recording starts (``ON``) and stops (``OFF``).
  Like Jibri: 2 s client timeout, no retry, a non-200 answer is only logged, chunked bodies with
  no Content-Length, ``User-Agent: ktor-client``. Webhooks leave from the simulated pod's own
  address, because the controller compares it with the pod IP;
* the webhook JWT exactly as Jibri signs it: RS256, header ``kid``, claims ``iss``, ``aud`` (a
  one-element array) and ``exp`` only, built once when the process starts and never refreshed.
  A key that is not a PKCS#1 PEM, or any other JWT configuration error, means no
  ``Authorization`` header at all;
* Jibri's internal HTTP API on its own port (``jibri.api.http.internal-api-port``, 3333):
  ``POST /jibri/api/internal/v1.0/gracefulShutdown`` (exit 255 once no session runs),
  ``.../notifyConfigChanged`` (exit 0 once no session runs) and ``.../shutdown`` (stop the session
  at once, exit 255). The exit is observable: :attr:`SimJibri.exited` resolves with the exit code
  ``exit_delay`` seconds after the decision, the APIs having stopped accepting connections at once.

The real Jibri's harmful behaviours (a periodic resend that dies, a BUSY stuck for good, no
EXPIRED after a graceful shutdown, a start accepted when EXPIRED, a process left without API by a
port clash) are each a switch of :class:`Fidelity`, off by default; ``Fidelity.real()`` (or
``SIM_JIBRI_REAL_BEHAVIOURS=all``) turns them all on.

Faults are injected through ``/_sim/...`` endpoints on the same port, which the real Jibri does
not have, or through the matching Python methods: a crash and restart of the Jibri process,
misbehaving health answers (hang, garbage, huge, unknown status, black hole) and silence on the
webhook channel.

Thousands of instances can share one event loop (one per loopback address ``127.x.y.z``, all on
the same ports): each instance costs two listening sockets and two aiohttp servers, and its
webhook client session is created only when it first has something to send.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import functools
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import aiohttp
import jwt
import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

__all__ = [
    "BusyStatus",
    "Fidelity",
    "HealthMode",
    "JwtSigning",
    "SimJibri",
    "SimJibriConfig",
    "build_token",
    "config_from_env",
    "main",
    "parse_cli",
]

log = logging.getLogger(__name__)

API_PREFIX: Final = "/jibri/api/v1.0"
HEALTH_PATH: Final = f"{API_PREFIX}/health"
START_PATH: Final = f"{API_PREFIX}/startService"
STOP_PATH: Final = f"{API_PREFIX}/stopService"
DEFAULT_PORT: Final = 2222
INTERNAL_PREFIX: Final = "/jibri/api/internal/v1.0"
GRACEFUL_SHUTDOWN_PATH: Final = f"{INTERNAL_PREFIX}/gracefulShutdown"
SHUTDOWN_PATH: Final = f"{INTERNAL_PREFIX}/shutdown"
CONFIG_CHANGED_PATH: Final = f"{INTERNAL_PREFIX}/notifyConfigChanged"
DEFAULT_INTERNAL_PORT: Final = 3333
# From the exit decision to the end of the process, as observed on a real Jibri: its HTTP servers'
# shutdown hooks (Ktor's default shutdown timeout) run before the JVM ends.
DEFAULT_EXIT_DELAY: Final = 5.0
EXIT_GRACEFUL: Final = 255
"""Jibri's exit code for "do not restart me" (graceful shutdown and shutdown)."""
EXIT_CONFIG_CHANGED: Final = 0
EXIT_CRASHED: Final = 1
"""The exit code of a crashed process that is not restarted."""
DEFAULT_STATUS_PERIOD: Final = 60.0
DEFAULT_JWT_TTL: Final = 24 * 3600
# jicoco's JwtInfo raises any configured ttl below ten minutes to ten minutes.
MIN_JWT_TTL: Final = 600
WEBHOOK_TIMEOUT: Final = 2.0
HUGE_BODY_BYTES: Final = 8 * 1024 * 1024
_SHUTDOWN_GRACE: Final = 0.5

OnRestart = Callable[[int], Awaitable[bool | None]]
OnChange = Callable[[str, float], None]
OnExit = Callable[[int], None]
Clock = Callable[[], float]


class BusyStatus(enum.StrEnum):
    """Jibri's ``busyStatus``."""

    IDLE = "IDLE"
    BUSY = "BUSY"
    EXPIRED = "EXPIRED"


class HealthMode(enum.StrEnum):
    """How the health endpoint (and, for ``BLACKHOLE``, the whole port) behaves."""

    NORMAL = "normal"
    HANG = "hang"
    GARBAGE = "garbage"
    HUGE = "huge"
    UNKNOWN_STATUS = "unknown-status"
    BLACKHOLE = "blackhole"


@dataclass(frozen=True, slots=True)
class JwtSigning:
    """``jibri.jwt-info``: how webhooks are signed."""

    key_path: Path
    kid: str
    issuer: str
    audience: str
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class Fidelity:
    """Which of the real Jibri's harmful behaviours the simulator reproduces.

    Each is off by default, so that the simulator keeps the lifecycle the tests, the demo, the
    chaos run and the benchmarks were written against; :meth:`real` turns every one on.
    """

    resend_dies_when_unreachable: bool = False
    """The periodic status resend stops for good after one tick at which a subscriber was
    unreachable (any error but a timeout): the resend is a Java fixed-rate task, which a thrown
    exception cancels silently. Events (BUSY, session ON/OFF, EXPIRED) still go out."""

    busy_stuck_when_unreachable: bool = False
    """A subscriber unreachable when Jibri goes BUSY: ``startService`` answers 500, no session
    starts, and Jibri reports BUSY for good (``stopService``: "No service active"), until
    another ``startService`` succeeds. Jibri sends the BUSY webhook synchronously, before it
    records the new service, and the error escapes to the HTTP handler's catch-all."""

    no_expired_after_graceful_shutdown: bool = False
    """A graceful shutdown (or config change) pending when the session ends: the session OFF
    webhook, then the exit, and no EXPIRED webhook (Jibri runs its idle hook before it publishes
    EXPIRED, and the hook ends the process). Off: EXPIRED is sent, then the process exits."""

    start_when_expired: bool = False
    """An EXPIRED Jibri accepts ``startService`` and goes BUSY again (Jibri refuses a start only
    while a service runs; single-use mode only stops it from reporting IDLE). Off: 412."""

    survives_port_clash: bool = False
    """A port already taken at start-up: the process stays, without the API that could not
    bind (the internal one: without either, as Jibri binds it first), and keeps sending its
    IDLE webhooks. Off: :meth:`SimJibri.start` raises the ``OSError``."""

    @classmethod
    def real(cls) -> Fidelity:
        """As the real Jibri: every behaviour on."""
        return cls(**{name: True for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class SimJibriConfig:
    """What a pod's ``jibri.conf`` would say, reduced to what the controller can observe."""

    pod_name: str
    host: str
    port: int = DEFAULT_PORT
    jibri_id: str | None = None
    webhook_subscribers: tuple[str, ...] = ()
    status_period: float = DEFAULT_STATUS_PERIOD
    jwt: JwtSigning | None = None
    internal_port: int = DEFAULT_INTERNAL_PORT
    internal_host: str | None = None
    """``jibri.api.http.internal-api-host``. Jibri's default is 127.0.0.1, the pod's own
    loopback; a simulated pod has none of its own, so ``None`` means the pod's address."""
    exit_delay: float = DEFAULT_EXIT_DELAY
    fidelity: Fidelity = Fidelity()

    def __post_init__(self) -> None:
        if not self.status_period > 0:
            raise ValueError(f"status_period must be positive, got {self.status_period}")
        if not self.exit_delay >= 0:
            raise ValueError(f"exit_delay must not be negative, got {self.exit_delay}")

    @property
    def effective_internal_host(self) -> str:
        return self.internal_host if self.internal_host is not None else self.host

    @property
    def effective_jibri_id(self) -> str:
        """``jibri.id``; the recommended configuration sets it to the pod name."""
        return self.jibri_id if self.jibri_id is not None else self.pod_name

    @classmethod
    def from_env(cls, pod_name: str, host: str, env: Mapping[str, str]) -> SimJibriConfig:
        """Same as :func:`config_from_env`."""
        return config_from_env(pod_name, host, env)


# --------------------------------------------------------------------------- configuration


def _substitute_pod_name(value: str, pod_name: str) -> str:
    """Replace ``$POD_NAME`` / ``${POD_NAME}`` as envsubst does for the recommended jibri.conf."""
    return value.replace("${POD_NAME}", pod_name).replace("$POD_NAME", pod_name)


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _jwt_from_env(env: Mapping[str, str]) -> JwtSigning | None:
    key_path = env.get("SIM_JIBRI_JWT_KEY_PATH", "").strip()
    if not key_path:
        return None
    fields = {
        name: env.get(f"SIM_JIBRI_JWT_{name}", "").strip() for name in ("KID", "ISSUER", "AUDIENCE")
    }
    missing = sorted(f"SIM_JIBRI_JWT_{name}" for name, value in fields.items() if not value)
    if missing:
        raise ValueError(f"SIM_JIBRI_JWT_KEY_PATH is set but {', '.join(missing)} is not")
    return JwtSigning(
        key_path=Path(key_path),
        kid=fields["KID"],
        issuer=fields["ISSUER"],
        audience=fields["AUDIENCE"],
        ttl_seconds=_env_int(env, "SIM_JIBRI_JWT_TTL", DEFAULT_JWT_TTL),
    )


def _fidelity_from_names(raw: str, source: str) -> Fidelity:
    """``all`` or a comma-separated list of :class:`Fidelity` fields (``-`` or ``_``)."""
    names = [item.strip().replace("-", "_") for item in raw.split(",") if item.strip()]
    if names == ["all"]:
        return Fidelity.real()
    known = set(Fidelity.__dataclass_fields__)
    unknown = sorted(set(names) - known)
    if unknown:
        choices = ", ".join(["all", *sorted(known)])
        raise ValueError(f"{source}: unknown behaviour {', '.join(unknown)} (known: {choices})")
    return Fidelity(**dict.fromkeys(names, True))


def config_from_env(pod_name: str, host: str, env: Mapping[str, str]) -> SimJibriConfig:
    """Build a configuration from a pod's container environment.

    Variables: ``SIM_JIBRI_PORT`` (default 2222), ``SIM_JIBRI_ID`` (default: the pod name),
    ``SIM_JIBRI_WEBHOOK_SUBSCRIBERS`` (comma-separated base URLs), ``SIM_JIBRI_STATUS_PERIOD``
    (seconds, default 60), and for signed webhooks ``SIM_JIBRI_JWT_KEY_PATH``,
    ``SIM_JIBRI_JWT_KID``, ``SIM_JIBRI_JWT_ISSUER``, ``SIM_JIBRI_JWT_AUDIENCE`` and
    ``SIM_JIBRI_JWT_TTL`` (seconds, default 86400). The internal API:
    ``SIM_JIBRI_INTERNAL_API_PORT`` (default 3333), ``SIM_JIBRI_INTERNAL_API_HOST`` (default: the
    pod's address) and ``SIM_JIBRI_EXIT_DELAY`` (seconds from an exit decision to the process's
    end, default 5). ``SIM_JIBRI_REAL_BEHAVIOURS``: ``all`` or a comma-separated list of
    :class:`Fidelity` fields to turn on. ``$POD_NAME`` in the id and the subscriber URLs is
    replaced by the pod name. Raises ``ValueError`` on malformed values.
    """
    raw_subscribers = env.get("SIM_JIBRI_WEBHOOK_SUBSCRIBERS", "")
    subscribers = tuple(
        _substitute_pod_name(item.strip(), pod_name)
        for item in raw_subscribers.split(",")
        if item.strip()
    )
    raw_id = env.get("SIM_JIBRI_ID", "").strip()
    return SimJibriConfig(
        pod_name=pod_name,
        host=host,
        port=_env_int(env, "SIM_JIBRI_PORT", DEFAULT_PORT),
        jibri_id=_substitute_pod_name(raw_id, pod_name) if raw_id else None,
        webhook_subscribers=subscribers,
        status_period=_env_float(env, "SIM_JIBRI_STATUS_PERIOD", DEFAULT_STATUS_PERIOD),
        jwt=_jwt_from_env(env),
        internal_port=_env_int(env, "SIM_JIBRI_INTERNAL_API_PORT", DEFAULT_INTERNAL_PORT),
        internal_host=env.get("SIM_JIBRI_INTERNAL_API_HOST", "").strip() or None,
        exit_delay=_env_float(env, "SIM_JIBRI_EXIT_DELAY", DEFAULT_EXIT_DELAY),
        fidelity=_fidelity_from_names(
            env.get("SIM_JIBRI_REAL_BEHAVIOURS", ""), "SIM_JIBRI_REAL_BEHAVIOURS"
        ),
    )


# --------------------------------------------------------------------------- JWT


def _load_pkcs1_key(path: Path) -> rsa.RSAPrivateKey:
    """Read the signing key the way Jibri's PEM parser accepts it: unencrypted PKCS#1 RSA."""
    pem = path.read_bytes()
    if not pem.lstrip().startswith(b"-----BEGIN RSA PRIVATE KEY-----"):
        raise ValueError(f"{path} is not a PKCS#1 PEM (BEGIN RSA PRIVATE KEY)")
    key = load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} does not hold an RSA key")
    return key


def build_token(signing: JwtSigning, now: float) -> str:
    """Sign the webhook JWT as Jibri does: RS256, ``kid``, and only ``iss``, ``aud``, ``exp``."""
    key = _load_pkcs1_key(signing.key_path)
    ttl = max(signing.ttl_seconds, MIN_JWT_TTL)
    claims = {"iss": signing.issuer, "aud": [signing.audience], "exp": int(now) + ttl}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": signing.kid, "typ": None})


def _authorization_header(signing: JwtSigning | None, now: float) -> str | None:
    """The ``Authorization`` value, or ``None`` when unsigned or misconfigured (as Jibri)."""
    if signing is None:
        return None
    try:
        return f"Bearer {build_token(signing, now)}"
    except (OSError, ValueError, TypeError, jwt.PyJWTError) as exc:
        log.error("unable to create the webhook JWT, sending webhooks without it: %s", exc)
        return None


# --------------------------------------------------------------------------- bodies


def _health(health_status: str = "HEALTHY") -> dict[str, Any]:
    return {"healthStatus": health_status, "details": {}}


def _status(busy_status: str) -> dict[str, Any]:
    return {"busyStatus": busy_status, "health": _health()}


@functools.cache
def _huge_padding() -> bytes:
    return b"x" * HUGE_BODY_BYTES


_GARBAGE_BODY: Final = b'{"status": {"busyStatus": "EXPIRED", "health": {"healthSt\xff\xfe<html>'


# Jetty's reason phrases where they differ from Python's.
_JETTY_REASONS: Final = {500: "Server Error"}


def _json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _status_response(status: int) -> web.Response:
    """Ktor's ``call.respond(HttpStatusCode)``: the status, ``Content-Length: 0``, nothing else."""
    return web.Response(status=status, reason=_JETTY_REASONS.get(status))


def _text_response(text: str, status: int) -> web.Response:
    """Ktor's answer with a string: ``text/plain; charset=UTF-8`` and its length."""
    return web.Response(
        status=status,
        reason=_JETTY_REASONS.get(status),
        body=text.encode(),
        headers={"Content-Type": "text/plain; charset=UTF-8"},
    )


async def _as_jetty(request: web.Request, response: web.StreamResponse) -> None:
    """Headers as Ktor's Jetty engine sends them: no ``Date``, no ``Server`` (Ktor turns both
    off), and the request's ``Connection: keep-alive`` echoed as Ktor does."""
    response.headers.popall("Date", None)
    response.headers.popall("Server", None)
    if request.headers.get("Connection", "").lower() == "keep-alive":
        response.headers["Connection"] = "keep-alive"


def _api_runner(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.AppRunner:
    """One HTTP server (Ktor's ``embeddedServer``) whose answers carry Jetty's headers."""
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handler)
    app.on_response_prepare.append(_as_jetty)
    return web.AppRunner(app, handler_cancellation=True, access_log=None)


# What Jibri's Ktor client sends besides the body: its User-Agent, the Accept its JSON content
# negotiation adds, and the Accept-Charset of its plain-text plugin.
_WEBHOOK_HEADERS: Final = {
    "Content-Type": "application/json",
    "User-Agent": "ktor-client",
    "Accept": "application/json",
    "Accept-Charset": "UTF-8",
}


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    """A body of unknown length, so that it goes out chunked with no Content-Length, as Jibri's
    streamed JSON does."""
    yield data


async def _read_json_object(request: web.Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or ``None`` if it is anything else."""
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _nested_str(data: Mapping[str, Any], outer: str, inner: str) -> str | None:
    value = data.get(outer)
    return _optional_str(value.get(inner)) if isinstance(value, dict) else None


# --------------------------------------------------------------------------- black hole


class _Blackhole(asyncio.Protocol):
    """Accepts a connection, never reads from it and never answers."""

    def __init__(self, sink: set[asyncio.Transport]) -> None:
        self._sink = sink
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Cast, not asserted: uvloop's transports implement the interface without subclassing it.
        stream = cast(asyncio.Transport, transport)
        self._transport = stream
        self._sink.add(stream)
        stream.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._sink.discard(self._transport)


class _Outcome(enum.Enum):
    """What one webhook request came to, as Jibri's client sees it."""

    DELIVERED = "delivered"
    REFUSED = "refused"
    """Answered with a status other than 200 (logged by Jibri)."""
    TIMED_OUT = "timed-out"
    """No answer within the 2 s request timeout (caught and logged by Jibri)."""
    UNREACHABLE = "unreachable"
    """Any other error (connection refused, reset, no route): thrown by Jibri's client."""


class _Start(enum.Enum):
    STARTED = "started"
    BUSY = "busy"
    FAILED = "failed"


# --------------------------------------------------------------------------- servers


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _let_accepts_settle() -> None:
    """After closing a listener: a connection accepted just before the close has its transport
    made in a task of the loop and its protocol told in a callback after that; let both run, so
    that the server knows the connection and closes it (else its socket is left to the garbage
    collector: a ResourceWarning in whichever test runs then)."""
    for _ in range(2):
        await asyncio.sleep(0)


async def _listen(
    factory: Callable[[], asyncio.BaseProtocol], host: str, port: int
) -> asyncio.Server:
    """``loop.create_server``, safe to cancel: it starts serving, then yields once, so a
    cancellation at that moment would leave a server listening that nobody holds (nor ever
    closes: its connections were then left open). Cancelled, this closes it once made."""
    making = asyncio.ensure_future(
        asyncio.get_running_loop().create_server(factory, host, port, reuse_address=True)
    )
    try:
        return await asyncio.shield(making)
    except asyncio.CancelledError:
        making.add_done_callback(_close_made_server)
        raise


def _close_made_server(making: asyncio.Future[asyncio.Server]) -> None:
    if not making.cancelled() and making.exception() is None:
        making.result().close()


class _Connections:
    """One HTTP server's connections, as its protocol factory made them, so that every one of
    them can be closed. aiohttp's ``Server.shutdown`` closes only those it knows when it starts,
    and a handler closed before its connection was made has no transport to close yet: when
    the connection then arrives, the handler sees itself closed and leaves the transport open
    (its socket left to the garbage collector: a ResourceWarning in whichever test ran then).
    So a handler is kept until its connection has come and gone, and a close lets the
    connections accepted meanwhile be made, then closes them too."""

    SETTLE = 3
    """Loop turns after a close for a connection accepted before it to be made (the accept's
    task, then its ``connection_made``)."""

    def __init__(self, runner: web.AppRunner) -> None:
        self._runner = runner
        self._handlers: set[RequestHandler] = set()
        self._connected: set[RequestHandler] = set()
        """Handlers whose connection was seen made: once it is gone, they are done."""

    def __call__(self) -> RequestHandler:
        server = self._runner.server
        assert server is not None, "the runner is set up before it listens"
        self._forget_finished()
        handler = server()
        self._handlers.add(handler)
        return handler

    def _forget_finished(self) -> None:
        for handler in list(self._handlers):
            if handler.transport is not None:
                self._connected.add(handler)
            elif handler in self._connected:
                self._handlers.discard(handler)
                self._connected.discard(handler)

    async def drop(self) -> None:
        """Close them all; a request being answered gets a short grace period."""
        server = self._runner.server
        if server is not None:
            server.pre_shutdown()
            await server.shutdown(_SHUTDOWN_GRACE)
        await self.close()

    async def close(self) -> None:
        for handler in self._handlers:
            handler.force_close()
        for _ in range(self.SETTLE):
            await asyncio.sleep(0)
        for handler in self._handlers:
            handler.force_close()  # those whose connection was made meanwhile
        self._forget_finished()


# --------------------------------------------------------------------------- the simulator


@dataclass(slots=True)
class _Session:
    session_id: str
    sip_address: str | None
    environment: str | None


class SimJibri:
    """One simulated Jibri container (see the module docstring).

    ``on_restart(restart_count)`` is awaited after each simulated crash, before the restarted
    process reports IDLE; it answers False when the container is not restarted (the kubelet
    restarts no container of a terminating pod): the process then stays dead and exits.
    ``clock`` gives the JWT issue time (a clock in the past yields tokens that are already
    expired). With ``refresh_token_on_restart`` a restart re-reads the key file
    and signs a new token, as a real process start does.

    Ground truth: ``history`` lists every change of ``busyStatus`` as ``(wall time, status)``,
    with ``"CRASH"`` for a crash (the status is IDLE after it) and ``"EXIT"`` when the process
    ends by itself (see :attr:`exited`); ``on_change(status, wall time)`` is called for each entry
    as it happens. ``on_exit(exit code)`` is called when the process ends.
    """

    def __init__(
        self,
        config: SimJibriConfig,
        *,
        on_restart: OnRestart | None = None,
        clock: Clock = time.time,
        refresh_token_on_restart: bool = True,
        on_change: OnChange | None = None,
        on_exit: OnExit | None = None,
    ) -> None:
        self.config = config
        self._on_change = on_change
        self._on_exit = on_exit
        self.history: list[tuple[float, str]] = []
        self._on_restart = on_restart
        self._clock = clock
        self._refresh_token_on_restart = refresh_token_on_restart
        self._busy_status = BusyStatus.IDLE
        self._session: _Session | None = None
        self._restart_count = 0
        self._webhooks_sent = 0
        self._webhooks_failed = 0
        self._webhooks_enabled = True
        self._silent_since: float | None = None
        self._lose_status_webhooks = 0
        self._webhooks_lost = 0
        self._health_mode = HealthMode.NORMAL
        self._authorization: str | None = None
        self._port = config.port
        self._internal_port = config.internal_port
        self._started = False
        self._stopped = False
        self._api: web.AppRunner | None = None
        self._internal_api: web.AppRunner | None = None
        self._internal_connections: _Connections | None = None
        self._api_connections: _Connections | None = None
        self._listener: asyncio.Server | None = None
        self._internal_listener: asyncio.Server | None = None
        self._blackhole_transports: set[asyncio.Transport] = set()
        self._hung: set[web.RequestHandler] = set()
        self._switch_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        """Jibri's manager lock: one startService at a time."""
        self._client: aiohttp.ClientSession | None = None
        self._deliveries: set[asyncio.Task[_Outcome]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._tick_watch: asyncio.Task[None] | None = None
        self._next_tick = 0.0
        self._resend_died = False
        self._api_error: OSError | None = None
        self._pending_exit: int | None = None
        """The exit code Jibri's "execute when idle" hook will exit with (last request wins)."""
        self._exiting = False
        self._exit_code: int | None = None
        self._exited: asyncio.Future[int] | None = None

    # ----------------------------------------------------------------- properties

    @property
    def busy_status(self) -> BusyStatus:
        return self._busy_status

    @property
    def restart_count(self) -> int:
        return self._restart_count

    @property
    def webhooks_sent(self) -> int:
        """Webhook requests sent (one per subscriber and event), whatever their outcome."""
        return self._webhooks_sent

    @property
    def webhooks_failed(self) -> int:
        """Webhook requests that got no answer in time or a non-200 answer."""
        return self._webhooks_failed

    @property
    def webhooks_enabled(self) -> bool:
        return self._webhooks_enabled

    def was_stopped(self) -> bool:
        """`stop` was called: the container is gone (perhaps while it was still starting)."""
        return self._stopped

    @property
    def silent_since(self) -> float | None:
        """Wall time since which every webhook is silenced (None while they go out)."""
        return self._silent_since

    @property
    def webhooks_lost(self) -> int:
        """Status webhooks lost through :meth:`lose_next_status_webhook`."""
        return self._webhooks_lost

    @property
    def health_mode(self) -> HealthMode:
        return self._health_mode

    @property
    def session_id(self) -> str | None:
        return self._session.session_id if self._session else None

    @property
    def jibri_id(self) -> str:
        return self.config.effective_jibri_id

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        return self._port

    @property
    def internal_port(self) -> int:
        """The internal API's bound port (useful with ``internal_port=0``)."""
        return self._internal_port

    @property
    def base_url(self) -> str:
        return _url(self.config.host, self._port)

    @property
    def internal_base_url(self) -> str:
        return _url(self.config.effective_internal_host, self._internal_port)

    @property
    def resend_died(self) -> bool:
        """The periodic resend has stopped for good (``resend_dies_when_unreachable``)."""
        return self._resend_died

    @property
    def api_error(self) -> OSError | None:
        """Why an API could not bind at start-up (``survives_port_clash``); None if both did."""
        return self._api_error

    @property
    def exiting(self) -> bool:
        """The process has decided to exit: its APIs are closed, no webhook goes out."""
        return self._exiting

    @property
    def exit_code(self) -> int | None:
        """The code the process exited with; ``None`` while it runs (or if it was stopped)."""
        return self._exit_code

    @property
    def exited(self) -> asyncio.Future[int]:
        """Resolves with the exit code when the process ends by itself (a graceful shutdown,
        a shutdown, a config change). A container runtime restarts it, or not, from there."""
        if self._exited is None:
            self._exited = asyncio.get_running_loop().create_future()
        return self._exited

    def state(self) -> dict[str, Any]:
        """What ``GET /_sim/state`` returns."""
        return {
            "podName": self.config.pod_name,
            "jibriId": self.jibri_id,
            "busyStatus": str(self._busy_status),
            "sessionId": self.session_id,
            "restartCount": self._restart_count,
            "webhooksSent": self._webhooks_sent,
            "webhooksFailed": self._webhooks_failed,
            "webhooksEnabled": self._webhooks_enabled,
            "healthMode": str(self._health_mode),
            "exiting": self._exiting,
            "exitCode": self._exit_code,
            "resendDied": self._resend_died,
            "silentSince": self._silent_since,
            "webhooksLost": self._webhooks_lost,
        }

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind the internal API, then the HTTP API (Jibri's order), then behave like a freshly
        started Jibri process."""
        if self._started:
            raise RuntimeError("SimJibri.start() called twice")
        self._started = True
        self._internal_api = _api_runner(self._handle_internal)
        self._api = _api_runner(self._handle)
        await self._internal_api.setup()
        await self._api.setup()
        self._internal_connections = _Connections(self._internal_api)
        self._api_connections = _Connections(self._api)
        # A stop while it starts (its container gone meanwhile: the kubelet stops a runner it
        # is still starting) has found nothing to close yet: nothing may open after it.
        if self.was_stopped():
            return
        try:
            await self._listen_internal()
            if not self.was_stopped():
                await self._listen_http()
        except OSError as exc:
            if not self.config.fidelity.survives_port_clash:
                await self._close_internal_listener()
                raise
            # Jibri's main thread dies on the bind error; its status task, already scheduled,
            # keeps the JVM alive.
            self._api_error = exc
            log.error("%s: an API could not start, the process stays: %s", self.jibri_id, exc)
        if self.was_stopped():
            await self._close_apis()
            return
        self._boot(sign=True)

    async def stop(self) -> None:
        """Stop timers, webhooks and the servers (the container is gone). Idempotent."""
        if self._stopped or not self._started:
            self._stopped = True
            return
        self._stopped = True
        self._cancel_timer()
        await self._cancel_all(self._background)
        await self._close_apis()
        await self._cancel_all(self._deliveries)
        await self._close_client()
        for runner in (self._api, self._internal_api):
            if runner is not None:
                await runner.cleanup()
        for connections in (self._api_connections, self._internal_connections):
            if connections is not None:
                await connections.close()

    async def __aenter__(self) -> SimJibri:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _boot(self, *, sign: bool) -> None:
        """What a new Jibri process does: sign the JWT once, then report status periodically."""
        if sign:
            self._authorization = _authorization_header(self.config.jwt, self._clock())
        self._cancel_timer()
        self._next_tick = asyncio.get_running_loop().time()
        self._tick()

    def _tick(self) -> None:
        self._timer = None
        deliveries = self._send_status()
        if self.config.fidelity.resend_dies_when_unreachable and deliveries:
            # Jibri's task waits for every subscriber's answer before its next run.
            self._tick_watch = asyncio.get_running_loop().create_task(self._after_tick(deliveries))
        else:
            self._schedule_tick()

    def _schedule_tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._next_tick = max(self._next_tick + self.config.status_period, loop.time())
        self._timer = loop.call_at(self._next_tick, self._tick)

    async def _after_tick(self, deliveries: list[asyncio.Task[_Outcome]]) -> None:
        outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
        self._tick_watch = None
        if _Outcome.UNREACHABLE in outcomes:
            self._resend_died = True
            log.warning("%s: a subscriber was unreachable; the status resend stops", self.jibri_id)
            return
        if not (self._stopped or self._exiting):
            self._schedule_tick()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._tick_watch is not None:
            self._tick_watch.cancel()
            self._tick_watch = None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _cancel_all(tasks: set[asyncio.Task[None]] | set[asyncio.Task[_Outcome]]) -> None:
        pending = list(tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        tasks.clear()

    async def _close_client(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # ----------------------------------------------------------------- listeners

    async def _listen_http(self) -> None:
        assert self._api is not None
        assert self._api.server is not None
        assert self._api_connections is not None
        self._listener = await _listen(self._api_connections, self.config.host, self._port)
        self._port = self._listener.sockets[0].getsockname()[1]

    async def _listen_internal(self) -> None:
        assert self._internal_api is not None
        assert self._internal_api.server is not None
        assert self._internal_connections is not None
        self._internal_listener = await _listen(
            self._internal_connections, self.config.effective_internal_host, self._internal_port
        )
        self._internal_port = self._internal_listener.sockets[0].getsockname()[1]

    async def _listen_blackhole(self) -> None:
        sink = self._blackhole_transports
        self._listener = await _listen(lambda: _Blackhole(sink), self.config.host, self._port)

    async def _close_apis(self) -> None:
        """Both APIs stop accepting connections and drop the open ones."""
        async with self._switch_lock:
            await self._close_listener()
        await self._close_internal_listener()

    async def _close_listener(self) -> None:
        """Stop listening on the HTTP API's port and drop every open connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            await _let_accepts_settle()
        self._drop_blackhole_connections()
        await self._drop_http_connections()
        if listener is not None:
            await listener.wait_closed()

    async def _close_internal_listener(self) -> None:
        listener, self._internal_listener = self._internal_listener, None
        if listener is None:
            return
        listener.close()
        await _let_accepts_settle()
        if self._internal_connections is not None:
            await self._internal_connections.drop()
        await listener.wait_closed()

    async def _drop_http_connections(self) -> None:
        """Close HTTP connections; a request being answered gets a short grace period."""
        for protocol in list(self._hung):
            protocol.force_close()
        self._hung.clear()
        if self._api_connections is not None:
            await self._api_connections.drop()

    def _drop_blackhole_connections(self) -> None:
        for transport in list(self._blackhole_transports):
            transport.abort()
        self._blackhole_transports.clear()

    async def _switch_listener(self, blackhole: bool) -> None:
        """Swap the HTTP server and the black hole on the same address, without a gap."""
        async with self._switch_lock:
            closed = self._stopped or self._exiting
            if closed or (self._health_mode is HealthMode.BLACKHOLE) == blackhole:
                return
            old, self._listener = self._listener, None
            if old is not None:
                old.close()
            if blackhole:
                await self._listen_blackhole()
                await self._drop_http_connections()
            else:
                self._drop_blackhole_connections()
                await self._listen_http()
            if old is not None:
                await old.wait_closed()

    # ----------------------------------------------------------------- Jibri behaviour

    async def start_recording(
        self,
        session_id: str | None = None,
        *,
        sip_address: str | None = None,
        environment: str | None = None,
    ) -> bool:
        """``startService``: IDLE -> BUSY and session ON; False when it did not start (412 when
        not idle, 500 when stuck). ``environment``: the environment context of a session
        started over XMPP (reported by health while BUSY); sessions started over HTTP have
        none."""
        outcome = await self._start_service(session_id, sip_address, environment)
        return outcome is _Start.STARTED

    def _may_start(self) -> bool:
        if self._exiting or self._session is not None:
            return False
        fidelity = self.config.fidelity
        return (
            self._busy_status is BusyStatus.IDLE
            or (self._busy_status is BusyStatus.EXPIRED and fidelity.start_when_expired)
            # stuck BUSY: Jibri has no service, so it takes the next one
            or (self._busy_status is BusyStatus.BUSY and fidelity.busy_stuck_when_unreachable)
        )

    async def _start_service(
        self, session_id: str | None, sip_address: str | None, environment: str | None
    ) -> _Start:
        async with self._start_lock:
            return await self._start_service_locked(session_id, sip_address, environment)

    async def _start_service_locked(
        self, session_id: str | None, sip_address: str | None, environment: str | None
    ) -> _Start:
        if not self._may_start():
            return _Start.BUSY
        session = _Session(session_id or uuid.uuid4().hex, sip_address, environment)
        if self.config.fidelity.busy_stuck_when_unreachable:
            # Jibri publishes BUSY (and waits for the webhook) before it records the service.
            deliveries = self._set_busy_status(BusyStatus.BUSY)
            outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
            if _Outcome.UNREACHABLE in outcomes:
                log.error("%s: BUSY webhook unreachable; startService fails", self.jibri_id)
                return _Start.FAILED
            if self._exiting:
                return _Start.BUSY
            self._session = session
        else:
            self._session = session
            self._set_busy_status(BusyStatus.BUSY)
        self._send_session("ON")
        return _Start.STARTED

    async def stop_recording(self) -> bool:
        """``stopService``: the session ends (session OFF) and, single use, EXPIRED follows.
        False when no session runs ("No service active")."""
        if self._session is None:
            return False
        self._send_session("OFF")
        self._session = None
        pending, self._pending_exit = self._pending_exit, None
        if pending is not None and self.config.fidelity.no_expired_after_graceful_shutdown:
            # The session is over all the same: single use, this Jibri is EXPIRED, it only
            # exits before telling anyone. The ground truth says so; no webhook does.
            self._busy_status = BusyStatus.EXPIRED
            self._record(BusyStatus.EXPIRED.value)
            self._begin_exit(pending)
            return True
        self._set_busy_status(BusyStatus.EXPIRED)
        if pending is not None:
            self._begin_exit(pending)
        return True

    async def graceful_shutdown(self) -> None:
        """The internal API's ``gracefulShutdown``: exit 255 now if no session runs, else when
        it ends; the session goes on meanwhile."""
        self._when_idle(EXIT_GRACEFUL)

    async def notify_config_changed(self) -> None:
        """The internal API's ``notifyConfigChanged``: exit 0 (to be restarted with the new
        configuration) now if no session runs, else when it ends."""
        self._when_idle(EXIT_CONFIG_CHANGED)

    async def shutdown(self) -> None:
        """The internal API's ``shutdown``: stop the session at once, then exit 255."""
        if self._exiting:
            return
        await self.stop_recording()
        self._begin_exit(EXIT_GRACEFUL)

    def _when_idle(self, code: int) -> None:
        """Jibri's ``executeWhenIdle``: at once when no service runs (IDLE, EXPIRED), else one
        pending hook, replaced by a later request."""
        if self._exiting:
            return
        if self._session is None:
            self._begin_exit(code)
        else:
            self._pending_exit = code

    def _begin_exit(self, code: int) -> None:
        if self._exiting or self._stopped:
            return
        self._exiting = True
        self._cancel_timer()
        self._spawn(self._exit(code))

    async def _exit(self, code: int) -> None:
        """The process's end: the APIs close at once, the webhooks already sent complete, and
        the process is gone ``exit_delay`` seconds after the decision."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.exit_delay
        await self._close_apis()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self.drain_webhooks()
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        await self._cancel_all(self._deliveries)
        await self._close_client()
        self._exit_code = code
        self._record("EXIT")
        if not self.exited.done():
            self.exited.set_result(code)
        if self._on_exit is not None:
            self._on_exit(code)

    async def crash(self) -> None:
        """The Jibri process dies and its container restarts: IDLE again, restart_count + 1."""
        if self._exiting:
            return
        self._cancel_timer()
        await self._cancel_all(self._deliveries)
        self._session = None
        self._pending_exit = None
        self._resend_died = False
        self._busy_status = BusyStatus.IDLE
        self._record("CRASH")
        self._restart_count += 1
        restart: bool | None = None
        try:
            if self._on_restart is not None:
                restart = await self._on_restart(self._restart_count)
        finally:
            if not self._stopped:
                if restart is False:
                    self._restart_count -= 1  # no new process: the crashed one stays dead
                    self._begin_exit(EXIT_CRASHED)
                else:
                    self._boot(sign=self._refresh_token_on_restart)

    async def set_health_mode(self, mode: HealthMode | str) -> None:
        """Change how health requests are answered; leaving ``blackhole`` restores the API."""
        new_mode = HealthMode(mode)
        await self._switch_listener(new_mode is HealthMode.BLACKHOLE)
        self._health_mode = new_mode

    def set_webhooks_enabled(self, enabled: bool) -> None:
        """Silence (or restore) every webhook, events and periodic resends alike, until told
        otherwise; state transitions still happen. A Jibri left silenced never speaks again:
        to lose one webhook, use :meth:`lose_next_status_webhook`."""
        if enabled:
            self._silent_since = None
        elif self._webhooks_enabled:
            self._silent_since = time.time()
        self._webhooks_enabled = enabled

    def lose_next_status_webhook(self) -> None:
        """The next status webhook (an event or a resend) is lost on its way, to every
        subscriber; the ones after it go out as usual."""
        self._lose_status_webhooks += 1

    def kill_resend(self) -> None:
        """What one periodic tick with an unreachable subscriber does to a real Jibri: the
        periodic resend stops for good; events still go out."""
        self._resend_died = True
        self._cancel_timer()

    async def drain_webhooks(self) -> None:
        """Wait until every webhook request sent so far has finished."""
        while self._deliveries:
            await asyncio.gather(*list(self._deliveries), return_exceptions=True)

    def _set_busy_status(self, status: BusyStatus) -> list[asyncio.Task[_Outcome]]:
        if status is self._busy_status:
            return []
        self._busy_status = status
        self._record(status.value)
        return self._send_status()

    def _record(self, status: str) -> None:
        now = time.time()
        self.history.append((now, status))
        if self._on_change is not None:
            self._on_change(status, now)

    def send_status(self, status: BusyStatus | str | None = None) -> None:
        """Send a status webhook now, as a resend (the current status) or, with ``status``, as a
        late delivery of an earlier one (a reordered webhook); the state does not change."""
        reported = BusyStatus(status) if status is not None else self._busy_status
        body = {"jibriId": self.jibri_id, "status": _status(reported)}
        self._send_webhook("/v1/status", body)

    # ----------------------------------------------------------------- webhooks

    def _send_status(self) -> list[asyncio.Task[_Outcome]]:
        body = {"jibriId": self.jibri_id, "status": _status(self._busy_status)}
        return self._send_webhook("/v1/status", body)

    def _send_session(self, status: str) -> None:
        assert self._session is not None
        session = {
            "sessionId": self._session.session_id,
            "status": status,
            "sipAddress": self._session.sip_address,
            "failure": None,
            "shouldRetry": None,
        }
        self._send_webhook("/v1/session/status", {"jibriId": self.jibri_id, "session": session})

    def _send_webhook(self, path: str, body: Mapping[str, Any]) -> list[asyncio.Task[_Outcome]]:
        """Post to every subscriber; the requests, to wait for their outcomes."""
        if self._stopped or self._exiting:
            return []
        if not self._webhooks_enabled or not self.config.webhook_subscribers:
            return []
        if path == "/v1/status" and self._lose_status_webhooks:
            self._lose_status_webhooks -= 1
            self._webhooks_lost += 1
            return []
        data = orjson.dumps(body)
        headers = dict(_WEBHOOK_HEADERS)
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        tasks = []
        for base in self.config.webhook_subscribers:
            self._webhooks_sent += 1
            task = asyncio.get_running_loop().create_task(self._post(base + path, data, headers))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
            tasks.append(task)
        return tasks

    def _client_session(self) -> aiohttp.ClientSession:
        if self._client is None:
            connector = aiohttp.TCPConnector(local_addr=(self.config.host, 0), force_close=True)
            self._client = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT),
                cookie_jar=aiohttp.DummyCookieJar(),
                # Ktor's client asks for no compression.
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._client

    async def _post(self, url: str, data: bytes, headers: Mapping[str, str]) -> _Outcome:
        try:
            async with self._client_session().post(
                url, data=_one_chunk(data), headers=headers
            ) as resp:
                outcome = _Outcome.DELIVERED if resp.status == 200 else _Outcome.REFUSED
                if outcome is _Outcome.REFUSED:
                    log.warning("%s: webhook %s answered %s", self.jibri_id, url, resp.status)
        except TimeoutError as exc:
            outcome = _Outcome.TIMED_OUT
            log.warning("%s: webhook %s timed out: %s", self.jibri_id, url, exc)
        except (aiohttp.ClientError, OSError) as exc:
            outcome = _Outcome.UNREACHABLE
            log.warning("%s: webhook %s failed: %s %s", self.jibri_id, url, type(exc).__name__, exc)
        if outcome is not _Outcome.DELIVERED:
            self._webhooks_failed += 1
        return outcome

    # ----------------------------------------------------------------- HTTP API

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        return await _dispatch(_ROUTES, self, request)

    async def _handle_internal(self, request: web.Request) -> web.StreamResponse:
        return await _dispatch(_INTERNAL_ROUTES, self, request)

    async def _internal_endpoint(
        self, request: web.Request, action: Callable[[], Coroutine[Any, Any, None]]
    ) -> web.StreamResponse:
        """Ktor's ``respondOkAndRun``: the 200 goes out first, then Jibri acts (an exit closes
        the connection this request came on)."""
        response = _status_response(200)
        await response.prepare(request)
        await response.write_eof()
        self._spawn(action())
        return response

    async def _graceful_shutdown_endpoint(self, request: web.Request) -> web.StreamResponse:
        log.info("%s: gracefully shutting down", self.jibri_id)
        return await self._internal_endpoint(request, self.graceful_shutdown)

    async def _shutdown_endpoint(self, request: web.Request) -> web.StreamResponse:
        log.info("%s: forcefully shutting down", self.jibri_id)
        return await self._internal_endpoint(request, self.shutdown)

    async def _config_changed_endpoint(self, request: web.Request) -> web.StreamResponse:
        log.info("%s: config file changed", self.jibri_id)
        return await self._internal_endpoint(request, self.notify_config_changed)

    async def _health_endpoint(self, request: web.Request) -> web.StreamResponse:
        mode = self._health_mode
        if mode is HealthMode.HANG:
            return await self._hang(request)
        if mode is HealthMode.GARBAGE:
            return web.Response(body=_GARBAGE_BODY, content_type="application/json")
        if mode is HealthMode.HUGE:
            return self._huge_response()
        if mode is HealthMode.UNKNOWN_STATUS:
            return _json_response({"status": _status("SLEEPING")})
        # Jackson writes to the response stream: chunked over HTTP/1.1; over HTTP/1.0 no length
        # and no chunking, the end of the body being the end of the connection.
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(orjson.dumps(self._health_body()))
        await response.write_eof()
        return response

    def _health_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": _status(self._busy_status)}
        session = self._session
        if session is not None and session.environment is not None:
            body["environmentContext"] = {"name": session.environment}
        return body

    def _huge_response(self) -> web.Response:
        head = orjson.dumps(self._health_body())[:-1] + b',"padding":"'
        body = head + _huge_padding() + b'"}'
        return web.Response(body=body, content_type="application/json")

    async def _hang(self, request: web.Request) -> web.StreamResponse:
        """Keep the request open until the client gives up or the listener closes."""
        protocol = request.protocol
        self._hung.add(protocol)
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self._hung.discard(protocol)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _start_endpoint(self, request: web.Request) -> web.StreamResponse:
        params = await _read_json_object(request)
        if params is None:
            # Jibri answers a body it cannot read with its catch-all: 500, empty.
            return _status_response(500)
        # Jibri's HTTP API starts every service with no environment context.
        outcome = await self._start_service(
            _optional_str(params.get("sessionId")),
            _nested_str(params, "sipClientParams", "sipAddress"),
            None,
        )
        if outcome is _Start.BUSY:
            return _text_response("Jibri is currently busy", 412)
        if outcome is _Start.FAILED:
            return _status_response(500)
        return _status_response(200)

    async def _stop_endpoint(self, request: web.Request) -> web.StreamResponse:
        await self.stop_recording()
        return _status_response(200)

    async def _crash_endpoint(self, request: web.Request) -> web.StreamResponse:
        await self.crash()
        return _json_response(self.state())

    async def _mode_endpoint(self, request: web.Request) -> web.StreamResponse:
        params = await _read_json_object(request)
        raw_mode = params.get("health") if params else None
        try:
            mode = HealthMode(str(raw_mode))
        except ValueError:
            return _text_response(f"health must be one of {[m.value for m in HealthMode]}", 400)
        if mode is HealthMode.BLACKHOLE:
            # Answer this request first; the switch closes the connection it came on.
            self._spawn(self.set_health_mode(mode))
        else:
            await self.set_health_mode(mode)
        return _json_response({"health": mode.value})

    async def _webhooks_endpoint(self, request: web.Request) -> web.StreamResponse:
        params = await _read_json_object(request)
        enabled = params.get("enabled") if params else None
        if not isinstance(enabled, bool):
            return _text_response('expected {"enabled": true|false}', 400)
        self.set_webhooks_enabled(enabled)
        return _json_response({"enabled": enabled})

    async def _state_endpoint(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self.state())


_Route = Callable[[SimJibri, web.Request], Awaitable[web.StreamResponse]]
_ROUTES: Final[dict[tuple[str, str], _Route]] = {
    ("GET", HEALTH_PATH): SimJibri._health_endpoint,
    ("POST", START_PATH): SimJibri._start_endpoint,
    ("POST", STOP_PATH): SimJibri._stop_endpoint,
    ("POST", "/_sim/crash"): SimJibri._crash_endpoint,
    ("POST", "/_sim/mode"): SimJibri._mode_endpoint,
    ("POST", "/_sim/webhooks"): SimJibri._webhooks_endpoint,
    ("GET", "/_sim/state"): SimJibri._state_endpoint,
}
_INTERNAL_ROUTES: Final[dict[tuple[str, str], _Route]] = {
    ("POST", GRACEFUL_SHUTDOWN_PATH): SimJibri._graceful_shutdown_endpoint,
    ("POST", SHUTDOWN_PATH): SimJibri._shutdown_endpoint,
    ("POST", CONFIG_CHANGED_PATH): SimJibri._config_changed_endpoint,
}


async def _dispatch(
    routes: Mapping[tuple[str, str], _Route], sim: SimJibri, request: web.Request
) -> web.StreamResponse:
    """Ktor's routing: the route's answer, else 405 for a known path, else 404 (both empty)."""
    route = routes.get((request.method, request.path))
    if route is not None:
        return await route(sim, request)
    if any(path == request.path for _, path in routes):
        return _status_response(405)
    return _status_response(404)


# --------------------------------------------------------------------------- command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.simjibri", description="Run one simulated Jibri."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--pod-name", required=True)
    parser.add_argument("--jibri-id", default=None)
    parser.add_argument("--subscriber", action="append", default=[], help="webhook base URL")
    parser.add_argument("--status-period", type=float, default=DEFAULT_STATUS_PERIOD)
    parser.add_argument("--jwt-key", type=Path, default=None, help="PKCS#1 PEM signing key")
    parser.add_argument("--jwt-kid", default="")
    parser.add_argument("--jwt-issuer", default="")
    parser.add_argument("--jwt-audience", default="")
    parser.add_argument("--jwt-ttl", type=int, default=DEFAULT_JWT_TTL)
    parser.add_argument("--internal-port", type=int, default=DEFAULT_INTERNAL_PORT)
    parser.add_argument("--internal-host", default=None, help="default: --host")
    parser.add_argument("--exit-delay", type=float, default=DEFAULT_EXIT_DELAY)
    parser.add_argument(
        "--real-behaviours", default="", help="'all' or a comma-separated list of Fidelity fields"
    )
    return parser.parse_args(argv)


def parse_cli(argv: Sequence[str] | None = None) -> SimJibriConfig:
    """The configuration given on the command line (``sys.argv[1:]`` by default)."""
    args = _parse_args(argv)
    signing = None
    if args.jwt_key is not None:
        signing = JwtSigning(
            args.jwt_key, args.jwt_kid, args.jwt_issuer, args.jwt_audience, args.jwt_ttl
        )
    return SimJibriConfig(
        pod_name=args.pod_name,
        host=args.host,
        port=args.port,
        jibri_id=args.jibri_id,
        webhook_subscribers=tuple(
            _substitute_pod_name(url, args.pod_name) for url in args.subscriber
        ),
        status_period=args.status_period,
        jwt=signing,
        internal_port=args.internal_port,
        internal_host=args.internal_host,
        exit_delay=args.exit_delay,
        fidelity=_fidelity_from_names(args.real_behaviours, "--real-behaviours"),
    )


async def _serve(config: SimJibriConfig) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    async with SimJibri(config) as sim:
        log.info(
            "simulated Jibri %s listening on %s (internal API %s)",
            sim.jibri_id,
            sim.base_url,
            sim.internal_base_url,
        )
        exited = sim.exited
        exited.add_done_callback(lambda _: stopping.set())
        await stopping.wait()
    if exited.done():
        raise SystemExit(exited.result())


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point; runs until SIGINT or SIGTERM."""
    config = parse_cli(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_serve(config))


if __name__ == "__main__":
    main()
