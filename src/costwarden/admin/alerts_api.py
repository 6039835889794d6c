"""Admin API handlers for alerts.

- ``GET /admin/alerts`` (``?state=&org=&limit=``): the newest alerts first.
- ``GET /admin/alerts/{alert_id}``: one alert, with its deliveries and their attempts.
- ``POST /admin/alerts/{alert_id}/acknowledge`` | ``/resolve``: body ``{"actor"?}`` (or
  none); ``POST /admin/alerts/{alert_id}/snooze``: body ``{"minutes", "actor"?}``. Audited
  as who signed in (``admin-api`` for the admin token, ``admin-key:<id>`` for an admin key)
  with the ``actor`` given beside it (``Access.actor_for``), published as
  ``alert_changed``; 409 when the
  state does not allow it (acknowledging a resolved alert).

Alerts are raised by the gateway (``costwarden.app.alerting``), never through the API.

Who may (``admin.access``): an org-scoped principal (an org_admin, or a viewer bound to an
org) lists and reads its own org's alerts only (naming another org in ``?org=`` is a 403; an
alert of another org, or of no org such as a deployment's, is a 403 by id, an unknown id a
404); an org_admin acknowledges, snoozes and resolves its own org's alerts. A viewer changes
nothing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from costwarden.admin.access import authenticate
from costwarden.admin.common import count_param, parse_json_object, read_body
from costwarden.admin.context import context
from costwarden.alerts.state import Action
from costwarden.core.errors import InvalidInput
from costwarden.storage import alerts as store
from costwarden.storage import repo
from costwarden.storage.alert_deliveries import delivery_log

STATES = ("firing", "acknowledged", "resolved")
MAX_LIST = 1000
MAX_SNOOZE_MINUTES = 7 * 24 * 60


async def list_alerts(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    query = request.query_params
    state = query.get("state")
    if state is not None and state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}")
    org = access.org(query.get("org"))  # org-scoped: its own org's alerts, no other
    if org is not None:
        org = repo.clean_name(org, "org")
    records = await asyncio.to_thread(
        store.list_alerts,
        ctx.engine,
        org=org,
        state=state,  # type: ignore[arg-type]
        limit=count_param(query.get("limit"), "limit", default=100, most=MAX_LIST),
    )
    return JSONResponse({"data": [r.to_json() for r in records]})


async def get_alert(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    alert_id = request.path_params["alert_id"]
    record = await asyncio.to_thread(store.get_alert, ctx.engine, alert_id)
    access.read_org_id(record.org_id)  # another org's alert (or a platform one): 403
    deliveries = await asyncio.to_thread(delivery_log, ctx.engine, alert_id=alert_id)
    return JSONResponse({**record.to_json(), "deliveries": deliveries})


async def _act(request: Request, action: Action, allowed: set[str]) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.write_org_id(access.principal.org_id)  # a viewer: 403 before any look-up
    alert_id = request.path_params["alert_id"]
    found = await asyncio.to_thread(store.get_alert, ctx.engine, alert_id)
    access.write_org_id(found.org_id)  # an org_admin: its own org's alerts only
    raw = await read_body(request)
    data = parse_json_object(raw, allowed=allowed) if raw.strip() or action == "snooze" else {}
    actor = access.actor_for(data)
    until: datetime | None = None
    if action == "snooze":
        minutes = data.get("minutes")
        if isinstance(minutes, Decimal) and minutes.is_finite() and minutes == int(minutes):
            minutes = int(minutes)  # 36.0 is a whole number in JSON
        if (
            not isinstance(minutes, int)
            or isinstance(minutes, bool)
            or not 1 <= minutes <= MAX_SNOOZE_MINUTES
        ):
            raise InvalidInput(f"'minutes' must be a whole number from 1 to {MAX_SNOOZE_MINUTES}")
        until = datetime.fromtimestamp(ctx.clock(), UTC) + timedelta(minutes=minutes)
    record = await asyncio.to_thread(
        store.act_on_alert,
        ctx.engine,
        alert_id,
        action,
        actor=actor,
        until=until,
        now=datetime.fromtimestamp(ctx.clock(), UTC),
    )
    ctx.events.publish(record.event())
    return JSONResponse(record.to_json())


async def acknowledge(request: Request) -> Response:
    return await _act(request, "acknowledge", {"actor"})


async def snooze(request: Request) -> Response:
    return await _act(request, "snooze", {"actor", "minutes"})


async def resolve(request: Request) -> Response:
    return await _act(request, "resolve", {"actor"})
