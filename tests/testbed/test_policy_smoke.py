"""The policy benchmark itself: its smoke run must report every figure for every policy.

No goal is asserted (the benchmark reports them); what is asserted is that each policy was
simulated and each figure is a number, and that the plot was written and the docs left alone.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from testbed.cluster import REPO

FIGURES = (
    "recordings",
    "shortfalls",
    "shortfall_percent",
    "shortfalls_in_bursts",
    "idle_pod_hours",
    "busy_pod_hours",
    "peak_pods",
    "scale_writes",
    "zero_spare_seconds",
)
KINDS = {"static", "hpa", "schedule", "demand"}


def test_smoke_run_reports_every_policy(tmp_path: Path) -> None:
    docs = tmp_path / "performance.md"
    docs.write_text("# untouched\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.policy",
            "--smoke",
            "--out",
            str(tmp_path),
            "--docs",
            str(docs),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [results] = tmp_path.glob("policy-*.json")
    doc = json.loads(results.read_text())
    assert doc["mode"] == "smoke"
    policies = doc["policies"]
    assert {p["kind"] for p in policies.values()} == KINDS
    for name, policy in policies.items():
        for figure in FIGURES:
            value = policy[figure]
            assert isinstance(value, int | float), (name, figure, value)
            assert not isinstance(value, bool), (name, figure, value)
            assert math.isfinite(value), (name, figure, value)
            assert value >= 0, (name, figure, value)
        assert policy["recordings"] == doc["recordings"] > 0, name
        assert policy["shortfalls"] <= policy["recordings"], name
    assert doc["best_static"] in policies
    for row in doc["goals"]:
        assert policies[row["policy"]]["kind"] == "demand"
        assert isinstance(row["static"]["met"], bool)
        assert row["hpa"], row
    assert list(tmp_path.glob("policy-*.png")), "no plot written"
    assert docs.read_text() == "# untouched\n", "a smoke run must not rewrite the docs"
    assert "| Policy | Shortfalls |" in proc.stdout
