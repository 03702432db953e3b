"""An RSA webhook key under 2048 bits, as the controller meets it: at start-up it stops with one
line naming the file (exit 2); added at run time, it is refused, the keys in force stay, and a
metric and a log line say which file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from Crypto.PublicKey import RSA
from Crypto.Util.number import getPrime

from jibri_pod_controller.adapters.tokens import Verifier
from jibri_pod_controller.app import Controller, main
from jibri_pod_controller.core.config import JwtSettings
from tests.component.fakes import FakeCluster, JibriSigner, make_settings


def weak_pem(bits: int) -> bytes:
    """An RSA public key of exactly ``bits`` bits (too small for the libraries to generate)."""
    while True:
        p, q = getPrime(bits // 2), getPrime(bits // 2)
        if (p * q).bit_length() == bits and p != q:
            return RSA.construct((p * q, 65537)).export_key("PEM")


def test_a_weak_key_at_start_up_exits_2_naming_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "good.pem").write_bytes(JibriSigner("good").public_pem())
    (tmp_path / "legacy.pem").write_bytes(weak_pem(1024))
    env = {"POD_NAME": "c", "JWT_KEYS_DIR": str(tmp_path), "JWT_ISSUER": "jibri"}
    assert main([], env=env) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line == (
        f"jibri-pod-controller: configuration error: JWT_KEYS_DIR: {tmp_path / 'legacy.pem'}: "
        "an RSA key of 1024 bits; RS256 needs at least 2048 (RFC 7518 3.3)"
    )


async def test_a_weak_key_added_at_run_time_is_refused_and_the_old_keys_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    signer = JibriSigner("good", issuer="jibri")
    (tmp_path / "good.pem").write_bytes(signer.public_pem())
    settings = JwtSettings(
        keys_dir=tmp_path, jwks_file=None, issuer="jibri", audience="jibri-pod-controller", leeway=5
    )
    verifier = Verifier(settings)
    controller = Controller(make_settings(), FakeCluster(), verifier)
    (tmp_path / "weak.pem").write_bytes(weak_pem(512))
    with caplog.at_level(logging.ERROR):
        assert await controller.reload_keys() is False
    assert verifier.kids == ["good"]
    assert verifier.verify(signer.bearer()).kid == "good"
    sample = controller.metrics.registry.get_sample_value
    assert sample("jibri_pod_controller_key_load_errors_total", {"file": "weak.pem"}) == 1
    (record,) = [r for r in caplog.records if "not reloaded" in r.getMessage()]
    assert record.file.endswith("weak.pem")  # type: ignore[attr-defined]
    assert "512 bits" in record.error  # type: ignore[attr-defined]
