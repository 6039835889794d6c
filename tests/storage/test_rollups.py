"""The rollup job and its reconciliation on SQLite and PostgreSQL: randomised traffic from two
writers with late rows and repeated runs rolls up to exactly the raw ledger (the latency
histograms to exactly the raw rows' buckets); a row deleted behind the job's back is found,
and repaired."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.analytics.latency import bucket_of
from costwarden.analytics.query import SpendQuery
from costwarden.analytics.rollup import (
    SLICES,
    Drift,
    Totals,
    day_of,
    hour_of,
    row_totals,
    tag_rollup,
)
from costwarden.core.records import LedgerRecord
from costwarden.storage.analytics_read import spend
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.partitions import epoch_ms
from costwarden.storage.reconciliation import reconcile
from costwarden.storage.rollups import (
    EVERY_ORG,
    PRUNED,
    WATERMARK,
    RollupRun,
    repair,
    roll_up,
    set_state,
    watermark,
)
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
)
from tests.storage.conftest import (
    expected_hourly,
    hourly_rollup,
    insert_records,
    ledger_row,
    random_record,
)

BASE = datetime(2026, 11, 1, tzinfo=UTC)
LAG_MS = 1500  # far longer than a writer transaction takes, even on a loaded machine
Counts = dict[tuple[Any, ...], int]


def _grouped_slices(full: Any, bucket: str) -> dict[tuple[Any, ...], Totals]:
    """The slices (analytics.rollup.SLICES) of full-cube rows, summed in Python."""
    out: dict[tuple[Any, ...], Totals] = {}
    for row in full:
        for name, org_column, value_column in SLICES:
            key = (
                row[bucket], name, row[org_column] if org_column else "",
                row[value_column] if value_column else "",
            )  # fmt: skip
            out.setdefault(key, Totals()).add(Totals.of(row))
    return out


def _expected_latency(records: list[LedgerRecord]) -> tuple[Counts, Counts]:
    """(hourly, daily) latency histograms: each raw row bucketed by ``bucket_of``."""
    hourly: Counts = {}
    daily: Counts = {}
    for r in records:
        bucket = bucket_of(r.latency_ms)
        for org in (r.org_id or "", EVERY_ORG):  # each org's, and every org's together
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
        assert hourly_rollup(engine) == expected_hourly(first)
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
    assert hourly_rollup(engine) == expected_hourly(everything)
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
    # Every slice, hourly and daily, is its grouping of the full hourly or daily rows.
    with engine.connect() as conn:
        hourly = conn.execute(sa.select(rollup_hourly)).mappings().all()
        for full, table, bucket in (
            (daily, rollup_slices_daily, "day"), (hourly, rollup_slices_hourly, "hour")
        ):
            slices = conn.execute(sa.select(table)).mappings().all()
            assert _grouped_slices(full, bucket) == {
                (r[bucket], r["slice"], r["org_id"], r["value"]): Totals.of(r) for r in slices
            }

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
    assert hourly_rollup(engine) == expected_hourly(remaining)
    assert _latency(engine) == _expected_latency(remaining)


def _counts(records: list[LedgerRecord], gone: LedgerRecord) -> tuple[str, str]:
    """(ledger, rollup) request counts of the deleted row's day and org."""
    same = [
        r for r in records if day_of(r.ts) == day_of(gone.ts) and r.org_id == gone.org_id
    ]
    return str(len(same) - 1), str(len(same))


def test_a_run_told_to_stop_leaves_the_watermark_and_the_next_finishes(engine: Engine) -> None:
    """A run that loses its lease between days (on_day says stop) keeps what it recomputed
    (recomputing is idempotent) but not the watermark: the next run takes the same rows."""
    rng = random.Random(11)
    records = [
        random_record(rng, BASE + timedelta(days=d, hours=h)) for d in range(3) for h in (1, 7)
    ]
    insert_records(engine, records, 1)
    with engine.begin() as conn:
        set_state(conn, WATERMARK, 0)
    asked: list[int] = []

    def on_day() -> bool:
        asked.append(1)
        return len(asked) < 2  # the lease is gone by the second day

    run = roll_up(engine, lag_ms=0, on_day=on_day)
    assert (run.complete, run.hours, run.watermark) == (False, 2, 0)
    with engine.connect() as conn:
        assert watermark(conn) == 0
    assert hourly_rollup(engine) == expected_hourly(records[:2])  # the first day only
    done = roll_up(engine, lag_ms=0)
    assert done.complete and done.hours == 6 and done.watermark is not None
    assert hourly_rollup(engine) == expected_hourly(records)


def test_a_first_run_recomputes_the_hours_with_rows_not_the_gaps_between(engine: Engine) -> None:
    """With no watermark the job takes the hours that hold ledger rows, and the hours that
    have rollup rows already (the watermark lost, their raw rows deleted since: cleared), not
    every hour between the first row and the last."""
    rng = random.Random(12)
    early, middle, late = (random_record(rng, BASE + timedelta(hours=h)) for h in (1, 150, 300))
    insert_records(engine, [early, middle, late], 1)
    first = roll_up(engine, lag_ms=0)
    assert first.complete and first.hours == 3  # not the 300 hours the rows span
    assert hourly_rollup(engine) == expected_hourly([early, middle, late])
    with engine.begin() as conn:
        conn.execute(ledger.delete().where(ledger.c.request_id == middle.request_id))
        conn.execute(analytics_state.delete().where(analytics_state.c.name == WATERMARK))
    again = roll_up(engine, lag_ms=0)
    assert again.complete and again.hours == 3  # the middle hour: its rollup rows only
    assert hourly_rollup(engine) == expected_hourly([early, late])


def test_late_rows_of_pruned_hours_are_added_once_when_two_runs_overlap(engine: Engine) -> None:
    """Two holders of one lease (a lapse mid-run): both find the same late row of a pruned
    hour; only the run that moves the watermark from where both started adds it."""
    rng = random.Random(12)
    early = [random_record(rng, BASE + timedelta(hours=h)) for h in range(0, 30, 3)]
    insert_records(engine, early, 1)
    with engine.begin() as conn:
        set_state(conn, WATERMARK, 0)
    roll_up(engine, lag_ms=0)
    with engine.begin() as conn:
        rolled = watermark(conn)
        assert rolled is not None
        set_state(conn, PRUNED, epoch_ms(BASE + timedelta(days=2)))  # both days pruned
        # Late rows of hour 3, whose raw row early[1] is gone: recomputing would lose it.
        late = [random_record(rng, BASE + timedelta(hours=3, minutes=m)) for m in (1, 2)]
        insert_records(conn, late, rolled + 1)
        conn.execute(ledger.delete().where(ledger.c.request_id == early[1].request_id))
    time.sleep(0.005)  # the database's clock past rolled + 1
    other: list[RollupRun] = []

    def on_day() -> bool:
        if not other:  # the other holder's run, start to end, while this one is between days
            other.append(roll_up(engine, lag_ms=0))
        return True

    mine = roll_up(engine, lag_ms=0, on_day=on_day)
    assert other[0].complete and other[0].hours == 1
    assert not mine.complete  # the watermark had moved: its late rows were the other's
    assert roll_up(engine, lag_ms=0).hours == 0
    # Added once; the pruned hour kept the row gone from the raw ledger (early[1]).
    assert hourly_rollup(engine) == expected_hourly([*early, *late])


def _cached(record: LedgerRecord, saved: str) -> LedgerRecord:
    """``record`` as a response-cache hit: $0, ``saved`` what the call would have cost."""
    return dataclasses.replace(
        record, status="cached", cost_usd=Decimal(0), saved_usd=Decimal(saved)
    )


def test_response_cache_savings_roll_up_exactly(engine: Engine) -> None:
    """saved_usd is summed like cost_usd, exactly, into every rollup (hourly, daily, tags,
    slices), apart from cache_savings_usd; a hit is counted as requests of status cached;
    a read over the raw ledger and the same read over the rollups agree."""
    rng = random.Random(16)
    hour = BASE + timedelta(hours=5)
    traffic = [random_record(rng, BASE + timedelta(seconds=rng.uniform(0, 2 * 86400)))
               for _ in range(120)]  # fmt: skip
    mine = [
        _cached(dataclasses.replace(random_record(rng, hour + timedelta(minutes=m)),
                                    org_id="org_a", tags=tags), saved)
        for m, saved, tags in ((1, "0.000000001", {"team": "ml"}), (2, "1.1", {"team": "ml"}),
                               (3, "2.25", {}))
    ]  # fmt: skip
    theirs = _cached(dataclasses.replace(random_record(rng, hour), org_id="org_b"), "0.5")
    records = [*traffic, *mine, theirs]
    insert_records(engine, records, 1)
    q = SpendQuery(BASE, BASE + timedelta(days=2), by=("org_id", "status"))
    from_raw = spend(engine, q)
    roll_up(engine, lag_ms=0)
    assert hourly_rollup(engine) == expected_hourly(records)
    assert reconcile(engine, _days(records)) == []
    assert spend(engine, q) == from_raw  # the rollups and the raw ledger agree
    cached = {row.keys[0]: row.totals for row in from_raw if row.keys[1] == "cached"}
    assert cached["org_a"].requests == 3 and cached["org_b"].requests == 1
    assert cached["org_a"].saved_usd == Decimal("3.350000001")
    assert cached["org_b"].saved_usd == Decimal("0.5")
    assert all(t.cost_usd == 0 and t.cache_savings_usd == 0 for t in cached.values())
    assert all(row.totals.saved_usd == 0 for row in from_raw if row.keys[1] != "cached")
    day = day_of(hour)
    with engine.connect() as conn:
        daily = conn.execute(
            sa.select(rollup_daily.c.saved_usd).where(
                rollup_daily.c.day == day, rollup_daily.c.org_id == "org_a",
                rollup_daily.c.status == "cached",
            )
        ).scalars().all()  # fmt: skip
        org_slice = conn.execute(
            sa.select(rollup_slices_daily.c.saved_usd).where(
                rollup_slices_daily.c.day == day, rollup_slices_daily.c.slice == "status",
                rollup_slices_daily.c.org_id == "org_a", rollup_slices_daily.c.value == "cached",
            )
        ).scalar_one()  # fmt: skip
        tag = conn.execute(
            sa.select(rollup_tags_daily.c.saved_usd).where(
                rollup_tags_daily.c.day == day, rollup_tags_daily.c.org_id == "org_a",
                rollup_tags_daily.c.tag == "team=ml",
            )
        ).scalar_one()  # fmt: skip
    assert sum(daily, Decimal(0)) == Decimal("3.350000001")
    assert type(org_slice) is Decimal and org_slice == Decimal("3.350000001")
    ml = [r for r in records if r.org_id == "org_a" and r.tags.get("team") == "ml"]
    want_tag = sum((r.saved_usd for r in ml if day_of(r.ts) == day), Decimal(0))
    assert tag == want_tag == Decimal("1.100000001")
