"""The rollup job in a live gateway: the lease holder rolls up what the gateway billed, a
second process does not, and the daily check finds a ledger row deleted behind the job's
back, alerts once and recomputes the day."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import sqlalchemy as sa

from costwarden.app.analytics import DRIFT_RULE, Rollups
from costwarden.mock import MockServer
from costwarden.storage import alerts as store
from costwarden.storage.rollups import reconcile
from costwarden.storage.schema import ledger, rollup_daily
from tests.helpers import chat as _chat
from tests.helpers import live_gateway

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
