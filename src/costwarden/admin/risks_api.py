"""``GET /admin/risks?org=&user=&key=``: risk signals a product shows its own user.

The org (by name) is required; ``user`` (an end-user id) and ``key`` (a key id of the org)
narrow the token allowances looked at to that user's and key's (the org's and the key's
project's always count). Signals (``costwarden.alerts.risks``): ``high_token_usage`` at 80 %
of a daily token limit, ``upstream_failures`` from the last hour's ledger rows, and
``model_unavailable`` for an open breaker of a model the org used in that hour,
``session_near_budget`` and ``session_runaway`` for agent sessions winding down or paused.

A storage error (the database or Redis unreachable) answers an empty list, with one WARNING
line, not a 500: a product polls this from its own request path, and a gateway in trouble
must not take its callers down with it. An unknown org or key is still a 404.

Who may (``admin.access``): an org-scoped principal (an org_admin, or a viewer bound to an
org) reads its own org's signals: ``org`` defaults to its own, naming another is a 403.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from costwarden.admin.access import authenticate
from costwarden.admin.context import AdminContext, context
from costwarden.alerts.risks import (
    Risk,
    SessionRisk,
    TokenAllowance,
    breaker_risks,
    failure_risks,
    session_risks,
    token_risks,
)
from costwarden.budgets.limits import Principal
from costwarden.budgets.policy import checks_for
from costwarden.budgets.windows import iso, zone
from costwarden.core.errors import InvalidInput, NotFound, StorageError
from costwarden.storage import repo
from costwarden.storage.risks import key_project, recent_activity
from costwarden.storage.session_view import session_view
from costwarden.storage.sessions import sessions_not_active

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 3600
_ALLOWANCE_SCOPES = ("org", "project", "key", "user")


async def risks(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    query = request.query_params
    org = access.org(query.get("org"))  # org-scoped: its own org, no other
    if org is None:
        raise InvalidInput("query parameter 'org' is required (an org name)")
    name = repo.clean_name(org, "org")
    user = query.get("user")
    if user is not None:
        user = user.strip()
        if not user or len(user) > 200 or "\x00" in user:
            raise InvalidInput("'user' must be an end-user id of 1 to 200 characters")
    key = query.get("key")
    if key is not None:
        key = repo.clean_name(key, "key")
    try:
        found = await _risks(ctx, name, user, key)
    except (SQLAlchemyError, RedisError, StorageError, OSError) as exc:
        logger.warning("risk signals unavailable (storage error: %s): answering []",
                       type(exc).__name__)
        return JSONResponse({"data": []})
    return JSONResponse({"data": [r.to_json() for r in found]})


async def _risks(ctx: AdminContext, org: str, user: str | None, key: str | None) -> list[Risk]:
    record = await asyncio.to_thread(repo.get_org_by_name, ctx.engine, org)
    if record is None:
        raise NotFound(f"unknown org {org!r}")
    project: str | None = None
    if key is not None:
        found = await asyncio.to_thread(key_project, ctx.engine, record.id, key)
        if found is False:
            raise NotFound(f"no key {key!r} in org {org!r}")
        project = found if isinstance(found, str) else None
    now = ctx.clock()
    allowances = await _allowances(ctx, Principal(record.id, project, key or "", user), now)
    since = datetime.fromtimestamp(now, UTC) - timedelta(seconds=WINDOW_SECONDS)
    counts, models = await asyncio.to_thread(
        recent_activity, ctx.engine, record.id, since, WINDOW_SECONDS
    )
    deployments = {d for m in models for d in ctx.route_deployments.get(m, ())}
    states = {d: ctx.breakers.state(d) for d in deployments if d in ctx.breakers.deployments}
    sessions = await _sessions(ctx, record.id, key, now)
    return [
        *token_risks(allowances), *failure_risks(counts), *breaker_risks(states),
        *session_risks(sessions),
    ]  # fmt: skip


_SESSIONS_SHOWN = 50  # the most recently changed; a product shows a handful


async def _sessions(
    ctx: AdminContext, org_id: str, key: str | None, now: float
) -> list[SessionRisk]:
    """The org's sessions winding down or paused (of ``key`` only, if given)."""
    rows = await asyncio.to_thread(
        sessions_not_active, ctx.engine, tenant=org_id, states=("winding_down", "paused")
    )
    out: list[SessionRisk] = []
    for row in rows[:_SESSIONS_SHOWN]:
        enforcer = ctx.enforcer
        view = await session_view(
            ctx.engine, enforcer.book, enforcer.store, ctx.budgets_timezone, org_id,
            row.session_id, now,
        )  # fmt: skip
        if view is None or (key is not None and view.key_id != key):
            continue
        out.append(SessionRisk(row.session_id, view.standing.state, view.budget_pct,
                               view.standing.escalation))  # fmt: skip
    return out


async def _allowances(ctx: AdminContext, principal: Principal, now: float) -> list[TokenAllowance]:
    """The principal's daily token limits (override, else tier) and their use today."""
    enforcer = ctx.enforcer
    limits = [
        lim
        for lim in enforcer.book.applicable(principal)
        if lim.metric == "tokens" and lim.window == "day" and lim.scope in _ALLOWANCE_SCOPES
        and (lim.scope != "key" or principal.key_id)
    ]
    if not limits:
        return []
    checks = checks_for(limits, now, zone(ctx.budgets_timezone))
    views = await enforcer.store.views(checks, now)
    return [
        TokenAllowance(
            scope=check.limit.scope,
            scope_id=check.limit.subject,
            amount=check.limit.amount,
            used=view.used,
            source=f"tier {check.limit.tier}" if check.limit.tier else "override",
            resets_at=iso(check.resets_at),
        )
        for check, view in zip(checks, views, strict=True)
    ]
