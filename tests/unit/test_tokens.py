"""Webhook tokens signed exactly as Jibri signs them, and every forgery we know of."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import jwt
import pytest
from Crypto.PublicKey import RSA
from Crypto.Util.number import getPrime

from jibri_pod_controller.adapters.tokens import (
    Claims,
    KeyFormatError,
    KeyLoadError,
    TokenError,
    Verifier,
    load_keys,
    public_key_from_jwk,
    public_key_from_pem,
)
from jibri_pod_controller.core.config import JwtSettings
from tests.component.fakes import SM2_PUBLIC_KEY, JibriSigner, forged_token

ISSUER = "jibri"
AUDIENCE = "jibri-pod-controller"


@pytest.fixture(scope="module")
def signer() -> JibriSigner:
    return JibriSigner("jibri-2025", issuer=ISSUER, audience=AUDIENCE)


@pytest.fixture(scope="module")
def other_signer() -> JibriSigner:
    return JibriSigner("jibri-2026", issuer=ISSUER, audience=AUDIENCE)


def jwt_settings(
    *, keys_dir: Path | None = None, jwks_file: Path | None = None, leeway: float = 30
) -> JwtSettings:
    return JwtSettings(
        keys_dir=keys_dir, jwks_file=jwks_file, issuer=ISSUER, audience=AUDIENCE, leeway=leeway
    )


@pytest.fixture
def keys_dir(tmp_path: Path, signer: JibriSigner) -> Path:
    directory = tmp_path / "keys"
    directory.mkdir()
    (directory / f"{signer.kid}.pem").write_bytes(signer.public_pem())
    return directory


@pytest.fixture
def verifier(keys_dir: Path) -> Verifier:
    return Verifier(jwt_settings(keys_dir=keys_dir))


def test_jibri_token_shape(signer: JibriSigner) -> None:
    token = signer.token()
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": "jibri-2025", "typ": "JWT"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"iss", "aud", "exp"}
    assert claims["aud"] == [AUDIENCE]


def test_valid_token(verifier: Verifier, signer: JibriSigner) -> None:
    assert verifier.kids == ["jibri-2025"]
    assert verifier.verify(signer.bearer()) == Claims(kid="jibri-2025", issuer=ISSUER)
    assert verifier.verify("bearer " + signer.token()).kid == "jibri-2025"


def test_within_leeway_is_accepted(verifier: Verifier, signer: JibriSigner) -> None:
    assert verifier.verify(signer.bearer(ttl=-20)).kid == "jibri-2025"


def test_an_audience_string_is_accepted_too(verifier: Verifier, signer: JibriSigner) -> None:
    assert verifier.verify(signer.bearer(claims={"aud": AUDIENCE})).kid == "jibri-2025"


def test_audience_among_several(verifier: Verifier, signer: JibriSigner) -> None:
    assert verifier.verify(signer.bearer(claims={"aud": ["other", AUDIENCE]})).issuer == ISSUER


def _hs256_with_public_key(signer: JibriSigner) -> str:
    header = {"alg": "HS256", "typ": "JWT", "kid": signer.kid}
    payload = {"iss": ISSUER, "aud": [AUDIENCE], "exp": int(time.time()) + 600}
    return forged_token(header, payload, hmac_secret=signer.public_pem())


def _alg_none(signer: JibriSigner) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": signer.kid}
    payload = {"iss": ISSUER, "aud": [AUDIENCE], "exp": int(time.time()) + 600}
    return forged_token(header, payload)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s, o: None, "missing bearer token"),
        (lambda s, o: "", "missing bearer token"),
        (lambda s, o: s.token(), "authorization is not a bearer token"),
        (lambda s, o: "Basic " + s.token(), "authorization is not a bearer token"),
        (lambda s, o: "Bearer ", "authorization is not a bearer token"),
        (lambda s, o: "Bearer " + "a" * 9000, "token too long"),
        (lambda s, o: "Bearer not-a-jwt", "malformed token"),
        (lambda s, o: "Bearer a.b.c", "malformed token"),
        (lambda s, o: s.bearer(kid="jibri-1999"), "unknown kid"),
        (lambda s, o: "Bearer " + jwt.encode({"iss": ISSUER}, s.key, "RS256"), "unknown kid"),
        (lambda s, o: s.bearer(ttl=-31), "token expired"),
        (lambda s, o: s.bearer(ttl=-3600), "token expired"),
        (lambda s, o: s.bearer(claims={"iss": "someone-else"}), "wrong issuer"),
        (lambda s, o: s.bearer(claims={"aud": ["jicofo"]}), "wrong audience"),
        (lambda s, o: s.bearer(claims={"aud": "jibri-pod-controllers"}), "wrong audience"),
        (lambda s, o: s.bearer(drop=["exp"]), "missing claim exp"),
        (lambda s, o: s.bearer(drop=["iss"]), "missing claim iss"),
        (lambda s, o: s.bearer(drop=["aud"]), "missing claim aud"),
        (lambda s, o: "Bearer " + _alg_none(s), "algorithm not allowed"),
        (lambda s, o: "Bearer " + _hs256_with_public_key(s), "algorithm not allowed"),
        # Another key, presenting a kid we know: the signature does not verify.
        (lambda s, o: o.bearer(kid=s.kid), "bad signature"),
    ],
)
def test_refused_tokens(
    verifier: Verifier,
    signer: JibriSigner,
    other_signer: JibriSigner,
    make: object,
    reason: str,
) -> None:
    assert callable(make)
    with pytest.raises(TokenError) as caught:
        verifier.verify(make(signer, other_signer))
    assert str(caught.value) == reason


def test_zero_leeway(keys_dir: Path, signer: JibriSigner) -> None:
    strict = Verifier(jwt_settings(keys_dir=keys_dir, leeway=0))
    with pytest.raises(TokenError, match="token expired"):
        strict.verify(signer.bearer(ttl=-2))


def test_a_tampered_payload_is_refused(verifier: Verifier, signer: JibriSigner) -> None:
    head, _, signature = signer.token().split(".")
    other = signer.token(claims={"iss": ISSUER, "aud": [AUDIENCE, "x"]}).split(".")[1]
    with pytest.raises(TokenError, match="bad signature"):
        verifier.verify(f"Bearer {head}.{other}.{signature}")


def test_two_keys_during_rotation(
    keys_dir: Path, signer: JibriSigner, other_signer: JibriSigner
) -> None:
    (keys_dir / f"{other_signer.kid}.pem").write_bytes(other_signer.public_pem())
    both = Verifier(jwt_settings(keys_dir=keys_dir))
    assert both.kids == ["jibri-2025", "jibri-2026"]
    assert both.verify(signer.bearer()).kid == "jibri-2025"
    assert both.verify(other_signer.bearer()).kid == "jibri-2026"


def test_keys_from_a_jwks_file(
    tmp_path: Path, signer: JibriSigner, other_signer: JibriSigner
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [signer.public_jwk(), other_signer.public_jwk()]}))
    verifier = Verifier(jwt_settings(jwks_file=jwks))
    assert verifier.kids == ["jibri-2025", "jibri-2026"]
    assert verifier.verify(other_signer.bearer()).kid == "jibri-2026"
    with pytest.raises(TokenError, match="bad signature"):
        verifier.verify(signer.bearer(kid=other_signer.kid))


def test_dir_and_jwks_together(
    keys_dir: Path, tmp_path: Path, signer: JibriSigner, other_signer: JibriSigner
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [other_signer.public_jwk()]}))
    assert load_keys(jwt_settings(keys_dir=keys_dir, jwks_file=jwks)).keys() == {
        "jibri-2025",
        "jibri-2026",
    }


def test_keys_dir_skips_hidden_entries_and_other_suffixes(
    keys_dir: Path, signer: JibriSigner
) -> None:
    # A mounted Secret: ..data symlinks and hidden timestamped directories.
    (keys_dir / "..2025_06_01").mkdir()
    (keys_dir / ".hidden.pem").write_text("garbage")
    (keys_dir / "README.txt").write_text("not a key")
    assert set(load_keys(jwt_settings(keys_dir=keys_dir))) == {signer.kid}


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("garbage.pem", b"garbage", "not a PEM public key"),
        ("noext", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a PEM"),
    ],
)
def test_a_bad_key_file_is_a_load_error(
    keys_dir: Path, name: str, content: bytes, problem: str
) -> None:
    (keys_dir / name).write_bytes(content)
    with pytest.raises(KeyLoadError, match=problem) as caught:
        Verifier(jwt_settings(keys_dir=keys_dir))
    assert caught.value.setting == "JWT_KEYS_DIR"


def test_a_non_rsa_key_is_a_load_error(keys_dir: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (keys_dir / "ec.pem").write_bytes(pem)
    with pytest.raises(KeyLoadError, match="not an RSA public key"):
        load_keys(jwt_settings(keys_dir=keys_dir))


def test_no_keys_at_all_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="no RSA public keys"):
        load_keys(jwt_settings(keys_dir=tmp_path))


@pytest.mark.parametrize(
    "content", ["{not json", "[]", '{"keys": []}', '{"keys": [{"kty": "RSA"}]}']
)
def test_a_bad_jwks_is_a_load_error(tmp_path: Path, keys_dir: Path, content: str) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(content)
    with pytest.raises(KeyLoadError, match="not a usable JWKS") as caught:
        load_keys(jwt_settings(keys_dir=keys_dir, jwks_file=jwks))
    assert caught.value.setting == "JWT_JWKS_FILE"


def _touch_later(path: Path) -> None:
    # Make sure the change is visible even on file systems with coarse timestamps.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_reload_picks_up_a_new_key(
    keys_dir: Path, verifier: Verifier, other_signer: JibriSigner
) -> None:
    assert verifier.reload_if_changed() is False
    with pytest.raises(TokenError, match="unknown kid"):
        verifier.verify(other_signer.bearer())
    (keys_dir / f"{other_signer.kid}.pem").write_bytes(other_signer.public_pem())
    assert verifier.reload_if_changed() is True
    assert verifier.verify(other_signer.bearer()).kid == "jibri-2026"
    assert verifier.reload_if_changed() is False


def test_reload_picks_up_a_replaced_key(
    keys_dir: Path, verifier: Verifier, signer: JibriSigner, other_signer: JibriSigner
) -> None:
    path = keys_dir / f"{signer.kid}.pem"
    path.write_bytes(other_signer.public_pem())
    _touch_later(path)
    assert verifier.reload_if_changed() is True
    assert verifier.verify(other_signer.bearer(kid=signer.kid)).kid == signer.kid
    with pytest.raises(TokenError, match="bad signature"):
        verifier.verify(signer.bearer())


def test_reload_keeps_the_old_keys_when_the_new_file_is_garbage(
    keys_dir: Path, verifier: Verifier, signer: JibriSigner
) -> None:
    (keys_dir / "jibri-2026.pem").write_text("-----BEGIN PUBLIC KEY-----\nnope\n")
    assert verifier.reload_if_changed() is False
    assert verifier.kids == ["jibri-2025"]
    assert verifier.verify(signer.bearer()).kid == "jibri-2025"


def test_reload_keeps_the_old_keys_when_all_files_vanish(
    keys_dir: Path, verifier: Verifier, signer: JibriSigner
) -> None:
    (keys_dir / f"{signer.kid}.pem").unlink()
    assert verifier.reload_if_changed() is False
    assert verifier.verify(signer.bearer()).kid == "jibri-2025"


def test_reload_keeps_the_old_keys_when_the_jwks_turns_to_garbage(
    tmp_path: Path, signer: JibriSigner
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [signer.public_jwk()]}))
    verifier = Verifier(jwt_settings(jwks_file=jwks))
    jwks.write_text("[]")
    _touch_later(jwks)
    assert verifier.reload_if_changed() is False
    assert verifier.verify(signer.bearer()).kid == signer.kid


def test_given_keys_are_used_as_is(signer: JibriSigner) -> None:
    verifier = Verifier(jwt_settings(), keys={"k": public_key_from_pem(signer.public_pem())})
    assert verifier.verify(signer.bearer(kid="k")).kid == "k"
    assert verifier.reload_if_changed() is False


# -- the table of verified tokens -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_remembered_token_still_expires(keys_dir: Path, signer: JibriSigner) -> None:
    clock = Clock()
    verifier = Verifier(jwt_settings(keys_dir=keys_dir, leeway=5), clock=clock)
    token = signer.bearer(ttl=60)
    assert verifier.verify(token).kid == signer.kid
    clock.now += 64  # within exp + leeway: still fine, answered from the table
    assert verifier.verify(token).kid == signer.kid
    clock.now += 2
    with pytest.raises(TokenError, match="expired"):
        verifier.verify(token)


def test_a_remembered_token_is_forgotten_when_its_key_goes(
    keys_dir: Path, verifier: Verifier, signer: JibriSigner, other_signer: JibriSigner
) -> None:
    token = signer.bearer()
    assert verifier.verify(token).kid == signer.kid
    # Rotation done: the old key is replaced by the new one; the old token must stop working.
    (keys_dir / f"{signer.kid}.pem").unlink()
    (keys_dir / f"{other_signer.kid}.pem").write_bytes(other_signer.public_pem())
    assert verifier.reload_if_changed() is True
    with pytest.raises(TokenError, match="unknown kid"):
        verifier.verify(token)


def test_the_table_is_bounded(keys_dir: Path, signer: JibriSigner) -> None:
    verifier = Verifier(jwt_settings(keys_dir=keys_dir), remember=2)
    tokens = [signer.bearer(ttl=600 + i) for i in range(3)]  # three distinct tokens
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._verified) == 2
    assert tokens[0].split()[1] not in verifier._verified


def test_a_refused_token_is_not_remembered(verifier: Verifier, other_signer: JibriSigner) -> None:
    token = other_signer.bearer(kid="jibri-2025")  # a known kid, the wrong key
    for _ in range(2):
        with pytest.raises(TokenError, match="bad signature"):
            verifier.verify(token)


# -- odd headers and unsupported key types ------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "RS256", "kid": 5},
        {"alg": "RS256", "kid": ["jibri-2025"]},
        {"alg": "RS256", "kid": "jibri-2025", "crit": "exp"},
        {"alg": "RS256", "kid": "jibri-2025", "crit": [1]},
        {"alg": "RS256", "kid": "jibri-2025", "crit": ["exp"]},
        {"alg": "RS256", "kid": "jibri-2025", "crit": []},
        {"alg": "RS256", "kid": "jibri-2025", "b64": False},
        {"alg": ["RS256"], "kid": "jibri-2025"},
        {"alg": None},
    ],
)
def test_an_odd_header_is_a_token_error(verifier: Verifier, header: dict[str, object]) -> None:
    token = forged_token(header, {"iss": ISSUER, "aud": [AUDIENCE], "exp": time.time() + 60})
    with pytest.raises(TokenError):
        verifier.verify("Bearer " + token)


def test_an_unsupported_key_type_at_start_up_names_the_file(keys_dir: Path) -> None:
    (keys_dir / "sm2.pem").write_bytes(SM2_PUBLIC_KEY)
    with pytest.raises(KeyLoadError, match=r"sm2\.pem: not an RSA public key") as caught:
        Verifier(jwt_settings(keys_dir=keys_dir))
    assert caught.value.path == keys_dir / "sm2.pem"
    assert caught.value.setting == "JWT_KEYS_DIR"


def test_an_unsupported_key_added_at_run_time_keeps_the_old_keys(
    keys_dir: Path, verifier: Verifier, signer: JibriSigner
) -> None:
    (keys_dir / "sm2.pem").write_bytes(SM2_PUBLIC_KEY)
    update = verifier.read_if_changed()
    assert update is not None
    assert update.error is not None
    assert update.error.path == keys_dir / "sm2.pem"
    assert verifier.apply(update) is False
    assert verifier.kids == ["jibri-2025"]
    assert verifier.verify(signer.bearer()).kid == "jibri-2025"
    # Refused once: the same files are not read and reported again every period.
    assert verifier.read_if_changed() is None
    (keys_dir / "sm2.pem").unlink()  # back to the files in force: nothing to change
    assert verifier.read_if_changed() is None
    assert verifier.verify(signer.bearer()).kid == "jibri-2025"


def test_reading_new_keys_changes_nothing_until_they_are_applied(
    keys_dir: Path, verifier: Verifier, signer: JibriSigner, other_signer: JibriSigner
) -> None:
    token = signer.bearer()
    assert verifier.verify(token).kid == signer.kid
    (keys_dir / f"{signer.kid}.pem").unlink()
    (keys_dir / f"{other_signer.kid}.pem").write_bytes(other_signer.public_pem())
    update = verifier.read_if_changed()  # what the thread does: reads files, touches nothing
    assert update is not None
    assert update.error is None
    assert verifier.kids == [signer.kid]
    assert token.split()[1] in verifier._verified
    assert verifier.apply(update) is True  # on the loop: keys and table change together
    assert verifier.kids == [other_signer.kid]
    assert verifier._verified == {}
    with pytest.raises(TokenError, match="unknown kid"):
        verifier.verify(token)


# -- the RSA keys and the signature (PyCryptodome) ------------------------------------------------


def _pem(key: object, encoding: str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    if encoding == "pkcs1-public":
        return key.public_key().public_bytes(  # type: ignore[attr-defined,no-any-return]
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        )
    algorithm = (
        serialization.BestAvailableEncryption(b"secret")
        if encoding == "encrypted-private"
        else serialization.NoEncryption()
    )
    return key.private_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, algorithm
    )


def test_a_pkcs1_public_key_is_accepted(keys_dir: Path, signer: JibriSigner) -> None:
    (keys_dir / f"{signer.kid}.pem").write_bytes(_pem(signer.key, "pkcs1-public"))
    verifier = Verifier(jwt_settings(keys_dir=keys_dir))
    assert verifier.verify(signer.bearer()).kid == signer.kid


@pytest.mark.parametrize("encoding", ["private", "encrypted-private"])
def test_a_private_key_is_refused(keys_dir: Path, signer: JibriSigner, encoding: str) -> None:
    # A private key in the directory of public ones is a mistake to stop at, not to use.
    (keys_dir / "leaked.pem").write_bytes(_pem(signer.key, encoding))
    with pytest.raises(KeyLoadError, match=r"leaked\.pem: not a PEM public key") as caught:
        load_keys(jwt_settings(keys_dir=keys_dir))
    assert caught.value.path == keys_dir / "leaked.pem"


def test_a_private_key_under_a_public_label_is_refused(keys_dir: Path, signer: JibriSigner) -> None:
    import base64

    from cryptography.hazmat.primitives import serialization

    der = signer.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    body = base64.encodebytes(der).decode()
    (keys_dir / "disguised.pem").write_text(
        f"-----BEGIN PUBLIC KEY-----\n{body}-----END PUBLIC KEY-----\n"
    )
    with pytest.raises(KeyLoadError, match=r"disguised\.pem: a private key, not a public one"):
        load_keys(jwt_settings(keys_dir=keys_dir))


def _signed_with(signer: JibriSigner, sign: object) -> str:
    """A Jibri-shaped RS256 token whose signature `sign` makes over the signing input."""
    genuine = signer.token()
    signing_input = genuine.rpartition(".")[0]
    assert callable(sign)
    signature = sign(signing_input.encode())
    return f"{signing_input}.{jwt.utils.base64url_encode(signature).decode()}"


def test_only_pkcs1_v15_over_sha256_is_rs256(verifier: Verifier, signer: JibriSigner) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    def sha256(data: bytes) -> bytes:
        return signer.key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def sha1(data: bytes) -> bytes:
        return signer.key.sign(data, padding.PKCS1v15(), hashes.SHA1())

    def pss(data: bytes) -> bytes:
        mgf = padding.MGF1(hashes.SHA256())
        return signer.key.sign(data, padding.PSS(mgf, 32), hashes.SHA256())

    assert verifier.verify("Bearer " + _signed_with(signer, sha256)).kid == signer.kid
    for other_scheme in (sha1, pss):
        with pytest.raises(TokenError, match="bad signature"):
            verifier.verify("Bearer " + _signed_with(signer, other_scheme))
    with pytest.raises(TokenError, match="bad signature"):  # too short for the key
        verifier.verify("Bearer " + signer.token().rpartition(".")[0] + ".AAAA")


def test_a_jwks_skips_what_it_cannot_use(tmp_path: Path, signer: JibriSigner) -> None:
    jwks = tmp_path / "jwks.json"
    entries = [
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
        {**signer.public_jwk(), "kid": "for-encryption", "use": "enc"},
        {**signer.public_jwk(), "kid": ""},
        {"kty": "RSA", "kid": "broken", "n": 5, "e": "AQAB"},
        signer.public_jwk(),
    ]
    jwks.write_text(json.dumps({"keys": entries}))
    verifier = Verifier(jwt_settings(jwks_file=jwks))
    assert verifier.kids == [signer.kid]
    assert verifier.verify(signer.bearer()).kid == signer.kid


def test_a_jwks_of_only_unusable_keys_says_why(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "EC", "kid": "ec"}]}))
    with pytest.raises(KeyLoadError, match=r"not a usable JWKS \(not an RSA key \(kty 'EC'\)\)"):
        load_keys(jwt_settings(jwks_file=jwks))


# -- key strength -----------------------------------------------------------------------------


def rsa_public_key(bits: int) -> RSA.RsaKey:
    """An RSA public key of exactly ``bits`` bits (the libraries refuse to generate small ones,
    so the modulus is built from two primes)."""
    while True:
        p, q = getPrime(bits // 2), getPrime(bits - bits // 2)
        if (p * q).bit_length() == bits and p != q:
            return RSA.construct((p * q, 65537))


def jwk_of(key: RSA.RsaKey, kid: str) -> dict[str, str]:
    def b64(number: int) -> str:
        raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return {"kty": "RSA", "kid": kid, "use": "sig", "n": b64(key.n), "e": b64(key.e)}


@pytest.fixture(scope="module")
def sized_keys() -> dict[int, RSA.RsaKey]:
    return {bits: rsa_public_key(bits) for bits in (512, 1024, 2047)}


@pytest.mark.parametrize("bits", [512, 1024, 2047])
def test_an_rsa_key_under_2048_bits_is_refused_from_pem(
    sized_keys: dict[int, RSA.RsaKey], bits: int
) -> None:
    with pytest.raises(KeyFormatError, match=f"an RSA key of {bits} bits; RS256 needs at least"):
        public_key_from_pem(sized_keys[bits].export_key("PEM"))


@pytest.mark.parametrize("bits", [512, 1024, 2047])
def test_an_rsa_key_under_2048_bits_is_refused_from_a_jwk(
    sized_keys: dict[int, RSA.RsaKey], bits: int
) -> None:
    with pytest.raises(KeyFormatError, match=f"an RSA key of {bits} bits"):
        public_key_from_jwk(jwk_of(sized_keys[bits], "k"))


def test_a_2048_bit_key_is_accepted_from_pem_and_jwk(signer: JibriSigner) -> None:
    key = public_key_from_pem(signer.public_pem())
    assert key.size_in_bits() == 2048
    assert public_key_from_jwk(signer.public_jwk()).n == key.n


def test_a_weak_key_in_a_keys_dir_refuses_the_set_naming_the_file(
    tmp_path: Path, signer: JibriSigner, sized_keys: dict[int, RSA.RsaKey]
) -> None:
    (tmp_path / "good.pem").write_bytes(signer.public_pem())
    (tmp_path / "weak.pem").write_bytes(sized_keys[512].export_key("PEM"))
    with pytest.raises(KeyLoadError) as caught:
        load_keys(jwt_settings(keys_dir=tmp_path))
    assert caught.value.path == tmp_path / "weak.pem"
    assert str(caught.value).startswith(f"{tmp_path / 'weak.pem'}: an RSA key of 512 bits")


def test_a_weak_key_in_a_jwks_refuses_the_file_even_beside_good_keys(
    tmp_path: Path, signer: JibriSigner, sized_keys: dict[int, RSA.RsaKey]
) -> None:
    jwks = tmp_path / "jwks.json"
    keys = [signer.public_jwk(), jwk_of(sized_keys[1024], "old-1024")]
    jwks.write_text(json.dumps({"keys": keys}))
    with pytest.raises(KeyLoadError, match="kid 'old-1024': an RSA key of 1024 bits") as caught:
        load_keys(jwt_settings(jwks_file=jwks))
    assert caught.value.path == jwks
    assert caught.value.setting == "JWT_JWKS_FILE"


def test_a_token_signed_by_a_weak_key_cannot_be_verified_because_the_key_never_loads(
    tmp_path: Path, sized_keys: dict[int, RSA.RsaKey]
) -> None:
    """Before: a 512-bit key loaded silently and its tokens verified."""
    (tmp_path / "weak.pem").write_bytes(sized_keys[512].export_key("PEM"))
    with pytest.raises(KeyLoadError, match="512 bits"):
        Verifier(jwt_settings(keys_dir=tmp_path))
