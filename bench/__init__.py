"""Benchmarks of the controller on a real local control plane with simulated Jibris.

Run them with ``scripts/bench.sh`` (or ``python -m bench.run --help``); docs/performance.md
has the latest figures and what limits each one.
"""
