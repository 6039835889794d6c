"""Budgets and rate limits on the request path, through a live gateway (in-process counters).

The plain cases of issue 2 of 4: a daily budget runs out and the next request gets 402
before any upstream call; the 11th request of a 10-per-hour limit gets 429 with a
Retry-After that is exactly long enough; moving the clock past the window lets requests
through again.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from costwarden.mock import MockServer
from costwarden.storage.usage import ledger_rows
from tests.helpers import PRICEY, T0, FakeClock, configure_mock, live_gateway, set_limits
from tests.helpers import chat as _chat

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def _mock(mock: MockServer, path: str = "/_mock/stats", **fields: object) -> Any:
    async with aiohttp.ClientSession() as http:
        if fields:
            async with http.post(mock.base_url + "/_mock/config", json=fields) as r:
                assert r.status == 200
                return None
        async with http.get(mock.base_url + path) as r:
            return await r.json()


async def test_daily_budget_runs_out_then_402_before_upstream(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    await _mock(mock, output_tokens=1000)
    async with live_gateway(mock, database_url, tmp_path, extra_toml=PRICEY, clock=clock) as gw:
        await set_limits(gw, daily_usd="5")
        statuses: list[int] = []
        clamps: list[str | None] = []
        for _ in range(10):
            status, body, headers = await _chat(gw)
            statuses.append(status)
            clamps.append(headers.get("x-costwarden-max-tokens-clamped"))
            if status != 200:
                break
            assert Decimal(headers["x-costwarden-budget-remaining-usd"]) >= 0
        assert statuses[:-1] == [200] * (len(statuses) - 1) and statuses[-1] == 402, statuses
        # No client max_tokens: each call was capped at what the budget could still pay for.
        assert clamps[0] == "4096"
        assert int(clamps[-2] or 0) < 1000  # the last admitted call was clamped below 1,000
        error = body["error"]
        assert error["type"] == "budget_exceeded" and error["code"] == "budget_exceeded"
        assert error["scope"] == "org" and error["limit_name"] == "daily_usd"
        assert error["limit"] == "5" and Decimal(error["spent"]) <= 5
        assert error["resets_at"] == "2027-03-11T00:00:00Z"
        assert headers["x-costwarden-budget-reset"] == "2027-03-11T00:00:00Z"

        calls_before = (await _mock(mock))["requests"]
        status, body, _ = await _chat(gw)
        assert status == 402
        assert (await _mock(mock))["requests"] == calls_before  # never reached the provider

        await gw.app.ledger.flush()
        rows = await asyncio.to_thread(ledger_rows, gw.app.engine)
        spent = sum((r.cost_usd for r in rows if r.status == "success"), Decimal(0))
        assert Decimal("4.9") < spent <= Decimal(5), spent
        assert {r.status for r in rows if r.http_status == 402} == {"blocked"}

        # The next day the budget is fresh.
        clock.advance(86400)
        status, _, headers = await _chat(gw)
        assert status == 200
        assert headers["x-costwarden-budget-reset"] == "2027-03-12T00:00:00Z"


async def test_requests_per_hour_429_with_exact_retry_after(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    async with live_gateway(mock, database_url, tmp_path, clock=clock) as gw:
        await set_limits(gw, requests_per_hour=10)
        for i in range(10):
            status, _, headers = await _chat(gw)
            assert status == 200
            assert headers["x-ratelimit-remaining-requests"] == str(9 - i)
            assert headers["x-ratelimit-limit-requests"] == "10"
            clock.advance(1)
        calls = (await _mock(mock))["requests"]
        status, body, headers = await _chat(gw)
        assert status == 429
        assert body["error"]["type"] == "rate_limit_exceeded"
        assert body["error"]["limit_name"] == "requests_per_hour"
        # All ten landed in the minute bucket starting at 10:00:00; it leaves the rolling hour
        # at 11:01:00, which is 3,620 s after 10:00:40.
        assert headers["retry-after"] == "3620"
        assert (await _mock(mock))["requests"] == calls

        clock.advance(3619)
        status, _, _ = await _chat(gw)
        assert status == 429  # one second early is still too early
        clock.advance(1)
        status, _, headers = await _chat(gw)
        assert status == 200
        assert headers["x-ratelimit-remaining-requests"] == "9"


async def test_client_max_tokens_kept_when_it_fits_and_clamped_when_not(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    await _mock(mock, output_tokens=1000)
    async with live_gateway(mock, database_url, tmp_path, extra_toml=PRICEY, clock=clock) as gw:
        await set_limits(gw, daily_usd="0.5")
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 100,
        }
        status, _, headers = await _chat(gw, body)
        assert status == 200 and "x-costwarden-max-tokens-clamped" not in headers
        body["max_tokens"] = 5000
        status, _, headers = await _chat(gw, body)
        assert status == 200
        clamped = int(headers["x-costwarden-max-tokens-clamped"])
        assert 300 < clamped < 400  # ~$0.39 left at $0.001 per token
        status, resp, _ = await _chat(gw, body)
        assert status == 402, resp


async def test_limits_on_user_tag_and_key_scopes(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    async with live_gateway(mock, database_url, tmp_path) as gw:
        await set_limits(gw, "user", "alice", daily_requests=1)
        await set_limits(gw, "tag", "team=search", requests_per_minute=2)
        await set_limits(gw, "key", gw.key_id, daily_requests=5)
        assert (await _chat(gw, **{"x-costwarden-user": "alice"}))[0] == 200
        status, body, _ = await _chat(gw, **{"x-costwarden-user": "alice"})
        assert status == 402 and body["error"]["scope"] == "user"
        assert (await _chat(gw, **{"x-costwarden-user": "bob"}))[0] == 200
        assert (await _chat(gw, **{"x-costwarden-tags": "team=search"}))[0] == 200
        assert (await _chat(gw, **{"x-costwarden-tags": "team=search"}))[0] == 200
        status, body, headers = await _chat(gw, **{"x-costwarden-tags": "team=search"})
        assert status == 429 and body["error"]["scope"] == "tag" and "retry-after" in headers
        assert (await _chat(gw))[0] == 200  # the key's fifth admitted request today
        status, body, _ = await _chat(gw)
        assert body["error"]["scope"] == "key"


async def test_n_choices_cannot_overspend_a_hard_budget(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    """Providers bill every choice: the bound is n x max_tokens, and the clamp is per choice."""
    await configure_mock(mock, output_tokens=1000)
    async with live_gateway(mock, database_url, tmp_path, clock=FakeClock(T0)) as gw:
        await set_limits(gw, daily_usd="0.001")
        # 128 x 100 tokens at $0.60/M would be $0.00768: not even 16 tokens a choice fit.
        status, body, _ = await _chat(gw, {**CHAT, "n": 128, "max_tokens": 100})
        assert status == 402 and body["error"]["code"] == "budget_exceeded", body
        clamps: list[int] = []
        for _ in range(10):
            status, body, headers = await _chat(gw, {**CHAT, "n": 8, "max_tokens": 1000})
            if status != 200:
                break
            assert len(body["choices"]) == 8
            clamps.append(int(headers["x-costwarden-max-tokens-clamped"]))
        assert status == 402 and clamps and all(c < 1000 for c in clamps), (status, clamps)
        await gw.app.ledger.flush()
        rows = await asyncio.to_thread(ledger_rows, gw.app.engine)
        spent = sum((r.cost_usd for r in rows), Decimal(0))
        assert Decimal("0.0009") < spent <= Decimal("0.001"), spent
        assert max(r.output_tokens for r in rows) >= 8 * clamps[0] - 8


async def test_every_tag_counts_up_to_the_documented_limit(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    """Ten tags in a 259-character header: the tenth's budget holds (it was once cut off)."""
    tags = [f"tag{i}=value-{i:02d}-{'x' * 12}" for i in range(10)]
    header = ",".join(tags)
    assert len(header) > 200
    async with live_gateway(mock, database_url, tmp_path) as gw:
        await set_limits(gw, "tag", tags[-1], daily_requests=1)
        assert (await _chat(gw, **{"x-costwarden-tags": header}))[0] == 200
        status, body, _ = await _chat(gw, **{"x-costwarden-tags": header})
        assert status == 402 and body["error"]["scope_id"] == tags[-1], body
        # Past the documented limits the header is refused whole, naming the limit.
        too_many = ",".join(f"t{i}=v" for i in range(21))
        status, body, _ = await _chat(gw, **{"x-costwarden-tags": too_many})
        assert status == 400 and "at most 20 tags" in body["error"]["message"]
        status, body, _ = await _chat(gw, **{"x-costwarden-tags": "team=" + "y" * 201})
        assert status == 400 and "200 characters" in body["error"]["message"]
        status, body, _ = await _chat(gw, **{"x-costwarden-session": "s" * 201})
        assert status == 400 and body["error"]["param"] == "x-costwarden-session"
        calls = (await _mock(mock))["requests"]
        assert calls == 1  # refused requests never reached the provider
