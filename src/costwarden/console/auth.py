"""Signing in and out of the dashboard, and who is asking.

Sign-in takes the admin token, an admin key or (when configured) an identity provider's JWT
-- the same credentials as the admin API, checked by the same code
(:func:`costwarden.admin.access.principal_for`) -- and answers a session cookie: signed,
HttpOnly, SameSite=Strict, its Path the dashboard's under the ``root_path``, Secure when
``[dashboard] cookie_secure``, expiring after ``session_max_age_seconds`` (a JWT's session
expires with the token: its cookie is issued as if earlier, so its signature runs out
then). The credential itself is never stored, in the cookie or anywhere.

Every page asks :func:`visitor`: the cookie's principal, re-checked now (a revoked admin key
or a deleted org ends its sessions at once). No valid cookie -- none, forged, tampered,
expired -- is :class:`~costwarden.core.errors.NotSignedIn`, which the app answers with a
redirect to sign-in. Every change asks :func:`changing`: the visitor, and the form's CSRF
token (``_csrf``, or the ``x-csrf-token`` header htmx sends), bound to the session; none or
a wrong one is 403 and nothing is changed.
"""

from __future__ import annotations

import dataclasses
import logging
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from costwarden.admin.access import Access, access_for, principal_for
from costwarden.admin.common import read_body
from costwarden.console.context import console
from costwarden.console.render import page, root_path, url
from costwarden.core.errors import Forbidden, NotSignedIn
from costwarden.dashboard import csrf, jwt_auth, session_cookie

logger = logging.getLogger(__name__)

COOKIE = "costwarden_session"
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"


@dataclasses.dataclass(frozen=True, slots=True)
class Visitor:
    """A signed-in person: what they may do, their session and its CSRF token."""

    access: Access
    session_id: str
    csrf_token: str


async def visitor(request: Request) -> Visitor:
    """Who is signed in on ``request``; NotSignedIn when no one is."""
    ctx = console(request)
    session = session_cookie.verify(
        list(ctx.secrets),
        request.cookies.get(COOKIE),
        ctx.session_max_age_seconds,
        ctx.admin.clock(),
    )
    if session is None:
        raise NotSignedIn("sign in to use the dashboard")
    principal = session.principal
    actor = _actor(principal.via, principal.key_id)
    access = await access_for(ctx.admin, principal, actor)
    token = csrf.token_for(list(ctx.secrets), session.session_id)
    return Visitor(access, session.session_id, token)


async def changing(request: Request) -> tuple[Visitor, dict[str, str]]:
    """The visitor of a form post and its fields, once its CSRF token is checked; NotSignedIn
    or Forbidden (nothing changed) otherwise."""
    who = await visitor(request)
    fields = await form(request)
    token = fields.pop(CSRF_FIELD, None) or request.headers.get(CSRF_HEADER)
    if not csrf.valid(list(console(request).secrets), who.session_id, token):
        raise Forbidden("the form's CSRF token is missing or wrong: reload the page")
    return who, fields


async def form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the last value of each), at most the admin API's body
    size."""
    raw = await read_body(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


def _actor(via: str, key_id: str | None) -> str:
    if via == "token":
        return "dashboard:admin-token"
    if key_id is not None:
        return f"dashboard:admin-key:{key_id}"
    return "dashboard:jwt"


def _safe_next(request: Request, target: str | None) -> str:
    """Where to go after sign-in: a dashboard path (never another site), else the
    overview."""
    home = url(request, "/")
    if not target or not target.startswith(url(request, "/")) or target.startswith("//"):
        return home
    if "\\" in target or any(ord(c) < 0x20 for c in target):
        return home
    return target


async def sign_in_page(request: Request) -> Response:
    return page(
        request,
        None,
        "signin.html",
        title="Sign in",
        next=_safe_next(request, request.query_params.get("next")),
        problem=None,
    )


async def sign_in(request: Request) -> Response:
    ctx = console(request)
    fields = await form(request)
    credential = fields.get("credential", "").strip()
    target = _safe_next(request, fields.get("next"))
    try:
        if not credential:
            raise NotSignedIn("enter the admin token, an admin key or a token")
        principal, _ = await principal_for(ctx.admin, credential)
        await access_for(ctx.admin, principal, "dashboard")
    except (NotSignedIn, Forbidden):
        # One message for every refusal: which part was wrong is not told.
        return page(
            request,
            None,
            "signin.html",
            title="Sign in",
            next=target,
            problem="That credential does not sign anyone in.",
            status_code=401,
        )
    now = ctx.admin.clock()
    max_age = ctx.session_max_age_seconds
    issued_at = now
    if principal.via == "jwt" and ctx.admin.jwt is not None:
        verdict = jwt_auth.verify(credential, ctx.admin.jwt, now)
        if isinstance(verdict, jwt_auth.JwtIdentity) and verdict.expires_at - now < max_age:
            issued_at = verdict.expires_at - max_age  # its signature runs out with the token
    value = session_cookie.issue(list(ctx.secrets), principal, issued_at)
    response = RedirectResponse(target, status_code=303)
    response.headers.append(
        "set-cookie",
        session_cookie.cookie_header(
            COOKIE,
            value,
            max_age=max(1, int(issued_at + max_age - now)),
            path=session_cookie.cookie_path(root_path(request)),
            secure=ctx.cookie_secure,
        ),
    )
    logger.info("dashboard sign-in: %s (%s)", principal.role, principal.via)
    return response


async def sign_out(request: Request) -> Response:
    # CSRF-checked, so another site cannot sign a visitor out either.
    try:
        await changing(request)
    except NotSignedIn:
        pass
    response = RedirectResponse(url(request, "/sign-in"), status_code=303)
    response.headers.append(
        "set-cookie",
        session_cookie.cookie_header(
            COOKIE,
            "",
            max_age=0,
            path=session_cookie.cookie_path(root_path(request)),
            secure=console(request).cookie_secure,
        ),
    )
    return response


def sign_in_url(request: Request) -> str:
    """The sign-in page, coming back to this one after."""
    here = request.url.path  # (the whole path, the root_path's prefix included)
    if request.url.query:
        here += "?" + request.url.query
    return url(request, "/sign-in") + "?next=" + quote(here, safe="/")
