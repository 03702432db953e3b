"""Verification of the JWT that Jibri puts on its webhooks (``jibri.jwt-info``).

Jibri signs with RS256, a ``kid`` header, ``iss``, ``aud`` (an array) and ``exp``, nothing else.
We accept exactly that: RS256 only (``alg: none`` and HS256 signed with the public key are
refused by PyJWT's algorithm allow-list), the key chosen by ``kid`` from the configured set
(several keys at once, for rotation), and ``exp``, ``iss`` and ``aud`` required. The decision is
made from the Authorization header alone, before the body is read.

Keys come from PEM files in a directory (``<kid>.pem``; a mounted Secret or ConfigMap) and/or a
JWKS file. They are re-read when the files change, so rotating a key needs no restart.
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
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from jibri_pod_controller.core.config import JwtSettings

log = logging.getLogger("jibri_pod_controller.adapters.tokens")

MAX_TOKEN_LENGTH = 8192


class TokenError(Exception):
    """The request's token is missing or invalid; ``str()`` is a short, safe reason."""


class KeyLoadError(Exception):
    """The configured keys could not be loaded; ``setting`` names the variable at fault."""

    def __init__(self, message: str, *, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


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
            key = load_pem_public_key(path.read_bytes())
        except (ValueError, TypeError, OSError) as exc:
            raise KeyLoadError(
                f"{path}: not a PEM public key ({exc})", setting="JWT_KEYS_DIR"
            ) from None
        if not isinstance(key, RSAPublicKey):
            raise KeyLoadError(f"{path}: not an RSA public key", setting="JWT_KEYS_DIR")
        keys[path.stem] = key
    return keys


def _load_jwks(path: Path) -> dict[str, RSAPublicKey]:
    try:
        jwks = jwt.PyJWKSet.from_json(path.read_text())
    # A JWKS that is JSON but not an object (a list, say) fails inside PyJWT with
    # AttributeError or TypeError; it must be a load error like any other bad file.
    except (
        jwt.PyJWKSetError,
        jwt.PyJWKError,
        jwt.InvalidKeyError,
        OSError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
    ) as exc:
        raise KeyLoadError(f"{path}: not a usable JWKS ({exc})", setting="JWT_JWKS_FILE") from None
    keys: dict[str, RSAPublicKey] = {}
    for jwk in jwks.keys:
        if jwk.key_id and isinstance(jwk.key, RSAPublicKey):
            keys[jwk.key_id] = jwk.key
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
        self._clock = clock
        self._remember = remember
        self._verified: OrderedDict[str, tuple[float, Claims]] = OrderedDict()

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)

    def reload_if_changed(self) -> bool:
        """Re-read the key files if they changed; keep the old keys if the new ones are bad."""
        try:
            fingerprint = _fingerprint(self._settings)
            if fingerprint == self._fingerprint:
                return False
            self._keys = load_keys(self._settings)
            self._fingerprint = fingerprint
            self._verified.clear()
        except (KeyLoadError, OSError) as exc:
            log.error("JWT keys not reloaded; keeping the previous ones", extra={"error": str(exc)})
            return False
        log.info("JWT keys reloaded", extra={"kids": self.kids})
        return True

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
        except jwt.DecodeError:
            raise TokenError("malformed token") from None
        if header.get("alg") != "RS256":
            raise TokenError("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in self._keys:
            raise TokenError("unknown kid")
        try:
            payload = jwt.decode(
                token,
                key=self._keys[kid],
                algorithms=["RS256"],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.InvalidAudienceError:
            raise TokenError("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise TokenError("wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"missing claim {exc.claim}") from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad signature") from None
        except jwt.InvalidTokenError:
            raise TokenError("invalid token") from None
        return Claims(kid=kid, issuer=self._settings.issuer), float(payload["exp"])
