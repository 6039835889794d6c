"""Analytics reads: a :class:`~costwarden.analytics.query.SpendQuery` answered from the
rollups and, for what they do not hold yet, the raw ledger (``analytics.query.plan``).

Every part is summed by the database, money with ``money_sum`` (exact on both dialects), and
the parts are added in Python: the answer equals what the raw ledger's rows add up to.

:func:`latency_histogram` reads the latency histograms over the same plan: the requests per
latency bucket of a window, equal to bucketing the raw rows' latencies one by one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from costwarden.analytics.latency import merge
from costwarden.analytics.overview import CacheCounts
from costwarden.analytics.query import DAY, Plan, SpendQuery, plan, uses_tags
from costwarden.analytics.rollup import (
    HOUR,
    MEASURES,
    MONEY_MEASURES,
    Totals,
    day_of,
    tag_rollup,
)
from costwarden.storage.db import Bind, connect_read, money_sum
from costwarden.storage.rollups import EVERY_ORG, LATENCY_BUCKET, RAW_DIMS, RAW_SUMS, watermark
from costwarden.storage.schema import (
    ledger,
    rollup_daily,
    rollup_hourly,
    rollup_latency_daily,
    rollup_latency_hourly,
    rollup_slices_daily,
    rollup_slices_hourly,
    rollup_tags_daily,
    rollup_tags_hourly,
)

_c = ledger.c
_ZERO = Decimal(0)
Key = tuple[str | None, tuple[str, ...]]  # (bucket, the group's values)
_Part = tuple[Key, Mapping[Any, Any]]  # a group of one part of an answer, and its sums


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


def spend(
    bind: Bind,
    q: SpendQuery,
    *,
    among: tuple[str, Collection[str]] | None = None,
    measures: Collection[str] = MEASURES,
) -> list[SpendRow]:
    """The totals ``q`` asks for, newest bucket last, the costliest group first within one;
    ``among`` (a dimension and values) keeps only the rows with one of those values.
    ``measures`` names the sums wanted (fewer is faster); the others may be left 0."""
    acc: dict[Key, Totals] = {}
    wanted = frozenset(measures) | {"requests", "cost_usd"}  # what every caller sorts by
    reading = Reading(
        lambda table: _sums(table, wanted),
        [column for column in RAW_SUMS if column.name in wanted],
        among,
    )
    with connect_read(bind) as conn:
        for key, values in read_parts(conn, q, reading):
            totals = Totals.of(values)
            if not totals.requests:
                continue  # an ungrouped aggregate over no rows
            have = acc.get(key)
            if have is None:
                acc[key] = have = Totals()
            have.add(totals)
    rows = [SpendRow(bucket, keys, totals) for (bucket, keys), totals in acc.items()]
    rows.sort(key=lambda r: (r.bucket or "", -r.totals.cost_usd, r.keys))
    return rows


def requests_by(bind: Bind, q: SpendQuery) -> dict[Key, int]:
    """The requests of each group of ``q`` that has any (counts only: cheaper than
    :func:`spend` where money is summed exactly in Python, on SQLite); not for tags."""
    _no_tags(q)
    reading = Reading(
        lambda table: [sa.func.sum(table.c.requests).label("requests")],
        [sa.func.count().label("requests")],
    )
    out: dict[Key, int] = {}
    with connect_read(bind) as conn:
        for key, sums in read_parts(conn, q, reading):
            if sums["requests"]:
                out[key] = out.get(key, 0) + int(sums["requests"])
    return out


def cost_by(bind: Bind, q: SpendQuery) -> dict[Key, Decimal]:
    """The exact cost of each group of ``q`` that has requests (one sum a row: what trends
    and projections need, without :func:`spend`'s every measure); not for tags."""
    _no_tags(q)
    reading = Reading(
        lambda table: [
            sa.func.sum(table.c.requests).label("requests"),
            money_sum(table.c.cost_usd).label("cost"),
        ],
        [sa.func.count().label("requests"), money_sum(_c.cost_usd).label("cost")],
    )
    out: dict[Key, Decimal] = {}
    with connect_read(bind) as conn:
        for key, sums in read_parts(conn, q, reading):
            if sums["requests"]:
                out[key] = out.get(key, _ZERO) + Decimal(sums["cost"])
    return out


def cache_counts(
    bind: Bind, q: SpendQuery, *, among: tuple[str, Collection[str]] | None = None
) -> dict[Key, CacheCounts]:
    """The response cache's counts of each group of ``q`` that has requests: its hits
    (requests of status ``cached``) and the requests answered (``success`` or ``cached``),
    read as ``q`` grouped by status as well (counts only, as :func:`requests_by`); ``among``
    as :func:`spend`'s. Not for tags: tag rollups have no status."""
    _no_tags(q)
    by = q.by if "status" in q.by else (*q.by, "status")
    at = by.index("status")
    reading = Reading(
        lambda table: [sa.func.sum(table.c.requests).label("requests")],
        [sa.func.count().label("requests")],
        among,
    )
    out: dict[Key, CacheCounts] = {}
    with connect_read(bind) as conn:
        for (bucket, keys), sums in read_parts(conn, dataclasses.replace(q, by=by), reading):
            requests = int(sums["requests"] or 0)
            if not requests:
                continue
            own = keys if by is q.by else keys[:at] + keys[at + 1 :]
            found = out.get((bucket, own))
            if found is None:
                out[(bucket, own)] = found = CacheCounts()
            found.count(keys[at] or "", requests)
    return out


def _no_tags(q: SpendQuery) -> None:
    # A tag query's raw part is summed in Python into every measure (spend reads those).
    if uses_tags(q):
        raise ValueError("tags are read with spend()")


@dataclasses.dataclass(frozen=True, slots=True)
class Reading:
    """What a read sums: over a rollup table (``sums``), over raw ledger rows (``raw``); and
    the rows it keeps (``among``: a dimension and its values)."""

    sums: Callable[[sa.Table], list[sa.ColumnElement[Any]]]
    raw: Sequence[sa.ColumnElement[Any]]
    among: tuple[str, Collection[str]] | None = None


def read_parts(conn: Connection, q: SpendQuery, reading: Reading) -> Iterator[_Part]:
    """Every part of ``q``'s answer (``analytics.query.plan``): rollups, then raw rows."""
    parts = plan(q, rolled_until(conn))
    yield from _rolled(conn, q, parts, reading)
    if parts.raw is not None:
        yield from _raw(conn, q, *parts.raw, reading)


def _sums(table: sa.Table, measures: Collection[str]) -> list[sa.ColumnElement[Any]]:
    return [
        (money_sum(table.c[m]) if m in MONEY_MEASURES else sa.func.sum(table.c[m])).label(m)
        for m in MEASURES
        if m in measures
    ]


def _filtered(stmt: Any, columns: dict[str, Any], q: SpendQuery, reading: Reading) -> Any:
    for name, value in q.filters.items():
        stmt = stmt.where(columns[name] == value)
    if q.tenant is not None:
        stmt = stmt.where(columns["org_id"] == q.tenant)
    if reading.among is not None:
        name, values = reading.among
        stmt = stmt.where(columns[name].in_(sorted(values)))
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
    conn: Connection,
    q: SpendQuery,
    reading: Reading,
    table: sa.Table,
    within: sa.ColumnElement[bool],
    picked: tuple[str, str | None],
) -> Iterator[_Part]:
    """The slice ``picked`` (its name and its value's dimension) of ``table``'s rows
    ``within`` (days of the daily slices, or a run of hours of the hourly ones)."""
    name, dim = picked
    t = table.c
    bucket = t.hour if "hour" in t else t.day
    columns = {"org_id": t.org_id, **({dim: t.value} if dim else {})}
    cols = [columns[k] for k in q.by]
    group = [bucket, *cols] if q.granularity else cols
    stmt = sa.select(*group, *reading.sums(table)).where(t.slice == name, within)
    if name == "total" or name.startswith("all:"):
        # Always "" in these slices; said, it lets the key reach the value (an IN list of
        # candidates: one probe each, where (day, slice) alone walked every value's row).
        stmt = stmt.where(t.org_id == "")
    stmt = _filtered(stmt, columns, q, reading)
    stmt = stmt.group_by(*group) if group else stmt
    yield from _grouped(conn, q, stmt, len(cols))


def _grouped(conn: Connection, q: SpendQuery, stmt: Any, width: int) -> Iterator[_Part]:
    """The rows of a grouped read whose first column is the bucket (with a granularity),
    then ``width`` group columns, then sums."""
    for row in conn.execute(stmt).all():  # all at once: a third of fetching row by row
        if q.granularity:
            yield (_bucket(q, row[0]), tuple(row[1 : 1 + width])), row._mapping
        else:
            yield (None, tuple(row[:width])), row._mapping


def _runs(hours: tuple[datetime, ...]) -> list[tuple[datetime, datetime]]:
    """Contiguous runs of hours as [start, end) ranges."""
    runs: list[tuple[datetime, datetime]] = []
    for hour in hours:
        if runs and runs[-1][1] == hour:
            runs[-1] = (runs[-1][0], hour + HOUR)
        else:
            runs.append((hour, hour + HOUR))
    return runs


def _rolled(
    conn: Connection, q: SpendQuery, parts: Plan, reading: Reading
) -> Iterator[_Part]:
    tags = uses_tags(q)
    daily, hourly = (
        (rollup_tags_daily, rollup_tags_hourly) if tags else (rollup_daily, rollup_hourly)
    )
    picked = None if tags else slice_for(q)
    if parts.days and picked is not None:
        within = rollup_slices_daily.c.day.in_(parts.days)
        yield from _from_slice(conn, q, reading, rollup_slices_daily, within, picked)
    elif parts.days:
        cols = [daily.c[k] for k in q.by]
        group = [daily.c.day, *cols] if q.granularity else cols
        stmt = sa.select(*group, *reading.sums(daily)).where(daily.c.day.in_(parts.days))
        stmt = _filtered(stmt, dict(daily.c), q, reading).group_by(*group)
        yield from _grouped(conn, q, stmt, len(cols))
    if parts.hours and picked is not None:
        # The hours one by one, not as a range: each (hour, slice) is then one tight probe of
        # the key, where a range would walk every slice's rows of its hours.
        within = rollup_slices_hourly.c.hour.in_(parts.hours)
        yield from _from_slice(conn, q, reading, rollup_slices_hourly, within, picked)
        return
    for start, end in _runs(parts.hours):
        cols = [hourly.c[k] for k in q.by]
        group = [hourly.c.hour, *cols] if q.granularity else cols
        stmt = sa.select(*group, *reading.sums(hourly))
        stmt = stmt.where(hourly.c.hour >= start, hourly.c.hour < end)
        stmt = _filtered(stmt, dict(hourly.c), q, reading).group_by(*group)
        yield from _grouped(conn, q, stmt, len(cols))


def _raw(
    conn: Connection, q: SpendQuery, start: datetime, end: datetime, reading: Reading
) -> Iterator[_Part]:
    """The ledger's rows in [start, end), per bucket if the query has a granularity (one
    query per bucket: this part is normally the last hour or two)."""
    step = {"hour": HOUR, "day": DAY}.get(q.granularity or "", end - start)
    at = start
    while at < end:
        stop = min(end, _next(at, step))
        bucket = _bucket(q, at)
        if uses_tags(q):  # every measure, summed here (top and among never read tags)
            for keys, totals in _raw_tags(conn, q, at, stop):
                yield (bucket, keys), totals.as_dict()
        else:
            cols = [RAW_DIMS[k] for k in q.by]
            stmt = sa.select(*cols, *reading.raw).where(_c.ts >= at, _c.ts < stop)
            stmt = _filtered(stmt, RAW_DIMS, q, reading).group_by(*cols)
            for row in conn.execute(stmt):
                yield (bucket, tuple(row[: len(cols)])), row._mapping
        at = stop


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
        _c.output_tokens, _c.reasoning_tokens, _c.cost_usd, _c.saved_usd, _c.latency_ms,
        _c.ttft_ms,
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
        if where.hours:  # hour by hour: one tight probe of the key each (see _rolled)
            parts.append(_rolled_latency(conn, hourly, hourly.c.hour.in_(where.hours), tenant))
        if where.raw is not None:
            parts.append(_raw_latency(conn, *where.raw, tenant))
    return merge(parts)


def _rolled_latency(
    conn: Connection, table: sa.Table, during: sa.ColumnElement[bool], tenant: str | None
) -> dict[int, int]:
    t = table.c
    stmt = sa.select(t.bucket, sa.func.sum(t.requests)).where(during).group_by(t.bucket)
    stmt = stmt.where(t.org_id == (EVERY_ORG if tenant is None else tenant))
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
