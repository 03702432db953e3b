"""The HTTP layer against the in-memory cluster: every refusal writes nothing, every status
report writes at most once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jibri_pod_controller.adapters import kube
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.adapters.tokens import Verifier
from jibri_pod_controller.core.config import Settings
from jibri_pod_controller.core.limiting import RateLimiter
from jibri_pod_controller.core.pods import (
    ANNOTATION_BUSY_SINCE,
    ANNOTATION_RESTARTS_AT_BUSY,
    ANNOTATION_SAFE_TO_EVICT,
    ANNOTATION_SESSION_ON,
    ANNOTATION_SESSIONS_WATCHED,
)
from jibri_pod_controller.loops.acting import Actuator
from jibri_pod_controller.loops.serving import Health, WebhookHandler, build_app
from tests.component.fakes import (
    BUSY_LABELS,
    FakeCluster,
    JibriSigner,
    Write,
    make_settings,
)

POD = "jibri-7c9f8d6b5-x4k2p"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
LOCAL = ["127.0.0.1"]  # the test client connects from here


def status_body(busy: str, jibri_id: str = POD) -> dict[str, Any]:
    return {
        "jibriId": jibri_id,
        "status": {
            "busyStatus": busy,
            "health": {
                "healthStatus": "HEALTHY",
                "details": {"ffmpeg": {"healthStatus": "HEALTHY", "detail": ""}},
            },
        },
    }


def session_body(jibri_id: str = POD, status: str = "OFF") -> dict[str, Any]:
    failure = {"reason": "ERROR", "error": {}} if status == "OFF" else None
    return {
        "jibriId": jibri_id,
        "session": {
            "sessionId": "s-1",
            "status": status,
            "sipAddress": None,
            "failure": failure,
            "shouldRetry": False if status == "OFF" else None,
        },
    }


@dataclass
class Server:
    client: TestClient[web.Request, web.Application]
    cluster: FakeCluster
    metrics: Metrics
    health: Health
    actuator: Actuator
    settings: Settings

    async def status(
        self, body: Any, *, pod: str = POD, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        response = await self.client.post(
            f"/webhook/{pod}/v1/status",
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        return response.status, await response.json()

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


Start = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def _start(
        cluster: FakeCluster,
        *,
        verifier: Verifier | None = None,
        limiter: RateLimiter | None = None,
        health: Health | None = None,
        **env: str,
    ) -> Server:
        settings = make_settings(**env)
        metrics = Metrics()
        actuator = Actuator(
            cluster=cluster,
            metrics=metrics,
            busy_labels=settings.busy_labels,
            dry_run=settings.dry_run,
            wall_clock=lambda: NOW,
            watch_sessions=settings.stuck_busy_seconds > 0,
        )
        handler = WebhookHandler(
            settings=settings,
            cluster=cluster,
            actuator=actuator,
            metrics=metrics,
            verifier=verifier,
            limiter=limiter or RateLimiter(rate=0, burst=0),
        )
        health = health or Health()
        app = build_app(
            handler=handler, metrics=metrics, health=health, max_body_bytes=settings.max_body_bytes
        )
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return Server(client, cluster, metrics, health, actuator, settings)

    yield _start
    for client in clients:
        await client.close()


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


# -- status reports that write ------------------------------------------------------------------


async def test_busy_detaches_with_one_write(start: Start, cluster: FakeCluster) -> None:
    pod = cluster.add_pod(POD, ips=LOCAL, restarts=1)
    server = await start(cluster)
    assert await server.status(status_body("BUSY")) == (200, {"result": "done"})
    assert cluster.writes == [
        Write(
            "patch_pod",
            POD,
            {
                "metadata": {
                    "labels": BUSY_LABELS,
                    "annotations": {
                        ANNOTATION_SAFE_TO_EVICT: "false",
                        ANNOTATION_BUSY_SINCE: "2025-06-01T12:00:00+00:00",
                        ANNOTATION_RESTARTS_AT_BUSY: "1",
                    },
                    "uid": pod.uid,
                    "resourceVersion": pod.resource_version,
                }
            },
        )
    ]
    after = cluster.pod(POD)
    assert after is not None
    # The busy labels replace the idle ones.
    assert after.labels == {"app": "jibri", "state": "busy"}
    assert after.annotations[ANNOTATION_SAFE_TO_EVICT] == "false"
    assert after.annotations[ANNOTATION_RESTARTS_AT_BUSY] == "1"
    assert after.annotations[ANNOTATION_BUSY_SINCE] == "2025-06-01T12:00:00+00:00"
    await server.actuator.drain()
    assert [e.reason for e in cluster.events] == ["JibriDetached"]
    assert (
        server.sample(
            "jibri_pod_controller_webhooks_total", kind="status", status="BUSY", code="200"
        )
        == 1
    )


async def test_busy_keeps_unrelated_labels(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL, labels={"app": "jibri", "state": "idle", "team": "rec"})
    server = await start(cluster)
    assert (await server.status(status_body("BUSY")))[0] == 200
    after = cluster.pod(POD)
    assert after is not None
    assert after.labels == {"app": "jibri", "state": "busy", "team": "rec"}


async def test_a_second_busy_writes_nothing(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster)
    assert (await server.status(status_body("BUSY")))[0] == 200
    assert await server.status(status_body("BUSY")) == (200, {"result": "none"})
    assert [w.method for w in cluster.writes] == ["patch_pod"]


async def test_concurrent_busy_reports_detach_once(start: Start, cluster: FakeCluster) -> None:
    """The same BUSY reaching the server twice at once: the second patch conflicts, re-reads
    and finds the pod detached."""
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster)
    results = await asyncio.gather(*(server.status(status_body("BUSY")) for _ in range(2)))
    assert sorted(results, key=lambda r: r[1]["result"]) == [
        (200, {"result": "done"}),
        (200, {"result": "none"}),
    ]
    # Both read the idle pod; the second patch was refused on its resourceVersion.
    assert [w.method for w in cluster.writes] == ["patch_pod", "patch_pod"]
    after = cluster.pod(POD)
    assert after is not None
    assert after.labels == BUSY_LABELS
    await server.actuator.drain()
    assert [e.reason for e in cluster.events] == ["JibriDetached"]


async def test_conflict_with_another_replica_re_reads_and_writes_no_more(
    start: Start, cluster: FakeCluster
) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster)
    # Another replica detaches the pod between our read and our patch.
    cluster.before_next(
        "patch_pod",
        lambda: cluster.change_pod(POD, labels=BUSY_LABELS, annotations={"by": "replica-2"}),
    )
    assert await server.status(status_body("BUSY")) == (200, {"result": "none"})
    assert [w.method for w in cluster.writes] == ["patch_pod"]  # the refused one only
    after = cluster.pod(POD)
    assert after is not None
    assert after.annotations == {"by": "replica-2"}
    await server.actuator.drain()
    assert cluster.events == []


async def test_expired_deletes_with_the_uid(start: Start, cluster: FakeCluster) -> None:
    pod = cluster.add_pod(POD, ips=LOCAL, labels=BUSY_LABELS)
    server = await start(cluster)
    assert await server.status(status_body("EXPIRED")) == (200, {"result": "done"})
    assert cluster.writes == [
        Write(
            "delete_pod",
            POD,
            {"preconditions": {"uid": pod.uid, "resourceVersion": pod.resource_version}},
        )
    ]
    assert POD not in cluster.pods


async def test_expired_for_a_missing_pod_is_done(start: Start, cluster: FakeCluster) -> None:
    server = await start(cluster)
    assert await server.status(status_body("EXPIRED")) == (200, {"result": "gone"})
    assert cluster.writes == []


async def test_expired_twice_deletes_once(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL, labels=BUSY_LABELS)
    server = await start(cluster)
    assert (await server.status(status_body("EXPIRED")))[0] == 200
    assert await server.status(status_body("EXPIRED")) == (200, {"result": "gone"})
    assert [w.method for w in cluster.writes] == ["delete_pod"]


async def test_expired_on_a_terminating_pod_writes_nothing(
    start: Start, cluster: FakeCluster
) -> None:
    cluster.add_pod(POD, ips=LOCAL, labels=BUSY_LABELS, deleting=True)
    server = await start(cluster)
    assert await server.status(status_body("EXPIRED")) == (200, {"result": "none"})
    assert cluster.writes == []


@pytest.mark.parametrize("labels", [{"app": "jibri", "state": "idle"}, BUSY_LABELS])
async def test_idle_writes_nothing(
    start: Start, cluster: FakeCluster, labels: dict[str, str]
) -> None:
    cluster.add_pod(POD, ips=LOCAL, labels=labels)
    server = await start(cluster)
    assert await server.status(status_body("IDLE")) == (200, {"result": "none"})
    assert cluster.writes == []
    after = cluster.pod(POD)
    assert after is not None
    assert after.labels == labels


async def test_session_webhook_is_accepted_without_a_write(
    start: Start, cluster: FakeCluster
) -> None:
    server = await start(cluster)
    response = await server.client.post(f"/webhook/{POD}/v1/session/status", json=session_body())
    assert (response.status, await response.json()) == (200, {"result": "accepted"})
    assert cluster.writes == []
    assert (
        server.sample(
            "jibri_pod_controller_webhooks_total", kind="session", status="OFF", code="200"
        )
        == 1
    )


async def test_dry_run_answers_but_writes_nothing(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster, DRY_RUN="true")
    assert await server.status(status_body("BUSY")) == (200, {"result": "dry-run"})
    await server.actuator.drain()
    assert (cluster.writes, cluster.events) == ([], [])
    assert (
        server.sample(
            "jibri_pod_controller_actions_total",
            action="detach",
            reason="busy-reported",
            source="webhook",
            result="dry-run",
        )
        == 1
    )


# -- refusals: no write ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "error"),
    [
        (b"{not json", 400, "bad-json"),
        (b"", 400, "bad-json"),
        (status_body("SLEEPING"), 400, "bad-body"),
        ({**status_body("BUSY"), "extra": True}, 400, "bad-body"),
        ({"jibriId": POD}, 400, "bad-body"),
        ([status_body("BUSY")], 400, "bad-body"),
        (status_body("BUSY", jibri_id="jibri-other"), 403, "jibri-id-mismatch"),
        (session_body(), 400, "bad-body"),
    ],
)
async def test_bad_bodies_are_refused(
    start: Start, cluster: FakeCluster, body: Any, code: int, error: str
) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster)
    assert await server.status(body) == (code, {"error": error})
    assert cluster.writes == []
    assert server.sample("jibri_pod_controller_webhook_rejections_total", reason=error) == 1


@pytest.mark.parametrize("name", ["UPPER", "a..b", "a" * 300, "-jibri", "jibri_1", "jibri%0A"])
async def test_bad_pod_names_are_refused(start: Start, cluster: FakeCluster, name: str) -> None:
    server = await start(cluster)
    assert await server.status(status_body("BUSY", jibri_id=name), pod=name) == (
        400,
        {"error": "bad-pod-name"},
    )
    assert cluster.writes == []


async def test_a_pod_that_is_not_a_jibri_is_refused(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL, labels={"app": "web"})
    server = await start(cluster)
    for status in ("BUSY", "EXPIRED"):
        assert await server.status(status_body(status)) == (403, {"error": "not-a-jibri-pod"})
    assert cluster.writes == []
    assert POD in cluster.pods


async def test_a_request_from_another_address_is_refused(
    start: Start, cluster: FakeCluster
) -> None:
    cluster.add_pod(POD, ips=["10.244.1.17", "fd00::17"], labels=BUSY_LABELS)
    server = await start(cluster)
    for status in ("BUSY", "EXPIRED"):
        assert await server.status(status_body(status)) == (
            403,
            {"error": "wrong-source-address"},
        )
    assert cluster.writes == []


async def test_the_source_check_can_be_turned_off(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=["10.244.1.17"])
    # Unauthenticated here, so the risk must be accepted by name (see test_config).
    server = await start(
        cluster,
        WEBHOOK_CHECK_SOURCE_IP="false",
        WEBHOOK_ACCEPT_ANY_SOURCE_UNAUTHENTICATED="true",
    )
    assert await server.status(status_body("BUSY")) == (200, {"result": "done"})


async def test_the_jibri_id_check_can_be_turned_off(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster, WEBHOOK_CHECK_JIBRI_ID="false")
    assert await server.status(status_body("BUSY", jibri_id="jibri-1")) == (200, {"result": "done"})


async def test_busy_for_a_missing_pod_is_not_found(start: Start, cluster: FakeCluster) -> None:
    server = await start(cluster)
    assert await server.status(status_body("BUSY")) == (404, {"error": "pod-not-found"})
    assert cluster.writes == []


async def test_busy_for_a_terminating_pod_writes_nothing(
    start: Start, cluster: FakeCluster
) -> None:
    """A BUSY from a pod being deleted: a recording that its preStop hook lets finish (a
    rollout, a drain), or a BUSY that arrives after EXPIRED. Accepted without a write: the pod
    keeps terminating, and Jibri is not answered an error once a minute meanwhile."""
    cluster.add_pod(POD, ips=LOCAL, deleting=True)
    server = await start(cluster)
    assert await server.status(status_body("BUSY")) == (200, {"result": "none"})
    assert await server.status(status_body("IDLE")) == (200, {"result": "none"})
    assert cluster.writes == []


async def test_an_unavailable_api_is_a_503(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    cluster.fail_next("get_pod", kube.Unavailable("get pod: HTTP 503"))
    server = await start(cluster)
    assert await server.status(status_body("BUSY")) == (503, {"error": "api-unavailable"})
    assert cluster.writes == []
    # Jibri's next resend goes through.
    assert await server.status(status_body("BUSY")) == (200, {"result": "done"})


async def test_an_unavailable_api_on_the_write_is_a_503(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    cluster.fail_next("delete_pod", kube.Unavailable("delete pod: HTTP 500"))
    server = await start(cluster)
    assert await server.status(status_body("EXPIRED")) == (503, {"error": "api-unavailable"})
    assert POD in cluster.pods


async def test_a_slow_api_is_a_503_within_the_budget(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    cluster.delays["get_pod"] = 10
    server = await start(cluster, API_TIMEOUT="0.5")
    began = time.monotonic()
    assert await server.status(status_body("BUSY")) == (503, {"error": "api-timeout"})
    assert time.monotonic() - began < 2
    assert cluster.writes == []


async def test_a_slow_write_is_a_503_within_the_budget(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    cluster.delays["patch_pod"] = 10
    server = await start(cluster, API_TIMEOUT="0.3")
    began = time.monotonic()
    assert await server.status(status_body("BUSY")) == (503, {"error": "api-timeout"})
    assert time.monotonic() - began < 2
    after = cluster.pod(POD)
    assert after is not None
    assert after.labels["state"] == "idle"


async def test_an_oversized_body_is_refused_unread(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster, WEBHOOK_MAX_BODY_BYTES="1024")
    body = {**status_body("BUSY"), "padding": "x" * 2000}
    assert await server.status(body) == (413, {"error": "body-too-large"})
    assert cluster.writes == []


async def test_an_oversized_chunked_body_is_refused(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster, WEBHOOK_MAX_BODY_BYTES="1024")

    async def chunks() -> AsyncIterator[bytes]:
        yield json.dumps(status_body("BUSY"))[:-1].encode()
        yield b', "padding": "' + b"x" * 4000 + b'"}'

    response = await server.client.post(
        f"/webhook/{POD}/v1/status",
        data=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 413
    assert cluster.writes == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_a_wrong_content_type_is_refused(
    start: Start, cluster: FakeCluster, content_type: str
) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster)
    response = await server.client.post(
        f"/webhook/{POD}/v1/status",
        data=json.dumps(status_body("BUSY")),
        headers={"Content-Type": content_type},
    )
    assert (response.status, await response.json()) == (415, {"error": "not-json"})
    assert cluster.writes == []


async def test_json_with_a_charset_is_fine(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster)
    response = await server.client.post(
        f"/webhook/{POD}/v1/status",
        data=json.dumps(status_body("BUSY")),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status == 200


async def test_a_slow_body_times_out(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster, WEBHOOK_READ_TIMEOUT="0.2")
    release = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"jibriId": '
        await release.wait()
        yield b'"x"}'

    try:
        response = await server.client.post(
            f"/webhook/{POD}/v1/status",
            data=trickle(),
            headers={"Content-Type": "application/json"},
        )
        assert (response.status, await response.json()) == (408, {"error": "body-timeout"})
    finally:
        release.set()
    assert cluster.writes == []


async def test_rate_limit(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    now = [0.0]
    limiter = RateLimiter(rate=1, burst=2, clock=lambda: now[0])
    server = await start(cluster, limiter=limiter)
    codes = [(await server.status(status_body("IDLE")))[0] for _ in range(3)]
    assert codes == [200, 200, 429]
    now[0] += 1
    assert (await server.status(status_body("BUSY")))[0] == 200
    assert await server.status(status_body("BUSY")) == (429, {"error": "rate-limited"})
    assert [w.method for w in cluster.writes] == ["patch_pod"]


# -- tokens -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signer() -> JibriSigner:
    return JibriSigner("jibri-1", issuer="jibri")


@pytest.fixture
def verifier(tmp_path: Path, signer: JibriSigner) -> Verifier:
    (tmp_path / f"{signer.kid}.pem").write_bytes(signer.public_pem())
    settings = make_settings(WEBHOOK_AUTH="jwt", JWT_KEYS_DIR=str(tmp_path), JWT_ISSUER="jibri")
    assert settings.jwt is not None
    return Verifier(settings.jwt)


async def test_a_valid_token_is_accepted(
    start: Start, cluster: FakeCluster, verifier: Verifier, signer: JibriSigner
) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster, verifier=verifier)
    headers = {"Authorization": signer.bearer()}
    assert await server.status(status_body("BUSY"), headers=headers) == (200, {"result": "done"})
    assert [w.method for w in cluster.writes] == ["patch_pod"]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer garbage",
        "Basic dXNlcjpwYXNz",
        "expired",
        "wrong-issuer",
        "wrong-audience",
        "other-key",
    ],
)
async def test_tokens_are_checked_before_the_body(
    start: Start,
    cluster: FakeCluster,
    verifier: Verifier,
    signer: JibriSigner,
    authorization: str | None,
) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster, verifier=verifier)
    forged = {
        "expired": lambda: signer.bearer(ttl=-3600),
        "wrong-issuer": lambda: signer.bearer(claims={"iss": "x"}),
        "wrong-audience": lambda: signer.bearer(claims={"aud": ["x"]}),
        "other-key": lambda: JibriSigner(signer.kid, issuer="jibri").bearer(),
    }
    headers: dict[str, str] = {}
    if authorization is not None:
        headers["Authorization"] = forged.get(authorization, lambda: authorization)()
    # A body that would be refused with 400 if it were read.
    assert await server.status(b"{not json", headers=headers) == (
        401,
        {"error": "unauthenticated"},
    )
    assert await server.status(status_body("EXPIRED"), headers=headers) == (
        401,
        {"error": "unauthenticated"},
    )
    assert cluster.writes == []
    assert POD in cluster.pods


async def test_the_session_webhook_needs_a_token_too(
    start: Start, cluster: FakeCluster, verifier: Verifier, signer: JibriSigner
) -> None:
    server = await start(cluster, verifier=verifier)
    path = f"/webhook/{POD}/v1/session/status"
    assert (await server.client.post(path, json=session_body())).status == 401
    response = await server.client.post(
        path, json=session_body(), headers={"Authorization": signer.bearer()}
    )
    assert response.status == 200


# -- probes and metrics -------------------------------------------------------------------------


async def test_healthz_is_always_ok(start: Start, cluster: FakeCluster) -> None:
    server = await start(cluster)
    response = await server.client.get("/healthz")
    assert (response.status, await response.text()) == (200, "ok\n")


@pytest.mark.parametrize("path", ["/readyz", "/"])
async def test_readiness(start: Start, cluster: FakeCluster, path: str) -> None:
    health = Health()
    server = await start(cluster, health=health)

    async def get() -> tuple[int, str]:
        response = await server.client.get(path)
        return response.status, await response.text()

    assert await get() == (503, "not ready: Kubernetes API not reachable\n")
    health.api_ok = True
    assert await get() == (200, "ok\n")
    health.missing_permissions = ("delete pods", "create events")
    assert await get() == (503, "not ready: missing permissions: delete pods, create events\n")
    health.missing_permissions = ()
    health.shutting_down = True
    assert await get() == (503, "not ready: shutting down\n")


async def test_metrics(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster)
    await server.status(status_body("BUSY"))
    await server.status(b"{", pod="UPPER")
    response = await server.client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    for line in [
        'jibri_pod_controller_webhooks_total{code="200",kind="status",status="BUSY"} 1.0',
        'jibri_pod_controller_webhook_rejections_total{reason="bad-pod-name"} 1.0',
        "jibri_pod_controller_actions_total{"
        'action="detach",reason="busy-reported",result="done",source="webhook"} 1.0',
        "jibri_pod_controller_detach_latency_seconds_count 1.0",
    ]:
        assert line in text.splitlines()


async def test_get_on_a_webhook_is_not_allowed(start: Start, cluster: FakeCluster) -> None:
    server = await start(cluster)
    assert (await server.client.get(f"/webhook/{POD}/v1/status")).status == 405
    assert cluster.writes == []


async def test_a_pod_replaced_under_the_same_name_is_never_relabelled(
    start: Start, cluster: FakeCluster
) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster)

    def replace() -> None:
        del cluster.pods[POD]
        cluster.add_pod(POD, ips=LOCAL)

    cluster.before_next("patch_pod", replace)
    assert await server.status(status_body("BUSY")) == (200, {"result": "gone"})
    after = cluster.pod(POD)
    assert after is not None
    assert after.labels["state"] == "idle"


async def test_a_refusal_after_parsing_still_counts_the_reported_status(
    start: Start, cluster: FakeCluster
) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster)
    code, _ = await server.status(status_body("EXPIRED", jibri_id="someone-else"))
    assert code == 403
    assert (
        server.sample(
            "jibri_pod_controller_webhooks_total", kind="status", status="EXPIRED", code="403"
        )
        == 1
    )
    code, _ = await server.status(b"{not json")
    assert code == 400
    assert (
        server.sample("jibri_pod_controller_webhooks_total", kind="status", status="-", code="400")
        == 1
    )
    assert cluster.writes == []


async def test_expired_after_a_concurrent_change_reads_again_and_deletes_once(
    start: Start, cluster: FakeCluster
) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster)
    # The kubelet updates the pod between our read and our delete: the delete's resourceVersion
    # precondition fails, and the handler reads the pod again and deletes it then.
    cluster.before_next("delete_pod", lambda: cluster.change_pod(POD, restarts=0))
    assert await server.status(status_body("EXPIRED")) == (200, {"result": "done"})
    assert [w.method for w in cluster.writes] == ["delete_pod", "delete_pod"]
    assert cluster.pods == {}


async def test_the_same_expired_twice_at_once_deletes_once(
    start: Start, cluster: FakeCluster
) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster)
    results = await asyncio.gather(
        server.status(status_body("EXPIRED")), server.status(status_body("EXPIRED"))
    )
    assert sorted(r[1]["result"] for r in results) == ["done", "gone"]
    assert [r[0] for r in results] == [200, 200]
    assert cluster.pods == {}


# -- stuck-BUSY detection: the first session ON is written down on the pod ---------------------


async def session(server: Server, status: str) -> tuple[int, dict[str, Any]]:
    response = await server.client.post(
        f"/webhook/{POD}/v1/session/status", json=session_body(status=status)
    )
    return response.status, await response.json()


async def test_without_detection_a_session_on_writes_nothing(
    start: Start, cluster: FakeCluster
) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster)
    assert await session(server, "ON") == (200, {"result": "accepted"})
    assert cluster.writes == []


async def test_with_detection_the_first_session_on_is_one_write_and_the_detach_marks_the_pod(
    start: Start, cluster: FakeCluster
) -> None:
    pod = cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster, STUCK_BUSY_SECONDS="300")
    assert (await server.status(status_body("BUSY")))[0] == 200
    assert await session(server, "ON") == (200, {"result": "done"})
    assert await session(server, "ON") == (200, {"result": "accepted"})  # written once
    assert await session(server, "OFF") == (200, {"result": "accepted"})
    detach, mark = cluster.writes
    assert detach.body["metadata"]["annotations"][ANNOTATION_SESSIONS_WATCHED] == "true"
    assert mark == Write(
        "patch_pod",
        POD,
        {
            "metadata": {
                "annotations": {ANNOTATION_SESSION_ON: "2025-06-01T12:00:00+00:00"},
                "uid": pod.uid,
            }
        },
    )
    after = cluster.pod(POD)
    assert after is not None
    assert after.annotations[ANNOTATION_SESSION_ON] == "2025-06-01T12:00:00+00:00"
    assert after.labels == BUSY_LABELS
    assert (
        server.sample(
            "jibri_pod_controller_actions_total",
            action="annotate",
            reason="session-on",
            source="webhook",
            result="done",
        )
        == 1
    )


async def test_a_session_on_from_another_address_writes_nothing(
    start: Start, cluster: FakeCluster
) -> None:
    cluster.add_pod(POD, ips=["10.9.9.9"])
    server = await start(cluster, STUCK_BUSY_SECONDS="300")
    code, body = await session(server, "ON")
    assert (code, body["error"]) == (403, "wrong-source-address")
    assert cluster.writes == []


async def test_a_session_on_whose_write_fails_is_a_503(start: Start, cluster: FakeCluster) -> None:
    cluster.add_pod(POD, ips=LOCAL)
    server = await start(cluster, STUCK_BUSY_SECONDS="300")
    cluster.fail_next("patch_pod", kube.Unavailable("patch pod: HTTP 503"))
    code, body = await session(server, "ON")
    assert (code, body["error"]) == (503, "api-unavailable")
    after = cluster.pod(POD)
    assert after is not None
    assert ANNOTATION_SESSION_ON not in after.annotations
