"""Sign-in with a bearer JWT from a company's identity provider, verified with PyJWT.

The key is either a JWKS *file* (RS/PS/ES algorithms; the token's ``kid`` picks the key) or
an HMAC shared secret (HS algorithms), never both, and :class:`JwtConfig` fixes the allowed
algorithms: a token's header only chooses among them. So ``alg: none`` is never accepted, a
JWKS configuration never accepts an HS token (no RSA-public-key-as-HMAC-secret confusion),
and the chosen key's own algorithm must be the token's.

``exp``, ``aud`` and ``iss`` are required; the audience and issuer must be the configured
ones; ``exp``, ``nbf`` and ``iat`` are checked against the caller's ``now`` with
``leeway_seconds``. The role and the org are read from configured claims: a role outside
:data:`~costwarden.dashboard.roles.ROLES`, an org_admin without an org, or a platform_admin
with one is refused (``roles.check_scope``).

:func:`verify` never raises for a token: anything wrong is a :class:`Refusal` with a reason
fit for a log (never the token's contents, never the key).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKSet

from costwarden.core.errors import InvalidInput
from costwarden.dashboard.roles import Principal, check_scope, parse_role

# HMAC algorithms and the shortest secret (bytes) each accepts: its digest's size (RFC 7518
# 3.2).
HMAC_ALGORITHMS: dict[str, int] = {"HS256": 32, "HS384": 48, "HS512": 64}
# Public-key algorithms a JWKS file may serve.
KEY_ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
# Longer is not an identity provider's token: refused before any decoding.
MAX_TOKEN_CHARS = 16384


@dataclasses.dataclass(frozen=True, slots=True)
class JwtConfig:
    """How the identity provider's tokens are verified. Exactly one of ``jwks_path`` (a JWKS
    file: public-key algorithms) and ``secret`` (HMAC algorithms); InvalidInput otherwise."""

    audience: str
    issuer: str
    algorithms: tuple[str, ...]
    jwks_path: Path | None = None
    secret: str | None = dataclasses.field(default=None, repr=False)
    role_claim: str = "costwarden_role"
    org_claim: str = "org"
    leeway_seconds: int = 30

    def __post_init__(self) -> None:
        if (self.jwks_path is None) == (self.secret is None):
            raise InvalidInput("jwt: set exactly one of jwks_path and secret")
        if not self.algorithms:
            raise InvalidInput("jwt: algorithms must name at least one algorithm")
        if self.secret is not None:
            for algorithm in self.algorithms:
                if algorithm not in HMAC_ALGORITHMS:
                    raise InvalidInput(
                        f"jwt: with a secret, algorithms must be among "
                        f"{', '.join(HMAC_ALGORITHMS)} (not {algorithm!r})"
                    )
                if len(self.secret.encode()) < HMAC_ALGORITHMS[algorithm]:
                    raise InvalidInput(
                        f"jwt: the secret must be at least {HMAC_ALGORITHMS[algorithm]} bytes "
                        f"for {algorithm}"
                    )
        else:
            for algorithm in self.algorithms:
                if algorithm not in KEY_ALGORITHMS:
                    raise InvalidInput(
                        f"jwt: with a JWKS file, algorithms must be among "
                        f"{', '.join(sorted(KEY_ALGORITHMS))} (not {algorithm!r})"
                    )
        if not self.audience or not self.issuer:
            raise InvalidInput("jwt: audience and issuer must be set")
        if not self.role_claim or not self.org_claim:
            raise InvalidInput("jwt: role_claim and org_claim must be set")
        if self.leeway_seconds < 0:
            raise InvalidInput("jwt: leeway_seconds must be >= 0")


@dataclasses.dataclass(frozen=True, slots=True)
class JwtIdentity:
    """A verified token: who it signs in (via ``jwt``, no admin key), its subject (``sub``,
    for the audit log) and when it expires (unix seconds; a session should not outlive it)."""

    principal: Principal
    subject: str | None
    expires_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why a token was refused."""

    reason: str


def load_jwks(path: Path) -> PyJWKSet:
    """The key set of a JWKS file; InvalidInput when it cannot be read or holds no usable
    key."""
    try:
        return PyJWKSet.from_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, ValueError) as exc:
        raise InvalidInput(f"jwt: the JWKS file {path} cannot be read: {exc}") from None
    except jwt.PyJWTError as exc:
        raise InvalidInput(f"jwt: the JWKS file {path} holds no usable key: {exc}") from None


@functools.lru_cache(maxsize=8)
def _cached_jwks(path: str, mtime_ns: int, size: int) -> PyJWKSet | str:
    # keyed by the file's mtime and size: a rotated file is read again
    try:
        return load_jwks(Path(path))
    except InvalidInput as exc:
        return str(exc)


def _jwks(path: Path) -> PyJWKSet | str:
    try:
        stat = os.stat(path)
    except OSError as exc:
        return f"jwt: the JWKS file {path} cannot be read: {exc.strerror}"
    return _cached_jwks(str(path), stat.st_mtime_ns, stat.st_size)


def _short(value: object) -> str:
    return repr(value)[:40]


def _key(config: JwtConfig, header: dict[str, Any], alg: str) -> PyJWK | str | Refusal:
    if config.secret is not None:
        return config.secret
    assert config.jwks_path is not None
    keys = _jwks(config.jwks_path)
    if isinstance(keys, str):
        return Refusal(keys)
    kid = header.get("kid")
    if kid is None:
        if len(keys.keys) != 1:
            return Refusal("the token names no key (kid) and the JWKS file holds several")
        key = keys.keys[0]
    elif not isinstance(kid, str):
        return Refusal("the token's key id (kid) is not a string")
    else:
        found = [candidate for candidate in keys.keys if candidate.key_id == kid]
        if not found:
            return Refusal(f"unknown key id (kid) {_short(kid)}")
        key = found[0]
    if key.algorithm_name != alg:
        return Refusal(
            f"the token's algorithm {alg} is not its key's ({_short(key.algorithm_name)})"
        )
    return key


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _times(claims: dict[str, Any], now: float, leeway: int) -> float | Refusal:
    exp = _number(claims.get("exp"))
    if exp is None:
        return Refusal("the exp claim is not a number")
    if exp <= now - leeway:
        return Refusal("the token has expired")
    if "nbf" in claims:
        nbf = _number(claims["nbf"])
        if nbf is None:
            return Refusal("the nbf claim is not a number")
        if nbf > now + leeway:
            return Refusal("the token is not valid yet (nbf)")
    if "iat" in claims:
        iat = _number(claims["iat"])
        if iat is None:
            return Refusal("the iat claim is not a number")
        if iat > now + leeway:
            return Refusal("the token was issued in the future (iat)")
    return exp


def _decode(token: str, key: PyJWK | str, alg: str, config: JwtConfig) -> dict[str, Any] | Refusal:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=config.audience,
            issuer=config.issuer,
            options={
                "verify_signature": True,
                "verify_aud": True,
                "verify_iss": True,
                # checked against the caller's clock (_times)
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "require": ["exp", "aud", "iss"],
                "enforce_minimum_key_length": True,
            },
        )
    except jwt.MissingRequiredClaimError as exc:
        return Refusal(f"the token has no {exc.claim} claim")
    except jwt.InvalidSignatureError:
        return Refusal("the token's signature is wrong")
    except jwt.InvalidAudienceError:
        return Refusal("the token is for another audience")
    except jwt.InvalidIssuerError:
        return Refusal("the token is from another issuer")
    except jwt.InvalidAlgorithmError:
        return Refusal("the token's algorithm is not allowed")
    except jwt.InvalidKeyError:
        return Refusal("the configured key cannot verify this token")
    except jwt.PyJWTError as exc:
        return Refusal(f"the token is invalid ({type(exc).__name__})")
    return claims


def verify(token: object, config: JwtConfig, now: float) -> JwtIdentity | Refusal:
    """The identity a bearer token signs in, or why it is refused (never an exception)."""
    if not isinstance(token, str) or not token:
        return Refusal("no token")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return Refusal("the token is malformed")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return Refusal("the token is malformed")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in config.algorithms:
        return Refusal(f"the token's algorithm {_short(alg)} is not allowed")
    key = _key(config, header, alg)
    if isinstance(key, Refusal):
        return key
    claims = _decode(token, key, alg, config)
    if isinstance(claims, Refusal):
        return claims
    expires_at = _times(claims, now, config.leeway_seconds)
    if isinstance(expires_at, Refusal):
        return expires_at
    return _identity(claims, config, expires_at)


def _identity(
    claims: dict[str, Any], config: JwtConfig, expires_at: float
) -> JwtIdentity | Refusal:
    raw_role = claims.get(config.role_claim)
    if raw_role is None:
        return Refusal(f"the token has no {config.role_claim} claim")
    try:
        role = parse_role(raw_role)
    except InvalidInput:
        return Refusal(f"the token's {config.role_claim} claim is not a role")
    org = claims.get(config.org_claim)
    if org is not None and (not isinstance(org, str) or not org):
        return Refusal(f"the token's {config.org_claim} claim is not an org id")
    try:
        check_scope(role, org)
    except InvalidInput as exc:
        return Refusal(f"{exc} (claim {config.org_claim})")
    subject = claims.get("sub")
    return JwtIdentity(
        principal=Principal(role=role, org_id=org, key_id=None, via="jwt"),
        subject=subject if isinstance(subject, str) else None,
        expires_at=expires_at,
    )
