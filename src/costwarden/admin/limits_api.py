"""Admin API handlers for limits, live budget status and tiers.

- ``GET /admin/limits`` (``?org=``): the explicitly set limits (platform ones included).
- ``PUT /admin/limits``: body ``{"org", "scope", "scope_id"?, "limits": {name: amount},
  "mode"?}``; ``DELETE /admin/limits``: the same target, ``"limits"``: names (all if omitted).
- ``GET /admin/budgets?org=``: spent, reserved, remaining per limit, from the counters this
  gateway enforces with.
- ``GET /admin/tiers``, ``PUT`` / ``DELETE /admin/tiers/{name}``: tiers; one defined in the
  config file cannot be written here (409).
- ``PUT /admin/orgs/{name}/tier``: body ``{"tier": name or null}``.

A write reloads this process's limits at once (:func:`reload_limits`); other gateway
processes poll for them within ``budgets.refresh_seconds``.

Who may (``admin.access``): an org-scoped principal (an org_admin, or a viewer bound to an
org) reads its own org's limits (not the platform's, which are platform-wide settings) and
its own org's live budgets (not the platform limits' either: their spend is every org's);
naming another org is a 403. An org_admin sets and clears limits
of its own org only (``"org"`` its own; null, the platform scope, is a 403). Tiers are plans
the platform chooses: listing, writing and deleting them, and putting an org on one, stay
platform-wide (the list is platform-wide data: a tier may be named for a customer).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from costwarden.admin.access import authenticate
from costwarden.admin.common import body_json
from costwarden.admin.context import AdminContext, context
from costwarden.budgets.limits import MODES, SCOPES, Limit, Tier, format_amount, tier_to_mapping
from costwarden.budgets.status import LimitStatus, live_status
from costwarden.core.errors import Conflict, InvalidInput, NotFound
from costwarden.storage import policy, repo

logger = logging.getLogger(__name__)


def limit_json(limit: Limit, org_name: str | None) -> dict[str, Any]:
    """One explicitly set limit; ``org_name`` is None for platform limits."""
    return {
        "org": org_name,
        "scope": limit.scope,
        "scope_id": limit.subject or None,
        "limit_name": limit.name,
        "limit": format_amount(limit.metric, limit.amount),
        "mode": limit.mode,
        "kind": "rate_limit" if limit.rolling else "budget",
        "metric": limit.metric,
        "window": limit.window,
    }


def tier_json(tier: Tier) -> dict[str, Any]:
    return {"name": tier.name, "source": tier.source, "limits": tier_to_mapping(tier)}


def config_tier_conflict(name: str) -> str:
    return (
        f"tier {name!r} is defined in the config file ([[tiers]]); "
        "change it there, or use another name"
    )


# ------------------------------------------------------------------ limits


async def get_limits(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    org = access.org(request.query_params.get("org"))
    names = await asyncio.to_thread(repo.org_names, ctx.engine)
    org_id = None if org is None else repo.named(names, org)
    limits = await asyncio.to_thread(policy.list_limits, ctx.engine)
    if org_id is not None:
        # The platform's limits ("") beside the org's, for a platform-wide principal only.
        shown = (org_id, "") if access.platform_wide else (org_id,)
        limits = [lim for lim in limits if lim.org_id in shown]
    return JSONResponse(
        {
            "org": names[org_id] if org_id is not None else None,
            "org_id": org_id,
            "limits": [limit_json(lim, names.get(lim.org_id)) for lim in limits],
        }
    )


async def put_limits(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    data = await body_json(request, allowed={"org", "scope", "scope_id", "limits", "mode"})
    org, scope, subject = _target(data)
    access.write_org(org)  # an org_admin: its own org's limits (None: the platform's)
    amounts = data.get("limits")
    if not isinstance(amounts, dict) or not amounts:
        raise InvalidInput(
            "'limits' is required: an object of limit name to amount, e.g. "
            '{"daily_usd": "5", "requests_per_minute": 60}'
        )
    mode = data.get("mode")
    if mode is not None and mode not in MODES:
        raise InvalidInput(f"'mode' must be one of {', '.join(MODES)}, got {mode!r}")
    limits = await asyncio.to_thread(
        policy.set_limits,
        ctx.engine,
        org=org,
        scope=scope,
        subject=subject,
        amounts=amounts,
        mode=mode,
    )
    await reload_limits(ctx)
    org_name = org.strip() if org is not None else None
    return JSONResponse(
        {
            "org": org_name,
            "org_id": limits[0].org_id or None,
            "limits": [limit_json(lim, org_name) for lim in limits],
        }
    )


async def delete_limits(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    data = await body_json(request, allowed={"org", "scope", "scope_id", "limits"})
    org, scope, subject = _target(data)
    access.write_org(org)  # an org_admin: its own org's limits (None: the platform's)
    names = data.get("limits")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise InvalidInput("'limits' must be a list of limit names (omit it to clear all)")
    deleted = await asyncio.to_thread(
        policy.clear_limits, ctx.engine, org=org, scope=scope, subject=subject, names=names
    )
    if deleted:
        await reload_limits(ctx)
    return JSONResponse({"deleted": deleted})


async def budgets(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    org = access.org(request.query_params.get("org"))  # org-scoped: its own by default
    if org is None or not org.strip():
        raise InvalidInput("query parameter 'org' is required")
    record = await asyncio.to_thread(repo.get_org_by_name, ctx.engine, org.strip())
    if record is None:
        raise NotFound(f"unknown org {org!r}")
    statuses = await _live_status(ctx, record.id)
    if not access.platform_wide:
        # A platform limit's spend is every org's: its status is platform-wide data.
        statuses = [s for s in statuses if s.limit.scope != "platform"]
    return JSONResponse(
        {
            "org": record.name,
            "org_id": record.id,
            "limits": [s.to_json() for s in statuses],
        }
    )


# ------------------------------------------------------------------ tiers


async def list_tiers(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.read_platform()  # the platform's plans (a tier may be named for a customer)
    stored = await asyncio.to_thread(policy.list_tiers, ctx.engine)
    tiers = [*ctx.enforcer.config_tiers, *stored]
    return JSONResponse({"data": [tier_json(t) for t in tiers]})


async def put_tier(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.write_platform()
    name = request.path_params["name"]
    if name.strip() in config_tier_names(ctx):
        raise Conflict(config_tier_conflict(name.strip()))
    data = await body_json(request)
    tier = await asyncio.to_thread(policy.set_tier, ctx.engine, name, data)
    await reload_limits(ctx)
    return JSONResponse(tier_json(tier))


async def delete_tier(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.write_platform()
    name = request.path_params["name"]
    if name.strip() in config_tier_names(ctx):
        raise Conflict(config_tier_conflict(name.strip()))
    await asyncio.to_thread(policy.delete_tier, ctx.engine, name)
    await reload_limits(ctx)
    return JSONResponse({"deleted": name.strip()})


async def set_org_tier(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.write_platform()  # which plan an org is on is the platform's choice, not the org's
    org = request.path_params["name"]
    data = await body_json(request, allowed={"tier"})
    if "tier" not in data:
        raise InvalidInput("'tier' is required: a tier name, or null to take the org off")
    tier = data["tier"]
    if tier is not None and not isinstance(tier, str):
        raise InvalidInput("'tier' must be a tier name or null")
    await asyncio.to_thread(
        policy.set_org_tier, ctx.engine, org, tier, known_tiers=config_tier_names(ctx)
    )
    await reload_limits(ctx)
    return JSONResponse({"org": org.strip(), "tier": tier.strip() if tier else None})


# ------------------------------------------------------------------ helpers


async def reload_limits(ctx: AdminContext) -> None:
    """Apply a committed policy write in this process now (the poller would within
    refresh_seconds, and retries if this fails)."""
    try:
        await ctx.enforcer.refresh()
    except Exception as exc:
        logger.warning(
            "limits saved; reloading them at once failed (the poller retries): %s: %s",
            type(exc).__name__,
            exc,
        )


async def _live_status(ctx: AdminContext, org_id: str) -> list[LimitStatus]:
    # The one use of budgets.status.live_status in the admin API (its signature may change).
    enforcer = ctx.enforcer
    return await live_status(
        enforcer.book, enforcer.store, org_id, ctx.clock(), ctx.budgets_timezone
    )


def config_tier_names(ctx: AdminContext) -> list[str]:
    return [t.name for t in ctx.enforcer.config_tiers]


def _target(data: dict[str, Any]) -> tuple[str | None, str, str]:
    """(org name or None, scope, subject) from a limits request body."""
    org = data.get("org")
    if org is not None and not isinstance(org, str):
        raise InvalidInput("'org' must be an org name, or null for the platform scope")
    scope = data.get("scope")
    if not isinstance(scope, str):
        raise InvalidInput(f"'scope' is required: one of {', '.join(SCOPES)}")
    subject = data.get("scope_id")
    if subject is None:
        subject = ""
    if not isinstance(subject, str):
        raise InvalidInput("'scope_id' must be a string")
    return org, scope, subject
