"""The README's promises that a command can check."""

from __future__ import annotations

from pathlib import Path

from jibri_pod_controller.core.config import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_settings_are_referenced_not_repeated() -> None:
    # The table lives in docs/configuration.md, generated from the settings' declarations.
    assert "](docs/configuration.md)" in README
    for setting in SETTINGS:
        assert f"| `{setting.name}` |" not in README, setting.name


def test_starts_with_the_two_commands() -> None:
    # The first block of the page, before any section.
    assert README.index("```sh") < README.index("\n## ")
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["scripts/demo.sh", "scripts/test.sh"]
    for command in commands:
        assert (ROOT / command).is_file()


def test_ci_runs_the_readme_test_command() -> None:
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_fits_on_a_few_screens() -> None:
    # The design, the pools, security and development have their own pages (docs/, CONTRIBUTING.md).
    assert len(README.splitlines()) < 200
