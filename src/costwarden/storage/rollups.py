"""The analytics rollups in the database: the incremental job and the repair of a day.

**The job** (:func:`roll_up`). Its watermark is ``ledger.written_ms``, the database's clock
when a row was inserted (the ledger's INSERT sets it), not the row's own time: the batched
ledger writes a row after others that came later, and a row held while the database was
down arrives hours late. Each run takes the rows written since the watermark (up to the
database's clock minus ``lag_ms``, which covers a transaction that stamped its rows but had
not committed yet), and recomputes every hour those rows fall in from all of that hour's raw
rows, then the days of those hours from their hours. Recomputing replaces the bucket's
rows, so a run repeated, or two runs over one hour, give the same rows: idempotent. The
first run (no watermark) takes every hour that holds a ledger row or a rollup row. A
writer whose transaction commits more than ``lag_ms`` after its INSERT stamped the rows (a
database stalled for a minute) can leave rows behind the watermark: the daily
reconciliation finds that day and recomputes it.

**After retention** (``storage.retention``) raw rows before the pruned horizon
(``retention.pruned_before_ms``, a UTC day) may be gone, so an hour before it is never
recomputed: the rows written since the watermark for such an hour (a row held back for
days) are *added* to its rollup rows, in the very transaction that moves the watermark on,
so each is added once; then the hour's day is recomputed from its hours as usual. Each
day's transaction reads the horizon locked (``FOR SHARE`` on PostgreSQL; SQLite's write
transactions are serial), so retention cannot prune an hour while it is being recomputed.
The reconciliation and its repair leave days before the horizon alone: the raw side would
be short, a false drift, and a repair would recompute the rollup from what is left.

**Leases.** A first run over a large ledger outlasts the lease it runs under; ``on_day``,
called before each day's transaction, renews it, and a run told the lease is lost stops
there, without moving the watermark (what it recomputed stays right: recomputing is
idempotent; the next holder takes the same rows).

Sums are the database's (``INSERT ... SELECT ... GROUP BY``; money with ``money_sum``, exact
on both dialects); tags, a JSON object per row, are summed in Python. Each hour and day also
gets its latency histogram per org (``analytics.latency``), each row bucketed by the database
(:data:`LATENCY_BUCKET`). Histograms came after the other rollups (migration 0010): the first
run that finds them never filled fills them for every hour already rolled up.

**Reconciliation** (``storage.reconciliation``) compares each day with the raw ledger;
:func:`repair` recomputes a day that drifted.

Blocking: the app runs these in a worker thread, in the one process holding the rollup
lease, never on the request path.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from costwarden.analytics.latency import BOUNDS, OVERFLOW
from costwarden.analytics.rollup import (
    DIMENSIONS,
    HOUR,
    MEASURES,
    MONEY_MEASURES,
    SLICES,
    Totals,
    day_of,
    day_start,
    hour_of,
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
    rollup_slices_hourly,
    rollup_tags_daily,
    rollup_tags_hourly,
)
from costwarden.storage.sqltypes import UTCDateTime, utcnow

logger = logging.getLogger(__name__)
# Rows fetched at a time where a first run reads the whole ledger's timestamps.
_STREAM_ROWS = 10_000

_Select = TypeVar("_Select", bound=sa.Select[*tuple[Any, ...]])
WATERMARK = "rollup.written_ms"
# Epoch ms before which raw ledger rows may be pruned (storage.retention writes it).
PRUNED = "retention.pruned_before_ms"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Set once every hour rolled up has its latency histogram (0010 added them, empty).
LATENCY_FILLED = "latency.filled"
_c = ledger.c
# The columns a tag rollup reads of a raw row.
_READ = (
    _c.org_id, _c.tags, _c.input_tokens, _c.cached_input_tokens, _c.cache_write_tokens,
    _c.output_tokens, _c.reasoning_tokens, _c.cost_usd, _c.saved_usd, _c.latency_ms,
    _c.ttft_ms,
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


# Every measure of a group of raw rows, summed by the database (money exactly: money_sum), in
# the order of MEASURES (INSERT ... SELECT names the columns in that order).
RAW_SUMS = (
    sa.func.count().label("requests"),
    *(sa.func.sum(getattr(_c, t)).label(t) for t in (
        "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
        "reasoning_tokens",
    )),
    money_sum(_c.cost_usd).label("cost_usd"),
    sa.literal(0).label("cache_savings_usd"),  # prompt cache savings: not computed yet
    money_sum(_c.saved_usd).label("saved_usd"),  # response cache savings
    _micros_sum(_c.latency_ms).label("latency_us"),
    sa.func.coalesce(_micros_sum(_c.ttft_ms), 0).label("ttft_us"),
    sa.func.count(_c.ttft_ms).label("ttft_count"),
)  # fmt: skip
if tuple(column.name for column in RAW_SUMS) != MEASURES:  # pragma: no cover - kept in step
    raise RuntimeError("RAW_SUMS must sum every rollup measure, in the order of MEASURES")


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
    """What one run did: the hours rolled up, the raw rows read, the watermark after it
    (None: there is none yet), and whether it ran to the end (False: stopped early, the
    watermark where it was)."""

    hours: int
    rows: int
    watermark: int | None
    complete: bool = True


def db_now_ms(conn: Connection) -> int:
    """The database's clock (the one ``ledger.written_ms`` is stamped with)."""
    return int(conn.exec_driver_sql("SELECT " + NOW_MS_SQL[conn.dialect.name]).scalar_one())


def state(conn: Connection, name: str, *, lock: bool = False) -> int | None:
    """An ``analytics_state`` value; ``lock``: held (``FOR SHARE``) until the transaction
    ends, so a writer of it waits (PostgreSQL; SQLite's write transactions are serial)."""
    stmt = sa.select(analytics_state.c.value).where(analytics_state.c.name == name)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(read=True)
    value = conn.execute(stmt).scalar_one_or_none()
    return None if value is None else int(value)


def watermark(conn: Connection) -> int | None:
    return state(conn, WATERMARK)


def pruned_before(conn: Connection, *, lock: bool = False) -> datetime | None:
    """The retention horizon: raw rows before it may be gone (None: nothing pruned)."""
    value = state(conn, PRUNED, lock=lock)
    return None if value is None else _EPOCH + timedelta(milliseconds=value)


def is_pruned(start: datetime, horizon: datetime | None) -> bool:
    """Whether the bucket starting at ``start`` may have lost raw rows to retention."""
    return horizon is not None and start < horizon


def set_state(conn: Connection, name: str, value: int) -> None:
    updated = conn.execute(
        analytics_state.update()
        .where(analytics_state.c.name == name)
        .values(value=value, updated_at=utcnow())
    ).rowcount
    if not updated:
        conn.execute(analytics_state.insert().values(name=name, value=value, updated_at=utcnow()))


def _pending_hours(conn: Connection, after: int | None, upto: int) -> set[datetime]:
    """The hours of the rows written in (after, upto]. With no watermark yet: every hour
    holding a ledger row, and every hour that has rollup rows already (rolled up before the
    watermark was lost, its raw rows since deleted: recomputing it clears them). The empty
    hours between are left out: they have nothing to write, and a sparse ledger's first run
    recomputed hundreds of them one transaction a day (26 s on PostgreSQL for 400 rows
    spread over 350 hours)."""
    if after is None:
        # Streamed: only the set of hours is kept, however many rows the ledger holds.
        every = sa.select(_c.ts).execution_options(yield_per=_STREAM_ROWS)
        hours = {hour_of(ts) for ts in conn.execute(every).scalars()}
        rolled = conn.execute(sa.select(rollup_hourly.c.hour).distinct()).scalars()
        hours.update(hour_of(hour) for hour in rolled)
        return hours
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


def raw_totals(
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
    _write_hour_slices(conn, hour)
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


# The histogram rows of every org together (org_id "*", never an org's id: ids are made by
# costwarden): what a platform-wide percentile reads, instead of every org's rows.
EVERY_ORG = "*"


def _write_latency_hour(conn: Connection, hour: datetime, upto: int | None) -> None:
    """Recompute one hour's latency histograms (per org, and every org's together) from its
    raw rows, in the database."""
    delete, insert = _latency_hour_statements(upto is not None)
    conn.execute(delete, {"hour": hour})
    conn.execute(insert, {"hour": hour, "end": hour + HOUR, "upto": upto})
    t = rollup_latency_hourly.c
    together = (
        sa.select(sa.literal(hour, UTCDateTime()), sa.literal(EVERY_ORG), t.bucket,
                  sa.func.sum(t.requests))
        .where(t.hour == hour, t.org_id != EVERY_ORG)
        .group_by(t.bucket)
    )  # fmt: skip
    conn.execute(
        rollup_latency_hourly.insert().from_select(
            ["hour", "org_id", "bucket", "requests"], together
        )
    )


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
        summed = (
            sa.select(sa.literal(day), *columns, *_sums_of(hourly))
            .where(hourly.c.hour >= start, hourly.c.hour < start + 24 * HOUR)
            .group_by(*columns)
        )
        conn.execute(daily.insert().from_select(["day", *keys, *MEASURES], summed))
    _write_slices(conn, day)
    _write_latency_day(conn, day)


def _sums_of(table: sa.Table) -> list[sa.ColumnElement[Any]]:
    return [
        money_sum(table.c[m]) if m in MONEY_MEASURES else sa.func.sum(table.c[m])
        for m in MEASURES
    ]


def _write_hour_slices(conn: Connection, hour: datetime) -> None:
    """The hour's narrow slices, from its full hourly rows (just written)."""
    h = rollup_hourly.c
    conn.execute(rollup_slices_hourly.delete().where(rollup_slices_hourly.c.hour == hour))
    sums = _sums_of(rollup_hourly)
    for name, org_column, value_column in SLICES:
        org = h[org_column] if org_column else sa.literal("")
        value = h[value_column] if value_column else sa.literal("")
        group = [h[c] for c in (org_column, value_column) if c]
        summed = (
            sa.select(sa.literal(hour, UTCDateTime()), sa.literal(name), org, value, *sums)
            .where(h.hour == hour)
            .group_by(*group)
        )
        if not group:  # an aggregate over no rows is one row of NULLs: none then
            summed = summed.having(sa.func.count() > 0)
        conn.execute(
            rollup_slices_hourly.insert().from_select(
                ["hour", "slice", "org_id", "value", *MEASURES], summed
            )
        )


def _write_slices(conn: Connection, day: str) -> None:
    """The day's narrow slices, from its hours' slices (one statement: far fewer rows than
    the day's full cube)."""
    h = rollup_slices_hourly.c
    conn.execute(rollup_slices_daily.delete().where(rollup_slices_daily.c.day == day))
    start = day_start(day)
    keys = (h.slice, h.org_id, h.value)
    sums = _sums_of(rollup_slices_hourly)
    rank = sa.cast(sums[MEASURES.index("cost_usd")], sa.Float)  # its order (ranking.py)
    summed = (
        sa.select(sa.literal(day), *keys, *sums, rank)
        .where(h.hour >= start, h.hour < start + 24 * HOUR)
        .group_by(*keys)
    )
    conn.execute(
        rollup_slices_daily.insert().from_select(
            ["day", "slice", "org_id", "value", *MEASURES, "cost_rank"], summed
        )
    )


def _add_to(conn: Connection, table: sa.Table, key: dict[str, Any], delta: Totals) -> None:
    """Add ``delta`` to the rollup row of ``key`` (made if missing); in Python, as SQLite
    keeps money as text."""
    where = sa.and_(*(table.c[k] == v for k, v in key.items()))
    row = conn.execute(sa.select(table).where(where)).mappings().first()
    if row is None:
        conn.execute(table.insert().values(**key, **delta.as_dict()))
        return
    total = Totals.of(row)
    total.add(delta)
    conn.execute(table.update().where(where).values(**total.as_dict()))


def _add_late(conn: Connection, hour: datetime, after: int, upto: int) -> int:
    """Add the raw rows of ``hour`` written in (after, upto] to its rollup rows (an hour
    retention may have pruned: never recomputed); how many rows were added."""
    window = (
        _c.ts >= hour, _c.ts < hour + HOUR, _c.written_ms > after, _c.written_ms <= upto
    )  # fmt: skip
    dims = list(RAW_DIMS.values())
    added = 0
    for row in conn.execute(sa.select(*dims, *RAW_SUMS).where(*window).group_by(*dims)):
        delta = Totals.of(row._mapping)
        key = {"hour": hour, **{d: row[i] or "" for i, d in enumerate(DIMENSIONS)}}
        _add_to(conn, rollup_hourly, key, delta)
        added += delta.requests
    tagged = tag_rollup(conn.execute(sa.select(*_READ).where(*window, _c.tags != "{}")).mappings())
    for (org, tag), totals in tagged.items():
        _add_to(conn, rollup_tags_hourly, {"hour": hour, "org_id": org, "tag": tag}, totals)
    if added:
        _write_hour_slices(conn, hour)  # from the hour's full rows, the late ones now in
        _add_late_latency(conn, hour, window)
    return added


def _add_late_latency(
    conn: Connection, hour: datetime, window: tuple[sa.ColumnElement[bool], ...]
) -> None:
    """Add the late rows of ``window`` to ``hour``'s latency histograms, bucket by bucket."""
    org = sa.func.coalesce(_c.org_id, "")
    bucket = LATENCY_BUCKET.label("bucket")
    t = rollup_latency_hourly
    found = conn.execute(
        sa.select(org, bucket, sa.func.count()).where(*window).group_by(org, bucket)
    ).all()
    for org_id, at, count in found:
        for whose in (org_id, EVERY_ORG):
            where = sa.and_(t.c.hour == hour, t.c.org_id == whose, t.c.bucket == at)
            added = t.update().where(where).values(requests=t.c.requests + count)
            if not conn.execute(added).rowcount:
                conn.execute(t.insert().values(hour=hour, org_id=whose, bucket=at, requests=count))


@dataclasses.dataclass(slots=True)
class _Progress:
    read: int = 0  # raw rows read
    done: set[datetime] = dataclasses.field(default_factory=set)  # hours recomputed
    pruned: set[datetime] = dataclasses.field(default_factory=set)  # hours not recomputed
    stopped: bool = False  # on_day said stop


def _recompute(
    bind: Bind,
    hours: Iterable[datetime],
    upto: int | None,
    on_day: Callable[[], bool] | None = None,
) -> _Progress:
    """Recompute ``hours`` and their days from the rows written up to ``upto``, one
    transaction a day; an hour retention may have pruned is left alone (``pruned``).
    ``on_day`` is asked before each day whether to go on."""
    by_day: dict[str, list[datetime]] = {}
    for hour in sorted(hours):
        by_day.setdefault(day_of(hour), []).append(hour)
    out = _Progress()
    for day, day_hours in by_day.items():
        if on_day is not None and not on_day():
            out.stopped = True
            return out
        with begin_write(bind) as conn:
            horizon = pruned_before(conn, lock=True)  # retention waits for this day
            whole = [h for h in day_hours if not is_pruned(h, horizon)]
            out.pruned.update(h for h in day_hours if is_pruned(h, horizon))
            if not whole:
                continue
            for hour in whole:
                out.read += _write_hour(conn, hour, upto)
            _write_day(conn, day)
            out.done.update(whole)
    return out


def _fill_latency(bind: Bind, upto: int) -> None:
    """The latency histograms of every hour rolled up before they existed (up to the
    watermark ``upto``), one transaction a day: the other rollups are left as they are."""
    with connect_read(bind) as conn:
        hours = conn.execute(sa.select(rollup_hourly.c.hour).distinct()).scalars().all()
        horizon = pruned_before(conn)
    by_day: dict[str, list[datetime]] = {}
    for hour in sorted(hours):
        if not is_pruned(hour, horizon):  # its raw rows may be gone: nothing to count from
            by_day.setdefault(day_of(hour), []).append(hour)
    for day, day_hours in by_day.items():
        with begin_write(bind) as conn:
            for hour in day_hours:
                _write_latency_hour(conn, hour, upto)
            _write_latency_day(conn, day)
    if by_day:
        logger.info("filled the latency histograms of %d rolled-up day(s)", len(by_day))


def _advance(conn: Connection, after: int | None, upto: int) -> bool:
    """Move the watermark from ``after`` to ``upto``; False if another run moved it first
    (two holders of one lease: the late rows it would add are that run's)."""
    if after is None:
        if watermark(conn) is not None:
            return False
        # Two first runs at once on PostgreSQL: the second INSERT fails on the key.
        conn.execute(
            analytics_state.insert().values(name=WATERMARK, value=upto, updated_at=utcnow())
        )
        return True
    moved = conn.execute(
        analytics_state.update()
        .where(analytics_state.c.name == WATERMARK, analytics_state.c.value == after)
        .values(value=upto, updated_at=utcnow())
    ).rowcount
    return bool(moved)


def roll_up(
    bind: Bind, *, lag_ms: int, on_day: Callable[[], bool] | None = None
) -> RollupRun:
    """One run of the job (see the module docstring). ``on_day`` is called before each
    day's transaction (the app renews its lease there); False stops the run, the watermark
    unmoved."""
    with connect_read(bind) as conn:
        after = watermark(conn)
        filled = state(conn, LATENCY_FILLED) is not None
        upto = db_now_ms(conn) - lag_ms
    if after is not None and not filled:
        _fill_latency(bind, after)
        with begin_write(bind) as conn:
            set_state(conn, LATENCY_FILLED, 1)
    if after is not None and upto <= after:
        return RollupRun(0, 0, after)
    with connect_read(bind) as conn:
        hours = _pending_hours(conn, after, upto)
    progress = _recompute(bind, hours, upto, on_day)
    if progress.stopped:
        logger.warning(
            "rollup stopped after %d of %d hour(s): the lease was lost; the watermark stays",
            len(progress.done), len(hours),
        )  # fmt: skip
        return RollupRun(len(progress.done), progress.read, after, complete=False)
    late = sorted(progress.pruned)
    with begin_write(bind) as conn:
        if not _advance(conn, after, upto):  # nothing written in this transaction yet
            logger.warning("rollup: another run moved the watermark first; this one stops")
            return RollupRun(len(progress.done), progress.read, after, complete=False)
        if late and after is None:
            # No watermark but a pruned horizon (the state row removed by hand): which of
            # the rows were rolled up is unknown, so these hours stay as they are.
            logger.warning("rollup: %d pruned hour(s) left as they are (no watermark)", len(late))
        elif late and after is not None:
            for hour in late:
                progress.read += _add_late(conn, hour, after, upto)
            for day in sorted({day_of(h) for h in late}):
                _write_day(conn, day)
        if after is None:  # the first run rolled up every hour, histograms included
            set_state(conn, LATENCY_FILLED, 1)
    if hours:
        logger.info(
            "rolled up %d hour(s) from %d ledger row(s)%s", len(hours), progress.read,
            f", {len(late)} of them pruned (rows added)" if late else "",
        )  # fmt: skip
    return RollupRun(len(hours), progress.read, upto)


def repair(bind: Bind, day: str) -> int:
    """Recompute every hour of ``day`` and the day from the raw ledger (the rows written up
    to the watermark); raw rows read. A day retention may have pruned is left as it is (its
    rollup is all that is left of it): 0."""
    with connect_read(bind) as conn:
        upto = watermark(conn)
    progress = _recompute(bind, hours_of_day(day), upto)
    if progress.pruned:
        logger.warning("not recomputing %s: its raw rows may be pruned (retention)", day)
    return progress.read

