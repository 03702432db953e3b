"""The chart's values.schema.json: generated from the settings table, and refusing at install
time what the controller would refuse at start-up (run through helm itself, which validates
values against the schema)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.tools import REPO, helm

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


def test_schema_is_generated_from_the_settings_table() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "values-schema.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (["--set", "config.SWEEP_INTERVAL=abc"], "/config/SWEEP_INTERVAL"),
        (["--set", "config.LOG_LEVEL=verbose"], "/config/LOG_LEVEL"),
        (["--set", "config.PORT=99999"], "/config/PORT"),
        (["--set", "config.PORT=0"], "/config/PORT"),
        (["--set", "config.PROBE_CONCURRENCY=1.5"], "/config/PROBE_CONCURRENCY"),
        (["--set-json", "config.API_TIMEOUT=5"], "/config/API_TIMEOUT"),
        (["--set", "config.DRY_RUN=maybe"], "/config/DRY_RUN"),
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
        (["--set", "config.DRY_RUN=true"], {"DRY_RUN": "true"}),
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
