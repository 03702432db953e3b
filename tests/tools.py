"""helm and kubectl for the tests that run them, built once and cached.

kubectl comes from testbed.tools (scripts/build-kubectl.sh); helm is built with the control
plane (scripts/build-control-plane.sh prints its cache directory on its last line). Both return
at once when the binary exists.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from testbed.controlplane import find_binaries
from testbed.tools import REPO
from testbed.tools import kubectl as _kubectl

__all__ = ["REPO", "helm", "kubectl"]


@cache
def kubectl() -> Path:
    binary = _kubectl()
    assert binary.is_file(), binary
    return binary


@cache
def helm() -> Path:
    binary = find_binaries() / "helm"
    assert binary.is_file(), binary
    return binary
