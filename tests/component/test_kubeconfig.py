"""Kubeconfig files read by client-go's rules: what kubectl refuses is refused at start-up with
one line, how several files merge, where relative paths point.

Files on disk, no API server: what a kubeconfig yields is read off the `Endpoint` (the token a
request would carry, the server, the proxy); sending is tests/component/test_kube_client.py's.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from jibri_pod_controller.adapters import credentials
from jibri_pod_controller.adapters.credentials import CredentialsError, Endpoint, FileToken
from jibri_pod_controller.app import main
from testbed.controlplane import _issue, _new_ca

CA = _new_ca("kubeconfig-ca")
CLIENT = _issue(CA, common_name="someone")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def document(
    *,
    server: str = "https://api.example.com:6443",
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": b64(CA.cert_pem),
                    **(cluster or {}),
                },
            }
        ],
        "users": [{"name": "u", "user": {"token": "t"} if user is None else user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u", **(context or {})}}],
        "current-context": "ctx",
    }


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


async def read(*paths: Path, env: dict[str, str] | None = None) -> Endpoint:
    return await credentials.load(":".join(map(str, paths)), env or {})


EXEC_V1 = {
    "apiVersion": "client.authentication.k8s.io/v1",
    "command": "/bin/false",
    "interactiveMode": "Never",
}


def edit_cluster(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        doc["clusters"][0]["cluster"].update(fields)

    return apply


def set_user(user: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        doc["users"][0]["user"] = user

    return apply


REFUSED = [
    # The cluster (clientcmd's validateClusterInfo, client-go's TLSConfigFor).
    (
        edit_cluster(**{"certificate-authority": "ca.crt"}),
        "certificate-authority-data and certificate-authority are both given",
    ),
    (
        edit_cluster(**{"insecure-skip-tls-verify": True}),
        "insecure-skip-tls-verify with a certificate authority",
    ),
    (edit_cluster(**{"insecure-skip-tls-verify": "false"}), "must be true or false"),
    (edit_cluster(server="api.example.com:6443"), "has no scheme"),
    (edit_cluster(server="ftp://api.example.com"), "is not an https:// URL"),
    (edit_cluster(server=6443), "server must be a string"),
    (edit_cluster(**{"certificate-authority-data": "bm90IGEgY2VydA=="}), "not usable"),
    (edit_cluster(**{"proxy-url": "ftp://proxy:21"}), "must be http, https or socks5"),
    (edit_cluster(**{"proxy-url": "socks5://proxy:1080"}), "only http:// proxies"),
    (edit_cluster(**{"proxy-url": "https://proxy:3128"}), "only http:// proxies"),
    # The user (clientcmd's validateAuthInfo).
    (set_user({"token": "t", "username": "me", "password": "pw"}), "more than one authentication"),
    (set_user({"client-certificate-data": b64(CLIENT.cert_pem)}), "needs client-key"),
    (
        set_user(
            {
                "client-certificate-data": b64(CLIENT.cert_pem),
                "client-certificate": "tls.crt",
                "client-key-data": b64(CLIENT.key_pem),
            }
        ),
        "client-certificate-data and client-certificate are both given",
    ),
    (
        set_user(
            {
                "client-certificate-data": b64(CLIENT.cert_pem),
                "client-key-data": b64(CLIENT.key_pem),
                "client-key": "tls.key",
            }
        ),
        "client-key-data and client-key are both given",
    ),
    (
        set_user(
            {
                "client-certificate-data": b64(CLIENT.cert_pem),
                "client-key-data": b64(_issue(CA, common_name="other").key_pem),
            }
        ),
        "not a usable certificate and key",
    ),
    (
        set_user(
            {
                "client-certificate-data": b64(CLIENT.cert_pem),
                "client-key-data": b64(
                    CLIENT.key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.BestAvailableEncryption(b"secret"),
                    )
                ),
            }
        ),
        "an encrypted private key",
    ),
    (set_user({"tokenFile": "no-such-token"}), "cannot read token file"),
    (set_user({"token": 12345}), "token must be a string"),
    (set_user({"as-groups": ["g"], "token": "t"}), "without as"),
    (set_user({"exec": {**EXEC_V1, "interactiveMode": None}}), "needs an interactiveMode"),
    (set_user({"exec": {**EXEC_V1, "interactiveMode": "Sometimes"}}), "'Sometimes' is not one"),
    (set_user({"exec": {**EXEC_V1, "apiVersion": None}}), "needs an apiVersion"),
    (
        set_user({"exec": {**EXEC_V1, "apiVersion": "client.authentication.k8s.io/v1alpha1"}}),
        "'client.authentication.k8s.io/v1alpha1' is not one of",
    ),
    (set_user({"exec": {**EXEC_V1, "command": None}}), "exec needs a command"),
    (set_user({"exec": {**EXEC_V1, "env": [{"value": "x"}]}}), "env entry without a name"),
    (
        set_user({"exec": EXEC_V1, "auth-provider": {"name": "oidc"}}),
        "auth-provider and exec cannot both be given",
    ),
    (set_user({"auth-provider": {"name": "oidc"}}), "auth-provider 'oidc' is not supported"),
    (set_user({}), "no credentials"),
    # The context and the file.
    (lambda d: d["contexts"][0]["context"].update(user="nobody"), "user 'nobody', which is not"),
    (lambda d: d["contexts"][0]["context"].update(cluster="none"), "cluster 'none' not found"),
    (lambda d: d["clusters"].append(d["clusters"][0]), "clusters has 'c' twice"),
    (lambda d: d.update(clusters={"c": {}}), "clusters must be a list"),
    (lambda d: d.update({"current-context": ""}), "no current-context"),
]


@pytest.mark.parametrize(("edit", "message"), REFUSED)
async def test_what_kubectl_refuses_or_this_client_cannot_do_is_refused_in_one_line(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    (tmp_path / "ca.crt").write_bytes(CA.cert_pem)
    doc = document()
    edit(doc)
    with pytest.raises(CredentialsError, match=message) as caught:
        await read(write(tmp_path / "config", doc))
    assert "\n" not in str(caught.value)


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """main() configures logging once the credentials are located; put it back after."""
    root, ours = logging.getLogger(), logging.getLogger("jibri_pod_controller")
    handlers, levels = root.handlers[:], (root.level, ours.level)
    yield
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    ours.setLevel(levels[1])


@pytest.mark.usefixtures("logging_restored")
def test_a_broken_kubeconfig_stops_the_controller_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = document(cluster={"insecure-skip-tls-verify": True})
    path = write(tmp_path / "config", doc)
    env = {"POD_NAME": "c", "WEBHOOK_AUTH": "none", "KUBECONFIG": str(path)}
    assert main([], env=env) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("jibri-pod-controller: configuration error: kubeconfig ")
    assert line.endswith(
        "insecure-skip-tls-verify with a certificate authority (kubectl refuses this too)"
    )


async def test_the_first_file_to_name_an_entry_wins_whole(tmp_path: Path) -> None:
    """clientcmd's merge: the first file that defines user 'u' gives all of it (its token; the
    second file's token file is not merged in), and the first current-context wins."""
    first = document(user={"token": "from-first"})
    del first["current-context"]
    second = document(server="https://other.example.com", user={"tokenFile": "t"})
    second["contexts"].append({"name": "other", "context": {"cluster": "c", "user": "u"}})
    second["current-context"] = "other"
    third = {"current-context": "ctx"}
    endpoint = await read(
        write(tmp_path / "a" / "config", first),
        write(tmp_path / "b" / "config", second),
        write(tmp_path / "c" / "config", third),
    )
    assert endpoint.server == "https://api.example.com:6443"
    assert endpoint.token is not None
    assert await endpoint.token.token() == "from-first"
    assert endpoint.source.endswith("(context other)")


async def test_relative_paths_are_relative_to_the_file_that_holds_the_entry(
    tmp_path: Path,
) -> None:
    clusters = document(
        cluster={"certificate-authority-data": None, "certificate-authority": "ca.crt"}
    )
    del clusters["users"], clusters["contexts"]
    users = document(user={"tokenFile": "secrets/token"})
    del users["clusters"]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "ca.crt").write_bytes(CA.cert_pem)
    (tmp_path / "b" / "secrets").mkdir(parents=True)
    (tmp_path / "b" / "secrets" / "token").write_text("from-b")
    endpoint = await read(
        write(tmp_path / "a" / "config", clusters), write(tmp_path / "b" / "config", users)
    )
    assert isinstance(endpoint.token, FileToken)
    assert endpoint.token.path == tmp_path / "b" / "secrets" / "token"
    assert await endpoint.token.token() == "from-b"
    assert endpoint.tls is not None
    assert endpoint.tls.ca_pem == CA.cert_pem


async def test_a_tilde_is_a_directory_name_as_clientcmd_reads_it(tmp_path: Path) -> None:
    (tmp_path / "~").mkdir()
    (tmp_path / "~" / "token").write_text("under-a-tilde")
    endpoint = await read(write(tmp_path / "config", document(user={"tokenFile": "~/token"})))
    assert endpoint.token is not None
    assert await endpoint.token.token() == "under-a-tilde"


async def test_a_token_file_beside_a_token_wins_while_it_can_be_read(tmp_path: Path) -> None:
    """client-go sends the file's token, and the inline one only while the file is missing."""
    doc = document(user={"token": "inline", "tokenFile": "token"})
    endpoint = await read(write(tmp_path / "config", doc))
    assert endpoint.token is not None
    assert await endpoint.token.token() == "inline"
    (tmp_path / "token").write_text("from-file")
    endpoint.token.invalidate()
    assert await endpoint.token.token() == "from-file"


async def test_an_empty_file_among_others_is_an_empty_configuration(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("")
    endpoint = await read(tmp_path / "empty", write(tmp_path / "config", document()))
    assert endpoint.server == "https://api.example.com:6443"


async def test_the_server_keeps_its_path_prefix_and_loses_its_query(tmp_path: Path) -> None:
    """A Rancher-style proxied cluster: requests go under the prefix."""
    doc = document(server="https://rancher.example.com/k8s/clusters/c-1/?x=1#f")
    endpoint = await read(write(tmp_path / "config", doc))
    assert endpoint.server == "https://rancher.example.com/k8s/clusters/c-1"


async def test_a_v1beta1_plugin_without_interactive_mode_runs(tmp_path: Path) -> None:
    """clientcmd defaults interactiveMode to IfAvailable for v1beta1 (v1 must say)."""
    script = tmp_path / "plugin.sh"
    script.write_text(
        "#!/bin/sh\n"
        'echo \'{"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",'
        ' "status": {"token": "beta"}}\'\n'
    )
    script.chmod(0o755)
    user = {
        "exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "./plugin.sh"}
    }
    endpoint = await read(write(tmp_path / "config", document(user=user)))
    assert endpoint.token is not None
    assert await endpoint.token.token() == "beta"


@pytest.mark.parametrize(
    ("env", "proxy"),
    [
        ({}, None),
        ({"HTTPS_PROXY": "proxy.corp:3128"}, "http://proxy.corp:3128"),
        ({"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": ".example.com"}, None),
        (
            {"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "api.example.com:443"},
            "http://proxy.corp:3128",
        ),
        ({"HTTP_PROXY": "http://proxy.corp:3128"}, None),
        ({"ALL_PROXY": "http://proxy.corp:3128"}, None),
    ],
)
async def test_the_proxy_from_the_environment(
    tmp_path: Path, env: dict[str, str], proxy: str | None
) -> None:
    endpoint = await read(write(tmp_path / "config", document()), env=env)
    assert endpoint.proxy == proxy


async def test_the_kubeconfig_proxy_url_wins_over_the_environment(tmp_path: Path) -> None:
    doc = document(cluster={"proxy-url": "http://kubeconfig.proxy:3128"})
    env = {"HTTPS_PROXY": "http://env.proxy:3128", "NO_PROXY": "*"}
    endpoint = await read(write(tmp_path / "config", doc), env=env)
    assert endpoint.proxy == "http://kubeconfig.proxy:3128"


async def test_the_context_namespace_is_reported(tmp_path: Path) -> None:
    endpoint = await read(write(tmp_path / "config", document(context={"namespace": "jibri"})))
    assert endpoint.namespace == "jibri"
