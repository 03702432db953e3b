"""The command-line tools some tests run: helm and kubectl, built once and cached.

Both are built from the Go module proxy by scripts/ (helm with the control plane, kubectl by
scripts/build-kubectl.sh, at the control plane's Kubernetes version) and cached outside the
repository; the scripts print the cached path on their last line and return at once when it
exists.
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _built(script: str) -> Path:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / script)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/{script} failed:\n{result.stderr[-3000:]}")
    return Path([line for line in result.stdout.splitlines() if line.strip()][-1].strip())


@cache
def kubectl() -> Path:
    binary = _built("build-kubectl.sh")
    assert binary.is_file(), binary
    return binary


@cache
def helm() -> Path:
    binary = _built("build-control-plane.sh") / "helm"
    assert binary.is_file(), binary
    return binary
