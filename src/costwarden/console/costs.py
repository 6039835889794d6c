"""The cost analytics page, ``GET /dashboard/costs``, and its CSV, ``GET /dashboard/costs.csv``.

The page shows the last 30 UTC days (today included): a chart of the cost of each day (a
point per day, days without requests at $0), the cost of today, the average cost per request,
the response cache's hit rate (hits over the requests answered, ``analytics.overview``), its
hits and what they saved (``saved_usd``), the ten costliest groups, and the cost per model
(a table and a bar chart). Every figure is an exact Decimal summed from the rollups and the
raw ledger past their watermark (``storage.analytics_read``), so it equals the ledger.

Who sees what: a platform-wide visitor (platform_admin, a platform viewer) sees every org's
figures and the ten costliest orgs; an org-scoped visitor (org_admin, an org's viewer) sees
its own org's figures only, and its ten costliest projects instead of the orgs. The CSV (one
row per day of the same 30 days) is scoped the same way.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from costwarden.analytics.overview import CacheCounts, hit_rate
from costwarden.analytics.query import SpendQuery
from costwarden.analytics.rollup import day_of
from costwarden.console.auth import Visitor, visitor
from costwarden.console.context import console
from costwarden.console.render import page
from costwarden.storage import repo
from costwarden.storage.analytics_read import SpendRow, spend
from costwarden.storage.analytics_top import top as top_spend

DAYS = 30
TOP = 10
_ZERO = Decimal(0)
_DAILY_MEASURES = ("requests", "cost_usd", "saved_usd")
_MODEL_MEASURES = ("requests", "cost_usd", "input_tokens", "output_tokens")
CSV_COLUMNS = ("day", "requests", "cost_usd", "saved_usd", "cache_hits", "cache_hit_rate")


@dataclasses.dataclass(slots=True)
class Day:
    """One UTC day's figures."""

    day: str
    requests: int = 0
    cost: Decimal = _ZERO
    saved: Decimal = _ZERO
    cache: CacheCounts = dataclasses.field(default_factory=CacheCounts)


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """One row of a ranking table (an org, a project or a model)."""

    key: str
    label: str
    requests: int
    cost: Decimal
    share: Decimal | None  # percent of the period's cost, one decimal


def day_names(now: datetime, days: int = DAYS) -> list[str]:
    """The ``days`` UTC days ending with ``now``'s, oldest first (``YYYY-MM-DD``)."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return [day_of(today - timedelta(days=days - 1 - i)) for i in range(days)]


def daily(rows: Iterable[SpendRow], days: list[str]) -> list[Day]:
    """One :class:`Day` per name of ``days`` (zero days included) from rows grouped by day
    and status; rows of other days are left out."""
    out = {name: Day(name) for name in days}
    for row in rows:
        found = out.get(row.bucket or "")
        if found is None:
            continue
        found.requests += row.totals.requests
        found.cost += row.totals.cost_usd
        found.saved += row.totals.saved_usd
        found.cache.count(row.keys[0] if row.keys else "", row.totals.requests)
    return [out[name] for name in days]


def average(cost: Decimal, requests: int) -> Decimal | None:
    """The mean cost of a request, to the nano-dollar; None without requests."""
    if not requests:
        return None
    return (cost / requests).quantize(Decimal("0.000000001"))


def share(part: Decimal, whole: Decimal) -> Decimal | None:
    """``part`` in percent of ``whole``, one decimal; None when ``whole`` is zero."""
    if not whole:
        return None
    return (part * 100 / whole).quantize(Decimal("0.1"))


def groups(rows: Iterable[SpendRow], labels: dict[str, str], total: Decimal) -> list[Group]:
    """Ranking rows of a one-dimension answer: costliest first, labelled by ``labels`` (the
    key itself when unlabelled; ``(none)`` for a missing value)."""
    out = [
        Group(
            row.keys[0],
            labels.get(row.keys[0]) or row.keys[0] or "(none)",
            row.totals.requests,
            row.totals.cost_usd,
            share(row.totals.cost_usd, total),
        )
        for row in rows
    ]
    out.sort(key=lambda g: (-g.cost, g.label))
    return out


def money_text(value: Decimal) -> str:
    """Exact decimal text (no exponent, no trailing zeros): what charts and CSVs carry."""
    return format(value.normalize(), "f") if value else "0"


def daily_chart(days: list[Day]) -> dict[str, Any]:
    """The chart spec (dashboard.js) of the daily cost: exact decimal strings (Chart.js
    reads numeric strings)."""
    return {
        "type": "line",
        "labels": [d.day for d in days],
        "datasets": [{"label": "Cost (USD)", "data": [money_text(d.cost) for d in days]}],
        "yTitle": "USD",
    }


def model_chart(models: list[Group]) -> dict[str, Any]:
    """A bar chart of the cost per model."""
    return {
        "type": "bar",
        "labels": [g.label for g in models],
        "datasets": [{"label": "Cost (USD)", "data": [money_text(g.cost) for g in models]}],
        "yTitle": "USD",
    }


def csv_text(days: list[Day]) -> str:
    """The CSV of the daily rows: exact amounts, the hit rate as a fraction (empty when no
    request was answered)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for d in days:
        rate = hit_rate(d.cache)
        writer.writerow([
            d.day, d.requests, money_text(d.cost), money_text(d.saved), d.cache.hits,
            "" if rate is None else str(rate),
        ])  # fmt: skip
    return buffer.getvalue()


def _window(request: Request) -> tuple[datetime, datetime, list[str]]:
    now = datetime.fromtimestamp(console(request).admin.clock(), UTC)
    days = day_names(now)
    return datetime.strptime(days[0], "%Y-%m-%d").replace(tzinfo=UTC), now, days


async def _daily(request: Request, who: Visitor) -> list[Day]:
    """The 30 days' figures ``who`` may see (every org's, or its own org's)."""
    start, now, days = _window(request)
    q = SpendQuery(
        start, now, by=("status",), granularity="day", tenant=who.access.principal.org_id
    )
    engine = console(request).admin.engine
    rows = await asyncio.to_thread(spend, engine, q, measures=_DAILY_MEASURES)
    return daily(rows, days)


async def costs(request: Request) -> Response:
    who = await visitor(request)
    ctx = console(request).admin
    access = who.access
    tenant = access.principal.org_id
    start, now, _ = _window(request)
    # Org-scoped: its own org's projects rank (other orgs' figures are not its to see).
    ranked_by = "project_id" if tenant is not None else "org_id"
    series, top_rows, model_rows, labels = await asyncio.gather(
        _daily(request, who),
        asyncio.to_thread(
            top_spend, ctx.engine, SpendQuery(start, now, by=(ranked_by,), tenant=tenant), TOP
        ),
        asyncio.to_thread(
            spend, ctx.engine, SpendQuery(start, now, by=("model",), tenant=tenant),
            measures=_MODEL_MEASURES,
        ),
        asyncio.to_thread(_labels, ctx.engine, access.org_name),
    )  # fmt: skip
    cost = sum((d.cost for d in series), _ZERO)
    requests = sum(d.requests for d in series)
    cache = CacheCounts()
    for d in series:
        cache.add(d.cache)
    rate = hit_rate(cache)
    models = groups(model_rows, {}, cost)
    return page(
        request,
        who,
        "costs.html",
        title="Cost analytics",
        since=start,
        days=series,
        cost=cost,
        requests=requests,
        today=series[-1],
        average=average(cost, requests),
        hits=cache.hits,
        answered=cache.answered,
        hit_rate=None if rate is None else (rate * 100).quantize(Decimal("0.01")),
        saved=sum((d.saved for d in series), _ZERO),
        ranked_by="project" if tenant is not None else "org",
        top=groups(top_rows, labels, cost),
        models=models,
        daily_chart=daily_chart(series),
        model_chart=model_chart(models),
        exact=money_text,
    )


def _labels(engine: Any, org_name: str | None) -> dict[str, str]:
    """Names of what the ranking shows: every org's (platform-wide), or the projects of
    ``org_name`` (from its keys)."""
    if org_name is None:
        return repo.org_names(engine)
    return {
        k.project_id: k.project_name
        for k in repo.list_keys(engine, org_name)
        if k.project_id and k.project_name
    }


async def costs_csv(request: Request) -> Response:
    who = await visitor(request)
    series = await _daily(request, who)
    scope = re.sub(r"[^A-Za-z0-9._-]+", "-", who.access.org_name or "all-orgs")
    filename = f"costs-{series[0].day}-to-{series[-1].day}-{scope}.csv"
    return Response(
        csv_text(series),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="{filename}"',
            "cache-control": "no-store",
            "x-content-type-options": "nosniff",
        },
    )


ROUTES = (
    Route("/costs", costs, methods=["GET"]),
    Route("/costs.csv", costs_csv, methods=["GET"]),
)
