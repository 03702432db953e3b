"""Fixtures for end-to-end tests: one real control plane and fake kubelet per session, one
namespace per test, the controller as a separate process with its own restricted identity.

Set JPC_E2E_KUBECONFIG to run against a cluster of your own (tests that need the local plane's
audit log or client CA then fail with a message saying so; they are never skipped).
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes_asyncio import client as k8s

from testbed.cluster import (
    JIBRIPOOL_CRD,
    REPO,
    ControllerProcess,
    JibriJwt,
    apply,
    controller_kubeconfig,
    create_namespace,
    delete_namespace,
    install_crds,
    jibri_deployment,
    make_webhook_keys,
    pod_write_events,
    rbac_manifests,
    service_account_user,
)
from testbed.controlplane import ControlPlane
from testbed.kube import new_api_client
from testbed.kubelet import KubeletThread, run_in_thread
from tests.e2e.helpers import wait_spares

LOGS = REPO / "out" / "e2e-logs"
ISSUER = "jibri-e2e"
AUDIENCE = "jibri-pod-controller"
KID = "e2e-key-1"

_failed: list[str] = []
_FAILED_KEY = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        item.stash[_FAILED_KEY] = True
        _failed.append(item.nodeid)
    return report


@pytest.fixture(scope="session")
def plane() -> Iterator[ControlPlane]:
    started = time.monotonic()
    control_plane = ControlPlane.from_environment()
    print(f"\ncontrol plane ready in {time.monotonic() - started:.1f}s: {control_plane.server}")
    try:
        yield control_plane
    finally:
        control_plane.stop(keep_logs_in=LOGS / "control-plane" if _failed else None)


@pytest.fixture(scope="session")
def kubelet(plane: ControlPlane) -> Iterator[KubeletThread]:
    with run_in_thread(plane.admin_kubeconfig, None) as thread:
        yield thread


@dataclass(frozen=True)
class Keys:
    directory: Path
    """Public keys, as the controller reads them (JWT_KEYS_DIR)."""
    jibri: JibriJwt
    """What each simulated Jibri signs with (a PKCS#1 key, as Jibri requires)."""
    private_key: rsa.RSAPrivateKey


def make_keys(root: Path, kid: str = KID) -> Keys:
    made = make_webhook_keys(root, kid=kid, issuer=ISSUER, audience=AUDIENCE)
    key = serialization.load_pem_private_key(made.jibri.key_path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return Keys(directory=made.directory, jibri=made.jibri, private_key=key)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("jwt"))


@pytest.fixture
async def admin(plane: ControlPlane) -> AsyncIterator[k8s.ApiClient]:
    api = await new_api_client(plane.admin_kubeconfig)
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture
async def namespace(admin: k8s.ApiClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    # Short: the controller's identity is a certificate whose CN (at most 64 characters) is
    # system:serviceaccount:<namespace>:jibri-pod-controller.
    base = request.node.name.split("[")[0].removeprefix("test_").replace("_", "-")[:14]
    name = f"{base.strip('-')}-{secrets.token_hex(3)}"
    await create_namespace(admin, name)
    try:
        yield name
    finally:
        await delete_namespace(admin, name)


@pytest.fixture
async def rbac(admin: k8s.ApiClient, namespace: str) -> str:
    """deploy/'s ServiceAccount, Role and RoleBinding in the test's namespace; the user name."""
    await apply(admin, rbac_manifests(namespace))
    return service_account_user(namespace)


ControllerFactory = Callable[..., ControllerProcess]


@pytest.fixture
def controllers(
    plane: ControlPlane,
    namespace: str,
    keys: Keys,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[ControllerFactory]:
    """Start controller replicas with the restricted identity; stop them after the test."""
    started: list[ControllerProcess] = []

    def start(name: str = "controller-a", **env: str) -> ControllerProcess:
        settings = {
            "SWEEP_INTERVAL": "2",
            "JWT_KEYS_DIR": str(keys.directory),
            "JWT_ISSUER": ISSUER,
            "JWT_AUDIENCE": AUDIENCE,
            "LOG_LEVEL": "debug",
            # No drain on the way out unless a test asks for one (test_lifecycle does): a
            # replica stopped at a test's end serves nobody, and 5 s per replica adds up.
            "SHUTDOWN_DRAIN_SECONDS": "0",
            **env,
        }
        process = ControllerProcess(
            name=name,
            kubeconfig=controller_kubeconfig(plane, namespace),
            namespace=namespace,
            log_path=tmp_path / f"{name}.log",
            env=settings,
        ).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
    if request.node.stash.get(_FAILED_KEY, False):
        target = LOGS / request.node.name
        target.mkdir(parents=True, exist_ok=True)
        for process in started:
            shutil.copy(process.log_path, target / process.log_path.name)
            print(f"\n--- {process.name} (last lines) ---\n{process.tail(60)}")


@dataclass
class E2E:
    """What an end-to-end test works with: its namespace, with deploy/'s RBAC applied."""

    admin: k8s.ApiClient
    namespace: str
    user: str
    """The controller's identity (the ServiceAccount bound by deploy/rbac.yaml)."""
    start: ControllerFactory
    keys: Keys
    kubelet: KubeletThread
    plane: ControlPlane

    async def ready(self, name: str = "controller-a", **env: str) -> ControllerProcess:
        """A controller replica, started and ready (/readyz 200)."""
        controller = self.start(name, **env)
        await controller.wait_ready()
        return controller

    async def deploy_jibris(
        self,
        controllers: list[ControllerProcess],
        *,
        replicas: int = 3,
        status_period: float = 60.0,
        signed: bool = True,
    ) -> list[k8s.V1Pod]:
        """A Deployment of simulated Jibris posting to ``controllers``; wait for N spares."""
        await apply(
            self.admin,
            [
                jibri_deployment(
                    namespace=self.namespace,
                    replicas=replicas,
                    subscribers=[c.webhook_base() for c in controllers],
                    status_period=status_period,
                    jwt=self.keys.jibri if signed else None,
                )
            ],
        )
        return await wait_spares(self.admin, self.namespace, replicas)

    def writes(self) -> list[tuple[str, str]]:
        """The controller's successful writes to pods, as (verb, pod name), oldest first."""
        events = pod_write_events(self.plane, namespace=self.namespace, username=self.user)
        return [(e["verb"], e["objectRef"]["name"]) for e in events]


@pytest.fixture
async def e2e(
    admin: k8s.ApiClient,
    namespace: str,
    rbac: str,
    controllers: ControllerFactory,
    keys: Keys,
    kubelet: KubeletThread,
    plane: ControlPlane,
) -> E2E:
    return E2E(admin, namespace, rbac, controllers, keys, kubelet, plane)


@pytest.fixture
async def crd(admin: k8s.ApiClient) -> None:
    """deploy/crds/ installed (once: the definition outlives the test's namespace), Established."""
    await install_crds(admin, JIBRIPOOL_CRD)
