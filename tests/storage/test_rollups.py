"""The rollup job and its reconciliation on SQLite and PostgreSQL: randomised traffic from two
writers with late rows and repeated runs rolls up to exactly the raw ledger (the latency
histograms to exactly the raw rows' buckets); a row deleted behind the job's back is found,
and repaired."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.analytics.latency import bucket_of
from costwarden.analytics.rollup import (
    DIMENSIONS,
    SLICES,
    Drift,
    Totals,
    day_of,
    hour_of,
    row_totals,
    tag_rollup,
)
from costwarden.core.records import LedgerRecord
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.rollups import reconcile, repair, roll_up
from costwarden.storage.schema import (
    ledger,
    rollup_daily,
    rollup_hourly,
    rollup_latency_daily,
    rollup_latency_hourly,
    rollup_slices_daily,
    rollup_tags_daily,
)
from tests.storage.conftest import ledger_row, random_record

BASE = datetime(2026, 11, 1, tzinfo=UTC)
LAG_MS = 1500  # far longer than a writer transaction takes, even on a loaded machine
Counts = dict[tuple[Any, ...], int]


def _expected(records: list[LedgerRecord]) -> dict[tuple[Any, ...], Totals]:
    out: dict[tuple[Any, ...], Totals] = {}
    for r in records:
        row = ledger_row(r)
        key = (hour_of(r.ts), *(row[d] or "" for d in DIMENSIONS))
        out.setdefault(key, Totals()).add(row_totals(row))
    return out


def _hourly(engine: Engine) -> dict[tuple[Any, ...], Totals]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(rollup_hourly)).mappings().all()
    return {(row["hour"], *(row[d] for d in DIMENSIONS)): Totals.of(row) for row in rows}


def _expected_latency(records: list[LedgerRecord]) -> tuple[Counts, Counts]:
    """(hourly, daily) latency histograms: each raw row bucketed by ``bucket_of``."""
    hourly: Counts = {}
    daily: Counts = {}
    for r in records:
        org, bucket = r.org_id or "", bucket_of(r.latency_ms)
        hourly[(hour_of(r.ts), org, bucket)] = hourly.get((hour_of(r.ts), org, bucket), 0) + 1
        daily[(day_of(r.ts), org, bucket)] = daily.get((day_of(r.ts), org, bucket), 0) + 1
    return hourly, daily


def _latency(engine: Engine) -> tuple[Counts, Counts]:
    with engine.connect() as conn:
        hourly = conn.execute(sa.select(rollup_latency_hourly)).all()
        daily = conn.execute(sa.select(rollup_latency_daily)).all()
    return {tuple(r[:3]): r[3] for r in hourly}, {tuple(r[:3]): r[3] for r in daily}


def _days(records: list[LedgerRecord]) -> list[str]:
    return sorted({day_of(r.ts) for r in records})


async def test_randomised_traffic_rolls_up_to_exactly_the_ledger(
    engine: Engine, db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    rng = random.Random(20261202)
    def spread(days: int, count: int) -> list[LedgerRecord]:
        return [
            random_record(rng, BASE + timedelta(seconds=rng.uniform(0, days * 86400)))
            for _ in range(count)
        ]

    first = spread(3, 400)
    # Written later but stamped earlier than much of what the job already rolled up: the
    # first day's hours (as a batched writer holding rows through an outage would).
    late = spread(1, 150)
    newer = spread(4, 150)
    writers = [
        LedgerWriter(engine, flush_interval=0.01),
        LedgerWriter(make_engine(db_url), flush_interval=0.01),  # a second process's writer
    ]
    for w in writers:
        await w.__aenter__()
    try:
        for i, record in enumerate(first):
            writers[i % 2].submit(record)
        for w in writers:
            await w.flush()
        runs = [await asyncio.to_thread(roll_up, engine, lag_ms=0) for _ in range(2)]
        assert runs[0].rows == len(first) and runs[1].hours == 0  # the second finds nothing
        assert _hourly(engine) == _expected(first)
        assert _latency(engine) == _expected_latency(first)

        # Late and new rows from both writers while the job runs alongside them.
        async def write() -> None:
            for i, record in enumerate([*late, *newer]):
                writers[i % 2].submit(record)
                if i % 25 == 0:
                    await asyncio.sleep(0.005)
            for w in writers:
                await w.flush()

        async def run_job() -> None:
            # A lag longer than a writer's transaction: a row stamped (written_ms) but not
            # yet committed when a run reads is never behind the watermark.
            for _ in range(6):
                await asyncio.to_thread(roll_up, engine, lag_ms=LAG_MS)
                await asyncio.sleep(0.01)

        await asyncio.gather(write(), run_job())
    finally:
        for w in writers:
            await w.__aexit__(None, None, None)
    await asyncio.sleep(LAG_MS / 1000)  # every row is past the lag: the last run takes all
    await asyncio.to_thread(roll_up, engine, lag_ms=LAG_MS)
    again = await asyncio.to_thread(roll_up, engine, lag_ms=LAG_MS)
    everything = [*first, *late, *newer]
    assert again.hours == 0
    assert _hourly(engine) == _expected(everything)
    assert _latency(engine) == _expected_latency(everything)
    days = _days(everything)
    assert await asyncio.to_thread(reconcile, engine, days) == []

    # Daily rows are the sum of their hours; tags per day equal the rows carrying them.
    with engine.connect() as conn:
        daily = conn.execute(sa.select(rollup_daily)).mappings().all()
        tagged = conn.execute(sa.select(rollup_tags_daily)).mappings().all()
    by_day: dict[str, Totals] = {}
    for row in daily:
        by_day.setdefault(row["day"], Totals()).add(Totals.of(row))
    for day in days:
        want = Totals()
        for r in everything:
            if day_of(r.ts) == day:
                want.add(row_totals(ledger_row(r)))
        assert by_day[day] == want
    want_tags: dict[tuple[str, str, str], Totals] = {}
    for day in days:
        rows = [ledger_row(r) for r in everything if day_of(r.ts) == day]
        for (org, tag), totals in tag_rollup(rows).items():
            want_tags[(day, org, tag)] = totals
    assert {(r["day"], r["org_id"], r["tag"]): Totals.of(r) for r in tagged} == want_tags
    # Every slice is its grouping of the full daily rows.
    with engine.connect() as conn:
        slices = conn.execute(sa.select(rollup_slices_daily)).mappings().all()
    want_slices: dict[tuple[str, str, str, str], Totals] = {}
    for row in daily:
        for name, org_column, value_column in SLICES:
            key = (
                row["day"], name, row[org_column] if org_column else "",
                row[value_column] if value_column else "",
            )  # fmt: skip
            want_slices.setdefault(key, Totals()).add(Totals.of(row))
    got_slices = {(r["day"], r["slice"], r["org_id"], r["value"]): Totals.of(r) for r in slices}
    assert got_slices == want_slices

    # A row deleted behind the job's back: reconciliation finds it, repair mends it.
    gone = late[0]
    with engine.begin() as conn:
        conn.execute(ledger.delete().where(ledger.c.request_id == gone.request_id))
    found = await asyncio.to_thread(reconcile, engine, days)
    org = gone.org_id or ""
    assert Drift(day_of(gone.ts), org, "requests", *_counts(everything, gone)) in found
    assert {(d.day, d.org_id) for d in found} == {(day_of(gone.ts), org)}
    await asyncio.to_thread(repair, engine, day_of(gone.ts))
    assert await asyncio.to_thread(reconcile, engine, days) == []
    remaining = [r for r in everything if r.request_id != gone.request_id]
    assert _hourly(engine) == _expected(remaining)
    assert _latency(engine) == _expected_latency(remaining)


def _counts(records: list[LedgerRecord], gone: LedgerRecord) -> tuple[str, str]:
    """(ledger, rollup) request counts of the deleted row's day and org."""
    same = [
        r for r in records if day_of(r.ts) == day_of(gone.ts) and r.org_id == gone.org_id
    ]
    return str(len(same) - 1), str(len(same))
