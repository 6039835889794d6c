"""The budgets and limits page, ``GET /dashboard/limits``, and its changes.

It shows, read as the admin API reads them (``storage.policy``, the enforcer's counters for
the live status as ``GET /admin/budgets`` does):

- the live budgets: each limit in force (explicit, or an org's tier default) with what is
  spent, reserved and left, and when it resets -- of every org with limits, or of the one
  picked with ``?org=``;
- the platform-wide limits (the failsafe over every org);
- the orgs' limits and overrides: every limit set on an org, project, key, end user, session
  or tag of an org, marked where it overrides the org's tier default, with edit and remove;
- a form to set a limit (``POST /dashboard/limits/set``; a set limit of the same name on the
  same scope is changed) and the remove buttons (``POST /dashboard/limits/remove``);
- the plan tiers, and the tier of each org (``POST /dashboard/limits/tier`` changes it);
- the latest refused requests: ledger rows of status ``blocked`` answered 402 (a budget) or
  429 (a rate limit), with the time, org, key prefix, model and the reason.

Every write is applied in this gateway process at once, as ``PUT /admin/limits`` does
(``admin.limits_api.reload_limits``); other processes poll for it.

Who sees and does what (``admin.access``): a platform_admin everything; a platform-wide
viewer sees everything and changes nothing. An org-scoped visitor (an org_admin, an org's
viewer) sees its own org's limits, live budgets, tier name and refusals only -- never the
platform-wide limits, the tier list or another org; its org_admin sets and removes its own
org's limits (a platform-wide limit, another org's or an org's tier is a 403). Every post
is CSRF-checked (``console.auth.changing``); a refused one changes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from costwarden.admin.access import Access
from costwarden.admin.limits_api import config_tier_names, reload_limits
from costwarden.analytics.query import SpendQuery
from costwarden.analytics.rollup import hour_of
from costwarden.budgets.limits import (
    LIMIT_NAMES,
    MODES,
    SCOPES,
    UNLIMITED,
    Limit,
    Tier,
    format_amount,
    limit_name,
)
from costwarden.budgets.status import LimitStatus, live_status
from costwarden.console.auth import changing, visitor
from costwarden.console.context import console
from costwarden.console.render import page, url
from costwarden.core.errors import Forbidden, InvalidInput
from costwarden.core.records import LedgerRecord
from costwarden.storage import policy, repo
from costwarden.storage.analytics_read import Key, requests_by
from costwarden.storage.request_log import LogQuery, search

#: the refused requests shown, newest first, and how far back they are looked for
REFUSALS = 25
REFUSALS_WINDOW = timedelta(days=7)
REFUSED_HTTP = (402, 429)
#: orgs whose live budgets are shown at once (more: pick one with ?org=)
STATUS_ORGS = 25
DONE = {
    "set": "Limit saved; it applies now.",
    "removed": "Limit removed.",
    "tier": "The org's tier is changed.",
}


# ------------------------------------------------------------------ pure helpers


def amount_text(metric: str, units: int) -> str:
    """A limit's amount for people: ``$5``, ``1,000``, or ``unlimited`` (-1)."""
    if units == UNLIMITED:
        return "unlimited"
    if metric == "usd":
        return "$" + format_amount(metric, units)
    return f"{units:,}"


@dataclasses.dataclass(frozen=True, slots=True)
class LimitRow:
    """One explicitly set limit as the page lists it."""

    org: str | None  # the org's name; None for a platform-wide limit
    scope: str
    subject: str  # as stored ("" for platform, the org id for org)
    name: str
    amount: str  # the form's value: exact, in the operator's unit
    shown: str  # for people
    mode: str
    kind: str  # budget | rate_limit
    overrides: str | None  # the tier whose default this limit overrides, if any
    editable: bool


def may_write(access: Access, org: str | None) -> bool:
    """Whether ``access`` may set or remove a limit of org ``org`` (None: platform-wide)."""
    try:
        access.write_org(org)
    except Forbidden:
        return False
    return True


def limit_rows(
    limits: Iterable[Limit],
    names: Mapping[str, str],
    tiers: Mapping[str, Tier],
    org_tiers: Mapping[str, str],
    access: Access,
) -> list[LimitRow]:
    """The explicitly set limits ``access`` may see (an org-scoped one: its own org's, no
    platform-wide one), by org name, scope, subject and name."""
    own = access.principal.org_id
    out = []
    for lim in limits:
        if own is not None and lim.org_id != own:
            continue
        org = names.get(lim.org_id, lim.org_id) if lim.org_id else None
        tier = tiers.get(org_tiers.get(lim.org_id, "")) if lim.org_id else None
        overrides = None
        if tier is not None and any(
            e.scope == lim.scope and e.metric == lim.metric and e.window == lim.window
            for e in tier.entries
        ):
            overrides = tier.name
        out.append(
            LimitRow(
                org, lim.scope, lim.subject, lim.name, format_amount(lim.metric, lim.amount),
                amount_text(lim.metric, lim.amount), lim.mode,
                "rate_limit" if lim.rolling else "budget", overrides, may_write(access, org),
            )
        )  # fmt: skip
    out.sort(key=lambda r: (r.org or "", SCOPES.index(r.scope), r.subject, r.name))
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class StatusRow:
    """One limit in force and its counter, for people."""

    org: str | None  # None: a platform-wide limit
    scope: str
    subject: str
    name: str
    kind: str
    mode: str
    source: str  # "override" or "tier NAME"
    limit: str
    spent: str
    reserved: str
    remaining: str
    percent: str
    state: str  # ok | warn | bad (a badge's class)
    resets_at: str | None


def status_rows(statuses: Iterable[LimitStatus], org: str | None) -> list[StatusRow]:
    """Rows of live statuses of org ``org`` (None: the platform-wide ones)."""
    out = []
    for s in statuses:
        data = s.to_json()
        lim = s.limit
        percent = s.percent
        state = "bad" if percent >= 100 else "warn" if percent >= 80 else "ok"
        out.append(
            StatusRow(
                org, lim.scope, lim.subject, lim.name, data["kind"], lim.mode, data["source"],
                amount_text(lim.metric, lim.amount), amount_text(lim.metric, s.spent),
                amount_text(lim.metric, s.reserved), amount_text(lim.metric, s.remaining),
                f"{percent} %", state, data["resets_at"],
            )
        )  # fmt: skip
    return out


def tier_summary(tier: Tier) -> list[str]:
    """A tier's defaults for people: ``org: daily_usd $5``, one line each."""
    return [
        f"{e.scope}: {limit_name(e.metric, e.window)} {amount_text(e.metric, e.amount)}"
        + (" (soft)" if e.mode == "soft" else "")
        for e in tier.entries
    ]


def refusal_since(counts: Mapping[Key, int], want: int, floor: datetime) -> datetime | None:
    """Where the ``want`` latest refused requests begin: the start of the newest hours (from
    hourly counts) that hold at least ``want`` of them, else ``floor``; None when there is
    none (no need to read the ledger)."""
    hours = sorted(
        ((bucket, n) for (bucket, _), n in counts.items() if bucket and n), reverse=True
    )
    if not hours:
        return None
    seen = 0
    for bucket, n in hours:
        seen += n
        if seen >= want:
            return max(datetime.fromisoformat(bucket), floor)
    return floor


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    ts: datetime
    org: str
    key_prefix: str
    model: str
    http_status: int
    reason: str


def refusal_rows(
    records: Iterable[LedgerRecord], names: Mapping[str, str], prefixes: Mapping[str, str]
) -> list[Refusal]:
    """The records answered 402 or 429, for people (the newest first, as given)."""
    out = []
    for r in records:
        if r.http_status not in REFUSED_HTTP:
            continue
        out.append(
            Refusal(
                r.ts,
                names.get(r.org_id or "", r.org_id or "—"),
                prefixes.get(r.key_id or "", "—"),
                r.requested_model or r.served_model or "—",
                r.http_status,
                r.error or ("budget exceeded" if r.http_status == 402 else "rate limited"),
            )
        )
    return out


# ------------------------------------------------------------------ reads


def _refusals(engine: Any, tenant: str | None, now: datetime) -> list[LedgerRecord]:
    """The latest refused (blocked) requests: the hourly rollups tell which hours hold them,
    so the ledger is read over those hours only."""
    floor = hour_of(now - REFUSALS_WINDOW)
    blocked = {"status": "blocked"}
    counts = requests_by(
        engine, SpendQuery(floor, now, granularity="hour", filters=blocked, tenant=tenant)
    )
    since = refusal_since(counts, REFUSALS, floor)
    if since is None:
        return []
    q = LogQuery(since, now + timedelta(minutes=1), filters=blocked, tenant=tenant)
    return search(engine, q, limit=REFUSALS * 2)


def _prefixes(engine: Any, orgs: list[str]) -> dict[str, str]:
    """{key id: its prefix} of the keys of the orgs named."""
    out: dict[str, str] = {}
    for name in orgs:
        out.update({k.id: k.prefix for k in repo.list_keys(engine, name)})
    return out


async def _statuses(
    request: Request, access: Access, names: Mapping[str, str], picked: str | None
) -> tuple[list[StatusRow], bool]:
    """The live budgets to show, and whether orgs were left out (more than STATUS_ORGS)."""
    ctx = console(request).admin
    enforcer = ctx.enforcer
    book = enforcer.book
    now = ctx.clock()

    async def of(org_id: str) -> list[LimitStatus]:
        return await live_status(book, enforcer.store, org_id, now, ctx.budgets_timezone)

    rows: list[StatusRow] = []
    if access.principal.org_id is not None:
        org_ids = [access.principal.org_id]
    elif picked is not None:
        org_ids = [repo.named(dict(names), picked)]
    else:
        with_limits = {lim.org_id for lim in book.limits if lim.org_id} | {
            org for org, tier in book.org_tiers.items() if tier in book.tiers
        }
        org_ids = sorted((o for o in with_limits if o in names), key=lambda o: names[o])
        if any(not lim.org_id for lim in book.limits):
            platform = [s for s in await of("") if s.limit.scope == "platform"]
            rows.extend(status_rows(platform, None))
    cut = len(org_ids) > STATUS_ORGS
    found = await asyncio.gather(*(of(o) for o in org_ids[:STATUS_ORGS]))
    for org_id, statuses in zip(org_ids, found, strict=False):
        # The platform's counters are every org's spend: shown once, platform-wide only.
        own = [s for s in statuses if s.limit.scope != "platform"]
        rows.extend(status_rows(own, names.get(org_id, org_id)))
    return rows, cut


async def limits_page(request: Request) -> Response:
    who = await visitor(request)
    ctx = console(request).admin
    access = who.access
    tenant = access.principal.org_id
    # ?org= picks whose budgets show; an org-scoped visitor naming another org: 403
    picked = access.org(request.query_params.get("org") or None)
    if tenant is not None:
        picked = None
    now = datetime.fromtimestamp(ctx.clock(), UTC)
    snapshot, names, refused = await asyncio.gather(
        asyncio.to_thread(policy.load_policy, ctx.engine),
        asyncio.to_thread(repo.org_names, ctx.engine),
        asyncio.to_thread(_refusals, ctx.engine, tenant, now),
    )
    tiers = {t.name: t for t in [*ctx.enforcer.config_tiers, *snapshot.api_tiers]}
    refused_orgs = sorted({names[r.org_id] for r in refused if r.org_id in names})
    (statuses, cut), prefixes = await asyncio.gather(
        _statuses(request, access, names, picked),
        asyncio.to_thread(_prefixes, ctx.engine, refused_orgs),
    )
    rows = limit_rows(snapshot.limits, names, tiers, snapshot.org_tiers, access)
    if tenant is None:
        visible_orgs = sorted(names.values())
    else:
        visible_orgs = [access.org_name] if access.org_name else []
    writable_orgs = [o for o in visible_orgs if may_write(access, o)]
    done = request.query_params.get("done")
    return page(
        request,
        who,
        "limits.html",
        title="Budgets and limits",
        notice=DONE.get(done or ""),
        platform_wide=tenant is None,
        picked=picked,
        statuses=statuses,
        statuses_cut=cut,
        platform_limits=[r for r in rows if r.org is None],
        org_limits=[r for r in rows if r.org is not None],
        may_write_platform=may_write(access, None),
        writable_orgs=writable_orgs,
        visible_orgs=visible_orgs,
        scopes=[s for s in SCOPES if s != "platform"],
        limit_names=list(LIMIT_NAMES),
        modes=MODES,
        tiers=[(t, tier_summary(t)) for t in tiers.values()],
        org_tiers=sorted(
            ((names[o], t) for o, t in snapshot.org_tiers.items() if o in names),
        ),
        own_tier=snapshot.org_tiers.get(tenant) if tenant is not None else None,
        refusals=refusal_rows(refused, names, prefixes)[:REFUSALS],
    )


# ------------------------------------------------------------------ changes


def _target(fields: Mapping[str, str]) -> tuple[str | None, str, str]:
    """(org name or None, scope, subject) of a posted limit form."""
    scope = fields.get("scope", "").strip()
    if scope not in SCOPES:
        raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}")
    org = fields.get("org", "").strip() or None
    if scope == "platform":
        org = None
    return org, scope, fields.get("subject", "")


def _name(fields: Mapping[str, str]) -> str:
    name = fields.get("limit_name", "").strip()
    if name not in LIMIT_NAMES:
        raise InvalidInput(f"limit must be one of {', '.join(LIMIT_NAMES)}")
    return name


def _back(request: Request, done: str) -> Response:
    return RedirectResponse(url(request, "/limits") + "?" + urlencode({"done": done}), 303)


async def set_limit(request: Request) -> Response:
    who, fields = await changing(request)
    org, scope, subject = _target(fields)
    who.access.write_org(org)  # an org_admin: its own org's limits; no platform-wide one
    name = _name(fields)
    amount = fields.get("amount", "").strip()
    if not amount:
        raise InvalidInput("an amount is required (-1: unlimited, lifting a tier default)")
    mode = fields.get("mode", "").strip() or None
    if mode is not None and mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}")
    ctx = console(request).admin
    await asyncio.to_thread(
        policy.set_limits, ctx.engine, org=org, scope=scope, subject=subject,
        amounts={name: amount}, mode=mode,
    )  # fmt: skip
    await reload_limits(ctx)  # as PUT /admin/limits: applies in this process now
    return _back(request, "set")


async def remove_limit(request: Request) -> Response:
    who, fields = await changing(request)
    org, scope, subject = _target(fields)
    who.access.write_org(org)
    name = _name(fields)
    ctx = console(request).admin
    deleted = await asyncio.to_thread(
        policy.clear_limits, ctx.engine, org=org, scope=scope, subject=subject, names=[name]
    )
    if deleted:
        await reload_limits(ctx)
    return _back(request, "removed")


async def set_tier(request: Request) -> Response:
    who, fields = await changing(request)
    who.access.write_platform()  # an org's plan is the platform's choice
    org = fields.get("org", "").strip()
    if not org:
        raise InvalidInput("an org is required")
    tier = fields.get("tier", "").strip() or None
    ctx = console(request).admin
    await asyncio.to_thread(
        policy.set_org_tier, ctx.engine, org, tier, known_tiers=config_tier_names(ctx)
    )
    await reload_limits(ctx)
    return _back(request, "tier")


ROUTES = (
    Route("/limits", limits_page, methods=["GET"]),
    Route("/limits/set", set_limit, methods=["POST"]),
    Route("/limits/remove", remove_limit, methods=["POST"]),
    Route("/limits/tier", set_tier, methods=["POST"]),
)
