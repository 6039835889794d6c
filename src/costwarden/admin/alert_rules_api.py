"""Admin API handlers for alert rules: the threshold lines of a scope or a plan tier's scope.

- ``GET /admin/alert-rules`` (``?org=``): every rule, oldest first; with ``org``, that org's
  rules and the tiers' rules.
- ``PUT /admin/alert-rules``: body ``{"org"?, "scope", "scope_id"?, "tier"?, "limit"?,
  "thresholds"}``, set on its target (the last write wins). The target is one of: a scope
  instance (``org`` + ``scope`` + ``scope_id`` as for ``PUT /admin/limits``), every instance
  of a scope type in an org (``scope_id`` omitted or null), or a scope type on a plan tier
  (``tier``, no org). ``thresholds`` are percents of the limit, each in (0, 1000].
  A target that does not exist is a 400 and stores nothing.
- ``DELETE /admin/alert-rules/{rule_id}``.

A write reloads this process's limits at once; other processes pick the rule up with their
next limits refresh (``budgets.refresh_seconds``), like a limit. Writes record who made them
(``created_by``): who signed in (``admin-api`` for the admin token, ``admin-key:<id>``...).

Who may (``admin.access``): a rule belongs to an org, a tier or the platform. An org-scoped
principal (an org_admin, or a viewer bound to an org) lists its own org's rules alone (the
tiers' and the platform's are platform-wide settings; naming another org is a 403); an
org_admin sets rules whose target is in its own org, and deletes its own org's rules (any
other rule id, another org's, a tier's or the platform's, is a 403). Tier and platform rules
are the platform's. A viewer changes nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from costwarden.admin.access import authenticate
from costwarden.admin.common import body_json
from costwarden.admin.context import context
from costwarden.admin.limits_api import config_tier_names, reload_limits
from costwarden.budgets.limits import SCOPES
from costwarden.core.errors import Forbidden, InvalidInput
from costwarden.storage import repo
from costwarden.storage.alert_rules import AlertRule, RuleTarget, delete_rule, list_rules, set_rule

_FIELDS = {"org", "scope", "scope_id", "tier", "limit", "thresholds"}


def rule_json(rule: AlertRule, org_names: dict[str, str]) -> dict[str, Any]:
    lines = rule.rule
    return {
        "id": rule.id,
        "kind": "threshold",
        "org": org_names.get(lines.org_id) if lines.org_id else None,
        "org_id": lines.org_id or None,
        "scope": lines.scope,
        "scope_id": lines.subject or None,
        "tier": lines.tier or None,
        "limit": lines.limit_name or None,
        "thresholds": list(lines.lines),
        "created_by": rule.created_by,
        "created_at": rule.created_at.isoformat(),
        "updated_at": rule.updated_at.isoformat(),
    }


async def get_rules(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    names = await asyncio.to_thread(repo.org_names, ctx.engine)
    org = access.org(request.query_params.get("org"))  # org-scoped: its own org, no other
    org_id = None if org is None else repo.named(names, org)
    rules = await asyncio.to_thread(list_rules, ctx.engine, org_id=org_id)
    if not access.platform_wide:  # not the tiers' rules: the platform's plans
        rules = [r for r in rules if r.rule.org_id == access.principal.org_id]
    return JSONResponse({"data": [rule_json(r, names) for r in rules]})


def _optional_str(data: dict[str, Any], field: str, what: str) -> str | None:
    value = data.get(field)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"'{field}' must be {what}")
    return value


def rule_target(data: dict[str, Any]) -> RuleTarget:
    """The target named by a rule's request body (its checks against the database come
    later, in storage)."""
    scope = data.get("scope")
    if not isinstance(scope, str) or scope not in SCOPES:
        raise InvalidInput(f"'scope' is required: one of {', '.join(SCOPES)}")
    org = _optional_str(data, "org", "an org name, or null for the platform or a tier")
    subject = _optional_str(data, "scope_id", "a string, or null for every instance")
    limit = _optional_str(data, "limit", "a limit name, or null for every limit")
    tier = None
    if "tier" in data:
        tier = data["tier"]
        if tier is not None and not (isinstance(tier, str) and tier.strip()):
            raise InvalidInput("'tier' must be a tier name, or null")
    return RuleTarget(
        scope=scope, org=org, subject=subject, tier=(tier or "").strip(), limit_name=limit or ""
    )


async def put_rule(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    data = await body_json(request, allowed=_FIELDS)
    if "thresholds" not in data:
        raise InvalidInput("'thresholds' is required: percents of the limit, e.g. [50, 80, 100]")
    target = rule_target(data)
    # A tier's rule is the platform's, as is one with no org; else the org named's.
    access.write_org(None if target.tier else target.org)
    rule = await asyncio.to_thread(
        set_rule,
        ctx.engine,
        target,
        data["thresholds"],
        actor=access.actor,
        known_tiers=config_tier_names(ctx),
    )
    await reload_limits(ctx)
    names = await asyncio.to_thread(repo.org_names, ctx.engine)
    return JSONResponse(rule_json(rule, names))


async def remove_rule(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    rule_id = request.path_params["rule_id"]
    if access.principal.role != "platform_admin":
        access.write_org_id(access.principal.org_id)  # a viewer: 403 before any look-up
        own = await asyncio.to_thread(list_rules, ctx.engine, org_id=access.principal.org_id)
        if not any(r.id == rule_id and r.rule.org_id == access.principal.org_id for r in own):
            # another org's, a tier's, the platform's or none: the same 403 (ids not told)
            raise Forbidden(f"this {access.principal.role} may delete only its own org's rules")
    await asyncio.to_thread(delete_rule, ctx.engine, rule_id)
    await reload_limits(ctx)
    return JSONResponse({"deleted": rule_id})
