"""Rendering pages: the templates (Jinja2, autoescaped), URLs under the ``root_path``, and
the headers every page carries.

Every URL a page holds is made here from the request's ASGI ``root_path`` (a reverse
proxy's prefix, ``[server] root_path``), so the dashboard works under any prefix. Pages
carry a Content-Security-Policy that allows only the dashboard's own scripts and styles (no
inline script: chart data travels in ``application/json`` blocks), are never cached, and
cannot be framed.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

MOUNT = "/dashboard"

#: (path under the mount, label): the navigation, in its order
PAGES: tuple[tuple[str, str], ...] = (
    ("/", "Overview"),
    ("/costs", "Cost analytics"),
    ("/limits", "Budgets and limits"),
    ("/health", "Service health"),
    ("/alerts", "Alerts"),
    ("/sessions", "Agent sessions"),
    ("/security", "Security"),
    ("/settings", "Settings"),
)

_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


def root_path(request: Request) -> str:
    """The app's ASGI root_path (a proxy's prefix; Starlette's Mount adds its own to
    ``root_path``, and keeps the app's in ``app_root_path``)."""
    scope = request.scope
    return str(scope.get("app_root_path", scope.get("root_path", ""))).rstrip("/")


def url(request: Request, sub: str = "/") -> str:
    """The URL of dashboard path ``sub`` (``/``, ``/costs``, ...) under the root_path."""
    base = root_path(request) + MOUNT
    return base + "/" if sub in ("", "/") else base + sub


def static(request: Request, name: str) -> str:
    """The URL of a packaged asset (``vendor/...``, ``dashboard/...``)."""
    return url(request, "/static/" + name)


def money(value: object, places: int = 4) -> str:
    """An amount in dollars for people: ``$1,234.5678``, and a small one to its first three
    significant digits (``$0.0000123``, not ``$0.0000``); exact (never through float)."""
    if value is None:
        return "—"
    amount = value if isinstance(value, Decimal) else Decimal(str(value))
    if amount and abs(amount) < Decimal("0.01"):
        places = min(max(places, 2 - amount.adjusted()), 9)
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):,.{places}f}"


def when(value: object) -> str:
    """A time for people: ``2026-12-02 19:48:23 UTC`` (ISO strings, datetimes, epochs)."""
    if value is None or value == "":
        return "—"
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("costwarden.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["money"] = money
_ENV.filters["when"] = when


def render(request: Request, who: Any, template: str, **data: Any) -> str:
    """``template`` rendered for ``who`` (a console.auth.Visitor, or None signed out)."""
    return _ENV.get_template(template).render(
        request=request,
        who=who,
        pages=PAGES,
        here=request.url.path[len(root_path(request) + MOUNT) :] or "/",
        url=lambda sub="/": url(request, sub),
        static=lambda name: static(request, name),
        **data,
    )


def page(
    request: Request, who: Any, template: str, *, status_code: int = 200, **data: Any
) -> HTMLResponse:
    """A whole page or an htmx fragment, with the dashboard's headers."""
    return HTMLResponse(
        render(request, who, template, **data), status_code=status_code, headers=_HEADERS
    )
