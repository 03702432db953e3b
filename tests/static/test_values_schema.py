"""The chart's values.schema.json: generated from the settings' declarations (by
scripts/generate.py; tests/static/test_generated.py checks it is current), and refusing at
install time what the controller would refuse at start-up (run through helm itself, which
validates values against the schema)."""

from __future__ import annotations

import re
import subprocess
from decimal import Decimal

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from jibri_pod_controller.core.config import SETTINGS
from jibri_pod_controller.core.variables import Kind
from tests.tools import REPO, generator, helm

CHART = REPO / "charts" / "jibri-pod-controller"

pytestmark = pytest.mark.timeout(3600)  # the first use may build helm


def template(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm()), "template", "jibri-pod-controller", str(CHART), "-n", "jibri", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (["--set", "config.SWEEP_INTERVAL=abc"], "/config/SWEEP_INTERVAL"),
        (["--set", "config.LOG_LEVEL=verbose"], "/config/LOG_LEVEL"),
        (["--set", "config.PORT=99999"], "/config/PORT"),
        (["--set", "config.PORT=0"], "/config/PORT"),
        (["--set-string", "config.PORT=99999"], "/config/PORT"),
        (["--set", "config.PROBE_TIMEOUT=99.5"], "/config/PROBE_TIMEOUT"),
        (["--set", "config.API_TIMEOUT=0.05"], "/config/API_TIMEOUT"),
        (["--set", "config.LEASE_RETRY_PERIOD=0.09"], "/config/LEASE_RETRY_PERIOD"),
        (["--set", "config.PROBE_CONCURRENCY=1.5"], "/config/PROBE_CONCURRENCY"),
        (["--set-json", "config.API_TIMEOUT=5"], "/config/API_TIMEOUT"),
        (["--set", "config.DRY_RUN=maybe"], "/config/DRY_RUN"),
        # Above 0 but below 0.25/s the bucket never holds one webhook.
        (["--set", "config.WEBHOOK_RATE_LIMIT=0.1"], "/config/WEBHOOK_RATE_LIMIT"),
        (["--set-string", "config.WEBHOOK_RATE_LIMIT=0.24"], "/config/WEBHOOK_RATE_LIMIT"),
        (["--set-string", "config.WEBHOOK_RATE_LIMIT=."], "/config/WEBHOOK_RATE_LIMIT"),
        (["--set", "config.WEBHOOK_RATE_LIMIT=-1"], "/config/WEBHOOK_RATE_LIMIT"),
        (["--set", "config.RESTARTED_BUSY_POD_POLICY=remove"], "/config/RESTARTED_BUSY_POD_POLICY"),
        (
            ["--set", "jwt.enabled=false", "--set", "config.WEBHOOK_AUTH=jwt"],
            "/config/WEBHOOK_AUTH",
        ),
        (["--set", "config.WEBHOOK_AUTH=none"], "/config/WEBHOOK_AUTH"),
        (["--set", "config.NO_SUCH_SETTING=1"], "/config"),
        # An unescaped comma starts a new --set value: here a top-level key "state".
        (["--set", "config.JIBRI_BUSY_LABELS=app=jibri,state=busy"], "state"),
    ],
)
def test_bad_values_are_refused_at_install_time(args: list[str], where: str) -> None:
    result = template(*args)
    assert result.returncode != 0, result.stdout[:500]
    assert "don't meet the specifications of the schema" in result.stderr, result.stderr
    assert where in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        ([], {"SWEEP_INTERVAL": "60", "PORT": "8080", "DRY_RUN": "false"}),
        (["--set", "config.SWEEP_INTERVAL=30"], {"SWEEP_INTERVAL": "30"}),
        (["--set", "config.LOG_LEVEL=DEBUG"], {"LOG_LEVEL": "DEBUG"}),
        (["--set-json", "config.PROBE_TIMEOUT=0.5"], {"PROBE_TIMEOUT": "0.5"}),
        (["--set", "config.PROBE_TIMEOUT=0.5"], {"PROBE_TIMEOUT": "0.5"}),
        (["--set-string", "config.PORT=65535"], {"PORT": "65535"}),
        (["--set", "config.API_TIMEOUT=1.90"], {"API_TIMEOUT": "1.90"}),
        (["--set", "config.DRY_RUN=true"], {"DRY_RUN": "true"}),
        (["--set", "config.WEBHOOK_RATE_LIMIT=0"], {"WEBHOOK_RATE_LIMIT": "0"}),
        (["--set-string", "config.WEBHOOK_RATE_LIMIT=0.0"], {"WEBHOOK_RATE_LIMIT": "0.0"}),
        (["--set", "config.WEBHOOK_RATE_LIMIT=0.25"], {"WEBHOOK_RATE_LIMIT": "0.25"}),
        (["--set-string", "config.WEBHOOK_RATE_LIMIT=12"], {"WEBHOOK_RATE_LIMIT": "12"}),
        (
            ["--set", r"config.JIBRI_BUSY_LABELS=app=jibri\,state=busy\,pool=a"],
            {"JIBRI_BUSY_LABELS": "app=jibri,state=busy,pool=a"},
        ),
        (["--set", "jwt.enabled=false"], {"WEBHOOK_AUTH": "none"}),
        (["--set", "config.WEBHOOK_AUTH=jwt"], {"WEBHOOK_AUTH": "jwt"}),
    ],
)
def test_good_values_install_with_the_value_given(args: list[str], env: dict[str, str]) -> None:
    result = template(*args)
    assert result.returncode == 0, result.stderr
    [deployment] = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Deployment"]
    rendered = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    for name, value in env.items():
        assert rendered[name] == value, name


GENERATOR = generator()
BOUNDS = sorted(
    {
        bound
        for rule in (s.read.accepts for s in SETTINGS)
        if rule.kind in (Kind.INTEGER, Kind.NUMBER)
        for bound in (rule.minimum, rule.maximum)
        if bound is not None
    }
)
decimal_text = st.builds(
    lambda zeros, whole, fraction, dot: (
        "0" * zeros + (str(whole) if whole or not dot else "") + ("." + fraction if dot else "")
    ),
    st.integers(0, 2),
    st.integers(0, 20_000_000),
    st.text("0123456789", min_size=1, max_size=5),
    st.booleans(),
)


@given(text=decimal_text, bound=st.sampled_from(BOUNDS))
def test_range_patterns_compare_decimal_text_like_numbers(text: str, bound: float) -> None:
    value = Decimal(text)
    assert (re.search(GENERATOR.at_least(bound), text) is not None) == (
        value >= Decimal(repr(bound))
    )
    assert (re.search(GENERATOR.at_most(bound), text) is not None) == (
        value <= Decimal(repr(bound))
    )


def test_range_patterns_at_the_bounds() -> None:
    for bound in BOUNDS:
        exact = format(Decimal(repr(bound)), "f")
        assert re.search(GENERATOR.at_least(bound), exact)
        assert re.search(GENERATOR.at_most(bound), exact)
    assert re.search(GENERATOR.at_least(1), "")  # empty: unset, the default applies


def test_range_patterns_one_digit_away_from_each_bound() -> None:
    # Every digit position of every bound, moved up and down: the patterns are built digit by
    # digit, so this reaches each of their alternatives.
    for bound in BOUNDS:
        exact = Decimal(repr(bound))
        for exponent in range(-4, 9):
            for step in range(-9, 10):
                value = exact + step * Decimal(10) ** exponent
                if value < 0:
                    continue
                plain = format(value, "f")
                # The same value written differently: "1." and "01.50" are numbers too.
                texts = [plain, "0" + plain, plain + ("0" if "." in plain else ".")]
                if value == value.to_integral_value():
                    texts += [f"{int(value)}", f"{int(value)}."]
                for text in texts:
                    assert (re.search(GENERATOR.at_least(bound), text) is not None) == (
                        value >= exact
                    ), (bound, text)
                    assert (re.search(GENERATOR.at_most(bound), text) is not None) == (
                        value <= exact
                    ), (bound, text)
