"""The benchmark harness itself: its smoke run must produce every figure, with numbers.

Goals are not asserted: these are benchmarks on a shared machine, not timed tests. What is
asserted is that each figure was measured and written to the JSON results.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cluster import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

FIGURES = {"1", "2", "3", "4", "5", "6"}


def test_smoke_run_measures_every_figure(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [results] = tmp_path.glob("*.json")
    doc = json.loads(results.read_text())
    assert doc["mode"] == "smoke"
    assert set(doc["figures"]) == FIGURES
    labels = [impl["label"] for impl in doc["implementations"]]
    for number, figure in doc["figures"].items():
        for label in labels:
            result = figure["results"][label]
            assert result["error"] is None, (number, result["error"])
            goals = [row for row in result["rows"] if row["goal"] is not None]
            assert goals, f"figure {number} has no row with a goal"
            for row in result["rows"]:
                value = row["value"]
                assert isinstance(value, int | float), (number, row)
                assert not isinstance(value, bool), (number, row)
                assert row["pass"] in (True, False, None), (number, row)
    assert list(tmp_path.glob("*.png")), "no plot written"
    assert "Detach latency under a burst" in proc.stdout
