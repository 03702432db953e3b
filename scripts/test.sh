#!/usr/bin/env bash
# The whole test suite: lint, types, architecture contract, then every test (unit, component,
# static checks of the deployment files, and end-to-end tests on a real local control plane).
#   scripts/test.sh                 # everything
#   scripts/test.sh tests/unit      # extra arguments go to pytest
#   scripts/test.sh -n 0            # in one process
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
echo "== lint, format, types, import contracts"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache >/dev/null
echo "== control plane, helm, kubectl, kubeconform and its schemas, the image, the real Jibri (built once, then cached)"
scripts/build-control-plane.sh >/dev/null
scripts/build-kubectl.sh >/dev/null
scripts/build-tools.sh >/dev/null
scripts/build-image.sh >/dev/null
scripts/build-jibri.sh >/dev/null
echo "== tests (two workers, each taking whole files, the longest first: tests/conftest.py)"
exec .venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@"
