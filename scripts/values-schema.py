#!/usr/bin/env python3
"""Write the `config` part of the chart's values.schema.json from the settings table.

    .venv/bin/python scripts/values-schema.py           # rewrite the schema
    .venv/bin/python scripts/values-schema.py --check   # exit 1 if it is out of date

Each setting's kind, bounds and choices come from `VALUE_RULES` next to `SETTINGS` in
`jibri_pod_controller.core.config`,
so the schema and the program cannot drift (tests/static/test_values_schema.py runs --check).
Numbers written as numbers are range-checked here; a number in quotes is checked for its form
only (the controller checks its range at start-up), which is why values.yaml writes them bare.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from jibri_pod_controller.core.config import SETTINGS, Kind, Setting, ValueRule, value_rule

CHART = Path(__file__).resolve().parents[1] / "charts" / "jibri-pod-controller"
SCHEMA = CHART / "values.schema.json"

# An empty string leaves the variable unset (the program's default applies).
_INTEGER_TEXT = r"^([0-9]+)?$"
_NUMBER_TEXT = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)?$"
_FLAG_TEXT = r"(?i)^(true|false|yes|no|on|off|1|0)?$"


def _bounds(rule: ValueRule, schema: dict[str, Any]) -> dict[str, Any]:
    if rule.minimum is not None:
        schema["minimum"] = rule.minimum
    if rule.maximum is not None:
        schema["maximum"] = rule.maximum
    return schema


def setting_schema(setting: Setting) -> dict[str, Any]:
    rule = value_rule(setting)
    schema: dict[str, Any] = {"description": setting.help}
    if rule.kind is Kind.INTEGER:
        schema["anyOf"] = [
            _bounds(rule, {"type": "integer"}),
            {"type": "string", "pattern": _INTEGER_TEXT},
        ]
    elif rule.kind is Kind.NUMBER:
        schema["anyOf"] = [
            _bounds(rule, {"type": "number"}),
            {"type": "string", "pattern": _NUMBER_TEXT},
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
