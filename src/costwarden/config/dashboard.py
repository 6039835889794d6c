"""``[dashboard]``: the web dashboard at ``/dashboard``, its sign-in sessions, and sign-in
with a company identity provider's JWTs.

The session cookie's secret is ``COSTWARDEN_DASHBOARD_SECRET`` (comma-separated to rotate:
the first signs, any verifies), kept on :class:`~costwarden.config.settings.Settings` beside
the admin token; the JWT's HMAC secret, when HS algorithms are used, is
``COSTWARDEN_DASHBOARD_JWT_SECRET``. The dashboard package does not import config: the app
maps these values into ``dashboard.jwt_auth.JwtConfig``.
"""

from __future__ import annotations

import dataclasses

from costwarden.config.fields import setting as _setting

JWT_SECRET_ENV = "COSTWARDEN_DASHBOARD_JWT_SECRET"


@dataclasses.dataclass(slots=True)
class DashboardSettings:
    enabled: bool = _setting(
        True,
        "Serve the web dashboard at /dashboard (sign-in with the admin token, an admin key "
        "or, when configured, a JWT).",
        "COSTWARDEN_DASHBOARD_ENABLED",
    )
    session_max_age_seconds: int = _setting(
        8 * 3600,
        "How long a dashboard sign-in lasts, in seconds (a JWT's session never outlives the "
        "token).",
        "COSTWARDEN_DASHBOARD_SESSION_MAX_AGE_SECONDS",
    )
    cookie_secure: bool = _setting(
        False,
        "Mark the session cookie Secure (sent over HTTPS only): set it when the dashboard is "
        "served over HTTPS.",
        "COSTWARDEN_DASHBOARD_COOKIE_SECURE",
    )
    jwt_jwks_file: str = _setting(
        "",
        "A JWKS file of the identity provider's public keys: bearer JWTs signed by them sign "
        "in (RS/PS/ES algorithms). Empty, with no COSTWARDEN_DASHBOARD_JWT_SECRET: JWTs are "
        "not accepted.",
        "COSTWARDEN_DASHBOARD_JWT_JWKS_FILE",
    )
    jwt_algorithms: str = _setting(
        "RS256",
        "The JWT algorithms accepted, comma-separated (HS256/384/512 with the secret, public "
        "key algorithms with the JWKS file).",
        "COSTWARDEN_DASHBOARD_JWT_ALGORITHMS",
    )
    jwt_audience: str = _setting(
        "", "The audience (aud) a JWT must carry.", "COSTWARDEN_DASHBOARD_JWT_AUDIENCE"
    )
    jwt_issuer: str = _setting(
        "", "The issuer (iss) a JWT must carry.", "COSTWARDEN_DASHBOARD_JWT_ISSUER"
    )
    jwt_role_claim: str = _setting(
        "costwarden_role",
        "The JWT claim naming the role: platform_admin, org_admin or viewer.",
        "COSTWARDEN_DASHBOARD_JWT_ROLE_CLAIM",
    )
    jwt_org_claim: str = _setting(
        "org",
        "The JWT claim naming the org id an org_admin or org-scoped viewer is bound to.",
        "COSTWARDEN_DASHBOARD_JWT_ORG_CLAIM",
    )

    def algorithms(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.jwt_algorithms.split(",") if a.strip())


def dashboard_problem(s: DashboardSettings) -> tuple[str, str] | None:
    """(field, what is wrong) for the first out-of-range ``[dashboard]`` value, or None."""
    if s.session_max_age_seconds < 60:
        return "session_max_age_seconds", "must be at least 60"
    if s.jwt_jwks_file and not (s.jwt_audience and s.jwt_issuer):
        return "jwt_jwks_file", "needs jwt_audience and jwt_issuer"
    if not s.algorithms():
        return "jwt_algorithms", "must name at least one algorithm"
    return None
