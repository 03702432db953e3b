"""helm and kubectl for the tests that run them, built once and cached; scripts/generate.py as
a module.

kubectl comes from testbed.tools (scripts/build-kubectl.sh); helm is built with the control
plane (scripts/build-control-plane.sh prints its cache directory on its last line). Both return
at once when the binary exists.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

from testbed.controlplane import find_binaries
from testbed.tools import REPO
from testbed.tools import kubectl as _kubectl

__all__ = ["REPO", "generator", "helm", "kubectl"]


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


@cache
def generator() -> ModuleType:
    """scripts/generate.py, imported (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("generate", REPO / "scripts" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module
