#!/usr/bin/env bash
# A seeded chaos run on the local control plane, checked against the invariants I1-I9.
#   scripts/chaos.sh --seed 7              # the full run (10-15 minutes)
#   scripts/chaos.sh --seed 7 --size ci    # about 2 minutes
#   scripts/chaos.sh --seed 7 --write-docs # also record it in docs/reliability.{json,md}
# Exits 1 on any violation, printing the seed and the events around each.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh >/dev/null
scripts/build-control-plane.sh >/dev/null
exec .venv/bin/python -m testbed.chaos "$@"
