"""The entry point's start-up failures, and the wiring's permission check."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jibri_pod_controller.app import POOL_PERMISSIONS, Controller, main, required_permissions
from tests.component.fakes import FakeCluster, JibriSigner, make_settings

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


async def test_missing_pool_permissions_are_optional(caplog: pytest.LogCaptureFixture) -> None:
    """Without the JibriPool rights the replica stays ready (replicas set by hand still work);
    the missing ones are named in a warning."""
    settings = make_settings()
    granted = {(p.verb, p.resource, p.group, p.name) for p in required_permissions(settings)}
    controller = Controller(settings, FakeCluster(allowed=granted), None, pools_api=FakePoolsApi())
    controller.health.api_ok = True
    with caplog.at_level(logging.WARNING):
        await controller.check_permissions()
    assert controller.health.missing_permissions == ()
    assert controller.health.ready
    [record] = [r for r in caplog.records if "optional JibriPool permissions" in r.getMessage()]
    assert "update deployments/scale.apps" in record.__dict__["missing"]
    granted |= {(p.verb, p.resource, p.group, p.name) for p in POOL_PERMISSIONS}
    controller = Controller(settings, FakeCluster(allowed=granted), None, pools_api=FakePoolsApi())
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        await controller.check_permissions()
    assert not [r for r in caplog.records if "optional" in r.getMessage()]


class FakePoolsApi:
    """Never called by the permission check; stands for the JSON API seam."""

    async def request_json(self, method: str, path: str, **kwargs: object) -> object:
        raise AssertionError("no pool API call expected")

    def watch_json(self, path: str, **kwargs: object) -> object:
        raise AssertionError("no pool watch expected")
