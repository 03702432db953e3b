"""The API client against a local TLS server: every kind of credential, the CA, proxies, errors.

The server is a real HTTPS server (aiohttp) with its own CA, asking for an optional client
certificate; it records what each request carried (path, bearer token, client certificate's
common name, whether it came through the proxy) and answers as the test tells it. The proxy is
a real CONNECT proxy that records where it tunnelled to.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import re
import ssl
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from jibri_pod_controller.adapters import credentials
from jibri_pod_controller.adapters.credentials import (
    CredentialsError,
    ExecPlugin,
    FileCertificate,
    FileToken,
)
from jibri_pod_controller.adapters.kube import (
    ApiClient,
    Conflict,
    Forbidden,
    Gone,
    KubeCluster,
    Unavailable,
    Undecodable,
)
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.app import main
from jibri_pod_controller.loops.watching import PodCache
from testbed.controlplane import _issue, _KeyPair, _new_ca
from tests.component.fakes import pod_json

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_NAME = "api.jpc.test"
"""A name for the local API server that is not loopback (loopback never goes through a proxy);
only the test proxy knows where it is."""


@dataclass(frozen=True)
class Pki:
    ca: _KeyPair
    server: _KeyPair
    client: _KeyPair
    other_ca: _KeyPair


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = _new_ca("test-ca")
    return Pki(
        ca=ca,
        server=_issue(ca, common_name="api", server_names=["127.0.0.1", API_NAME]),
        client=_issue(ca, common_name="jibri-controller", organizations=["ops"]),
        other_ca=_new_ca("someone-else"),
    )


@dataclass
class Seen:
    path: str
    method: str
    token: str | None
    client_cn: str | None
    body: bytes
    query: dict[str, str]
    headers: list[tuple[str, str]] = field(default_factory=list)
    connection: asyncio.BaseTransport | None = None


@dataclass
class ApiServer:
    url: str
    port: int
    seen: list[Seen] = field(default_factory=list)
    accepted_tokens: set[str] | None = None
    """Tokens answered 200; any other (or none) gets 401. None accepts everything."""
    handler: Handler | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
async def api(pki: Pki, tmp_path: Path) -> AsyncIterator[ApiServer]:
    (tmp_path / "server.crt").write_bytes(pki.server.cert_pem)
    (tmp_path / "server.key").write_bytes(pki.server.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    context.load_verify_locations(cadata=pki.ca.cert_pem.decode())
    context.verify_mode = ssl.CERT_OPTIONAL
    server = ApiServer(url="", port=0)

    async def handle(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = None
        if peer:
            for rdn in peer.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        cn = value
        server.seen.append(
            Seen(
                request.path,
                request.method,
                token,
                cn,
                await request.read(),
                dict(request.query),
                list(request.headers.items()),
                request.transport,
            )
        )
        if server.accepted_tokens is not None and token not in server.accepted_tokens:
            return web.json_response({"kind": "Status", "message": "Unauthorized"}, status=401)
        if server.handler is not None:
            return await server.handler(request)
        return web.json_response({"kind": "Status", "ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url, server.port = f"https://127.0.0.1:{port}", port
    yield server
    await runner.cleanup()


def kubeconfig(tmp_path: Path, server: str, user: dict[str, Any], **cluster: Any) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(json.dumps(doc))
    return path


async def get(client: ApiClient, path: str = "/api/v1/namespaces/ns/pods/p") -> bytes:
    return await client.request("GET", path, what="get", seconds=5)


async def load(path: Path, env: dict[str, str] | None = None) -> ApiClient:
    return ApiClient(await credentials.load(str(path), env or {}))


# -- in-cluster ------------------------------------------------------------------------------


def service_account(tmp_path: Path, pki: Pki, token: str) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir(exist_ok=True)
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes(pki.ca.cert_pem)
    return directory


async def test_in_cluster_sends_the_token_and_rereads_it_when_the_kubelet_rotates_it(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    directory = service_account(tmp_path, pki, "token-1\n")
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
    endpoint = await credentials.load(None, env, in_cluster_dir=directory)
    assert endpoint.server == api.url
    client = ApiClient(endpoint)
    try:
        api.accepted_tokens = {"token-1"}
        await get(client)
        # The kubelet writes a new token; the old one is refused from now on.
        (directory / "token").write_text("token-2\n")
        api.accepted_tokens = {"token-2"}
        await get(client)
    finally:
        await client.close()
    assert [s.token for s in api.seen] == ["token-1", "token-1", "token-2"]


async def test_a_token_file_is_reread_a_minute_after_the_last_read(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    directory = service_account(tmp_path, pki, "token-1")
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
    endpoint = await credentials.load(None, env, in_cluster_dir=directory)
    assert isinstance(endpoint.token, FileToken)
    now = [1000.0]
    endpoint.token.clock = lambda: now[0]
    endpoint.token.invalidate()
    client = ApiClient(endpoint)
    try:
        await get(client)
        (directory / "token").write_text("token-2")
        now[0] += 59
        await get(client)
        now[0] += 2
        await get(client)
    finally:
        await client.close()
    assert [s.token for s in api.seen] == ["token-1", "token-1", "token-2"]


def test_in_cluster_credentials_import_no_yaml_parser(pki: Pki, tmp_path: Path) -> None:
    """The YAML parser is for kubeconfigs only: a replica in a cluster never loads it."""
    directory = service_account(tmp_path, pki, "token-1")
    script = (
        "import asyncio, sys\n"
        "import jibri_pod_controller.app\n"
        "from jibri_pod_controller.adapters import credentials\n"
        "env = {'KUBERNETES_SERVICE_HOST': '127.0.0.1', 'KUBERNETES_SERVICE_PORT': '443'}\n"
        f"endpoint = asyncio.run(credentials.load(None, env, in_cluster_dir=__import__('pathlib')"
        f".Path({str(directory)!r})))\n"
        "print(endpoint.server, 'yaml' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["https://127.0.0.1:443", "False"]


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "KUBERNETES_SERVICE_HOST"),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "KUBERNETES_SERVICE_PORT"),
    ],
)
async def test_in_cluster_without_the_service_address_names_what_is_missing(
    pki: Pki, tmp_path: Path, env: dict[str, str], missing: str
) -> None:
    directory = service_account(tmp_path, pki, "t")
    with pytest.raises(CredentialsError, match=f"{missing} is not set"):
        await credentials.load(None, env, in_cluster_dir=directory)


# -- kubeconfig ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["data", "files"])
async def test_kubeconfig_client_certificate(
    api: ApiServer, pki: Pki, tmp_path: Path, form: str
) -> None:
    if form == "data":
        user = {
            "client-certificate-data": _b64(pki.client.cert_pem),
            "client-key-data": _b64(pki.client.key_pem),
        }
        cluster = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    else:
        (tmp_path / "certs").mkdir()
        (tmp_path / "certs" / "client.crt").write_bytes(pki.client.cert_pem)
        (tmp_path / "certs" / "client.key").write_bytes(pki.client.key_pem)
        (tmp_path / "certs" / "ca.crt").write_bytes(pki.ca.cert_pem)
        # Relative paths are relative to the kubeconfig's directory.
        user = {"client-certificate": "certs/client.crt", "client-key": "certs/client.key"}
        cluster = {"certificate-authority": "certs/ca.crt"}
    client = await load(kubeconfig(tmp_path, api.url, user, **cluster))
    try:
        await get(client)
    finally:
        await client.close()
    assert [(s.client_cn, s.token) for s in api.seen] == [("jibri-controller", None)]


async def test_kubeconfig_token_and_token_file(api: ApiServer, pki: Pki, tmp_path: Path) -> None:
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    client = await load(kubeconfig(tmp_path, api.url, {"token": "static"}, **ca))
    try:
        await get(client)
    finally:
        await client.close()
    (tmp_path / "token").write_text("from-file-1")
    client = await load(kubeconfig(tmp_path, api.url, {"tokenFile": "token"}, **ca))
    try:
        api.accepted_tokens = {"from-file-1"}
        await get(client)
        (tmp_path / "token").write_text("from-file-2")
        api.accepted_tokens = {"from-file-2"}
        await get(client)
    finally:
        await client.close()
    assert [s.token for s in api.seen] == ["static", "from-file-1", "from-file-1", "from-file-2"]


async def test_impersonation_is_sent_with_every_request(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    """``as``, ``as-uid``, ``as-groups``, ``as-user-extra``: client-go's headers, extra keys
    percent-encoded where a header name cannot hold them."""
    user = {
        "token": "admin",
        "as": "system:serviceaccount:jibri:jibri-pod-controller",
        "as-uid": "1234",
        "as-groups": ["system:serviceaccounts", "ops"],
        "as-user-extra": {"reason": ["audit"], "example.com/scopes": ["a", "b"]},
    }
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    client = await load(kubeconfig(tmp_path, api.url, user, **ca))
    try:
        await get(client)
    finally:
        await client.close()
    sent = [(k, v) for k, v in api.seen[0].headers if k.lower().startswith("impersonate-")]
    assert sent == [
        ("Impersonate-User", "system:serviceaccount:jibri:jibri-pod-controller"),
        ("Impersonate-Uid", "1234"),
        ("Impersonate-Group", "system:serviceaccounts"),
        ("Impersonate-Group", "ops"),
        ("Impersonate-Extra-reason", "audit"),
        ("Impersonate-Extra-example.com%2Fscopes", "a"),
        ("Impersonate-Extra-example.com%2Fscopes", "b"),
    ]
    assert api.seen[0].token == "admin"


async def test_username_and_password_are_sent_as_basic_auth(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    user = {"username": "admin", "password": "s3cret"}
    client = await load(kubeconfig(tmp_path, api.url, user, **ca))
    try:
        await get(client)
    finally:
        await client.close()
    authorization = dict(api.seen[0].headers)["Authorization"]
    assert authorization == "Basic " + _b64(b"admin:s3cret")


async def test_a_plain_http_server_is_sent_no_credentials(tmp_path: Path) -> None:
    """client-go sends no token over plain HTTP (``kubectl proxy`` needs none)."""
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"kind": "Status"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        client = await load(kubeconfig(tmp_path, f"http://127.0.0.1:{port}", {"token": "t"}))
        try:
            await get(client)
        finally:
            await client.close()
    finally:
        await runner.cleanup()
    assert seen == [None]
    assert "plain http:// server: no credentials are sent" in client.endpoint.notes


def exec_plugin(tmp_path: Path, *, expires: str | None, cert: _KeyPair | None = None) -> Path:
    """A plugin that counts its runs in ``runs`` and hands out token-<run>."""
    status: dict[str, Any] = {}
    if expires:
        status["expirationTimestamp"] = expires
    if cert is not None:
        status["clientCertificateData"] = cert.cert_pem.decode()
        status["clientKeyData"] = cert.key_pem.decode()
    script = tmp_path / "plugin.py"
    script.write_text(
        "import json, os, sys, pathlib\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['kind'] == 'ExecCredential', info\n"
        f"runs = pathlib.Path({str(tmp_path / 'runs')!r})\n"
        "n = int(runs.read_text()) + 1 if runs.exists() else 1\n"
        "runs.write_text(str(n))\n"
        f"status = {status!r}\n"
        "if os.environ.get('WITH_TOKEN') == 'yes':\n"
        "    status['token'] = f'token-{n}'\n"
        "print(json.dumps({'apiVersion': info['apiVersion'], 'kind': 'ExecCredential',"
        " 'status': status}))\n"
    )
    return script


def exec_user(script: Path, *, token: bool = True) -> dict[str, Any]:
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(script)],
            "env": [{"name": "WITH_TOKEN", "value": "yes" if token else "no"}],
            "interactiveMode": "Never",
        }
    }


async def test_exec_plugin_token_is_kept_until_refused_then_refreshed(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    script = exec_plugin(tmp_path, expires="2999-01-01T00:00:00Z")
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    client = await load(kubeconfig(tmp_path, api.url, exec_user(script), **ca))
    try:
        await get(client)
        await get(client)
        api.accepted_tokens = {"token-2"}  # the first token was revoked
        await get(client)
    finally:
        await client.close()
    assert [s.token for s in api.seen] == ["token-1", "token-1", "token-1", "token-2"]
    assert (tmp_path / "runs").read_text() == "2"


async def test_an_expired_exec_token_is_refreshed_before_use(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    script = exec_plugin(tmp_path, expires="2001-01-01T00:00:00Z")
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    client = await load(kubeconfig(tmp_path, api.url, exec_user(script), **ca))
    try:
        await get(client)
        await get(client)
    finally:
        await client.close()
    assert [s.token for s in api.seen] == ["token-2", "token-3"]


async def test_exec_plugin_client_certificate(api: ApiServer, pki: Pki, tmp_path: Path) -> None:
    script = exec_plugin(tmp_path, expires=None, cert=pki.client)
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    client = await load(kubeconfig(tmp_path, api.url, exec_user(script, token=False), **ca))
    try:
        await get(client)
    finally:
        await client.close()
    assert [(s.client_cn, s.token) for s in api.seen] == [("jibri-controller", None)]


async def until(check: Callable[[], bool], *, within: float = 5.0) -> None:
    """Poll ``check``: a transport's closing has no event to wait on."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def until_closed(request: web.Request, *, within: float) -> None:
    """Hold a response open, sending nothing, until the client closes the connection."""
    transport = request.transport
    with contextlib.suppress(TimeoutError):
        await until(lambda: transport is None or transport.is_closing(), within=within)


ROTATION_EPOCH = datetime(2030, 1, 1, tzinfo=UTC).timestamp()


def rotating_plugin(tmp_path: Path, pki: Pki, count: int) -> Path:
    """A plugin that hands out certificate n (CN plugin-<n>) on its n-th run, each with an
    expirationTimestamp a minute after the previous one, and counts its runs in ``runs``."""
    for n in range(1, count + 1):
        pair = _issue(pki.ca, common_name=f"plugin-{n}")
        (tmp_path / f"cert-{n}.pem").write_bytes(pair.cert_pem)
        (tmp_path / f"key-{n}.pem").write_bytes(pair.key_pem)
    script = tmp_path / "rotating.py"
    script.write_text(
        "import json, os, pathlib, datetime\n"
        f"here = pathlib.Path({str(tmp_path)!r})\n"
        "runs = here / 'runs'\n"
        "n = int(runs.read_text()) + 1 if runs.exists() else 1\n"
        "runs.write_text(str(n))\n"
        f"expires = datetime.datetime.fromtimestamp({ROTATION_EPOCH} + 60 * n, datetime.UTC)\n"
        "status = {\n"
        "    'clientCertificateData': (here / f'cert-{n}.pem').read_text(),\n"
        "    'clientKeyData': (here / f'key-{n}.pem').read_text(),\n"
        "    'expirationTimestamp': expires.strftime('%Y-%m-%dT%H:%M:%SZ'),\n"
        "}\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1',"
        " 'kind': 'ExecCredential', 'status': status}))\n"
    )
    return script


async def test_an_exec_certificate_is_kept_until_it_expires_then_rotated_on_new_connections(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    """A plugin returning a short-lived client certificate runs once per certificate, not once
    per request; each new certificate is presented on new connections, and the connections that
    presented the previous one are closed."""
    script = rotating_plugin(tmp_path, pki, 3)
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    client = await load(kubeconfig(tmp_path, api.url, exec_user(script, token=False), **ca))
    plugin = client.endpoint.token
    assert isinstance(plugin, ExecPlugin)
    now = [ROTATION_EPOCH + 1]
    plugin.clock = lambda: now[0]
    try:
        for _ in range(3):
            await get(client)
        first = {s.connection for s in api.seen}
        assert len(first) == 1  # one pooled connection, kept alive
        now[0] = ROTATION_EPOCH + 61  # the first certificate expired a second ago
        for _ in range(3):
            await get(client)
        await until(lambda: all(c is not None and c.is_closing() for c in first))
        now[0] = ROTATION_EPOCH + 121
        await get(client)
        second = {s.connection for s in api.seen[3:6]}
        await until(lambda: all(c is not None and c.is_closing() for c in second))
    finally:
        await client.close()
    assert [s.client_cn for s in api.seen] == ["plugin-1"] * 3 + ["plugin-2"] * 3 + ["plugin-3"]
    assert (tmp_path / "runs").read_text() == "3"  # at start-up, then once per expiry
    assert client.rotations == 2


async def test_a_rotation_closes_a_watch_on_the_old_certificate(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    """A connection in use (a watch) presenting the old certificate is closed too, as client-go
    closes it: the watcher sees its watch end with an error and starts another."""
    script = rotating_plugin(tmp_path, pki, 2)
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    client = await load(kubeconfig(tmp_path, api.url, exec_user(script, token=False), **ca))
    plugin = client.endpoint.token
    assert isinstance(plugin, ExecPlugin)
    now = [ROTATION_EPOCH + 1]
    plugin.clock = lambda: now[0]
    started = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return web.json_response({"kind": "Status"})
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"type": "BOOKMARK", "object": {"metadata": {}}}\n')
        started.set()
        await until_closed(request, within=10)  # a quiet watch, until the client goes
        return response

    api.handler = handler
    cluster = KubeCluster(client, namespace="ns")

    async def watch() -> list[str]:
        kinds = []
        async for event in cluster.watch_json(
            "/api/v1/namespaces/ns/pods", query={}, timeout_seconds=60
        ):
            kinds.append(event.kind)
        return kinds

    watching = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(started.wait(), 5)
        now[0] = ROTATION_EPOCH + 61
        await get(client)
        with pytest.raises(Unavailable):
            await asyncio.wait_for(watching, 5)
    finally:
        watching.cancel()
        await cluster.close()
    assert [s.client_cn for s in api.seen] == ["plugin-1", "plugin-2"]


async def test_a_failing_exec_plugin_stops_start_up_with_its_message(
    api: ApiServer, tmp_path: Path
) -> None:
    script = tmp_path / "fail.py"
    script.write_text("import sys\nprint('login required', file=sys.stderr)\nsys.exit(3)\n")
    path = kubeconfig(tmp_path, api.url, exec_user(script))
    with pytest.raises(CredentialsError, match="failed with exit code 3: login required"):
        await credentials.load(str(path), {})


# -- the CA bundle ---------------------------------------------------------------------------


async def test_a_server_outside_the_ca_bundle_is_refused(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    wrong = {"certificate-authority-data": _b64(pki.other_ca.cert_pem)}
    client = await load(kubeconfig(tmp_path, api.url, {"token": "t"}, **wrong))
    try:
        with pytest.raises(Unavailable, match="certificate verify failed"):
            await get(client)
    finally:
        await client.close()
    assert api.seen == []


async def test_insecure_skip_tls_verify_is_honoured(api: ApiServer, tmp_path: Path) -> None:
    client = await load(
        kubeconfig(tmp_path, api.url, {"token": "t"}, **{"insecure-skip-tls-verify": True})
    )
    try:
        await get(client)
    finally:
        await client.close()
    assert [s.token for s in api.seen] == ["t"]


async def test_insecure_skip_tls_verify_still_presents_the_client_certificate(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    """kubectl skips verifying the server and still authenticates with its certificate."""
    user = {
        "client-certificate-data": _b64(pki.client.cert_pem),
        "client-key-data": _b64(pki.client.key_pem),
    }
    insecure = {"insecure-skip-tls-verify": True}
    client = await load(kubeconfig(tmp_path, api.url, user, **insecure))
    try:
        await get(client)
    finally:
        await client.close()
    assert [(s.client_cn, s.token) for s in api.seen] == [("jibri-controller", None)]


async def test_client_certificate_files_replaced_on_disk_are_presented_on_new_connections(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    """client-go reads certificate and key files again for new connections (ReloadTLSFiles)."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(pki.client.cert_pem)
    key.write_bytes(pki.client.key_pem)
    user = {"client-certificate": str(cert), "client-key": str(key)}
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    client = await load(kubeconfig(tmp_path, api.url, user, **ca))
    files = client.endpoint.certificate
    assert isinstance(files, FileCertificate)
    now = [0.0]
    files.clock = lambda: now[0]
    renewed = _issue(pki.ca, common_name="renewed")
    try:
        await get(client)
        cert.write_bytes(renewed.cert_pem)  # half-way through a renewal: the pair disagrees
        now[0] += 2
        await get(client)
        key.write_bytes(renewed.key_pem)
        await get(client)  # looked at again at most once a second
        now[0] += 2
        await get(client)
    finally:
        await client.close()
    assert [s.client_cn for s in api.seen] == ["jibri-controller"] * 3 + ["renewed"]
    assert client.rotations == 1


def exec_info_plugin(tmp_path: Path, *, answer: dict[str, Any] | None = None) -> Path:
    """A plugin that records the KUBERNETES_EXEC_INFO it was given in ``info.json`` and
    answers ``answer`` (default: a token)."""
    script = tmp_path / "info.py"
    script.write_text(
        "import json, os, pathlib\n"
        f"info = pathlib.Path({str(tmp_path / 'info.json')!r})\n"
        "info.write_text(os.environ['KUBERNETES_EXEC_INFO'])\n"
        f"answer = {answer!r}\n"
        "print(json.dumps(answer or {'apiVersion': 'client.authentication.k8s.io/v1',"
        " 'kind': 'ExecCredential', 'status': {'token': 'from-plugin'}}))\n"
    )
    return script


async def test_provide_cluster_info_gives_the_plugin_the_cluster(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    script = exec_info_plugin(tmp_path)
    user = exec_user(script)
    user["exec"]["provideClusterInfo"] = True
    cluster = {
        "certificate-authority-data": _b64(pki.ca.cert_pem),
        "tls-server-name": "127.0.0.1",
        "extensions": [
            {"name": "client.authentication.k8s.io/exec", "extension": {"audience": "jpc"}},
            {"name": "something-else", "extension": {"x": 1}},
        ],
    }
    client = await load(kubeconfig(tmp_path, api.url, user, **cluster))
    try:
        await get(client)
    finally:
        await client.close()
    info = json.loads((tmp_path / "info.json").read_text())
    assert info == {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "spec": {
            "interactive": False,
            "cluster": {
                "server": api.url,
                "tls-server-name": "127.0.0.1",
                "certificate-authority-data": _b64(pki.ca.cert_pem),
                "config": {"audience": "jpc"},
            },
        },
    }
    assert [s.token for s in api.seen] == ["from-plugin"]


async def test_without_provide_cluster_info_the_plugin_gets_no_cluster(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    script = exec_info_plugin(tmp_path)
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    client = await load(kubeconfig(tmp_path, api.url, exec_user(script), **ca))
    await client.close()
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["spec"] == {"interactive": False}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "kind": "ExecCredential",
                "status": {"token": "t"},
            },
            "configured for client.authentication.k8s.io/v1, the plugin returned apiVersion "
            "'client.authentication.k8s.io/v1beta1'",
        ),
        (
            {
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "Secret",
                "status": {"token": "t"},
            },
            "returned kind 'Secret', not ExecCredential",
        ),
        (
            {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential"},
            "returned no status",
        ),
        (
            {
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": {"clientCertificateData": "x"},
            },
            "a certificate or a key, not both",
        ),
        (
            {
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": {"expirationTimestamp": "2999-01-01T00:00:00Z"},
            },
            "neither a token nor a certificate",
        ),
    ],
)
async def test_what_a_plugin_returns_is_checked(
    api: ApiServer, tmp_path: Path, answer: dict[str, Any], message: str
) -> None:
    path = kubeconfig(tmp_path, api.url, exec_user(exec_info_plugin(tmp_path, answer=answer)))
    with pytest.raises(CredentialsError, match=re.escape(message)):
        await credentials.load(str(path), {})


async def test_an_always_interactive_plugin_is_refused_before_it_runs(
    api: ApiServer, tmp_path: Path
) -> None:
    script = exec_info_plugin(tmp_path)
    user = exec_user(script)
    user["exec"]["interactiveMode"] = "Always"
    path = kubeconfig(tmp_path, api.url, user)
    with pytest.raises(CredentialsError, match="interactiveMode Always needs a terminal"):
        await credentials.load(str(path), {})
    assert not (tmp_path / "info.json").exists()


async def test_a_missing_plugin_names_its_install_hint(api: ApiServer, tmp_path: Path) -> None:
    user = exec_user(tmp_path / "nowhere")
    user["exec"]["command"] = "jpc-no-such-plugin"
    user["exec"]["installHint"] = "Install it with:\n  brew install jpc-plugin"
    path = kubeconfig(tmp_path, api.url, user)
    with pytest.raises(CredentialsError) as caught:
        await credentials.load(str(path), {"PATH": str(tmp_path)})
    assert str(caught.value) == (
        "exec plugin: executable jpc-no-such-plugin not found "
        "(Install it with: brew install jpc-plugin)"
    )


async def test_a_token_or_certificate_beside_an_exec_plugin_wins_and_the_plugin_never_runs(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    script = exec_info_plugin(tmp_path)
    user = {**exec_user(script), "token": "static"}
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    client = await load(kubeconfig(tmp_path, api.url, user, **ca))
    try:
        await get(client)
    finally:
        await client.close()
    assert [s.token for s in api.seen] == ["static"]
    assert not (tmp_path / "info.json").exists()


# -- proxies ---------------------------------------------------------------------------------


@dataclass
class Proxy:
    url: str
    tunnels: list[str] = field(default_factory=list)


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    """A CONNECT proxy: records the target, then pipes bytes both ways."""
    record = Proxy(url="")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            writer.close()
            return
        record.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        host = "127.0.0.1" if host == API_NAME else host
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    record.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield record
    server.close()


@pytest.mark.parametrize(
    ("server", "env", "through_proxy"),
    [
        (API_NAME, {}, False),
        (API_NAME, {"HTTPS_PROXY": "{proxy}"}, True),
        (API_NAME, {"https_proxy": "{proxy}", "ALL_PROXY": "http://127.0.0.1:9"}, True),
        # Go's rules: loopback never goes through a proxy, whatever NO_PROXY says.
        ("127.0.0.1", {"HTTPS_PROXY": "{proxy}"}, False),
        ("127.0.0.1", {"HTTPS_PROXY": "{proxy}", "NO_PROXY": "example.com"}, False),
    ],
)
async def test_a_proxy_is_used_only_when_configured(
    api: ApiServer,
    pki: Pki,
    proxy: Proxy,
    tmp_path: Path,
    server: str,
    env: dict[str, str],
    through_proxy: bool,
) -> None:
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    path = kubeconfig(tmp_path, f"https://{server}:{api.port}", {"token": "t"}, **ca)
    client = await load(path, {k: v.format(proxy=proxy.url) for k, v in env.items()})
    try:
        if server == API_NAME and not through_proxy:
            with pytest.raises(Unavailable):  # only the proxy knows the name
                await get(client)
        else:
            await get(client)
    finally:
        await client.close()
    assert len(api.seen) == (1 if server != API_NAME or through_proxy else 0)
    assert proxy.tunnels == ([f"{server}:{api.port}"] if through_proxy else [])


async def test_the_kubeconfig_proxy_url(
    api: ApiServer, pki: Pki, proxy: Proxy, tmp_path: Path
) -> None:
    cluster = {"certificate-authority-data": _b64(pki.ca.cert_pem), "proxy-url": proxy.url}
    server = f"https://{API_NAME}:{api.port}"
    client = await load(kubeconfig(tmp_path, server, {"token": "t"}, **cluster))
    try:
        await get(client)
    finally:
        await client.close()
    assert proxy.tunnels == [f"{API_NAME}:{api.port}"]


# -- missing or broken credentials -----------------------------------------------------------


async def test_no_credentials_at_all_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError) as caught:
        await credentials.load(None, {"HOME": str(tmp_path)}, in_cluster_dir=tmp_path / "sa")
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "sa" / "token") in message
    assert "KUBECONFIG is not set" in message
    assert str(tmp_path / ".kube" / "config") in message


def test_the_controller_without_credentials_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = {"POD_NAME": "c", "NAMESPACE": "jibri", "WEBHOOK_AUTH": "none", "HOME": str(tmp_path)}
    assert main([], env=env) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("jibri-pod-controller: configuration error: no Kubernetes credentials")


def test_a_missing_kubeconfig_file_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = {"POD_NAME": "c", "WEBHOOK_AUTH": "none", "KUBECONFIG": str(tmp_path / "nope")}
    assert main([], env=env) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(f"KUBECONFIG: no such file: {tmp_path / 'nope'}")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("current-context"), "no current-context"),
        (lambda d: d.update({"current-context": "x"}), "context 'x' not found"),
        (lambda d: d["users"][0].update({"user": {}}), "user 'u': no credentials"),
        (
            lambda d: d["users"][0].update({"user": {"auth-provider": {"name": "gcp"}}}),
            "auth-provider 'gcp' is not supported",
        ),
        (lambda d: d["clusters"][0]["cluster"].pop("server"), "cluster 'c': no server"),
        (
            lambda d: d["users"][0].update({"user": {"client-certificate-data": "%%"}}),
            "client-certificate-data is not base64",
        ),
        (
            lambda d: d["clusters"][0]["cluster"].update({"proxy-url": "socks5://p:1080"}),
            "only http:// proxies",
        ),
    ],
)
async def test_a_broken_kubeconfig_names_the_problem(
    tmp_path: Path, edit: Callable[[dict[str, Any]], Any], message: str
) -> None:
    path = kubeconfig(tmp_path, "https://127.0.0.1:1", {"token": "t"})
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(CredentialsError, match=message):
        await credentials.load(str(path), {})


# -- KubeCluster over the client: errors and watches ------------------------------------------


async def cluster_for(api: ApiServer, pki: Pki, tmp_path: Path) -> KubeCluster:
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    client = await load(kubeconfig(tmp_path, api.url, {"token": "t"}, **ca))
    return KubeCluster(client, namespace="ns")


async def test_error_statuses_map_to_named_errors(api: ApiServer, pki: Pki, tmp_path: Path) -> None:
    answers = {
        "/api/v1/namespaces/ns/pods/gone": (404, {}),
        "/api/v1/namespaces/ns/pods/raced": (409, {"Retry-After": "1"}),
        "/api/v1/namespaces/ns/pods/busy": (429, {"Retry-After": "7"}),
        "/api/v1/namespaces/ns/pods/denied": (403, {}),
    }

    async def handler(request: web.Request) -> web.StreamResponse:
        status, headers = answers[request.path]
        return web.json_response(
            {"kind": "Status", "message": f"said {status}"}, status=status, headers=headers
        )

    api.handler = handler
    cluster = await cluster_for(api, pki, tmp_path)
    try:
        assert await cluster.get_pod("gone") is None
        assert await cluster.delete_pod(name="gone", uid="u") is False
        with pytest.raises(Conflict, match="HTTP 409 said 409"):
            await cluster.patch_pod(name="raced", uid="u", patch={"metadata": {}})
        with pytest.raises(Unavailable) as caught:
            await cluster.request_json("GET", "/api/v1/namespaces/ns/pods/busy")
        assert caught.value.retry_after == 7.0
        with pytest.raises(Forbidden):
            await cluster.get_pod("denied")
    finally:
        await cluster.close()
    deleted = next(s for s in api.seen if s.method == "DELETE")
    assert json.loads(deleted.body)["preconditions"] == {"uid": "u"}


async def test_a_watch_splits_events_however_the_chunks_fall(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    big = {"metadata": {"name": "big", "annotations": {"a": "x" * 300_000}}}
    events = [
        {"type": "ADDED", "object": {"metadata": {"name": "a"}}},
        {"type": "MODIFIED", "object": big},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}},
    ]
    payload = b"".join(json.dumps(e).encode() + b"\n" for e in events)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(payload), 7001):  # chunks that cut lines anywhere
            await response.write(payload[start : start + 7001])
        await response.write_eof()
        return response

    api.handler = handler
    cluster = await cluster_for(api, pki, tmp_path)
    seen: list[str] = []

    async def consume() -> None:
        async for event in cluster.watch_json(
            "/api/v1/namespaces/ns/pods", query={"resourceVersion": "5"}, timeout_seconds=60
        ):
            seen.append(f"{event.kind} {event.raw['metadata'].get('name', '')}")

    try:
        with pytest.raises(Gone, match="too old"):
            await consume()
    finally:
        await cluster.close()
    assert seen == ["ADDED a", "MODIFIED big", "BOOKMARK "]
    assert api.seen[0].query == {
        "resourceVersion": "5",
        "watch": "true",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "60",
    }


async def test_an_unreachable_server_is_unavailable(pki: Pki, tmp_path: Path) -> None:
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    client = await load(kubeconfig(tmp_path, "https://127.0.0.1:1", {"token": "t"}, **ca))
    try:
        with pytest.raises(Unavailable):
            await get(client)
    finally:
        await client.close()


# -- bodies as the server encoded them --------------------------------------------------------


def pod_list(count: int, *, rv: str = "77") -> bytes:
    """A pod list the size of a real one: kube-apiserver compresses answers above 128 KB."""
    items = [
        pod_json(
            f"jibri-{n}",
            uid=f"uid-{n}",
            annotations={"kubectl.kubernetes.io/last-applied-configuration": "x" * 3000},
        )
        for n in range(count)
    ]
    return json.dumps(
        {"kind": "PodList", "metadata": {"resourceVersion": rv}, "items": items}
    ).encode()


def encode(body: bytes, coding: str) -> bytes:
    if coding in ("gzip", "x-gzip"):
        return gzip.compress(body)
    if coding == "deflate":
        return zlib.compress(body)
    if coding == "raw-deflate":
        deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return deflater.compress(body) + deflater.flush()
    return body


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "raw-deflate", "identity"])
async def test_a_list_the_server_compressed_is_decoded(
    api: ApiServer, pki: Pki, tmp_path: Path, coding: str
) -> None:
    body = pod_list(60)
    assert len(body) > 128 * 1024

    async def handler(request: web.Request) -> web.StreamResponse:
        header = "deflate" if coding == "raw-deflate" else coding
        return web.Response(
            body=encode(body, coding),
            headers={"Content-Type": "application/json", "Content-Encoding": header},
        )

    api.handler = handler
    cluster = await cluster_for(api, pki, tmp_path)
    try:
        pods, version = await cluster.list_pods_snapshot(selector="app=jibri", page_size=500)
    finally:
        await cluster.close()
    assert (len(pods), version) == (60, "77")
    assert dict(api.seen[0].headers)["Accept-Encoding"] == "identity"


async def test_a_watch_the_server_compressed_is_decoded_event_by_event(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    """Each event is flushed by the compressor as it is written (as Go's gzip writer does on
    Flush), and must reach the watcher before the next is sent."""
    seen_first = asyncio.Event()
    events = [
        {"type": "ADDED", "object": pod_json("a", uid="ua", resource_version="6")},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
        {"type": "DELETED", "object": pod_json("a", uid="ua", resource_version="8")},
    ]

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Encoding": "gzip"})
        await response.prepare(request)
        compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        for n, event in enumerate(events):
            line = json.dumps(event).encode() + b"\n"
            await response.write(compressor.compress(line) + compressor.flush(zlib.Z_SYNC_FLUSH))
            if n == 0:
                await asyncio.wait_for(seen_first.wait(), 5)
        await response.write(compressor.flush())
        await response.write_eof()
        return response

    api.handler = handler
    cluster = await cluster_for(api, pki, tmp_path)
    seen: list[str] = []
    try:
        async for event in cluster.watch_json(
            "/api/v1/namespaces/ns/pods", query={"resourceVersion": "5"}, timeout_seconds=60
        ):
            seen.append(f"{event.kind} {event.raw['metadata'].get('resourceVersion')}")
            seen_first.set()
    finally:
        await cluster.close()
    assert seen == ["ADDED 6", "BOOKMARK 7", "DELETED 8"]


@pytest.mark.parametrize("coding", ["zstd", "br", "compress", "gzip, gzip"])
async def test_an_encoding_this_client_cannot_decode_is_refused_by_name(
    api: ApiServer, pki: Pki, tmp_path: Path, coding: str
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=b"\x28\xb5\x2f\xfd not json at all",
            headers={"Content-Type": "application/json", "Content-Encoding": coding},
        )

    api.handler = handler
    cluster = await cluster_for(api, pki, tmp_path)
    try:
        with pytest.raises(Undecodable, match=re.escape(f"Content-Encoding {coding!r}")):
            await cluster.list_pods_snapshot(selector="app=jibri", page_size=500)
        with pytest.raises(Undecodable, match=re.escape(f"Content-Encoding {coding!r}")):
            async for _ in cluster.watch_json(
                "/api/v1/namespaces/ns/pods", query={}, timeout_seconds=60
            ):
                pass
    finally:
        await cluster.close()


async def test_a_truncated_compressed_body_is_refused(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=gzip.compress(pod_list(3))[:-20],
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    api.handler = handler
    cluster = await cluster_for(api, pki, tmp_path)
    try:
        with pytest.raises(Undecodable, match="truncated gzip"):
            await cluster.list_pods_snapshot(selector="app=jibri", page_size=500)
    finally:
        await cluster.close()


async def test_a_compressed_error_answer_is_read_for_its_message(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        status = {"kind": "Status", "code": 409, "message": "the object has been modified"}
        return web.Response(
            status=409,
            body=gzip.compress(json.dumps(status).encode()),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    api.handler = handler
    cluster = await cluster_for(api, pki, tmp_path)
    try:
        with pytest.raises(Conflict, match="the object has been modified"):
            await cluster.patch_pod(name="p", uid="u", patch={"metadata": {}})
    finally:
        await cluster.close()


# -- a watch that goes silent -----------------------------------------------------------------


async def test_a_silent_watch_is_taken_for_dead_and_the_pod_cache_lists_again(
    api: ApiServer, pki: Pki, tmp_path: Path
) -> None:
    """A watch whose connection stays open but carries nothing (no event, no bookmark) is
    given up after the silence allowed; the cache goes unsynced at once and lists again."""
    silence = 1.0
    watches: list[float] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            items = [pod_json(f"jibri-{n}", uid=f"u{n}", labels={"app": "jibri"}) for n in (1, 2)]
            return web.json_response(
                {"kind": "PodList", "metadata": {"resourceVersion": "10"}, "items": items}
            )
        response = web.StreamResponse()
        await response.prepare(request)
        event = {"type": "ADDED", "object": pod_json("jibri-3", uid="u3", labels={"app": "jibri"})}
        await response.write(json.dumps(event).encode() + b"\n")
        watches.append(asyncio.get_running_loop().time())
        await until_closed(request, within=20)  # then nothing, on an open connection
        return response

    api.handler = handler
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    client = await load(kubeconfig(tmp_path, api.url, {"token": "t"}, **ca))
    cluster = KubeCluster(client, namespace="ns", watch_silence=silence)
    metrics = Metrics()
    cache = PodCache(stream=cluster, selector="app=jibri", metrics=metrics, jitter=lambda: 0.0)
    running = asyncio.create_task(cache.run())
    loop = asyncio.get_running_loop()
    try:
        await until(lambda: len(watches) == 1 and len(cache) == 3)
        assert cache.synced.is_set()
        await until(lambda: not cache.synced.is_set(), within=silence + 2)
        detected_after = loop.time() - watches[0]
        await until(lambda: len(watches) == 2 and cache.synced.is_set(), within=5)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await cluster.close()
    assert silence <= detected_after < silence + 0.5
    assert [s.query.get("watch") for s in api.seen] == [None, "true", None, "true"]
    errors = metrics.registry.get_sample_value(
        "jibri_pod_controller_api_errors_total", {"operation": "watch", "kind": "silent"}
    )
    assert errors == 1
