"""How often kube-apiserver sends a BOOKMARK on a quiet watch, measured on the local control plane.

The controller takes a watch that has sent nothing at all for `kube.watch_silence` for a dead
connection; that bound must stay above the longest silence of a live watch. This starts the
local control plane (scripts/build-control-plane.sh's binaries), creates an empty namespace, and
keeps watches open in it (``allowWatchBookmarks=true``, one per ``timeoutSeconds`` asked, each
re-opened from its last resourceVersion when the server ends it, as the pod cache does), for
``--minutes``; then prints every silence seen: from the watch's start to its first bookmark,
between bookmarks, and from the last one to the server's end of the watch.

    .venv/bin/python -m bench.watch_bookmarks --minutes 6 --timeouts 300,60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field

from jibri_pod_controller.adapters import credentials
from jibri_pod_controller.adapters.kube import ApiClient, KubeCluster
from testbed.controlplane import ControlPlane

NAMESPACE = "bookmarks"


@dataclass
class Watched:
    timeout_seconds: int
    silences: list[tuple[str, float]] = field(default_factory=list)
    """(what ended the silence: "bookmark", "end" or an event type, seconds)."""
    watches: int = 0


async def keep_watching(cluster: KubeCluster, watched: Watched, until: float) -> None:
    listed = await cluster.request_json("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")
    version = str(listed["metadata"]["resourceVersion"])
    while time.monotonic() < until:
        watched.watches += 1
        last = time.monotonic()
        async for event in cluster.watch_json(
            f"/api/v1/namespaces/{NAMESPACE}/pods",
            query={"resourceVersion": version, "labelSelector": "app=jibri"},
            timeout_seconds=watched.timeout_seconds,
        ):
            now = time.monotonic()
            kind = "bookmark" if event.kind == "BOOKMARK" else event.kind
            watched.silences.append((kind, now - last))
            last = now
            version = str(event.raw.get("metadata", {}).get("resourceVersion") or version)
            if now >= until:
                return
        watched.silences.append(("end", time.monotonic() - last))


async def measure(plane: ControlPlane, timeouts: list[int], minutes: float) -> list[Watched]:
    endpoint = await credentials.load(str(plane.admin_kubeconfig), {})
    # A watch here may be silent for as long as the server lets it: no silence bound.
    cluster = KubeCluster(ApiClient(endpoint), namespace=NAMESPACE, watch_silence=3600)
    try:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        await cluster.request_json("POST", "/api/v1/namespaces", body=body)
        until = time.monotonic() + minutes * 60
        watched = [Watched(timeout_seconds=t) for t in timeouts]
        await asyncio.gather(*(keep_watching(cluster, w, until) for w in watched))
        return watched
    finally:
        await cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--timeouts", default="300,60", help="timeoutSeconds to watch with")
    args = parser.parse_args()
    timeouts = [int(t) for t in args.timeouts.split(",")]
    plane = ControlPlane.start()
    try:
        results = asyncio.run(measure(plane, timeouts, args.minutes))
    finally:
        plane.stop()
    for watched in results:
        gaps = [seconds for _, seconds in watched.silences]
        print(
            json.dumps(
                {
                    "timeoutSeconds": watched.timeout_seconds,
                    "watches": watched.watches,
                    "silences": [(kind, round(s, 2)) for kind, s in watched.silences],
                    "longest_s": round(max(gaps), 2) if gaps else None,
                    "median_s": round(statistics.median(gaps), 2) if gaps else None,
                }
            )
        )


if __name__ == "__main__":
    main()
