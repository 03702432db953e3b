"""The alert rules, tested with `promtool test rules` (cases in alerts_cases.yaml).

promtool comes from Debian's `prometheus` package, which scripts/bootstrap.sh installs when it is
missing. Every alert has a case where it fires; the cases include two installations, one gone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
CASES = Path(__file__).with_name("alerts_cases.yaml")
OPERATIONS = REPO / "docs" / "operations.md"
with (REPO / "pyproject.toml").open("rb") as _f:
    # The documentation's address, declared once; the links are generated from it.
    RUNBOOK_BASE = tomllib.load(_f)["project"]["urls"]["Documentation"] + "/operations.md"


def rules() -> dict[str, dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return {r["alert"]: r for g in loaded["groups"] for r in g["rules"]}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run scripts/bootstrap.sh (Debian package prometheus)")
    return found


def promtool_file(tmp: Path) -> Path:
    """The cases as promtool reads them: exp_summary expanded into the full annotations."""
    by_name = rules()
    cases = yaml.safe_load(CASES.read_text())
    for test in cases["tests"]:
        for check in test["alert_rule_test"]:
            annotations = by_name[check["alertname"]]["annotations"]
            for alert in check["exp_alerts"]:
                alert["exp_annotations"] = {
                    "summary": alert.pop("exp_summary"),
                    "description": annotations["description"],
                    "runbook_url": annotations["runbook_url"],
                }
    cases["rule_files"] = [str(ALERTS)]
    path = tmp / "alerts_test.yaml"
    path.write_text(yaml.safe_dump(cases, sort_keys=False))
    return path


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(promtool_file(tmp_path))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    cases = yaml.safe_load(CASES.read_text())["tests"]
    fires = {c["alertname"] for t in cases for c in t["alert_rule_test"] if c["exp_alerts"]}
    silent = {c["alertname"] for t in cases for c in t["alert_rule_test"] if not c["exp_alerts"]}
    assert fires == set(rules())
    assert silent == set(rules())


def test_two_installations_case_covers_the_liveness_rules() -> None:
    cases = yaml.safe_load(CASES.read_text())["tests"]
    case = next(t for t in cases if t["name"] == "two installations, one gone")
    namespaces = {
        re.search(r'namespace="([^"]+)"', s["series"]).group(1)  # type: ignore[union-attr]
        for s in case["input_series"]
    }
    assert namespaces == {"live", "gone"}
    firing = {
        c["alertname"]: [a["exp_labels"]["namespace"] for a in c["exp_alerts"]]
        for c in case["alert_rule_test"]
        if c["exp_alerts"]
    }
    for alert in (
        "JibriPodControllerDown",
        "JibriPodControllerNotReady",
        "JibriPodControllerNoLeader",
        "JibriPodControllerSweepStale",
    ):
        assert firing[alert] == ["gone"], alert


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_each_rule_has_a_runbook_section_in_the_operations_guide() -> None:
    anchors = {
        _slug(m.group(1)) for m in re.finditer(r"^#{2,4} (.+)$", OPERATIONS.read_text(), re.M)
    }
    for name, rule in rules().items():
        url = rule["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base == RUNBOOK_BASE, name
        assert anchor == name.lower(), name
        assert anchor in anchors, f"docs/operations.md has no section {name}"


def test_descriptions_and_runbooks_carry_no_template() -> None:
    # The cases copy them verbatim; the summary names the namespace or the replica.
    for name, rule in rules().items():
        assert "{{" not in rule["annotations"]["description"], name
        assert "{{" not in rule["annotations"]["runbook_url"], name
        assert "{{" in rule["annotations"]["summary"], name


def test_rule_layout_is_one_block_per_rule() -> None:
    # Each rule is one block, separated by a blank line, with the same keys in the same order.
    for name, rule in rules().items():
        assert list(rule) == ["alert", "expr", "for", "labels", "annotations"], name
        assert list(rule["annotations"]) == ["summary", "description", "runbook_url"], name
    text = ALERTS.read_text()
    assert text.count("\n      - alert: ") == len(rules())
    assert text.count("\n\n      - alert: ") == len(rules()) - 1
