"""Reading the cluster's state and speaking to the controller as a Jibri pod would."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes_asyncio import client as k8s

from testbed.cluster import BUSY_LABELS, IDLE_LABELS, ControllerProcess, wait_until

AUDIENCE = "jibri-pod-controller"


async def list_pods(api: k8s.ApiClient, namespace: str) -> list[k8s.V1Pod]:
    result = await k8s.CoreV1Api(api).list_namespaced_pod(namespace)
    items: list[k8s.V1Pod] = result.items
    return items


def labels_of(pod: k8s.V1Pod) -> dict[str, str]:
    return dict(pod.metadata.labels or {})


def has(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def is_ready(pod: k8s.V1Pod) -> bool:
    conditions = (pod.status and pod.status.conditions) or []
    return pod.metadata.deletion_timestamp is None and any(
        c.type == "Ready" and c.status == "True" for c in conditions
    )


def is_busy(pod: k8s.V1Pod) -> bool:
    return has(labels_of(pod), BUSY_LABELS)


def owned_by_replicaset(pod: k8s.V1Pod) -> bool:
    return any(
        ref.kind == "ReplicaSet" and ref.controller for ref in pod.metadata.owner_references or ()
    )


async def spares(api: k8s.ApiClient, namespace: str) -> list[k8s.V1Pod]:
    """Idle-labelled pods that are Ready and not terminating."""
    return [
        p for p in await list_pods(api, namespace) if has(labels_of(p), IDLE_LABELS) and is_ready(p)
    ]


async def wait_spares(
    api: k8s.ApiClient, namespace: str, n: int, *, timeout: float = 60
) -> list[k8s.V1Pod]:
    """Wait until exactly ``n`` spares are ready; return them."""

    async def ready() -> list[k8s.V1Pod] | None:
        pods = await spares(api, namespace)
        return pods if len(pods) == n else None

    return await wait_until(ready, timeout=timeout, what=f"{n} ready spares")


async def busy_pods(api: k8s.ApiClient, namespace: str) -> list[k8s.V1Pod]:
    return [p for p in await list_pods(api, namespace) if is_busy(p)]


async def get_pod(api: k8s.ApiClient, namespace: str, name: str) -> k8s.V1Pod | None:
    pods = {p.metadata.name: p for p in await list_pods(api, namespace)}
    return pods.get(name)


def sign(
    key: rsa.RSAPrivateKey,
    *,
    kid: str,
    issuer: str,
    audience: str = AUDIENCE,
    ttl: int = 3600,
    extra_headers: Mapping[str, Any] | None = None,
) -> str:
    """A token exactly as Jibri makes it: RS256, kid, iss, aud as an array, exp; nothing else."""
    claims = {"iss": issuer, "aud": [audience], "exp": int(time.time()) + ttl}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, **(extra_headers or {})})


def status_body(pod: str, status: str, *, jibri_id: str | None = None) -> dict[str, Any]:
    return {
        "jibriId": jibri_id or pod,
        "status": {
            "busyStatus": status,
            "health": {"healthStatus": "HEALTHY", "details": {}},
        },
    }


async def post_webhook(
    controller: ControllerProcess,
    *,
    pod: str,
    source_ip: str,
    body: Any = None,
    raw: bytes | None = None,
    token: str | None = None,
    path: str = "v1/status",
    headers: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    """POST a webhook from ``source_ip`` (a pod's loopback address), as that pod's Jibri would."""
    sent_headers = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent_headers["Authorization"] = f"Bearer {token}"
    connector = aiohttp.TCPConnector(local_addr=(source_ip, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        kwargs: dict[str, Any] = {"headers": sent_headers, "timeout": aiohttp.ClientTimeout(5)}
        if raw is not None:
            kwargs["data"] = raw
        else:
            kwargs["json"] = body
        async with session.post(f"{controller.url}/webhook/{pod}/{path}", **kwargs) as response:
            return response.status, await response.text()
