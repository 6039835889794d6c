"""The alerting service in a live gateway: a daily budget spent past 50 % and 80 % sends one
signed webhook per threshold and channel (not again after a restart, again the next day), a
receiver that is down gets it once it is back, and the delivery log shows every attempt."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from costwarden.alerts.model import Channel
from costwarden.mock import MockServer
from costwarden.storage import alert_deliveries as deliveries
from costwarden.storage import alerts as store
from tests.helpers import (
    PRICEY,
    T0,
    FakeClock,
    WebhookReceiver,
    configure_mock,
    live_gateway,
    set_limits,
    webhook_receiver,
)
from tests.helpers import chat as _chat

SECRET = "whsec_" + base64.b64encode(b"alerting-e2e-key-0123456789abcdef").decode()
# Retries every 0.2 s (doubling), deliveries looked for every 0.1 s.
FAST = "[alerts]\ndelivery_poll_seconds = 0.1\nretry_base_seconds = 0.2\n"


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver(SECRET) as r:
        yield r


def _channel(port: int) -> Channel:
    return Channel(
        id="", name="ops", type="webhook", url=f"http://127.0.0.1:{port}/hook", secret=SECRET
    )


async def _until(predicate: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_each_threshold_alerts_each_channel_once_signed(
    mock: MockServer, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    await configure_mock(mock, output_tokens=1000)  # about $1 a request with PRICEY
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, extra_toml=PRICEY + FAST) as gw:
        await asyncio.to_thread(store.save_channel, gw.app.engine, _channel(receiver.port),
                                actor="test")
        await set_limits(gw, daily_usd="4.5")
        alerts_seen = gw.app.events.subscribe(kinds=frozenset({"alert_changed"}))
        for _ in range(4):
            status, _, _ = await _chat(gw)
            assert status == 200
        await _until(lambda: len(receiver.verified) >= 2)
        await asyncio.sleep(0.5)  # and nothing more comes
        changed = [(await alerts_seen.get(timeout=2)) for _ in range(2)]
        alerts_seen.close()
    assert len(receiver.verified) == 2
    data: list[dict[str, Any]] = sorted(
        (m["data"] for m in receiver.verified),
        key=lambda d: d["threshold_pct"],
    )
    assert [(d["scope"], d["metric"], d["threshold_pct"], d["limit"]) for d in data] == [
        ("org", "usd", 50, "4.5"),
        ("org", "usd", 80, "4.5"),
    ]
    assert [d["severity"] for d in data] == ["info", "warning"]
    assert all(d["resets_at"] and d["spent"] for d in data)
    assert {c.payload.state for c in changed if c is not None} == {"firing"}  # type: ignore[attr-defined]
    assert len({m["id"] for m in receiver.verified}) == 2


async def test_a_restart_fires_nothing_again_and_the_next_day_fires_anew(
    mock: MockServer, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """The same window after a restart: nothing; the next day's window: each line again."""
    await configure_mock(mock, output_tokens=1000)  # about $1 a request with PRICEY
    url = f"sqlite:///{tmp_path}/cw.db"
    clock = FakeClock(T0)
    toml = PRICEY + FAST
    async with live_gateway(mock, url, tmp_path, extra_toml=toml, clock=clock) as gw:
        await asyncio.to_thread(store.save_channel, gw.app.engine, _channel(receiver.port),
                                actor="test")
        await set_limits(gw, daily_usd="4.5")
        for _ in range(3):  # $3 of $4.5: 50 %
            assert (await _chat(gw))[0] == 200
        await _until(lambda: len(receiver.verified) >= 1)
    async with live_gateway(mock, url, tmp_path, extra_toml=toml, clock=clock) as gw:
        assert (await _chat(gw))[0] == 200  # $4: 80 %, crossed by the restarted process
        await _until(lambda: len(receiver.verified) >= 2)
        await asyncio.sleep(0.3)
        first_day = len(receiver.verified)
        clock.advance(86_400)  # the next day: a new window, spent from zero
        for _ in range(4):
            assert (await _chat(gw))[0] == 200
        await _until(lambda: len(receiver.verified) >= 4)
        await asyncio.sleep(0.5)  # and nothing more comes
        rows = await asyncio.to_thread(store.list_alerts, gw.app.engine, limit=10)
    assert first_day == 2 and len(receiver.verified) == 4
    got = [(m["data"]["threshold_pct"], m["data"]["resets_at"]) for m in receiver.verified]
    days = sorted({resets for _, resets in got})
    assert len(days) == 2  # two window instances, a day apart
    assert sorted(got) == sorted([(50, days[0]), (80, days[0]), (50, days[1]), (80, days[1])])
    assert len(rows) == 4 and len({r.window_key for r in rows}) == 2


async def test_a_receiver_that_was_down_gets_the_alert_once_back(
    mock: MockServer, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    await configure_mock(mock, output_tokens=1000)
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, extra_toml=PRICEY + FAST) as gw:
        engine = gw.app.engine
        await asyncio.to_thread(store.save_channel, engine, _channel(receiver.port), actor="t")
        await set_limits(gw, daily_usd="2")
        receiver.down = True
        status, _, _ = await _chat(gw)  # about $1 of $2: 50 %
        assert status == 200
        await _until(lambda: receiver.refused >= 3)
        receiver.down = False
        await _until(lambda: len(receiver.verified) == 1)
        await asyncio.sleep(0.6)  # no repeat once delivered
        (alert,) = await asyncio.to_thread(store.list_alerts, engine)
        (log,) = await asyncio.to_thread(deliveries.delivery_log, engine, alert_id=alert.id)
    assert len(receiver.verified) == 1
    assert log["state"] == "delivered"
    statuses = [a["status"] for a in log["attempts"]]
    assert statuses[:-1] == [503] * (len(statuses) - 1) and statuses[-1] == 204
    assert len(statuses) - 1 == receiver.refused >= 3
    assert orjson.loads(orjson.dumps(log))["attempts"][0]["error"] == "HTTP 503"


async def test_a_kill_switch_and_an_open_breaker_alert_and_clear(
    mock: MockServer, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    url = f"sqlite:///{tmp_path}/cw.db"
    fast_breaker = "[resilience]\nfailure_threshold = 2\nretry_base_ms = 1\nretry_max_ms = 2\n"
    async with live_gateway(
        mock, url, tmp_path, extra_toml=FAST + fast_breaker, admin_token="adm"
    ) as gw:
        engine = gw.app.engine
        await asyncio.to_thread(store.save_channel, engine, _channel(receiver.port), actor="t")
        admin = {"authorization": "Bearer adm"}
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
            off = {"feature": "streaming", "enabled": False, "org": None}
            r = await client.put("/admin/switches", json=off, headers=admin)
            assert r.status_code == 200, r.text
            await _until(lambda: len(receiver.verified) == 1)
            (switch,) = [m["data"] for m in receiver.verified]
            assert (switch["rule"], switch["severity"]) == ("service-kill-switch", "warning")
            r = await client.put("/admin/switches", json={**off, "enabled": True}, headers=admin)
            assert r.status_code == 200, r.text
            await _until(lambda: _states(engine) == {"resolved"})
            # A deployment failing: its breaker opens after two failures.
            await configure_mock(mock, fault_status=503)
            for _ in range(3):
                await _chat(gw)
            await configure_mock(mock, fault_status=None)
            await _until(lambda: len(receiver.verified) == 2)
        breaker = receiver.verified[1]["data"]
        assert breaker["rule"] == "service-breaker-open" and breaker["kind"] == "service"
        assert breaker["scope_id"].startswith("openai:")


def _states(engine: Any) -> set[str]:
    return {a.state for a in store.list_alerts(engine)}
