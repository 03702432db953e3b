"""The entry point's start-up failures, and the wiring's permission check."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from jibri_pod_controller.adapters.tokens import Verifier
from jibri_pod_controller.app import POOL_PERMISSIONS, Controller, main, required_permissions
from jibri_pod_controller.core.config import JwtSettings
from jibri_pod_controller.core.permissions import OPTIONAL_PERMISSIONS
from tests.component.fakes import SM2_PUBLIC_KEY, FakeCluster, JibriSigner, make_settings

ENV = {"POD_NAME": "controller-0", "NAMESPACE": "jibri", "WEBHOOK_AUTH": "none"}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"LEASE_DURATION": "5"}, "LEASE_DURATION"),
        ({"JIBRI_SELECTOR": "app in (jibri)"}, "JIBRI_SELECTOR"),
        ({"WEBHOOK_AUTH": ""}, "WEBHOOK_AUTH"),
        ({"RUST_LOG": "chatty"}, "RUST_LOG"),
        ({"JWT_KEYS_DIR": "/nonexistent", "WEBHOOK_AUTH": ""}, "JWT_KEYS_DIR"),
    ],
)
def test_a_bad_setting_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], variable: str
) -> None:
    assert main([], env={**ENV, **env}) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"jibri-pod-controller: configuration error: {variable}: ")


@pytest.mark.parametrize(
    ("name", "content"),
    [("garbage.pem", b"this is not a key\n"), ("jibri", b"-----BEGIN PUBLIC KEY-----\n")],
)
def test_a_keys_dir_with_a_non_key_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, content: bytes
) -> None:
    signer = JibriSigner("good")
    (tmp_path / "good.pem").write_bytes(signer.public_pem())
    (tmp_path / name).write_bytes(content)
    env = {"POD_NAME": "c", "JWT_KEYS_DIR": str(tmp_path), "JWT_ISSUER": "jibri"}
    assert main([], env=env) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("jibri-pod-controller: configuration error: JWT_KEYS_DIR: ")
    assert name in lines[0]


def test_an_empty_keys_dir_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    env = {"POD_NAME": "c", "JWT_KEYS_DIR": str(tmp_path), "JWT_ISSUER": "jibri"}
    assert main([], env=env) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "JWT_KEYS_DIR: no RSA public keys" in line


def test_a_bad_jwks_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": "no"}')
    env = {"POD_NAME": "c", "JWT_JWKS_FILE": str(jwks), "JWT_ISSUER": "jibri"}
    assert main([], env=env) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("jibri-pod-controller: configuration error: JWT_JWKS_FILE: ")


def test_a_bad_jwks_file_next_to_good_keys_names_jwks_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "good.pem").write_bytes(JibriSigner("good").public_pem())
    jwks = tmp_path / "jwks.json"
    jwks.write_text("[]")
    env = {
        "POD_NAME": "c",
        "JWT_KEYS_DIR": str(keys),
        "JWT_JWKS_FILE": str(jwks),
        "JWT_ISSUER": "jibri",
    }
    assert main([], env=env) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("jibri-pod-controller: configuration error: JWT_JWKS_FILE: ")


async def test_all_permissions_granted() -> None:
    settings = make_settings()
    allowed = {(p.verb, p.resource, p.group, p.name) for p in required_permissions(settings)}
    controller = Controller(settings, FakeCluster(allowed=allowed), None)
    await controller.check_permissions()
    assert controller.health.missing_permissions == ()


async def test_missing_permissions_make_the_replica_unready() -> None:
    settings = make_settings()
    required = required_permissions(settings)
    granted = {(p.verb, p.resource, p.group, p.name) for p in required}
    lease = "jibri-pod-controller-lease"
    granted -= {
        ("delete", "pods", "", ""),
        ("get", "leases", "coordination.k8s.io", lease),
        ("update", "leases", "coordination.k8s.io", lease),
    }
    # get and update granted on another lease name only.
    granted |= {
        ("get", "leases", "coordination.k8s.io", "other-lease"),
        ("update", "leases", "coordination.k8s.io", "other-lease"),
    }
    controller = Controller(settings, FakeCluster(allowed=granted), None)
    controller.health.api_ok = True
    await controller.check_permissions()
    assert controller.health.missing_permissions == (
        "delete pods",
        f"get leases.coordination.k8s.io/{lease}",
        f"update leases.coordination.k8s.io/{lease}",
    )
    assert not controller.health.ready


async def test_missing_pool_permissions_are_optional() -> None:
    """Without the JibriPool rights the replica stays ready (replicas set by hand still work);
    the missing ones are named with what is lost."""
    settings = make_settings()
    granted = {(p.verb, p.resource, p.group, p.name) for p in required_permissions(settings)}
    controller = Controller(settings, FakeCluster(allowed=granted), None, pools_api=FakePoolsApi())
    controller.health.api_ok = True
    verdict = await controller.check_permissions()
    assert controller.health.missing_permissions == ()
    assert controller.health.ready
    assert "update deployments/scale.apps" in verdict.lost
    assert "JibriPools are not reconciled" in verdict.lost["update deployments/scale.apps"]
    granted |= {(p.verb, p.resource, p.group, p.name) for p in POOL_PERMISSIONS}
    controller = Controller(settings, FakeCluster(allowed=granted), None, pools_api=FakePoolsApi())
    verdict = await controller.check_permissions()
    assert not [p for p in verdict.lost if "jibripools" in p or "deployments" in p]


@pytest.mark.parametrize(
    ("port", "said"),
    [("3333", "through Jibri's graceful shutdown (internal API port 3333)"), ("0", "=0")],
)
async def test_the_scale_down_method_follows_the_internal_api_port(port: str, said: str) -> None:
    settings = make_settings(JIBRI_INTERNAL_API_PORT=port)
    controller = Controller(settings, FakeCluster(), None, pools_api=FakePoolsApi())
    assert controller.pools is not None
    assert said in controller.pools.describe_scale_down()
    assert (controller.internal_api is None) is (port == "0")
    if controller.internal_api is not None:
        await controller.internal_api.close()


class FakePoolsApi:
    """Never called by the permission check; stands for the JSON API seam."""

    async def request_json(self, method: str, path: str, **kwargs: object) -> object:
        raise AssertionError("no pool API call expected")

    def watch_json(self, path: str, **kwargs: object) -> object:
        raise AssertionError("no pool watch expected")


def test_every_bad_setting_is_one_line_then_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    env = {**ENV, "PORT": "eighty", "LEASE_DURATION": "15.5", "WEBHOOK_RATE_LIMIT": "0.1"}
    assert main([], env=env) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2] for line in lines] == [
        "PORT",
        "LEASE_DURATION",
        "WEBHOOK_RATE_LIMIT",
    ]
    assert all(line.startswith("jibri-pod-controller: configuration error: ") for line in lines)


def test_an_unsupported_key_type_at_start_up_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "good.pem").write_bytes(JibriSigner("good").public_pem())
    (tmp_path / "sm2.pem").write_bytes(SM2_PUBLIC_KEY)
    env = {"POD_NAME": "c", "JWT_KEYS_DIR": str(tmp_path), "JWT_ISSUER": "jibri"}
    assert main([], env=env) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("jibri-pod-controller: configuration error: JWT_KEYS_DIR: ")
    assert "sm2.pem" in line
    assert "Traceback" not in err


def granted(settings_lease: str, *, optional: bool) -> set[tuple[str, str, str, str]]:
    perms = list(required_permissions(make_settings()))
    if optional:
        perms += [o.permission for o in OPTIONAL_PERMISSIONS]
    return {(p.verb, p.resource, p.group, p.name) for p in perms}


async def test_missing_optional_permissions_keep_the_replica_ready_and_switch_features_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings()
    cluster = FakeCluster(allowed=granted(settings.lease_name, optional=False))
    controller = Controller(settings, cluster, None, replica_sets=_no_replica_sets)
    controller.health.api_ok = True
    with caplog.at_level(logging.WARNING):
        await controller.check_permissions()
        await controller.check_permissions()  # the next periodic check: no second line
    assert controller.health.ready
    assert controller.health.missing_permissions == ()
    lines = [r for r in caplog.records if "optional Kubernetes permissions" in r.getMessage()]
    assert len(lines) == 1
    assert set(lines[0].lost) == {  # type: ignore[attr-defined]
        "watch pods",
        "create events",
        "get replicasets.apps",
    } | {str(p) for p in POOL_PERMISSIONS}
    assert controller.actuator.events is False
    assert controller.actuator.replica_sets is None
    metric = controller.metrics.registry.get_sample_value
    labels = {"permission": "watch pods", "required": "false"}
    assert metric("jibri_pod_controller_permission_missing", labels) == 1
    labels = {"permission": "delete pods", "required": "true"}
    assert metric("jibri_pod_controller_permission_missing", labels) == 0


async def _no_replica_sets(name: str, uid: str) -> None:
    return None


async def test_all_permissions_switch_every_feature_on() -> None:
    settings = make_settings()
    cluster = FakeCluster(allowed=granted(settings.lease_name, optional=True))
    controller = Controller(settings, cluster, None, replica_sets=_no_replica_sets)
    verdict = await controller.check_permissions()
    assert verdict.missing_optional == ()
    assert controller.actuator.events is True
    assert controller.actuator.replica_sets is _no_replica_sets


async def test_an_unsupported_key_added_at_run_time_is_reported_and_the_old_keys_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    signer = JibriSigner("good", issuer="jibri")
    (tmp_path / "good.pem").write_bytes(signer.public_pem())
    jwt = JwtSettings(
        keys_dir=tmp_path, jwks_file=None, issuer="jibri", audience="jibri-pod-controller", leeway=5
    )
    verifier = Verifier(jwt)
    controller = Controller(make_settings(), FakeCluster(), verifier)
    (tmp_path / "sm2.pem").write_bytes(SM2_PUBLIC_KEY)
    with caplog.at_level(logging.ERROR):
        assert await controller.reload_keys() is False
        assert await controller.reload_keys() is False  # reported once, not every period
    assert verifier.kids == ["good"]
    assert verifier.verify(signer.bearer()).kid == "good"
    sample = controller.metrics.registry.get_sample_value
    assert sample("jibri_pod_controller_key_load_errors_total", {"file": "sm2.pem"}) == 1
    (line,) = [r for r in caplog.records if "not reloaded" in r.getMessage()]
    assert line.file.endswith("sm2.pem")  # type: ignore[attr-defined]


async def test_the_key_swap_happens_on_the_event_loop(tmp_path: Path) -> None:
    """The thread only reads; keys and the verified-token table change on the loop, together."""
    signer, other = JibriSigner("old", issuer="jibri"), JibriSigner("new", issuer="jibri")
    (tmp_path / "old.pem").write_bytes(signer.public_pem())
    jwt = JwtSettings(
        keys_dir=tmp_path, jwks_file=None, issuer="jibri", audience="jibri-pod-controller", leeway=5
    )
    verifier = Verifier(jwt)
    token = signer.bearer()
    verifier.verify(token)
    loop_thread = asyncio.get_running_loop()
    applied_in: list[object] = []
    original_apply = verifier.apply

    def apply(update: object) -> bool:
        applied_in.append(asyncio.get_running_loop())
        return original_apply(update)  # type: ignore[arg-type]

    verifier.apply = apply  # type: ignore[method-assign]
    (tmp_path / "old.pem").unlink()
    (tmp_path / "new.pem").write_bytes(other.public_pem())
    controller = Controller(make_settings(), FakeCluster(), verifier)
    assert await controller.reload_keys() is True
    assert applied_in == [loop_thread]
    assert verifier.kids == ["new"]
    assert verifier._verified == {}


async def test_a_sweeper_that_keeps_failing_gives_the_lease_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from testbed.cluster import wait_until
    from testbed.ports import listen_port

    settings = make_settings(
        PORT=str(listen_port()),  # the app binds every address: not an ephemeral port
        LEASE_DURATION="3",
        LEASE_RENEW_DEADLINE="2",
        LEASE_RETRY_PERIOD="0.5",
        SHUTDOWN_DRAIN_SECONDS="0",
    )
    cluster = FakeCluster()
    controller = Controller(settings, cluster, None)
    crashes = 0

    async def crash() -> object:
        nonlocal crashes
        crashes += 1
        raise RuntimeError("the sweeper cannot run")

    controller.sweeper.sweep_once = crash  # type: ignore[method-assign,assignment]
    stop = asyncio.Event()
    task = asyncio.create_task(controller.run(stop))
    try:

        async def resigned() -> bool:
            return any("giving up the Lease" in r.getMessage() for r in caplog.records) and (
                cluster.leases[settings.lease_name].record.holder == ""
            )

        with caplog.at_level(logging.ERROR):
            await wait_until(resigned, timeout=30, interval=0.05, what="the Lease given up")
        assert crashes >= 3
        assert not controller.elector.leading.is_set()
        sample = controller.metrics.registry.get_sample_value
        assert (sample("jibri_pod_controller_loop_restarts_total", {"loop": "sweeper"}) or 0) >= 3
        assert not task.done()  # the replica itself keeps running (and serving)
    finally:
        stop.set()
        await task


async def test_a_leader_whose_sweeps_cannot_list_gives_the_lease_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from jibri_pod_controller.adapters.kube import KubeError
    from testbed.cluster import wait_until
    from testbed.ports import listen_port

    settings = make_settings(
        PORT=str(listen_port()),  # the app binds every address: not an ephemeral port
        SWEEP_INTERVAL="1",
        LEASE_DURATION="3",
        LEASE_RENEW_DEADLINE="2",
        LEASE_RETRY_PERIOD="0.5",
        SHUTDOWN_DRAIN_SECONDS="0",
    )
    cluster = FakeCluster()
    cluster.add_pod("jibri-a", labels={"app": "jibri", "state": "idle"})
    # Every list fails as an unreadable answer would (the leader still renews its Lease fine).
    blind = KubeError("list pods: an answer in an unknown Content-Encoding 'zstd'")
    cluster.fail_next("list_pods", *[blind] * 50)
    controller = Controller(settings, cluster, None)
    stop = asyncio.Event()
    task = asyncio.create_task(controller.run(stop))
    sample = controller.metrics.registry.get_sample_value
    try:

        async def resigned() -> bool:
            return (
                sample(
                    "jibri_pod_controller_lease_resignations_total",
                    {"reason": "sweep-incomplete"},
                )
                == 1
                and cluster.leases[settings.lease_name].record.holder == ""
                and any(e.reason == "SweeperResigned" for e in cluster.events)
            )

        with caplog.at_level(logging.ERROR):
            await wait_until(resigned, timeout=30, interval=0.05, what="the Lease given up")
        assert not controller.elector.leading.is_set()
        (event,) = [e for e in cluster.events if e.reason == "SweeperResigned"]
        assert event.pod == f"lease/{settings.lease_name}"
        assert "3 sweeps in a row could not list the Jibri pods" in event.message
        assert event.warning
        assert any("giving up the Lease" in r.getMessage() for r in caplog.records)
        assert sample("jibri_pod_controller_sweeps_total", {"result": "failed"}) == 3
        assert (sample("jibri_pod_controller_sweeps_total", {"result": "ok"}) or 0) == 0
        assert not cluster.pod_writes()  # a blind leader acts on nothing
        assert not task.done()  # the replica itself keeps running (and serving)
        assert controller.health.ready
    finally:
        stop.set()
        await task


async def test_a_shutdown_while_the_api_server_hangs_is_bounded() -> None:
    """SIGTERM with an API server that accepts requests and never answers: the replica still
    stops within SHUTDOWN_DRAIN_SECONDS + SHUTDOWN_TIMEOUT + RELEASE_TIMEOUT (a kubelet would
    otherwise kill it at the end of its grace period)."""
    from jibri_pod_controller.app import RELEASE_TIMEOUT
    from jibri_pod_controller.core.decisions import Detach, Reason
    from jibri_pod_controller.loops.acting import Source
    from testbed.ports import listen_port

    settings = make_settings(
        PORT=str(listen_port()),
        LEASE_DURATION="3",
        LEASE_RENEW_DEADLINE="2",
        LEASE_RETRY_PERIOD="0.5",
        SHUTDOWN_DRAIN_SECONDS="0.5",
        SHUTDOWN_TIMEOUT="1",
    )
    cluster = FakeCluster()
    controller = Controller(settings, cluster, None)
    stop = asyncio.Event()
    task = asyncio.create_task(controller.run(stop))
    try:
        await asyncio.wait_for(controller.elector.leading.wait(), 30)
        # A detach whose Event the API server then never answers, and a Lease it never writes.
        pod = cluster.add_pod("jibri-a", labels={"app": "jibri", "state": "idle"})
        cluster.delays.update({"update_lease": 60.0, "record_event": 60.0, "get_lease": 60.0})
        await controller.actuator.apply(Detach(Reason.BUSY_REPORTED), pod, source=Source.WEBHOOK)
        assert [w.method for w in cluster.pod_writes()] == ["patch_pod"]
        started = asyncio.get_running_loop().time()
        stop.set()
        await asyncio.wait_for(task, 30)
        took = asyncio.get_running_loop().time() - started
    finally:
        stop.set()
        if not task.done():
            task.cancel()
    assert took < 0.5 + 1 + RELEASE_TIMEOUT + 1.0, took


async def test_a_replica_sets_selector_is_read_once() -> None:
    from jibri_pod_controller.adapters.kube import NotFound
    from jibri_pod_controller.app import replica_set_reader

    class Api:
        def __init__(self) -> None:
            self.asked: list[str] = []

        async def request_json(self, method: str, path: str) -> object:
            self.asked.append(f"{method} {path}")
            if path.endswith("/gone"):
                raise NotFound("get replicaset gone: HTTP 404")
            return {
                "metadata": {"uid": "rs-1"},
                "spec": {"selector": {"matchLabels": {"app": "jibri"}}},
            }

    api = Api()
    read = replica_set_reader(api, "jibri")
    for _ in range(3):
        assert await read("jibri-5d9c7b", "rs-1") == {"matchLabels": {"app": "jibri"}}
    assert await read("gone", "rs-2") is None
    # The name now belongs to another ReplicaSet than the pod's owner: no verdict.
    assert await read("jibri-5d9c7b", "rs-old") is None
    assert api.asked == [
        "GET /apis/apps/v1/namespaces/jibri/replicasets/jibri-5d9c7b",
        "GET /apis/apps/v1/namespaces/jibri/replicasets/gone",
        "GET /apis/apps/v1/namespaces/jibri/replicasets/jibri-5d9c7b",
    ]


@pytest.mark.parametrize(
    ("selector", "reported"),
    [
        ({"matchLabels": {"app": "jibri"}}, ["jibri-5d9c7b"]),
        ({"matchLabels": {"app": "jibri", "state": "idle"}}, []),
    ],
)
async def test_the_start_up_check_reports_deployments_whose_selector_keeps_busy_pods(
    selector: dict[str, object], reported: list[str]
) -> None:
    settings = make_settings()
    cluster = FakeCluster()
    for name in ("jibri-a", "jibri-b"):
        cluster.add_pod(name)  # both owned by ReplicaSet jibri-5d9c7b
    asked: list[str] = []

    async def replica_sets(name: str, uid: str) -> dict[str, object]:
        asked.append(name)
        return selector

    controller = Controller(settings, cluster, None, replica_sets=replica_sets)
    await controller.check_permissions()
    assert await controller.check_detaches_would_work() == reported
    assert asked == ["jibri-5d9c7b"]  # one look per ReplicaSet, not per pod
    sample = controller.metrics.registry.get_sample_value
    expected = float(len(reported))
    assert (sample("jibri_pod_controller_detach_ineffective_total", {"where": "startup"}) or 0) == (
        expected
    )
    assert cluster.writes == []
