"""Where the controller's Kubernetes credentials come from, read once at start-up.

In a cluster: the Pod's projected ServiceAccount token and CA, and the API server's address from
``KUBERNETES_SERVICE_HOST``/``_PORT``. Outside one: a kubeconfig (``KUBECONFIG``, one or more
paths, else ``~/.kube/config``) with a CA bundle (file or data, or the system's), client
certificates (file or data), a static token, a token file, or an exec plugin
(``client.authentication.k8s.io`` ExecCredential). A proxy is used only when one is configured:
the cluster's ``proxy-url``, else ``HTTPS_PROXY``/``HTTP_PROXY`` (and ``NO_PROXY``), looked up
once here rather than on every request.

Tokens that change are re-read rather than cached forever: a bound ServiceAccount token (the
kubelet rotates it; it expires within the hour) and a token file are read again at most a
minute after the last read (client-go's period), and at once after a 401; an exec plugin's
token is kept until shortly before its ``expirationTimestamp``, and refreshed after a 401.

Anything missing or malformed raises `CredentialsError`, whose message is one line naming it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0
EXEC_EXPIRY_MARGIN_SECONDS = 10.0
EXEC_TIMEOUT_SECONDS = 30.0


class CredentialsError(Exception):
    """No usable Kubernetes credentials; ``str()`` is one line naming what is missing."""


class TokenSource(Protocol):
    async def token(self) -> str: ...

    def invalidate(self) -> None:
        """The API server refused the last token (401): get a fresh one next time."""
        ...

    @property
    def refreshable(self) -> bool:
        """Whether `invalidate` can yield a different token (worth one retry after a 401)."""
        ...


@dataclass
class StaticToken:
    value: str
    refreshable: bool = False

    async def token(self) -> str:
        return self.value

    def invalidate(self) -> None:
        pass


@dataclass
class FileToken:
    """A token file (a projected ServiceAccount token, a kubeconfig ``tokenFile``)."""

    path: Path
    reread_seconds: float = TOKEN_REREAD_SECONDS
    clock: Callable[[], float] = time.monotonic
    refreshable: bool = True
    _value: str = ""
    _read_at: float | None = None

    def read_now(self) -> str:
        try:
            value = self.path.read_text().strip()
        except OSError as exc:
            raise CredentialsError(f"cannot read token file {self.path}: {exc.strerror}") from exc
        if not value:
            raise CredentialsError(f"token file {self.path} is empty")
        self._value, self._read_at = value, self.clock()
        return value

    async def token(self) -> str:
        if self._read_at is None or self.clock() - self._read_at >= self.reread_seconds:
            try:
                await asyncio.to_thread(self.read_now)
            except CredentialsError:
                if not self._value:
                    raise
                # A rotation in progress (the kubelet swaps a symlink): keep the last token.
        return self._value

    def invalidate(self) -> None:
        self._read_at = None


@dataclass
class ExecToken:
    """A kubeconfig exec plugin: runs the command, keeps its token until shortly before expiry."""

    command: str
    args: Sequence[str]
    env: Mapping[str, str]
    api_version: str
    base_dir: Path
    clock: Callable[[], float] = time.time
    refreshable: bool = True
    _value: str = ""
    _expires_at: float | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    client_cert: tuple[bytes, bytes] | None = None
    """The plugin's clientCertificateData and clientKeyData, if it returned them."""

    def _fresh(self) -> bool:
        if not self._value:
            return False
        return self._expires_at is None or self.clock() < self._expires_at

    async def token(self) -> str:
        if self._fresh():
            return self._value
        async with self._lock:
            if not self._fresh():
                await self.run()
        return self._value

    def invalidate(self) -> None:
        self._value = ""

    async def run(self) -> None:
        info = {
            "apiVersion": self.api_version,
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": orjson.dumps(info).decode()}
        command = self.command
        if os.sep in command and not os.path.isabs(command):
            command = str(self.base_dir / command)
        try:
            process = await asyncio.create_subprocess_exec(
                command,
                *self.args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise CredentialsError(f"exec plugin {self.command}: {exc.strerror}") from exc
        try:
            async with asyncio.timeout(EXEC_TIMEOUT_SECONDS):
                out, err = await process.communicate()
        except TimeoutError as exc:
            process.kill()
            await process.wait()
            raise CredentialsError(f"exec plugin {self.command}: timed out") from exc
        if process.returncode != 0:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise CredentialsError(
                f"exec plugin {self.command} exited {process.returncode}: {last[0][:200]}"
            )
        self._accept(out)

    def _accept(self, out: bytes) -> None:
        try:
            status = orjson.loads(out).get("status") or {}
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise CredentialsError(f"exec plugin {self.command}: not an ExecCredential") from exc
        token = str(status.get("token") or "")
        cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if cert and key:
            self.client_cert = (str(cert).encode(), str(key).encode())
        if not token and self.client_cert is None:
            raise CredentialsError(f"exec plugin {self.command}: no token and no certificate")
        expires = status.get("expirationTimestamp")
        self._expires_at = None
        if expires:
            try:
                at = datetime.fromisoformat(str(expires)).astimezone(UTC).timestamp()
            except ValueError as exc:
                raise CredentialsError(
                    f"exec plugin {self.command}: bad expirationTimestamp {expires!r}"
                ) from exc
            self._expires_at = at - EXEC_EXPIRY_MARGIN_SECONDS
        self._value = token


@dataclass(frozen=True)
class Endpoint:
    """Everything needed to reach and authenticate to one API server."""

    server: str
    """``https://host:port`` (no trailing slash)."""
    ssl: ssl.SSLContext | bool
    """The TLS context (CA bundle, client certificate); False skips verification (as
    ``insecure-skip-tls-verify`` asks); True is plain HTTP's placeholder."""
    token: TokenSource | None = None
    proxy: str | None = None
    server_name: str | None = None
    """``tls-server-name``: the name the server's certificate is checked against."""
    source: str = ""
    """Where these came from, for the start-up log line (never a secret)."""


def _tls_context(
    *,
    ca_file: str | None = None,
    ca_data: bytes | None = None,
    cert: tuple[bytes, bytes] | None = None,
    cert_files: tuple[str, str] | None = None,
) -> ssl.SSLContext:
    """A verifying client context: only the given CA when there is one, else the system's."""
    try:
        if ca_file or ca_data:
            context = ssl.create_default_context(
                cafile=ca_file, cadata=ca_data.decode() if ca_data else None
            )
        else:
            context = ssl.create_default_context()
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise CredentialsError(f"certificate authority {ca_file or '(data)'}: {exc}") from exc
    if cert_files is not None:
        try:
            context.load_cert_chain(cert_files[0], cert_files[1])
        except (ssl.SSLError, OSError) as exc:
            raise CredentialsError(f"client certificate {cert_files[0]}: {exc}") from exc
    elif cert is not None:
        # The ssl module loads a certificate only from a file: a private, short-lived one.
        with tempfile.TemporaryDirectory(prefix="jpc-") as directory:
            cert_path, key_path = Path(directory, "tls.crt"), Path(directory, "tls.key")
            cert_path.write_bytes(cert[0])
            key_path.touch(mode=0o600)
            key_path.write_bytes(cert[1])
            try:
                context.load_cert_chain(str(cert_path), str(key_path))
            except ssl.SSLError as exc:
                raise CredentialsError(f"client certificate data: {exc}") from exc
    return context


def bypasses_proxy(host: str, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` (names, ``.suffixes``, ``*``, addresses, CIDRs) covers ``host``."""
    host = host.strip("[]").lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        name = entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry
        if not name:
            continue
        if name == "*":
            return True
        if address is not None:
            with contextlib.suppress(ValueError):
                if address in ipaddress.ip_network(name.strip("[]"), strict=False):
                    return True
            continue
        suffix = name.lstrip(".")
        if host == suffix or host.endswith("." + suffix):
            return True
    return False


def _proxy_from_env(server: str, env: Mapping[str, str]) -> str | None:
    scheme, host = urlsplit(server).scheme, urlsplit(server).hostname or ""
    names = ("HTTPS_PROXY", "https_proxy") if scheme == "https" else ("HTTP_PROXY", "http_proxy")
    proxy = next((env[n] for n in (*names, "ALL_PROXY", "all_proxy") if env.get(n)), None)
    if proxy is None:
        return None
    no_proxy = env.get("NO_PROXY") or env.get("no_proxy") or ""
    if no_proxy and bypasses_proxy(host, no_proxy):
        return None
    return _checked_proxy(proxy, "HTTPS_PROXY" if scheme == "https" else "HTTP_PROXY")


def _checked_proxy(proxy: str, setting: str) -> str:
    if "://" not in proxy:
        proxy = f"http://{proxy}"
    if urlsplit(proxy).scheme != "http":
        raise CredentialsError(f"{setting}: only http:// proxies are supported, not {proxy!r}")
    return proxy


def in_cluster(env: Mapping[str, str], directory: Path = SERVICE_ACCOUNT_DIR) -> Endpoint:
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT") or "443"
    if not host:
        raise CredentialsError(
            f"in-cluster token {directory / 'token'} found but KUBERNETES_SERVICE_HOST is not set"
        )
    if ":" in host:
        host = f"[{host}]"
    server = f"https://{host}:{port}"
    token = FileToken(directory / "token")
    token.read_now()
    ca = directory / "ca.crt"
    return Endpoint(
        server=server,
        ssl=_tls_context(ca_file=str(ca) if ca.exists() else None),
        token=token,
        proxy=_proxy_from_env(server, env),
        source="in-cluster service account",
    )


def _data(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CredentialsError(f"kubeconfig: {what} is not base64") from exc


def _named(doc: Mapping[str, Any], key: str, inner: str) -> dict[str, tuple[dict[str, Any], Path]]:
    base = Path(str(doc["__file__"])).parent
    out: dict[str, tuple[dict[str, Any], Path]] = {}
    for entry in doc.get(key) or ():
        if isinstance(entry, Mapping) and entry.get("name") is not None:
            out[str(entry["name"])] = (dict(entry.get(inner) or {}), base)
    return out


def _read_kubeconfigs(paths: Sequence[Path]) -> list[dict[str, Any]]:
    # Imported here, not at the top: in a cluster (the ServiceAccount, no kubeconfig) the YAML
    # parser is never needed, and importing it costs 0.8 MiB of resident memory (18 modules).
    import yaml

    docs: list[dict[str, Any]] = []
    for path in paths:
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise CredentialsError(f"kubeconfig {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            problem = type(exc).__name__
            raise CredentialsError(f"kubeconfig {path}: not YAML ({problem})") from exc
        if loaded is None:
            continue
        if not isinstance(loaded, dict):
            raise CredentialsError(f"kubeconfig {path}: not a mapping")
        docs.append({**loaded, "__file__": str(path)})
    if not docs:
        raise CredentialsError(f"kubeconfig {':'.join(map(str, paths))}: empty")
    return docs


async def from_kubeconfig(paths: Sequence[Path], env: Mapping[str, str]) -> Endpoint:
    """The current context of the merged kubeconfig files (the first to set a name wins)."""
    docs = _read_kubeconfigs(paths)
    clusters: dict[str, tuple[dict[str, Any], Path]] = {}
    users: dict[str, tuple[dict[str, Any], Path]] = {}
    contexts: dict[str, tuple[dict[str, Any], Path]] = {}
    current = ""
    for doc in docs:
        for name, value in _named(doc, "clusters", "cluster").items():
            clusters.setdefault(name, value)
        for name, value in _named(doc, "users", "user").items():
            users.setdefault(name, value)
        for name, value in _named(doc, "contexts", "context").items():
            contexts.setdefault(name, value)
        current = current or str(doc.get("current-context") or "")
    where = ":".join(map(str, paths))
    if not current:
        raise CredentialsError(f"kubeconfig {where}: no current-context")
    if current not in contexts:
        raise CredentialsError(f"kubeconfig {where}: context {current!r} not found")
    context = contexts[current][0]
    cluster_name, user_name = str(context.get("cluster") or ""), str(context.get("user") or "")
    if cluster_name not in clusters:
        raise CredentialsError(f"kubeconfig {where}: cluster {cluster_name!r} not found")
    cluster, cluster_dir = clusters[cluster_name]
    user, user_dir = users.get(user_name, ({}, cluster_dir))
    server = str(cluster.get("server") or "").rstrip("/")
    if urlsplit(server).scheme not in ("https", "http") or not urlsplit(server).hostname:
        raise CredentialsError(f"kubeconfig {where}: cluster {cluster_name!r} has no server URL")

    def path(value: Any, base: Path) -> str:
        return str(base / os.path.expanduser(str(value)))

    token: TokenSource | None = None
    cert: tuple[bytes, bytes] | None = None
    cert_files: tuple[str, str] | None = None
    if user.get("client-certificate-data") or user.get("client-key-data"):
        cert = (
            _data(user.get("client-certificate-data"), "client-certificate-data"),
            _data(user.get("client-key-data"), "client-key-data"),
        )
    elif user.get("client-certificate") or user.get("client-key"):
        if not (user.get("client-certificate") and user.get("client-key")):
            raise CredentialsError(
                f"kubeconfig {where}: user {user_name!r} needs both "
                "client-certificate and client-key"
            )
        cert_files = (
            path(user["client-certificate"], user_dir),
            path(user["client-key"], user_dir),
        )
    if user.get("token"):
        token = StaticToken(str(user["token"]))
    elif user.get("tokenFile"):
        file_token = FileToken(Path(path(user["tokenFile"], user_dir)))
        file_token.read_now()
        token = file_token
    elif user.get("exec"):
        spec = user["exec"]
        if not isinstance(spec, Mapping) or not spec.get("command"):
            raise CredentialsError(f"kubeconfig {where}: user {user_name!r}: exec needs a command")
        plugin = ExecToken(
            command=str(spec["command"]),
            args=[str(a) for a in spec.get("args") or ()],
            env={
                str(e.get("name")): str(e.get("value", ""))
                for e in spec.get("env") or ()
                if isinstance(e, Mapping)
            },
            api_version=str(spec.get("apiVersion") or "client.authentication.k8s.io/v1"),
            base_dir=user_dir,
        )
        # Run once now: a broken plugin stops start-up, and a certificate it returns goes into
        # the TLS context (a token is refreshed later; a certificate is kept for the run).
        await plugin.run()
        if plugin.client_cert is not None and cert is None and cert_files is None:
            cert = plugin.client_cert
        token = plugin
    elif user.get("auth-provider") or user.get("username"):
        kind = "auth-provider" if user.get("auth-provider") else "username/password"
        raise CredentialsError(
            f"kubeconfig {where}: user {user_name!r}: {kind} is not supported "
            "(use a token, a token file, a client certificate or an exec plugin)"
        )
    elif cert is None and cert_files is None:
        raise CredentialsError(f"kubeconfig {where}: user {user_name!r} has no credentials")

    ca_file = (
        path(cluster["certificate-authority"], cluster_dir)
        if cluster.get("certificate-authority")
        else None
    )
    ca_data = (
        _data(cluster["certificate-authority-data"], "certificate-authority-data")
        if cluster.get("certificate-authority-data")
        else None
    )
    tls: ssl.SSLContext | bool = True
    if server.startswith("https"):
        pinned = ca_file or ca_data or cert or cert_files
        if cluster.get("insecure-skip-tls-verify") and not pinned:
            tls = False
        else:
            tls = _tls_context(ca_file=ca_file, ca_data=ca_data, cert=cert, cert_files=cert_files)
    proxy = (
        _checked_proxy(str(cluster["proxy-url"]), f"kubeconfig cluster {cluster_name!r} proxy-url")
        if cluster.get("proxy-url")
        else _proxy_from_env(server, env)
    )
    return Endpoint(
        server=server,
        ssl=tls,
        token=token,
        proxy=proxy,
        server_name=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
        source=f"kubeconfig {where} (context {current})",
    )


def locate(
    kubeconfig: str | None, env: Mapping[str, str], *, in_cluster_dir: Path = SERVICE_ACCOUNT_DIR
) -> list[Path] | None:
    """The kubeconfig files to read, or None for the in-cluster service account.

    ``KUBECONFIG`` when set, else the service account's token, else ``~/.kube/config``; raises
    `CredentialsError` naming all three when there is none.
    """
    if kubeconfig:
        paths = [Path(p) for p in kubeconfig.split(os.pathsep) if p]
        existing = [p for p in paths if p.exists()]
        if not existing:
            raise CredentialsError(f"KUBECONFIG: no such file: {kubeconfig}")
        return existing
    if (in_cluster_dir / "token").exists():
        return None
    home = env.get("HOME")
    default = Path(home, ".kube", "config") if home else None
    if default is not None and default.exists():
        return [default]
    raise CredentialsError(
        "no Kubernetes credentials: no in-cluster service account token "
        f"({in_cluster_dir / 'token'}), KUBECONFIG is not set and "
        f"{default if default is not None else '~/.kube/config'} does not exist"
    )


async def load(
    kubeconfig: str | None, env: Mapping[str, str], *, in_cluster_dir: Path = SERVICE_ACCOUNT_DIR
) -> Endpoint:
    """The endpoint `locate` points at, read and checked (an exec plugin is run once)."""
    paths = locate(kubeconfig, env, in_cluster_dir=in_cluster_dir)
    if paths is None:
        return in_cluster(env, in_cluster_dir)
    return await from_kubeconfig(paths, env)
