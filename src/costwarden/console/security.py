"""The security page: ``GET /dashboard/security``.

It shows

- the recent security findings of the prompt scan (the ledger rows' ``security`` field, in
  the newest ``storage.recent.SCAN_ROWS`` requests of the last :data:`RECENT_DAYS` days,
  newest first): detector, family (the rule's family),
  severity, confidence, what the policy did (blocked, redacted, flagged), where in the
  request, the span's keyed hash, the request id, time, org and key prefix. What is stored
  is already only that (``gateway.security``: never the text found), and the page reads only
  those named fields of it, so the secret or personal data found appears nowhere;
- the honeypot keys' uses (their ``security-honeypot-key`` alerts: one per key, source
  address and hour, open or fired in the window): when, the org, the key's prefix and name,
  the source address, what the client claimed (user agent, model), the action, the alert's
  state;
- the security policy layers of the orgs and their keys (``GET /admin/security/policies``'
  data: each layer over the gateway's ``[security]`` settings). Read-only here: a layer is
  changed with ``PUT /admin/orgs/{name}/security`` or ``/admin/keys/{id}/security``.

The findings and honeypot tables are a fragment (``GET /dashboard/security/recent``) that
reloads itself a moment after the live stream's ``security_finding`` or
``honeypot_triggered`` (once the ledger row or the alert is written).

Who sees what: a platform-wide visitor (platform_admin, platform viewer) every org's; an
org_admin or org-scoped viewer its own org's findings, honeypot uses and policy layers only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from costwarden.admin.access import Access
from costwarden.admin.context import AdminContext
from costwarden.alerts.rules import HONEYPOT_RULE
from costwarden.console.auth import visitor
from costwarden.console.context import console
from costwarden.console.render import page
from costwarden.storage import repo
from costwarden.storage.alert_records import AlertRecord
from costwarden.storage.alerts import recent_alerts
from costwarden.storage.recent import SCAN_ROWS, recent_findings
from costwarden.storage.security_policies import PolicyRecord, list_policies

RECENT_DAYS = 7
FINDINGS_SHOWN = 200
HONEYPOT_SHOWN = 100
#: the policy fields a layer may set besides ``actions``, in the order shown
POLICY_FIELDS = ("min_confidence", "flag_confidence", "on_timeout", "time_budget_ms")
_SEVERITY_BADGES = {"low": "ok", "medium": "warn", "high": "bad", "critical": "bad"}
_ACTION_BADGES = {"blocked": "bad", "redacted": "warn", "flagged": "warn"}


# ------------------------------------------------------------------ pure logic


def finding_rows(
    rows: Iterable[Mapping[str, Any]],
    names: Mapping[str, str],
    prefixes: Mapping[str, str],
    limit: int = FINDINGS_SHOWN,
) -> list[dict[str, Any]]:
    """The findings of ledger rows (``request_id``, ``ts``, ``org_id``, ``key_id``,
    ``security``: the JSON array the scan stage stored), one table row each, at most
    ``limit``. Only the named fields are taken from a finding (anything else it might
    carry is left out); a field that is not what it should be is shown blank."""
    out: list[dict[str, Any]] = []
    for row in rows:
        try:
            found = orjson.loads(row["security"] or "[]")
        except orjson.JSONDecodeError:
            continue
        if not isinstance(found, list):
            continue
        for f in found:
            if not isinstance(f, dict):
                continue
            confidence = f.get("confidence")
            severity = _text(f.get("severity"))
            action = _text(f.get("action"))
            out.append({
                "request_id": row["request_id"],
                "ts": row["ts"],
                "org": names.get(row["org_id"] or "", row["org_id"] or ""),
                "key_prefix": prefixes.get(row["key_id"] or "", ""),
                "detector": _text(f.get("detector")),
                "family": _text(f.get("family")),
                "severity": severity,
                "severity_badge": _SEVERITY_BADGES.get(severity, "warn"),
                "confidence": (
                    f"{confidence:.2f}" if isinstance(confidence, int | float) else ""
                ),
                "action": action,
                "action_badge": _ACTION_BADGES.get(action, "warn"),
                "location": _text(f.get("location")),
                "span_hash": _hash(f.get("span_hash")),
            })  # fmt: skip
            if len(out) >= limit:
                return out
    return out


def _text(value: object, limit: int = 80) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _hash(value: object) -> str:
    """A span hash is 16 hex digits; anything else is not shown."""
    if isinstance(value, str) and len(value) == 16 and all(c in "0123456789abcdef" for c in value):
        return value
    return ""


def honeypot_rows(
    alerts: Iterable[AlertRecord], tenant: str | None, limit: int = HONEYPOT_SHOWN
) -> list[dict[str, Any]]:
    """The honeypot alerts (of org ``tenant`` only, if given), newest first, as table rows:
    the key's prefix and name, never the key."""
    mine = [a for a in alerts if a.rule == HONEYPOT_RULE and (tenant is None or a.org_id == tenant)]
    mine.sort(key=lambda a: (a.fired_at, a.id), reverse=True)
    out = []
    for a in mine[:limit]:
        d = a.detail
        out.append({
            "id": a.id,
            "at": d.get("at") or a.fired_at,
            "org": _text(d.get("org_name")),
            "key_prefix": _text(d.get("key_prefix")),
            "key_name": _text(d.get("key_name")),
            "source": _text(d.get("source")),
            "user_agent": _text(d.get("user_agent"), 300),
            "model": _text(d.get("model")),
            "endpoint": _text(d.get("endpoint")),
            "action": _text(d.get("action")),
            "state": a.state,
        })  # fmt: skip
    return out


def policy_rows(
    records: Iterable[PolicyRecord], names: Mapping[str, str], prefixes: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Each policy layer as a table row: whose (the org, or one of its keys by prefix), its
    actions per detector and the other fields it sets (None: not set, the layer under it
    applies)."""
    out = []
    for r in records:
        actions = r.policy.get("actions")
        out.append({
            "org": names.get(r.org_id, r.org_id),
            "key_id": r.key_id,
            "key_prefix": prefixes.get(r.key_id or "", ""),
            "actions": sorted(actions.items()) if isinstance(actions, dict) else [],
            "fields": [(name, r.policy.get(name)) for name in POLICY_FIELDS],
            "updated_by": r.updated_by,
            "updated_at": r.updated_at,
        })  # fmt: skip
    return out


# ------------------------------------------------------------------ reads


def _tenant(access: Access) -> str | None:
    return None if access.platform_wide else access.principal.org_id


async def _recent(ctx: AdminContext, access: Access) -> dict[str, Any]:
    tenant = _tenant(access)
    since = datetime.fromtimestamp(ctx.clock(), UTC) - timedelta(days=RECENT_DAYS)
    rows, alerts, names, keys = await asyncio.gather(
        asyncio.to_thread(recent_findings, ctx.engine, since, tenant),
        asyncio.to_thread(recent_alerts, ctx.engine, HONEYPOT_RULE, since),
        asyncio.to_thread(repo.org_names, ctx.engine),
        asyncio.to_thread(repo.list_keys, ctx.engine, access.org(None)),
    )
    prefixes = {k.id: k.prefix for k in keys}
    return {
        "findings": finding_rows(rows, names, prefixes),
        "honeypot": honeypot_rows(alerts, tenant),
        "recent_days": RECENT_DAYS,
        "scan_rows": SCAN_ROWS,
        "platform_wide": access.platform_wide,
        "names": names,
        "prefixes": prefixes,
    }


# ------------------------------------------------------------------ handlers


async def security_page(request: Request) -> Response:
    who = await visitor(request)
    ctx = console(request).admin
    access = who.access
    recent, policies = await asyncio.gather(
        _recent(ctx, access),
        asyncio.to_thread(list_policies, ctx.engine, access.org(None)),
    )
    return page(
        request,
        who,
        "security.html",
        title="Security",
        policies=policy_rows(policies, recent["names"], recent["prefixes"]),
        **recent,
    )


async def recent_fragment(request: Request) -> Response:
    who = await visitor(request)
    recent = await _recent(console(request).admin, who.access)
    return page(request, who, "security_recent.html", **recent)


ROUTES = (
    Route("/security", security_page, methods=["GET"]),
    Route("/security/recent", recent_fragment, methods=["GET"]),
)
