#!/usr/bin/env bash
# Benchmarks on a real local control plane with simulated Jibris: prints a table, writes raw
# results (JSON) and a plot to bench/results/, and after a complete full run rewrites the
# generated part of docs/performance.md.
#
#   scripts/bench.sh                 # every figure, full size (about 20 minutes)
#   scripts/bench.sh --smoke         # a tiny version of every figure (about a minute)
#   scripts/bench.sh --only 1,6      # some figures
#   scripts/bench.sh --controller-command "/path/to/other-controller" --controller-label other
#
# Every argument goes to `python -m bench.run` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/build-control-plane.sh >/dev/null
# Five thousand simulated Jibris each hold a listening socket in the fake kubelet's process.
hard=$(ulimit -Hn)
if [[ "$hard" == unlimited || "$hard" -ge 20000 ]]; then
  ulimit -n 20000
else
  ulimit -n "$hard"
  echo "bench: open files limited to $hard; the 5,000-pod sweep may fail" >&2
fi
exec .venv/bin/python -m bench.run "$@"
