"""The benchmark harness itself: its smoke run must produce every figure, with numbers.

Goals are not asserted: these are benchmarks on a shared machine, not timed tests. What is
asserted is that each figure was measured and written to the JSON results, for this controller
and for an implementation that has only the original tool's contract (its variables, readiness
on GET /, no /metrics, no JSON log lines: `bench.contract_only`), with figure 4's recording
lasting two minutes, so that it ends while the other figures run (as in a full run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cluster import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(720)]

FIGURES = {"1", "2", "3", "4", "5", "6", "7"}


def test_smoke_run_measures_every_figure(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--smoke",
            "--recording-minutes",
            "2",
            "--controller-command",
            "python -m jibri_pod_controller",
            "--controller-command",
            "python -m bench.contract_only",
            "--controller-label",
            "jibri-pod-controller",
            "--controller-label",
            "contract-only",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=660,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [results] = tmp_path.glob("*.json")
    doc = json.loads(results.read_text())
    assert doc["mode"] == "smoke"
    assert set(doc["figures"]) == FIGURES
    labels = [impl["label"] for impl in doc["implementations"]]
    assert labels == ["jibri-pod-controller", "contract-only"]
    assert doc["figures"]["4"]["results"]["contract-only"]["details"]["recording_s"] >= 120
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
