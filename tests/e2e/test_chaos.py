"""The chaos run in its CI size: a real control plane, three replicas, the fault proxy, faults of
every kind while recordings come and go, then the checker. Fixed seeds; zero violations."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.chaos import API_KINDS, CONTROLLER_KINDS, SIZES, run
from testbed.chaoscheck import events_around

pytestmark = pytest.mark.e2e

SEEDS = (1,)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", SEEDS)
async def test_nothing_is_lost_under_faults(seed: int, tmp_path: Path) -> None:
    report, history, result = await run(seed, SIZES["ci"], tmp_path / f"seed-{seed}", say=print)
    details = [
        f"[{v.invariant}] {v.pod}: {v.message}\n    "
        + "\n    ".join(events_around(history, t=v.t, pod=v.pod)[-20:])
        for v in report.violations
    ]
    assert report.ok, f"seed {seed}:\n" + "\n".join(details)
    # Every fault kind of both streams happened, while recordings ran.
    assert set(API_KINDS) | set(CONTROLLER_KINDS) <= set(result["faults"])
    assert result["recordings"] >= 40
    assert result["forged_webhooks"] > 0
