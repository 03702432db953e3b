"""Settings, read once from an injected environment mapping and validated at start-up.

Every setting is an environment variable; `SETTINGS` below is the single source of truth for
names, defaults and descriptions (the README's table is generated from it and a test keeps the
two equal). A bad value raises `ConfigError`, whose message is one line that starts with the
variable's name; when several values are bad, `ConfigErrors` carries one such error for each,
so an operator fixes them all in one go. The entry point prints one line per error and exits 2.
Nothing else reads `os.environ`.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from jibri_pod_controller.core.pods import (
    Selector,
    SelectorError,
    is_valid_pod_name,
    parse_labels,
    parse_selector,
)

_T = TypeVar("_T")


class ConfigError(ValueError):
    """A setting is missing or invalid. ``str()`` is one line naming the variable."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


class ConfigErrors(ConfigError):
    """Several settings are bad; ``errors`` has one `ConfigError` per setting, in order."""

    def __init__(self, errors: list[ConfigError]) -> None:
        ValueError.__init__(self, "\n".join(str(e) for e in errors))
        self.name = errors[0].name
        self.errors = errors


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


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    help: str


class Kind(StrEnum):
    """What a setting's value is, for the chart's values.schema.json."""

    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    FLAG = "flag"
    CHOICE = "choice"


@dataclass(frozen=True)
class ValueRule:
    """The values a setting accepts, as `load_settings` checks them (a test keeps them equal).

    scripts/values-schema.py turns these into the chart's values.schema.json, so a bad value is
    refused at install time rather than by a crash-looping pod.
    """

    kind: Kind
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    """The values of a CHOICE (case-insensitive)."""
    or_zero: bool = False
    """0 (off) is accepted too, below the minimum."""


def _integer(minimum: int, maximum: int) -> ValueRule:
    return ValueRule(Kind.INTEGER, minimum, maximum)


def _number(minimum: float, maximum: float | None = None) -> ValueRule:
    return ValueRule(Kind.NUMBER, minimum, maximum)


def _choice(*choices: str) -> ValueRule:
    return ValueRule(Kind.CHOICE, choices=choices)


_FLAG = ValueRule(Kind.FLAG)
_TEXT = ValueRule(Kind.TEXT)


SETTINGS: tuple[Setting, ...] = (
    Setting("PORT", "8080", "Port of the HTTP server (webhooks, probes, metrics)."),
    Setting("NAMESPACE", "default", "Namespace of the Jibri pods, the Lease and the Events."),
    Setting("POD_NAME", "(host name)", "This replica's identity in the Lease."),
    Setting(
        "JIBRI_BUSY_LABELS",
        "app=jibri,state=busy",
        "Labels set on a busy Jibri pod; they must take it out of the Deployment's selector.",
    ),
    Setting(
        "JIBRI_SELECTOR",
        "app=jibri",
        "Label selector every Jibri pod matches, idle or busy; no other pod is ever touched.",
    ),
    Setting("JIBRI_HEALTH_PORT", "2222", "Port of Jibri's HTTP API (`external-api-port`)."),
    Setting(
        "JIBRI_INTERNAL_API_PORT",
        "3333",
        "Port of Jibri's internal HTTP API (`internal-api-port`): a JibriPool's scale-down "
        "asks the spares that go to shut down gracefully there (Jibri must set "
        '`internal-api-host = "0.0.0.0"`); 0: do not use it (probe and deletion cost only).',
    ),
    Setting("SWEEP_INTERVAL", "60", "Seconds between two sweeps of the elected replica."),
    Setting("LEASE_NAME", "jibri-pod-controller-lease", "Name of the coordination.k8s.io Lease."),
    Setting(
        "LEASE_DURATION",
        "15",
        "Whole seconds a standby waits after the last observed renewal (the Lease stores whole "
        "seconds, so fractions are refused).",
    ),
    Setting("LEASE_RENEW_DEADLINE", "10", "Seconds the leader keeps trying to renew."),
    Setting("LEASE_RETRY_PERIOD", "2", "Seconds between two lease attempts."),
    Setting(
        "PROBE_CONCURRENCY",
        "250",
        "Health probes in flight at once during a sweep. Pods whose last probe failed are "
        "asked first, so up to this many silent Jibris cost a sweep one PROBE_TIMEOUT in all.",
    ),
    Setting("PROBE_TIMEOUT", "1.0", "Seconds one health probe may take, connect included."),
    Setting("PROBE_MAX_BYTES", "65536", "Largest health answer read; larger is invalid."),
    Setting(
        "LIST_PAGE_SIZE",
        "100",
        "Pods per page when listing Jibri pods (a decoded page of 500 holds ~18 MiB).",
    ),
    Setting(
        "RESTARTED_BUSY_POD_POLICY",
        "delete",
        "`delete` or `keep`: a busy-labelled pod whose container restarted and now reports "
        "IDLE (its recording is already lost).",
    ),
    Setting(
        "FINISHED_BUSY_POD_POLICY",
        "delete",
        "`delete` or `keep`: a busy-labelled pod in phase Failed or Succeeded.",
    ),
    Setting(
        "MAX_BUSY_SECONDS",
        "0",
        "If > 0, delete a busy-labelled pod busy for longer than this (kills a live "
        "recording; off by default).",
    ),
    Setting("API_TIMEOUT", "1.5", "Seconds a webhook may spend on Kubernetes API calls."),
    Setting("DRY_RUN", "false", "Decide, log and count every action, but write nothing."),
    Setting("LOG_LEVEL", "info", "debug, info, warning or error. `RUST_LOG` is an alias."),
    Setting("LOG_FORMAT", "auto", "`json`, `text`, or `auto` (JSON unless on a terminal)."),
    Setting(
        "WEBHOOK_AUTH",
        "(jwt when keys are set)",
        "`jwt` or `none`. Without keys, `none` must be set explicitly.",
    ),
    Setting(
        "JWT_KEYS_DIR", "", "Directory of PEM public keys; a file's name (less .pem) is its kid."
    ),
    Setting("JWT_JWKS_FILE", "", "A JWKS file of public keys (alternative or in addition)."),
    Setting("JWT_ISSUER", "", "Required `iss` of webhook tokens (required with jwt)."),
    Setting("JWT_AUDIENCE", "jibri-pod-controller", "Audience that must be in `aud`."),
    Setting("JWT_LEEWAY", "30", "Seconds of clock skew tolerated on `exp`."),
    Setting(
        "WEBHOOK_CHECK_SOURCE_IP",
        "true",
        "Require the request's source address to be one of the pod's `status.podIPs`.",
    ),
    Setting(
        "WEBHOOK_ACCEPT_ANY_SOURCE_UNAUTHENTICATED",
        "false",
        "Must be `true` to run with both `WEBHOOK_AUTH=none` and `WEBHOOK_CHECK_SOURCE_IP=false`: "
        "then anyone who reaches the service can have any Jibri pod detached or deleted.",
    ),
    Setting(
        "WEBHOOK_CHECK_JIBRI_ID", "true", "Require `jibriId` to equal the pod name in the URL."
    ),
    Setting("WEBHOOK_MAX_BODY_BYTES", "16384", "Largest webhook body accepted."),
    Setting("WEBHOOK_READ_TIMEOUT", "1.0", "Seconds to receive a webhook's body."),
    Setting(
        "WEBHOOK_IDLE_TIMEOUT",
        "10",
        "Seconds a connection may stay without a complete request (idle or trickling headers).",
    ),
    Setting(
        "WEBHOOK_RATE_LIMIT",
        "5",
        "Webhooks per second per source address (burst: 4x); 0 disables the limit; at least "
        "0.25 otherwise (a smaller bucket never holds one webhook). Behind a service mesh every "
        "request comes from the proxy's address, so the limit is shared by all pods of a node "
        "or of the whole mesh: raise it, or set 0.",
    ),
    Setting(
        "SHUTDOWN_DRAIN_SECONDS",
        "5",
        "On SIGTERM, seconds to keep serving while not ready, so Endpoints drop this replica "
        "before it stops accepting webhooks.",
    ),
    Setting("SHUTDOWN_TIMEOUT", "10", "Seconds to finish in-flight requests on SIGTERM."),
    Setting(
        "STUCK_BUSY_SECONDS",
        "0",
        "If > 0 (at least 60), a busy-labelled pod whose Jibri reports BUSY with no session ever "
        "ON for longer than this since its detach is stuck: counted in `stuck_busy_pods`, and "
        "deleted if `STUCK_BUSY_POD_POLICY=delete`. Costs one pod write per recording (the "
        "first session ON, recorded as an annotation); 0 (default): no detection, no write.",
    ),
    Setting(
        "STUCK_BUSY_POD_POLICY",
        "keep",
        "`delete` or `keep`: a stuck busy pod (see `STUCK_BUSY_SECONDS`).",
    ),
    Setting(
        "UNRESPONSIVE_BUSY_POD_SECONDS",
        "0",
        "If > 0, delete a busy-labelled pod that has been not Ready and unreachable (its Jibri "
        "never answered a probe) for this long without a break; 0 (default) only counts them.",
    ),
    Setting(
        "POOL_RECONCILE_PERIOD",
        "5",
        "Seconds between two reconciles of the JibriPools (also at once on a detach or delete).",
    ),
)

RATE_LIMIT_BURST = 4
"""The rate limiter's bucket holds this many seconds' worth of webhooks."""
MIN_STUCK_BUSY_SECONDS = 60

# Settings not listed here are free text (names, selectors, paths), checked only at start-up.
VALUE_RULES: Mapping[str, ValueRule] = {
    "PORT": _integer(1, 65535),
    "JIBRI_HEALTH_PORT": _integer(1, 65535),
    "JIBRI_INTERNAL_API_PORT": _integer(0, 65535),  # 0: not used
    "SWEEP_INTERVAL": _number(1, 86400),
    "LEASE_DURATION": _integer(1, 3600),  # whole seconds: the Lease record stores no fraction
    "LEASE_RENEW_DEADLINE": _number(0.5, 3600),
    "LEASE_RETRY_PERIOD": _number(0.1, 600),
    "PROBE_CONCURRENCY": _integer(1, 10000),
    "PROBE_TIMEOUT": _number(0.05, 60),
    "PROBE_MAX_BYTES": _integer(256, 16 * 1024 * 1024),
    "LIST_PAGE_SIZE": _integer(10, 5000),
    "RESTARTED_BUSY_POD_POLICY": _choice("delete", "keep"),
    "FINISHED_BUSY_POD_POLICY": _choice("delete", "keep"),
    "MAX_BUSY_SECONDS": _number(0),
    "API_TIMEOUT": _number(0.1, 1.9),
    "DRY_RUN": _FLAG,
    "LOG_LEVEL": _choice("trace", "debug", "info", "warn", "warning", "error", "off"),
    "LOG_FORMAT": _choice("auto", "json", "text"),
    "WEBHOOK_AUTH": _choice("jwt", "none"),
    "JWT_LEEWAY": _number(0, 600),
    "WEBHOOK_CHECK_SOURCE_IP": _FLAG,
    "WEBHOOK_ACCEPT_ANY_SOURCE_UNAUTHENTICATED": _FLAG,
    "WEBHOOK_CHECK_JIBRI_ID": _FLAG,
    "WEBHOOK_MAX_BODY_BYTES": _integer(512, 1024 * 1024),
    "WEBHOOK_READ_TIMEOUT": _number(0.05, 1.9),
    "WEBHOOK_IDLE_TIMEOUT": _number(0.5, 3600),
    # 0 is off; above 0 the bucket must hold one webhook (see RATE_LIMIT_BURST).
    "WEBHOOK_RATE_LIMIT": ValueRule(Kind.NUMBER, minimum=1 / RATE_LIMIT_BURST, or_zero=True),
    "SHUTDOWN_DRAIN_SECONDS": _number(0, 300),
    "SHUTDOWN_TIMEOUT": _number(0, 300),
    "UNRESPONSIVE_BUSY_POD_SECONDS": _number(0, 30 * 86400),
    # 0 is off; above 0 at least a minute: a healthy session is ON within Jibri's 30 s join
    # timeout, or the session fails and Jibri reports EXPIRED.
    "STUCK_BUSY_SECONDS": ValueRule(
        Kind.NUMBER, minimum=MIN_STUCK_BUSY_SECONDS, maximum=30 * 86400, or_zero=True
    ),
    "STUCK_BUSY_POD_POLICY": _choice("delete", "keep"),
    "POOL_RECONCILE_PERIOD": _number(0.5, 3600),
}


def value_rule(setting: Setting) -> ValueRule:
    return VALUE_RULES.get(setting.name, _TEXT)


_DEFAULTS = {s.name: s.default for s in SETTINGS}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_LEVELS = {
    "trace": "DEBUG",
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "warning": "WARNING",
    "error": "ERROR",
    "off": "CRITICAL",
}
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class LeaseTimings:
    duration: float
    renew_deadline: float
    retry_period: float


@dataclass(frozen=True)
class JwtSettings:
    keys_dir: Path | None
    jwks_file: Path | None
    issuer: str
    audience: str
    leeway: float


@dataclass(frozen=True)
class Settings:
    port: int
    namespace: str
    pod_name: str
    busy_labels: Mapping[str, str]
    jibri_selector: Selector
    health_port: int
    sweep_interval: float
    lease_name: str
    lease: LeaseTimings
    probe_concurrency: int
    probe_timeout: float
    probe_max_bytes: int
    list_page_size: int
    restarted_policy: ReapPolicy
    finished_policy: ReapPolicy
    max_busy_seconds: float
    api_timeout: float
    dry_run: bool
    log_level: str
    log_format: LogFormat
    jwt: JwtSettings | None
    """None when webhooks are accepted unauthenticated (WEBHOOK_AUTH=none)."""
    check_source_ip: bool
    check_jibri_id: bool
    max_body_bytes: int
    read_timeout: float
    idle_timeout: float
    rate_limit: float
    shutdown_drain: float
    shutdown_timeout: float
    unresponsive_busy_seconds: float
    accept_any_source_unauthenticated: bool = False
    stuck_busy_seconds: float = 0.0
    """0: no stuck-BUSY detection (and no session-ON annotation written)."""
    stuck_policy: ReapPolicy = ReapPolicy.KEEP
    pool_period: float = 5.0
    internal_api_port: int = 3333
    """0: a pool's scale-down does not use Jibri's internal API."""


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str) -> str:
        value = self.raw(name)
        if value is not None:
            return value
        default = _DEFAULTS[name]
        if default is None:
            raise ConfigError(name, "is required")
        return default

    def parsed(self, name: str, parse: Callable[[str], _T], what: str) -> _T:
        value = self.text(name)
        try:
            return parse(value)
        except (ValueError, SelectorError) as exc:
            detail = f" ({exc})" if isinstance(exc, SelectorError) else ""
            raise ConfigError(name, f"{value!r} is not {what}{detail}") from None

    def number(self, name: str, *, minimum: float, maximum: float = float("inf")) -> float:
        value = self.parsed(name, float, "a number")
        if not minimum <= value <= maximum:
            raise ConfigError(name, f"{value:g} is out of range [{minimum:g}, {maximum:g}]")
        return value

    def integer(self, name: str, *, minimum: int, maximum: int) -> int:
        value = self.parsed(name, int, "an integer")
        if not minimum <= value <= maximum:
            raise ConfigError(name, f"{value} is out of range [{minimum}, {maximum}]")
        return value

    def flag(self, name: str) -> bool:
        value = self.text(name).lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigError(name, f"{value!r} is not true or false")

    def choice(self, name: str, kind: type[_E]) -> _E:
        value = self.text(name).lower()
        try:
            return kind(value)
        except ValueError:
            options = ", ".join(m.value for m in kind)
            raise ConfigError(name, f"{value!r} is not one of {options}") from None

    def path(self, name: str, *, directory: bool) -> Path | None:
        value = self.raw(name)
        if value is None:
            return None
        path = Path(value)
        if directory and not path.is_dir():
            raise ConfigError(name, f"{value!r} is not a readable directory")
        if not directory and not path.is_file():
            raise ConfigError(name, f"{value!r} is not a readable file")
        return path


_E = TypeVar("_E", bound=StrEnum)


def _log_level(reader: _Reader) -> str:
    name = "LOG_LEVEL" if reader.raw("LOG_LEVEL") is not None else "RUST_LOG"
    value = reader.raw(name) or "info"
    # RUST_LOG may be "info" or "other=warn,jibri_pod_controller=debug": as in env_logger, our
    # own directive wins over a plain level, and directives for other crates do not apply.
    own: list[str] = []
    plain: list[str] = []
    for part in value.split(","):
        target, sep, level = part.rpartition("=")
        if not sep:
            plain.append(level.strip().lower())
        elif target.strip() == "jibri_pod_controller":
            own.append(level.strip().lower())
    candidates = own or plain or (["info"] if name == "RUST_LOG" else [])
    if candidates and candidates[0] in _LEVELS:
        return _LEVELS[candidates[0]]
    raise ConfigError(name, f"{value!r} is not one of debug, info, warning, error")


def _lease(reader: _Reader) -> LeaseTimings:
    duration = reader.number("LEASE_DURATION", minimum=1, maximum=3600)
    if duration != int(duration):
        raise ConfigError(
            "LEASE_DURATION",
            f"{duration:g} is not whole seconds (the Lease record stores whole seconds)",
        )
    timings = LeaseTimings(
        duration=duration,
        renew_deadline=reader.number("LEASE_RENEW_DEADLINE", minimum=0.5, maximum=3600),
        retry_period=reader.number("LEASE_RETRY_PERIOD", minimum=0.1, maximum=600),
    )
    if timings.duration <= timings.renew_deadline:
        raise ConfigError("LEASE_DURATION", "must be greater than LEASE_RENEW_DEADLINE")
    if timings.renew_deadline <= 1.2 * timings.retry_period:
        raise ConfigError("LEASE_RENEW_DEADLINE", "must be greater than 1.2 x LEASE_RETRY_PERIOD")
    return timings


def _jwt(reader: _Reader) -> JwtSettings | None:
    keys_dir = reader.path("JWT_KEYS_DIR", directory=True)
    jwks_file = reader.path("JWT_JWKS_FILE", directory=False)
    has_keys = keys_dir is not None or jwks_file is not None
    explicit = reader.raw("WEBHOOK_AUTH")
    auth = reader.choice("WEBHOOK_AUTH", WebhookAuth) if explicit else None
    if auth is WebhookAuth.NONE:
        if has_keys:
            raise ConfigError("WEBHOOK_AUTH", "is none but JWT keys are configured")
        return None
    if not has_keys:
        raise ConfigError(
            "WEBHOOK_AUTH",
            "no JWT keys configured (JWT_KEYS_DIR or JWT_JWKS_FILE); "
            "set WEBHOOK_AUTH=none to accept unauthenticated webhooks",
        )
    issuer = reader.raw("JWT_ISSUER")
    if issuer is None:
        raise ConfigError("JWT_ISSUER", "is required when webhooks are verified")
    return JwtSettings(
        keys_dir=keys_dir,
        jwks_file=jwks_file,
        issuer=issuer,
        audience=reader.text("JWT_AUDIENCE"),
        leeway=reader.number("JWT_LEEWAY", minimum=0, maximum=600),
    )


def _rate_limit(reader: _Reader) -> float:
    rate = reader.number("WEBHOOK_RATE_LIMIT", minimum=0)
    if 0 < rate * RATE_LIMIT_BURST < 1:
        raise ConfigError(
            "WEBHOOK_RATE_LIMIT",
            f"{rate:g}/s gives a bucket of {rate * RATE_LIMIT_BURST:g} webhooks, less than one, "
            f"so every webhook would be refused: use 0 (no limit) or at least "
            f"{1 / RATE_LIMIT_BURST:g}",
        )
    return rate


def _stuck_busy_seconds(reader: _Reader) -> float:
    seconds = reader.number("STUCK_BUSY_SECONDS", minimum=0, maximum=30 * 86400)
    if 0 < seconds < MIN_STUCK_BUSY_SECONDS:
        raise ConfigError(
            "STUCK_BUSY_SECONDS",
            f"{seconds:g} is below {MIN_STUCK_BUSY_SECONDS}: a healthy session may take that "
            "long to turn ON; use 0 (off) or at least "
            f"{MIN_STUCK_BUSY_SECONDS}",
        )
    return seconds


def load_settings(env: Mapping[str, str], *, hostname: str | None = None) -> Settings:
    """Build `Settings` from an environment mapping.

    Every setting is read; if any is bad, `ConfigErrors` names all of them (one error per
    setting), so a broken Deployment is fixed in one round.
    """
    r = _Reader(env)
    values: dict[str, Any] = {}
    errors: list[ConfigError] = []

    def read(key: str, compute: Callable[[], object]) -> None:
        try:
            values[key] = compute()
        except ConfigError as exc:
            errors.append(exc)

    def check(*keys: str) -> bool:
        return all(key in values for key in keys)

    def namespace() -> str:
        value = r.text("NAMESPACE")
        if not _DNS1123_LABEL.match(value):
            raise ConfigError("NAMESPACE", f"{value!r} is not a valid namespace name")
        return value

    def pod_name() -> str:
        value = r.raw("POD_NAME") or hostname or socket.gethostname()
        if not is_valid_pod_name(value.lower()):
            raise ConfigError("POD_NAME", f"{value!r} is not a valid name")
        return value

    def lease_name() -> str:
        value = r.text("LEASE_NAME")
        if not is_valid_pod_name(value):
            raise ConfigError("LEASE_NAME", f"{value!r} is not a valid object name")
        return value

    read(
        "busy_labels",
        lambda: r.parsed("JIBRI_BUSY_LABELS", parse_labels, "a list of key=value labels"),
    )
    read("jibri_selector", lambda: r.parsed("JIBRI_SELECTOR", parse_selector, "a label selector"))
    if check("busy_labels", "jibri_selector") and not values["jibri_selector"].matches(
        values["busy_labels"]
    ):
        errors.append(
            ConfigError(
                "JIBRI_SELECTOR",
                f"{values['jibri_selector']} does not match JIBRI_BUSY_LABELS, so busy pods "
                "would be lost from view",
            )
        )
    read("namespace", namespace)
    read("pod_name", pod_name)
    read("lease_name", lease_name)
    read("port", lambda: r.integer("PORT", minimum=1, maximum=65535))
    read("health_port", lambda: r.integer("JIBRI_HEALTH_PORT", minimum=1, maximum=65535))
    read(
        "internal_api_port",
        lambda: r.integer("JIBRI_INTERNAL_API_PORT", minimum=0, maximum=65535),
    )
    read("sweep_interval", lambda: r.number("SWEEP_INTERVAL", minimum=1, maximum=86400))
    read("lease", lambda: _lease(r))
    read("probe_concurrency", lambda: r.integer("PROBE_CONCURRENCY", minimum=1, maximum=10000))
    read("probe_timeout", lambda: r.number("PROBE_TIMEOUT", minimum=0.05, maximum=60))
    read(
        "probe_max_bytes",
        lambda: r.integer("PROBE_MAX_BYTES", minimum=256, maximum=16 * 1024 * 1024),
    )
    read("list_page_size", lambda: r.integer("LIST_PAGE_SIZE", minimum=10, maximum=5000))
    read("restarted_policy", lambda: r.choice("RESTARTED_BUSY_POD_POLICY", ReapPolicy))
    read("finished_policy", lambda: r.choice("FINISHED_BUSY_POD_POLICY", ReapPolicy))
    read("max_busy_seconds", lambda: r.number("MAX_BUSY_SECONDS", minimum=0))
    read("api_timeout", lambda: r.number("API_TIMEOUT", minimum=0.1, maximum=1.9))
    read("dry_run", lambda: r.flag("DRY_RUN"))
    read("log_level", lambda: _log_level(r))
    read("log_format", lambda: r.choice("LOG_FORMAT", LogFormat))
    read("jwt", lambda: _jwt(r))
    read("check_source_ip", lambda: r.flag("WEBHOOK_CHECK_SOURCE_IP"))
    read(
        "accept_any_source_unauthenticated",
        lambda: r.flag("WEBHOOK_ACCEPT_ANY_SOURCE_UNAUTHENTICATED"),
    )
    if (
        check("jwt", "check_source_ip", "accept_any_source_unauthenticated")
        and values["jwt"] is None
        and not values["check_source_ip"]
        and not values["accept_any_source_unauthenticated"]
    ):
        errors.append(
            ConfigError(
                "WEBHOOK_CHECK_SOURCE_IP",
                "false together with WEBHOOK_AUTH=none lets anyone who reaches the service have "
                "any Jibri pod detached or deleted; set WEBHOOK_ACCEPT_ANY_SOURCE_UNAUTHENTICATED"
                "=true to accept that risk",
            )
        )
    read("check_jibri_id", lambda: r.flag("WEBHOOK_CHECK_JIBRI_ID"))
    read(
        "max_body_bytes",
        lambda: r.integer("WEBHOOK_MAX_BODY_BYTES", minimum=512, maximum=1024 * 1024),
    )
    read("read_timeout", lambda: r.number("WEBHOOK_READ_TIMEOUT", minimum=0.05, maximum=1.9))
    read("idle_timeout", lambda: r.number("WEBHOOK_IDLE_TIMEOUT", minimum=0.5, maximum=3600))
    read("rate_limit", lambda: _rate_limit(r))
    read("shutdown_drain", lambda: r.number("SHUTDOWN_DRAIN_SECONDS", minimum=0, maximum=300))
    read("shutdown_timeout", lambda: r.number("SHUTDOWN_TIMEOUT", minimum=0, maximum=300))
    read(
        "unresponsive_busy_seconds",
        lambda: r.number("UNRESPONSIVE_BUSY_POD_SECONDS", minimum=0, maximum=30 * 86400),
    )
    read("stuck_busy_seconds", lambda: _stuck_busy_seconds(r))
    read("stuck_policy", lambda: r.choice("STUCK_BUSY_POD_POLICY", ReapPolicy))
    read("pool_period", lambda: r.number("POOL_RECONCILE_PERIOD", minimum=0.5, maximum=3600))
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
    return Settings(**values)
