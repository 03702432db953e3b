#!/usr/bin/env bash
# The demo: a local control plane, the controller deployed from deploy/ (two replicas), and a
# Deployment of simulated Jibris through a scripted run of recordings, a lost webhook and a
# crash. Prints what happens as it happens, then a summary; draws out/demo-timeline.png.
#
#   scripts/demo.sh                  # a 90 s scenario, about 100 s in all
#   scripts/demo.sh --fast           # a 25 s scenario, about 35 s in all
#   scripts/demo.sh --seed 3 --duration 120 --out /tmp/timeline.png
#   scripts/demo.sh --real-jibri     # real Jibris built from source; 150 s, about 4 min in all
#
# Exits non-zero if an invariant was violated (see testbed/demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== virtual environment (.venv)"
scripts/bootstrap.sh
echo "== control plane binaries (built once, then cached; the first build takes a while)"
scripts/build-control-plane.sh >/dev/null
if [[ " $* " == *" --real-jibri "* ]]; then
  echo "== the real Jibri (built once, then cached; the first build takes about 2 minutes)"
  scripts/build-jibri.sh >/dev/null
fi
echo "== demo"
exec .venv/bin/python -m testbed.demo "$@"
