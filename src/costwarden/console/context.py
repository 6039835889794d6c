"""What the dashboard's handlers work with: :class:`ConsoleContext`, and :func:`console`."""

from __future__ import annotations

import dataclasses

from starlette.requests import Request

from costwarden.admin.context import AdminContext


@dataclasses.dataclass(frozen=True, slots=True)
class ConsoleContext:
    """The admin API's context (storage, the gateway's parts) plus the dashboard's own
    settings; built once by the composition root."""

    admin: AdminContext
    #: the session cookie's and CSRF tokens' secrets (the first signs); never shown
    secrets: tuple[str, ...] = dataclasses.field(repr=False)
    session_max_age_seconds: int = 8 * 3600
    cookie_secure: bool = False


def console(request: Request) -> ConsoleContext:
    """The context of the dashboard app serving ``request``."""
    ctx: ConsoleContext = request.app.state.console
    return ctx
