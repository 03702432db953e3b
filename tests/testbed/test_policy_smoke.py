"""The policy benchmark itself: its smoke run must report every figure for every policy.

No goal is asserted (the benchmark reports them); what is asserted is that each policy was
played on each scenario, each figure of each period is a number, the forecast's goals were
judged on the second week of a fortnight (48 times faster: its days as short as the forecast's
own), the plot was written and the docs left alone.
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
    "idle_pod_hours",
    "busy_pod_hours",
    "scale_writes",
    "writes_per_minute",
)
KINDS = {"static", "hpa", "schedule", "demand", "forecast"}


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
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [results] = tmp_path.glob("policy-*.json")
    doc = json.loads(results.read_text())
    assert doc["mode"] == "smoke"
    fortnight, day = doc["scenarios"]
    assert fortnight["periods"] == ["week 1", "week 2"]
    assert fortnight["judged"] == "week 2"
    assert day["periods"] == ["day"]
    for scenario in doc["scenarios"]:
        policies = scenario["policies"]
        assert {p["kind"] for p in policies.values()} == KINDS, scenario["name"]
        recordings = 0
        for period in scenario["periods"]:
            counts = {p["periods"][period]["recordings"] for p in policies.values()}
            assert len(counts) == 1, (scenario["name"], period, counts)  # the same demand
            recordings += counts.pop()
        assert recordings == scenario["recordings"] > 0
        for name, policy in policies.items():
            for period, figures in policy["periods"].items():
                for figure in FIGURES:
                    value = figures[figure]
                    assert isinstance(value, int | float), (name, period, figure, value)
                    assert not isinstance(value, bool), (name, period, figure, value)
                    assert math.isfinite(value), (name, period, figure, value)
                    assert value >= 0, (name, period, figure, value)
                assert figures["shortfalls"] <= figures["recordings"], (name, period)
        for period, best in scenario["best_static"].items():
            assert policies[f"best static for {period}"]["name"] == best
    [row] = fortnight["goals"]
    assert fortnight["policies"][row["policy"]]["kind"] == "forecast"
    assert row["period"] == "week 2"
    assert isinstance(row["met"], bool)
    assert set(row["checks"]) >= {"writes", "HPA busy 60%"}
    assert list(tmp_path.glob("policy-*.png")), "no plot written"
    assert docs.read_text() == "# untouched\n", "a smoke run must not rewrite the docs"
    assert "| Policy |" in proc.stdout
