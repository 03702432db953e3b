#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with the package and its
# test tools. Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "bootstrap: Python >= 3.11 is required (found $("$PYTHON" --version 2>&1))" >&2; exit 1; }
stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -f "$stamp" ]]; then
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
