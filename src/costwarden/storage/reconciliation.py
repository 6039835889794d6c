"""Reconciliation: each day's rollup against the raw ledger, exactly.

For each day, the raw ledger's totals per org (requests, tokens, cost) against the daily
rollup's, and the requests the day's latency histograms count; any difference is a
:class:`~costwarden.analytics.rollup.Drift` (a row written behind the job's back, or deleted).
Both sides take only the rows written up to the job's watermark: the next run rolls up the
rest. A day retention may have pruned is not compared (its raw side is short).
``storage.rollups.repair`` recomputes a day that drifted.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from costwarden.analytics.rollup import HOUR, Drift, Totals, day_start, drifts
from costwarden.storage.db import Bind, begin_write, connect_read
from costwarden.storage.rollups import (
    EVERY_ORG,
    is_pruned,
    pruned_before,
    raw_totals,
    set_state,
    watermark,
)
from costwarden.storage.schema import analytics_state, rollup_daily, rollup_latency_daily

RECONCILED = "reconciled.epoch_day"  # the last day the daily check covered


def _ledger_day(conn: Connection, day: str, upto: int | None) -> dict[str, Totals]:
    """The raw ledger's totals per org on ``day``, of the rows the job has had the chance to
    roll up (written up to its watermark ``upto``; rows from before written_ms existed)."""
    start = day_start(day)
    found = raw_totals(conn, start, start + 24 * HOUR, upto, ["org_id"])
    return {key[0]: totals for key, totals in found.items()}


def _latency_day(conn: Connection, day: str) -> dict[str, int]:
    """The requests the day's latency histograms count, per org."""
    t = rollup_latency_daily.c
    stmt = (
        sa.select(t.org_id, sa.func.sum(t.requests))
        .where(t.day == day, t.org_id != EVERY_ORG)
        .group_by(t.org_id)
    )
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
        horizon = pruned_before(conn)
        for day in days:
            if is_pruned(day_start(day), horizon):
                continue  # its raw rows may be partly gone: no comparison to make
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
        set_state(conn, RECONCILED, epoch_day)
