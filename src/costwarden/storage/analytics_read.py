"""Analytics reads: a :class:`~costwarden.analytics.query.SpendQuery` answered from the
rollups and, for what they do not hold yet, the raw ledger (``analytics.query.plan``).

Every part is summed by the database, money with ``money_sum`` (exact on both dialects), and
the parts are added in Python: the answer equals what the raw ledger's rows add up to.

:func:`latency_histogram` reads the latency histograms over the same plan: the requests per
latency bucket of a window, equal to bucketing the raw rows' latencies one by one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from costwarden.analytics.latency import merge
from costwarden.analytics.query import DAY, Plan, SpendQuery, plan, uses_tags
from costwarden.analytics.rollup import HOUR, MEASURES, Totals, day_of, tag_rollup
from costwarden.storage.db import Bind, connect_read, money_sum
from costwarden.storage.rollups import LATENCY_BUCKET, RAW_DIMS, RAW_SUMS, watermark
from costwarden.storage.schema import (
    ledger,
    rollup_daily,
    rollup_hourly,
    rollup_latency_daily,
    rollup_latency_hourly,
    rollup_slices_daily,
    rollup_tags_daily,
    rollup_tags_hourly,
)

_c = ledger.c
_MONEY = frozenset({"cost_usd", "cache_savings_usd"})
Key = tuple[str | None, tuple[str, ...]]  # (bucket, the group's values)


@dataclasses.dataclass(frozen=True, slots=True)
class SpendRow:
    """One group of an answer: its bucket (an ISO hour or a day; None without granularity),
    its values of the query's ``by`` dimensions, and its totals."""

    bucket: str | None
    keys: tuple[str, ...]
    totals: Totals


def rolled_until(conn: Connection) -> datetime | None:
    """The start of the hour the rollup's watermark is in (everything before it is rolled)."""
    mark = watermark(conn)
    if mark is None:
        return None
    return datetime.fromtimestamp(mark / 1000, UTC).replace(minute=0, second=0, microsecond=0)


def spend(bind: Bind, q: SpendQuery) -> list[SpendRow]:
    """The totals ``q`` asks for, newest bucket last, the costliest group first within one."""
    acc: dict[Key, Totals] = {}
    with connect_read(bind) as conn:
        parts = plan(q, rolled_until(conn))
        _add(acc, _rolled(conn, q, parts))
        if parts.raw is not None:
            _add(acc, _raw(conn, q, *parts.raw))
    rows = [SpendRow(bucket, keys, totals) for (bucket, keys), totals in acc.items()]
    rows.sort(key=lambda r: (r.bucket or "", -r.totals.cost_usd, r.keys))
    return rows


def _add(acc: dict[Key, Totals], found: Iterable[tuple[Key, Totals]]) -> None:
    for key, totals in found:
        if not totals.requests:
            continue  # an ungrouped aggregate over no rows
        have = acc.get(key)
        if have is None:
            acc[key] = have = Totals()
        have.add(totals)


def _sums(table: sa.Table) -> list[sa.ColumnElement[Any]]:
    return [
        (money_sum(table.c[m]) if m in _MONEY else sa.func.sum(table.c[m])).label(m)
        for m in MEASURES
    ]


def _filtered(stmt: Any, columns: dict[str, Any], q: SpendQuery) -> Any:
    for name, value in q.filters.items():
        stmt = stmt.where(columns[name] == value)
    if q.tenant is not None:
        stmt = stmt.where(columns["org_id"] == q.tenant)
    return stmt


def _bucket(q: SpendQuery, when: datetime | str) -> str | None:
    if q.granularity is None:
        return None
    if isinstance(when, str):  # a day
        return when
    return when.isoformat() if q.granularity == "hour" else day_of(when)


def slice_for(q: SpendQuery) -> tuple[str, str | None] | None:
    """The daily slice that holds what ``q`` groups and filters by, and the dimension its
    ``value`` column is (None: the full daily rows are needed)."""
    named = set(q.by) | set(q.filters)
    other = named - {"org_id"}
    per_org = "org_id" in named or q.tenant is not None
    if len(other) > 1:
        return None
    if not other:
        return ("org" if per_org else "total"), None
    (dim,) = other
    return (dim if per_org else f"all:{dim}"), dim


def _from_slice(
    conn: Connection, q: SpendQuery, days: tuple[str, ...], name: str, dim: str | None
) -> list[tuple[Key, Totals]]:
    t = rollup_slices_daily.c
    columns = {"org_id": t.org_id, **({dim: t.value} if dim else {})}
    cols = [columns[k] for k in q.by]
    group = [t.day, *cols] if q.granularity else cols
    stmt = sa.select(*group, *_sums(rollup_slices_daily)).where(
        t.slice == name, t.day.in_(days)
    )
    stmt = _filtered(stmt, columns, q)
    stmt = stmt.group_by(*group) if group else stmt
    out = []
    for row in conn.execute(stmt):
        at = row[0] if q.granularity else None
        keys = tuple(row[1 : 1 + len(cols)] if q.granularity else row[: len(cols)])
        out.append(((at, keys), Totals.of(row._mapping)))
    return out


def _runs(hours: tuple[datetime, ...]) -> list[tuple[datetime, datetime]]:
    """Contiguous runs of hours as [start, end) ranges."""
    runs: list[tuple[datetime, datetime]] = []
    for hour in hours:
        if runs and runs[-1][1] == hour:
            runs[-1] = (runs[-1][0], hour + HOUR)
        else:
            runs.append((hour, hour + HOUR))
    return runs


def _rolled(conn: Connection, q: SpendQuery, parts: Plan) -> list[tuple[Key, Totals]]:
    tags = uses_tags(q)
    daily, hourly = (
        (rollup_tags_daily, rollup_tags_hourly) if tags else (rollup_daily, rollup_hourly)
    )
    out: list[tuple[Key, Totals]] = []
    picked = None if tags else slice_for(q)
    if parts.days and picked is not None:
        out.extend(_from_slice(conn, q, parts.days, *picked))
    elif parts.days:
        cols = [daily.c[k] for k in q.by]
        group = [daily.c.day, *cols] if q.granularity else cols
        stmt = sa.select(*group, *_sums(daily)).where(daily.c.day.in_(parts.days))
        stmt = _filtered(stmt, dict(daily.c), q).group_by(*group)
        for row in conn.execute(stmt):
            at = row[0] if q.granularity else None
            keys = tuple(row[1 : 1 + len(cols)] if q.granularity else row[: len(cols)])
            out.append(((at, keys), Totals.of(row._mapping)))
    for start, end in _runs(parts.hours):
        cols = [hourly.c[k] for k in q.by]
        group = [hourly.c.hour, *cols] if q.granularity else cols
        stmt = sa.select(*group, *_sums(hourly))
        stmt = stmt.where(hourly.c.hour >= start, hourly.c.hour < end)
        stmt = _filtered(stmt, dict(hourly.c), q).group_by(*group)
        for row in conn.execute(stmt):
            at = _bucket(q, row[0]) if q.granularity else None
            keys = tuple(row[1 : 1 + len(cols)] if q.granularity else row[: len(cols)])
            out.append(((at, keys), Totals.of(row._mapping)))
    return out


def _raw(
    conn: Connection, q: SpendQuery, start: datetime, end: datetime
) -> list[tuple[Key, Totals]]:
    """The ledger's rows in [start, end), per bucket if the query has a granularity (one
    query per bucket: this part is normally the last hour or two)."""
    step = {"hour": HOUR, "day": DAY}.get(q.granularity or "", end - start)
    out: list[tuple[Key, Totals]] = []
    at = start
    while at < end:
        stop = min(end, _next(at, step))
        bucket = _bucket(q, at)
        if uses_tags(q):
            out.extend(((bucket, k), t) for k, t in _raw_tags(conn, q, at, stop))
        else:
            cols = [RAW_DIMS[k] for k in q.by]
            stmt = sa.select(*cols, *RAW_SUMS).where(_c.ts >= at, _c.ts < stop)
            stmt = _filtered(stmt, RAW_DIMS, q).group_by(*cols)
            for row in conn.execute(stmt):
                out.append(((bucket, tuple(row[: len(cols)])), Totals.of(row._mapping)))
        at = stop
    return out


def _next(at: datetime, step: timedelta) -> datetime:
    """The next bucket boundary after ``at`` (a bucket starts on a whole hour or day)."""
    if step == DAY:
        return at.replace(hour=0) + DAY
    if step == HOUR:
        return at + HOUR
    return at + step


def _raw_tags(
    conn: Connection, q: SpendQuery, start: datetime, end: datetime
) -> list[tuple[tuple[str, ...], Totals]]:
    stmt = sa.select(
        _c.org_id, _c.tags, _c.input_tokens, _c.cached_input_tokens, _c.cache_write_tokens,
        _c.output_tokens, _c.reasoning_tokens, _c.cost_usd, _c.latency_ms, _c.ttft_ms,
    ).where(_c.ts >= start, _c.ts < end, _c.tags != "{}")  # fmt: skip
    if q.tenant is not None:
        stmt = stmt.where(_c.org_id == q.tenant)
    if "org_id" in q.filters:
        stmt = stmt.where(_c.org_id == q.filters["org_id"])
    found: dict[tuple[str, ...], Totals] = {}
    for (org, tag), totals in tag_rollup(conn.execute(stmt).mappings()).items():
        if "tag" in q.filters and tag != q.filters["tag"]:
            continue
        values = {"org_id": org, "tag": tag}
        key = tuple(values[k] for k in q.by)
        found.setdefault(key, Totals()).add(totals)
    return list(found.items())


# ------------------------------------------------------------------ latency histograms


def latency_histogram(
    bind: Bind, since: datetime, until: datetime, tenant: str | None = None
) -> dict[int, int]:
    """Requests per latency bucket in [since, until) (``since`` a whole UTC hour), of one
    org (``tenant``) or every org (None): whole days from the daily histograms, hours from
    the hourly ones, the rest (the hour the watermark is in, and after) bucketed from the
    raw rows by the same SQL expression as the rollup's."""
    q = SpendQuery(since, until, tenant=tenant)
    daily, hourly = rollup_latency_daily, rollup_latency_hourly
    parts: list[dict[int, int]] = []
    with connect_read(bind) as conn:
        where = plan(q, rolled_until(conn))
        if where.days:
            parts.append(_rolled_latency(conn, daily, daily.c.day.in_(where.days), tenant))
        for start, end in _runs(where.hours):
            during = sa.and_(hourly.c.hour >= start, hourly.c.hour < end)
            parts.append(_rolled_latency(conn, hourly, during, tenant))
        if where.raw is not None:
            parts.append(_raw_latency(conn, *where.raw, tenant))
    return merge(parts)


def _rolled_latency(
    conn: Connection, table: sa.Table, during: sa.ColumnElement[bool], tenant: str | None
) -> dict[int, int]:
    t = table.c
    stmt = sa.select(t.bucket, sa.func.sum(t.requests)).where(during).group_by(t.bucket)
    if tenant is not None:
        stmt = stmt.where(t.org_id == tenant)
    return {int(b): int(n) for b, n in conn.execute(stmt)}


def _raw_latency(
    conn: Connection, start: datetime, end: datetime, tenant: str | None
) -> dict[int, int]:
    rows = sa.select(LATENCY_BUCKET.label("bucket")).where(_c.ts >= start, _c.ts < end)
    if tenant is not None:
        rows = rows.where(_c.org_id == tenant)
    inner = rows.subquery()
    stmt = sa.select(inner.c.bucket, sa.func.count()).group_by(inner.c.bucket)
    return {int(b): int(n) for b, n in conn.execute(stmt)}
