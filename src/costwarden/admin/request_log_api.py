"""Admin API handlers for the request log: search the ledger's records, a page at a time,
and read one request's record.

- ``GET /admin/analytics/requests?since=&until=`` with filters (``org`` by name;
  ``project``, ``key``, ``user``, ``session``, ``provider``, ``model``, ``status`` as
  stored), a cost range (``min_cost``, ``max_cost``, USD), ``limit`` (1 to 500, default 50)
  and ``cursor`` (the ``next_cursor`` of the previous page of the same query): newest first.
- ``GET /admin/analytics/requests/{request_id}``: one record.

Who may (``admin.access``): an org-scoped principal (an org_admin, or a viewer bound to an
org) searches its own org's records only (its org is the query's ``tenant``, whatever
filters it sends; naming another org in ``?org=`` is a 403), and reads one record of its
own org: another org's request id is a 403, an unknown one a 404.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from costwarden.admin.access import authenticate
from costwarden.admin.common import count_param
from costwarden.admin.context import context
from costwarden.analytics.query import (
    MAX_RANGE,
    cursor_digest,
    make_cursor,
    parse_when,
    read_cursor,
)
from costwarden.core.errors import InvalidInput, NotFound
from costwarden.core.records import LedgerRecord
from costwarden.storage import repo
from costwarden.storage.request_log import LogQuery, find, search

# A cost bound in USD: what the OpenAPI document's pattern says too.
COST = r"^[0-9]{1,9}(?:\.[0-9]{1,12})?$"
_COST = re.compile(COST)
LOG_FILTERS = {
    "project": "project_id", "key": "key_id", "user": "end_user", "session": "session_id",
    "provider": "provider", "model": "model", "status": "status",
}  # fmt: skip
MAX_PAGE = 500


def record_json(r: LedgerRecord) -> dict[str, Any]:
    out = dataclasses.asdict(r)
    out["ts"] = r.ts.isoformat()
    out["cost_usd"] = format(r.cost_usd, "f")
    # A response-cache hit's saving (status "cached"; "0..." on any other row), as exact
    # as the cost. route_reason is the row's text as is.
    out["saved_usd"] = format(r.saved_usd, "f")
    return out


def _cost(raw: str | None, what: str) -> Decimal | None:
    if raw is None:
        return None
    if not _COST.match(raw):
        raise InvalidInput(f"{what}: a USD amount like 0.05, got {raw!r}")
    return Decimal(raw)


async def search_requests(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    params = request.query_params
    org = access.org(params.get("org"))  # org-scoped: its own org, no other
    now = datetime.fromtimestamp(ctx.clock(), UTC)
    since = parse_when(params.get("since", "24h"), now, what="since")
    until = now if "until" not in params else parse_when(params["until"], now, what="until")
    if until <= since:
        raise InvalidInput("'until' must be after 'since'")
    if until - since > MAX_RANGE:
        raise InvalidInput(f"a range is at most {MAX_RANGE.days} days")
    filters = {column: params[name] for name, column in LOG_FILTERS.items() if name in params}
    if org is not None:
        names = await asyncio.to_thread(repo.org_names, ctx.engine)
        filters["org_id"] = repo.named(names, org)
    low, high = _cost(params.get("min_cost"), "min_cost"), _cost(params.get("max_cost"), "max_cost")
    if low is not None and high is not None and low > high:
        raise InvalidInput("min_cost must not be above max_cost")
    limit = count_param(params.get("limit"), "limit", default=50, most=MAX_PAGE)
    # A platform-wide principal sees every org (tenant None); an org-scoped one its own.
    q = LogQuery(since, until, filters, low, high, tenant=access.principal.org_id)
    # The query as asked (a relative "24h" or an open "until" stay the same query from page
    # to page: the cursor's position, not the clock, bounds the next page).
    digest = cursor_digest(
        {**filters, "since": params.get("since", "24h"), "until": params.get("until", ""),
         "min": low, "max": high, "tenant": q.tenant}
    )  # fmt: skip
    cursor = params.get("cursor")
    after = None if cursor is None else read_cursor(cursor, digest)
    records = await asyncio.to_thread(search, ctx.engine, q, limit=limit, after=after)
    last = records[-1] if len(records) == limit else None
    return JSONResponse(
        {
            "data": [record_json(r) for r in records],
            "next_cursor": None if last is None else make_cursor(last.ts, last.request_id, digest),
        }
    )


async def get_request(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    request_id = request.path_params["request_id"]
    record = await asyncio.to_thread(find, ctx.engine, request_id)
    if record is None:
        raise NotFound(f"no request {request_id!r} in the ledger")
    access.read_org_id(record.org_id)  # another org's record: 403
    return JSONResponse(record_json(record))
