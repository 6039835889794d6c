"""Use from the ledger in time slots: what forecasts and spike alerts read.

- :func:`usage_buckets`: one org's rows of the last couple of hours, summed in Python (a cost
  as the ledger stores it, in nano-dollars, or input plus output tokens) into fixed buckets.
  Read every few minutes by one process (the forecast's leader).
- :func:`hourly_usage`: every org's use in a few given clock hours, summed in SQL by
  (org, hour) in one query, read once an hour by one process (the watch's leader).

Neither counts a response-cache hit (status ``cached``): it costs $0 and is charged to no
budget (``storage.counters``), so its tokens are no use the alerts should forecast or call a
spike. Neither needs dialect-specific time arithmetic: rows are bucketed in Python, or by a
``CASE`` over the slots' bounds (:func:`slot_of`), which both SQLite and PostgreSQL compare
as timestamps. Not on the request path.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from costwarden.alerts.spikes import HourUse
from costwarden.core.money import ledger_nanos
from costwarden.storage.db import Bind, connect_read, nanos_sum
from costwarden.storage.schema import ledger

# Every row but a response-cache hit's (see the module docstring; storage.outcomes too).
NOT_CACHED = ledger.c.status != "cached"


def usage_buckets(
    bind: Bind, org_id: str, metric: str, since: datetime, bucket_seconds: int
) -> list[tuple[float, int]]:
    """``(bucket start, use)`` of the org since ``since``, oldest first; ``metric`` is ``usd``
    (nano-dollars) or ``tokens``; buckets start at multiples of ``bucket_seconds``."""
    value: sa.ColumnElement[object]
    if metric == "usd":
        value = ledger.c.cost_usd
    elif metric == "tokens":
        value = ledger.c.input_tokens + ledger.c.output_tokens
    else:
        raise ValueError(f"no usage buckets for metric {metric!r}")
    sums: collections.Counter[float] = collections.Counter()
    with connect_read(bind) as conn:
        rows = conn.execute(
            sa.select(ledger.c.ts, value).where(
                ledger.c.org_id == org_id, ledger.c.ts >= since, NOT_CACHED
            )
        )
        for ts, used in rows:
            start = float(int(ts.timestamp()) // bucket_seconds * bucket_seconds)
            sums[start] += ledger_nanos(used) if metric == "usd" else int(used)
    return sorted(sums.items())


def slot_of(
    column: sa.ColumnElement[datetime], starts: Sequence[datetime], width: timedelta
) -> tuple[sa.ColumnElement[int], sa.ColumnElement[bool]]:
    """(the index in ``starts`` of the slot ``[start, start + width)`` a row's ``column``
    falls in, a filter for the rows in any slot): portable bucketing for a GROUP BY.

    The filter is one range when the slots follow each other (oldest first), else one range
    per slot: either way an index on ``column`` serves it (SQLite: a multi-index OR,
    PostgreSQL: a bitmap OR), so only the rows in the slots are read."""
    bounds = [(column >= s, column < s + width) for s in starts]
    index: sa.ColumnElement[int] = sa.case(
        *((sa.and_(lo, hi), i) for i, (lo, hi) in enumerate(bounds))
    )
    if all(b - a == width for a, b in itertools.pairwise(starts)):
        return index, sa.and_(column >= starts[0], column < starts[-1] + width)
    return index, sa.or_(*(sa.and_(lo, hi) for lo, hi in bounds))


def hourly_usage(bind: Bind, hours: Sequence[int]) -> list[HourUse]:
    """Every org's use (nano-dollars, each row rounded up as the counters do; input plus
    output tokens) in each clock hour that starts at one of ``hours`` (epoch seconds), one
    query; (org, hour) pairs without use are left out, rows without an org too.

    Read from the ledger's rows for now; issue 14's hourly rollups hold exactly these sums
    per (org, hour), so this is the one function to point at them when they exist."""
    if not hours:
        return []
    starts = [datetime.fromtimestamp(h, UTC) for h in hours]
    slot, in_any = slot_of(ledger.c.ts, starts, timedelta(hours=1))
    # Slotted in a subquery, grouped outside: PostgreSQL binds each parameter on its own, so
    # the same CASE written twice (select list and GROUP BY) would not be the same expression.
    rows_in = (
        sa.select(
            ledger.c.org_id,
            slot.label("slot"),
            ledger.c.cost_usd,
            (ledger.c.input_tokens + ledger.c.output_tokens).label("tokens"),
        )
        .where(in_any, ledger.c.org_id.is_not(None), NOT_CACHED)
        .subquery()
    )
    stmt = sa.select(
        rows_in.c.org_id,
        rows_in.c.slot,
        sa.func.coalesce(nanos_sum(rows_in.c.cost_usd), 0),
        sa.func.coalesce(sa.func.sum(rows_in.c.tokens), 0),
    ).group_by(rows_in.c.org_id, rows_in.c.slot)
    with connect_read(bind) as conn:
        rows = conn.execute(stmt).all()
    return sorted(
        (HourUse(org, hours[int(i)], int(usd), int(tokens)) for org, i, usd, tokens in rows),
        key=lambda u: (u.org_id, u.hour),
    )
