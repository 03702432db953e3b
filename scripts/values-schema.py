#!/usr/bin/env python3
"""Write the `config` part of the chart's values.schema.json from the settings table.

    .venv/bin/python scripts/values-schema.py           # rewrite the schema
    .venv/bin/python scripts/values-schema.py --check   # exit 1 if it is out of date

Each setting's kind, bounds and choices come from `VALUE_RULES` next to `SETTINGS` in
`jibri_pod_controller.core.config`,
so the schema and the program cannot drift (tests/static/test_values_schema.py runs --check).
Numbers are range-checked whether they are written as numbers or as text ("0.5" in quotes, or a
decimal from --set, which Helm passes as a string).
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from jibri_pod_controller.core.config import SETTINGS
from jibri_pod_controller.core.variables import Accepts as ValueRule
from jibri_pod_controller.core.variables import Kind, Setting

CHART = Path(__file__).resolve().parents[1] / "charts" / "jibri-pod-controller"
SCHEMA = CHART / "values.schema.json"

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


def _text(rule: ValueRule, form: str) -> dict[str, Any]:
    patterns = [form]
    if rule.minimum is not None:
        patterns.append(at_least(rule.minimum))
    if rule.maximum is not None:
        patterns.append(at_most(rule.maximum))
    return {"type": "string", "allOf": [{"pattern": p} for p in patterns]}


def _bounds(rule: ValueRule, schema: dict[str, Any]) -> dict[str, Any]:
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


def generate(current: dict[str, Any]) -> dict[str, Any]:
    schema = json.loads(json.dumps(current))
    schema["properties"]["config"]["properties"] = {s.name: setting_schema(s) for s in SETTINGS}
    schema["allOf"] = CONTRADICTIONS
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2) + "\n"


def main(argv: list[str]) -> int:
    current = SCHEMA.read_text()
    wanted = render(generate(json.loads(current)))
    if argv[1:] == ["--check"]:
        if wanted != current:
            print(f"{SCHEMA} is out of date: run scripts/values-schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
