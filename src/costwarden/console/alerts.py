"""The alerts page: the alerts the gateway raised, acted on, and where they are delivered.

``GET /dashboard/alerts`` (``?state=firing|acknowledged|resolved``) lists the newest alerts
(:data:`LIST_LIMIT`): severity, state (and a snooze's end), title, org, when it fired and who
acknowledged or resolved it; each row is ``id="alert-<id>"`` (the overview links to it).
An open alert has buttons: Acknowledge (a firing one), Snooze (for the minutes chosen:
its deliveries wait until then) and Resolve. Each posts to
``/dashboard/alerts/{id}/acknowledge|snooze|resolve``, applies
:func:`costwarden.storage.alerts.act_on_alert` (audited ``alert.<action>`` with the visitor
as its actor), publishes the alert's ``alert_changed`` event and goes back to the page with
a notice; an action the state does not allow (acknowledging an acknowledged alert) shows the
page again with why (409). The table reloads itself on ``sse:alert_changed``
(``GET /dashboard/alerts/table`` is the fragment).

Below, for platform-wide visitors: the alert channels (redacted exactly as the admin API's
``GET /admin/alert-channels``: no secret, no password, of a URL only its scheme, host and
port) and each channel's most recent deliveries with their last attempt.

Who may (as ``admin/alerts_api`` and ``admin/channels_api``): an org-scoped visitor (an
org_admin, or a viewer bound to an org) sees its own org's alerts only, and no channel (a
channel is the platform's: its filter names every org); an org_admin acts on its own org's
alerts (another org's, or a platform one, is a 403, unchanged); a viewer sees no button and
its posts are a 403. A platform_admin sees and acts on everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from costwarden.admin.alerts_api import MAX_SNOOZE_MINUTES, STATES
from costwarden.alerts.delivery import redacted
from costwarden.alerts.model import Channel
from costwarden.alerts.state import OPEN_STATES, Action
from costwarden.console.auth import Visitor, changing, visitor
from costwarden.console.context import console
from costwarden.console.render import page, url
from costwarden.core.errors import Conflict, InvalidInput
from costwarden.dashboard.roles import can_write
from costwarden.storage import alerts as store
from costwarden.storage import repo
from costwarden.storage.alert_deliveries import delivery_log
from costwarden.storage.alert_records import AlertRecord

LIST_LIMIT = 200
#: how many of each channel's deliveries are shown
DELIVERIES_SHOWN = 10
#: the snooze choices (minutes, label)
SNOOZES: tuple[tuple[int, str], ...] = (
    (15, "15 minutes"),
    (60, "1 hour"),
    (240, "4 hours"),
    (1440, "1 day"),
    (10080, "1 week"),
)
NOTICES = {
    "acknowledge": "Alert acknowledged.",
    "snooze": "Alert snoozed: its deliveries wait until the snooze ends.",
    "resolve": "Alert resolved.",
}


@dataclasses.dataclass(frozen=True, slots=True)
class AlertRow:
    """One alert's line of the table, ready to show."""

    id: str
    severity: str
    state: str
    title: str
    org: str  # its org's name, or "platform"
    fired_at: datetime
    snoozed_until: datetime | None  # only while the snooze runs
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    can_act: bool
    can_acknowledge: bool


def alert_rows(
    records: list[AlertRecord],
    names: dict[str, str],
    *,
    now: datetime,
    may_write: Callable[[str | None], bool],
) -> list[AlertRow]:
    """The table's rows: ``names`` {org id: name}; ``may_write(org_id) -> bool`` whether the
    visitor may act on that org's alerts."""
    rows = []
    for a in records:
        open_ = a.state in OPEN_STATES
        can_act = open_ and may_write(a.org_id)
        snoozed = a.snoozed_until if a.snoozed_until and a.snoozed_until > now else None
        rows.append(
            AlertRow(
                id=a.id,
                severity=a.severity,
                state=a.state,
                title=a.title,
                org="platform" if a.org_id is None else names.get(a.org_id, a.org_id),
                fired_at=a.fired_at,
                snoozed_until=snoozed if open_ else None,
                acknowledged_by=a.acknowledged_by,
                acknowledged_at=a.acknowledged_at,
                resolved_by=a.resolved_by,
                resolved_at=a.resolved_at,
                can_act=can_act,
                can_acknowledge=can_act and a.state == "firing",
            )
        )
    return rows


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelView:
    """A channel as shown: its redacted form (``alerts.delivery.redacted``), where it sends
    in words, and its recent deliveries."""

    info: dict[str, object]
    destination: str
    deliveries: list[dict[str, Any]]


def destination(info: dict[str, Any]) -> str:
    """Where a redacted channel sends, in words (never a secret: from the redacted form)."""
    email = info.get("email")
    if isinstance(email, dict):
        to = ", ".join(str(t) for t in email.get("to", ()))
        return f"to {to} via {email.get('host')}:{email.get('port')}"
    return str(info.get("url") or "—")


async def _channels(request: Request) -> list[ChannelView]:
    engine = console(request).admin.engine
    channels: list[Channel] = await asyncio.to_thread(store.list_channels, engine)
    logs = await asyncio.gather(
        *(
            asyncio.to_thread(delivery_log, engine, channel_id=c.id, limit=DELIVERIES_SHOWN)
            for c in channels
        )
    )
    views = []
    for channel, log in zip(channels, logs, strict=True):
        info = redacted(channel)
        views.append(ChannelView(info, destination(info), log))
    return views


def _state_param(request: Request) -> str | None:
    state = request.query_params.get("state") or None
    if state is not None and state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}")
    return state


async def _data(request: Request, who: Visitor, *, with_channels: bool) -> dict[str, Any]:
    ctx = console(request).admin
    access = who.access
    state = _state_param(request)
    org = access.org(None)  # an org-scoped visitor: its own org's alerts only
    platform = access.platform_wide
    records, names, channels = await asyncio.gather(
        asyncio.to_thread(
            store.list_alerts,
            ctx.engine,
            org=org,
            state=state,  # type: ignore[arg-type]
            limit=LIST_LIMIT,
        ),
        asyncio.to_thread(repo.org_names, ctx.engine) if platform else _own(who),
        _channels(request) if platform and with_channels else _none(),
    )
    now = datetime.fromtimestamp(ctx.clock(), UTC)
    principal = access.principal
    rows = alert_rows(records, names, now=now, may_write=lambda o: can_write(principal, o))
    return {
        "rows": rows,
        "state": state,
        "states": STATES,
        "snoozes": SNOOZES,
        "limit": LIST_LIMIT,
        "platform": platform,
        "channels": channels,
        "org_names": names,
    }


async def _own(who: Visitor) -> dict[str, str]:
    org_id = who.access.principal.org_id
    return {} if org_id is None else {org_id: who.access.org_name or org_id}


async def _none() -> list[ChannelView]:
    return []


async def _page(
    request: Request, who: Visitor, *, notice: str | None = None, problem: str | None = None,
    status_code: int = 200,
) -> Response:  # fmt: skip
    data = await _data(request, who, with_channels=True)
    return page(
        request, who, "alerts.html", title="Alerts", notice=notice, problem=problem,
        status_code=status_code, **data,
    )  # fmt: skip


async def alerts(request: Request) -> Response:
    who = await visitor(request)
    return await _page(request, who, notice=NOTICES.get(request.query_params.get("done", "")))


async def alerts_table(request: Request) -> Response:
    """The alerts table alone (htmx reloads it when an alert changes)."""
    who = await visitor(request)
    data = await _data(request, who, with_channels=False)
    return page(request, who, "alerts_table.html", title="Alerts", **data)


def snooze_minutes(raw: str | None) -> int:
    """The ``minutes`` field of a snooze: a whole number from 1 to a week."""
    try:
        minutes = int((raw or "").strip())
    except ValueError:
        minutes = 0
    if not 1 <= minutes <= MAX_SNOOZE_MINUTES:
        raise InvalidInput(f"snooze for a whole number of minutes from 1 to {MAX_SNOOZE_MINUTES}")
    return minutes


async def _act(request: Request, action: Action) -> Response:
    who, fields = await changing(request)
    access = who.access
    access.write_org_id(access.principal.org_id)  # a viewer: 403 before any look-up
    ctx = console(request).admin
    alert_id = request.path_params["alert_id"]
    found = await asyncio.to_thread(store.get_alert, ctx.engine, alert_id)  # 404
    access.write_org_id(found.org_id)  # an org_admin: its own org's alerts only
    now = datetime.fromtimestamp(ctx.clock(), UTC)
    until = now + timedelta(minutes=snooze_minutes(fields.get("minutes"))) if (
        action == "snooze"
    ) else None
    try:
        record = await asyncio.to_thread(
            store.act_on_alert, ctx.engine, alert_id, action, actor=access.actor, until=until,
            now=now,
        )  # fmt: skip
    except Conflict as exc:  # e.g. acknowledged meanwhile: show the page as it is now
        return await _page(request, who, problem=str(exc), status_code=409)
    ctx.events.publish(record.event())
    target = url(request, "/alerts") + f"?done={action}#alert-{record.id}"
    return RedirectResponse(target, status_code=303)


async def acknowledge(request: Request) -> Response:
    return await _act(request, "acknowledge")


async def snooze(request: Request) -> Response:
    return await _act(request, "snooze")


async def resolve(request: Request) -> Response:
    return await _act(request, "resolve")


ROUTES = (
    Route("/alerts", alerts, methods=["GET"]),
    Route("/alerts/table", alerts_table, methods=["GET"]),
    Route("/alerts/{alert_id}/acknowledge", acknowledge, methods=["POST"]),
    Route("/alerts/{alert_id}/snooze", snooze, methods=["POST"]),
    Route("/alerts/{alert_id}/resolve", resolve, methods=["POST"]),
)
