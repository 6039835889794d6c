"""The service health page: every deployment's circuit breaker as this gateway sees it.

``GET /dashboard/health`` shows, per deployment, the breaker's state (a badge: closed, open,
half_open), why it is in it, the last success and the last failure, the error rate and the
requests in the breaker's window, the consecutive failures, and for a breaker that is not
closed when it opened and when it lets a probe through. The table reloads itself when a
breaker moves (``sse:breaker_changed``; ``GET /dashboard/health/table`` is the fragment).

``POST /dashboard/health/reset`` (field ``deployment``) forces one breaker closed, in every
gateway process (:meth:`~costwarden.routing.breakers.BreakerBoard.reset`, audited as
``breaker.reset`` with the visitor as its actor), then goes back to the page with a notice.

Who may: deployments are the platform's, shared by every org, and hold no org's data, so
every signed-in visitor sees the page (it tells an org why its calls fail over), as the
admin API's ``GET /admin/health/deployments``. Resetting a breaker changes every org's
routing: a platform_admin's alone; others see no button and a post is a 403 (nothing reset).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from costwarden.console.auth import Visitor, changing, visitor
from costwarden.console.context import console
from costwarden.console.render import page, url
from costwarden.core.errors import InvalidInput
from costwarden.dashboard.roles import can_write

#: ``?done=`` codes -> the notice shown (never text from the query itself)
NOTICES = {"reset": "The breaker was reset: it is closed again, in every gateway process."}


@dataclasses.dataclass(frozen=True, slots=True)
class HealthRow:
    """One deployment's line of the table, ready to show."""

    deployment: str
    state: str
    reason: str | None
    last_success_at: str | None
    last_failure_at: str | None
    error_rate: str  # a percentage for people: "83.3 %"
    requests_in_window: int
    consecutive_failures: int
    opened_at: str | None
    retry_at: str | None


def percent(rate: float) -> str:
    """An error rate (0..1) for people: ``0 %``, ``83.3 %``, ``100 %``."""
    value = round(max(0.0, min(1.0, rate)) * 100, 1)
    return f"{value:g} %"


def health_rows(snapshots: list[dict[str, Any]]) -> list[HealthRow]:
    """The table's rows from the board's health snapshots (``BreakerBoard.health()``), the
    breakers that are not closed first, then by deployment."""
    rows = [
        HealthRow(
            deployment=str(s["deployment"]),
            state=str(s["state"]),
            reason=s.get("reason"),
            last_success_at=s.get("last_success_at"),
            last_failure_at=s.get("last_failure_at"),
            error_rate=percent(float(s.get("error_rate") or 0.0)),
            requests_in_window=int(s.get("requests_in_window") or 0),
            consecutive_failures=int(s.get("consecutive_failures") or 0),
            opened_at=s.get("opened_at"),
            retry_at=s.get("retry_at"),
        )
        for s in snapshots
    ]
    return sorted(rows, key=lambda r: (r.state == "closed", r.deployment))


def _data(request: Request, who: Visitor) -> dict[str, Any]:
    rows = health_rows(console(request).admin.breakers.health())
    return {
        "rows": rows,
        "open_count": sum(1 for r in rows if r.state != "closed"),
        "can_reset": can_write(who.access.principal, None),
    }


async def health(request: Request) -> Response:
    who = await visitor(request)
    notice = NOTICES.get(request.query_params.get("done", ""))
    return page(
        request, who, "health.html", title="Service health", notice=notice, **_data(request, who)
    )


async def health_table(request: Request) -> Response:
    """The table alone (htmx reloads it when a breaker moves)."""
    who = await visitor(request)
    return page(request, who, "health_table.html", title="Service health", **_data(request, who))


async def reset(request: Request) -> Response:
    who, fields = await changing(request)
    who.access.write_platform()  # every org's routing: a platform_admin's alone
    deployment = fields.get("deployment", "").strip()
    if not deployment:
        raise InvalidInput("name the deployment whose breaker to reset")
    # An unknown deployment is NotFound (404), nothing audited.
    await console(request).admin.breakers.reset(deployment, actor=who.access.actor)
    return RedirectResponse(url(request, "/health") + "?done=reset", status_code=303)


ROUTES = (
    Route("/health", health, methods=["GET"]),
    Route("/health/table", health_table, methods=["GET"]),
    Route("/health/reset", reset, methods=["POST"]),
)
