"""The edges: one module per thing outside the process.

`kube` speaks to the Kubernetes API, `probing` to Jibri's health API, `tokens` reads the key
files and verifies webhook tokens, `metrics` and `logs` are what Prometheus and stdout see.
They translate at the edge (raw JSON in, frozen `core` values out; named errors) and decide
nothing.
"""
