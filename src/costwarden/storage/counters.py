"""Ledger aggregates that (re)build budget and rate-limit counters.

When a counter is missing (a fresh Redis, a new limit, a window that just started being
tracked) it is rebuilt from the ledger: what each scope instance spent since the window
started. These functions compute that, read-only, in worker threads; they are never called
on the request path.

Counters count in the units of :mod:`costwarden.budgets.limits`: USD in nano-dollars with
each request's cost rounded *up* to a whole nano-dollar (``ceil(cost_usd * 1e9)``, which is
what the request path adds per request), tokens as input plus output tokens, and requests.
Sums are exact on both backends: :func:`~costwarden.storage.db.nanos_sum` in SQL for totals,
Decimal arithmetic in Python for buckets.

Only *admitted* requests count (:data:`ADMITTED_STATUSES`): those that passed the limits,
whatever happened upstream afterwards. Refused requests (``blocked``, ``client_error``,
``auth_error``) never consumed budget. Nor did a response-cache hit (``cached``): it is
answered without a reservation and charged to no budget (no dollars, tokens or request), so
a counter rebuilt from the ledger leaves it out too, or a rebuild would count requests the
counters settled request by request never had.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from costwarden.budgets.limits import SCOPES
from costwarden.budgets.ports import Buckets, Totals
from costwarden.core.errors import InvalidInput
from costwarden.core.money import usd_to_nanos
from costwarden.storage.db import Bind, connect_read, nanos_sum
from costwarden.storage.schema import ledger
from costwarden.storage.sqltypes import ensure_utc

logger = logging.getLogger(__name__)

# Not "cached": a response-cache hit is charged to no budget (see the module docstring).
ADMITTED_STATUSES = ("success", "upstream_error", "cancelled", "gateway_error")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The ledger column holding each org-level scope's subject (org and tag are special).
_SUBJECT_COLUMNS: dict[str, sa.Column[Any]] = {
    "org": ledger.c.org_id,
    "project": ledger.c.project_id,
    "key": ledger.c.key_id,
    "user": ledger.c.end_user,
    "session": ledger.c.session_id,
    "tag": ledger.c.tags,
}


def _filters(scope: str, since: datetime | None, org_id: str | None) -> list[Any]:
    if scope not in SCOPES:
        raise InvalidInput(f"unknown scope {scope!r} (known: {', '.join(SCOPES)})")
    conditions: list[Any] = [ledger.c.status.in_(ADMITTED_STATUSES)]
    if since is not None:
        conditions.append(ledger.c.ts >= ensure_utc(since, "since"))
    if org_id is not None:
        conditions.append(ledger.c.org_id == org_id)
    if scope != "platform":
        conditions.append(ledger.c.org_id.is_not(None))
        column = _SUBJECT_COLUMNS[scope]
        conditions.append(column.is_not(None))
        if scope == "tag":
            conditions.append(column != "{}")
    return conditions


def _tag_subjects(text: str | None, cache: dict[str, list[str]]) -> list[str]:
    """``["name=value", ...]`` for a row's tags JSON (parsed once per distinct text)."""
    if not text:
        return []
    found = cache.get(text)
    if found is None:
        try:
            tags = orjson.loads(text)
        except orjson.JSONDecodeError:
            logger.warning("ledger row with unreadable tags %.60r; its tags are not counted", text)
            tags = {}
        found = (
            [f"{k}={v}" for k, v in tags.items() if isinstance(v, str)]
            if isinstance(tags, dict)
            else []
        )
        cache[text] = found
    return found


def _subjects(scope: str, org_id: str | None, dim: Any, cache: dict[str, list[str]]) -> list[str]:
    if scope == "platform":
        return [""]
    if scope == "org":
        return [org_id or ""]
    if scope == "tag":
        return _tag_subjects(dim, cache)
    return [str(dim)]


def _add(
    into: dict[Any, tuple[int, int, int]], key: Any, nanos: int, tokens: int, requests: int
) -> None:
    old = into.get(key)
    if old is None:
        into[key] = (nanos, tokens, requests)
    else:
        into[key] = (old[0] + nanos, old[1] + tokens, old[2] + requests)


def ledger_totals(
    engine: Bind,
    *,
    scope: str,
    since: datetime | None,
    org_id: str | None = None,
    holder: str | None = None,
) -> Totals:
    """What each instance of ``scope`` consumed since ``since`` (all time when None).

    Maps ``(org_id, subject)`` -> ``(usd_nanos, tokens, requests)`` over admitted ledger rows
    with ``ts >= since``, only org ``org_id``'s if given. The platform's key is ``("", "")``;
    an org's is ``(org_id, org_id)``; a tag's subject is ``name=value`` (a row with several
    tags counts toward each). Rows without the scope's subject (no project, no end user...)
    are left out. Instances with no rows are absent. ``holder``: only the rows admitted
    against that slice lease's slices (``ledger.slice_holder``).
    """
    conditions = _filters(scope, since, org_id)
    if holder is not None:
        conditions.append(ledger.c.slice_holder == holder)
    tokens = ledger.c.input_tokens + ledger.c.output_tokens
    measures = (
        sa.func.coalesce(nanos_sum(ledger.c.cost_usd), 0).label("nanos"),
        sa.func.coalesce(sa.func.sum(tokens), 0).label("tokens"),
        sa.func.count().label("requests"),
    )
    if scope == "platform":
        stmt = sa.select(*measures).where(*conditions)
    else:
        dim = _SUBJECT_COLUMNS[scope]
        stmt = (
            sa.select(ledger.c.org_id, dim.label("dim"), *measures)
            .where(*conditions)
            .group_by(ledger.c.org_id, dim)
        )
    with connect_read(engine) as conn:
        rows = conn.execute(stmt).all()
    out: Totals = {}
    cache: dict[str, list[str]] = {}
    for row in rows:
        requests = int(row.requests)
        if not requests:
            continue  # the platform's aggregate over no rows
        row_org = "" if scope == "platform" else row.org_id
        dim_value = None if scope == "platform" else row.dim
        for subject in _subjects(scope, row_org, dim_value, cache):
            _add(out, (row_org, subject), int(row.nanos), int(row.tokens), requests)
    return out


def ledger_buckets(
    engine: Bind,
    *,
    scope: str,
    since: datetime,
    bucket_seconds: int,
    org_id: str | None = None,
) -> Buckets:
    """Like :func:`ledger_totals`, split into time buckets for rolling windows.

    Maps ``(org_id, subject)`` -> ``{bucket: (usd_nanos, tokens, requests)}`` where ``bucket``
    is ``floor(epoch seconds of ts / bucket_seconds)``. Meant for short spans (``since`` at
    most about a day ago): the rows are fetched and bucketed here.
    """
    if isinstance(bucket_seconds, bool) or not isinstance(bucket_seconds, int):
        raise InvalidInput("bucket_seconds must be an integer")
    if bucket_seconds <= 0:
        raise InvalidInput("bucket_seconds must be positive")
    conditions = _filters(scope, since, org_id)
    dim = sa.null() if scope == "platform" else _SUBJECT_COLUMNS[scope]
    stmt = sa.select(
        ledger.c.ts,
        ledger.c.org_id,
        dim.label("dim"),
        ledger.c.cost_usd,
        (ledger.c.input_tokens + ledger.c.output_tokens).label("tokens"),
    ).where(*conditions)
    width = timedelta(seconds=bucket_seconds)
    out: Buckets = {}
    cache: dict[str, list[str]] = {}
    with connect_read(engine) as conn:
        rows: Iterable[Any] = conn.execute(stmt)
        for row in rows:
            bucket = (row.ts - _EPOCH) // width  # exact integer arithmetic on timedeltas
            nanos = usd_to_nanos(row.cost_usd)
            tokens = int(row.tokens)
            row_org = "" if scope == "platform" else row.org_id
            for subject in _subjects(scope, row_org, row.dim, cache):
                _add(out.setdefault((row_org, subject), {}), bucket, nanos, tokens, 1)
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerAggregates:
    """:func:`ledger_totals` and :func:`ledger_buckets` on one engine, as the budgets package
    takes them (:class:`~costwarden.budgets.ports.LedgerSums`): the domain does not import
    storage."""

    engine: Bind

    def totals(
        self,
        *,
        scope: str,
        since: datetime | None,
        org_id: str | None,
        holder: str | None = None,
    ) -> Totals:
        return ledger_totals(
            self.engine, scope=scope, since=since, org_id=org_id, holder=holder
        )

    def buckets(
        self, *, scope: str, since: datetime, bucket_seconds: int, org_id: str | None
    ) -> Buckets:
        return ledger_buckets(
            self.engine, scope=scope, since=since, bucket_seconds=bucket_seconds, org_id=org_id
        )
