"""The pool demo runs end to end, keeps the budget and every recording, and draws its plot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cluster import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(330)]


def test_pool_demo_keeps_the_budget_and_every_recording(tmp_path: Path) -> None:
    png = tmp_path / "pool.png"
    result = subprocess.run(
        [sys.executable, "-m", "testbed.pool_demo", "--seed", "2", "--out", str(png)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    match = re.search(
        r"scale writes (\d+); peak busy\+replicas (\d+) \(maxTotal 8\).*recordings lost (\d+)",
        output,
    )
    assert match is not None, output
    writes, peak, lost = (int(g) for g in match.groups())
    assert writes >= 3, output  # up to minSpare, up for the window, down for the budget at least
    assert peak <= 8 + 1, output
    assert lost == 0, output
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
