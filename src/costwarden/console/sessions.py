"""The agent sessions page: ``GET /dashboard/sessions``.

It shows the recent agent sessions -- every session whose stored state is not ``active``
(sleeping, paused, winding down, exhausted, terminated) and every session that sent one of
the newest ``storage.recent.SCAN_ROWS`` requests of the last :data:`RECENT_HOURS` hours;
paused ones first, then the most recently seen or changed, at most :data:`SHOWN` -- each with its
state, ``budget_pct`` (the share of its tightest budget spent, ``storage.session_view``:
the view the admin API and the agent read), ``wake_at``, spend and requests; and the open
escalations, with Approve / Deny.

The escalations table is a fragment (``GET /dashboard/sessions/escalations``) that reloads
itself on the live stream's ``escalation_created`` and ``escalation_resolved``, so an
escalation resolved in one browser leaves every other one at once.
``POST /dashboard/escalations/{id}/resolve`` (``decision=approve|deny``, optional ``note``
and ``extra_budget_usd``) does what ``POST /admin/escalations/{id}/resolve`` does, with the
same function (``admin.sessions_api.settle_escalation``): resolves
the escalation once, moves its session on (approve) or ends it (deny), applies the change to
this process's session board, publishes ``session_changed`` and ``escalation_resolved``, and
raises the session's USD budgets by the extra amount. It is resolved by who signed in to the
dashboard (``dashboard:admin-key:<id>``, ...). An htmx post gets the fragment back (with a
notice, also for an escalation someone else resolved first); a plain form post a redirect.

Who sees what: a platform-wide visitor (platform_admin, platform viewer) every org's sessions
and escalations; an org_admin or org-scoped viewer its own org's only. A platform_admin and
an org_admin resolve (an org_admin its own org's escalations only: another org's is a 403);
a viewer sees no buttons, and its posts are refused (403, nothing changed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from costwarden.admin.access import Access
from costwarden.admin.context import AdminContext
from costwarden.admin.sessions_api import settle_escalation
from costwarden.console.auth import Visitor, changing, visitor
from costwarden.console.context import console
from costwarden.console.render import page, url
from costwarden.core.errors import Conflict, InvalidInput
from costwarden.core.records import KeyRecord
from costwarden.storage import repo
from costwarden.storage import sessions as store
from costwarden.storage.recent import SCAN_ROWS, recent_sessions
from costwarden.storage.session_view import SessionView, session_view
from costwarden.storage.sessions import Escalation, SessionRow

RECENT_HOURS = 24
SHOWN = 30
MAX_NOTE = 2000
_AMOUNT = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,12})?\Z")  # the admin API's pattern
#: a session state -> the badge class it is shown with
STATE_BADGES = {
    "active": "ok", "winding_down": "warn", "sleeping": "warn", "paused": "bad",
    "exhausted": "bad", "terminated": "bad",
}  # fmt: skip
#: ``?done=`` of the redirect after a form post -> its notice
NOTICES = {
    "approved": "Escalation approved: the session goes on.",
    "denied": "Escalation denied: the session is terminated.",
    "already": "That escalation was already resolved.",
}

SessionKey = tuple[str, str]  # (org id, session id)


# ------------------------------------------------------------------ pure logic


def pick_sessions(
    stored: Iterable[SessionRow], seen: Iterable[tuple[str, str, datetime]], limit: int
) -> list[SessionKey]:
    """Which sessions to show, in order: paused ones first (a person must decide), then the
    rest by their latest change or request, newest first; each once, at most ``limit``."""
    latest: dict[SessionKey, datetime] = {}
    paused: set[SessionKey] = set()
    for row in stored:
        key = (row.org_id, row.session_id)
        latest[key] = max(latest.get(key, row.updated_at), row.updated_at)
        if row.standing.state == "paused":
            paused.add(key)
    for org_id, session_id, last in seen:
        key = (org_id, session_id)
        latest[key] = max(latest.get(key, last), last)
    ordered = sorted(latest, key=lambda k: (k not in paused, -latest[k].timestamp(), k))
    return ordered[:limit]


def session_row(
    view: SessionView, names: Mapping[str, str], prefixes: Mapping[str, str]
) -> dict[str, Any]:
    """One row of the sessions table."""
    standing, used = view.standing, view.usage
    wake = standing.wake_at
    return {
        "session_id": view.session_id,
        "org": names.get(view.org_id, view.org_id),
        "key_prefix": prefixes.get(view.key_id or "", ""),
        "state": standing.state,
        "badge": STATE_BADGES.get(standing.state, "warn"),
        "budget_pct": view.budget_pct,
        "wake_at": None if wake is None else datetime.fromtimestamp(wake, UTC),
        "spend_usd": Decimal(0) if used is None else used.spend_usd,
        "requests": 0 if used is None else used.requests,
        "last_seen": None if used is None else used.last_seen,
        "escalation": standing.escalation,
    }


def escalation_row(e: Escalation, names: Mapping[str, str]) -> dict[str, Any]:
    """One row of the escalations table; the evidence as ``name: value`` pairs."""
    evidence = [(str(k), _short(v)) for k, v in sorted(e.evidence.items())]
    return {
        "id": e.id,
        "org_id": e.org_id,
        "org": names.get(e.org_id, e.org_id),
        "session_id": e.session_id,
        "reason": e.reason,
        "evidence": evidence,
        "created_at": e.created_at,
    }


def _short(value: object, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    approved: bool
    note: str | None
    extra_usd: Decimal | None


def decision_of(fields: Mapping[str, str]) -> Decision:
    """The form's decision, as the admin API takes it: ``approve`` or ``deny``, a note of at
    most 2000 characters, an extra budget in USD (an approval's only); InvalidInput
    otherwise. Blank fields are left out."""
    decision = fields.get("decision")
    if decision not in ("approve", "deny"):
        raise InvalidInput("decision must be approve or deny")
    note = (fields.get("note") or "").strip() or None
    if note is not None and len(note) > MAX_NOTE:
        raise InvalidInput(f"the note must be at most {MAX_NOTE} characters")
    raw = (fields.get("extra_budget_usd") or "").strip()
    extra = None
    if raw:
        if not _AMOUNT.match(raw):
            raise InvalidInput(
                f"the extra budget must be an amount in USD, such as 2.50; got {raw!r:.40}"
            )
        extra = Decimal(raw)
        if decision == "deny":
            raise InvalidInput("an extra budget goes with an approval, not a denial")
    return Decision(decision == "approve", note, extra)


# ------------------------------------------------------------------ reads


def _tenant(access: Access) -> str | None:
    return None if access.platform_wide else access.principal.org_id


def _prefixes(keys: Iterable[KeyRecord]) -> dict[str, str]:
    return {k.id: k.prefix for k in keys}


async def _views(ctx: AdminContext, keys: list[SessionKey]) -> list[SessionView]:
    enforcer, now = ctx.enforcer, ctx.clock()
    found = await asyncio.gather(
        *(
            session_view(
                ctx.engine, enforcer.book, enforcer.store, ctx.budgets_timezone, org_id,
                session_id, now,
            )  # fmt: skip
            for org_id, session_id in keys
        )
    )
    return [v for v in found if v is not None]


async def _escalations(ctx: AdminContext, access: Access) -> list[dict[str, Any]]:
    found, names = await asyncio.gather(
        asyncio.to_thread(
            store.list_escalations, ctx.engine, tenant=_tenant(access), status="open"
        ),
        asyncio.to_thread(repo.org_names, ctx.engine),
    )
    return [escalation_row(e, names) for e in found]


def _may_resolve(access: Access) -> bool:
    return access.principal.role in ("platform_admin", "org_admin")


# ------------------------------------------------------------------ handlers


async def sessions_page(request: Request) -> Response:
    who = await visitor(request)
    ctx = console(request).admin
    access = who.access
    tenant = _tenant(access)
    since = datetime.fromtimestamp(ctx.clock(), UTC) - timedelta(hours=RECENT_HOURS)
    stored, seen, names, keys, escalations = await asyncio.gather(
        asyncio.to_thread(store.sessions_not_active, ctx.engine, tenant=tenant),
        asyncio.to_thread(recent_sessions, ctx.engine, since, tenant, SHOWN),
        asyncio.to_thread(repo.org_names, ctx.engine),
        asyncio.to_thread(repo.list_keys, ctx.engine, access.org(None)),
        _escalations(ctx, access),
    )
    views = await _views(ctx, pick_sessions(stored, seen, SHOWN))
    prefixes = _prefixes(keys)
    return page(
        request,
        who,
        "sessions.html",
        title="Agent sessions",
        notice=NOTICES.get(request.query_params.get("done", "")),
        sessions=[session_row(v, names, prefixes) for v in views],
        recent_hours=RECENT_HOURS,
        scan_rows=SCAN_ROWS,
        shown=SHOWN,
        **_fragment_data(who, escalations, None),
    )


def _fragment_data(
    who: Visitor, escalations: list[dict[str, Any]], notice: str | None
) -> dict[str, Any]:
    return {
        "escalations": escalations,
        "may_resolve": _may_resolve(who.access),
        "platform_wide": who.access.platform_wide,
        "fragment_notice": notice,
    }


async def escalations_fragment(request: Request) -> Response:
    who = await visitor(request)
    escalations = await _escalations(console(request).admin, who.access)
    return page(
        request, who, "sessions_escalations.html", **_fragment_data(who, escalations, None)
    )


async def resolve(request: Request) -> Response:
    who, fields = await changing(request)
    ctx = console(request).admin
    access = who.access
    access.write_org_id(access.principal.org_id)  # a viewer: 403 before any look-up
    escalation_id = request.path_params["escalation_id"]
    found = await asyncio.to_thread(store.escalation_of, ctx.engine, escalation_id)
    access.write_org_id(found.org_id)  # an org_admin: its own org's escalations only
    htmx = bool(request.headers.get("hx-request"))
    try:
        decision = decision_of(fields)
        await settle_escalation(
            ctx, found.id, found.org_id, approved=decision.approved, note=decision.note,
            extra=decision.extra_usd, actor=access.actor,
        )  # fmt: skip
        done = "approved" if decision.approved else "denied"
    except Conflict:
        done = "already"
    except InvalidInput as exc:
        if not htmx:
            raise
        escalations = await _escalations(ctx, access)
        return page(
            request, who, "sessions_escalations.html",
            **_fragment_data(who, escalations, f"Not done: {exc}"),
        )  # fmt: skip
    if htmx:
        escalations = await _escalations(ctx, access)
        return page(
            request, who, "sessions_escalations.html",
            **_fragment_data(who, escalations, NOTICES[done]),
        )  # fmt: skip
    return RedirectResponse(url(request, "/sessions") + f"?done={done}", status_code=303)


ROUTES = (
    Route("/sessions", sessions_page, methods=["GET"]),
    Route("/sessions/escalations", escalations_fragment, methods=["GET"]),
    Route("/escalations/{escalation_id}/resolve", resolve, methods=["POST"]),
)
