#!/usr/bin/env python3
"""Write every file that is derived from another, or check that they are current.

    .venv/bin/python scripts/generate.py           # rewrite what is out of date
    .venv/bin/python scripts/generate.py --check   # exit 1 naming what is out of date

Each fact has one source; the files below are written from it (tests/static/test_generated.py
runs --check):

- The settings' declarations (`Settings` in src/jibri_pod_controller/core/config.py) give the
  `config` part of the chart's values.schema.json (and its `allOf` rules), the `config:` block
  of the chart's values.yaml and docs/configuration.md. The chart's own values and notes for a
  few settings are in `CHART_CONFIG` below.
- The documentation's address (`[project.urls] Documentation` in pyproject.toml) gives the
  runbook_url of every rule in deploy/prometheus/alerts.yaml and the chart's default
  `prometheusRule.runbookBaseUrl`.
- deploy/crds/jibripools.yaml gives the chart's crds/jibripools.yaml, and
  deploy/prometheus/alerts.yaml the chart's files/alerts.yaml. Helm reads nothing outside the
  chart's directory, so the chart holds generated copies (headed as such); its alerts carry
  the runbook base as `RUNBOOK_BASE_URL`, which templates/prometheusrule.yaml replaces with
  `prometheusRule.runbookBaseUrl`.

The schema's numbers are range-checked whether they are written as numbers or as text ("0.5" in
quotes, or a decimal from --set, which Helm passes as a string).
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from jibri_pod_controller.core.config import SETTINGS, Settings
from jibri_pod_controller.core.variables import Accepts, Kind, Setting, rules

REPO = Path(__file__).resolve().parents[1]
CHART = Path("charts/jibri-pod-controller")
SCHEMA = CHART / "values.schema.json"
VALUES = CHART / "values.yaml"
REFERENCE = Path("docs/configuration.md")
CRD = Path("deploy/crds/jibripools.yaml")
ALERTS = Path("deploy/prometheus/alerts.yaml")
CHART_CRD = CHART / "crds" / "jibripools.yaml"
CHART_ALERTS = CHART / "files" / "alerts.yaml"
RUNBOOK_PLACEHOLDER = "RUNBOOK_BASE_URL"
"""The runbook base in the chart's copy of the alerts (templates/prometheusrule.yaml)."""
PYPROJECT = Path("pyproject.toml")
COMMAND = ".venv/bin/python scripts/generate.py"
SETTINGS_SOURCE = "src/jibri_pod_controller/core/config.py"


ReadFile = Callable[[Path], str]
"""A file's text, by its path in the repository (as generated so far)."""


def documentation(read: ReadFile) -> str:
    """The documentation's address: [project.urls] Documentation in pyproject.toml."""
    urls = tomllib.loads(read(PYPROJECT))["project"]["urls"]
    return str(urls["Documentation"]).rstrip("/")


def runbook_base(read: ReadFile) -> str:
    return f"{documentation(read)}/operations.md"


# -- values.schema.json ------------------------------------------------------------------------

# An empty string leaves the variable unset (the program's default applies).
_INTEGER_TEXT = r"^([0-9]+)?$"
_NUMBER_TEXT = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)?$"
_ZERO_TEXT = r"^0*(\.0*)?$"  # with _NUMBER_TEXT: "0", "0.0", "00."
_FLAG_TEXT = r"(?i)^(true|false|yes|no|on|off|1|0)?$"

# A number in quotes (or a decimal from --set, which arrives as a string) is range-checked by
# patterns: one for "at least the minimum", one for "at most the maximum", on the decimal text.
# All minimums are >= 0, so the text has no sign. RE2 (Helm's schema validator) has no
# lookahead, hence two patterns instead of one.


def _split(bound: float) -> tuple[str, str]:
    """A bound's whole digits (no leading zeros) and fraction digits (no trailing zeros)."""
    text = format(Decimal(repr(bound)).normalize(), "f")
    whole, _, fraction = text.partition(".")
    return whole.lstrip("0"), fraction.rstrip("0")


def _whole_above(whole: str) -> list[str]:
    n = len(whole)
    alternatives = [rf"[1-9][0-9]{{{n},}}"]
    for i, digit in enumerate(whole):
        if digit != "9":
            alternatives.append(f"{whole[:i]}[{int(digit) + 1}-9][0-9]{{{n - i - 1}}}")
    return alternatives


def _whole_below(whole: str) -> list[str]:
    n = len(whole)
    if n == 0:
        return []
    alternatives = [""]
    if n >= 2:
        alternatives.append(rf"[1-9][0-9]{{0,{n - 2}}}")
    for i, digit in enumerate(whole):
        lowest = 1 if i == 0 else 0
        if int(digit) > lowest:
            alternatives.append(f"{whole[:i]}[{lowest}-{int(digit) - 1}][0-9]{{{n - i - 1}}}")
    return alternatives


def _fraction_at_least(fraction: str) -> str:
    alternatives = [f"{fraction}[0-9]*"]
    for i, digit in enumerate(fraction):
        if digit != "9":
            alternatives.append(f"{fraction[:i]}[{int(digit) + 1}-9][0-9]*")
    return "(" + "|".join(alternatives) + ")"


def _fraction_at_most(fraction: str) -> str:
    alternatives = [f"{fraction[:i]}0*" for i in range(len(fraction) + 1)]
    for i, digit in enumerate(fraction):
        if digit != "0":
            alternatives.append(f"{fraction[:i]}[0-{int(digit) - 1}][0-9]*")
    return "(" + "|".join(alternatives) + ")"


def at_least(bound: float) -> str:
    """A pattern for decimal text (or "") whose value is >= bound."""
    whole, fraction = _split(bound)
    parts = ["0*(" + "|".join(_whole_above(whole)) + r")(\.[0-9]*)?"]
    if fraction:
        parts.append(f"0*{whole}\\.{_fraction_at_least(fraction)}")
    else:
        parts.append(f"0*{whole}(\\.[0-9]*)?")
    return "^(|" + "|".join(parts) + ")$"


def at_most(bound: float) -> str:
    """A pattern for decimal text (or "") whose value is <= bound."""
    whole, fraction = _split(bound)
    parts = []
    below = _whole_below(whole)
    if below:
        parts.append("0*(" + "|".join(below) + r")(\.[0-9]*)?")
    parts.append(f"0*{whole}(\\.{_fraction_at_most(fraction)})?")
    return "^(|" + "|".join(parts) + ")$"


def _text(rule: Accepts, form: str) -> dict[str, Any]:
    patterns = [form]
    if rule.minimum is not None:
        patterns.append(at_least(rule.minimum))
    if rule.maximum is not None:
        patterns.append(at_most(rule.maximum))
    return {"type": "string", "allOf": [{"pattern": p} for p in patterns]}


def _bounds(rule: Accepts, schema: dict[str, Any]) -> dict[str, Any]:
    if rule.minimum is not None:
        schema["minimum"] = rule.minimum
    if rule.maximum is not None:
        schema["maximum"] = rule.maximum
    return schema


def setting_schema(setting: Setting[object]) -> dict[str, Any]:
    rule = setting.read.accepts
    schema: dict[str, Any] = {"description": setting.help}
    if rule.kind is Kind.INTEGER:
        schema["anyOf"] = [
            _bounds(rule, {"type": "integer"}),
            _text(rule, _INTEGER_TEXT),
        ]
    elif rule.kind is Kind.NUMBER:
        schema["anyOf"] = [
            _bounds(rule, {"type": "number"}),
            _text(rule, _NUMBER_TEXT),
        ]
        if rule.or_zero:
            schema["anyOf"] += [
                {"type": "number", "const": 0},
                {"type": "string", "allOf": [{"pattern": _NUMBER_TEXT}, {"pattern": _ZERO_TEXT}]},
            ]
    elif rule.kind is Kind.FLAG:
        schema["anyOf"] = [
            {"type": "boolean"},
            {"type": "integer", "enum": [0, 1]},
            {"type": "string", "pattern": _FLAG_TEXT},
        ]
    elif rule.kind is Kind.CHOICE:
        schema["type"] = "string"
        schema["pattern"] = "(?i)^(" + "|".join(rule.choices) + ")?$"
    else:
        schema["type"] = ["string", "number", "integer", "boolean"]
    return schema


# Combinations the controller would refuse at start-up, refused at install time instead.
CONTRADICTIONS: list[dict[str, Any]] = [
    {
        "description": "jwt.enabled=false mounts no keys, so config.WEBHOOK_AUTH=jwt cannot start.",
        "if": {
            "properties": {"jwt": {"properties": {"enabled": {"const": False}}}},
            "required": ["jwt"],
        },
        "then": {
            "properties": {
                "config": {"properties": {"WEBHOOK_AUTH": {"not": {"pattern": "(?i)^jwt$"}}}}
            }
        },
    },
    {
        "description": "jwt.enabled=true mounts keys, so config.WEBHOOK_AUTH=none cannot start.",
        "if": {
            "properties": {"jwt": {"properties": {"enabled": {"const": True}}}},
            "required": ["jwt"],
        },
        "then": {
            "properties": {
                "config": {"properties": {"WEBHOOK_AUTH": {"not": {"pattern": "(?i)^none$"}}}}
            }
        },
    },
]

SCHEMA_COMMENT = (
    f"The config properties and allOf are generated by scripts/generate.py from the settings' "
    f"declarations ({SETTINGS_SOURCE}); the rest is written here."
)


def values_schema(read: ReadFile) -> str:
    loaded = json.loads(read(SCHEMA))
    schema = {"$schema": loaded.pop("$schema"), "$comment": SCHEMA_COMMENT}
    loaded.pop("$comment", None)
    schema.update(loaded)
    schema["properties"]["config"]["properties"] = {s.name: setting_schema(s) for s in SETTINGS}
    schema["allOf"] = CONTRADICTIONS
    return json.dumps(schema, indent=2) + "\n"


# -- values.yaml -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartValue:
    """The chart's value for a setting, where it is not the program's default, and a note."""

    value: str | None = None
    """None: the program's default (an unset default: empty)."""
    note: str = ""


CHART_CONFIG: dict[str, ChartValue] = {
    "NAMESPACE": ChartValue(
        "",
        "Empty: the release's namespace (downward API). The controller must run in the "
        "namespace of the Jibri pods; its Role is created there.",
    ),
    "POD_NAME": ChartValue("", "Empty: the pod's name (downward API)."),
    "JIBRI_BUSY_LABELS": ChartValue(
        note="Labels that take a busy Jibri out of its Deployment's selector; also the selector "
        "of the busy-Jibri PodDisruptionBudget (busyJibriPodDisruptionBudget)."
    ),
    "JIBRI_HEALTH_PORT": ChartValue(
        note="Jibri's external-api-port; also the port the Jibri NetworkPolicy opens."
    ),
    "JIBRI_INTERNAL_API_PORT": ChartValue(
        note="Jibri's internal-api-port (gracefulShutdown on a pool's scale-down; 0: not used); "
        "also a port the Jibri NetworkPolicy opens to the controller."
    ),
    "LEASE_NAME": ChartValue(note="Also the Lease the Role grants get/update/patch on."),
    "LOG_FORMAT": ChartValue(
        "json", "JSON even when the pod has a terminal (auto would then write text)."
    ),
    "WEBHOOK_AUTH": ChartValue(
        "",
        'Empty: "none" when jwt.enabled is false, else unset (verification is on when keys are '
        "set).",
    ),
    "JWT_KEYS_DIR": ChartValue(
        "", "Empty: jwt.mountPath when jwt.enabled (and jwt.jwksKey is empty)."
    ),
    "JWT_JWKS_FILE": ChartValue(
        "", "Empty: jwt.mountPath/jwt.jwksKey when jwt.enabled and jwt.jwksKey is set."
    ),
    "JWT_ISSUER": ChartValue("jibri", "Must equal jwt-info's issuer and audience in jibri.conf."),
    "SHUTDOWN_DRAIN_SECONDS": ChartValue(
        note="terminationGracePeriodSeconds (below) must exceed SHUTDOWN_DRAIN_SECONDS + "
        "SHUTDOWN_TIMEOUT + 2 (the longest shutdown, with an API server that does not answer)."
    ),
    "STUCK_BUSY_SECONDS": ChartValue(
        note="0: no stuck-BUSY detection, and no extra write per recording (see "
        "docs/protocol.md, Stuck BUSY)."
    ),
}
"""The chart's own values and notes (the chart fills the empty ones in itself)."""

VALUES_INTRO = (
    "The controller's settings, as environment variables: every variable the controller reads, "
    "with its default (docs/configuration.md describes each one). An empty string leaves a "
    "variable unset (the program's default applies), except for the few the chart fills in "
    "itself, noted below. values.schema.json checks every value's type, range or choices, "
    "whether a number is written bare or quoted. A value with commas needs them escaped with "
    "--set:",
    "  --set 'config.JIBRI_BUSY_LABELS=app=jibri\\,state=busy'",
    f"This block is generated by scripts/generate.py from the settings' declarations "
    f"({SETTINGS_SOURCE}); the chart's own values and notes are in the script.",
)


def _comment(text: str, indent: str) -> list[str]:
    return textwrap.wrap(
        text,
        width=96,
        initial_indent=f"{indent}# ",
        subsequent_indent=f"{indent}# ",
        break_on_hyphens=False,
        break_long_words=False,
    )


def _scalar(setting: Setting[object], value: str) -> str:
    """A value as values.yaml writes it: numbers and flags bare (the schema checks their range),
    text bare unless YAML would read it as something else."""
    if value == "":
        return '""'
    if setting.read.accepts.kind in (Kind.INTEGER, Kind.NUMBER, Kind.FLAG):
        return value
    return value if yaml.safe_load(value) == value else json.dumps(value)


def config_block() -> list[str]:
    lines = [line for paragraph in VALUES_INTRO for line in _comment(paragraph, "")]
    lines.append("config:")
    for setting in SETTINGS:
        chart = CHART_CONFIG.get(setting.name, ChartValue())
        value = chart.value if chart.value is not None else (setting.default or "")
        if chart.note:
            lines += _comment(chart.note, "  ")
        lines.append(f"  {setting.name}: {_scalar(setting, value)}")
    return lines


def values_yaml(read: ReadFile) -> str:
    lines = read(VALUES).split("\n")
    start = lines.index("config:")
    while start > 0 and lines[start - 1].startswith("#"):
        start -= 1
    end = lines.index("", lines.index("config:"))
    lines[start:end] = config_block()
    text = "\n".join(lines)
    base = runbook_base(read)
    return re.sub(r"(?m)^(  runbookBaseUrl: ).*$", lambda m: m.group(1) + base, text)


# -- docs/configuration.md ---------------------------------------------------------------------


def _bound(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def accepts(setting: Setting[object]) -> str:
    """What a setting accepts, in words."""
    rule = setting.read.accepts
    if rule.kind is Kind.FLAG:
        return "`true` or `false` (also `yes`/`no`, `on`/`off`, `1`/`0`)"
    if rule.kind is Kind.CHOICE:
        choices = [f"`{c}`" for c in rule.choices]
        return ", ".join(choices[:-1]) + " or " + choices[-1]
    if rule.kind is Kind.TEXT:
        return rule.what
    what = "an integer" if rule.kind is Kind.INTEGER else "a number"
    assert rule.minimum is not None
    if rule.maximum is None:
        span = f"{what}, at least {_bound(rule.minimum)}"
    else:
        span = f"{what} from {_bound(rule.minimum)} to {_bound(rule.maximum)}"
    return f"0 (off), or {span}" if rule.or_zero else span


REFERENCE_HEADER = (
    f"<!-- Generated by scripts/generate.py from the settings' declarations ({SETTINGS_SOURCE}): "
    f"edit them there, then run `{COMMAND}`. -->"
)
REFERENCE_INTRO = """\
# Configuration reference

The controller reads these environment variables once, at start-up, and checks them all: a bad
or missing value stops the process with one line naming the variable (exit 2), and every bad
variable is named at once. A blank value means the default. With Helm, each is a key of the
chart's `config` map (`--set config.SWEEP_INTERVAL=30`), and the chart's values schema refuses
at install time what the controller would refuse at start-up; with kustomize, they are the
Deployment's `env`. Kubernetes credentials are found as [credentials.md](credentials.md)
describes.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference(read: ReadFile) -> str:
    lines = [
        REFERENCE_HEADER,
        REFERENCE_INTRO,
        "| Variable | Default | Accepts | Meaning |",
        "|---|---|---|---|",
    ]
    for s in SETTINGS:
        row = [f"`{s.name}`", f"`{s.shown_default}`", _cell(accepts(s)), _cell(s.help)]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Rules across settings", ""]
    lines += [f"- {doc}" for _, doc in rules(Settings)]
    return "\n".join(lines) + "\n"


# -- the chart's copies ------------------------------------------------------------------------


def _copy_header(source: Path, how: str = "") -> str:
    text = f"Generated by scripts/generate.py from {source}{how}: edit that file, then run "
    return "\n".join([*_comment(f"{text}`{COMMAND}`.", ""), "#", ""])


def chart_crd(read: ReadFile) -> str:
    return _copy_header(CRD) + read(CRD)


def chart_alerts(read: ReadFile) -> str:
    header = _copy_header(
        ALERTS,
        f", with the runbook links based at {RUNBOOK_PLACEHOLDER} (templates/prometheusrule.yaml "
        "puts prometheusRule.runbookBaseUrl there)",
    )
    base = f"runbook_url: {runbook_base(read)}#"
    return header + read(ALERTS).replace(base, f"runbook_url: {RUNBOOK_PLACEHOLDER}#")


_ALERT = re.compile(r"^\s*- alert: (\S+)\s*$")
_RUNBOOK = re.compile(r"^(\s*runbook_url: ).*$")


def alerts_with_runbooks(read: ReadFile) -> str:
    """deploy/prometheus/alerts.yaml with each rule's runbook_url pointing at its section of
    docs/operations.md (the anchor is the alert's name in lower case)."""
    base = runbook_base(read)
    lines, alert = read(ALERTS).split("\n"), None
    for i, line in enumerate(lines):
        if found := _ALERT.match(line):
            alert = found.group(1)
        elif (runbook := _RUNBOOK.match(line)) and alert is not None:
            lines[i] = f"{runbook.group(1)}{base}#{alert.lower()}"
    return "\n".join(lines)


# -- all of them -------------------------------------------------------------------------------

# In order: a file made from another generated file (the chart's alerts from the plain ones,
# which get their runbook links first) comes after it.
GENERATED: list[tuple[Path, Callable[[ReadFile], str]]] = [
    (SCHEMA, values_schema),
    (VALUES, values_yaml),
    (REFERENCE, reference),
    (ALERTS, alerts_with_runbooks),
    (CHART_ALERTS, chart_alerts),
    (CHART_CRD, chart_crd),
]


def _current(root: Path, path: Path) -> str:
    return (root / path).read_text() if (root / path).exists() else ""


def outputs(root: Path) -> dict[Path, str]:
    """Every generated file's wanted text, from the sources under ``root``."""
    made: dict[Path, str] = {}

    def read(path: Path) -> str:
        return made[path] if path in made else (root / path).read_text()

    for path, make in GENERATED:
        made[path] = make(read)
    return made


def stale(root: Path) -> list[Path]:
    """The generated files under ``root`` that are not what they would be generated as."""
    return [path for path, text in outputs(root).items() if _current(root, path) != text]


def generate(root: Path) -> list[Path]:
    """Rewrite every generated file under ``root`` that is out of date; returns them."""
    changed = stale(root)
    wanted = outputs(root)
    for path in changed:
        (root / path).write_text(wanted[path])
    return changed


def main(argv: list[str]) -> int:
    if argv[1:] == ["--check"]:
        out_of_date = stale(REPO)
        for path in out_of_date:
            print(f"{path} is out of date: run {COMMAND}", file=sys.stderr)
        return 1 if out_of_date else 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    for path in generate(REPO):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
