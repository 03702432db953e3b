"""Settings, read once from an injected environment mapping and validated at start-up.

Every setting is an environment variable, declared once below as a field of `Settings` (or of
the groups it holds): name, reader (type, bounds, choices), default, help and any rule across
settings. `load_settings` and scripts/generate.py (the chart's values.schema.json and
values.yaml defaults, docs/configuration.md) are derived from these declarations
(`core.variables` says how). A bad value raises `ConfigError`, whose message is one line that
starts with the variable's name; when several are bad, `ConfigErrors` carries one error for
each, so an operator fixes them all in one go. The entry point prints one line per error and
exits 2. Nothing else reads `os.environ`.

Values that parse but cannot work are refused too: a rate limit whose bucket never holds one
token, a lease duration the Lease record (whole seconds) cannot store, and unauthenticated
webhooks without the source-address check unless the risk is accepted by name.

The original tool's names keep their meanings: ``PORT``, ``JIBRI_HEALTH_PORT``,
``JIBRI_BUSY_LABELS``, ``SWEEP_INTERVAL``, ``POD_NAME``, ``NAMESPACE``; ``RUST_LOG`` is accepted
as an alias of ``LOG_LEVEL`` so the original Deployment's environment still parses.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

from jibri_pod_controller.core.pods import is_valid_pod_name
from jibri_pod_controller.core.selectors import Selector, parse_labels, parse_selector
from jibri_pod_controller.core.variables import (
    Accepts,
    Check,
    Choice,
    ConfigError,
    Context,
    Flag,
    Integer,
    Invalid,
    Kind,
    LocalPath,
    Number,
    OrUnset,
    Parsed,
    Read,
    Reader,
    Setting,
    Text,
    composite,
    declarations,
    group,
    read_settings,
    setting,
    settings_class,
)

RATE_LIMIT_BURST = 4
"""The rate limiter's bucket holds this many seconds' worth of webhooks."""
MIN_STUCK_BUSY_SECONDS = 60
"""A healthy session is ON within Jibri's 30 s join timeout, or it fails and Jibri reports
EXPIRED: below a minute, stuck-BUSY detection would take slow joins for stuck ones."""


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    TEXT = "text"


class ReapPolicy(StrEnum):
    """What the sweeper does with a busy-labelled pod when a reaping rule fires."""

    DELETE = "delete"
    KEEP = "keep"
    """Only log and count it; an operator decides."""


class WebhookAuth(StrEnum):
    JWT = "jwt"
    NONE = "none"


# -- readers of this project's own forms ---------------------------------------------------------

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LEVELS = {
    "trace": "DEBUG",
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "warning": "WARNING",
    "error": "ERROR",
    "off": "CRITICAL",
}


class LogLevel(Read[str]):
    """A level, or env_logger directives as RUST_LOG takes them: in
    "other=warn,jibri_pod_controller=debug", our own directive wins over a plain level, and
    directives for other crates do not apply (``otherwise``: the level when none applies)."""

    accepts = Accepts(Kind.CHOICE, choices=tuple(_LEVELS))

    def __init__(self, *, otherwise: str | None = None) -> None:
        self.otherwise = otherwise

    def __call__(self, text: str) -> str:
        own: list[str] = []
        plain: list[str] = []
        for part in text.split(","):
            target, sep, level = part.rpartition("=")
            if not sep:
                plain.append(level.strip().lower())
            elif target.strip() == "jibri_pod_controller":
                own.append(level.strip().lower())
        candidates = own or plain or ([self.otherwise] if self.otherwise else [])
        if candidates and candidates[0] in _LEVELS:
            return _LEVELS[candidates[0]]
        raise Invalid(f"{text!r} is not one of debug, info, warning, error")


def _rate_limit_below(rate: float) -> str:
    return (
        f"{rate:g}/s gives a bucket of {rate * RATE_LIMIT_BURST:g} webhooks, less than one, so "
        f"every webhook would be refused: use 0 (no limit) or at least {1 / RATE_LIMIT_BURST:g}"
    )


def _stuck_below(seconds: float) -> str:
    return (
        f"{seconds:g} is below {MIN_STUCK_BUSY_SECONDS}: a healthy session may take that long "
        f"to turn ON; use 0 (off) or at least {MIN_STUCK_BUSY_SECONDS}"
    )


def _selector_sees_busy_pods(selector: Selector, busy_labels: Mapping[str, str]) -> str | None:
    if selector.matches(busy_labels):
        return None
    return f"{selector} does not match JIBRI_BUSY_LABELS, so busy pods would be lost from view"


def _source_check_or_risk_named(check: bool, jwt: JwtSettings | None, accept: bool) -> str | None:
    if check or jwt is not None or accept:
        return None
    return (
        "false together with WEBHOOK_AUTH=none lets anyone who reaches the service have any "
        "Jibri pod detached or deleted; set WEBHOOK_ACCEPT_ANY_SOURCE_UNAUTHENTICATED=true to "
        "accept that risk"
    )


_POLICY = Choice(ReapPolicy)


# -- the declarations ----------------------------------------------------------------------------


@settings_class
class LeaseTimings:
    duration: float = setting(
        "LEASE_DURATION",
        Number(1, 3600, whole_seconds="the Lease record stores whole seconds"),
        "15",
        help="Whole seconds a standby waits after the last observed renewal (the Lease stores "
        "whole seconds, so fractions are refused).",
        check=Check(
            ("renew_deadline",),
            lambda duration, renew: (
                None if duration > renew else "must be greater than LEASE_RENEW_DEADLINE"
            ),
            "LEASE_DURATION > LEASE_RENEW_DEADLINE: a standby must not take over from a leader "
            "still trying to renew.",
        ),
    )
    renew_deadline: float = setting(
        "LEASE_RENEW_DEADLINE",
        Number(0.5, 3600),
        "10",
        help="Seconds the leader keeps trying to renew.",
        check=Check(
            ("retry_period",),
            lambda renew, retry: (
                None if renew > 1.2 * retry else "must be greater than 1.2 x LEASE_RETRY_PERIOD"
            ),
            "LEASE_RENEW_DEADLINE > 1.2 x LEASE_RETRY_PERIOD: the leader gets more than one "
            "attempt before its deadline.",
        ),
    )
    retry_period: float = setting(
        "LEASE_RETRY_PERIOD", Number(0.1, 600), "2", help="Seconds between two lease attempts."
    )


WEBHOOK_AUTH = Setting(
    "WEBHOOK_AUTH",
    OrUnset(Choice(WebhookAuth)),
    None,
    "`jwt` or `none`. Without keys, `none` must be set explicitly.",
    shown="(jwt when keys are set)",
)
"""The switch of `JwtSettings`: a variable with no field of its own."""


@settings_class
class JwtSettings:
    keys_dir: Path | None = setting(
        "JWT_KEYS_DIR",
        LocalPath(directory=True),
        None,
        help="Directory of PEM public keys; a file's name (less .pem) is its kid.",
    )
    jwks_file: Path | None = setting(
        "JWT_JWKS_FILE",
        LocalPath(directory=False),
        None,
        help="A JWKS file of public keys (alternative or in addition).",
    )
    issuer: str = setting(
        "JWT_ISSUER",
        Text(required="is required when webhooks are verified"),
        None,
        help="Required `iss` of webhook tokens (required with jwt).",
    )
    audience: str = setting(
        "JWT_AUDIENCE", Text(), "jibri-pod-controller", help="Audience that must be in `aud`."
    )
    leeway: float = setting(
        "JWT_LEEWAY", Number(0, 600), "30", help="Seconds of clock skew tolerated on `exp`."
    )


def _jwt(reader: Reader) -> JwtSettings | None:
    """WEBHOOK_AUTH=none: None, and no keys may be configured. Otherwise (jwt, or unset) keys
    are required, and the rest of `JwtSettings` is read."""
    keys = reader.read_fields(JwtSettings, "keys_dir", "jwks_file")
    has_keys = any(k is not None for k in keys)
    if reader.value(WEBHOOK_AUTH) is WebhookAuth.NONE:
        if has_keys:
            raise ConfigError("WEBHOOK_AUTH", "is none but JWT keys are configured")
        return None
    if not has_keys:
        raise ConfigError(
            "WEBHOOK_AUTH",
            "no JWT keys configured (JWT_KEYS_DIR or JWT_JWKS_FILE); "
            "set WEBHOOK_AUTH=none to accept unauthenticated webhooks",
        )
    return reader.build(JwtSettings)


@settings_class
class Settings:
    port: int = setting(
        "PORT",
        Integer(1, 65535),
        "8080",
        help="Port of the HTTP server (webhooks, probes, metrics).",
    )
    namespace: str = setting(
        "NAMESPACE",
        Text("a valid namespace name", lambda v: _DNS1123_LABEL.match(v) is not None),
        "default",
        help="Namespace of the Jibri pods, the Lease and the Events.",
    )
    pod_name: str = setting(
        "POD_NAME",
        Text(
            "a valid name",
            lambda v: is_valid_pod_name(v.lower()),
            otherwise=lambda context: context.hostname,
        ),
        None,
        help="This replica's identity in the Lease.",
        shown="(host name)",
    )
    busy_labels: Mapping[str, str] = setting(
        "JIBRI_BUSY_LABELS",
        Parsed(parse_labels, "a list of key=value labels"),
        "app=jibri,state=busy",
        help="Labels set on a busy Jibri pod; they must take it out of the Deployment's selector.",
    )
    jibri_selector: Selector = setting(
        "JIBRI_SELECTOR",
        Parsed(parse_selector, "a label selector"),
        "app=jibri",
        help="Label selector every Jibri pod matches, idle or busy; no other pod is ever touched.",
        check=Check(
            ("busy_labels",),
            _selector_sees_busy_pods,
            "JIBRI_SELECTOR must match JIBRI_BUSY_LABELS: a busy pod is still a Jibri pod.",
        ),
    )
    health_port: int = setting(
        "JIBRI_HEALTH_PORT",
        Integer(1, 65535),
        "2222",
        help="Port of Jibri's HTTP API (`external-api-port`).",
    )
    internal_api_port: int = setting(
        "JIBRI_INTERNAL_API_PORT",
        Integer(0, 65535),
        "3333",
        help="Port of Jibri's internal HTTP API (`internal-api-port`): a JibriPool's scale-down "
        "asks the spares that go to shut down gracefully there (Jibri must set "
        '`internal-api-host = "0.0.0.0"`); 0: do not use it (probe and deletion cost only).',
    )
    sweep_interval: float = setting(
        "SWEEP_INTERVAL",
        Number(1, 86400),
        "60",
        help="Seconds between two sweeps of the elected replica.",
    )
    lease_name: str = setting(
        "LEASE_NAME",
        Text("a valid object name", is_valid_pod_name),
        "jibri-pod-controller-lease",
        help="Name of the coordination.k8s.io Lease.",
    )
    lease: LeaseTimings = group(LeaseTimings)
    probe_concurrency: int = setting(
        "PROBE_CONCURRENCY",
        Integer(1, 10000),
        "250",
        help="Health probes in flight at once during a sweep. Pods whose last probe failed are "
        "asked first, so up to this many silent Jibris cost a sweep one PROBE_TIMEOUT in all.",
    )
    probe_timeout: float = setting(
        "PROBE_TIMEOUT",
        Number(0.05, 60),
        "1.0",
        help="Seconds one health probe may take, connect included.",
    )
    probe_max_bytes: int = setting(
        "PROBE_MAX_BYTES",
        Integer(256, 16 * 1024 * 1024),
        "65536",
        help="Largest health answer read; larger is invalid.",
    )
    list_page_size: int = setting(
        "LIST_PAGE_SIZE",
        Integer(10, 5000),
        "100",
        help="Pods per page when listing Jibri pods (a decoded page of 500 holds ~18 MiB).",
    )
    restarted_policy: ReapPolicy = setting(
        "RESTARTED_BUSY_POD_POLICY",
        _POLICY,
        "delete",
        help="`delete` or `keep`: a busy-labelled pod whose container restarted and now reports "
        "IDLE (its recording is already lost).",
    )
    finished_policy: ReapPolicy = setting(
        "FINISHED_BUSY_POD_POLICY",
        _POLICY,
        "delete",
        help="`delete` or `keep`: a busy-labelled pod in phase Failed or Succeeded.",
    )
    max_busy_seconds: float = setting(
        "MAX_BUSY_SECONDS",
        Number(0),
        "0",
        help="If > 0, delete a busy-labelled pod busy for longer than this (kills a live "
        "recording; off by default).",
    )
    api_timeout: float = setting(
        "API_TIMEOUT",
        Number(0.1, 1.9),
        "1.5",
        help="Seconds a webhook may spend on Kubernetes API calls.",
    )
    dry_run: bool = setting(
        "DRY_RUN", Flag(), "false", help="Decide, log and count every action, but write nothing."
    )
    log_level: str = setting(
        "LOG_LEVEL",
        LogLevel(),
        "info",
        help="debug, info, warning or error. `RUST_LOG` is an alias.",
        fallback=("RUST_LOG", LogLevel(otherwise="info")),
    )
    log_format: LogFormat = setting(
        "LOG_FORMAT",
        Choice(LogFormat),
        "auto",
        help="`json`, `text`, or `auto` (JSON unless on a terminal).",
    )
    jwt: JwtSettings | None = composite(
        _jwt,
        WEBHOOK_AUTH,
        JwtSettings,
        doc="WEBHOOK_AUTH=none refuses JWT keys; otherwise (`jwt`, or unset) JWT_KEYS_DIR or "
        "JWT_JWKS_FILE is required, and JWT_ISSUER.",
    )
    """None when webhooks are accepted unauthenticated (WEBHOOK_AUTH=none)."""
    check_source_ip: bool = setting(
        "WEBHOOK_CHECK_SOURCE_IP",
        Flag(),
        "true",
        help="Require the request's source address to be one of the pod's `status.podIPs`.",
        check=Check(
            ("jwt", "accept_any_source_unauthenticated"),
            _source_check_or_risk_named,
            "WEBHOOK_CHECK_SOURCE_IP=false with WEBHOOK_AUTH=none needs "
            "WEBHOOK_ACCEPT_ANY_SOURCE_UNAUTHENTICATED=true.",
        ),
    )
    accept_any_source_unauthenticated: bool = setting(
        "WEBHOOK_ACCEPT_ANY_SOURCE_UNAUTHENTICATED",
        Flag(),
        "false",
        help="Must be `true` to run with both `WEBHOOK_AUTH=none` and "
        "`WEBHOOK_CHECK_SOURCE_IP=false`: then anyone who reaches the service can have any "
        "Jibri pod detached or deleted.",
    )
    check_jibri_id: bool = setting(
        "WEBHOOK_CHECK_JIBRI_ID",
        Flag(),
        "true",
        help="Require `jibriId` to equal the pod name in the URL.",
    )
    max_body_bytes: int = setting(
        "WEBHOOK_MAX_BODY_BYTES",
        Integer(512, 1024 * 1024),
        "16384",
        help="Largest webhook body accepted.",
    )
    read_timeout: float = setting(
        "WEBHOOK_READ_TIMEOUT",
        Number(0.05, 1.9),
        "1.9",
        help="Seconds to receive a webhook's body, the token already checked. Just under "
        "Jibri's own 2 s: a Jibri whose JVM has just started can take over a second to send "
        "the body of its first webhook.",
    )
    idle_timeout: float = setting(
        "WEBHOOK_IDLE_TIMEOUT",
        Number(0.5, 3600),
        "10",
        help="Seconds a connection may stay without a complete request (idle or trickling "
        "headers).",
    )
    rate_limit: float = setting(
        "WEBHOOK_RATE_LIMIT",
        Number(1 / RATE_LIMIT_BURST, or_zero=_rate_limit_below),
        "5",
        help="Webhooks per second per source address (burst: 4x); 0 disables the limit; at "
        "least 0.25 otherwise (a smaller bucket never holds one webhook). Behind a service mesh "
        "every request comes from the proxy's address, so the limit is shared by all pods of a "
        "node or of the whole mesh: raise it, or set 0.",
    )
    shutdown_drain: float = setting(
        "SHUTDOWN_DRAIN_SECONDS",
        Number(0, 300),
        "5",
        help="On SIGTERM, seconds to keep serving while not ready, so Endpoints drop this "
        "replica before it stops accepting webhooks.",
    )
    shutdown_timeout: float = setting(
        "SHUTDOWN_TIMEOUT",
        Number(0, 300),
        "10",
        help="Seconds to finish in-flight requests on SIGTERM.",
    )
    stuck_busy_seconds: float = setting(
        "STUCK_BUSY_SECONDS",
        Number(MIN_STUCK_BUSY_SECONDS, 30 * 86400, or_zero=_stuck_below),
        "0",
        help="If > 0 (at least 60), a busy-labelled pod whose Jibri reports BUSY with no session "
        "ever ON for longer than this since its detach is stuck: counted in `stuck_busy_pods`, "
        "and deleted if `STUCK_BUSY_POD_POLICY=delete`. Costs one pod write per recording (the "
        "first session ON, recorded as an annotation); 0 (default): no detection, no write.",
    )
    """0: no stuck-BUSY detection (and no session-ON annotation written)."""
    stuck_policy: ReapPolicy = setting(
        "STUCK_BUSY_POD_POLICY",
        _POLICY,
        "keep",
        help="`delete` or `keep`: a stuck busy pod (see `STUCK_BUSY_SECONDS`).",
    )
    unresponsive_busy_seconds: float = setting(
        "UNRESPONSIVE_BUSY_POD_SECONDS",
        Number(0, 30 * 86400),
        "0",
        help="If > 0, delete a busy-labelled pod that has been not Ready and unreachable (its "
        "Jibri never answered a probe) for this long without a break; 0 (default) only counts "
        "them.",
    )
    pool_period: float = setting(
        "POOL_RECONCILE_PERIOD",
        Number(0.5, 3600),
        "5",
        help="Seconds between two reconciles of the JibriPools (also at once on a detach or "
        "delete).",
    )
    forecast_day_seconds: float = setting(
        "FORECAST_DAY_SECONDS",
        Number(60, 86400),
        "86400",
        help="For tests only: the length of a day for the JibriPool forecast (its history, "
        "its time of day and week). A shorter day lets a test play several days in minutes; "
        "a history kept with another day length is begun anew. Leave it at 86400.",
    )


SETTINGS: tuple[Setting[object], ...] = tuple(declarations(Settings))
"""Every variable, in the order of the docs' table (and of the errors)."""


def load_settings(env: Mapping[str, str], *, hostname: str | None = None) -> Settings:
    """Build `Settings` from an environment mapping.

    Every setting is read; if any is bad, `ConfigErrors` names all of them (one error per
    setting), so a broken Deployment is fixed in one round.
    """
    return read_settings(Settings, env, Context(hostname=hostname or socket.gethostname()))
