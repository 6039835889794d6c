"""The dashboard app: :func:`create_console` builds the Starlette app serving
``/dashboard`` (pages, the live stream, sign-in, the packaged assets) over a
:class:`~costwarden.console.context.ConsoleContext`.

Errors are pages: not signed in is a redirect to sign-in (htmx requests get ``HX-Redirect``;
the stream a 401), a role that may not is a 403 page, bad input a 400 page, an unknown thing
a 404 page, a change another made first a 409 page; a database that cannot answer is the
admin API's 503.
"""

from __future__ import annotations

import importlib.resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ExceptionHandler

from costwarden.admin.common import exception_handlers as admin_handlers
from costwarden.console import (
    alerts,
    auth,
    costs,
    health,
    limits,
    overview,
    security,
    sessions,
    settings,
    stream,
)
from costwarden.console.context import ConsoleContext
from costwarden.console.render import MOUNT, page
from costwarden.core.errors import Conflict, Forbidden, InvalidInput, NotFound, NotSignedIn

#: every page module; each lists its own ROUTES (paths under /dashboard)
PAGE_MODULES: tuple[Any, ...] = (
    overview, costs, limits, health, alerts, sessions, security, settings, stream,
)


async def _not_signed_in(request: Request, exc: Exception) -> Response:
    if request.headers.get("hx-request") or request.url.path.endswith("/stream"):
        return Response(status_code=401, headers={"hx-redirect": auth.sign_in_url(request)})
    return RedirectResponse(auth.sign_in_url(request), status_code=303)


def _error_page(status: int, title: str) -> ExceptionHandler:
    async def handler(request: Request, exc: Exception) -> Response:
        try:
            who = await auth.visitor(request)
        except Exception:
            who = None
        return page(request, who, "error.html", title=title, message=str(exc), status_code=status)

    return handler


async def _http_error(request: Request, exc: Exception) -> Response:
    """An unknown dashboard path (404) or method (405): a page, not the admin API's JSON."""
    assert isinstance(exc, HTTPException)
    title = {404: "Not found", 405: "Not allowed"}.get(exc.status_code, "Cannot do that")
    try:
        who = await auth.visitor(request)
    except Exception:
        who = None
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return page(
        request, who, "error.html", title=title, message=message, status_code=exc.status_code
    )


def _static() -> StaticFiles:
    root = importlib.resources.files("costwarden") / "static"
    return StaticFiles(directory=str(root), follow_symlink=False)


def routes() -> list[BaseRoute]:
    """Every route of the dashboard, under its mount."""
    inner: list[BaseRoute] = [
        Route("/sign-in", auth.sign_in_page, methods=["GET"]),
        Route("/sign-in", auth.sign_in, methods=["POST"]),
        Route("/sign-out", auth.sign_out, methods=["POST"]),
        Mount("/static", app=_static(), name="static"),
    ]
    for module in PAGE_MODULES:
        inner.extend(module.ROUTES)
    return [Mount(MOUNT, routes=inner)]


def create_console(ctx: ConsoleContext) -> Starlette:
    handlers: dict[Any, ExceptionHandler] = dict(admin_handlers())
    handlers.update(
        {
            NotSignedIn: _not_signed_in,
            Forbidden: _error_page(403, "Not allowed"),
            InvalidInput: _error_page(400, "Cannot do that"),
            NotFound: _error_page(404, "Not found"),
            Conflict: _error_page(409, "Changed meanwhile"),
            HTTPException: _http_error,
        }
    )
    app = Starlette(routes=routes(), exception_handlers=handlers)
    app.state.console = ctx
    return app
