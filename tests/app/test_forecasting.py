"""Budget forecasts in a live gateway: a day's spend ramping toward its limit raises one
forecast alert (once per window, by the lease's holder); steady low spend raises none."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from costwarden.core.records import LedgerRecord
from costwarden.mock import MockServer
from costwarden.storage import alerts as store
from costwarden.storage import repo
from costwarden.storage.ledger_rows import record_to_row
from costwarden.storage.schema import ledger
from tests.helpers import FakeClock, LiveGateway, live_gateway, set_limits

NOON = datetime(2030, 5, 6, 12, 0, tzinfo=UTC)


def _spend(gw: LiveGateway, costs: list[tuple[datetime, str]]) -> None:
    org = repo.list_orgs(gw.app.engine)[0].id
    rows = [
        record_to_row(
            LedgerRecord(
                request_id=f"req_{i:06d}", ts=ts, endpoint="chat.completions",
                status="success", http_status=200, org_id=org, key_id=gw.key_id,
                provider="openai", requested_model="gpt-4o-mini", cost_usd=Decimal(cost),
                latency_ms=1.0,
            )
        )  # fmt: skip
        for i, (ts, cost) in enumerate(costs)
    ]
    with gw.app.engine.begin() as conn:
        conn.execute(ledger.insert(), rows)


def _last_two_hours(cost: str) -> list[tuple[datetime, str]]:
    return [(NOON - timedelta(minutes=5 * (24 - i)) + timedelta(seconds=30), cost)
            for i in range(24)]  # fmt: skip


async def test_a_ramp_toward_the_limit_raises_one_forecast(
    mock: MockServer, tmp_path: Path
) -> None:
    clock = FakeClock(NOON.timestamp())
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, clock=clock) as gw:
        # 24 five-minute buckets growing from $0.01 to $0.24: $3 of $10 by noon, and rising.
        ramp = [(ts, f"{(i + 1) / 100:.2f}") for i, (ts, _) in enumerate(_last_two_hours("0"))]
        await asyncio.to_thread(_spend, gw, ramp)
        await set_limits(gw, daily_usd="10")  # counters seeded from the ledger: $3
        alerting = gw.app.alerting
        assert alerting is not None
        assert await alerting.forecast_round(gw.app.enforcer) == 1
        (alert,) = await asyncio.to_thread(store.list_alerts, gw.app.engine)
        assert (alert.kind, alert.rule) == ("forecast", "budget-forecast")
        assert alert.severity == "warning"
        assert alert.detail["spent"] == "3" and alert.detail["limit"] == "10"
        assert alert.detail["exhausts_at"] < alert.detail["resets_at"]
        # Five minutes on, the same forecast: the same window's alert, not a second one.
        clock.now += 300
        await alerting.forecast_round(gw.app.enforcer)
        assert len(await asyncio.to_thread(store.list_alerts, gw.app.engine)) == 1


async def test_steady_low_spend_raises_no_forecast(mock: MockServer, tmp_path: Path) -> None:
    clock = FakeClock(NOON.timestamp())
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, clock=clock) as gw:
        # $3 in the early morning, then a cent every five minutes: far from $10 by midnight.
        morning = [(NOON - timedelta(hours=6), "3")]
        await asyncio.to_thread(_spend, gw, morning + _last_two_hours("0.01"))
        await set_limits(gw, daily_usd="10")
        alerting = gw.app.alerting
        assert alerting is not None
        assert await alerting.forecast_round(gw.app.enforcer) == 0
        assert await asyncio.to_thread(store.list_alerts, gw.app.engine) == []
