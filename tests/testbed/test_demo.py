"""The demo (the README's first command) runs end to end, draws its timeline and adds up."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.cluster import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _count(pattern: str, text: str) -> tuple[int, ...]:
    match = re.search(pattern, text, re.MULTILINE)
    assert match is not None, f"no line matching {pattern!r} in:\n{text}"
    return tuple(int(g) for g in match.groups())


def test_fast_demo_runs_and_adds_up(tmp_path: Path) -> None:
    png = tmp_path / "timeline.png"
    started = time.monotonic()
    # A process of its own, as scripts/demo.sh runs it: signals, the event loop and the
    # control plane's clean-up at exit stay out of the test process.
    result = subprocess.run(
        [sys.executable, "-m", "testbed.demo", "--fast", "--seed", "11", "--out", str(png)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    print(output)  # shown when an assertion below fails
    print(f"demo --fast took {elapsed:.0f} s")
    assert result.returncode == 0

    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 20_000, len(data)

    assert "environment from deploy/deployment.yaml" in output
    started_, finished, lost, crashed, away = _count(
        r"^  recordings\s+(\d+) started, (\d+) finished \((\d+) with its EXPIRED webhook lost\), "
        r"(\d+) crashed, (\d+) turned away",
        output,
    )
    (detaches,) = _count(r"^  detaches\s+(\d+):", output)
    (deletes,) = _count(r"^  deletes\s+(\d+):", output)
    (lowest, spare_at_end, busy_at_end) = _count(
        r"^  spare pods\s+lowest (\d+) after .*, (\d+) at the end with (\d+) busy", output
    )
    (writes,) = _count(r"^  API writes\s+(\d+) by", output)

    assert started_ >= 5
    assert started_ == finished + crashed
    assert (lost, crashed, away) == (1, 1, 0)
    assert detaches >= started_
    # Every pod that held a recording is gone at the end, each deleted once.
    assert deletes == started_
    # The lost EXPIRED is caught by the sweep (a webhook delete that failed under load would
    # be too), and the crashed Jibri's pod is reaped by the restarted-while-busy rule.
    (swept,) = _count(r"^  deletes .*?(\d+) expired-reported via sweep", output)
    (reaped,) = _count(r"^  deletes .*?(\d+) restarted-while-busy via sweep", output)
    assert swept >= 1
    assert reaped == 1
    assert (spare_at_end, busy_at_end) == (3, 0)
    assert 0 <= lowest <= 3
    # At least one patch and one delete per recording, plus the Lease.
    assert writes >= detaches + deletes
    assert f"timeline      {png.resolve()}" in output
    assert "result        OK" in output
