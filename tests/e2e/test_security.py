"""Forged requests against a real cluster: each is refused, and none causes an API write.

Writes are counted from the API server's audit log, for every verb and resource, so a refused
request that still wrote anything (a patch, an Event, a delete) would be caught.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes_asyncio import client as k8s

from testbed.cluster import (
    ControllerProcess,
    all_write_events,
    jibri_call,
)
from tests.e2e.conftest import E2E
from tests.e2e.helpers import get_pod, is_busy, post_webhook, sign, status_body

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_hs256(claims: dict[str, object], *, secret: bytes, kid: str) -> str:
    """The classic key-confusion forgery: HS256 keyed with the RSA public key's PEM.

    PyJWT refuses to make one, so it is assembled by hand.
    """
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


async def slow_client(controller: ControllerProcess, *, pod: str, ip: str, token: str) -> int:
    """Send the headers and half the body, then stall: the server must give up on its own."""
    body = json.dumps(status_body(pod, "EXPIRED")).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", controller.port, local_addr=(ip, 0))
    head = (
        f"POST /webhook/{pod}/v1/status HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body[: len(body) // 2])
    await writer.drain()
    try:
        line = await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()
    return int(line.split()[1])


async def test_forged_requests_cause_no_writes(
    e2e: E2E,
) -> None:
    controller = await e2e.ready(SWEEP_INTERVAL="3600")  # only webhooks may act in this test
    victim, other = await e2e.deploy_jibris([controller], replicas=2)
    name, ip, other_ip = victim.metadata.name, victim.status.pod_ip, other.status.pod_ip
    for pod in (victim, other):  # the simulated Jibris stay quiet; we speak for them
        assert await jibri_call(pod.status.pod_ip, "/_sim/webhooks", {"enabled": False}) == 200
    await k8s.CoreV1Api(e2e.admin).create_namespaced_pod(
        e2e.namespace,
        {
            "metadata": {"name": "not-jibri", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        },
    )
    web_ip = e2e.kubelet.wait_running("not-jibri", e2e.namespace)
    writes_before = len(all_write_events(e2e.plane, namespace=e2e.namespace, username=e2e.user))

    key, kid, iss = e2e.keys.private_key, e2e.keys.jibri.kid, e2e.keys.jibri.issuer
    good = sign(key, kid=kid, issuer=iss)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"iss": iss, "aud": ["jibri-pod-controller"], "exp": int(time.time()) + 600}
    alg_none = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    hs256 = forge_hs256(claims, secret=public_pem, kid=kid)
    body = status_body(name, "EXPIRED")

    def webhook(**kwargs: object) -> Callable[[], Awaitable[int]]:
        async def send() -> int:
            args: dict[str, object] = {"pod": name, "source_ip": ip, "body": body, "token": good}
            args.update(kwargs)
            code, _ = await post_webhook(controller, **args)  # type: ignore[arg-type]
            return code

        return send

    cases: dict[str, tuple[Callable[[], Awaitable[int]], int]] = {
        "wrong source address (valid token, other Jibri pod's IP)": (
            webhook(source_ip=other_ip),
            403,
        ),
        "wrong source address (a non-Jibri pod's IP)": (webhook(source_ip=web_ip), 403),
        "non-Jibri pod": (
            webhook(pod="not-jibri", source_ip=web_ip, body=status_body("not-jibri", "EXPIRED")),
            403,
        ),
        "jibriId of another pod": (
            webhook(body=status_body(name, "EXPIRED", jibri_id=other.metadata.name)),
            403,
        ),
        "bad pod name": (webhook(pod="Not_A_Pod"), 400),
        "missing token": (webhook(token=None), 401),
        "expired token": (webhook(token=sign(key, kid=kid, issuer=iss, ttl=-3600)), 401),
        "signed by another key": (webhook(token=sign(stranger, kid=kid, issuer=iss)), 401),
        "unknown kid": (webhook(token=sign(key, kid="other", issuer=iss)), 401),
        "wrong iss": (webhook(token=sign(key, kid=kid, issuer="evil")), 401),
        "wrong aud": (webhook(token=sign(key, kid=kid, issuer=iss, audience="else")), 401),
        "alg none": (webhook(token=alg_none), 401),
        "HS256 signed with the public key": (webhook(token=hs256), 401),
        "oversized body": (webhook(raw=b"{" + b" " * 200_000 + b"}"), 413),
        "malformed body": (webhook(raw=b'{"jibriId": 1}'), 400),
        "unknown status": (webhook(body=status_body(name, "SLEEPING")), 400),
        "not JSON content type": (webhook(headers={"Content-Type": "text/plain"}), 415),
    }
    rejected_before = controller.metric("jibri_pod_controller_webhook_rejections_total")
    observed: dict[str, int] = {}
    for case, (send, _) in cases.items():
        observed[case] = await send()
    observed["slow client"] = await slow_client(controller, pod=name, ip=ip, token=good)

    report = "\n".join(f"  {code}  {case}" for case, code in observed.items())
    print(f"\nforged requests (answer, case):\n{report}")
    expected = {case: code for case, (_, code) in cases.items()} | {"slow client": 408}
    assert observed == expected

    await asyncio.sleep(1)  # the audit log is written after the response
    writes = all_write_events(e2e.plane, namespace=e2e.namespace, username=e2e.user)[writes_before:]
    pod_writes = [w for w in writes if w["objectRef"]["resource"] != "leases"]
    assert pod_writes == []
    pod = await get_pod(e2e.admin, e2e.namespace, name)
    assert pod is not None
    assert not is_busy(pod)

    # The same token from the right address works: the checks above were the only obstacle.
    assert await webhook(body=status_body(name, "BUSY"))() == 200
    # No token, valid or forged, ever reaches the log.
    log_text = controller.log_path.read_text()
    for token in (good, alg_none, hs256):
        assert token not in log_text
        signature = token.split(".")[2]
        if signature:
            assert signature[:16] not in log_text
    rejected = controller.metric("jibri_pod_controller_webhook_rejections_total")
    assert rejected - rejected_before == len(expected)


async def test_unauthenticated_mode_still_binds_requests_to_pods(e2e: E2E) -> None:
    """WEBHOOK_AUTH=none is explicit and loud, and the source-address check still applies."""
    controller = await e2e.ready(
        WEBHOOK_AUTH="none", JWT_KEYS_DIR="", JWT_ISSUER="", SWEEP_INTERVAL="3600"
    )
    assert any("NOT authenticated" in str(line.get("msg")) for line in controller.log_lines())
    victim, other = await e2e.deploy_jibris([controller], replicas=2, signed=False)
    name = victim.metadata.name
    code, _ = await post_webhook(
        controller, pod=name, source_ip=other.status.pod_ip, body=status_body(name, "EXPIRED")
    )
    assert code == 403
    assert await get_pod(e2e.admin, e2e.namespace, name) is not None


async def test_a_client_trickling_headers_is_disconnected(e2e: E2E) -> None:
    """Slowloris: headers that never complete do not hold a connection open for long."""
    controller = await e2e.ready(WEBHOOK_IDLE_TIMEOUT="1")
    reader, writer = await asyncio.open_connection("127.0.0.1", controller.port)
    started = time.monotonic()
    try:
        writer.write(b"POST /webhook/jibri-0/v1/status HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        for _ in range(20):  # one more header line every 0.25 s, never the blank line
            await asyncio.sleep(0.25)
            if reader.at_eof():
                break
            writer.write(b"X-Slow: 1\r\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        closed = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    assert closed == b""  # closed without an answer
    assert time.monotonic() - started < 4
