"""Properties of the HTTP layer over arbitrary input: never a 500, and never a write unless the
request is an authentic, well-formed report from the pod it names.

The server is real (aiohttp's HTTP parser included) and shared by all examples; the cluster is
the in-memory fake, whose list of writes must stay empty.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.adapters.tokens import Verifier, public_key_from_pem
from jibri_pod_controller.core.config import JwtSettings
from jibri_pod_controller.core.jibri import InvalidMessage, parse_status_report
from jibri_pod_controller.core.limiting import RateLimiter
from jibri_pod_controller.loops.acting import Actuator
from jibri_pod_controller.loops.serving import Health, WebhookHandler, build_app
from tests.component.fakes import FakeCluster, JibriSigner, forged_token, make_settings

POD = "jibri-0"
OTHER = "web-0"
SIGNER = JibriSigner("k1")
STRANGER = JibriSigner("k1")  # same kid, another key


@dataclass
class Harness:
    runner: asyncio.Runner
    client: TestClient[web.Request, web.Application]
    cluster: FakeCluster
    metrics: Metrics

    def post(self, path: str, data: bytes, headers: dict[str, str]) -> int:
        async def send() -> int:
            response = await self.client.post(path, data=data, headers=headers)
            await response.read()
            return response.status

        return self.runner.run(send())

    def post_text(self, path: str, data: bytes, headers: dict[str, str]) -> tuple[int, str]:
        async def send() -> tuple[int, str]:
            response = await self.client.post(path, data=data, headers=headers)
            return response.status, await response.text()

        return self.runner.run(send())

    def metric(self, name: str) -> float:
        total = 0.0
        for family in self.metrics.registry.collect():
            for sample in family.samples:
                if sample.name == name:
                    total += sample.value
        return total

    def request(self, method: str, path: str) -> int:
        async def send() -> int:
            response = await self.client.request(method, path)
            await response.read()
            return response.status

        return self.runner.run(send())


def _start(*, authenticated: bool) -> Iterator[Harness]:
    runner = asyncio.Runner()
    cluster = FakeCluster()
    cluster.add_pod(POD, ips=["127.0.0.1"])
    cluster.add_pod(OTHER, ips=["127.0.0.1"], labels={"app": "web"})
    env = {"WEBHOOK_RATE_LIMIT": "0"}
    settings_ = make_settings(**env)
    verifier = None
    if authenticated:
        jwt = JwtSettings(
            keys_dir=None, jwks_file=None, issuer="jibri", audience="jibri-pod-controller", leeway=5
        )
        verifier = Verifier(jwt, keys={"k1": public_key_from_pem(SIGNER.public_pem())})
    metrics = Metrics()
    actuator = Actuator(cluster=cluster, metrics=metrics, busy_labels=settings_.busy_labels)
    handler = WebhookHandler(
        settings=settings_,
        cluster=cluster,
        actuator=actuator,
        metrics=metrics,
        verifier=verifier,
        limiter=RateLimiter(rate=0, burst=0),
    )
    app = build_app(handler=handler, metrics=metrics, health=Health(), max_body_bytes=4096)

    async def serve() -> TestClient[web.Request, web.Application]:
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        return client

    client = runner.run(serve())
    try:
        yield Harness(runner, client, cluster, metrics)
    finally:
        runner.run(client.close())
        runner.close()


@pytest.fixture(scope="module")
def secured() -> Iterator[Harness]:
    yield from _start(authenticated=True)


@pytest.fixture(scope="module")
def open_server() -> Iterator[Harness]:
    yield from _start(authenticated=False)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
statuses = st.sampled_from(["IDLE", "BUSY", "EXPIRED", "busy", "", "SLEEPING"]) | st.text(
    max_size=10
)
report_like = st.fixed_dictionaries(
    {
        "jibriId": st.sampled_from([POD, OTHER, ""]) | st.text(max_size=10),
        "status": st.fixed_dictionaries(
            {"busyStatus": statuses},
            optional={
                "health": st.fixed_dictionaries(
                    {"healthStatus": st.sampled_from(["HEALTHY", "UNHEALTHY", "?"])},
                    optional={"details": json_values},
                ),
                "extra": json_values,
            },
        ),
    },
    optional={"extra": json_values},
)
bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | report_like.map(lambda v: json.dumps(v).encode())
)
printable = st.characters(min_codepoint=32, max_codepoint=126)
bad_tokens = st.one_of(
    st.none(),
    st.text(alphabet=printable, max_size=60),  # the client cannot send control characters
    st.builds(lambda: STRANGER.bearer()),
    st.builds(lambda: SIGNER.bearer(ttl=-3600)),
    st.builds(lambda: SIGNER.bearer(kid="k2")),
    st.builds(lambda: SIGNER.bearer(claims={"iss": "evil"})),
    st.builds(lambda: SIGNER.bearer(claims={"aud": ["else"]})),
    st.builds(lambda: SIGNER.bearer(drop=["exp"])),
    st.builds(
        lambda: (
            "Bearer "
            + forged_token({"alg": "none", "kid": "k1"}, {"iss": "jibri", "exp": time.time() + 60})
        )
    ),
    st.builds(
        lambda: (
            "Bearer "
            + forged_token(
                {"alg": "HS256", "kid": "k1"},
                {"iss": "jibri", "aud": ["jibri-pod-controller"], "exp": time.time() + 60},
                hmac_secret=SIGNER.public_pem(),
            )
        )
    ),
)


def _rsa_signed(header: dict[str, Any]) -> str:
    """A token with a forged header but a genuine RS256 signature by the trusted key, so the
    header's oddities reach every step of the verification, not only the first."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    unsigned = forged_token(
        header, {"iss": "jibri", "aud": ["jibri-pod-controller"], "exp": time.time() + 60}
    )
    signing_input = unsigned.rsplit(".", 1)[0]
    signature = SIGNER.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return "Bearer " + signing_input + "." + b64url(signature)


def b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# Token headers as a forger writes them: kid, crit and friends of any JSON type.
forged_headers = st.fixed_dictionaries(
    {"alg": st.just("RS256") | json_values},
    optional={
        "kid": st.just("k1") | json_values,
        "crit": st.just(["b64"]) | st.just("b64") | st.just([]) | json_values,
        "b64": json_values,
        "typ": json_values,
        "jku": json_values,
        "x5c": json_values,
        "zip": st.just("DEF") | json_values,
    },
)
pod_names = st.sampled_from([POD, OTHER, "ghost", "UPPER", "a..b", "-x", "x" * 300]) | st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"),
    min_size=1,
    max_size=30,
)
header_noise = st.dictionaries(
    st.sampled_from(["Content-Type", "X-Forwarded-For", "Content-Encoding", "Accept", "Host"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    max_size=3,
)
examples = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid_report(raw: bytes) -> Any:
    try:
        return parse_status_report(json.loads(raw))
    except (ValueError, InvalidMessage):
        return None


@examples
@given(
    pod=pod_names,
    body=bodies,
    token=bad_tokens,
    noise=header_noise,
    session=st.booleans(),
)
def test_no_valid_token_means_no_write_and_no_500(
    secured: Harness, pod: str, body: bytes, token: str | None, noise: dict[str, str], session: bool
) -> None:
    headers = {"Content-Type": "application/json", **noise}
    if token is not None:
        headers["Authorization"] = token
    path = f"/webhook/{pod}/v1/{'session/status' if session else 'status'}"
    code = secured.post(path, body, headers)
    assert code != 500
    assert code in (400, 401, 404, 405, 413, 415, 429), code
    assert secured.cluster.writes == []


@examples
@given(header=forged_headers)
def test_a_forged_token_header_is_a_401_with_a_reason_and_a_metric(
    secured: Harness, header: dict[str, Any]
) -> None:
    if header == {"alg": "RS256", "kid": "k1"}:
        header = {**header, "crit": 7}  # that one is Jibri's own header: make it odd
    before = secured.metric("jibri_pod_controller_token_rejections_total")
    writes = len(secured.cluster.writes)
    report = {"busyStatus": "BUSY", "health": {"healthStatus": "HEALTHY"}}
    body = json.dumps({"jibriId": POD, "status": report}).encode()
    headers = {"Content-Type": "application/json", "Authorization": _rsa_signed(header)}
    code, text = secured.post_text(f"/webhook/{POD}/v1/status", body, headers)
    if code == 200:
        # Only headers a verifier may accept pass: RS256 and the known kid (and extensions
        # PyJWT implements, such as crit ["b64"]), over a genuine signature.
        assert header.get("alg") == "RS256"
        assert header.get("kid") == "k1"
        # An authentic token: its write was legitimate. Leave the harness as it was.
        secured.cluster.change_pod(POD, labels={"state": "idle"})
        del secured.cluster.writes[writes:]
        return
    assert code == 401, (code, header)
    assert json.loads(text) == {"error": "unauthenticated"}
    assert secured.metric("jibri_pod_controller_token_rejections_total") == before + 1
    assert len(secured.cluster.writes) == writes


@examples
@given(pod=pod_names, body=bodies, noise=header_noise)
def test_without_auth_only_a_valid_report_for_a_jibri_pod_can_write(
    open_server: Harness, pod: str, body: bytes, noise: dict[str, str]
) -> None:
    before = len(open_server.cluster.writes)
    code = open_server.post(f"/webhook/{pod}/v1/status", body, {**noise})
    assert code != 500
    report = _valid_report(body)
    writes = open_server.cluster.writes[before:]
    if writes:
        # The only way to a write: a well-formed BUSY or EXPIRED from this very Jibri pod.
        assert code == 200
        assert report is not None
        assert pod == POD
        assert report.jibri_id == POD
        assert report.status.busy.value in ("BUSY", "EXPIRED")
    # Put the pod back the way it was so later examples start from the same state.
    if open_server.cluster.pod(POD) is None:
        open_server.cluster.add_pod(POD, ips=["127.0.0.1"])
    else:
        open_server.cluster.change_pod(POD, labels={"state": "idle"})


@examples
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    path=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#%"),
        max_size=60,
    ),
)
def test_arbitrary_paths_never_fail_and_never_write(
    secured: Harness, method: str, path: str
) -> None:
    code = secured.request(method, "/" + path.lstrip("/"))
    assert code != 500
    assert code < 500 or code == 503
    assert secured.cluster.writes == []
