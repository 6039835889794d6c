"""Latency histograms in the database, on SQLite and PostgreSQL: the SQL bucket of every
boundary value is the Python one; a window's histogram (daily, hourly and raw parts) equals
bucketing its raw rows; histograms missing after the upgrade are filled, and a day whose
histogram misses requests is found by the reconciliation and repaired."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.analytics.latency import BOUNDS, bucket_of, histogram
from costwarden.analytics.rollup import Drift, day_of, day_start, hour_of
from costwarden.core.records import LedgerRecord
from costwarden.storage.analytics_read import latency_histogram
from costwarden.storage.db import create_engine_for
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.reconciliation import reconcile
from costwarden.storage.rollups import (
    EVERY_ORG,
    LATENCY_BUCKET,
    LATENCY_FILLED,
    repair,
    roll_up,
)
from costwarden.storage.schema import (
    analytics_state,
    ledger,
    rollup_latency_daily,
    rollup_latency_hourly,
)
from tests.storage.conftest import BACKENDS, migrated_db_url, random_record

HOUR = datetime(2026, 11, 3, 14, tzinfo=UTC)
END = HOUR + timedelta(hours=2)  # the window read: two hours, not a whole day
# Every bound, the doubles either side of it, and the edges: 0, below 0, tiny, huge (a
# latency whose microseconds still fit the rollup's BIGINT sums: 1e12 ms is 31 years).
EDGES = sorted(
    {
        *BOUNDS,
        *(math.nextafter(b, math.inf) for b in BOUNDS),
        *(math.nextafter(b, -math.inf) for b in BOUNDS),
        0.0, -0.0, -3.5, 1e-9, 5e-324, 0.5, 1e7, 1e12,
    }
)  # fmt: skip


async def _write(engine: Engine, records: list[LedgerRecord]) -> None:
    async with LedgerWriter(engine, flush_interval=0.01) as writer:
        for record in records:
            writer.submit(record)


async def test_sql_buckets_every_boundary_value_as_python_does(engine: Engine) -> None:
    rng = random.Random(1)
    records = [
        dataclasses.replace(
            random_record(rng, HOUR + timedelta(seconds=i)), org_id=f"v{i:04d}", latency_ms=ms
        )
        for i, ms in enumerate(EDGES)
    ]
    await _write(engine, records)
    want = {r.org_id: bucket_of(r.latency_ms) for r in records}
    # The expression itself, on each raw row (what the read path's raw part runs).
    with engine.connect() as conn:
        got = {org: b for org, b in conn.execute(sa.select(ledger.c.org_id, LATENCY_BUCKET))}
    assert got == want
    # Before any rollup the whole window is read raw; afterwards from the hourly rows (one
    # org a value, so a value in the wrong bucket cannot hide behind another).
    expected = histogram(r.latency_ms for r in records)
    assert await asyncio.to_thread(latency_histogram, engine, HOUR, END) == expected
    await asyncio.to_thread(roll_up, engine, lag_ms=0)
    with engine.connect() as conn:
        t = rollup_latency_hourly.c
        rows = conn.execute(sa.select(t.org_id, t.bucket, t.requests)).all()
    every = {bucket: n for org, bucket, n in rows if org == EVERY_ORG}
    rows = [row for row in rows if row[0] != EVERY_ORG]
    assert {org: bucket for org, bucket, _ in rows} == want
    assert all(n == 1 for _, _, n in rows) and len(rows) == len(records)
    assert every == expected  # every org's together: what a platform-wide read takes
    assert await asyncio.to_thread(latency_histogram, engine, HOUR, END) == expected


async def _traffic(engine: Engine) -> tuple[list[LedgerRecord], datetime]:
    rng = random.Random(5)
    now = datetime.now(UTC)
    records = [
        random_record(rng, now - timedelta(seconds=rng.uniform(5, 4 * 86400))) for _ in range(600)
    ]
    await _write(engine, records)
    await asyncio.to_thread(roll_up, engine, lag_ms=0)
    fresh = [
        random_record(rng, max(hour_of(now), now - timedelta(seconds=rng.uniform(0, 900))))
        for _ in range(40)
    ]
    await _write(engine, fresh)
    return [*records, *fresh], now


@pytest.fixture
async def traffic(engine: Engine) -> tuple[list[LedgerRecord], datetime]:
    """Four days of rows up to now, rolled up, then rows in the current hour the rollup has
    not seen (the read path's raw part); and now."""
    return await _traffic(engine)


@pytest.fixture(scope="module", params=BACKENDS)
def traffic_once(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, list[LedgerRecord], datetime]]:
    """``traffic`` written once per backend, in a database of its own, for the tests that
    only read it (writing it is most of their time); the tests that change it take
    ``traffic``."""
    engine = create_engine_for(migrated_db_url(str(request.param), tmp_path_factory, request))
    try:
        records, now = asyncio.run(_traffic(engine))
        yield engine, records, now
    finally:
        engine.dispose()


@pytest.mark.parametrize("tenant", [None, "org_a", "org_b"])
async def test_a_window_histogram_is_its_raw_rows_bucketed(
    traffic_once: tuple[Engine, list[LedgerRecord], datetime], tenant: str | None
) -> None:
    engine, records, now = traffic_once
    until = now + timedelta(seconds=1)
    windows = [
        hour_of(now) - timedelta(hours=72),  # hours, whole days, hours, the raw hour
        day_start(day_of(now)) - timedelta(days=2),  # whole days first
        hour_of(now) - timedelta(hours=5),  # hours and the raw hour
        hour_of(now),  # the raw hour only
    ]
    for since in windows:
        got = await asyncio.to_thread(latency_histogram, engine, since, until, tenant)
        want = histogram(
            r.latency_ms
            for r in records
            if since <= r.ts < until and (tenant is None or r.org_id == tenant)
        )
        assert got == want, since
        assert sum(got.values()) > 0


async def test_histograms_missing_after_the_upgrade_are_filled(
    engine: Engine, traffic: tuple[list[LedgerRecord], datetime]
) -> None:
    records, now = traffic
    since = hour_of(now) - timedelta(hours=96)
    before = await asyncio.to_thread(latency_histogram, engine, since, now)
    # As migration 0010 leaves a database whose rollups ran before it: no histograms, not
    # marked filled.
    with engine.begin() as conn:
        conn.execute(rollup_latency_hourly.delete())
        conn.execute(rollup_latency_daily.delete())
        conn.execute(analytics_state.delete().where(analytics_state.c.name == LATENCY_FILLED))
    assert sum((await asyncio.to_thread(latency_histogram, engine, since, now)).values()) < 100
    await asyncio.to_thread(roll_up, engine, lag_ms=0)
    assert await asyncio.to_thread(latency_histogram, engine, since, now) == before
    days = sorted({day_of(r.ts) for r in records})
    assert await asyncio.to_thread(reconcile, engine, days) == []


async def test_reconciliation_finds_a_histogram_that_misses_requests(
    engine: Engine, traffic: tuple[list[LedgerRecord], datetime]
) -> None:
    records, now = traffic
    day = day_of(now - timedelta(days=2))
    on_day = [r for r in records if day_of(r.ts) == day and r.org_id == "org_a"]
    with engine.begin() as conn:
        t = rollup_latency_daily
        conn.execute(t.delete().where(t.c.day == day, t.c.org_id == "org_a"))
    found = await asyncio.to_thread(reconcile, engine, [day])
    assert found == [Drift(day, "org_a", "latency_requests", str(len(on_day)), "0")]
    await asyncio.to_thread(repair, engine, day)
    assert await asyncio.to_thread(reconcile, engine, [day]) == []
