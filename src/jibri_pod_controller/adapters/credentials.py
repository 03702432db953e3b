"""Where the controller's Kubernetes credentials come from, and how they stay current.

Found once at start-up (`locate`, then `read`), the way client-go finds them for a controller:
``KUBECONFIG`` when set (one or more files), else the Pod's ServiceAccount, else
``~/.kube/config``. A kubeconfig is read by clientcmd's rules (`kubeconfig.py`): what kubectl
refuses is refused here with one line, and what kubectl accepts works, or is refused with one line
saying what is not supported. docs/credentials.md is the full account, with every difference.

Credentials that change are followed rather than fixed at start-up:

- a token file (the kubelet's projected ServiceAccount token, a kubeconfig ``tokenFile``) is read
  again a minute after the last read, and at once after a 401;
- client certificate files are looked at again at most once a second, and a changed pair is
  presented on new connections (client-go's ``ReloadTLSFiles``);
- an exec plugin's credential (a token, a client certificate, or both) is kept until its
  ``expirationTimestamp`` and refreshed after a 401; the plugin runs again only then.

A new client certificate cannot be put into an existing ``ssl.SSLContext`` for the next handshake
only (Python's ssl has no per-handshake certificate callback, which Go's client-go uses), so the
API client (`kube.ApiClient`) builds a new context and connection pool when the certificate
changes and closes the old pool, as client-go closes its connections when an exec plugin rotates
its certificate. Each `ClientCertificate` carries a serial number so that a request that fetched
the certificate before a rotation can never bring the old one back.

Anything missing or malformed raises `CredentialsError`, whose message is one line naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from jibri_pod_controller.core.proxies import ProxyEnvironment, ProxyError, proxy_for

log = logging.getLogger("jibri_pod_controller.credentials")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0
"""client-go's period for re-reading a token file."""
CERTIFICATE_RECHECK_SECONDS = 1.0
"""client-go's period for looking at client certificate files again."""
EXEC_EXPIRY_MARGIN_SECONDS = 10.0
EXEC_TIMEOUT_SECONDS = 30.0
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


class CredentialsError(Exception):
    """No usable Kubernetes credentials; ``str()`` is one line naming what is missing."""


def one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


# -- client certificates ----------------------------------------------------------------------

_serials = itertools.count(1)


@dataclass(frozen=True)
class ClientCertificate:
    """A PEM certificate chain and its private key, as presented in the TLS handshake."""

    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    serial: int = field(default_factory=lambda: next(_serials), compare=False)
    """Increases with every certificate obtained: a rotation only ever goes forward."""


def _no_passphrase() -> bytes:
    raise CredentialsError("an encrypted private key (a passphrase cannot be given)")


@contextlib.contextmanager
def _pem_files(certificate: ClientCertificate) -> Iterator[tuple[str, str]]:
    """The pair as two private files (Python's ssl loads a key from a file only), removed on
    exit."""
    with tempfile.TemporaryDirectory(prefix="jpc-") as directory:
        cert_path, key_path = Path(directory, "tls.crt"), Path(directory, "tls.key")
        cert_path.write_bytes(certificate.cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(certificate.key_pem)
        yield str(cert_path), str(key_path)


def _load_pair(context: ssl.SSLContext, certificate: ClientCertificate, what: str) -> None:
    with _pem_files(certificate) as (cert_path, key_path):
        try:
            context.load_cert_chain(cert_path, key_path, password=_no_passphrase)
        except CredentialsError as exc:
            raise CredentialsError(f"{what}: {exc}") from None
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise CredentialsError(f"{what}: not a usable certificate and key ({exc})") from None


def checked_certificate(cert_pem: bytes, key_pem: bytes, what: str) -> ClientCertificate:
    """The pair, once OpenSSL has accepted it (PEM, key matching the certificate)."""
    certificate = ClientCertificate(cert_pem=cert_pem, key_pem=key_pem)
    _load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), certificate, what)
    return certificate


@dataclass(frozen=True)
class TlsSettings:
    """How the API server is verified: its CA bundle (PEM; None for the system's) or no
    verification at all (``insecure-skip-tls-verify``). The client certificate comes apart,
    as it may change during the run."""

    ca_pem: bytes | None = field(default=None, repr=False)
    verify: bool = True

    def context(self, certificate: ClientCertificate | None) -> ssl.SSLContext:
        """A new client context presenting ``certificate`` (2 ms with a CA bundle; 50 ms with
        the system's, which are read again: once per certificate rotation at most)."""
        if not self.verify:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            try:
                context = ssl.create_default_context(
                    cadata=self.ca_pem.decode("ascii", "replace") if self.ca_pem else None
                )
            except (ssl.SSLError, ValueError) as exc:
                raise CredentialsError(f"certificate authority: not usable ({exc})") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if certificate is not None:
            _load_pair(context, certificate, "client certificate")
        return context


class CertificateSource(Protocol):
    async def certificate(self) -> ClientCertificate | None:
        """The certificate to present on new connections now (refreshed when due)."""
        ...


@dataclass(frozen=True)
class StaticCertificate:
    """A client certificate given as data (or read once from files mixed with data)."""

    value: ClientCertificate

    async def certificate(self) -> ClientCertificate | None:
        return self.value


@dataclass(frozen=True)
class _PairOnDisk:
    """What the certificate files held when read (``stamp``: inode, mtime, size of each)."""

    stamp: tuple[Any, ...]
    certificate: ClientCertificate | None
    problem: str = ""


def _file_stamp(*paths: Path) -> tuple[Any, ...]:
    stats = [os.stat(path) for path in paths]
    return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)


def _read_pair(cert_path: Path, key_path: Path, known: ClientCertificate | None) -> _PairOnDisk:
    """Read and check the pair (blocking; touches no shared state). ``known`` is returned as
    it is when the files still hold it, so that nothing rotates."""
    try:
        stamp = _file_stamp(cert_path, key_path)
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as exc:
        name = exc.filename or cert_path
        raise CredentialsError(f"client certificate {name}: {exc.strerror}") from None
    if known is not None and (cert_pem, key_pem) == (known.cert_pem, known.key_pem):
        return _PairOnDisk(stamp=stamp, certificate=known)
    certificate = checked_certificate(cert_pem, key_pem, f"client certificate {cert_path}")
    return _PairOnDisk(stamp=stamp, certificate=certificate)


def _reread_pair(
    cert_path: Path, key_path: Path, known: ClientCertificate | None, stamp: tuple[Any, ...]
) -> _PairOnDisk | None:
    """The pair again if either file changed since ``stamp`` (None if not), or the problem
    with it (blocking; touches no shared state)."""
    try:
        if _file_stamp(cert_path, key_path) == stamp:
            return None
        return _read_pair(cert_path, key_path, known)
    except (CredentialsError, OSError) as exc:
        return _PairOnDisk(stamp=stamp, certificate=None, problem=str(exc))


@dataclass
class FileCertificate:
    """Client certificate and key files, looked at again at most once a second: a pair
    replaced on disk (by cert-manager, by a sidecar) is presented on new connections. A pair
    caught half-written is ignored until both files agree.

    The files are read in a worker thread; what was read is installed here, on the loop.
    """

    cert_path: Path
    key_path: Path
    recheck_seconds: float = CERTIFICATE_RECHECK_SECONDS
    clock: Callable[[], float] = time.monotonic
    _current: ClientCertificate | None = None
    _stamp: tuple[Any, ...] = ()
    _checked_at: float | None = None
    _problem: str = ""

    def read_now(self) -> ClientCertificate:
        """Read, check and install the pair (blocking: at start-up); raises
        `CredentialsError` naming the file."""
        found = _read_pair(self.cert_path, self.key_path, self._current)
        assert found.certificate is not None
        self._current, self._stamp = found.certificate, found.stamp
        return found.certificate

    def _install(self, found: _PairOnDisk | None) -> None:
        if found is None:
            return
        if found.certificate is None:
            if found.problem != self._problem:  # said once per distinct problem
                self._problem = found.problem
                log.warning(
                    "client certificate files not reloaded; presenting the previous pair",
                    extra={"error": found.problem},
                )
            return
        self._current, self._stamp, self._problem = found.certificate, found.stamp, ""

    async def certificate(self) -> ClientCertificate | None:
        now = self.clock()
        if self._current is None:
            self._checked_at = now
            found = await asyncio.to_thread(_read_pair, self.cert_path, self.key_path, None)
            self._install(found)
        elif self._checked_at is None or now - self._checked_at >= self.recheck_seconds:
            self._checked_at = now
            self._install(
                await asyncio.to_thread(
                    _reread_pair, self.cert_path, self.key_path, self._current, self._stamp
                )
            )
        return self._current


# -- tokens -----------------------------------------------------------------------------------


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
    """A token file (a projected ServiceAccount token, a kubeconfig ``tokenFile``).

    ``fallback`` is a kubeconfig's ``token`` given beside its ``tokenFile``: client-go sends the
    file's token whenever the file can be read, and that one otherwise.
    """

    path: Path
    reread_seconds: float = TOKEN_REREAD_SECONDS
    clock: Callable[[], float] = time.monotonic
    refreshable: bool = True
    fallback: str = ""
    _value: str = ""
    _read_at: float | None = None

    def _read(self) -> str:
        """The file's token (blocking; touches no shared state)."""
        try:
            value = self.path.read_text().strip()
        except OSError as exc:
            raise CredentialsError(f"cannot read token file {self.path}: {exc.strerror}") from exc
        if not value:
            raise CredentialsError(f"token file {self.path} is empty")
        return value

    def read_now(self) -> str:
        """Read and keep the token (blocking: at start-up)."""
        self._value, self._read_at = self._read(), self.clock()
        return self._value

    async def token(self) -> str:
        if self._read_at is None or self.clock() - self._read_at >= self.reread_seconds:
            try:
                value = await asyncio.to_thread(self._read)
            except CredentialsError:
                if not self._value and not self.fallback:
                    raise
                # A rotation in progress (the kubelet swaps a symlink), or a file that is gone
                # with a token beside it: keep what there is, and look again later.
            else:
                self._value = value
            self._read_at = self.clock()
        return self._value or self.fallback

    def invalidate(self) -> None:
        self._read_at = None


# -- exec plugins -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecCredential:
    """What an exec plugin returned: a token, a client certificate, or both."""

    token: str
    certificate: ClientCertificate | None
    expires_at: float | None
    """Seconds since the epoch (``expirationTimestamp``); None: valid until refused."""


@dataclass
class ExecPlugin:
    """A kubeconfig exec plugin (``client.authentication.k8s.io`` ExecCredential).

    Runs the command, and keeps what it returned until shortly before its
    ``expirationTimestamp`` (a tenth of its remaining life, at most 10 s, so that a request is
    not refused on the boundary), or until the API server refuses it (401). Never interactive:
    the controller has no terminal, and its stdin is closed.
    """

    command: str
    args: Sequence[str]
    env: Mapping[str, str]
    api_version: str
    base_dir: Path
    install_hint: str = ""
    cluster: Mapping[str, Any] | None = None
    """``spec.cluster`` of the ExecCredential, when the kubeconfig asks ``provideClusterInfo``."""
    environ: Mapping[str, str] = field(default_factory=dict)
    """The controller's environment (the plugin sees it, then ``env`` on top)."""
    clock: Callable[[], float] = time.time
    refreshable: bool = True
    _current: ExecCredential | None = None
    _refresh_at: float | None = None
    _stale: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _fresh(self) -> bool:
        if self._current is None or self._stale:
            return False
        return self._refresh_at is None or self.clock() < self._refresh_at

    async def credential(self) -> ExecCredential:
        if not self._fresh():
            async with self._lock:
                if not self._fresh():
                    await self.run()
        assert self._current is not None
        return self._current

    async def token(self) -> str:
        return (await self.credential()).token

    async def certificate(self) -> ClientCertificate | None:
        """The certificate of the current credential. Refreshing is `token`'s part (the API
        client asks for the token first, for every request), so that one request never runs
        the plugin twice."""
        if self._current is None:
            return (await self.credential()).certificate
        return self._current.certificate

    def invalidate(self) -> None:
        self._stale = True

    def exec_info(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"interactive": False}
        if self.cluster is not None:
            spec["cluster"] = dict(self.cluster)
        return {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec}

    async def run(self) -> None:
        env = {
            **self.environ,
            **self.env,
            "KUBERNETES_EXEC_INFO": orjson.dumps(self.exec_info()).decode(),
        }
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
        except FileNotFoundError:
            hint = f" ({one_line(self.install_hint)})" if self.install_hint.strip() else ""
            raise CredentialsError(
                f"exec plugin: executable {self.command} not found{hint}"
            ) from None
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
                f"exec plugin {self.command} failed with exit code {process.returncode}: "
                f"{one_line(last[0], 200)}"
            )
        previous = self._current.certificate if self._current is not None else None
        what = f"exec plugin {self.command}"
        # Parsed, and its certificate checked (files written and read), in a worker thread;
        # installed here, on the loop.
        credential = await asyncio.to_thread(
            parse_exec_output, out, api_version=self.api_version, what=what, previous=previous
        )
        now = self.clock()
        self._current, self._stale = credential, False
        expires_at = credential.expires_at
        self._refresh_at = (
            None
            if expires_at is None
            else expires_at - min(EXEC_EXPIRY_MARGIN_SECONDS, max(0.0, expires_at - now) / 10)
        )


def parse_exec_output(
    out: bytes, *, api_version: str, what: str, previous: ClientCertificate | None
) -> ExecCredential:
    """An exec plugin's ExecCredential, checked as client-go checks it. ``previous`` is kept
    (no rotation) when the plugin returned the same certificate and key again."""
    try:
        document = orjson.loads(out)
    except orjson.JSONDecodeError:
        raise CredentialsError(f"{what}: its output is not an ExecCredential") from None
    if not isinstance(document, dict):
        raise CredentialsError(f"{what}: its output is not an ExecCredential")
    version, kind = document.get("apiVersion"), document.get("kind")
    if version != api_version:
        raise CredentialsError(
            f"{what}: configured for {api_version}, the plugin returned "
            f"apiVersion {str(version)[:80]!r}"
        )
    if kind != "ExecCredential":
        raise CredentialsError(f"{what}: returned kind {str(kind)[:80]!r}, not ExecCredential")
    status = document.get("status")
    if not isinstance(status, dict):
        raise CredentialsError(f"{what}: returned no status")
    token, cert, key = (
        status.get(k) or "" for k in ("token", "clientCertificateData", "clientKeyData")
    )
    if not all(isinstance(v, str) for v in (token, cert, key)):
        raise CredentialsError(f"{what}: token and certificate data must be strings")
    if not token and not cert and not key:
        raise CredentialsError(f"{what}: returned neither a token nor a certificate and key")
    if bool(cert) != bool(key):
        raise CredentialsError(f"{what}: returned a certificate or a key, not both")
    expires_at: float | None = None
    if status.get("expirationTimestamp"):
        stamp = str(status["expirationTimestamp"])
        try:
            expires_at = datetime.fromisoformat(stamp).astimezone(UTC).timestamp()
        except ValueError:
            raise CredentialsError(f"{what}: bad expirationTimestamp {stamp[:40]!r}") from None
    certificate: ClientCertificate | None = None
    if cert:
        pair = (cert.encode(), key.encode())
        if previous is not None and pair == (previous.cert_pem, previous.key_pem):
            certificate = previous
        else:
            certificate = checked_certificate(*pair, what)
    return ExecCredential(token=token, certificate=certificate, expires_at=expires_at)


# -- the endpoint -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Everything needed to reach and authenticate to one API server."""

    server: str
    """``https://host:port`` and any path prefix (no trailing slash)."""
    tls: TlsSettings | None = None
    """None for a plain ``http://`` server."""
    token: TokenSource | None = None
    certificate: CertificateSource | None = None
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = ()
    """Sent with every request (impersonation: ``Impersonate-User`` and its kin)."""
    proxy: str | None = None
    server_name: str | None = None
    """``tls-server-name``: the name the server's certificate is checked against."""
    namespace: str | None = None
    """The kubeconfig context's namespace, or the ServiceAccount's (never used to choose
    the controller's namespace, which is its NAMESPACE setting; reported when they differ)."""
    source: str = ""
    """Where these came from, for the start-up log line (never a secret)."""
    notes: tuple[str, ...] = ()
    """What was read but is not used, for the start-up log line."""


def env_proxy(server: str, env: Mapping[str, str]) -> str | None:
    """The proxy from ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``, by Go's rules, checked."""
    try:
        proxy = proxy_for(server, ProxyEnvironment.read(env))
    except ProxyError as exc:
        raise CredentialsError(str(exc)) from None
    if proxy is None:
        return None
    setting = "HTTPS_PROXY" if server.startswith("https:") else "HTTP_PROXY"
    return checked_proxy(proxy, setting)


def checked_proxy(proxy: str, setting: str) -> str:
    """The proxy URL if this client can use it: an ``http://`` proxy (aiohttp's CONNECT)."""
    parts = urlsplit(proxy)
    if parts.scheme != "http":
        raise CredentialsError(
            f"{setting}: only http:// proxies are supported, not {parts.scheme}:// "
            f"({proxy.rpartition('@')[2][:100]!r})"
        )
    if not parts.hostname:
        raise CredentialsError(f"{setting}: no proxy host in {proxy.rpartition('@')[2][:100]!r}")
    return proxy


# -- in a cluster -----------------------------------------------------------------------------


def in_cluster(env: Mapping[str, str], directory: Path = SERVICE_ACCOUNT_DIR) -> Endpoint:
    """client-go's ``InClusterConfig``: the ServiceAccount's token and CA, the API server at
    ``KUBERNETES_SERVICE_HOST``:``KUBERNETES_SERVICE_PORT``."""
    host = env.get("KUBERNETES_SERVICE_HOST") or ""
    port = env.get("KUBERNETES_SERVICE_PORT") or ""
    for name, value in (("KUBERNETES_SERVICE_HOST", host), ("KUBERNETES_SERVICE_PORT", port)):
        if not value:
            raise CredentialsError(
                f"in-cluster token {directory / 'token'} found but {name} is not set"
            )
    if ":" in host:
        host = f"[{host}]"
    server = f"https://{host}:{port}"
    token = FileToken(directory / "token")
    token.read_now()
    ca_path = directory / "ca.crt"
    ca_pem: bytes | None = None
    if ca_path.exists():
        try:
            ca_pem = ca_path.read_bytes()
        except OSError as exc:
            raise CredentialsError(f"in-cluster CA {ca_path}: {exc.strerror}") from None
    tls = TlsSettings(ca_pem=ca_pem)
    tls.context(None)  # a CA bundle that cannot be used stops start-up here
    namespace: str | None = None
    with contextlib.suppress(OSError):
        namespace = (directory / "namespace").read_text().strip() or None
    return Endpoint(
        server=server,
        tls=tls,
        token=token,
        proxy=env_proxy(server, env),
        namespace=namespace,
        source="in-cluster service account",
    )


# -- finding them -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where the credentials are: kubeconfig files, or (none given) the ServiceAccount."""

    kubeconfigs: tuple[Path, ...]
    in_cluster_dir: Path = SERVICE_ACCOUNT_DIR


def locate(
    kubeconfig: str | None, env: Mapping[str, str], *, in_cluster_dir: Path = SERVICE_ACCOUNT_DIR
) -> Location:
    """Where to read the credentials from; nothing is read yet.

    ``KUBECONFIG`` when set (its files that exist; none existing is an error here, where
    client-go would go on to the in-cluster account), else the ServiceAccount's token, else
    ``~/.kube/config``; raises `CredentialsError` naming all three when there is none.
    """
    if kubeconfig:
        paths = list(dict.fromkeys(Path(p) for p in kubeconfig.split(os.pathsep) if p))
        existing = tuple(p for p in paths if p.exists())
        if not existing:
            raise CredentialsError(f"KUBECONFIG: no such file: {kubeconfig}")
        return Location(kubeconfigs=existing, in_cluster_dir=in_cluster_dir)
    if (in_cluster_dir / "token").exists():
        return Location(kubeconfigs=(), in_cluster_dir=in_cluster_dir)
    home = env.get("HOME")
    default = Path(home, ".kube", "config") if home else None
    if default is not None and default.exists():
        return Location(kubeconfigs=(default,), in_cluster_dir=in_cluster_dir)
    raise CredentialsError(
        "no Kubernetes credentials: no in-cluster service account token "
        f"({in_cluster_dir / 'token'}), KUBECONFIG is not set and "
        f"{default if default is not None else '~/.kube/config'} does not exist"
    )


async def read(location: Location, env: Mapping[str, str]) -> Endpoint:
    """The endpoint at ``location``, read and checked (an exec plugin is run once)."""
    if not location.kubeconfigs:
        return in_cluster(env, location.in_cluster_dir)
    from jibri_pod_controller.adapters import kubeconfig  # the YAML parser, kubeconfigs only

    return await kubeconfig.endpoint(location.kubeconfigs, env)


async def load(
    kubeconfig: str | None, env: Mapping[str, str], *, in_cluster_dir: Path = SERVICE_ACCOUNT_DIR
) -> Endpoint:
    """`locate` then `read`."""
    return await read(locate(kubeconfig, env, in_cluster_dir=in_cluster_dir), env)
