"""The analytics rollups in the database: the incremental job and the reconciliation.

**The job** (:func:`roll_up`). Its watermark is ``ledger.written_ms``, the database's clock
when a row was inserted (the ledger's INSERT sets it), not the row's own time: the batched
ledger writes a row after others that came later, and a row held while the database was
down arrives hours late. Each run takes the rows written since the watermark (up to the
database's clock minus ``lag_ms``, which covers a transaction that stamped its rows but had
not committed yet), and recomputes every hour those rows fall in from all of that hour's raw
rows, then the days of those hours from their hours. Recomputing replaces the bucket's
rows, so a run repeated, or two runs over one hour, give the same rows: idempotent. The
first run (no watermark) takes every hour the ledger spans. A writer whose transaction
commits more than ``lag_ms`` after its INSERT stamped the rows (a database stalled for a
minute) can leave rows behind the watermark: the daily reconciliation finds that day and
recomputes it.

Sums are the database's (``INSERT ... SELECT ... GROUP BY``; money with ``money_sum``, exact
on both dialects); tags, a JSON object per row, are summed in Python. Each hour and day also
gets its latency histogram per org (``analytics.latency``), each row bucketed by the database
(:data:`LATENCY_BUCKET`). Histograms came after the other rollups (migration 0008): the first
run that finds them never filled fills them for every hour already rolled up.

**Reconciliation** (:func:`reconcile`): for each day, the raw ledger's totals per org
against the daily rollup's, and its request count against the day's latency histogram,
exactly; :func:`repair` recomputes a day that drifted.

Blocking: the app runs these in a worker thread, in the one process holding the rollup
lease, never on the request path.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from costwarden.analytics.latency import BOUNDS, OVERFLOW
from costwarden.analytics.rollup import (
    DIMENSIONS,
    HOUR,
    MEASURES,
    SLICES,
    Drift,
    Totals,
    day_of,
    day_start,
    drifts,
    hour_of,
    hours_between,
    hours_of_day,
    tag_rollup,
)
from costwarden.storage.db import Bind, begin_write, connect_read, money_sum
from costwarden.storage.ledger_rows import NOW_MS_SQL
from costwarden.storage.schema import (
    analytics_state,
    ledger,
    rollup_daily,
    rollup_hourly,
    rollup_latency_daily,
    rollup_latency_hourly,
    rollup_slices_daily,
    rollup_tags_daily,
    rollup_tags_hourly,
)
from costwarden.storage.sqltypes import UTCDateTime, utcnow

logger = logging.getLogger(__name__)

_Select = TypeVar("_Select", bound=sa.Select[*tuple[Any, ...]])
_MONEY_MEASURES = frozenset({"cost_usd", "cache_savings_usd"})
WATERMARK = "rollup.written_ms"
RECONCILED = "reconciled.epoch_day"  # the last day the daily check covered
# Set once every hour rolled up has its latency histogram (0008 added them, empty).
LATENCY_FILLED = "latency.filled"
_c = ledger.c
# The columns a tag rollup reads of a raw row.
_READ = (
    _c.org_id, _c.tags, _c.input_tokens, _c.cached_input_tokens, _c.cache_write_tokens,
    _c.output_tokens, _c.reasoning_tokens, _c.cost_usd, _c.latency_ms, _c.ttft_ms,
)  # fmt: skip
# The dimensions of a raw row as a rollup row stores them: "" for none.
RAW_DIMS: dict[str, sa.ColumnElement[Any]] = {
    name: sa.func.coalesce(column, "")
    for name, column in (
        ("org_id", _c.org_id), ("project_id", _c.project_id), ("key_id", _c.key_id),
        ("end_user", _c.end_user), ("provider", _c.provider),
        ("model", sa.func.coalesce(_c.served_model, _c.requested_model)), ("status", _c.status),
    )
}  # fmt: skip


def _micros_sum(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    # Each row's milliseconds rounded to whole microseconds, then summed: exact integers.
    return sa.func.sum(sa.cast(sa.func.round(column * 1000), sa.BigInteger))


# Every measure of a group of raw rows, summed by the database (money exactly: money_sum).
RAW_SUMS = (
    sa.func.count().label("requests"),
    *(sa.func.sum(getattr(_c, t)).label(t) for t in (
        "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
        "reasoning_tokens",
    )),
    money_sum(_c.cost_usd).label("cost_usd"),
    sa.literal(0).label("cache_savings_usd"),
    _micros_sum(_c.latency_ms).label("latency_us"),
    sa.func.coalesce(_micros_sum(_c.ttft_ms), 0).label("ttft_us"),
    sa.func.count(_c.ttft_ms).label("ttft_count"),
)  # fmt: skip


def _bucket_sql(column: sa.ColumnElement[Any], first: int, last: int) -> sa.ColumnElement[Any]:
    # Buckets first..last: a binary search over the bounds as nested CASEs.
    if first == last:
        return sa.literal_column(str(first), sa.Integer)
    mid = (first + last) // 2  # bucket <= mid exactly when the value <= BOUNDS[mid]
    return sa.case(
        (column <= sa.literal(BOUNDS[mid], sa.Float), _bucket_sql(column, first, mid)),
        else_=_bucket_sql(column, mid + 1, last),
    )


# A raw row's latency bucket, computed by the database exactly as
# ``analytics.latency.bucket_of`` computes it in Python: 7 comparisons a row, on any
# database (SQLite has no log() unless built with its math functions, and a logarithm of a
# value on a bound could come out on either side of it). The bounds are bound parameters, so
# each database compares with the exact double, not with its own parse of a decimal literal.
LATENCY_BUCKET = _bucket_sql(_c.latency_ms, 0, OVERFLOW)


@dataclasses.dataclass(frozen=True, slots=True)
class RollupRun:
    """What one run did: the hours recomputed, the raw rows read, the new watermark."""

    hours: int
    rows: int
    watermark: int


def db_now_ms(conn: Connection) -> int:
    """The database's clock (the one ``ledger.written_ms`` is stamped with)."""
    return int(conn.exec_driver_sql("SELECT " + NOW_MS_SQL[conn.dialect.name]).scalar_one())


def watermark(conn: Connection) -> int | None:
    return _state(conn, WATERMARK)


def _state(conn: Connection, name: str) -> int | None:
    value = conn.execute(
        sa.select(analytics_state.c.value).where(analytics_state.c.name == name)
    ).scalar_one_or_none()
    return None if value is None else int(value)


def _set_state(conn: Connection, name: str, value: int) -> None:
    updated = conn.execute(
        analytics_state.update()
        .where(analytics_state.c.name == name)
        .values(value=value, updated_at=utcnow())
    ).rowcount
    if not updated:
        conn.execute(analytics_state.insert().values(name=name, value=value, updated_at=utcnow()))


def _pending_hours(conn: Connection, after: int | None, upto: int) -> set[datetime]:
    """The hours of the rows written in (after, upto]; every hour the ledger spans when
    there is no watermark yet."""
    if after is None:
        first, last = conn.execute(sa.select(sa.func.min(_c.ts), sa.func.max(_c.ts))).one()
        return set() if first is None else set(hours_between(first, last))
    rows = conn.execute(
        sa.select(_c.ts).where(_c.written_ms > after, _c.written_ms <= upto)
    ).scalars()
    return {hour_of(ts) for ts in rows}


def _rolled(stmt: _Select, upto: int | sa.BindParameter[int] | None) -> _Select:
    """Only the rows written up to the watermark ``upto`` (and those from before written_ms
    existed): a row written later is the next run's, so the rollup and the reconciliation
    see the same rows."""
    if upto is None:
        return stmt
    # An expression no index serves: the rows of an hour come from the ts index and are
    # filtered. As an indexable condition, PostgreSQL on a ledger not analyzed since a bulk
    # load ANDed a scan of the whole written_ms index into every hour's query (12 ms each
    # at 200,000 rows, where the hour's own rows took under 1 ms).
    return stmt.where(sa.func.coalesce(_c.written_ms, 0) <= upto)


def _totals(
    conn: Connection, start: datetime, end: datetime, upto: int | None, keys: list[str]
) -> dict[tuple[str, ...], Totals]:
    """The raw rows of [start, end) written up to ``upto``, summed by the database per
    ``keys`` (dimension names)."""
    dims = [RAW_DIMS[k] for k in keys]
    stmt = sa.select(*dims, *RAW_SUMS).where(_c.ts >= start, _c.ts < end).group_by(*dims)
    return {
        tuple(row[i] or "" for i in range(len(keys))): Totals.of(row._mapping)
        for row in conn.execute(_rolled(stmt, upto))
    }


def _write_hour(conn: Connection, hour: datetime, upto: int | None) -> int:
    """Recompute one hour's rollup rows from its raw rows; how many raw rows it read. The
    dimensions' rows are summed and written by the database (INSERT ... SELECT); the tags,
    a JSON object per row, are summed here."""
    conn.execute(rollup_hourly.delete().where(rollup_hourly.c.hour == hour))
    conn.execute(rollup_tags_hourly.delete().where(rollup_tags_hourly.c.hour == hour))
    dims = list(RAW_DIMS.values())
    grouped = _rolled(
        sa.select(sa.literal(hour, UTCDateTime()), *dims, *RAW_SUMS)
        .where(_c.ts >= hour, _c.ts < hour + HOUR)
        .group_by(*dims),
        upto,
    )
    conn.execute(
        rollup_hourly.insert().from_select(["hour", *DIMENSIONS, *MEASURES], grouped)
    )
    tagged_rows = _rolled(
        sa.select(*_READ).where(_c.ts >= hour, _c.ts < hour + HOUR, _c.tags != "{}"), upto
    )
    tagged = tag_rollup(conn.execute(tagged_rows).mappings())
    if tagged:
        conn.execute(
            rollup_tags_hourly.insert(),
            [
                {"hour": hour, "org_id": org, "tag": tag, **t.as_dict()}
                for (org, tag), t in tagged.items()
            ],
        )
    _write_latency_hour(conn, hour, upto)
    read = conn.execute(
        sa.select(sa.func.sum(rollup_hourly.c.requests)).where(rollup_hourly.c.hour == hour)
    ).scalar()
    return int(read or 0)


@functools.cache
def _latency_hour_statements(rolled: bool) -> tuple[sa.Delete, sa.Insert]:
    """The delete and the INSERT ... SELECT of an hour's histograms, built once: SQLAlchemy
    derives a new statement's cache key from its whole tree, the bucket's CASE included,
    which cost 2 ms of Python a statement (as much as the database's work on a quiet hour)."""
    t = rollup_latency_hourly
    hour, end = (sa.bindparam(name, type_=UTCDateTime()) for name in ("hour", "end"))
    rows = sa.select(RAW_DIMS["org_id"].label("org_id"), LATENCY_BUCKET.label("bucket")).where(
        _c.ts >= hour, _c.ts < end
    )
    if rolled:
        rows = _rolled(rows, sa.bindparam("upto", type_=sa.BigInteger()))
    found = rows.subquery()
    counted = sa.select(hour, found.c.org_id, found.c.bucket, sa.func.count()).group_by(
        found.c.org_id, found.c.bucket
    )
    return (
        t.delete().where(t.c.hour == hour),
        t.insert().from_select(["hour", "org_id", "bucket", "requests"], counted),
    )


def _write_latency_hour(conn: Connection, hour: datetime, upto: int | None) -> None:
    """Recompute one hour's latency histograms (per org) from its raw rows, in the database."""
    delete, insert = _latency_hour_statements(upto is not None)
    conn.execute(delete, {"hour": hour})
    conn.execute(insert, {"hour": hour, "end": hour + HOUR, "upto": upto})


def _write_latency_day(conn: Connection, day: str) -> None:
    """Recompute one day's latency histograms from its hours', in the database."""
    hourly, daily = rollup_latency_hourly.c, rollup_latency_daily
    start = day_start(day)
    conn.execute(daily.delete().where(daily.c.day == day))
    summed = (
        sa.select(sa.literal(day), hourly.org_id, hourly.bucket, sa.func.sum(hourly.requests))
        .where(hourly.hour >= start, hourly.hour < start + 24 * HOUR)
        .group_by(hourly.org_id, hourly.bucket)
    )
    conn.execute(daily.insert().from_select(["day", "org_id", "bucket", "requests"], summed))


def _write_day(conn: Connection, day: str) -> None:
    """Recompute one day's rollup rows from its hours' rows, in the database."""
    start = day_start(day)
    for hourly, daily, keys in (
        (rollup_hourly, rollup_daily, DIMENSIONS),
        (rollup_tags_hourly, rollup_tags_daily, ("org_id", "tag")),
    ):
        conn.execute(daily.delete().where(daily.c.day == day))
        columns = [hourly.c[k] for k in keys]
        sums = [
            money_sum(hourly.c[m]) if m in _MONEY_MEASURES else sa.func.sum(hourly.c[m])
            for m in MEASURES
        ]
        summed = (
            sa.select(sa.literal(day), *columns, *sums)
            .where(hourly.c.hour >= start, hourly.c.hour < start + 24 * HOUR)
            .group_by(*columns)
        )
        conn.execute(daily.insert().from_select(["day", *keys, *MEASURES], summed))
    _write_slices(conn, day)
    _write_latency_day(conn, day)


def _write_slices(conn: Connection, day: str) -> None:
    """The day's narrow slices, from its full daily rows."""
    d = rollup_daily.c
    conn.execute(rollup_slices_daily.delete().where(rollup_slices_daily.c.day == day))
    sums = [
        money_sum(d[m]) if m in _MONEY_MEASURES else sa.func.sum(d[m]) for m in MEASURES
    ]
    for name, org_column, value_column in SLICES:
        org = d[org_column] if org_column else sa.literal("")
        value = d[value_column] if value_column else sa.literal("")
        group = [c for c in (org_column, value_column) if c]
        summed = (
            sa.select(sa.literal(day), sa.literal(name), org, value, *sums)
            .where(d.day == day)
            .group_by(*(d[c] for c in group))
        )
        if not group:  # an aggregate over no rows is one row of NULLs: none then
            summed = summed.having(sa.func.count() > 0)
        conn.execute(
            rollup_slices_daily.insert().from_select(
                ["day", "slice", "org_id", "value", *MEASURES], summed
            )
        )


def _recompute(bind: Bind, hours: Iterable[datetime], upto: int | None) -> int:
    """Recompute ``hours`` and their days from the rows written up to ``upto``, one
    transaction a day; raw rows read."""
    by_day: dict[str, list[datetime]] = {}
    for hour in sorted(hours):
        by_day.setdefault(day_of(hour), []).append(hour)
    read = 0
    for day, day_hours in by_day.items():
        with begin_write(bind) as conn:
            for hour in day_hours:
                read += _write_hour(conn, hour, upto)
            _write_day(conn, day)
    return read


def _fill_latency(bind: Bind, upto: int) -> None:
    """The latency histograms of every hour rolled up before they existed (up to the
    watermark ``upto``), one transaction a day: the other rollups are left as they are."""
    with connect_read(bind) as conn:
        hours = conn.execute(sa.select(rollup_hourly.c.hour).distinct()).scalars().all()
    by_day: dict[str, list[datetime]] = {}
    for hour in sorted(hours):
        by_day.setdefault(day_of(hour), []).append(hour)
    for day, day_hours in by_day.items():
        with begin_write(bind) as conn:
            for hour in day_hours:
                _write_latency_hour(conn, hour, upto)
            _write_latency_day(conn, day)
    if by_day:
        logger.info("filled the latency histograms of %d rolled-up day(s)", len(by_day))


def roll_up(bind: Bind, *, lag_ms: int) -> RollupRun:
    """One run of the job (see the module docstring)."""
    with connect_read(bind) as conn:
        after = watermark(conn)
        filled = _state(conn, LATENCY_FILLED) is not None
        upto = db_now_ms(conn) - lag_ms
    if after is not None and not filled:
        _fill_latency(bind, after)
        with begin_write(bind) as conn:
            _set_state(conn, LATENCY_FILLED, 1)
    if after is not None and upto <= after:
        return RollupRun(0, 0, after)
    with connect_read(bind) as conn:
        hours = _pending_hours(conn, after, upto)
    read = _recompute(bind, hours, upto)
    with begin_write(bind) as conn:
        _set_state(conn, WATERMARK, upto)
        if after is None:  # the first run rolled up every hour, histograms included
            _set_state(conn, LATENCY_FILLED, 1)
    if hours:
        logger.info("rolled up %d hour(s) from %d ledger row(s)", len(hours), read)
    return RollupRun(len(hours), read, upto)


# ------------------------------------------------------------------ reconciliation


def _ledger_day(conn: Connection, day: str, upto: int | None) -> dict[str, Totals]:
    """The raw ledger's totals per org on ``day``, of the rows the job has had the chance to
    roll up (written up to its watermark ``upto``; rows from before written_ms existed)."""
    start = day_start(day)
    found = _totals(conn, start, start + 24 * HOUR, upto, ["org_id"])
    return {key[0]: totals for key, totals in found.items()}


def _latency_day(conn: Connection, day: str) -> dict[str, int]:
    """The requests the day's latency histograms count, per org."""
    t = rollup_latency_daily.c
    stmt = sa.select(t.org_id, sa.func.sum(t.requests)).where(t.day == day).group_by(t.org_id)
    return {org: int(n) for org, n in conn.execute(stmt)}


def _rollup_day(conn: Connection, day: str) -> dict[str, Totals]:
    out: dict[str, Totals] = {}
    for row in conn.execute(sa.select(rollup_daily).where(rollup_daily.c.day == day)).mappings():
        found = out.get(row["org_id"])
        if found is None:
            out[row["org_id"]] = found = Totals()
        found.add(Totals.of(row))
    return out


def reconcile(bind: Bind, days: Iterable[str]) -> list[Drift]:
    """Every difference between the raw ledger and the daily rollup on ``days``, per org and
    measure (requests, tokens, cost, the requests the latency histogram counts), exactly;
    empty when they agree. Rows written after the job's watermark are left out of both
    sides: the next run rolls them up."""
    out: list[Drift] = []
    with connect_read(bind) as conn:
        upto = watermark(conn)
        for day in days:
            raw, rolled = _ledger_day(conn, day, upto), _rollup_day(conn, day)
            out.extend(drifts(day, raw, rolled, latency=_latency_day(conn, day)))
    return out


def reconciled_through(bind: Bind) -> int | None:
    """The last day (as days since the epoch) the daily check covered, if any."""
    with connect_read(bind) as conn:
        value = conn.execute(
            sa.select(analytics_state.c.value).where(analytics_state.c.name == RECONCILED)
        ).scalar_one_or_none()
    return None if value is None else int(value)


def set_reconciled_through(bind: Bind, epoch_day: int) -> None:
    with begin_write(bind) as conn:
        _set_state(conn, RECONCILED, epoch_day)


def repair(bind: Bind, day: str) -> int:
    """Recompute every hour of ``day`` and the day from the raw ledger (the rows written up
    to the watermark); raw rows read."""
    with connect_read(bind) as conn:
        upto = watermark(conn)
    return _recompute(bind, hours_of_day(day), upto)

