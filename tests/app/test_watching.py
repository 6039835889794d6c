"""The watch in a live gateway: ledger rows of a failing provider raise one error-rate alert
(by the lease's holder only, once across rounds, instances and a leader change) that resolves
when the errors stop; an hour far above its usual raises one spike alert that resolves itself
an hour later."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy.engine import Engine

from costwarden.alerts.error_rate import ErrorRateParams
from costwarden.alerts.spikes import SpikeParams
from costwarden.app.alerting import Alerting
from costwarden.app.watching import watch_params
from costwarden.config.alerts import AlertSettings
from costwarden.core.money import NANOS_PER_USD
from costwarden.core.records import LedgerRecord, LedgerStatus
from costwarden.core.subscription import Subscription
from costwarden.mock import MockServer
from costwarden.storage import alerts as store
from costwarden.storage import repo
from costwarden.storage.alert_records import AlertRecord
from costwarden.storage.ledger_rows import record_to_row
from costwarden.storage.schema import ledger
from tests.helpers import FakeClock, LiveGateway, live_gateway

# 2030-05-06 11:02:30 UTC: half a minute into a minute, two and a half past the hour.
NOW = datetime(2030, 5, 6, 11, 2, 30, tzinfo=UTC).timestamp()
# No background round during a test (the first comes after 30 s of real time): the test runs
# them. The watch lease lives 3 rounds: 90 s of the gateway's clock.
QUIET = "[alerts]\nforecast_interval_seconds = 3600.0\n"
LEASE_SECONDS = 90
_serial = iter(range(10**9))


Row = tuple[float, str, LedgerStatus, int, str]


def _rows(engine: Engine, rows: list[Row]) -> None:
    """(epoch, provider, status, http_status, cost) ledger rows of the gateway's org."""
    org = repo.list_orgs(engine)[0].id
    records = [
        LedgerRecord(
            request_id=f"req_{next(_serial):08d}",
            ts=datetime.fromtimestamp(ts, UTC),
            endpoint="chat.completions",
            status=status,
            http_status=code,
            org_id=org,
            provider=provider,
            requested_model="gpt-4o-mini",
            cost_usd=Decimal(cost),
            latency_ms=1.0,
        )
        for ts, provider, status, code, cost in rows
    ]
    with engine.begin() as conn:
        conn.execute(ledger.insert(), [record_to_row(r) for r in records])


def _minute_of_traffic(minute: float, provider: str, requests: int, failed: int) -> list[Row]:
    """``requests`` rows in the minute from ``minute``, the first ``failed`` of them failed."""
    rows: list[Row] = []
    for i in range(requests):
        if i < failed:
            rows.append((minute + 1 + i, provider, "upstream_error", 502, "0.001"))
        else:
            rows.append((minute + 1 + i, provider, "success", 200, "0.001"))
    return rows


def _alerts(engine: Engine) -> list[AlertRecord]:
    return store.list_alerts(engine)


async def _changes(sub: Subscription) -> list[tuple[str, str]]:
    """The (rule, state) of every alert_changed event published so far."""
    seen = []
    while (event := await sub.get(timeout=0.5)) is not None:
        seen.append((event.payload.rule, event.payload.state))  # type: ignore[attr-defined]
    return seen


def _second_instance(gw: LiveGateway, clock: FakeClock) -> Alerting:
    """Another gateway process's alerting service, on the same database and events."""
    return Alerting(gw.app.settings.alerts, gw.app.engine, gw.app.events, clock=clock)


async def test_a_failing_provider_alerts_once_and_resolves_when_errors_stop(
    mock: MockServer, tmp_path: Path
) -> None:
    clock = FakeClock(NOW)
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, clock=clock, extra_toml=QUIET) as gw:
        engine = gw.app.engine
        alerting = gw.app.alerting
        assert alerting is not None
        changes = gw.app.events.subscribe(kinds=frozenset({"alert_changed"}))
        newest = (NOW // 60 - 1) * 60  # the newest complete minute
        # Five minutes of openai failing 4 requests in 10, anthropic failing 1 in 10.
        rows = []
        for m in range(5):
            rows += _minute_of_traffic(newest - m * 60, "openai", 10, 4)
            rows += _minute_of_traffic(newest - m * 60, "anthropic", 10, 1)
        await asyncio.to_thread(_rows, engine, rows)

        other = _second_instance(gw, clock)
        first = await alerting.watcher.round()
        assert (first.leading, first.raised, first.resolved) == (True, 1, 0)
        (alert,) = await asyncio.to_thread(_alerts, engine)
        assert (alert.rule, alert.kind, alert.scope_id) == (
            "service-error-rate",
            "service",
            "openai",
        )
        assert alert.state == "firing" and alert.detail["percent"] == "40"
        assert alert.window_key == f"minute:{int(newest - 4 * 60)}"
        assert await _changes(changes) == [("service-error-rate", "firing")]

        # The next round, still failing: nothing new. Another process: not leading, nothing.
        clock.advance(30)
        assert (await alerting.watcher.round()).raised == 0
        assert not (await other.watcher.round()).leading
        assert len(await asyncio.to_thread(_alerts, engine)) == 1

        # The leader dies mid-episode: once its lease lapses the other one leads, and finds
        # the episode's alert open.
        more = _minute_of_traffic(newest + 60, "openai", 10, 5)
        more += _minute_of_traffic(newest + 120, "openai", 10, 5)
        await asyncio.to_thread(_rows, engine, more)
        clock.advance(LEASE_SECONDS + 1)  # the lease lapses
        took_over = await other.watcher.round()
        assert took_over.leading and took_over.raised == 0
        assert len(await asyncio.to_thread(_alerts, engine)) == 1

        # The errors stop: the next minute is back under 20 %, and the alert resolves.
        await asyncio.to_thread(_rows, engine, _minute_of_traffic(newest + 180, "openai", 10, 1))
        clock.advance(60)
        cleared = await other.watcher.round()
        assert (cleared.raised, cleared.resolved) == (0, 1)
        (alert,) = await asyncio.to_thread(_alerts, engine)
        assert (alert.state, alert.resolved_by) == ("resolved", "costwarden")
        assert await _changes(changes) == [("service-error-rate", "resolved")]
        assert (await other.watcher.round()).resolved == 0  # resolved once

        # A later episode is a new alert.
        later = newest + 600
        rows = [r for m in range(5) for r in _minute_of_traffic(later + m * 60, "openai", 5, 5)]
        await asyncio.to_thread(_rows, engine, rows)
        clock.now = later + 5 * 60 + 30
        assert (await other.watcher.round()).raised == 1
        alerts = await asyncio.to_thread(_alerts, engine)
        assert [a.state for a in alerts] == ["firing", "resolved"]
        assert alerts[0].window_key == f"minute:{int(later)}"
        changes.close()


async def test_a_few_failures_of_a_few_requests_page_nobody(
    mock: MockServer, tmp_path: Path
) -> None:
    clock = FakeClock(NOW)
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, clock=clock, extra_toml=QUIET) as gw:
        newest = (NOW // 60 - 1) * 60
        rows = [r for m in range(5) for r in _minute_of_traffic(newest - m * 60, "openai", 1, 1)]
        await asyncio.to_thread(_rows, gw.app.engine, rows)
        assert gw.app.alerting is not None
        result = await gw.app.alerting.watcher.round()
        assert result.leading and result.raised == 0
        assert await asyncio.to_thread(_alerts, gw.app.engine) == []


def _spend_at(hour: float, cost: str) -> list[Row]:
    """Two requests of ``cost`` each in the hour from ``hour``."""
    return [
        (hour + 600, "openai", "success", 200, cost),
        (hour + 3000, "openai", "success", 200, cost),
    ]


async def test_an_hour_far_above_its_usual_raises_one_spike_alert(
    mock: MockServer, tmp_path: Path
) -> None:
    clock = FakeClock(NOW)
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, clock=clock, extra_toml=QUIET) as gw:
        engine = gw.app.engine
        alerting = gw.app.alerting
        assert alerting is not None
        changes = gw.app.events.subscribe(kinds=frozenset({"alert_changed"}))
        hour = NOW // 3600 * 3600 - 3600  # 10:00, complete since 2 min 30 s
        # $1 a day at 10:00 for a week ($0.50 twice), then $4.20 today: 4.2 times the usual.
        rows = [r for d in range(1, 8) for r in _spend_at(hour - d * 86_400, "0.50")]
        rows += _spend_at(hour, "2.10")
        rows += _spend_at(hour - 3600, "9")  # 09:00 is another hour: not compared
        await asyncio.to_thread(_rows, engine, rows)

        other = _second_instance(gw, clock)
        first = await alerting.watcher.round()
        assert (first.raised, first.spike_hour) == (1, hour)
        (alert,) = await asyncio.to_thread(_alerts, engine)
        assert (alert.rule, alert.kind, alert.severity) == ("spend-spike", "spike", "warning")
        assert alert.org_id == alert.scope_id == repo.list_orgs(engine)[0].id
        assert alert.detail["spent"] == "4.2" and alert.detail["usual"] == "1"
        assert alert.detail["ratio"] == "4.2" and alert.detail["metric"] == "usd"
        assert alert.resolves_at == datetime.fromtimestamp(hour + 7200, UTC)
        assert await _changes(changes) == [("spend-spike", "firing")]

        # The hour is checked once by this process; another that takes over checks it again
        # and finds the alert's key taken.
        clock.advance(30)
        assert (await alerting.watcher.round()).spike_hour is None
        clock.advance(LEASE_SECONDS + 1)
        again = await other.watcher.round()
        assert again.leading and again.spike_hour == hour
        assert len(await asyncio.to_thread(_alerts, engine)) == 1
        assert await _changes(changes) == []

        # At the end of the next hour it resolves itself.
        clock.now = hour + 7200
        await alerting.deliver_due()
        (alert,) = await asyncio.to_thread(_alerts, engine)
        assert alert.state == "resolved"
        assert await _changes(changes) == [("spend-spike", "resolved")]
        changes.close()


async def test_an_hour_within_its_usual_raises_nothing(mock: MockServer, tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, clock=clock, extra_toml=QUIET) as gw:
        hour = NOW // 3600 * 3600 - 3600
        rows = [r for d in range(1, 8) for r in _spend_at(hour - d * 86_400, "0.50")]
        rows += _spend_at(hour, "1.45")  # $2.90: 2.9 times the usual
        await asyncio.to_thread(_rows, gw.app.engine, rows)
        assert gw.app.alerting is not None
        result = await gw.app.alerting.watcher.round()
        assert (result.raised, result.spike_hour) == (0, hour)
        assert await asyncio.to_thread(_alerts, gw.app.engine) == []


def test_settings_map_into_the_rules_parameters() -> None:
    settings = AlertSettings(
        watch_interval_seconds=45.0, spike_factor=2.5, spike_history_days=14,
        spike_min_history_days=5, spike_min_usd="2.50", spike_min_tokens=10,
        error_rate_pct=30, error_rate_minutes=4, error_rate_min_requests=7,
    )  # fmt: skip
    params = watch_params(settings)
    assert params.interval_seconds == 45.0
    assert params.error_rate == ErrorRateParams(
        pct=30, minutes=4, min_requests=7, lookback_minutes=12
    )
    assert params.spike == SpikeParams(
        factor=Decimal("2.5"), history_days=14, min_history_days=5,
        min_usd_nanos=2 * NANOS_PER_USD + NANOS_PER_USD // 2, min_tokens=10, grace_seconds=120,
    )  # fmt: skip
