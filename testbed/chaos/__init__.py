"""A seeded chaos run on the real control plane, then a check of "nothing lost" (I1-I7).

In the spirit of Jepsen (a recorded history, then a checker) and of etcd's functional tester
(faults injected while a workload runs). One process runs, on one event loop: the fake kubelet
and every simulated Jibri (whose ground truth it records), the fault proxy (`testbed.faultproxy`)
between the controllers and kube-apiserver, a seeded workload of recordings over a compressed
day, two fault streams, a steady attacker and a prober. The local control plane and three
controller replicas (each its own process, the restricted ServiceAccount identity, JWT on) run
beside it. The Jibris are three Deployments: one whose replicas are set by hand (its spares
are enough for lists over 128 KB), and two sized by JibriPools (`POOLS`: schedule windows that
open and close every other minute, demand sizing, budgets), so that pools scale up and down
many times during the faults. Every Jibri pod has deploy/jibri's preStop hook (Jibri's graceful
shutdown, then a wait until it has exited) and Jibri's own behaviour after a graceful shutdown
(no EXPIRED).

Faults, each logged with its start and end:

- API path (one stream): proxy latency, 429 with Retry-After, 500, 503, connection resets, a
  black hole, a total outage; kube-apiserver SIGKILLed and restarted on its port; etcd
  SIGKILLed and restarted on its data directory.
- Controllers (a second stream, overlapping the first): SIGKILL and SIGTERM of a replica (the
  Lease holder more often), restarted after a while; a replica SIGSTOPped for longer than the
  lease, then SIGCONT.
- Jibris (a fate per recording): BUSY or EXPIRED webhooks lost, webhooks duplicated or
  reordered (a late IDLE after BUSY, a BUSY after EXPIRED), a crash mid-recording, health
  answers black-holed, hanging, garbage or huge, and a Jibri whose periodic resend died (as a
  real Jibri's does after one tick with its subscriber unreachable) and whose EXPIRED was lost,
  so that only the sweeper can find it finished. A fate loses exactly the webhooks it names:
  a Jibri found silent at the end with no fate asking for it is a failure of the testbed
  (``testbed`` in the report), not a proof.
- The attacker, at a steady rate: forged EXPIRED/BUSY webhooks from the wrong source, with a
  token signed by another key, from one Jibri naming another, and for a pod that is no Jibri.
- Pools: recordings that start silently (their BUSY webhooks lost) on a pool's spares a moment
  before each of its scale-downs, bursts that take a pool to its budget, and an operator who
  rolls a pool's Deployment out and deletes pods that are recording (``kubectl delete pod``).

Every random choice comes from the seed (each recording and each stream has its own generator
derived from it, so concurrency does not reorder the draws). Jibris post to all three replicas
(Jibri accepts a list of subscribers), and the workload starts recordings on spares only (idle
labels, Jibri IDLE), as a pool would hand them out.

    scripts/chaos.sh --seed 7            # the full run (10-15 minutes)
    scripts/chaos.sh --seed 7 --size ci  # about 2 minutes

Writes ``out/chaos/seed-N/`` (history, report, every log) and, with ``--write-docs``, records
the run in docs/reliability.json and regenerates the table in docs/reliability.md. Exits 1 on
any violation, printing the seed and the events around each.
"""

from testbed.chaos.cli import main
from testbed.chaos.plan import API_KINDS, CONTROLLER_KINDS, SIZES, Size
from testbed.chaos.report import render_table
from testbed.chaos.runner import run

__all__ = ["API_KINDS", "CONTROLLER_KINDS", "SIZES", "Size", "main", "render_table", "run"]
