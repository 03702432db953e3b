#!/usr/bin/env bash
# The policy benchmark: spare-pool policies (static counts, an HPA-style autoscaler, the
# JibriPool's min/max/schedule, demand-based sizing and the forecast from the pool's own
# history) side by side on simulated weeks. A pure simulation that runs the controller's own
# pool decision and forecast; no cluster.
#
#   scripts/policy-bench.sh --jobs 2 --stress  # three meeting fortnights, a stressed one, the
#                                              # synthetic days (~25 min on two cores); rewrites
#                                              # the policy section of docs/performance.md and
#                                              # docs/policy.png
#   scripts/policy-bench.sh --smoke            # a fortnight 48x faster, half a day (CI)
#   scripts/policy-bench.sh --seeds 7,8        # other fortnights (docs are rewritten for any)
#   scripts/policy-bench.sh --variants --policies 'forecast|prototype' --no-docs
#                                              # the forecast's alternatives
#   scripts/policy-bench.sh --replay days.csv  # your own recordings (start,end per line)
#
# Every argument goes to `python -m bench.policy` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m bench.policy "$@"
