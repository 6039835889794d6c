"""CSRF tokens for the dashboard's forms, bound to the session id.

A token is HMAC-SHA256 of the session id under the dashboard's secret (domain-separated from
the session cookie's signatures), URL-safe base64. Plain ``hmac`` rather than itsdangerous:
the token needs neither a payload nor a timestamp -- the session it is bound to carries the
expiry, and the server knows the session id -- so the smallest construction that cannot be
forged without the secret is enough, and it is one fixed-length value a form field carries.

Every form of a session carries the same token; another session's token, a token of another
secret, or none is refused. Secrets rotate as the cookie's do: made with the first, accepted
with any.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from costwarden.core.errors import InvalidInput
from costwarden.dashboard.session_cookie import Secrets

# Separates these MACs from any other use of the same secret.
_DOMAIN = b"costwarden.dashboard.csrf\x00"
# base64url of a SHA-256 digest, without padding.
TOKEN_CHARS = 43


def _secret_list(secrets: Secrets) -> list[str]:
    if isinstance(secrets, str):
        return [secrets] if secrets else []
    return [secret for secret in secrets if isinstance(secret, str) and secret]


def _mac(secret: str, session_id: str) -> bytes:
    digest = hmac.new(
        secret.encode(), _DOMAIN + session_id.encode("utf-8", "surrogatepass"), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=")


def token_for(secrets: Secrets, session_id: str) -> str:
    """The CSRF token of session ``session_id`` (made with the first secret). InvalidInput
    without a secret or a session id."""
    keys = _secret_list(secrets)
    if not keys:
        raise InvalidInput("the CSRF token needs a non-empty secret")
    if not session_id:
        raise InvalidInput("the CSRF token needs a session id")
    return _mac(keys[0], session_id).decode("ascii")


def valid(secrets: Secrets, session_id: str, token: object) -> bool:
    """Whether ``token`` is session ``session_id``'s CSRF token under one of ``secrets``
    (compared in constant time; never raises)."""
    keys = _secret_list(secrets)
    if not keys or not isinstance(session_id, str) or not session_id:
        return False
    if not isinstance(token, str) or len(token) != TOKEN_CHARS:
        return False
    given = token.encode("utf-8", "surrogatepass")
    matched = False
    for secret in keys:
        # every secret is tried: the time taken does not tell which one matched
        matched |= hmac.compare_digest(_mac(secret, session_id), given)
    return matched
