"""A kubeconfig read by client-go's rules (``tools/clientcmd``), into an `Endpoint`.

The files of ``KUBECONFIG`` are merged as clientcmd merges them: for clusters, users and contexts
the first file to define a name wins (its whole entry; a second file's entry of that name is not
merged in), and so does the first ``current-context``; a name defined twice in one file is an
error. Relative paths are relative to the directory of the file that holds the entry, and ``~``
is not expanded (clientcmd does neither). Field types are checked as Go's decoder checks them:
``insecure-skip-tls-verify: "false"`` (a string) is refused, not read as true.

The current context's cluster and user are then checked as ``clientcmd.ConfirmUsable`` and
client-go's transport check them, with kubectl's messages in substance, so that a kubeconfig
kubectl refuses is refused here, at start-up, with one line. What kubectl accepts and this
controller cannot do (an ``auth-provider``, a SOCKS or HTTPS proxy, a server without a scheme, a
user with no credentials at all) is refused the same way, saying so. docs/credentials.md lists
every difference.

The YAML parser is imported with this module, which only a kubeconfig needs (0.8 MiB of resident
memory that an in-cluster replica never pays).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from jibri_pod_controller.adapters.credentials import (
    EXEC_API_VERSIONS,
    CertificateSource,
    CredentialsError,
    Endpoint,
    ExecPlugin,
    FileCertificate,
    FileToken,
    StaticCertificate,
    StaticToken,
    TlsSettings,
    TokenSource,
    checked_certificate,
    checked_proxy,
    env_proxy,
    one_line,
)

EXEC_EXTENSION = "client.authentication.k8s.io/exec"
"""The cluster extension whose value an exec plugin receives as ``spec.cluster.config``."""
INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")


@dataclass(frozen=True)
class Entry:
    """A named cluster, user or context, and the file that defined it."""

    name: str
    value: Mapping[str, Any]
    file: Path

    @property
    def base(self) -> Path:
        return self.file.absolute().parent


class Fields:
    """Typed access to one mapping of a kubeconfig; a value of the wrong type is refused
    naming the field (Go's decoder refuses it too)."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data = data
        self.where = where

    def _wrong(self, key: str, wanted: str) -> CredentialsError:
        value = self.data.get(key)
        return CredentialsError(f"{self.where}: {key} must be {wanted}, not {value!r:.40}")

    def text(self, key: str) -> str:
        value = self.data.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self._wrong(key, "a string")
        return value

    def flag(self, key: str) -> bool:
        value = self.data.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false")
        return value

    def texts(self, key: str) -> list[str]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._wrong(key, "a list of strings")
        return value

    def mapping(self, key: str) -> Mapping[str, Any] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self._wrong(key, "a mapping")
        return value

    def data_bytes(self, key: str) -> bytes:
        """A ``-data`` field: base64 (line breaks allowed, as Go's decoder allows them)."""
        value = self.text(key)
        try:
            return base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
        except (binascii.Error, ValueError):
            raise CredentialsError(f"{self.where}: {key} is not base64") from None

    def path(self, key: str, base: Path) -> Path | None:
        value = self.text(key)
        return base / value if value else None


@dataclass(frozen=True)
class Merged:
    clusters: Mapping[str, Entry]
    users: Mapping[str, Entry]
    contexts: Mapping[str, Entry]
    current_context: str


def read_documents(paths: Sequence[Path]) -> list[tuple[Path, Mapping[str, Any]]]:
    documents: list[tuple[Path, Mapping[str, Any]]] = []
    for path in paths:
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise CredentialsError(f"kubeconfig {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            problem = type(exc).__name__
            raise CredentialsError(f"kubeconfig {path}: not YAML ({problem})") from exc
        if loaded is None:  # an empty file is an empty configuration
            continue
        if not isinstance(loaded, dict):
            raise CredentialsError(f"kubeconfig {path}: not a mapping")
        documents.append((path, loaded))
    return documents


def _named(path: Path, document: Mapping[str, Any], key: str, inner: str) -> list[Entry]:
    entries = document.get(key)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise CredentialsError(f"kubeconfig {path}: {key} must be a list")
    found: list[Entry] = []
    seen: set[str] = set()
    for item in entries:
        if not isinstance(item, Mapping) or not isinstance(item.get("name", ""), str):
            raise CredentialsError(f"kubeconfig {path}: {key} must be a list of named entries")
        name = str(item.get("name") or "")
        if name in seen:
            raise CredentialsError(f"kubeconfig {path}: {key} has {name!r} twice")
        seen.add(name)
        value = item.get(inner) or {}
        if not isinstance(value, Mapping):
            raise CredentialsError(f"kubeconfig {path}: {key} {name!r}: {inner} must be a mapping")
        found.append(Entry(name=name, value=value, file=path))
    return found


def merge(documents: Sequence[tuple[Path, Mapping[str, Any]]]) -> Merged:
    """clientcmd's merge: the first file to define a name, or ``current-context``, wins."""
    clusters: dict[str, Entry] = {}
    users: dict[str, Entry] = {}
    contexts: dict[str, Entry] = {}
    current = ""
    for path, document in documents:
        for key, inner, table in (
            ("clusters", "cluster", clusters),
            ("users", "user", users),
            ("contexts", "context", contexts),
        ):
            for entry in _named(path, document, key, inner):
                table.setdefault(entry.name, entry)
        if not current:
            current = Fields(document, f"kubeconfig {path}").text("current-context")
    return Merged(clusters=clusters, users=users, contexts=contexts, current_context=current)


def _impersonation(user: Fields) -> tuple[tuple[str, str], ...]:
    """client-go's impersonation headers for ``as``, ``as-uid``, ``as-groups``,
    ``as-user-extra``."""
    name, uid, groups = user.text("as"), user.text("as-uid"), user.texts("as-groups")
    extra = user.mapping("as-user-extra") or {}
    if (uid or groups or extra) and not name:
        raise CredentialsError(
            f"{user.where}: as-uid, as-groups or as-user-extra without as (a user to impersonate)"
        )
    if not name:
        return ()
    headers = [("Impersonate-User", name)]
    if uid:
        headers.append(("Impersonate-Uid", uid))
    headers.extend(("Impersonate-Group", group) for group in groups)
    for key, values in extra.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise CredentialsError(f"{user.where}: as-user-extra values must be lists of strings")
        headers.extend((f"Impersonate-Extra-{header_key_escape(str(key))}", v) for v in values)
    return tuple(headers)


_TOKEN_BYTES = frozenset(
    b"!#$&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def header_key_escape(key: str) -> str:
    """client-go's ``headerKeyEscape``: bytes not allowed in a header name (and ``%``) are
    percent-encoded."""
    return "".join(chr(b) if b in _TOKEN_BYTES else f"%{b:02X}" for b in key.encode("utf-8"))


def _exec_plugin(
    spec: Fields, *, user: Entry, cluster_info: dict[str, Any] | None, env: Mapping[str, str]
) -> tuple[ExecPlugin, str]:
    """The plugin of ``users[].user.exec`` as clientcmd validates it, and its interactiveMode."""
    problems: list[str] = []
    command, version = spec.text("command"), spec.text("apiVersion")
    if not command:
        problems.append("exec needs a command")
    if not version:
        problems.append("exec needs an apiVersion")
    elif version not in EXEC_API_VERSIONS:
        problems.append(f"exec apiVersion {version!r} is not one of {', '.join(EXEC_API_VERSIONS)}")
    variables: dict[str, str] = {}
    raw_env = spec.data.get("env") or []
    if not isinstance(raw_env, list):
        raise CredentialsError(f"{spec.where}: env must be a list")
    for item in raw_env:
        entry = Fields(item if isinstance(item, Mapping) else {}, f"{spec.where} env")
        if not entry.text("name"):
            problems.append("an exec env entry without a name")
        else:
            variables[entry.text("name")] = entry.text("value")
    mode = spec.text("interactiveMode")
    if not mode and version.endswith("/v1beta1"):
        mode = "IfAvailable"  # clientcmd's default for v1beta1; v1 must say
    if not mode:
        problems.append("exec needs an interactiveMode (Never or IfAvailable)")
    elif mode not in INTERACTIVE_MODES:
        problems.append(f"exec interactiveMode {mode!r} is not one of Never, IfAvailable, Always")
    if problems:
        raise CredentialsError(f"{spec.where}: {'; '.join(problems)}")
    plugin = ExecPlugin(
        command=command,
        args=spec.texts("args"),
        env=variables,
        api_version=version,
        base_dir=user.base,
        install_hint=spec.text("installHint"),
        cluster=cluster_info if spec.flag("provideClusterInfo") else None,
        environ=env,
    )
    return plugin, mode


def _exec_cluster_info(
    *, server: str, cluster: Fields, ca_pem: bytes | None, proxy_url: str
) -> dict[str, Any]:
    """``spec.cluster`` for a plugin that asks ``provideClusterInfo`` (client-go's
    ``ConfigToExecCluster``): the CA always as data, the cluster's exec extension as
    ``config``."""
    info: dict[str, Any] = {"server": server}
    if cluster.text("tls-server-name"):
        info["tls-server-name"] = cluster.text("tls-server-name")
    if cluster.flag("insecure-skip-tls-verify"):
        info["insecure-skip-tls-verify"] = True
    if ca_pem:
        info["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    if proxy_url:
        info["proxy-url"] = proxy_url
    if cluster.flag("disable-compression"):
        info["disable-compression"] = True
    extensions = cluster.data.get("extensions") or []
    if isinstance(extensions, list):
        for extension in extensions:
            if isinstance(extension, Mapping) and extension.get("name") == EXEC_EXTENSION:
                info["config"] = extension.get("extension")
    return info


def _server(cluster: Fields) -> str:
    server = cluster.text("server")
    if not server:
        raise CredentialsError(f"{cluster.where}: no server")
    parts = urlsplit(server)
    if "://" not in server:
        raise CredentialsError(
            f"{cluster.where}: server {server[:100]!r} has no scheme (kubectl would speak plain "
            "http:// to it and send no credentials); write https://"
        )
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise CredentialsError(f"{cluster.where}: server {server[:100]!r} is not an https:// URL")
    # client-go keeps a path prefix (a proxy's /k8s/clusters/<id>), drops query and fragment.
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"{what}: cannot read {path}: {exc.strerror}") from None


async def endpoint(paths: Sequence[Path], env: Mapping[str, str]) -> Endpoint:
    """The current context of the merged files, checked; an exec plugin is run once."""
    where = ":".join(map(str, paths))
    merged = merge(read_documents(paths))
    if not merged.clusters and not merged.users and not merged.contexts:
        raise CredentialsError(f"kubeconfig {where}: empty")
    if not merged.current_context:
        raise CredentialsError(f"kubeconfig {where}: no current-context")
    context_entry = merged.contexts.get(merged.current_context)
    if context_entry is None:
        raise CredentialsError(f"kubeconfig {where}: context {merged.current_context!r} not found")
    context = Fields(
        context_entry.value, f"kubeconfig {context_entry.file}: context {context_entry.name!r}"
    )
    cluster_name, user_name = context.text("cluster"), context.text("user")
    cluster_entry = merged.clusters.get(cluster_name)
    if cluster_entry is None:
        raise CredentialsError(f"kubeconfig {where}: cluster {cluster_name!r} not found")
    cluster = Fields(
        cluster_entry.value, f"kubeconfig {cluster_entry.file}: cluster {cluster_name!r}"
    )
    user_entry = merged.users.get(user_name)
    if user_entry is None:
        raise CredentialsError(
            f"kubeconfig {where}: context {merged.current_context!r} names user "
            f"{user_name!r}, which is not defined (kubectl would send no credentials)"
        )
    user = Fields(user_entry.value, f"kubeconfig {user_entry.file}: user {user_name!r}")
    notes: list[str] = []

    # -- the cluster (clientcmd validateClusterInfo, then client-go's TLSConfigFor) ----------
    server = _server(cluster)
    insecure = cluster.flag("insecure-skip-tls-verify")
    ca_file = cluster.path("certificate-authority", cluster_entry.base)
    ca_data = (
        cluster.data_bytes("certificate-authority-data")
        if cluster.text("certificate-authority-data")
        else None
    )
    if ca_file is not None and ca_data is not None:
        raise CredentialsError(
            f"{cluster.where}: certificate-authority-data and certificate-authority are both "
            "given (kubectl refuses this too)"
        )
    ca_pem = ca_data
    if ca_file is not None:
        ca_pem = _read_file(ca_file, f"{cluster.where}: certificate-authority")
    proxy_url = cluster.text("proxy-url")
    proxy: str | None = None
    if proxy_url:
        scheme = urlsplit(proxy_url).scheme
        if scheme not in ("http", "https", "socks5"):
            raise CredentialsError(
                f"{cluster.where}: proxy-url scheme {scheme!r} must be http, https or socks5"
            )
        proxy = checked_proxy(proxy_url, f"{cluster.where}: proxy-url")
    else:
        proxy = env_proxy(server, env)

    # -- the user (clientcmd validateAuthInfo) ---------------------------------------------
    token, token_path = user.text("token"), user.path("tokenFile", user_entry.base)
    username, password = user.text("username"), user.text("password")
    if token and (username or password):
        raise CredentialsError(
            f"{user.where}: more than one authentication method (token and username/password); "
            "only one is allowed"
        )
    cert_file = user.path("client-certificate", user_entry.base)
    key_file = user.path("client-key", user_entry.base)
    cert_data = (
        user.data_bytes("client-certificate-data") if user.text("client-certificate-data") else None
    )
    key_data = user.data_bytes("client-key-data") if user.text("client-key-data") else None
    has_cert = cert_file is not None or cert_data is not None
    has_key = key_file is not None or key_data is not None
    if has_cert:
        if cert_file is not None and cert_data is not None:
            raise CredentialsError(
                f"{user.where}: client-certificate-data and client-certificate are both given"
            )
        if key_file is not None and key_data is not None:
            raise CredentialsError(f"{user.where}: client-key-data and client-key are both given")
        if not has_key:
            raise CredentialsError(f"{user.where}: a client certificate needs client-key(-data)")
    elif has_key:
        notes.append("client-key without client-certificate: ignored, as kubectl ignores it")
    exec_spec = user.mapping("exec")
    provider = user.mapping("auth-provider")
    if exec_spec is not None and provider is not None:
        raise CredentialsError(f"{user.where}: auth-provider and exec cannot both be given")
    headers = _impersonation(user)

    if server.startswith("http:"):
        # client-go sends no credentials and no client certificate over plain HTTP.
        return Endpoint(
            server=server,
            proxy=proxy,
            headers=headers,
            namespace=context.text("namespace") or None,
            source=f"kubeconfig {where} (context {merged.current_context}, plain HTTP)",
            notes=(*notes, "plain http:// server: no credentials are sent"),
        )
    if insecure and ca_pem is not None:
        raise CredentialsError(
            f"{cluster.where}: insecure-skip-tls-verify with a certificate authority "
            "(kubectl refuses this too)"
        )
    tls = TlsSettings(ca_pem=ca_pem, verify=not insecure)
    tls.context(None)  # a CA bundle that cannot be used stops start-up here

    certificate: CertificateSource | None = None
    if has_cert:
        if cert_file is not None and key_file is not None:
            files = FileCertificate(cert_file, key_file)
            files.read_now()
            certificate = files
        else:
            cert_pem = (
                cert_data
                if cert_data is not None
                else _read_file(cert_file or Path(), f"{user.where}: client-certificate")
            )
            key_pem = (
                key_data
                if key_data is not None
                else _read_file(key_file or Path(), f"{user.where}: client-key")
            )
            certificate = StaticCertificate(
                checked_certificate(cert_pem, key_pem, f"{user.where}: client certificate")
            )
    source: TokenSource | None = None
    if token_path is not None:
        file_token = FileToken(token_path, fallback=token)
        if not token:
            file_token.read_now()
        source = file_token
    elif token:
        source = StaticToken(token)
    basic = (username, password) if username else None

    if exec_spec is not None:
        plugin, mode = _exec_plugin(
            Fields(exec_spec, f"{user.where}: exec"),
            user=user_entry,
            cluster_info=_exec_cluster_info(
                server=server, cluster=cluster, ca_pem=ca_pem, proxy_url=proxy_url
            ),
            env=env,
        )
        if source is not None or basic is not None or certificate is not None:
            # client-go runs no plugin for a user that has a token, a password or a certificate.
            notes.append("exec plugin not run: the user has other credentials")
        elif mode == "Always":
            raise CredentialsError(
                f"{user.where}: exec interactiveMode Always needs a terminal, and the "
                "controller has none"
            )
        else:
            await plugin.run()  # a broken plugin stops start-up
            source, certificate = plugin, plugin
    if provider is not None and source is None and basic is None:
        kind = one_line(str(provider.get("name") or "?"), 40)
        raise CredentialsError(
            f"{user.where}: auth-provider {kind!r} is not supported (use an exec plugin, "
            "a token, a token file or a client certificate)"
        )
    if source is None and basic is None and certificate is None:
        raise CredentialsError(f"{user.where}: no credentials (kubectl would send none)")
    if provider is not None:
        notes.append("auth-provider ignored: the user has a token or a password")
    return Endpoint(
        server=server,
        tls=tls,
        token=source,
        certificate=certificate,
        basic_auth=basic,
        headers=headers,
        proxy=proxy,
        server_name=cluster.text("tls-server-name") or None,
        namespace=context.text("namespace") or None,
        source=f"kubeconfig {where} (context {merged.current_context})",
        notes=tuple(notes),
    )
