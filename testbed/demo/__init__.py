"""The demo: the controller, deployed from deploy/, keeping spare Jibris through a scripted day.

It starts a local control plane and the fake kubelet, applies deploy/'s ServiceAccount and RBAC
in the namespace ``jibri-demo``, runs two controller replicas as processes with the container
environment of deploy/deployment.yaml, and deploys simulated Jibris with three spares. Then
recordings arrive on random idle Jibris and finish after random durations; one Jibri's EXPIRED
webhook is lost (the sweeper must catch it) and one busy Jibri crashes (its pod is reaped by the
restarted-while-busy rule). The run is printed as it happens, drawn as a timeline PNG, and
summarized. It exits non-zero if an invariant was violated: a pod deleted while its recording
was live, a pod touched that should not have been, or spares that never came back.

    scripts/demo.sh                   # a 90 s scenario (about 100 s in all), out/demo-timeline.png
    scripts/demo.sh --fast --seed 3   # a 25 s scenario (about 35 s in all)
    scripts/demo.sh --real-jibri      # real Jibris built from source (testbed/realjibri.py)

With ``--real-jibri`` the spares are deploy/jibri/'s pods run as real Jibris, each in a network
namespace of its own, recording a fake meeting in headless Chromium: fewer and longer
recordings, no crash (the fake kubelet does not restart a real Jibri's container), and the lost
EXPIRED is lost for real (the pod's network drops its packets to the controller).
"""

from testbed.demo.cli import main, parse_args
from testbed.demo.plan import REAL_EVERY, Fate, make_plan

__all__ = ["REAL_EVERY", "Fate", "main", "make_plan", "parse_args"]
