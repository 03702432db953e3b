"""Verification of the JWT that Jibri puts on its webhooks (``jibri.jwt-info``).

Jibri signs with RS256, a ``kid`` header, ``iss``, ``aud`` (an array) and ``exp``, nothing else.
We accept exactly that: RS256 only (``alg: none`` and HS256 signed with the public key are
refused before any key is used), the key chosen by ``kid`` from the configured set (several keys
at once, for rotation), and ``exp``, ``iss`` and ``aud`` required. The decision is made from the
Authorization header alone, before the body is read.

Two libraries share the work. PyJWT parses the token and checks its header and claims; the RSA
signature (PKCS#1 v1.5 over SHA-256, the only scheme RS256 names) is checked with PyCryptodome
first, so PyJWT is installed without its ``crypto`` extra. The ``cryptography`` package it would
bring costs 9 MiB of resident memory, a seventh of the controller's (docs/performance.md).

Keys come from PEM files in a directory (``<kid>.pem``; a mounted Secret or ConfigMap) and/or a
JWKS file. They are re-read when the files change, so rotating a key needs no restart. A file
that cannot be used (not PEM, a key of another type, such as SM2 or EC, or an RSA key under
2048 bits, which RS256 forbids: RFC 7518 section 3.3) is refused with the file's name: at
start-up that stops the process with one line, at run time the previous keys stay in force.

The reload is split in two on purpose: `Verifier.read_if_changed` does the blocking file reads
and may run in a thread; `Verifier.apply` swaps the key set *and* clears the table of verified
tokens in one step, and must run on the event loop, where `verify` runs. A token verified with
a removed key can then never be remembered after the table was cleared.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
from Crypto.Hash import SHA256
from Crypto.IO import PEM
from Crypto.PublicKey import RSA
from Crypto.Signature import pkcs1_15
from Crypto.Util.asn1 import DerObjectId, DerSequence
from jwt.utils import base64url_decode, from_base64url_uint

from jibri_pod_controller.core.config import JwtSettings

log = logging.getLogger("jibri_pod_controller.adapters.tokens")

MAX_TOKEN_LENGTH = 8192
MIN_RSA_BITS = 2048
"""RS256 keys must have at least 2048 bits (RFC 7518 section 3.3)."""


class TokenError(Exception):
    """The request's token is missing or invalid; ``str()`` is a short, safe reason."""


class KeyLoadError(Exception):
    """The configured keys could not be loaded; ``setting`` names the variable at fault and
    ``path`` the file (when one file is to blame)."""

    def __init__(self, message: str, *, setting: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        self.path = path


RSAPublicKey = RSA.RsaKey
"""A webhook key: an RSA public key (PyCryptodome's type, never a private key)."""

_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
_PEM_LABELS = ("PUBLIC KEY", "RSA PUBLIC KEY")  # SubjectPublicKeyInfo, PKCS#1


class KeyFormatError(ValueError):
    """Not a usable RSA public key; ``str()`` says why."""


class WeakKeyError(KeyFormatError):
    """An RSA key too short for RS256."""


def _strong_enough(key: RSAPublicKey) -> RSAPublicKey:
    bits = key.size_in_bits()
    if bits < MIN_RSA_BITS:
        raise WeakKeyError(
            f"an RSA key of {bits} bits; RS256 needs at least {MIN_RSA_BITS} (RFC 7518 3.3)"
        )
    return key


def _algorithm_of(der: bytes) -> str:
    """The algorithm OID of a SubjectPublicKeyInfo, or "unknown"."""
    try:
        info = DerSequence().decode(der)
        algorithm = DerSequence().decode(info[0])
        return str(DerObjectId().decode(algorithm[0]).value)
    except (ValueError, IndexError, TypeError):
        return "unknown"


def public_key_from_pem(data: bytes) -> RSAPublicKey:
    """The RSA public key in a PEM file (SubjectPublicKeyInfo or PKCS#1).

    Raises KeyFormatError for anything else: not PEM, a private key, a key of another type
    (EC, SM2, Ed25519...), or a malformed key.
    """
    try:
        der, label, encrypted = PEM.decode(data.decode("ascii"))
    except (ValueError, UnicodeDecodeError, IndexError, TypeError) as exc:
        raise KeyFormatError(f"not a PEM public key ({exc or type(exc).__name__})") from None
    if encrypted or label not in _PEM_LABELS:
        raise KeyFormatError(f"not a PEM public key (a {label!r} block)")
    try:
        key = RSA.import_key(der)
    except (ValueError, IndexError, TypeError) as exc:
        algorithm = _algorithm_of(der) if label == "PUBLIC KEY" else _RSA_ENCRYPTION
        if algorithm not in (_RSA_ENCRYPTION, "unknown"):
            raise KeyFormatError(f"not an RSA public key (algorithm {algorithm})") from None
        raise KeyFormatError(f"not a PEM public key of a supported type ({exc})") from None
    if key.has_private():  # a private key's DER under a public key's label
        raise KeyFormatError("a private key, not a public one")
    return _strong_enough(key)


def public_key_from_jwk(jwk: Mapping[str, Any]) -> RSAPublicKey:
    """The RSA public key of one JWK (``kty`` RSA, ``n`` and ``e``); KeyFormatError else."""
    if jwk.get("kty") != "RSA":
        raise KeyFormatError(f"not an RSA key (kty {str(jwk.get('kty'))[:16]!r})")
    n, e = jwk.get("n"), jwk.get("e")
    if not isinstance(n, str) or not isinstance(e, str):
        raise KeyFormatError("an RSA JWK needs the strings n and e")
    try:
        key = RSA.construct((from_base64url_uint(n), from_base64url_uint(e)))
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not a valid RSA public key ({exc})") from None
    return _strong_enough(key)


def signature_is_valid(token: str, key: RSAPublicKey) -> bool:
    """Whether the compact JWS ``token`` carries a valid RS256 signature by ``key``."""
    signing_input, _, signature = token.rpartition(".")
    try:
        pkcs1_15.new(key).verify(
            SHA256.new(signing_input.encode("ascii")), base64url_decode(signature)
        )
    except (ValueError, TypeError, UnicodeEncodeError):
        return False
    return True


def _load_pem_dir(directory: Path) -> dict[str, RSAPublicKey]:
    keys: dict[str, RSAPublicKey] = {}
    for path in sorted(directory.iterdir()):
        if (
            path.name.startswith(".")
            or not path.is_file()
            or path.suffix not in (".pem", ".pub", "")
        ):
            continue
        try:
            key = public_key_from_pem(path.read_bytes())
        # No file, whatever it holds, may raise past this point.
        except Exception as exc:
            raise KeyLoadError(f"{path}: {exc}", setting="JWT_KEYS_DIR", path=path) from None
        keys[path.stem] = key
    return keys


def _load_jwks(path: Path) -> dict[str, RSAPublicKey]:
    """The RSA signing keys of a JWKS file, by kid; keys of other types, or for encryption,
    are skipped; a file with no usable key at all is a load error."""

    def refused(why: str) -> KeyLoadError:
        return KeyLoadError(
            f"{path}: not a usable JWKS ({why})", setting="JWT_JWKS_FILE", path=path
        )

    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise refused(str(exc)) from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise refused('no "keys" array')
    keys: dict[str, RSAPublicKey] = {}
    problems: list[str] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        try:
            key = public_key_from_jwk(entry)
        except WeakKeyError as exc:
            # Not a key of another type to pass over: a signing key that must not be trusted.
            raise refused(f"kid {str(kid)[:40]!r}: {exc}") from None
        except KeyFormatError as exc:
            problems.append(str(exc))
            continue
        if isinstance(kid, str) and kid:
            keys[kid] = key
    if not keys:
        raise refused("; ".join(problems[:3]) or "no RSA signing key with a kid")
    return keys


def _fingerprint(settings: JwtSettings) -> tuple[Any, ...]:
    parts: list[Any] = []
    if settings.keys_dir is not None:
        for entry in sorted(os.scandir(settings.keys_dir), key=lambda e: e.name):
            # Secrets are mounted through symlinks that are swapped atomically on update.
            parts.append((entry.name, os.stat(entry.path).st_mtime_ns))
    if settings.jwks_file is not None:
        parts.append(os.stat(settings.jwks_file).st_mtime_ns)
    return tuple(parts)


def load_keys(settings: JwtSettings) -> dict[str, RSAPublicKey]:
    keys: dict[str, RSAPublicKey] = {}
    if settings.keys_dir is not None:
        keys.update(_load_pem_dir(settings.keys_dir))
    if settings.jwks_file is not None:
        keys.update(_load_jwks(settings.jwks_file))
    if not keys:
        raise KeyLoadError(
            "no RSA public keys found in JWT_KEYS_DIR / JWT_JWKS_FILE",
            setting="JWT_KEYS_DIR" if settings.keys_dir is not None else "JWT_JWKS_FILE",
        )
    return keys


@dataclass(frozen=True)
class KeyUpdate:
    """What `Verifier.read_if_changed` found: new keys, or the error that stops them."""

    fingerprint: tuple[Any, ...]
    keys: Mapping[str, RSAPublicKey] | None
    error: KeyLoadError | None = None


@dataclass(frozen=True)
class Claims:
    kid: str
    issuer: str


class Verifier:
    """Verifies bearer tokens; remembers the ones it verified until they expire.

    Jibri builds its token once at start-up and sends the very same string with every webhook
    (a status resend every minute, for the pod's whole life), so a token seen before needs no
    second RSA verification: a bounded table maps the exact token to its claims and ``exp``.
    The table is cleared whenever the keys change, so a removed key stops working at once.
    """

    def __init__(
        self,
        settings: JwtSettings,
        keys: Mapping[str, RSAPublicKey] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        remember: int = 4096,
    ) -> None:
        self._settings = settings
        self._keys = dict(keys) if keys is not None else load_keys(settings)
        self._fingerprint = _fingerprint(settings) if keys is None else ()
        self._rejected: tuple[Any, ...] | None = None
        self._clock = clock
        self._remember = remember
        self._verified: OrderedDict[str, tuple[float, Claims]] = OrderedDict()

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)

    def read_if_changed(self) -> KeyUpdate | None:
        """Read the key files if they changed since the last `apply` (blocking; any thread).

        None when nothing changed (or the change is one already refused). Reads only; the
        verifier itself is changed by `apply`, on the event loop.
        """
        try:
            fingerprint = _fingerprint(self._settings)
        except OSError as exc:
            error = KeyLoadError(f"cannot read the keys: {exc}", setting="JWT_KEYS_DIR")
            return KeyUpdate(fingerprint=("unreadable", str(exc)), keys=None, error=error)
        if fingerprint in (self._fingerprint, self._rejected):
            return None
        try:
            return KeyUpdate(fingerprint=fingerprint, keys=load_keys(self._settings))
        except KeyLoadError as exc:
            return KeyUpdate(fingerprint=fingerprint, keys=None, error=exc)

    def apply(self, update: KeyUpdate) -> bool:
        """Install new keys and forget every verified token, in one step (on the event loop).

        A refused update changes nothing, and is remembered so it is reported once.
        """
        if update.error is not None or update.keys is None:
            self._rejected = update.fingerprint
            log.error(
                "JWT keys not reloaded; keeping the previous ones",
                extra={
                    "error": str(update.error),
                    "file": str(update.error.path) if update.error and update.error.path else "",
                },
            )
            return False
        self._keys = dict(update.keys)
        self._verified.clear()
        self._fingerprint = update.fingerprint
        self._rejected = None
        log.info("JWT keys reloaded", extra={"kids": self.kids})
        return True

    def reload_if_changed(self) -> bool:
        """`read_if_changed` then `apply`, for callers already on the event loop's thread."""
        update = self.read_if_changed()
        return update is not None and self.apply(update)

    def verify(self, authorization: str | None) -> Claims:
        if not authorization:
            raise TokenError("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise TokenError("authorization is not a bearer token")
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenError("token too long")
        known = self._verified.get(token)
        if known is not None:
            expires, claims = known
            if self._clock() <= expires + self._settings.leeway:
                self._verified.move_to_end(token)
                return claims
            del self._verified[token]
            raise TokenError("token expired")
        claims, expires = self._verify_signed(token)
        self._verified[token] = (expires, claims)
        if len(self._verified) > self._remember:
            self._verified.popitem(last=False)
        return claims

    def _verify_signed(self, token: str) -> tuple[Claims, float]:
        try:
            header = jwt.get_unverified_header(token)
        # PyJWT checks kid and crit here and raises InvalidTokenError, not only DecodeError.
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        except Exception:  # anything else a forged header provokes is still a bad token
            raise TokenError("malformed token") from None
        if header.get("alg") != "RS256":
            raise TokenError("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in self._keys:
            raise TokenError("unknown kid")
        if not signature_is_valid(token, self._keys[kid]):
            raise TokenError("bad signature")
        try:
            # The signature is checked above: PyJWT checks the claims.
            payload = jwt.decode(
                token,
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway,
                options={
                    "verify_signature": False,
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    "require": ["exp", "iss", "aud"],
                },
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.InvalidAudienceError:
            raise TokenError("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise TokenError("wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"missing claim {exc.claim}") from None
        except jwt.PyJWTError:
            raise TokenError("invalid token") from None
        except Exception:
            raise TokenError("invalid token") from None
        return Claims(kid=kid, issuer=self._settings.issuer), float(payload["exp"])
