"""Admin API handlers for analytics: spend by any dimension, the top spenders, and the monthly
chargeback as CSV. Every answer is summed from the rollups and the raw ledger past their
watermark (``storage.analytics_read``), so it equals the ledger's rows.

- ``GET /admin/analytics/spend?since=&until=&by=&granularity=`` and a filter per dimension
  (``org`` by name; ``project``, ``key``, ``user``, ``provider``, ``model``, ``status``,
  ``tag`` as stored).
- ``GET /admin/analytics/top?by=org|project|key|user|provider|model&n=10&since=&until=``.
- ``GET /admin/analytics/overview?period=24h|7d|30d``: requests, cost, tokens, active orgs,
  error rate, mean latency (exact), p50 / p95 / p99 latency (estimated from the latency
  histograms, ``analytics.latency``), the response cache's figures, and cost against the
  previous period.
- ``GET /admin/analytics/trends?by=org|...&period=7d&n=10``: the groups whose cost moved
  most against the previous period.
- ``GET /admin/analytics/projection?month=YYYY-MM&org=``: each org's month-end spend with
  a 90 % interval (``analytics.projection``).
- ``GET /admin/analytics/chargeback.csv?month=YYYY-MM&by=org|project|tag&org=``: one row per
  org (and project or tag) for the month, in FOCUS column names where they fit (of one org
  only, with ``org``).

Every group of spend and top, their totals and the overview carry the response cache's
figures: ``saved_usd`` (what its hits saved, a rollup measure), ``cache_hits`` (requests of
status ``cached``) and ``cache_hit_rate`` (hits over the requests answered, ``success`` +
``cached``: ``analytics.overview.hit_rate``); for tags, which have no status, the last two
are null. ``cache_savings_usd`` is another figure: the provider's prompt caching.

The org a caller may see is passed to the query as its ``tenant`` (a platform-wide principal:
every org), not only taken from the query string. So an org-scoped principal (an org_admin,
or a viewer bound to an org) gets its own org's figures from every report here, whatever
filters it sends: spend, top and trends rank only its own org's groups (its projects, keys,
users, models), the overview sums its own org's requests (``active_orgs`` is at most 1), the
projection and the chargeback have its own org's row(s) alone. Naming another org in
``?org=`` is a 403; a filter on another org's key or project simply matches nothing.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from costwarden.admin.access import Access, authenticate
from costwarden.admin.common import count_param
from costwarden.admin.context import AdminContext, context
from costwarden.analytics.latency import METHOD, quantile
from costwarden.analytics.overview import (
    PERIODS,
    CacheCounts,
    change_pct,
    error_rate,
    hit_rate,
    hit_rate_pct,
    windows,
)
from costwarden.analytics.projection import SPREAD_DAYS, project_month
from costwarden.analytics.query import (
    GRANULARITIES,
    NAMES,
    Granularity,
    SpendQuery,
    dimensions,
    parse_when,
    uses_tags,
)
from costwarden.analytics.rollup import Totals
from costwarden.core.errors import InvalidInput
from costwarden.storage import repo
from costwarden.storage.analytics_read import (
    Key,
    SpendRow,
    cache_counts,
    cost_by,
    latency_histogram,
    requests_by,
    spend,
)
from costwarden.storage.analytics_top import top as top_spend

COLUMN_NAMES = {column: name for name, column in NAMES.items()}
FILTERS = ("org", "project", "key", "user", "provider", "model", "status", "tag")
TOP_BY = ("org", "project", "key", "user", "provider", "model")
MAX_TOP = 100
MIN_YEAR = 1000  # a month's year (see _month)
CHARGEBACK_BY = {"org": ("org_id",), "project": ("org_id", "project_id"), "tag": ("org_id", "tag")}


def totals_json(t: Totals) -> dict[str, Any]:
    """Totals as the API shows them: money as exact decimal strings, mean latencies in ms."""
    return {
        "requests": t.requests,
        "input_tokens": t.input_tokens,
        "cached_input_tokens": t.cached_input_tokens,
        "cache_write_tokens": t.cache_write_tokens,
        "output_tokens": t.output_tokens,
        "reasoning_tokens": t.reasoning_tokens,
        "cost_usd": _money(t.cost_usd),
        # the provider's prompt caching (its cached input tokens)
        "cache_savings_usd": _money(t.cache_savings_usd),
        # the gateway's response cache: what the calls its hits avoided would have cost
        "saved_usd": _money(t.saved_usd),
        "avg_latency_ms": round(t.latency_us / t.requests / 1000, 3) if t.requests else None,
        "avg_ttft_ms": round(t.ttft_us / t.ttft_count / 1000, 3) if t.ttft_count else None,
    }


def _money(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def cache_json(counts: CacheCounts | None) -> dict[str, Any]:
    """The response cache's counts as the API shows them (None: not known, as for tags)."""
    if counts is None:
        return {"cache_hits": None, "cache_hit_rate": None}
    return {"cache_hits": counts.hits, "cache_hit_rate": _pct(hit_rate(counts))}


async def _cache_counts(
    ctx: AdminContext, q: SpendQuery, among: tuple[str, set[str]] | None = None
) -> dict[Key, CacheCounts] | None:
    """The response cache's counts of ``q``'s groups; None for tags (no status there)."""
    if uses_tags(q):
        return None
    return await asyncio.to_thread(cache_counts, ctx.engine, q, among=among)


async def _query(
    request: Request,
    ctx: AdminContext,
    access: Access,
    *,
    by: tuple[str, ...],
    since_default: str,
) -> tuple[SpendQuery, dict[str, str]]:
    """The query a request asks for (its filters checked, confined to what ``access`` may
    see), and {org id: name}."""
    params = request.query_params
    now = datetime.fromtimestamp(ctx.clock(), UTC)
    since = parse_when(params.get("since", since_default), now, what="since")
    until_text = params.get("until")
    until = now if until_text is None else parse_when(until_text, now, what="until")
    granularity: Granularity | None = None
    wanted = params.get("granularity")
    if wanted is not None:
        if wanted not in GRANULARITIES:
            raise InvalidInput(f"granularity must be one of {', '.join(GRANULARITIES)}")
        granularity = "hour" if wanted == "hour" else "day"
    org = access.org(params.get("org"))  # 403 for another org than an org-scoped one's
    names = await asyncio.to_thread(repo.org_names, ctx.engine)
    filters: dict[str, str] = {}
    for name in FILTERS:
        value = org if name == "org" else params.get(name)
        if value is not None:
            filters[NAMES[name]] = repo.named(names, value) if name == "org" else value
    query = SpendQuery(
        since, until, by=by, granularity=granularity, filters=filters, tenant=_tenant(access)
    )
    return query, names


def _tenant(access: Access) -> str | None:
    """The one org ``access`` may see figures of; None for a platform-wide principal (every
    org's)."""
    return access.principal.org_id


def _row_json(
    row: SpendRow,
    q: SpendQuery,
    names: dict[str, str],
    cached: dict[Key, CacheCounts] | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if q.granularity is not None:
        out["bucket"] = row.bucket
    for column, value in zip(q.by, row.keys, strict=True):
        out[COLUMN_NAMES[column]] = value or None
        if column == "org_id":
            out["org_name"] = names.get(value)
    out.update(totals_json(row.totals))
    key = (row.bucket, row.keys)
    out.update(cache_json(None if cached is None else cached.get(key, CacheCounts())))
    return out


def _all_counts(cached: dict[Key, CacheCounts] | None) -> CacheCounts | None:
    if cached is None:
        return None
    total = CacheCounts()
    for counts in cached.values():
        total.add(counts)
    return total


def _sum(rows: list[SpendRow]) -> Totals:
    total = Totals()
    for row in rows:
        total.add(row.totals)
    return total


async def spend_report(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    by = dimensions(request.query_params.get("by"))
    q, names = await _query(request, ctx, access, by=by, since_default="7d")
    rows, cached = await asyncio.gather(
        asyncio.to_thread(spend, ctx.engine, q), _cache_counts(ctx, q)
    )
    return JSONResponse(
        {
            "since": q.since.isoformat(),
            "until": q.until.isoformat(),
            "by": [COLUMN_NAMES[c] for c in q.by],
            "granularity": q.granularity,
            "data": [_row_json(r, q, names, cached) for r in rows],
            "totals": {**totals_json(_sum(rows)), **cache_json(_all_counts(cached))},
        }
    )


async def top(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    params = request.query_params
    name = params.get("by", "org")
    if name not in TOP_BY:
        raise InvalidInput(f"by must be one of {', '.join(TOP_BY)}")
    n = count_param(params.get("n"), "n", default=10, most=MAX_TOP)
    # Org-scoped: its own org's groups only (the top orgs are other orgs' figures).
    q, names = await _query(request, ctx, access, by=(NAMES[name],), since_default="30d")
    if q.granularity is not None:
        raise InvalidInput("top takes no granularity")
    rows = await asyncio.to_thread(top_spend, ctx.engine, q, n)
    # The cache's counts of the groups ranked alone (the top does not sum every group).
    among = (q.by[0], {r.keys[0] for r in rows})
    cached = await _cache_counts(ctx, q, among) if rows else {}
    return JSONResponse(
        {
            "since": q.since.isoformat(),
            "until": q.until.isoformat(),
            "by": name,
            "data": [_row_json(r, q, names, cached) for r in rows],
        }
    )


# ------------------------------------------------------------------ overview and trends


def _period(raw: str | None) -> str:
    period = raw if raw is not None else "24h"
    if period not in PERIODS:
        raise InvalidInput(f"period must be one of {', '.join(PERIODS)}")
    return period


async def overview(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    period = _period(request.query_params.get("period"))
    before, start, now = windows(period, datetime.fromtimestamp(ctx.clock(), UTC))
    # Org-scoped: its own org's overview (the platform's totals are every org's figures).
    tenant = _tenant(access)
    statuses = SpendQuery(start, now, by=("status",), tenant=tenant)
    orgs = SpendQuery(start, now, by=("org_id",), tenant=tenant)
    earlier_q = SpendQuery(before, start, tenant=tenant)
    # Four reads at once, each on its own connection: the answer waits for the slowest.
    by_status, by_org, previous, latencies = await asyncio.gather(
        asyncio.to_thread(spend, ctx.engine, statuses),
        asyncio.to_thread(requests_by, ctx.engine, orgs),
        asyncio.to_thread(spend, ctx.engine, earlier_q),
        asyncio.to_thread(latency_histogram, ctx.engine, start, now, tenant),
    )
    total, earlier = _sum(by_status), _sum(previous)
    counts = CacheCounts()
    for row in by_status:
        counts.count(row.keys[0], row.totals.requests)
    return JSONResponse(
        {
            "period": period,
            "since": start.isoformat(),
            "until": now.isoformat(),
            **totals_json(total),
            "active_orgs": sum(1 for _, (org,) in by_org if org),
            "error_rate_pct": _pct(error_rate({r.keys[0]: r.totals.requests for r in by_status})),
            **{f"p{p}_latency_ms": _estimate(latencies, p) for p in (50, 95, 99)},
            "latency_method": {"avg_latency_ms": "exact", "percentiles": METHOD},
            **cache_json(counts),
            # The same rate in percent (one decimal), as the error rate.
            "cache_hit_rate_pct": _pct(hit_rate_pct(counts)),
            "previous": {"requests": earlier.requests, "cost_usd": _money(earlier.cost_usd)},
            "cost_change_pct": _pct(change_pct(total.cost_usd, earlier.cost_usd)),
        }
    )


def _estimate(counts: dict[int, int], percentile: int) -> float | None:
    """A latency percentile estimated from a histogram, in ms to 0.1 (a finer figure would
    claim a precision the buckets do not have); None without requests."""
    value = quantile(counts, percentile / 100)
    return None if value is None else round(value, 1)


def _pct(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


async def trends(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    params = request.query_params
    period = _period(params.get("period"))
    name = params.get("by", "org")
    if name not in TOP_BY:
        raise InvalidInput(f"by must be one of {', '.join(TOP_BY)}")
    n = count_param(params.get("n"), "n", default=10, most=MAX_TOP)
    before, start, now = windows(period, datetime.fromtimestamp(ctx.clock(), UTC))
    by = (NAMES[name],)
    tenant = _tenant(access)  # org-scoped: its own org's groups only
    this = await asyncio.to_thread(
        cost_by, ctx.engine, SpendQuery(start, now, by=by, tenant=tenant)
    )
    prior = await asyncio.to_thread(
        cost_by, ctx.engine, SpendQuery(before, start, by=by, tenant=tenant)
    )
    was = {keys: cost for (_, keys), cost in prior.items()}
    now_cost = {keys: cost for (_, keys), cost in this.items()}
    names = await asyncio.to_thread(repo.org_names, ctx.engine)
    rows = []
    for keys in set(was) | set(now_cost):
        cost, earlier = now_cost.get(keys, Decimal(0)), was.get(keys, Decimal(0))
        value = keys[0] or None
        rows.append((-abs(cost - earlier), keys, {
            name: value, **({"org_name": names.get(keys[0])} if name == "org" else {}),
            "cost_usd": _money(cost), "previous_cost_usd": _money(earlier),
            "change_usd": _money(cost - earlier),
            "change_pct": _pct(change_pct(cost, earlier)),
        }))  # fmt: skip
    rows.sort(key=lambda item: item[:2])
    return JSONResponse(
        {
            "period": period,
            "since": start.isoformat(),
            "previous_since": before.isoformat(),
            "by": name,
            "data": [item for _, _, item in rows[:n]],
        }
    )


# ------------------------------------------------------------------ projection


async def projection(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    params = request.query_params
    org = access.org(params.get("org"))  # org-scoped: its own org, no other
    now = datetime.fromtimestamp(ctx.clock(), UTC)
    start, end = _month(params.get("month", f"{now:%Y-%m}"))
    if start > now:
        raise InvalidInput("month: a month that has not begun has nothing to project from")
    today = min(datetime(now.year, now.month, now.day, tzinfo=UTC), end)
    history_start = start - timedelta(days=SPREAD_DAYS)
    names = await asyncio.to_thread(repo.org_names, ctx.engine)
    filters = {} if org is None else {"org_id": repo.named(names, org)}
    q = SpendQuery(history_start, max(today, start + timedelta(hours=1)), by=("org_id",),
                   granularity="day", filters=filters, tenant=_tenant(access))  # fmt: skip
    costs = await asyncio.to_thread(cost_by, ctx.engine, q)
    per_org: dict[str, dict[str, Decimal]] = {}
    for (day, (org_id,)), amount in costs.items():
        per_org.setdefault(org_id, {})[day or ""] = amount
    days_in_month = (end - start).days
    complete = (today - start).days
    out: list[tuple[Decimal, str, dict[str, Any]]] = []
    for org_id, by_day in per_org.items():
        def cost(day: datetime, by_day: dict[str, Decimal] = by_day) -> Decimal:
            return by_day.get(f"{day:%Y-%m-%d}", Decimal(0))

        daily = [cost(start + timedelta(days=i)) for i in range(complete)]
        history = [cost(history_start + timedelta(days=i)) for i in range(SPREAD_DAYS)]
        p = project_month(daily, days_in_month, history=history)
        out.append((-p.projected, org_id, {
            "org": org_id, "org_name": names.get(org_id), "spent": _money(p.spent),
            "projected": _money(p.projected), "low": _money(p.low), "high": _money(p.high),
            "pace_per_day": _money(p.pace), "days_left": p.days_left,
        }))  # fmt: skip
    out.sort(key=lambda item: item[:2])
    return JSONResponse(
        {
            "month": f"{start:%Y-%m}",
            "complete_days": complete,
            "method": "spent + 7-day pace x days left; 90 % interval from the 14-day spread",
            "data": [item for _, _, item in out],
        }
    )


# ------------------------------------------------------------------ chargeback

_CSV_MEASURES = ("requests", "input_tokens", "output_tokens", "cost_usd")
_CSV_COLUMNS = (
    "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd",
    "ChargeCategory", "BillingCurrency", "BilledCost", "EffectiveCost", "ListCost",
    "ConsumedQuantity", "ConsumedUnit", "ServiceName", "SubAccountId", "SubAccountName",
    "x_ProjectId", "Tags", "x_Requests", "x_InputTokens", "x_OutputTokens",
)  # fmt: skip


def _month(raw: str | None) -> tuple[datetime, datetime]:
    """The month ``raw`` names (YYYY-MM) as [start, end); InvalidInput for anything else,
    and for a month whose start or end the ledger's day keys cannot spell (a year before
    1000 is not four digits; December 9999 ends in year 10000)."""
    text = (raw or "").strip()
    try:
        start = datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(f"month must be YYYY-MM, got {raw!r}") from None
    if not MIN_YEAR <= start.year or (start.year, start.month) == (9999, 12):
        raise InvalidInput(f"month must be from {MIN_YEAR}-01 to 9999-11, got {raw!r}")
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(
        month=start.month + 1
    )
    return start, end


def chargeback_rows(
    rows: list[SpendRow], by: str, names: dict[str, str], start: datetime, end: datetime
) -> list[list[str]]:
    """The CSV's data rows: cost billed as the ledger recorded it (no discounts: billed,
    effective and list cost are the same figure)."""
    out = []
    for row in rows:
        org = row.keys[0]
        project = row.keys[1] if by == "project" else ""
        tags = ""
        if by == "tag":
            tag_name, _, tag_value = row.keys[1].partition("=")
            tags = orjson.dumps({tag_name: tag_value}).decode()
        t = row.totals
        cost = _money(t.cost_usd)
        out.append([
            start.isoformat(), end.isoformat(), start.isoformat(), end.isoformat(), "Usage",
            "USD", cost, cost, cost, str(t.input_tokens + t.output_tokens), "Tokens",
            "LLM inference (costwarden)", org, names.get(org, ""), project, tags,
            str(t.requests), str(t.input_tokens), str(t.output_tokens),
        ])  # fmt: skip
    return out


async def chargeback(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    params = request.query_params
    org = access.org(params.get("org"))  # org-scoped: its own org's rows, no other
    start, end = _month(params.get("month"))
    by = params.get("by", "org")
    if by not in CHARGEBACK_BY:
        raise InvalidInput(f"by must be one of {', '.join(CHARGEBACK_BY)}")
    names = await asyncio.to_thread(repo.org_names, ctx.engine)
    filters = {} if org is None else {"org_id": repo.named(names, org)}
    q = SpendQuery(start, end, by=CHARGEBACK_BY[by], filters=filters, tenant=_tenant(access))

    async def body() -> AsyncIterator[str]:
        # The header line goes out at once; the rows when the month is summed.
        yield _csv_lines([_CSV_COLUMNS])
        rows = await asyncio.to_thread(spend, ctx.engine, q, measures=_CSV_MEASURES)
        rows.sort(key=lambda r: r.keys)
        yield _csv_lines(chargeback_rows(rows, by, names, start, end))

    filename = f"chargeback-{start:%Y-%m}-{by}.csv"
    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


def _csv_lines(rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()
