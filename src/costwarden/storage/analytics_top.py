"""Top-N by cost: the ``n`` groups of a query that cost the most, exactly, without summing
every group.

Two reads. The first chooses the candidates, the groups that can be among the ``n``; the
second sums every measure of the candidates alone (``analytics_read.spend`` with ``among``),
and ranks them. The first read is one of:

- **lists** (:func:`_by_lists`), for a ranking of every org by one dimension (or of the
  orgs), no filter: each day's slice read costliest first, a few dozen rows at a time, until
  ``analytics.ranking`` can tell who can still make it (Fagin's threshold algorithm): a few
  thousand rows where summing every key of 30 days reads 150,000;
- **bounds** (:func:`_by_bounds`), for the others (filtered, or one org's): every group's
  cost alone. On PostgreSQL it is exact (NUMERIC), so the candidates are the ``n``
  costliest and any tied with the last. On SQLite, where an exact sum of decimal text is a
  Python aggregate (a few µs a row), costs are summed as doubles with a bound on each
  group's error (:func:`_rank_of`); a group is a candidate unless even its upper bound is
  below the ``n``-th highest lower bound.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from costwarden.analytics.query import Plan, SpendQuery, plan, uses_tags
from costwarden.analytics.ranking import Unit, candidates
from costwarden.analytics.rollup import day_of
from costwarden.storage.analytics_read import (
    Reading,
    SpendRow,
    read_parts,
    rolled_until,
    slice_for,
    spend,
)
from costwarden.storage.db import Bind, connect_read, money_sum
from costwarden.storage.rollups import RAW_DIMS
from costwarden.storage.schema import ledger, rollup_slices_daily

_c = ledger.c
_FIRST_READ = 64  # rows of each list read first; four times more in the next round
_SHORT = 4 * _FIRST_READ  # groups in a day's list at most for which lists do not pay
_ROUNDS = 1  # still undecided after these: every group's cost is summed instead


def _too_many(found: set[str], n: int) -> bool:
    """More candidates than it pays to sum every measure of: ranked on cost alone first."""
    return len(found) > 4 * n + 32
_ZERO = Decimal(0)


def top(bind: Bind, q: SpendQuery, n: int) -> list[SpendRow]:
    """The ``n`` groups of ``q`` (one dimension, no granularity) that cost the most,
    costliest first (ties by value), with every measure."""
    if len(q.by) != 1 or q.granularity is not None:
        raise ValueError("top ranks one dimension over the whole range")
    if n < 1:
        return []
    if uses_tags(q):  # tags are summed in Python anyway: rank the full answer
        return _ranked(spend(bind, q), n)
    with connect_read(bind) as conn:
        where = plan(q, rolled_until(conn))
        listed = _listed(q)
        found = _by_lists(conn, q, where, listed, n) if listed and where.days else None
        if found is None or _too_many(found, n):
            # Undecided after a few rounds, or too many to sum every measure of (costs
            # alike, as with a few hundred end users): rank those on cost alone first.
            found = _by_bounds(conn, q, n, among=found)
    if not found:
        return []
    return _ranked(spend(bind, q, among=(q.by[0], found)), n)


def _ranked(rows: list[SpendRow], n: int) -> list[SpendRow]:
    rows.sort(key=lambda r: (-r.totals.cost_usd, r.keys))
    return rows[:n]


# ------------------------------------------------------------------ the lists


def _listed(q: SpendQuery) -> tuple[str, sa.ColumnElement[Any]] | None:
    """The daily slice whose rows are ``q``'s groups, one row per group and day (every org
    by a dimension, or the orgs), and the column holding the group; None for a query the
    lists cannot rank (a filter, or one org's groups: those slices mix orgs)."""
    if q.filters or q.tenant is not None:
        return None
    picked = slice_for(q)
    if picked is None:
        return None
    name, _ = picked
    if name == "org":
        return name, rollup_slices_daily.c.org_id
    if name.startswith("all:"):
        return name, rollup_slices_daily.c.value
    return None


def _by_lists(
    conn: Connection,
    q: SpendQuery,
    where: Plan,
    listed: tuple[str, sa.ColumnElement[Any]],
    n: int,
) -> set[str] | None:
    """The candidates by the threshold algorithm over the days of the range: each whole
    day's list, each edge day's (its hours in the range, bounded by the whole day's row), and
    the raw rows after the watermark, summed in full; None if still undecided after
    ``_ROUNDS`` rounds."""
    if _groups_of_day(conn, listed[0], where.days[-1]) <= _SHORT:
        return None  # a few hundred groups a day: summing each one's cost is as quick
    edges = sorted({day_of(hour) for hour in where.hours})
    days = [(day, True) for day in where.days] + [(day, False) for day in edges]
    raw = _raw_costs(conn, q, *where.raw) if where.raw is not None else {}
    limit = _FIRST_READ
    read: dict[str, dict[str, Decimal]] = {}
    done: set[str] = set()  # days read to their end
    for _ in range(_ROUNDS):
        _read_lists(conn, listed, [d for d, _ in days if d not in done], limit, read, done)
        units = [Unit(True, raw, None)] + [
            Unit(exact, read[day], None if day in done else _cursor(read[day]))
            for day, exact in days
        ]
        found = candidates(units, n)
        if found is not None:
            return found
        limit *= 4
    return None


def _groups_of_day(conn: Connection, name: str, day: str) -> int:
    t = rollup_slices_daily.c
    stmt = sa.select(sa.func.count()).where(t.day == day, t.slice == name)
    return int(conn.execute(stmt).scalar_one())


def _cursor(costs: dict[str, Decimal]) -> Decimal | None:
    """The cost of the last row read of a list: the least read (rows come in the order of
    their double, so the least exact cost is within ``ranking.SLACK`` of the last's)."""
    return min(costs.values()) if costs else None


def _read_lists(
    conn: Connection,
    listed: tuple[str, sa.ColumnElement[Any]],
    days: list[str],
    limit: int,
    read: dict[str, dict[str, Decimal]],
    done: set[str],
) -> None:
    """The ``limit`` costliest rows of each day's list, all in one statement (a list with
    fewer is read to its end)."""
    name, group = listed
    t = rollup_slices_daily.c
    parts = [
        sa.select(sa.literal(i).label("i"), group.label("g"), t.cost_usd)
        .where(t.day == day, t.slice == name)
        .order_by(t.cost_rank.desc())
        .limit(limit)
        .subquery()
        for i, day in enumerate(days)
    ]
    if not parts:
        return
    union = sa.union_all(*(sa.select(part) for part in parts))
    found: dict[int, dict[str, Decimal]] = {i: {} for i in range(len(days))}
    for i, g, cost in conn.execute(union).all():
        found[i][g] = Decimal(cost)
    for i, day in enumerate(days):
        read[day] = found[i]
        if len(found[i]) < limit:
            done.add(day)


def _raw_costs(
    conn: Connection, q: SpendQuery, start: datetime, end: datetime
) -> dict[str, Decimal]:
    """Each group's cost over the ledger's rows in [start, end) (after the watermark)."""
    column = RAW_DIMS[q.by[0]]
    stmt = (
        sa.select(column, money_sum(_c.cost_usd))
        .where(_c.ts >= start, _c.ts < end)
        .group_by(column)
    )
    return {value or "": Decimal(cost) for value, cost in conn.execute(stmt)}


# ------------------------------------------------------------------ the bounds


def _by_bounds(
    conn: Connection, q: SpendQuery, n: int, among: set[str] | None = None
) -> set[str]:
    """The candidates from each group's cost alone (see the module docstring), of every
    group or of those ``among``."""
    ranks: dict[str, tuple[Decimal, Decimal]] = {}  # value: (lower bound, upper bound)
    exact = conn.dialect.name != "sqlite"
    reading = _rank_reading(exact)
    if among is not None:
        reading = dataclasses.replace(reading, among=(q.by[0], among))
    for (_, (value,)), sums in read_parts(conn, q, reading):
        if not sums["requests"]:
            continue
        low, high = _rank_of(sums, exact)
        have = ranks.get(value)
        ranks[value] = (low, high) if have is None else (have[0] + low, have[1] + high)
    if not ranks:
        return set()
    lows = sorted((low for low, _ in ranks.values()), reverse=True)
    floor = lows[min(n, len(lows)) - 1]
    return {value for value, (_, high) in ranks.items() if high >= floor}


def _rank_reading(exact: bool) -> Reading:
    """Per group, its requests and cost (exact), or its cost as a double with what bounds
    the double's error (the sum of magnitudes, the number of terms)."""

    def sums(requests: Any, cost: sa.ColumnElement[Any]) -> list[sa.ColumnElement[Any]]:
        if exact:
            return [requests.label("requests"), money_sum(cost).label("cost")]
        double = sa.cast(cost, sa.Float)
        return [
            requests.label("requests"),
            sa.func.total(double).label("cost"),
            sa.func.total(sa.func.abs(double)).label("magnitude"),
            sa.func.count().label("terms"),
        ]

    return Reading(
        lambda table: sums(sa.func.sum(table.c.requests), table.c.cost_usd),
        sums(sa.func.count(), _c.cost_usd),
    )


# A generous bound on the relative error of one double: each decimal text is converted with
# at most a few ulps of error and each addition adds at most one (2**-53 of the magnitude).
_ULPS = Decimal(2) ** -50


def _rank_of(sums: Mapping[Any, Any], exact: bool) -> tuple[Decimal, Decimal]:
    """A group's cost as (lower bound, upper bound): the same exact figure twice, or a
    double's sum widened by its error bound, (terms + 8) x 2**-50 x the sum of magnitudes."""
    if exact:
        cost = Decimal(sums["cost"] or 0)
        return cost, cost
    approx = Decimal(sums["cost"] or 0.0)
    slack = (sums["terms"] + 8) * _ULPS * Decimal(sums["magnitude"] or 0.0)
    return approx - slack, approx + slack
