"""The API client against a local TLS server: every kind of credential, the CA, proxies, errors.

The server is a real HTTPS server (aiohttp) with its own CA, asking for an optional client
certificate; it records what each request carried (path, bearer token, client certificate's
common name, whether it came through the proxy) and answers as the test tells it. The proxy is
a real CONNECT proxy that records where it tunnelled to.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from jibri_pod_controller.adapters import credentials
from jibri_pod_controller.adapters.credentials import CredentialsError, FileToken
from jibri_pod_controller.adapters.kube import (
    ApiClient,
    Conflict,
    Forbidden,
    Gone,
    KubeCluster,
    Unavailable,
)
from jibri_pod_controller.app import main
from testbed.controlplane import _issue, _KeyPair, _new_ca

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
        server=_issue(ca, common_name="api", server_names=["127.0.0.1"]),
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
            Seen(request.path, request.method, token, cn, await request.read(), dict(request.query))
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


async def test_in_cluster_without_the_service_host_names_it(pki: Pki, tmp_path: Path) -> None:
    directory = service_account(tmp_path, pki, "t")
    with pytest.raises(CredentialsError, match="KUBERNETES_SERVICE_HOST is not set"):
        await credentials.load(None, {}, in_cluster_dir=directory)


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


async def test_a_failing_exec_plugin_stops_start_up_with_its_message(
    api: ApiServer, tmp_path: Path
) -> None:
    script = tmp_path / "fail.py"
    script.write_text("import sys\nprint('login required', file=sys.stderr)\nsys.exit(3)\n")
    path = kubeconfig(tmp_path, api.url, exec_user(script))
    with pytest.raises(CredentialsError, match="exited 3: login required"):
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
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    record.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield record
    server.close()


@pytest.mark.parametrize(
    ("env", "through_proxy"),
    [
        ({}, False),
        ({"HTTPS_PROXY": "{proxy}"}, True),
        ({"https_proxy": "{proxy}", "NO_PROXY": "example.com,127.0.0.0/8"}, False),
        ({"HTTP_PROXY": "{proxy}"}, False),  # for http:// servers only
    ],
)
async def test_a_proxy_is_used_only_when_configured(
    api: ApiServer,
    pki: Pki,
    proxy: Proxy,
    tmp_path: Path,
    env: dict[str, str],
    through_proxy: bool,
) -> None:
    ca = {"certificate-authority-data": _b64(pki.ca.cert_pem)}
    path = kubeconfig(tmp_path, api.url, {"token": "t"}, **ca)
    client = await load(path, {k: v.format(proxy=proxy.url) for k, v in env.items()})
    try:
        await get(client)
    finally:
        await client.close()
    assert len(api.seen) == 1
    assert proxy.tunnels == ([f"127.0.0.1:{api.port}"] if through_proxy else [])


async def test_the_kubeconfig_proxy_url(
    api: ApiServer, pki: Pki, proxy: Proxy, tmp_path: Path
) -> None:
    cluster = {"certificate-authority-data": _b64(pki.ca.cert_pem), "proxy-url": proxy.url}
    client = await load(kubeconfig(tmp_path, api.url, {"token": "t"}, **cluster))
    try:
        await get(client)
    finally:
        await client.close()
    assert proxy.tunnels == [f"127.0.0.1:{api.port}"]


@pytest.mark.parametrize(
    ("host", "no_proxy", "bypass"),
    [
        ("10.0.0.1", "10.0.0.0/8", True),
        ("10.0.0.1", "192.168.0.0/16", False),
        ("api.example.com", ".example.com", True),
        ("api.example.com", "example.com", True),
        ("example.com.evil", "example.com", False),
        ("kubernetes.default.svc", "*", True),
        ("[fd00::1]", "fd00::/8", True),
        ("api.example.com", "api.example.com:6443", True),
    ],
)
def test_no_proxy_matching(host: str, no_proxy: str, bypass: bool) -> None:
    assert credentials.bypasses_proxy(host, no_proxy) is bypass


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
        (lambda d: d["users"][0].update({"user": {}}), "user 'u' has no credentials"),
        (
            lambda d: d["users"][0].update({"user": {"auth-provider": {"name": "gcp"}}}),
            "auth-provider is not supported",
        ),
        (lambda d: d["clusters"][0]["cluster"].pop("server"), "has no server URL"),
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
