"""The order of the suite when it runs on several workers (`scripts/test.sh` runs two).

Most of the suite's time is spent waiting on the wall clock (recordings that last, windows that
open on the minute, a benchmark's two-minute recording), not on the CPU. Two workers that take
whole files (`--dist loadfile`) overlap those waits; to end together they take the longest
files first, in the order below (measured), and the others after them in the usual order.
"""

from __future__ import annotations

import pytest

LONGEST_FIRST = (
    "tests/e2e/test_pool_forecast.py",
    "tests/testbed/test_bench_smoke.py",
    "tests/testbed/test_pool_demo.py",
    "tests/e2e/test_pool_demand.py",
    "tests/e2e/test_chaos.py",
    "tests/e2e/test_real_jibri.py",
    "tests/e2e/test_controller.py",
    "tests/e2e/test_packaging.py",
    "tests/e2e/test_helm.py",
    "tests/testbed/test_demo.py",
    "tests/e2e/test_lifecycle.py",
    "tests/e2e/test_pools.py",
    "tests/e2e/test_image.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):
        return  # one process: the usual order (fast layers first)
    rank = {path: n for n, path in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> int:
        return rank.get(item.nodeid.split("::")[0], len(rank))

    items.sort(key=key)  # stable: within a file, and among the rest, the order stays
