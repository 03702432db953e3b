"""A real Kubernetes control plane on this machine: etcd, kube-apiserver, kube-controller-manager.

Used by the end-to-end tests, the demo and the benchmarks. There is no scheduler and no kubelet:
Deployments and ReplicaSets create pods, and `testbed.kubelet.FakeKubelet` makes them look like
running Jibris. The binaries are built from the Go module proxy by
`scripts/build-control-plane.sh` and cached outside the repository.

The one thing a reader might get wrong: authentication is by client certificates only. Every
identity handed out by `kubeconfig_for` is a certificate signed by the plane's client CA, so a
username and its groups are exactly what RBAC sees, and `audit_events` can attribute every write
to the identity that made it. The admin identity is in `system:masters` and bypasses RBAC.

    python -m testbed.controlplane     # start a plane, print the admin kubeconfig, stop on Ctrl-C
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import datetime
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "ADMIN_USER",
    "CONTROLLER_MANAGER_USER",
    "ENV_KUBECONFIG",
    "ControlPlane",
    "ControlPlaneError",
    "NeedsLocalPlaneError",
    "find_binaries",
    "main",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-control-plane.sh"

#: Names a kubeconfig of an existing cluster to use instead of a local plane.
ENV_KUBECONFIG = "JPC_E2E_KUBECONFIG"

ADMIN_USER = "jpc-admin"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "namespace-controller",
)
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"

ETCD_TIMEOUT_S = 30.0
APISERVER_TIMEOUT_S = 90.0
CONTROLLER_MANAGER_TIMEOUT_S = 60.0
START_ATTEMPTS = 3
STOP_GRACE_S = 10.0

READS_AUDITED_GROUP = "jpc:reads-audited"
"""A group with no rights of its own: a client identity that also carries it has its reads
(get, list, watch) audited as well, so a benchmark can count every call of one controller."""

# Metadata (who, what, when, response code) of every write, and the body of pod patches (a
# detach and a pool's deletion-cost mark are both patches: the chaos checker tells them apart);
# reads only for READS_AUDITED_GROUP.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "Request",
            "verbs": ["patch"],
            "resources": [{"group": "", "resources": ["pods"]}],
        },
        {
            "level": "Metadata",
            "verbs": ["create", "update", "patch", "delete", "deletecollection"],
        },
        {
            "level": "Metadata",
            "userGroups": [READS_AUDITED_GROUP],
            "verbs": ["get", "list", "watch"],
        },
        {"level": "None"},
    ],
}

# A line the controller manager logs once its deployment controller runs, e.g.
# `"Starting controller" controller="deployment"`.
_DEPLOYMENT_CONTROLLER_STARTED = re.compile(r'Starting controller"?\s+controller="?deployment\b')


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or used."""


class NeedsLocalPlaneError(ControlPlaneError, NotImplementedError):
    """The operation needs the local plane's CA or audit log, not an existing cluster."""


class _StartFailedError(ControlPlaneError):
    """A component exited during start-up (usually a port taken meanwhile); worth a retry."""


# --------------------------------------------------------------------------------------------
# Binaries


def find_binaries(*, build_script: Path = BUILD_SCRIPT) -> Path:
    """Run the build script (instant when cached) and return the directory of the binaries."""
    started = time.monotonic()
    try:
        proc = subprocess.run(
            ["bash", str(build_script)],
            cwd=build_script.parent.parent,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise ControlPlaneError(f"cannot run {build_script}: {exc}") from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise ControlPlaneError(
            f"{build_script} failed with exit code {proc.returncode} after "
            f"{time.monotonic() - started:.0f} s; last lines of its output:\n{tail}"
        )
    directory = Path(lines[-1])
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        if not os.access(directory / name, os.X_OK):
            raise ControlPlaneError(f"{build_script} printed {directory}, but {name} is not there")
    return directory


# --------------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True)
class _KeyPair:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _new_ca(common_name: str) -> _KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = _name(common_name)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _KeyPair(key, cert)


def _issue(
    ca: _KeyPair,
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    server_names: Sequence[str] = (),
) -> _KeyPair:
    """A leaf certificate: a server certificate if `server_names` is given, else a client one."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if server_names:
        alt_names: list[x509.GeneralName] = []
        for entry in server_names:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(entry)))
            except ValueError:
                alt_names.append(x509.DNSName(entry))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return _KeyPair(key, builder.sign(ca.key, hashes.SHA256()))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


# --------------------------------------------------------------------------------------------
# Processes and ports


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _Component:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    argv: tuple[str, ...] = ()

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the whole process group at once (no clean shutdown) and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log_file.close()

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_GRACE_S)
        # Kill the whole group, also when the leader is gone, so nothing it forked survives.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log_file.close()


def _spawn(name: str, argv: Sequence[str], log_dir: Path) -> _Component:
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("ab")
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    except BaseException:
        log_file.close()
        raise
    return _Component(name, process, log_path, log_file, tuple(argv))


def _https_get(port: int, path: str, context: ssl.SSLContext) -> tuple[int, str]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def _http_get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def _wait(component: _Component, timeout: float, check: Callable[[], bool], what: str) -> None:
    """Poll `check()` until it returns True; fail fast if the component exits."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        if not component.alive():
            raise _StartFailedError(
                f"{component.name} exited with code {component.process.returncode} while "
                f"waiting for {what}; last lines of {component.log_path}:\n"
                f"{component.log_tail()}"
            )
        try:
            if check():
                return
        except (OSError, http.client.HTTPException) as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise ControlPlaneError(
                f"{component.name} did not become ready ({what}) within {timeout:.0f} s "
                f"(last: {last}); last lines of {component.log_path}:\n{component.log_tail()}"
            )
        time.sleep(0.1)


def _kubeconfig(*, server: str, ca_pem: bytes, user: str, client: _KeyPair) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "jpc",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert_pem),
                    "client-key-data": _b64(client.key_pem),
                },
            }
        ],
        "contexts": [{"name": "jpc", "context": {"cluster": "jpc", "user": user}}],
        "current-context": "jpc",
    }


def _safe_file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "user"


# Planes still running at interpreter exit are stopped then, so no component outlives a test run
# that ended without teardown.
_RUNNING: set[ControlPlane] = set()


@atexit.register
def _stop_leftovers() -> None:
    for plane in list(_RUNNING):
        plane.stop()


# --------------------------------------------------------------------------------------------
# The plane


class ControlPlane:
    """A started control plane (or, via `from_environment`, an existing cluster)."""

    server: str
    admin_kubeconfig: Path
    workdir: Path | None

    def __init__(self) -> None:
        # Use `start()` or `from_environment()`.
        self.server = ""
        self.admin_kubeconfig = Path()
        self.workdir = None
        self.binaries: Path | None = None
        self._owns_workdir = False
        self._components: list[_Component] = []
        self._client_ca: _KeyPair | None = None
        self._admin: _KeyPair | None = None
        self._serving_ca_pem = b""
        self._lock = threading.Lock()
        self._stopped = False
        self._audit: list[dict[str, Any]] = []
        self._audit_offset = 0

    # -- construction

    @classmethod
    def start(cls, workdir: Path | None = None) -> ControlPlane:
        """Build the binaries if needed and start etcd, kube-apiserver, kube-controller-manager.

        With `workdir`, certificates, kubeconfigs, data and logs live there and stay after
        `stop()`; without, a temporary directory is used and removed by `stop()` (but kept when
        start-up fails). Raises `ControlPlaneError` with the tail of the failing component's log.
        """
        binaries = find_binaries()
        plane = cls()
        plane.binaries = binaries
        if workdir is None:
            plane.workdir = Path(tempfile.mkdtemp(prefix="jpc-control-plane-"))
            plane._owns_workdir = True
        else:
            plane.workdir = workdir.resolve()
            plane.workdir.mkdir(parents=True, exist_ok=True)
        _RUNNING.add(plane)
        try:
            plane._write_pki()
            for attempt in range(1, START_ATTEMPTS + 1):
                try:
                    plane._start_components()
                    break
                except _StartFailedError:
                    plane._stop_components()
                    if attempt == START_ATTEMPTS:
                        raise
        except BaseException:
            plane._owns_workdir = False  # keep the logs the error message points to
            plane.stop()
            raise
        return plane

    @classmethod
    def from_environment(cls) -> ControlPlane:
        """Wrap the cluster named by $JPC_E2E_KUBECONFIG, or else start a local plane."""
        kubeconfig = os.environ.get(ENV_KUBECONFIG)
        if not kubeconfig:
            return cls.start()
        path = Path(kubeconfig).expanduser().resolve()
        if not path.is_file():
            raise ControlPlaneError(f"{ENV_KUBECONFIG}={kubeconfig}: no such file")
        plane = cls()
        plane.admin_kubeconfig = path
        plane.server = _server_of(path)
        return plane

    @property
    def local(self) -> bool:
        """True for a plane started here; False for an existing cluster."""
        return self.workdir is not None

    # -- identities and audit

    def kubeconfig_for(self, username: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig authenticating as `username` in `groups` (a client certificate).

        For a ServiceAccount, pass its full name and groups, e.g. username
        "system:serviceaccount:NS:NAME" with groups ["system:serviceaccounts",
        "system:serviceaccounts:NS", "system:authenticated"], so its RoleBindings apply.
        """
        if self._client_ca is None or self.workdir is None:
            raise NeedsLocalPlaneError(
                "kubeconfig_for needs the local control plane's client CA; with "
                f"{ENV_KUBECONFIG} set, bring your own kubeconfig for restricted identities"
            )
        client = _issue(self._client_ca, common_name=username, organizations=groups)
        config = _kubeconfig(
            server=self.server, ca_pem=self._serving_ca_pem, user=username, client=client
        )
        directory = self.workdir / "kubeconfigs"
        directory.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=_safe_file_name(username) + "-", suffix=".yaml", dir=directory
        )
        with os.fdopen(fd, "w") as out:
            json.dump(config, out, indent=2)
        return Path(name)

    def audit_events(
        self, *, username: str | None = None, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Every completed write so far (audit stage ResponseComplete), oldest first.

        Filters on `user.username` and `objectRef.namespace` when given. The API server writes
        an event right after sending the response, so poll briefly for one just made.
        """
        if self.workdir is None:
            raise NeedsLocalPlaneError(
                "audit_events needs the local control plane's audit log; counting API writes "
                f"is not possible on the existing cluster named by {ENV_KUBECONFIG}"
            )
        with self._lock:
            self._read_new_audit_events()
            events = list(self._audit)
        return [
            e
            for e in events
            if (username is None or e.get("user", {}).get("username") == username)
            and (namespace is None or e.get("objectRef", {}).get("namespace") == namespace)
        ]

    def _read_new_audit_events(self) -> None:
        # Incremental: benchmarks poll this while the log grows by megabytes.
        assert self.workdir is not None
        try:
            with (self.workdir / "audit.log").open("rb") as log:
                log.seek(self._audit_offset)
                data = log.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]  # a last line may still be being written
        self._audit_offset += len(complete)
        for line in complete.splitlines():
            event = json.loads(line)
            if event.get("stage") == "ResponseComplete":
                self._audit.append(event)

    # -- faults

    def restart_apiserver(self) -> float:
        """SIGKILL kube-apiserver and start it again on the same port; wait for /readyz.

        Returns the seconds it took to be ready again. Clients see refused connections (and
        dropped watches) in between, exactly as when an API server's process dies.
        """
        return self._restart("kube-apiserver")

    def restart_etcd(self) -> float:
        """SIGKILL etcd and start it again on the same data directory; wait for /health.

        The API server stays up and answers errors (or hangs) until etcd is back.
        """
        return self._restart("etcd")

    def component_pid(self, name: str) -> int:
        """The process id of a component ("etcd", "kube-apiserver", ...)."""
        return self._component(name).process.pid

    def kill_component(self, name: str) -> None:
        """SIGKILL one component ("etcd", "kube-apiserver", "kube-controller-manager")."""
        self._component(name).kill()

    def start_component(self, name: str) -> float:
        """Start a killed component again with its original command line; wait until ready."""
        with self._lock:
            old = self._component(name)
            if old.alive():
                raise ControlPlaneError(f"{name} is still running (pid {old.process.pid})")
            assert self.workdir is not None
            started = time.monotonic()
            new = _spawn(name, old.argv, self.workdir / "logs")
            self._components[self._components.index(old)] = new
        self._wait_ready(new)
        return time.monotonic() - started

    def _restart(self, name: str) -> float:
        self.kill_component(name)
        return self.start_component(name)

    def _component(self, name: str) -> _Component:
        if self.workdir is None:
            raise NeedsLocalPlaneError(f"restarting {name} needs the local control plane")
        for component in self._components:
            if component.name == name:
                return component
        names = [c.name for c in self._components]
        raise ControlPlaneError(f"no component {name!r} (have {names})")

    def _wait_ready(self, component: _Component) -> None:
        assert self.workdir is not None
        if component.name == "etcd":
            url = next(a for a in component.argv if a.startswith("--listen-client-urls="))
            port = int(url.rsplit(":", 1)[1])
            _wait(component, ETCD_TIMEOUT_S, lambda: _http_get(port, "/health")[0] == 200, "etcd")
        elif component.name == "kube-apiserver":
            pki = self.workdir / "pki"
            context = ssl.create_default_context(cafile=str(pki / "serving-ca.crt"))
            context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
            port = int(self.server.rsplit(":", 1)[1])
            _wait(
                component,
                APISERVER_TIMEOUT_S,
                lambda: _https_get(port, "/readyz", context)[0] == 200,
                f"GET {self.server}/readyz",
            )
        else:
            _wait(component, CONTROLLER_MANAGER_TIMEOUT_S, lambda: True, f"{component.name} up")

    def component_logs(self) -> dict[str, Path]:
        """The log file of each component, by name (empty for an existing cluster)."""
        return {c.name: c.log_path for c in self._components}

    # -- teardown

    def stop(self, *, keep_logs_in: Path | None = None) -> None:
        """Stop every component (process group); copy logs and the audit log if asked."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        _RUNNING.discard(self)
        self._stop_components()
        if self.workdir is None:
            return
        if keep_logs_in is not None:
            keep_logs_in.mkdir(parents=True, exist_ok=True)
            for path in sorted((self.workdir / "logs").glob("*.log")):
                shutil.copy2(path, keep_logs_in / path.name)
            audit = self.workdir / "audit.log"
            if audit.exists():
                shutil.copy2(audit, keep_logs_in / "audit.log")
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        kind = "local" if self.local else "existing"
        return f"<ControlPlane {kind} {self.server or '(not started)'}>"

    # -- internals

    def _write_pki(self) -> None:
        assert self.workdir is not None
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)

        serving_ca = _new_ca("jpc-serving-ca")
        self._client_ca = _new_ca("jpc-client-ca")
        self._serving_ca_pem = serving_ca.cert_pem
        serving = _issue(
            serving_ca,
            common_name="kube-apiserver",
            server_names=(
                "127.0.0.1",
                "::1",
                "10.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        )
        admin = self._admin = _issue(
            self._client_ca, common_name=ADMIN_USER, organizations=["system:masters"]
        )
        service_accounts = ec.generate_private_key(ec.SECP256R1())

        (pki / "serving-ca.crt").write_bytes(serving_ca.cert_pem)
        (pki / "client-ca.crt").write_bytes(self._client_ca.cert_pem)
        (pki / "apiserver.crt").write_bytes(serving.cert_pem)
        _write_private(pki / "apiserver.key", serving.key_pem)
        (pki / "admin.crt").write_bytes(admin.cert_pem)
        _write_private(pki / "admin.key", admin.key_pem)
        _write_private(
            pki / "service-accounts.key",
            service_accounts.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        (pki / "service-accounts.pub").write_bytes(
            service_accounts.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        (self.workdir / "audit-policy.json").write_text(json.dumps(AUDIT_POLICY, indent=2))

    def _start_components(self) -> None:
        assert self.workdir is not None
        assert self.binaries is not None
        assert self._client_ca is not None
        assert self._admin is not None
        work, pki, logs, bin_dir = (
            self.workdir,
            self.workdir / "pki",
            self.workdir / "logs",
            self.binaries,
        )
        etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
        while len({etcd_port, peer_port, api_port}) < 3:
            peer_port, api_port = _free_port(), _free_port()
        self.server = f"https://127.0.0.1:{api_port}"

        # etcd: a fresh data directory per attempt.
        data_dir = work / "etcd"
        shutil.rmtree(data_dir, ignore_errors=True)
        etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
        etcd = _spawn(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            logs,
        )
        self._components.append(etcd)
        _wait(
            etcd,
            ETCD_TIMEOUT_S,
            lambda: _http_get(etcd_port, "/health")[0] == 200,
            f"GET {etcd_url}/health",
        )

        apiserver = _spawn(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={work / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'client-ca.crt'}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--endpoint-reconciler-type=none",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={pki / 'service-accounts.pub'}",
                f"--service-account-signing-key-file={pki / 'service-accounts.key'}",
                f"--audit-policy-file={work / 'audit-policy.json'}",
                f"--audit-log-path={work / 'audit.log'}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
            ],
            logs,
        )
        self._components.append(apiserver)
        context = ssl.create_default_context(cafile=str(pki / "serving-ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        _wait(
            apiserver,
            APISERVER_TIMEOUT_S,
            lambda: _https_get(api_port, "/readyz", context)[0] == 200,
            f"GET {self.server}/readyz",
        )

        self.admin_kubeconfig = work / "admin.kubeconfig"
        self.admin_kubeconfig.write_text(
            json.dumps(
                _kubeconfig(
                    server=self.server,
                    ca_pem=self._serving_ca_pem,
                    user=ADMIN_USER,
                    client=self._admin,
                ),
                indent=2,
            )
        )
        self.admin_kubeconfig.chmod(0o600)
        # Its own identity, so that its writes are told apart from the admin's in the audit log;
        # in system:masters because it runs without per-controller service accounts.
        kcm_identity = _issue(
            self._client_ca,
            common_name=CONTROLLER_MANAGER_USER,
            organizations=["system:masters"],
        )
        kcm_kubeconfig = work / "kube-controller-manager.kubeconfig"
        kcm_kubeconfig.write_text(
            json.dumps(
                _kubeconfig(
                    server=self.server,
                    ca_pem=self._serving_ca_pem,
                    user=CONTROLLER_MANAGER_USER,
                    client=kcm_identity,
                )
            )
        )
        kcm_kubeconfig.chmod(0o600)
        kcm = _spawn(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kcm_kubeconfig}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                "--secure-port=0",
            ],
            logs,
        )
        self._components.append(kcm)
        _wait(
            kcm,
            CONTROLLER_MANAGER_TIMEOUT_S,
            lambda: bool(_DEPLOYMENT_CONTROLLER_STARTED.search(kcm.log_path.read_text())),
            "its deployment controller to start",
        )

    def _stop_components(self) -> None:
        # Reverse order: the controller manager, then the API server, then etcd.
        while self._components:
            self._components.pop().stop()


def _server_of(kubeconfig: Path) -> str:
    import yaml  # only needed for a kubeconfig written by someone else

    try:
        config = yaml.safe_load(kubeconfig.read_text())
        contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
        clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
        cluster = contexts[config["current-context"]]["cluster"]
        server: str = clusters[cluster]["server"]
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ControlPlaneError(f"cannot read the server of {kubeconfig}: {exc!r}") from exc
    return server


# --------------------------------------------------------------------------------------------
# Manual use


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.controlplane",
        description="Start a local control plane and keep it running until Ctrl-C or SIGTERM.",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep certificates, kubeconfigs, data and logs here (default: a temporary directory)",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        started = time.monotonic()
        try:
            plane = ControlPlane.start(args.workdir)
        except ControlPlaneError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        with plane:
            print(
                f"control plane ready in {time.monotonic() - started:.1f} s at {plane.server}; "
                f"logs in {plane.workdir}; Ctrl-C stops it",
                file=sys.stderr,
            )
            print(plane.admin_kubeconfig, flush=True)
            while not stop.wait(1.0):
                pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
