#!/usr/bin/env bash
# The policy benchmark: spare-pool policies (static counts, an HPA-style autoscaler, the
# JibriPool's min/max/schedule and demand-based sizing) side by side on simulated days. A pure
# simulation that runs the controller's own pool decision; no cluster, well under a minute.
#
#   scripts/policy-bench.sh                  # three synthetic days; rewrites the policy section
#                                            # of docs/performance.md and docs/policy.png
#   scripts/policy-bench.sh --smoke          # half a day, a few policies (CI)
#   scripts/policy-bench.sh --seeds 7,8      # other days (docs are rewritten for any seeds)
#   scripts/policy-bench.sh --replay day.csv # your own recordings (start,end per line)
#
# Every argument goes to `python -m bench.policy` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m bench.policy "$@"
