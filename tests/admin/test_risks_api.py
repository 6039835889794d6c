"""Risk signals (``GET /admin/risks``): 85 % of a daily token allowance is one
``high_token_usage`` whose message says 85%, 50 % is none, unlimited is none, a user's own
limit beats its tier's; failure counts equal the ledger's rows; a database that cannot be
reached answers [] with one WARNING line."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from costwarden.mock import MockServer
from costwarden.storage.schema import ledger
from tests.helpers import LiveGateway, configure_mock, database_down, live_gateway

TOKEN = "adm-risks-secret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
# Answers of 200 tokens: each request's reservation (its prompt's bound plus max_tokens) stays
# below the room left at 85 %, so the hard limits admit every request the test sends.
CHAT = {"model": "gpt-4o-mini", "max_tokens": 200, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def gw(mock: MockServer, database_url: str, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with live_gateway(mock, database_url, tmp_path, admin_token=TOKEN) as gateway:
        yield gateway


async def _chat(client: httpx.AsyncClient, gw: LiveGateway, user: str) -> int:
    r = await client.post(
        "/v1/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {gw.key}", "x-costwarden-user": user},
    )
    assert r.status_code == 200, r.text
    headers = r.headers
    return int(headers["x-costwarden-input-tokens"]) + int(headers["x-costwarden-output-tokens"])


async def _risks(client: httpx.AsyncClient, **query: str) -> list[dict[str, Any]]:
    r = await client.get("/admin/risks", params=query, headers=AUTH)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


async def test_token_usage_risks_follow_the_allowance(gw: LiveGateway, mock: MockServer) -> None:
    await configure_mock(mock, output_tokens=200)
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        org = (await client.get("/admin/orgs", headers=AUTH)).json()["data"][0]["name"]
        per = await _chat(client, gw, "probe")  # tokens a request uses
        # The tier allows each user 20 requests' worth a day.
        r = await client.put("/admin/tiers/free", json={"user": {"daily_tokens": 20 * per}},
                             headers=AUTH)
        assert r.status_code == 200, r.text
        r = await client.put(f"/admin/orgs/{org}/tier", json={"tier": "free"}, headers=AUTH)
        assert r.status_code == 200, r.text
        # u4's own limit (18 requests' worth) beats the tier's; u3's own -1 lifts it.
        for user, amount in (("u4", 18 * per), ("u3", -1)):
            r = await client.put(
                "/admin/limits",
                json={"org": org, "scope": "user", "scope_id": user,
                      "limits": {"daily_tokens": amount}},
                headers=AUTH,
            )
            assert r.status_code == 200, r.text
        for user, count in (("u1", 17), ("u2", 10), ("u3", 17), ("u4", 17)):
            for _ in range(count):
                await _chat(client, gw, user)
        (risk,) = await _risks(client, org=org, user="u1")
        assert (risk["type"], risk["scope"], risk["scope_id"]) == ("high_token_usage", "user", "u1")
        assert "85%" in risk["message"] and risk["ratio"] == "0.8500"
        assert risk["source"] == "tier free"
        assert await _risks(client, org=org, user="u2") == []  # 50 %
        assert await _risks(client, org=org, user="u3") == []  # unlimited
        (own,) = await _risks(client, org=org, user="u4")
        assert own["source"] == "override" and "94%" in own["message"]
        # The tier made unlimited: no risk for u1 either.
        r = await client.put("/admin/tiers/free", json={"user": {"daily_tokens": -1}},
                             headers=AUTH)
        assert r.status_code == 200, r.text
        assert await _risks(client, org=org, user="u1") == []
        bad = await client.get("/admin/risks", params={"org": "nope"}, headers=AUTH)
        assert bad.status_code == 404
        missing = await client.get("/admin/risks", headers=AUTH)
        assert missing.status_code == 400


async def test_failure_counts_are_the_ledger_s_rows(gw: LiveGateway, mock: MockServer) -> None:
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        org = (await client.get("/admin/orgs", headers=AUTH)).json()["data"][0]["name"]
        for _ in range(3):
            await _chat(client, gw, "u")
        await configure_mock(mock, fault_status=500)
        for _ in range(2):
            r = await client.post("/v1/chat/completions", json=CHAT,
                                  headers={"authorization": f"Bearer {gw.key}"})
            assert r.status_code >= 500
        await configure_mock(mock, fault_status=None)
        await gw.app.ledger.flush()
        with gw.app.engine.connect() as conn:
            rows = conn.execute(
                sa.select(ledger.c.status, sa.func.count()).group_by(ledger.c.status)
            ).all()
        by_status = dict(rows)
        risks = await _risks(client, org=org)
    (failures,) = [r for r in risks if r["type"] == "upstream_failures" and r["scope"] == "org"]
    assert failures["failed"] == by_status.get("upstream_error", 0) + by_status.get("degraded", 0)
    assert failures["requests"] == sum(by_status.values())
    assert failures["failed"] == 2


async def test_an_unreachable_database_is_an_empty_list_and_one_warning(
    mock: MockServer, pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        live_gateway(mock, pg_url, tmp_path, admin_token=TOKEN) as gw,
        httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client,
    ):
        org = (await client.get("/admin/orgs", headers=AUTH)).json()["data"][0]["name"]
        caplog.set_level(logging.WARNING)
        with database_down(pg_url):
            caplog.clear()
            r = await client.get("/admin/risks", params={"org": org}, headers=AUTH)
            lines = [rec for rec in caplog.records if rec.name == "costwarden.admin.risks_api"]
        assert (r.status_code, r.json()) == (200, {"data": []})
        assert len(lines) == 1 and lines[0].levelno == logging.WARNING
        assert "Traceback" not in caplog.text


async def test_an_unreachable_redis_is_an_empty_list_too(
    mock: MockServer, tmp_path: Path, private_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    toml = f'[redis]\nurl = "{private_redis}"\ntimeout_seconds = 0.3\n'
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, admin_token=TOKEN, extra_toml=toml) as gw:
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client:
            org = (await client.get("/admin/orgs", headers=AUTH)).json()["data"][0]["name"]
            r = await client.put("/admin/limits", json={"org": org, "scope": "org",
                                 "limits": {"daily_tokens": 1000}}, headers=AUTH)
            assert r.status_code == 200, r.text
            pid = int(redis.Redis.from_url(private_redis).info("server")["process_id"])
            caplog.set_level(logging.WARNING)
            os.kill(pid, signal.SIGSTOP)
            try:
                caplog.clear()
                r = await client.get("/admin/risks", params={"org": org}, headers=AUTH)
                lines = [
                    rec for rec in caplog.records if rec.name == "costwarden.admin.risks_api"
                ]
                # The budgets' live status reads the same counters: a 503, not a 500.
                budgets = await client.get("/admin/budgets", params={"org": org}, headers=AUTH)
            finally:
                os.kill(pid, signal.SIGCONT)
    assert (r.status_code, r.json()) == (200, {"data": []})
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert budgets.status_code == 503, budgets.text
    assert budgets.headers["retry-after"] and "counters" in budgets.json()["error"]["message"]
