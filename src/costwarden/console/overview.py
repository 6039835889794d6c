"""The overview page (the dashboard's default): the last 24 hours' cost and requests, active
orgs, the service's status, the alerts firing (not yet acknowledged), and a live activity feed.

An org-scoped visitor sees its own org's figures, alerts and activity; the service's status
(switches, breakers) is everyone's.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from costwarden.analytics.query import SpendQuery
from costwarden.analytics.rollup import hour_of
from costwarden.console.auth import visitor
from costwarden.console.context import console
from costwarden.console.render import page
from costwarden.storage import switches as switch_store
from costwarden.storage.alerts import list_alerts
from costwarden.storage.analytics_read import requests_by, spend

RECENT_ALERTS = 20


def service_status(breakers: list[dict[str, Any]], switches: list[Any]) -> tuple[str, str]:
    """(``ok`` | ``degraded`` | ``disabled``, why) from the breakers' health and the switch
    records: the global kill switch disables; an open breaker degrades."""
    for record in switches:
        if record.org_id is None and record.feature == "ai" and not record.enabled:
            return "disabled", record.message or "every AI feature is switched off"
    open_ones = [b["deployment"] for b in breakers if b.get("state") != "closed"]
    if open_ones:
        return "degraded", "circuit breaker open: " + ", ".join(sorted(open_ones))
    return "ok", "every deployment is healthy"


async def overview(request: Request) -> Response:
    who = await visitor(request)
    ctx = console(request).admin
    access = who.access
    now = datetime.fromtimestamp(ctx.clock(), UTC)
    start = hour_of(now - timedelta(hours=24))
    tenant = access.principal.org_id
    q = SpendQuery(start, now, by=("status",), tenant=tenant)
    by_status, by_org, (_, switches), alerts = await asyncio.gather(
        asyncio.to_thread(spend, ctx.engine, q),
        asyncio.to_thread(
            requests_by, ctx.engine, SpendQuery(start, now, by=("org_id",), tenant=tenant)
        ),
        asyncio.to_thread(switch_store.load_switches, ctx.engine),
        asyncio.to_thread(
            list_alerts, ctx.engine, org=access.org(None), state="firing", limit=RECENT_ALERTS
        ),
    )
    cost = sum((r.totals.cost_usd for r in by_status), Decimal(0))
    requests = sum(r.totals.requests for r in by_status)
    status, why = service_status(ctx.breakers.health(), switches)
    return page(
        request,
        who,
        "overview.html",
        title="Overview",
        cost=cost,
        requests=requests,
        active_orgs=sum(1 for _, (org,) in by_org if org),
        status=status,
        status_why=why,
        alerts=alerts,
        since=start,
    )


ROUTES = (Route("/", overview, methods=["GET"]),)
