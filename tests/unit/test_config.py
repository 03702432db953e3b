"""Settings: defaults, one error per bad value naming its variable, and the cross-checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from jibri_pod_controller.core.config import (
    SETTINGS,
    LogFormat,
    ReapPolicy,
    Settings,
    load_settings,
)
from jibri_pod_controller.core.selectors import Op, Requirement
from jibri_pod_controller.core.variables import ConfigError, ConfigErrors, Kind, Setting, rules

BASE = {"POD_NAME": "controller-0", "WEBHOOK_AUTH": "none"}


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    directory.mkdir()
    return directory


def test_defaults() -> None:
    s = load_settings({"WEBHOOK_AUTH": "none"}, hostname="jibri-pod-controller-7d4b9-x2x9q")
    assert s.port == 8080
    assert s.namespace == "default"
    assert s.pod_name == "jibri-pod-controller-7d4b9-x2x9q"
    assert s.busy_labels == {"app": "jibri", "state": "busy"}
    assert s.jibri_selector.requirements == (Requirement("app", Op.EQUALS, "jibri"),)
    assert s.health_port == 2222
    assert s.sweep_interval == 60
    assert s.lease_name == "jibri-pod-controller-lease"
    assert (s.lease.duration, s.lease.renew_deadline, s.lease.retry_period) == (15, 10, 2)
    assert (s.probe_concurrency, s.probe_timeout, s.probe_max_bytes) == (250, 1.0, 65536)
    assert s.list_page_size == 100
    assert s.restarted_policy is ReapPolicy.DELETE
    assert s.finished_policy is ReapPolicy.DELETE
    assert s.max_busy_seconds == 0
    assert s.api_timeout == 1.5
    assert s.dry_run is False
    assert s.log_level == "INFO"
    assert s.log_format is LogFormat.AUTO
    assert s.jwt is None
    assert s.check_source_ip is True
    assert s.check_jibri_id is True
    assert s.max_body_bytes == 16384
    assert s.read_timeout == 1.9
    assert s.rate_limit == 5
    assert s.shutdown_drain == 5
    assert s.shutdown_timeout == 10
    assert s.unresponsive_busy_seconds == 0
    assert s.accept_any_source_unauthenticated is False
    assert (s.stuck_busy_seconds, s.stuck_policy) == (0, ReapPolicy.KEEP)


def test_blank_values_mean_the_default() -> None:
    s = load_settings({**BASE, "PORT": "", "SWEEP_INTERVAL": "   ", "DRY_RUN": " "})
    assert (s.port, s.sweep_interval, s.dry_run) == (8080, 60, False)


def test_values_are_parsed() -> None:
    s = load_settings(
        {
            **BASE,
            "PORT": " 9000 ",
            "NAMESPACE": "recorders",
            "JIBRI_BUSY_LABELS": "app=jibri, jibri.example.org/state=busy",
            "JIBRI_SELECTOR": "app==jibri,!paused",
            "SWEEP_INTERVAL": "2.5",
            "RESTARTED_BUSY_POD_POLICY": "KEEP",
            "FINISHED_BUSY_POD_POLICY": "keep",
            "MAX_BUSY_SECONDS": "14400",
            "DRY_RUN": "yes",
            "LOG_FORMAT": "json",
            "WEBHOOK_CHECK_SOURCE_IP": "off",
            "WEBHOOK_ACCEPT_ANY_SOURCE_UNAUTHENTICATED": "true",
            "WEBHOOK_CHECK_JIBRI_ID": "0",
            "WEBHOOK_RATE_LIMIT": "0",
            "STUCK_BUSY_SECONDS": "300",
            "STUCK_BUSY_POD_POLICY": "Delete",
        }
    )
    assert s.port == 9000
    assert s.namespace == "recorders"
    assert s.busy_labels == {"app": "jibri", "jibri.example.org/state": "busy"}
    assert str(s.jibri_selector) == "app=jibri,!paused"
    assert s.sweep_interval == 2.5
    assert s.restarted_policy is ReapPolicy.KEEP
    assert s.finished_policy is ReapPolicy.KEEP
    assert s.max_busy_seconds == 14400
    assert s.dry_run is True
    assert s.log_format is LogFormat.JSON
    assert (s.check_source_ip, s.check_jibri_id) == (False, False)
    assert s.rate_limit == 0
    assert (s.stuck_busy_seconds, s.stuck_policy) == (300, ReapPolicy.DELETE)


def test_pod_name_falls_back_to_the_host_name() -> None:
    s = load_settings({"WEBHOOK_AUTH": "none"}, hostname="Controller-1")
    assert s.pod_name == "Controller-1"


# One bad value for every setting that can have one; the error names the variable first.
BAD_VALUES: list[tuple[str, str]] = [
    ("PORT", "http"),
    ("PORT", "0"),
    ("PORT", "65536"),
    ("NAMESPACE", "Jibri"),
    ("NAMESPACE", "a_b"),
    ("POD_NAME", "controller 0"),
    ("JIBRI_BUSY_LABELS", "app=jibri,state"),
    ("JIBRI_BUSY_LABELS", "app=jibri,app=other"),
    ("JIBRI_BUSY_LABELS", "app!=jibri"),
    ("JIBRI_SELECTOR", "app in (jibri)"),
    ("JIBRI_SELECTOR", "app=jibri,,x"),
    ("JIBRI_SELECTOR", "state=idle"),
    ("JIBRI_HEALTH_PORT", "99999"),
    ("SWEEP_INTERVAL", "0.5"),
    ("SWEEP_INTERVAL", "1m"),
    ("LEASE_NAME", "Lease_Name"),
    ("LEASE_DURATION", "nan"),
    ("LEASE_DURATION", "0"),
    ("LEASE_RENEW_DEADLINE", "ten"),
    ("LEASE_RETRY_PERIOD", "0"),
    ("PROBE_CONCURRENCY", "0"),
    ("PROBE_CONCURRENCY", "1.5"),
    ("PROBE_TIMEOUT", "0"),
    ("PROBE_MAX_BYTES", "100"),
    ("LIST_PAGE_SIZE", "5"),
    ("RESTARTED_BUSY_POD_POLICY", "restart"),
    ("FINISHED_BUSY_POD_POLICY", "remove"),
    ("MAX_BUSY_SECONDS", "-1"),
    ("API_TIMEOUT", "2"),
    ("API_TIMEOUT", "0"),
    ("DRY_RUN", "maybe"),
    ("LOG_LEVEL", "verbose"),
    ("LOG_FORMAT", "xml"),
    ("WEBHOOK_AUTH", "basic"),
    ("JWT_KEYS_DIR", "/nonexistent/keys"),
    ("JWT_JWKS_FILE", "/nonexistent/jwks.json"),
    ("WEBHOOK_CHECK_SOURCE_IP", "sometimes"),
    ("WEBHOOK_CHECK_JIBRI_ID", "2"),
    ("WEBHOOK_MAX_BODY_BYTES", "10"),
    ("WEBHOOK_READ_TIMEOUT", "5"),
    ("WEBHOOK_IDLE_TIMEOUT", "0"),
    ("WEBHOOK_IDLE_TIMEOUT", "soon"),
    ("WEBHOOK_RATE_LIMIT", "-1"),
    ("WEBHOOK_RATE_LIMIT", "0.2"),
    ("WEBHOOK_ACCEPT_ANY_SOURCE_UNAUTHENTICATED", "perhaps"),
    ("LEASE_DURATION", "15.5"),
    ("SHUTDOWN_DRAIN_SECONDS", "-1"),
    ("SHUTDOWN_TIMEOUT", "301"),
    ("POOL_RECONCILE_PERIOD", "0.1"),
    ("FORECAST_DAY_SECONDS", "30"),
    ("FORECAST_DAY_SECONDS", "172800"),
    ("JIBRI_INTERNAL_API_PORT", "65536"),
    ("JIBRI_INTERNAL_API_PORT", "-1"),
    ("UNRESPONSIVE_BUSY_POD_SECONDS", "soon"),
    ("STUCK_BUSY_SECONDS", "30"),
    ("STUCK_BUSY_SECONDS", "-1"),
    ("STUCK_BUSY_POD_POLICY", "reap"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, name: value})
    assert str(caught.value).startswith(f"{name}: ")
    assert caught.value.name == name
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("JWT_ISSUER", ""), ("JWT_LEEWAY", "-5"), ("JWT_LEEWAY", "soon")],
)
def test_a_bad_jwt_value_names_its_variable(name: str, value: str, keys_dir: Path) -> None:
    env = {"POD_NAME": "c", "JWT_KEYS_DIR": str(keys_dir), "JWT_ISSUER": "jibri", name: value}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert str(caught.value).startswith(f"{name}: ")


def test_every_setting_with_a_possible_bad_value_has_a_case() -> None:
    covered = {name for name, _ in BAD_VALUES} | {"JWT_ISSUER", "JWT_LEEWAY"}
    # Any non-empty audience is acceptable.
    assert {s.name for s in SETTINGS} - covered == {"JWT_AUDIENCE"}


@pytest.mark.parametrize(
    ("env", "level"),
    [
        ({"RUST_LOG": "info"}, "INFO"),
        ({"RUST_LOG": "jibri_pod_controller=debug"}, "DEBUG"),
        ({"RUST_LOG": "warn"}, "WARNING"),
        ({"RUST_LOG": "trace"}, "DEBUG"),
        ({"RUST_LOG": "hyper=trace,jibri_pod_controller=warn"}, "WARNING"),
        ({"RUST_LOG": "error,jibri_pod_controller=debug"}, "DEBUG"),
        ({"RUST_LOG": "hyper=trace,info"}, "INFO"),
        ({"RUST_LOG": "hyper=trace"}, "INFO"),
        ({"LOG_LEVEL": "ERROR"}, "ERROR"),
        ({"LOG_LEVEL": "warning", "RUST_LOG": "debug"}, "WARNING"),
        ({}, "INFO"),
    ],
)
def test_log_level_and_its_rust_log_alias(env: dict[str, str], level: str) -> None:
    assert load_settings({**BASE, **env}).log_level == level


def test_a_bad_rust_log_names_rust_log() -> None:
    with pytest.raises(ConfigError, match=r"^RUST_LOG: 'loud' is not one of"):
        load_settings({**BASE, "RUST_LOG": "loud"})


@pytest.mark.parametrize(
    ("duration", "renew", "retry", "error"),
    [
        ("15", "10", "2", None),
        ("3", "2.5", "2", None),
        ("10", "10", "2", "LEASE_DURATION"),
        ("9", "10", "2", "LEASE_DURATION"),
        ("15", "2.4", "2", "LEASE_RENEW_DEADLINE"),
        ("15", "1", "2", "LEASE_RENEW_DEADLINE"),
    ],
)
def test_lease_timing_relations(duration: str, renew: str, retry: str, error: str | None) -> None:
    env = {
        **BASE,
        "LEASE_DURATION": duration,
        "LEASE_RENEW_DEADLINE": renew,
        "LEASE_RETRY_PERIOD": retry,
    }
    if error is None:
        lease = load_settings(env).lease
        assert (lease.duration, lease.renew_deadline, lease.retry_period) == (
            float(duration),
            float(renew),
            float(retry),
        )
    else:
        with pytest.raises(ConfigError, match=rf"^{error}: must be greater than"):
            load_settings(env)


@pytest.mark.parametrize(
    ("busy", "selector", "ok"),
    [
        ("app=jibri,state=busy", "app=jibri", True),
        ("app=jibri,state=busy", "app", True),
        ("app=jibri,state=busy", "app=jibri,!paused", True),
        ("app=jibri,state=busy", "app=jibri,state!=idle", True),
        ("app=jibri,state=busy", "app=jibri,state=idle", False),
        ("app=jibri,state=busy", "app=jibri,!state", False),
        ("role=recorder,state=busy", "app=jibri", False),
    ],
)
def test_selector_must_match_the_busy_labels(busy: str, selector: str, ok: bool) -> None:
    env = {**BASE, "JIBRI_BUSY_LABELS": busy, "JIBRI_SELECTOR": selector}
    if ok:
        assert load_settings(env).jibri_selector.matches(load_settings(env).busy_labels)
    else:
        with pytest.raises(ConfigError, match=r"^JIBRI_SELECTOR: .* does not match"):
            load_settings(env)


def test_without_keys_webhook_auth_must_be_set() -> None:
    with pytest.raises(ConfigError, match=r"^WEBHOOK_AUTH: no JWT keys configured"):
        load_settings({"POD_NAME": "c"})


def test_jwt_without_keys_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^WEBHOOK_AUTH: "):
        load_settings({"POD_NAME": "c", "WEBHOOK_AUTH": "jwt"})


def test_none_with_keys_is_an_error(keys_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^WEBHOOK_AUTH: is none but JWT keys"):
        load_settings({"POD_NAME": "c", "WEBHOOK_AUTH": "none", "JWT_KEYS_DIR": str(keys_dir)})


def test_keys_without_issuer_is_an_error(keys_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^JWT_ISSUER: is required"):
        load_settings({"POD_NAME": "c", "JWT_KEYS_DIR": str(keys_dir)})


def test_a_keys_dir_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    file = tmp_path / "key.pem"
    file.write_text("x")
    with pytest.raises(ConfigError, match=r"^JWT_KEYS_DIR: .* is not a readable directory"):
        load_settings({"POD_NAME": "c", "JWT_KEYS_DIR": str(file), "JWT_ISSUER": "jibri"})


def test_jwt_settings(keys_dir: Path, tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    s = load_settings(
        {
            "POD_NAME": "c",
            "JWT_KEYS_DIR": str(keys_dir),
            "JWT_JWKS_FILE": str(jwks),
            "JWT_ISSUER": "jibri",
            "JWT_LEEWAY": "5",
        }
    )
    assert s.jwt is not None
    assert (s.jwt.keys_dir, s.jwt.jwks_file) == (keys_dir, jwks)
    assert (s.jwt.issuer, s.jwt.audience, s.jwt.leeway) == ("jibri", "jibri-pod-controller", 5)
    explicit = load_settings(
        {"POD_NAME": "c", "WEBHOOK_AUTH": "JWT", "JWT_KEYS_DIR": str(keys_dir), "JWT_ISSUER": "i"}
    )
    assert explicit.jwt is not None


# The kind, bounds and choices of each setting feed the chart's values.schema.json; these
# tests hold them to what load_settings really accepts.


def _error(name: str, value: str, base: dict[str, str] = BASE) -> str | None:
    try:
        load_settings({**base, name: value})
    except ConfigError as exc:
        return str(exc) if exc.name == name else None
    return None


def _name(setting: Setting[object]) -> str:
    return setting.name


def _of_kind(*kinds: Kind) -> list[Setting[object]]:
    return [s for s in SETTINGS if s.read.accepts.kind in kinds]


@pytest.mark.parametrize("setting", _of_kind(Kind.INTEGER, Kind.NUMBER), ids=_name)
def test_bounds_are_those_load_settings_checks(setting: Setting[object], keys_dir: Path) -> None:
    rule = setting.read.accepts
    assert rule.minimum is not None
    # JWT_* settings are read only when webhooks are verified.
    base = {"POD_NAME": "controller-0", "JWT_KEYS_DIR": str(keys_dir), "JWT_ISSUER": "jibri"}
    step = 1 if rule.kind is Kind.INTEGER else 0.01
    at_bounds = [rule.minimum] + ([rule.maximum] if rule.maximum is not None else [])
    for value in at_bounds:
        text = str(int(value)) if rule.kind is Kind.INTEGER else repr(float(value))
        assert "out of range" not in (_error(setting.name, text, base) or ""), text
    outside = [rule.minimum - step] + (
        [rule.maximum + step] if rule.maximum is not None else [float("1e300")]
    )
    for value in outside:
        text = str(int(value)) if rule.kind is Kind.INTEGER else repr(float(value))
        error = _error(setting.name, text, base)
        if rule.maximum is None and value > rule.minimum:
            assert error is None, text  # unbounded above
        elif rule.or_zero and value < rule.minimum:
            assert error is not None, text  # between 0 and the minimum: its own message
        else:
            assert error is not None, text
            assert "out of range" in error, text
    if rule.or_zero:
        assert _error(setting.name, "0", base) is None
        assert _error(setting.name, "-0.01", base) is not None
    if rule.kind is Kind.INTEGER:
        assert _error(setting.name, "1.5", base) is not None
    assert "is not a" in (_error(setting.name, "abc", base) or "")


@pytest.mark.parametrize("setting", _of_kind(Kind.CHOICE), ids=_name)
def test_choices_are_those_load_settings_accepts(setting: Setting[object]) -> None:
    assert setting.read.accepts.choices
    for choice in setting.read.accepts.choices:
        assert "is not one of" not in (_error(setting.name, choice) or ""), choice
        assert "is not one of" not in (_error(setting.name, choice.upper()) or ""), choice
    assert "is not one of" in (_error(setting.name, "verbose") or "")


@pytest.mark.parametrize("setting", _of_kind(Kind.FLAG), ids=_name)
def test_flags_accept_the_usual_words(setting: Setting[object]) -> None:
    for word in ("true", "false", "1", "0", "yes", "no", "on", "off", "TRUE"):
        # Other rules may still refuse a combination; the word itself is read.
        assert "is not true or false" not in (_error(setting.name, word) or ""), word
    assert "is not true or false" in (_error(setting.name, "maybe") or "")


def test_text_settings_are_the_ones_parsed_otherwise() -> None:
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)
    text = {s.name for s in _of_kind(Kind.TEXT)}
    assert text == {
        "NAMESPACE",
        "POD_NAME",
        "JIBRI_BUSY_LABELS",
        "JIBRI_SELECTOR",
        "LEASE_NAME",
        "JWT_KEYS_DIR",
        "JWT_JWKS_FILE",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
    }


def test_every_bad_setting_is_named_at_once() -> None:
    env = {
        **BASE,
        "PORT": "http",
        "LEASE_DURATION": "15.5",
        "WEBHOOK_RATE_LIMIT": "0.1",
        "LOG_FORMAT": "xml",
    }
    with pytest.raises(ConfigErrors) as caught:
        load_settings(env)
    names = [e.name for e in caught.value.errors]
    assert names == ["PORT", "LEASE_DURATION", "LOG_FORMAT", "WEBHOOK_RATE_LIMIT"]
    lines = str(caught.value).splitlines()
    assert [line.split(":")[0] for line in lines] == names


@pytest.mark.parametrize(
    ("rate", "ok"), [("0", True), ("0.25", True), ("5", True), ("0.24", False), ("0.01", False)]
)
def test_a_rate_limit_whose_bucket_never_holds_one_webhook_is_refused(rate: str, ok: bool) -> None:
    env = {**BASE, "WEBHOOK_RATE_LIMIT": rate}
    if ok:
        assert load_settings(env).rate_limit == float(rate)
    else:
        with pytest.raises(ConfigError, match=r"^WEBHOOK_RATE_LIMIT: .* less than one"):
            load_settings(env)


@pytest.mark.parametrize(("duration", "ok"), [("15", True), ("15.0", True), ("15.5", False)])
def test_the_lease_duration_is_whole_seconds(duration: str, ok: bool) -> None:
    env = {**BASE, "LEASE_DURATION": duration}
    if ok:
        assert load_settings(env).lease.duration == 15
    else:
        with pytest.raises(ConfigError, match=r"^LEASE_DURATION: 15.5 is not whole seconds"):
            load_settings(env)


@pytest.mark.parametrize(
    ("auth", "check_ip", "accept", "ok"),
    [
        ("none", "true", "false", True),
        ("none", "false", "false", False),
        ("none", "false", "true", True),
        ("jwt", "false", "false", True),
    ],
)
def test_unauthenticated_without_the_source_check_needs_the_risk_named(
    keys_dir: Path, auth: str, check_ip: str, accept: str, ok: bool
) -> None:
    env = {
        "POD_NAME": "c",
        "WEBHOOK_AUTH": auth,
        "WEBHOOK_CHECK_SOURCE_IP": check_ip,
        "WEBHOOK_ACCEPT_ANY_SOURCE_UNAUTHENTICATED": accept,
    }
    if auth == "jwt":
        (keys_dir / "k.pem").write_text("unused here")
        env |= {"JWT_KEYS_DIR": str(keys_dir), "JWT_ISSUER": "jibri"}
    if ok:
        assert load_settings(env).check_source_ip is (check_ip == "true")
    else:
        with pytest.raises(
            ConfigError,
            match=r"^WEBHOOK_CHECK_SOURCE_IP: .*WEBHOOK_ACCEPT_ANY_SOURCE_UNAUTHENTICATED=true",
        ):
            load_settings(env)


def test_both_lease_rules_are_named_at_once() -> None:
    env = {**BASE, "LEASE_DURATION": "2", "LEASE_RENEW_DEADLINE": "2.4", "LEASE_RETRY_PERIOD": "2"}
    with pytest.raises(ConfigErrors) as caught:
        load_settings(env)
    assert [e.name for e in caught.value.errors] == ["LEASE_DURATION", "LEASE_RENEW_DEADLINE"]


def test_jwt_settings_are_read_only_when_webhooks_are_verified() -> None:
    # With WEBHOOK_AUTH=none they are not used, so their values are not checked.
    s = load_settings({**BASE, "JWT_LEEWAY": "soon", "JWT_ISSUER": ""})
    assert s.jwt is None


def test_rules_across_settings_are_declared_on_the_setting_they_name() -> None:
    named = [name for name, _ in rules(Settings)]
    assert named == [
        "JIBRI_SELECTOR",
        "LEASE_DURATION",
        "LEASE_RENEW_DEADLINE",
        "WEBHOOK_AUTH",
        "WEBHOOK_CHECK_SOURCE_IP",
    ]
    for name, doc in rules(Settings):
        assert doc.endswith("."), name


def test_the_default_of_every_setting_is_accepted_by_its_reader() -> None:
    # A default the reader refuses would stop every installation that leaves it unset.
    for setting in SETTINGS:
        if setting.default is not None:
            setting.read(setting.default)
