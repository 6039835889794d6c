"""The rollup job in a live gateway: the lease holder rolls up what the gateway billed, a
second process does not, and the daily check finds a ledger row deleted behind the job's
back, alerts once and recomputes the day. A long run stops when its lease is lost between
days; retention runs hourly in the leader, and waits while a lifetime limit is in force."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.app.analytics import DRIFT_RULE, ROLLUP_LEASE, Rollups
from costwarden.config.analytics import AnalyticsSettings
from costwarden.core.records import LedgerRecord
from costwarden.mock import MockServer
from costwarden.storage import alerts as store
from costwarden.storage.db import create_engine_for
from costwarden.storage.leases import try_lead
from costwarden.storage.migrate import migrate
from costwarden.storage.reconciliation import reconcile, reconciled_through
from costwarden.storage.rollups import (
    WATERMARK,
    pruned_before,
    set_state,
    watermark,
)
from costwarden.storage.schema import ledger, rollup_daily, rollup_hourly
from tests.helpers import FakeClock, live_gateway
from tests.helpers import chat as _chat
from tests.storage.conftest import insert_records, random_record

QUIET = "[analytics]\nlag_seconds = 0.001\nrollup_interval_seconds = 3600\n"


async def test_the_leader_rolls_up_and_the_daily_check_repairs_drift(
    mock: MockServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, extra_toml=QUIET) as gw:
        for _ in range(5):
            assert (await _chat(gw))[0] == 200
        await gw.app.ledger.flush()
        engine = gw.app.engine
        leader = gw.app.rollups
        assert leader is not None
        other = Rollups(leader.settings, engine, clock=time.time, holder="another-process")
        run = await leader.round()
        assert run is not None and run.rows == 5
        assert await other.round() is None  # the lease is held: one job across replicas
        with engine.connect() as conn:
            requests = conn.execute(sa.select(sa.func.sum(rollup_daily.c.requests))).scalar()
            victim = conn.execute(sa.select(ledger.c.request_id, ledger.c.day)).first()
        assert requests == 5 and victim is not None
        today = int(time.time() // 86_400)
        assert await leader.reconcile(today) == []

        with engine.begin() as conn:  # behind the job's back
            conn.execute(ledger.delete().where(ledger.c.request_id == victim.request_id))
        found = await leader.reconcile(today)
        assert {(d.day, d.measure) for d in found} >= {(victim.day, "requests")}
        assert await asyncio.to_thread(reconcile, engine, [victim.day]) == []  # repaired
        assert await leader.reconcile(today) == []
        alerts = [
            a for a in await asyncio.to_thread(store.list_alerts, engine, limit=20)
            if a.rule == DRIFT_RULE
        ]
    assert len(alerts) == 1
    assert victim.day in alerts[0].title and "requests: ledger 4, rollup 5" in str(
        alerts[0].detail
    )


T0 = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()


def _ledger_over_days(tmp_path: Path, days: int) -> tuple[Engine, list[LedgerRecord]]:
    url = f"sqlite:///{tmp_path}/cw.db"
    migrate(url)
    engine = create_engine_for(url)
    rng = random.Random(days)
    first = datetime(2026, 6, 1, tzinfo=UTC)
    records = [random_record(rng, first + timedelta(days=d, hours=3)) for d in range(days)]
    insert_records(engine, records, 1)
    return engine, records


def _hourly_total(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.sum(rollup_hourly.c.requests))).scalar_one())


async def test_a_run_that_loses_the_lease_between_days_stops(tmp_path: Path) -> None:
    """A long first run renews the lease between days; lost (it lapsed and another process
    took it), the run stops there, its watermark unmoved, and the new holder finishes."""
    engine, records = _ledger_over_days(tmp_path, 3)
    settings = AnalyticsSettings(rollup_interval_seconds=60)
    calls: list[float] = []

    def clock() -> float:  # called at the round's start, then before each day
        calls.append(T0 + len(calls))
        if len(calls) == 3:  # the second day: this process stalled past its lease's ttl
            lapsed = datetime.fromtimestamp(T0 + 1000, UTC)
            assert try_lead(engine, ROLLUP_LEASE, "other", ttl=timedelta(minutes=3), now=lapsed)
            return T0 + 1000
        return calls[-1]

    try:
        mine = Rollups(settings, engine, clock=clock, holder="me")
        run = await mine.round()
        assert run is not None and not run.complete and run.watermark is None
        assert len(calls) == 3  # the round's lease, day one's renewal, day two's (lost)
        with engine.connect() as conn:
            assert watermark(conn) is None
            hours = conn.execute(sa.select(sa.func.count()).select_from(rollup_hourly))
            assert hours.scalar_one() == 1  # day one's only hour with rows
        assert reconciled_through(engine) is None  # no check after an unfinished run
        other = Rollups(settings, engine, clock=lambda: T0 + 1010, holder="other")
        done = await other.round()
        assert done is not None and done.complete and done.rows == len(records)
        assert await mine.round() is None  # the other holds it now
    finally:
        engine.dispose()


async def test_retention_runs_hourly_in_the_leader_and_waits_for_lifetime_limits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine, records = _ledger_over_days(tmp_path, 150)  # June to October 2026
    with engine.begin() as conn:
        set_state(conn, WATERMARK, 0)
    settings = AnalyticsSettings(rollup_interval_seconds=60, raw_retention_days=40)
    clock = FakeClock(T0)
    lifetime = [True]
    rollups = Rollups(
        settings, engine, clock=clock, holder="me", lifetime_limits=lambda: lifetime[0]
    )

    def raw_rows() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(ledger)).scalar_one())

    try:
        with caplog.at_level(logging.WARNING, logger="costwarden.app.analytics"):
            run = await rollups.round()
        assert run is not None and run.complete and run.rows == len(records)
        assert "retention paused: a lifetime limit is in force" in caplog.text
        assert raw_rows() == len(records)
        lifetime[0] = False
        clock.advance(60)
        await rollups.round()  # within the hour: no second try
        assert raw_rows() == len(records)
        clock.advance(3600)
        await rollups.round()
        cutoff = datetime(2026, 10, 11, tzinfo=UTC)  # 40 days before, floored to the day
        assert raw_rows() == len([r for r in records if r.ts >= cutoff]) < len(records)
        with engine.connect() as conn:
            assert pruned_before(conn) == cutoff
        assert _hourly_total(engine) == len(records)  # the rollups keep every row
    finally:
        engine.dispose()
