"""The dashboard's session cookie: signed and expiring, with itsdangerous (as Starlette's own
sessions are), pure functions of the secrets and the clock.

The cookie carries who signed in -- role, org and admin key id (never a secret) -- and how,
a random session id (which the CSRF tokens are bound to: ``dashboard.csrf``) and the issue
time. It is signed, not encrypted: what it carries must be fine to show the browser.

Secrets rotate: the functions take one secret or a list of them, sign with the first and
accept a cookie signed with any, so a new secret is put first and the old one dropped once
every cookie signed with it has expired.

:func:`verify` never raises: a forged, tampered, expired, foreign or garbage cookie is None,
and the visitor is sent to sign-in.
"""

from __future__ import annotations

import dataclasses
import re
import secrets as secrets_module
from collections.abc import Sequence
from typing import Any

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

from costwarden.core.errors import InvalidInput
from costwarden.dashboard.roles import Principal

# Separates these signatures from any other use of the same secret (the CSRF tokens' own
# derivation included).
SALT = "costwarden.dashboard.session"
# Longer is not a cookie this module issued: refused before any decoding.
MAX_COOKIE_CHARS = 4096

Secrets = str | Sequence[str]

_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE_VALUE = re.compile(r"[!#-+\--:<-\[\]-~]*")


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    """What a valid cookie says: who signed in, the session's id and when it was issued (unix
    seconds)."""

    principal: Principal
    session_id: str
    issued_at: int


class _ClockedSigner(TimestampSigner):
    """A TimestampSigner whose clock is the caller's ``now`` (so issue and expiry are pure)."""

    def __init__(self, *args: Any, now: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._now = int(now)

    def get_timestamp(self) -> int:
        return self._now


def _secret_list(secrets: Secrets) -> list[str]:
    if isinstance(secrets, str):
        return [secrets] if secrets else []
    return [secret for secret in secrets if isinstance(secret, str) and secret]


def _serializer(secrets: list[str], now: float) -> URLSafeTimedSerializer:
    # itsdangerous signs with the *last* key of its list and verifies with any: ours is
    # newest first.
    return URLSafeTimedSerializer(
        list(reversed(secrets)),
        salt=SALT,
        signer=_ClockedSigner,
        signer_kwargs={"now": now},
    )


def new_session_id() -> str:
    """A random session id (128 bits, URL-safe)."""
    return secrets_module.token_urlsafe(16)


def issue(
    secrets: Secrets, principal: Principal, now: float, *, session_id: str | None = None
) -> str:
    """The signed cookie value for ``principal``, issued at ``now`` (unix seconds), for a new
    session (a random id unless ``session_id`` is given). InvalidInput without a secret."""
    keys = _secret_list(secrets)
    if not keys:
        raise InvalidInput("the session cookie needs a non-empty secret")
    payload = {
        "role": principal.role,
        "org": principal.org_id,
        "key": principal.key_id,
        "via": principal.via,
        "sid": session_id if session_id is not None else new_session_id(),
        "iat": int(now),
    }
    return str(_serializer(keys, now).dumps(payload))


def verify(secrets: Secrets, cookie: object, max_age_seconds: int, now: float) -> Session | None:
    """The session a cookie value carries, if one of ``secrets`` signed it at most
    ``max_age_seconds`` before ``now``; None for anything else (never an exception)."""
    keys = _secret_list(secrets)
    if not keys or not isinstance(cookie, str) or not cookie or len(cookie) > MAX_COOKIE_CHARS:
        return None
    try:
        payload = _serializer(keys, now).loads(cookie, max_age=max_age_seconds)
    except BadData:
        return None
    return _session(payload, now)


def _session(payload: object, now: float) -> Session | None:
    if not isinstance(payload, dict):
        return None
    sid, iat = payload.get("sid"), payload.get("iat")
    if not isinstance(sid, str) or not sid or not isinstance(iat, int) or isinstance(iat, bool):
        return None
    if iat > now:
        return None
    key_id = payload.get("key")
    if key_id is not None and not isinstance(key_id, str):
        return None
    try:
        principal = Principal(
            role=payload.get("role"),  # type: ignore[arg-type]  # checked by Principal
            org_id=payload.get("org"),
            key_id=key_id,
            via=payload.get("via"),  # type: ignore[arg-type]  # checked by Principal
        )
    except InvalidInput:
        return None
    return Session(principal=principal, session_id=sid, issued_at=iat)


def cookie_path(root_path: str, mount: str = "/dashboard") -> str:
    """The cookie's Path: the dashboard's mount under the ASGI ``root_path`` (a reverse
    proxy's prefix, such as ``/costwarden``)."""
    return "/" + "/".join(part for part in (root_path + "/" + mount).split("/") if part)


def cookie_header(name: str, value: str, *, max_age: int, path: str, secure: bool) -> str:
    """The Set-Cookie header's value: HttpOnly, SameSite=Strict, the given Path and Max-Age
    (0 clears the cookie), Secure when asked. InvalidInput for a name, value or path that
    would break the header."""
    if not _COOKIE_NAME.fullmatch(name):
        raise InvalidInput("cookie name must be an HTTP token")
    if not _COOKIE_VALUE.fullmatch(value):
        raise InvalidInput("cookie value has characters a cookie cannot carry")
    if not path.startswith("/") or any(c == ";" or ord(c) < 0x21 or ord(c) > 0x7E for c in path):
        raise InvalidInput("cookie path must be an absolute path without ';' or spaces")
    if max_age < 0:
        raise InvalidInput("cookie max_age must be >= 0")
    parts = [f"{name}={value}", f"Max-Age={max_age}", f"Path={path}", "HttpOnly"]
    parts.append("SameSite=Strict")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
