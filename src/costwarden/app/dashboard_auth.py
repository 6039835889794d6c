"""The dashboard's settings mapped into the dashboard package's own types: the JWT
verification config and the session secrets (the dashboard package does not import config).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from costwarden.config.settings import Settings
from costwarden.core.errors import ConfigError, InvalidInput
from costwarden.dashboard.jwt_auth import JwtConfig


def jwt_config(settings: Settings) -> JwtConfig | None:
    """How bearer JWTs are verified; None when neither a JWKS file nor a secret is set."""
    d = settings.dashboard
    if not d.jwt_jwks_file and settings.dashboard_jwt_secret is None:
        return None
    try:
        return JwtConfig(
            audience=d.jwt_audience,
            issuer=d.jwt_issuer,
            algorithms=d.algorithms(),
            jwks_path=Path(d.jwt_jwks_file) if d.jwt_jwks_file else None,
            secret=settings.dashboard_jwt_secret if not d.jwt_jwks_file else None,
            role_claim=d.jwt_role_claim,
            org_claim=d.jwt_org_claim,
        )
    except InvalidInput as exc:
        raise ConfigError(f"[dashboard] {exc}") from None


def session_secrets(settings: Settings) -> list[str]:
    """The secrets session cookies and CSRF tokens are signed with (the first signs).

    COSTWARDEN_DASHBOARD_SECRET when set; else one derived from the admin token (so every
    gateway sharing the token accepts the others' sessions, and a new token ends them);
    else a random one for this process (sessions end with it, and do not cross processes).
    """
    if settings.dashboard_secret:
        return [s.strip() for s in settings.dashboard_secret.split(",") if s.strip()]
    if settings.admin_token:
        derived = hmac.new(
            settings.admin_token.encode(), b"costwarden.dashboard.secret", hashlib.sha256
        )
        return [derived.hexdigest()]
    return [secrets.token_hex(32)]


def session_secret_warning(settings: Settings) -> str | None:
    """What startup logs when session_secrets falls back to a random per-process secret."""
    if settings.dashboard_secret or settings.admin_token:
        return None
    return (
        "COSTWARDEN_DASHBOARD_SECRET and COSTWARDEN_ADMIN_TOKEN are unset: dashboard sign-ins "
        "last only as long as this process and do not cross to other gateway processes"
    )
