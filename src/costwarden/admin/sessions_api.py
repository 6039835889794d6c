"""Admin API handlers for agent sessions and their escalations.

- ``GET /admin/sessions/{session_id}?org=NAME``: one session (``storage.session_view``: the
  same view the agent reads with its key): state, budget_pct, wake_at, its budgets, usage and
  open escalation.
- ``GET /admin/escalations?status=&org=``: escalations, newest first.
- ``GET /v1/costwarden/session/{session_id}/events``: the agent's own stream, with its
  virtual key (not the admin token): the ``session_changed``, ``session_runaway`` and
  escalation events of that session (``Last-Event-ID`` resumes), 404 for a session of
  another key. Served here, beside ``/admin/events``, whose stream it is, filtered.
- ``POST /admin/escalations/{escalation_id}/resolve``: body ``{"decision": "approve" |
  "deny", "note"?, "actor"?, "extra_budget_usd"?}``. Resolved once: an unknown escalation is
  404, one already resolved 409, a negative extra budget (or one on a denial) 400, nothing
  changed. Then the paused session goes on (approve) or is terminated (deny), published as
  ``session_changed`` and ``escalation_resolved`` to every subscriber of every process. An
  extra budget raises each of the session's USD budgets by that much (a limit on the session
  itself, over its tier default if that was all it had), after the escalation is resolved:
  if that write fails the answer is 503 and the escalation shows the amount to apply again.
  Resolved by the body's ``actor``, else who signed in (``admin-api`` for the admin token,
  ``admin-key:<id>`` for an admin key).

Who may (``admin.access``): an org-scoped principal (an org_admin, or a viewer bound to an
org) reads its own org's sessions (``org`` defaults to its own; naming another is a 403, and
another org's session id is just not in its org: 404) and lists its own org's escalations;
an org_admin resolves its own org's escalations (another org's id is a 403, an unknown one a
404). A viewer changes nothing. The agent's own stream takes a virtual key, never an admin
credential (an admin key there is a 401 like any unknown key).
"""

from __future__ import annotations

import asyncio
import functools
import re
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from costwarden.admin.access import Access, authenticate
from costwarden.admin.common import body_json, error
from costwarden.admin.context import AdminContext, context
from costwarden.admin.events_api import EventStream, last_event_id
from costwarden.admin.limits_api import reload_limits
from costwarden.core.errors import InvalidInput, NotFound
from costwarden.core.event_kinds import (
    EscalationCreated,
    EscalationResolved,
    SessionChanged,
    SessionRunaway,
)
from costwarden.sessions.board import changed_event
from costwarden.sessions.lifecycle import clean_session_id
from costwarden.storage import repo
from costwarden.storage import sessions as store
from costwarden.storage.session_view import SessionView, escalation_json, session_view
from costwarden.storage.sessions import Escalation, SessionRow
from costwarden.storage.sqltypes import money_str

STATUSES = ("open", "approved", "denied")
DECISIONS = ("approve", "deny")
_MAX_NOTE = 2000
_AMOUNT = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,12})?\Z")  # what the document's pattern says


async def get_session(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    session_id = clean_session_id(request.path_params["session_id"])
    org = access.org(request.query_params.get("org"))  # org-scoped: its own org, no other
    if org is None:
        raise InvalidInput("org is required: the org whose session this is")
    org_id = await asyncio.to_thread(_org_id, ctx, repo.clean_name(org, "org"))
    view = await _view(ctx, org_id, session_id)
    if view is None:
        raise NotFound(f"no session {session_id!r} in org {org!r}")
    return JSONResponse(view.to_json())


async def _view(ctx: AdminContext, org_id: str, session_id: str) -> SessionView | None:
    enforcer = ctx.enforcer
    return await session_view(
        ctx.engine, enforcer.book, enforcer.store, ctx.budgets_timezone, org_id, session_id,
        ctx.clock(),
    )  # fmt: skip


def _org_id(ctx: AdminContext, name: str) -> str:
    with ctx.engine.connect() as conn:
        return repo.org_id_by_name(conn, name)


async def list_escalations(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    query = request.query_params
    status = query.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
    org = access.org(query.get("org"))  # org-scoped: its own org's escalations, no other
    tenant = None
    if org is not None:
        tenant = await asyncio.to_thread(_org_id, ctx, repo.clean_name(org, "org"))
    found = await asyncio.to_thread(
        store.list_escalations, ctx.engine, tenant=tenant, status=status  # type: ignore[arg-type]
    )
    return JSONResponse({"data": [escalation_json(e) for e in found]})


def _decision(
    data: dict[str, Any], access: Access
) -> tuple[bool, str | None, Decimal | None, str]:
    decision = data.get("decision")
    if decision not in DECISIONS:
        raise InvalidInput(f"decision must be one of {', '.join(DECISIONS)}")
    note = data.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > _MAX_NOTE):
        raise InvalidInput(f"note must be text of at most {_MAX_NOTE} characters")
    raw = data.get("extra_budget_usd")
    extra: Decimal | None = None
    if raw is not None:
        if not isinstance(raw, str) or not _AMOUNT.match(raw):
            raise InvalidInput(
                f"extra_budget_usd must be an amount in USD as a string, such as \"2.50\"; "
                f"got {raw!r:.40}"
            )
        extra = Decimal(raw)
    return decision == "approve", note, extra, access.actor_for(data)


async def resolve_escalation(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.write_org_id(access.principal.org_id)  # a viewer: 403 before any look-up
    escalation_id = request.path_params["escalation_id"]
    found = await asyncio.to_thread(store.escalation_of, ctx.engine, escalation_id)
    access.write_org_id(found.org_id)  # an org_admin: its own org's escalations only
    data = await body_json(request, allowed={"decision", "note", "actor", "extra_budget_usd"})
    approved, note, extra, actor = _decision(data, access)
    resolved, row = await settle_escalation(
        ctx, escalation_id, found.org_id, approved=approved, note=note, extra=extra, actor=actor
    )
    state = None if row is None else row.standing.state
    return JSONResponse({**escalation_json(resolved), "session_state": state})


async def settle_escalation(
    ctx: AdminContext,
    escalation_id: str,
    org_id: str,
    *,
    approved: bool,
    note: str | None,
    extra: Decimal | None,
    actor: str,
) -> tuple[Escalation, SessionRow | None]:
    """Resolve escalation ``escalation_id`` of org ``org_id`` (the caller checked who may):
    stored (Conflict if it was resolved already, nothing changed then), the session's USD
    budgets raised by ``extra`` (and this process's limits reloaded), the session's move
    published and applied to this process's board at once, ``escalation_resolved``
    published. The admin API's resolve and the dashboard's both do it here."""
    resolved, row, moved = await asyncio.to_thread(
        functools.partial(
            store.settle_escalation, ctx.engine, escalation_id, approved=approved, by=actor,
            note=note, extra_budget_usd=extra, now=ctx.clock(), tenant=org_id,
        )
    )  # fmt: skip
    if extra:
        await _raise_budgets(ctx, resolved.org_id, resolved.session_id, extra)
    if moved is not None and row is not None:
        change = changed_event((row.org_id, row.session_id), None, moved, row.version)
        ctx.events.publish(change)  # every process's board follows it
        if ctx.sessions is not None:
            ctx.sessions.apply(change)  # this one's at once
    ctx.events.publish(
        EscalationResolved(
            org_id=resolved.org_id, escalation_id=resolved.id, session_id=resolved.session_id,
            status=resolved.status, resolved_by=actor, note=note,
            extra_budget_usd=None if extra is None else money_str(extra),
        )
    )  # fmt: skip
    return resolved, row


async def _raise_budgets(ctx: AdminContext, org_id: str, session_id: str, extra: Decimal) -> None:
    """Each USD budget of the session raised by ``extra``, as a limit on the session."""
    raised = await asyncio.to_thread(
        store.raise_session_budgets, ctx.engine, ctx.enforcer.book, org_id, session_id, extra
    )
    if raised:
        await reload_limits(ctx)


SESSION_KINDS = frozenset(
    {SessionChanged.kind, SessionRunaway.kind, EscalationCreated.kind, EscalationResolved.kind}
)


async def session_events(request: Request) -> Response:
    ctx = context(request)
    key = ctx.keys.from_headers(dict(request.scope["headers"]), request.scope, "session_events")
    if key is None:
        return error(401, "authentication_error", "invalid or missing API key")
    session_id = clean_session_id(request.path_params["session_id"])
    view = await _view(ctx, key.org_id, session_id)
    if view is None or view.key_id != key.id:
        raise NotFound(f"no session {session_id!r} of this key")
    after = last_event_id(request)
    subscription = ctx.events.subscribe(after, kinds=SESSION_KINDS, org_id=key.org_id)
    return EventStream(subscription, keep=lambda e: e.data.get("session_id") == session_id)
