"""Raw-ledger retention on SQLite and PostgreSQL: the ledger's month partitions (made by the
migration and kept ahead, default rows moved), pruning (whole partitions dropped on
PostgreSQL, batches deleted elsewhere; never a row inside the retention or not rolled up),
rollups untouched by it, late rows of pruned hours added exactly once, reconciliation and
repair leaving pruned days alone."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.analytics.rollup import Totals, day_of, day_start, row_totals
from costwarden.core.records import LedgerRecord
from costwarden.storage import retention
from costwarden.storage.migrate import migrate
from costwarden.storage.partitions import DEFAULT_PARTITION, Month, epoch_ms, month_of
from costwarden.storage.reconciliation import reconcile
from costwarden.storage.retention import ensure_partitions, partitions, prune
from costwarden.storage.rollups import (
    PRUNED,
    WATERMARK,
    repair,
    roll_up,
    set_state,
    state,
    watermark,
)
from costwarden.storage.schema import (
    ledger,
    rollup_daily,
    rollup_hourly,
    rollup_slices_daily,
    rollup_slices_hourly,
    rollup_tags_daily,
    rollup_tags_hourly,
)
from tests.storage.conftest import (
    expected_hourly,
    hourly_rollup,
    insert_records,
    ledger_placement,
    ledger_row,
    random_record,
    timed_record,
)

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)  # in the past: the watermark is later
KEEP_DAYS = 40
CUTOFF = datetime(2026, 10, 11, tzinfo=UTC)  # NOW - 40 days, floored to the day
FIRST = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def fresh_engine(fresh_db_url: str, make_engine: Callable[[str], Engine]) -> Engine:
    """A migrated database of this test's own: partitions made or dropped stay here."""
    migrate(fresh_db_url)
    return make_engine(fresh_db_url)


def _ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(ledger.c.request_id)).scalars())


ROLLUPS = (
    rollup_hourly, rollup_daily, rollup_tags_hourly, rollup_tags_daily, rollup_slices_hourly,
    rollup_slices_daily,
)  # fmt: skip


def _rollups(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {t.name: sorted(tuple(r) for r in conn.execute(sa.select(t)).all()) for t in ROLLUPS}


def _daily(engine: Engine, table: sa.Table = rollup_daily) -> dict[str, Totals]:
    out: dict[str, Totals] = {}
    with engine.connect() as conn:
        stmt = sa.select(table)
        if table is rollup_slices_daily:
            stmt = stmt.where(table.c.slice == "total")
        for row in conn.execute(stmt).mappings():
            out.setdefault(row["day"], Totals()).add(Totals.of(row))
    return out


def _by_day(records: list[LedgerRecord]) -> dict[str, Totals]:
    out: dict[str, Totals] = {}
    for r in records:
        out.setdefault(day_of(r.ts), Totals()).add(row_totals(ledger_row(r)))
    return out


def _spread(rng: random.Random, count: int) -> list[datetime]:
    span = (NOW - FIRST).total_seconds()
    return [FIRST + timedelta(seconds=rng.uniform(0, span)) for _ in range(count)]


# --------------------------------------------------------------------------- partitions


@pytest.mark.parametrize("backend", ["postgresql"])
def test_the_migration_partitions_the_ledger_by_month_of_request_id(
    fresh_engine: Engine,
) -> None:
    this = month_of(datetime.now(UTC))
    ahead = [this, this.next(), this.next().next()]
    with fresh_engine.connect() as conn:
        kind = conn.exec_driver_sql("SELECT relkind FROM pg_class WHERE relname = 'ledger'")
        assert kind.scalar_one() == "p"
        found = conn.exec_driver_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'ledger'::regclass"
        ).scalars()
        assert set(found) == {DEFAULT_PARTITION, *(m.name for m in ahead)}
    rng = random.Random(1)
    inside = timed_record(rng, this.start + timedelta(days=3))
    edge = timed_record(rng, this.next().start)  # the next month's first millisecond
    odd = dataclasses.replace(random_record(rng, NOW), request_id="chatcmpl-legacy-1")
    old = timed_record(rng, datetime(2024, 1, 5, tzinfo=UTC))  # a month with no partition
    insert_records(fresh_engine, [inside, edge, odd, old], 1)
    assert ledger_placement(fresh_engine) == {
        inside.request_id: this.name,
        edge.request_id: this.next().name,
        odd.request_id: DEFAULT_PARTITION,
        old.request_id: DEFAULT_PARTITION,
    }
    # The key is request_id alone: the ledger's idempotent insert still works across them.
    with fresh_engine.begin() as conn:
        again = conn.exec_driver_sql(
            "INSERT INTO ledger SELECT * FROM ledger ON CONFLICT (request_id) DO NOTHING"
        )
        assert again.rowcount == 0


@pytest.mark.parametrize("backend", ["postgresql"])
def test_ensure_partitions_makes_the_months_ahead_and_moves_default_rows(
    fresh_engine: Engine,
) -> None:
    now = datetime(2031, 3, 10, tzinfo=UTC)  # no partition of 2031 exists yet
    rng = random.Random(2)
    april = [timed_record(rng, datetime(2031, 4, d, tzinfo=UTC)) for d in (1, 15, 30)]
    later = timed_record(rng, datetime(2031, 7, 1, tzinfo=UTC))  # beyond the three months
    insert_records(fresh_engine, [*april, later], 1234)
    with fresh_engine.connect() as conn:
        before = conn.execute(sa.select(ledger).order_by(ledger.c.request_id)).all()
    assert set(ledger_placement(fresh_engine).values()) == {DEFAULT_PARTITION}

    made = ensure_partitions(fresh_engine, now)
    assert made == ["ledger_p203103", "ledger_p203104", "ledger_p203105"]
    placed = ledger_placement(fresh_engine)
    assert {placed[r.request_id] for r in april} == {"ledger_p203104"}
    assert placed[later.request_id] == DEFAULT_PARTITION
    with fresh_engine.connect() as conn:
        after = conn.execute(sa.select(ledger).order_by(ledger.c.request_id)).all()
    assert after == before  # moved, not changed: written_ms too
    assert ensure_partitions(fresh_engine, now) == []  # nothing missing: a no-op


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_partition_change_gives_up_soon_behind_a_long_reader(
    fresh_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers queue behind a waiting ACCESS EXCLUSIVE request: the wait is bounded, and the
    change is made next time."""
    monkeypatch.setattr(retention, "LOCK_TIMEOUT_MS", 200)
    now = datetime(2031, 1, 10, tzinfo=UTC)
    with fresh_engine.connect() as reader, reader.begin():
        reader.execute(sa.select(sa.func.count()).select_from(ledger))  # holds its lock
        started = time.perf_counter()
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            ensure_partitions(fresh_engine, now)
        assert time.perf_counter() - started < 5
    assert ensure_partitions(fresh_engine, now) == [
        "ledger_p203101", "ledger_p203102", "ledger_p203103",
    ]  # fmt: skip


def test_ensure_partitions_is_a_no_op_on_sqlite(
    tmp_path: Any, make_engine: Callable[[str], Engine]
) -> None:
    url = f"sqlite:///{tmp_path}/cw.db"
    migrate(url)
    engine = make_engine(url)
    assert ensure_partitions(engine, NOW) == []
    with engine.connect() as conn:
        assert partitions(conn) == []


# --------------------------------------------------------------------------- pruning


def test_nothing_is_pruned_before_anything_is_rolled_up(fresh_engine: Engine) -> None:
    rng = random.Random(3)
    insert_records(
        fresh_engine, [timed_record(rng, FIRST + timedelta(days=i)) for i in range(5)], 1
    )
    assert prune(fresh_engine, keep_days=KEEP_DAYS, now=NOW) == retention.Pruned(None)
    assert prune(fresh_engine, keep_days=0, now=NOW) == retention.Pruned(None)
    assert len(_ids(fresh_engine)) == 5
    with fresh_engine.connect() as conn:
        assert state(conn, PRUNED) is None


def test_prune_removes_only_old_rolled_up_rows_and_rollups_stay(
    fresh_engine: Engine, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "BATCH_ROWS", 7)  # several batches
    for at in (FIRST, datetime(2026, 9, 1, tzinfo=UTC)):  # June to November
        ensure_partitions(fresh_engine, at)
    rng = random.Random(20261209)
    main = [timed_record(rng, ts) for ts in _spread(rng, 300)]
    odd = [  # ids of another shape: the DEFAULT partition on PostgreSQL
        dataclasses.replace(random_record(rng, ts), request_id=f"legacy-{i:04d}")
        for i, ts in enumerate(_spread(rng, 30))
    ]
    insert_records(fresh_engine, [*main, *odd], 1)
    with fresh_engine.begin() as conn:
        set_state(conn, WATERMARK, 0)  # only the rows' hours, not every hour since June
    assert roll_up(fresh_engine, lag_ms=0).hours > 0
    with fresh_engine.connect() as conn:
        rolled = watermark(conn)
        names_before = partitions(conn)
    assert rolled is not None
    rollups_before = _rollups(fresh_engine)
    # Written after the run: not rolled up yet, though their hours are long past.
    august = next(r for r in main if r.ts.month == 8)  # a day with rows rolled up
    late_timed = timed_record(rng, august.ts + timedelta(minutes=1))
    late_odd = dataclasses.replace(
        random_record(rng, datetime(2026, 7, 2, 3, tzinfo=UTC)), request_id="legacy-late"
    )
    late = [late_timed, late_odd]
    insert_records(fresh_engine, late, rolled + 1)
    everything = [*main, *odd, *late]

    pruned = prune(fresh_engine, keep_days=KEEP_DAYS, now=NOW)
    assert pruned.cutoff == CUTOFF
    with fresh_engine.connect() as conn:
        assert state(conn, PRUNED) == epoch_ms(CUTOFF)
        names_after = partitions(conn)
    kept = _ids(fresh_engine)
    if backend == "postgresql":
        # June, July, September dropped whole; August holds a row not rolled up: kept, its
        # old rows deleted; October is partly inside the retention: kept whole.
        assert pruned.partitions == ("ledger_p202606", "ledger_p202607", "ledger_p202609")
        assert len(names_before) - len(names_after) == 3
        assert set(names_before) - set(names_after) == set(pruned.partitions)
        october = Month(2026, 10)
        want = {r.request_id for r in main if r.request_id >= october.lower}
    else:
        assert pruned.partitions == () and names_after == []
        want = {r.request_id for r in main if r.ts >= CUTOFF}
    want |= {r.request_id for r in odd if r.ts >= CUTOFF}
    want |= {r.request_id for r in late}
    assert kept == want
    assert pruned.rows == len(everything) - len(kept)
    assert any(r.ts < CUTOFF for r in main if r.request_id in kept) is (backend == "postgresql")
    assert _rollups(fresh_engine) == rollups_before  # pruning touches no rollup

    # The late rows' hours are pruned: their rows are added, once, however often it runs.
    run = roll_up(fresh_engine, lag_ms=0)
    assert run.complete and run.hours == 2
    assert roll_up(fresh_engine, lag_ms=0).hours == 0
    assert hourly_rollup(fresh_engine) == expected_hourly(everything)
    assert _daily(fresh_engine) == _by_day(everything)
    assert _daily(fresh_engine, rollup_slices_daily) == _by_day(everything)  # slices too

    # Pruned days are not compared (their raw side is short) nor recomputed.
    days = sorted({day_of(r.ts) for r in everything})
    assert reconcile(fresh_engine, days) == []
    day = day_of(late_timed.ts)
    with fresh_engine.connect() as conn:
        raw = conn.execute(
            sa.select(sa.func.count()).where(
                ledger.c.ts >= day_start(day), ledger.c.ts < day_start(day) + timedelta(days=1)
            )
        ).scalar_one()
    assert raw < _daily(fresh_engine)[day].requests  # a comparison would have "found" drift
    assert repair(fresh_engine, day) == 0
    assert _daily(fresh_engine) == _by_day(everything)

    # Now rolled up, the late rows go too (August whole on PostgreSQL).
    again = prune(fresh_engine, keep_days=KEEP_DAYS, now=NOW)
    assert late_timed.request_id not in _ids(fresh_engine)
    assert late_odd.request_id not in _ids(fresh_engine)
    if backend == "postgresql":
        assert again.partitions == ("ledger_p202608",)
    assert hourly_rollup(fresh_engine) == expected_hourly(everything)


def test_a_recent_retention_is_capped_by_the_watermark(fresh_engine: Engine) -> None:
    """The cutoff never passes what the job has rolled up, whatever the retention says."""
    rng = random.Random(5)
    records = [timed_record(rng, ts) for ts in _spread(rng, 40)]
    insert_records(fresh_engine, records, 1)
    with fresh_engine.begin() as conn:
        set_state(conn, WATERMARK, epoch_ms(datetime(2026, 7, 1, 6, tzinfo=UTC)))
    pruned = prune(fresh_engine, keep_days=1, now=NOW)
    assert pruned.cutoff == datetime(2026, 7, 1, tzinfo=UTC)
    # Every row's written_ms (1) is below the watermark: those before the cutoff went (no
    # partition of these months exists on PostgreSQL: from the DEFAULT partition).
    assert _ids(fresh_engine) == {r.request_id for r in records if r.ts >= pruned.cutoff}
    assert pruned.rows == len([r for r in records if r.ts < pruned.cutoff]) > 0
