"""Alerts across four real gateway processes on PostgreSQL + Redis (``costwarden serve`` x 4).

2,000 requests spread over the four spend an org's daily token budget past 50 % and 80 %:
a local webhook receiver gets exactly one alert per threshold (every signature verified with
the ``standardwebhooks`` library), however many processes saw each crossing; every process
restarted, more requests in the same window fire nothing again.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from costwarden.alerts.model import Channel
from costwarden.mock import MockServer
from costwarden.storage import alert_deliveries as deliveries
from costwarden.storage import alerts as store
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from costwarden.storage.policy import set_limits
from tests.e2e.event_streams import REDIS_URL, gateways
from tests.helpers import WebhookReceiver, webhook_receiver

SECRET = "whsec_" + base64.b64encode(b"four-process-alerts-key-01234567").decode()
REQUESTS = 2000
# Small answers, so what each request reserves while in flight is small beside the budget.
BODY = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
FAST = "[alerts]\ndelivery_poll_seconds = 0.2\nretry_base_seconds = 0.5\n"


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver(SECRET) as r:
        yield r


async def _spend(urls: list[str], key: str, count: int) -> list[int]:
    """``count`` small chats spread over ``urls`` (16 at a time); their statuses."""
    body = BODY
    headers = {"authorization": f"Bearer {key}"}
    gate = asyncio.Semaphore(16)
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:

        async def one(i: int) -> None:
            async with gate:
                url = urls[i % len(urls)] + "/v1/chat/completions"
                async with http.post(url, json=body, headers=headers) as r:
                    await r.read()
                    statuses.append(r.status)

        await asyncio.gather(*(one(i) for i in range(count)))
    return statuses


async def _tokens_per_request(url: str, key: str) -> int:
    body = BODY
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        ) as r:
            assert r.status == 200, await r.text()
            return int(r.headers["x-costwarden-input-tokens"]) + int(
                r.headers["x-costwarden-output-tokens"]
            )


async def test_four_processes_alert_once_per_threshold_and_not_again_after_restarts(
    mock: MockServer, tmp_path: Path, shared_stack: str, receiver: WebhookReceiver
) -> None:
    engine = create_engine_for(shared_stack)
    try:
        migrate(engine)
        store.save_channel(
            engine,
            Channel(
                id="", name="ops", type="webhook",
                url=f"http://127.0.0.1:{receiver.port}/hook", secret=SECRET,
            ),
            actor="test",
        )  # fmt: skip
        async with gateways(
            mock.base_url, shared_stack, REDIS_URL, tmp_path, FAST, count=4
        ) as gw:
            per_request = await _tokens_per_request(gw.urls[0], gw.key)
            # 2,000 requests (and the one above) use 88 % of the day's tokens.
            budget = (REQUESTS + 1) * per_request * 100 // 88
            await asyncio.to_thread(
                set_limits, engine, org="acme", scope="org", subject="",
                amounts={"daily_tokens": budget},
            )  # fmt: skip
            await asyncio.sleep(1.5)  # every process has polled the new limit
            statuses = await _spend(gw.urls, gw.key, REQUESTS)
            assert statuses == [200] * REQUESTS
            async with asyncio.timeout(20):
                while len(receiver.verified) < 2:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(2)  # time for any duplicate to arrive
        got = sorted(receiver.verified, key=lambda m: m["data"]["threshold_pct"])
        assert [(m["data"]["threshold_pct"], m["data"]["metric"]) for m in got] == [
            (50, "tokens"),
            (80, "tokens"),
        ]
        assert receiver.forged == 0
        alerts = await asyncio.to_thread(store.list_alerts, engine)
        assert sorted(a.threshold_pct or 0 for a in alerts) == [50, 80]
        # Every process restarted (new processes, the same database and Redis): more requests
        # in the same window re-fire nothing.
        async with gateways(
            mock.base_url, shared_stack, REDIS_URL, tmp_path, FAST, count=4
        ) as gw:
            statuses = await _spend(gw.urls, gw.key, 40)
            assert statuses == [200] * 40
            await asyncio.sleep(2)
        assert len(receiver.verified) == 2
        assert len(await asyncio.to_thread(store.list_alerts, engine)) == 2
        logs = await asyncio.to_thread(deliveries.delivery_log, engine)
        assert sorted(len(d["attempts"]) for d in logs) == [1, 1]
    finally:
        engine.dispose()
