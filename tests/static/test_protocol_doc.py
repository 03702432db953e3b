"""docs/protocol.md names the test behind each Jibri behaviour: every one it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "protocol.md").read_text()
NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[[^\]`]*\])?`")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_named_test_exists() -> None:
    named = NODE.findall(PAGE)
    assert len(named) >= 15
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not (ROOT / path).is_file() or name not in _test_names(ROOT / path)
    ]
    assert missing == []


def test_every_simulator_switch_is_named() -> None:
    from testbed.simjibri import Fidelity

    for switch in Fidelity.__dataclass_fields__:
        assert f"`{switch}`" in PAGE
