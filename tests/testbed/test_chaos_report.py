"""The chaos run's figures as docs/reliability.md shows them."""

from __future__ import annotations

from typing import Any

from testbed.chaos import render_table


def result(seed: int, faults: dict[str, int], i1: int = 0) -> dict[str, Any]:
    return {
        "seed": seed,
        "size": "full",
        "date": "2026-12-01 22:00 UTC",
        "seconds": 700,
        "machine": {
            "cpu": "CPU",
            "cores": 2,
            "memory": "8 GiB",
            "kernel": "6.1",
            "python": "3.11",
            "load_start": 3.0,
            "load_end": 5.25,
        },
        "recordings": 520,
        "recordings_turned_away": 1,
        "forged_webhooks": 600,
        "faults": faults,
        "violations": {"I1": i1, "I2": 0},
        "reaped_live_recordings": [],
        "worst_seconds": {"busy_to_detach": 1.5},
        "api_writes_per_recording": 4.0,
        "pod_writes_per_recording": 2.0,
        "leaked_pods": 0,
    }


def test_one_column_per_run_and_one_row_per_figure() -> None:
    table = render_table(
        [result(1, {"etcd-restart": 2}, i1=3), result(2, {"proxy-reset": 1})]
    ).splitlines()
    assert table[0] == "|  | seed 1 (full) | seed 2 (full) |"
    assert "| fault: etcd-restart | 2 | 0 |" in table
    assert "| fault: proxy-reset | 0 | 1 |" in table
    assert "| violations I1 | 3 | 0 |" in table
    assert "| worst busy to detach (s) | 1.5 | 1.5 |" in table
    assert "| load average (start → end) | 3.0 → 5.2 | 3.0 → 5.2 |" in table
    assert all(line.count("|") == 4 for line in table)
