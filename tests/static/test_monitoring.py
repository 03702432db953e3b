"""The alert rules and the dashboard, checked by the real tools and against Grafana's model.

- `promtool check rules` (Debian's prometheus package) on deploy/prometheus/alerts.yaml and on
  the rules of the chart's PrometheusRule, rendered with every option.
- The dashboard has what Grafana's dashboard schema expects of a provisioned (not exported)
  dashboard: no `__inputs`, a `current` value for each variable, complete stat panel options,
  and no grouping by labels a plain scrape does not have.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.controlplane import find_binaries
from testbed.prometheus import promtool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "jibri-pod-controller"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = REPO / "dashboards" / "jibri-pod-controller.json"
# What a scrape of a replica puts on every series, besides the metric's own labels: `instance`
# and `job` always; `namespace` from the ServiceMonitor or a kubernetes_sd relabelling (the
# dashboard and the alerts filter on it). `le` is a histogram's bucket label.
SCRAPE_LABELS = {"instance", "job", "namespace", "le"}
# Grafana's stat panel options (public/app/plugins/panel/stat/panelcfg.cue).
STAT_OPTIONS = {
    "reduceOptions",
    "orientation",
    "text",
    "textMode",
    "wideLayout",
    "colorMode",
    "graphMode",
    "justifyMode",
    "showPercentChange",
}


def check_rules(path: Path) -> None:
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_checks_the_alerts_file() -> None:
    check_rules(ALERTS)


@pytest.mark.parametrize("values", [None, CHART / "ci" / "all-options-values.yaml"])
def test_promtool_checks_the_chart_prometheus_rule(values: Path | None, tmp_path: Path) -> None:
    args = [str(find_binaries() / "helm"), "template", "jpc", str(CHART), "-n", "jibri"]
    args += ["--set", "prometheusRule.enabled=true", "--set", "config.SWEEP_INTERVAL=45"]
    if values is not None:
        args += ["--values", str(values)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    rules = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "PrometheusRule"]
    assert len(rules) == 1
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules[0]["spec"]))
    check_rules(path)


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    """The check can fail: a rule with a syntax error is refused."""
    broken = yaml.safe_load(ALERTS.read_text())
    broken["groups"][0]["rules"][0]["expr"] = "sum by (namespace (jibri_pod_controller_leader)"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = promtool("check", "rules", str(path))
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


def panels() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def visit(items: list[dict[str, Any]]) -> None:
        for panel in items:
            found.append(panel)
            visit(panel.get("panels") or [])

    visit(json.loads(DASHBOARD.read_text())["panels"])
    return found


def test_dashboard_is_provisioned_not_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    # __inputs/__requires belong to exported dashboards (placeholders filled in on import);
    # this one picks its data source through the `datasource` variable.
    assert "__inputs" not in dashboard
    assert "__requires" not in dashboard
    assert "${DS_" not in DASHBOARD.read_text()


def test_dashboard_variables_have_current_values() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for variable in dashboard["templating"]["list"]:
        current = variable["current"]
        assert {"text", "value"} <= set(current), variable["name"]
        if variable.get("includeAll"):
            assert current["value"] == ["$__all"] if variable.get("multi") else "$__all"


def test_dashboard_stat_panels_have_every_option() -> None:
    stats = [p for p in panels() if p["type"] == "stat"]
    assert stats
    for panel in stats:
        missing = STAT_OPTIONS - set(panel["options"])
        assert not missing, f"{panel['title']}: {sorted(missing)}"
        reduce = panel["options"]["reduceOptions"]
        assert {"calcs", "fields", "values"} <= set(reduce), panel["title"]


def metric_labels() -> set[str]:
    """Every label name the controller's metrics carry: the label lists of adapters/metrics.py
    (and the pool loop's, adapters/pools.py) and the keys of the build_info it sets in app.py."""
    package = REPO / "src" / "jibri_pod_controller"
    labels: set[str] = set()
    sources = (package / "adapters" / "metrics.py", package / "adapters" / "pools.py")
    for names in re.findall(
        r"\[((?:\"[a-z_]+\",?\s*)+)\]", "\n".join(p.read_text() for p in sources)
    ):
        labels |= set(re.findall(r"\"([a-z_]+)\"", names))
    for keys in re.findall(r"info\.info\(\{([^}]*)\}", (package / "app.py").read_text()):
        labels |= set(re.findall(r"\"([a-z_]+)\":", keys))
    return labels


def test_dashboard_groups_only_by_labels_a_scrape_has() -> None:
    allowed = metric_labels() | SCRAPE_LABELS
    assert "pod" not in allowed
    for panel in panels():
        for target in panel.get("targets") or []:
            for clause in re.findall(r"\b(?:by|on|without) \(([^)]*)\)", target["expr"]):
                labels = {label.strip() for label in clause.split(",") if label.strip()}
                assert labels <= allowed, f"{panel['title']}: {sorted(labels - allowed)}"
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                assert label in allowed, f"{panel['title']}: legend {label}"
