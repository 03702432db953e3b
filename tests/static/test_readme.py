"""The README's promises that a command can check."""

from __future__ import annotations

import re
from pathlib import Path

from jibri_pod_controller.core.config import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_settings_table_matches_the_code() -> None:
    block = README.split("<!-- settings-table:start")[1].split("<!-- settings-table:end -->")[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \| `([^`]*)` \| (.*) \|$", block, re.MULTILINE)
    expected = [(s.name, s.shown_default, s.help) for s in SETTINGS]
    assert rows == expected


def test_starts_with_the_two_commands() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["scripts/demo.sh", "scripts/test.sh"]
    for command in commands:
        assert (ROOT / command).is_file()


def test_ci_runs_the_readme_test_command() -> None:
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
