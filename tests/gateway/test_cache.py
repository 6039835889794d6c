"""The response cache end to end: a live gateway (its in-process cache), the official SDKs,
the mock upstream. A hit never reaches the upstream, is a ledger row ``cached`` at $0 with
``saved_usd`` the avoided cost, and is never another org's answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from costwarden.caching.keys import cache_key, namespace
from costwarden.mock import MockServer
from costwarden.storage import repo
from costwarden.storage.usage import ledger_rows
from tests.helpers import LiveGateway, ledger_row, live_gateway, set_limits
from tests.helpers import mock_stats as _stats

ROUTES = """
[[routes]]
model = "cached-mini"
deployments = ["openai:gpt-4o-mini"]
cache = { ttl_seconds = 600 }

[[routes]]
model = "cached-haiku"
deployments = ["anthropic:claude-haiku-4-5"]
cache = { ttl_seconds = 600 }

[[routes]]
model = "cached-any"
deployments = ["openai:gpt-4o-mini"]
cache = { ttl_seconds = 600, replay_unsafe = true }

[[routes]]
model = "shared-docs"
deployments = ["openai:gpt-4o-mini"]
cache = { ttl_seconds = 600, namespace = "docs" }

[[routes]]
model = "cached-embed"
deployments = ["openai:text-embedding-3-small"]
cache = { ttl_seconds = 600 }
"""
HI: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def gw(mock: MockServer, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with live_gateway(
        mock, f"sqlite:///{tmp_path / 'gw.db'}", tmp_path, extra_toml=ROUTES
    ) as gateway:
        yield gateway


async def _calls(mock: MockServer) -> int:
    return int((await _stats(mock))["requests"])


async def test_openai_miss_then_hit_unary_and_streamed(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    ask: dict[str, Any] = {"model": "cached-mini", "messages": HI, "temperature": 0}
    miss = await oa.chat.completions.with_raw_response.create(**ask)
    assert miss.headers["x-costwarden-cache"] == "miss"
    first = miss.parse()
    calls = await _calls(mock)

    hit = await oa.chat.completions.with_raw_response.create(**ask)
    assert hit.headers["x-costwarden-cache"] == "hit"
    assert await _calls(mock) == calls  # never reached the upstream
    again = hit.parse()
    assert again.id == first.id  # the stored answer itself
    assert again.choices[0].message.content == first.choices[0].message.content
    assert hit.headers["x-costwarden-cost-usd"] == "0"
    miss_row = await ledger_row(gw, miss.headers["x-request-id"])
    hit_row = await ledger_row(gw, hit.headers["x-request-id"])
    assert miss_row.status == "success" and miss_row.cost_usd > 0
    assert hit_row.status == "cached" and hit_row.http_status == 200
    assert hit_row.cost_usd == 0 and hit_row.saved_usd == miss_row.cost_usd
    assert Decimal(hit.headers["x-costwarden-saved-usd"]) == miss_row.cost_usd
    assert hit_row.route_reason is not None and hit_row.route_reason.startswith("cache hit: ")

    # The same request streamed: answered from the cache as a stream, usage chunk as asked.
    stream = await oa.chat.completions.create(
        **ask, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert await _calls(mock) == calls
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == first.choices[0].message.content
    assert chunks[-1].usage is not None and first.usage is not None
    assert chunks[-1].usage.completion_tokens == first.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == first.usage.prompt_tokens


async def test_a_streamed_miss_is_stored_and_served_unary_or_streamed(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    ask: dict[str, Any] = {
        "model": "cached-mini",
        "messages": [{"role": "user", "content": "stream it"}],
        "temperature": 0,
    }
    async with oa.chat.completions.with_streaming_response.create(**ask, stream=True) as raw:
        assert raw.headers["x-costwarden-cache"] == "miss"
        streamed = [c async for c in await raw.parse()]
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert not any(c.usage for c in streamed)  # not asked for
    calls = await _calls(mock)
    unary = await oa.chat.completions.with_raw_response.create(**ask)
    assert unary.headers["x-costwarden-cache"] == "hit"
    answer = unary.parse()
    assert answer.choices[0].message.content == text
    assert answer.usage is not None and answer.usage.completion_tokens > 0  # from the ledger
    again = await oa.chat.completions.create(**ask, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in again if c.choices]) == text
    assert await _calls(mock) == calls


async def test_anthropic_miss_then_hit_unary_and_streamed(
    gw: LiveGateway, an: anthropic.AsyncAnthropic, mock: MockServer
) -> None:
    ask: dict[str, Any] = {
        "model": "cached-haiku",
        "max_tokens": 64,
        "messages": HI,
        "extra_body": {"temperature": 0},  # this SDK version no longer names it
    }
    miss = await an.messages.with_raw_response.create(**ask)
    assert miss.headers["x-costwarden-cache"] == "miss"
    first = await miss.parse()
    calls = await _calls(mock)
    hit = await an.messages.with_raw_response.create(**ask)
    assert hit.headers["x-costwarden-cache"] == "hit"
    again = await hit.parse()
    assert again.content == first.content and again.id == first.id
    async with an.messages.stream(**ask) as stream:
        final = await stream.get_final_message()
    assert [b.model_dump(include={"type", "text"}) for b in final.content] == [
        b.model_dump(include={"type", "text"}) for b in first.content
    ]
    assert final.usage.output_tokens == first.usage.output_tokens
    assert await _calls(mock) == calls
    row = await ledger_row(gw, hit.headers["x-request-id"])
    assert row.status == "cached" and row.saved_usd > 0


async def test_embeddings_are_cached(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    first = await oa.embeddings.create(model="cached-embed", input=["a", "b"])
    calls = await _calls(mock)
    raw = await oa.embeddings.with_raw_response.create(model="cached-embed", input=["a", "b"])
    assert raw.headers["x-costwarden-cache"] == "hit" and await _calls(mock) == calls
    assert raw.parse().data[1].embedding == first.data[1].embedding


async def test_another_org_never_gets_the_answer_unless_the_route_shares(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    other_key, other = await asyncio.to_thread(repo.create_key, gw.app.engine, org="globex")
    gw.app.keys.apply([other])
    ask: dict[str, Any] = {"messages": HI, "temperature": 0}
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=other_key, max_retries=0) as ob:
        for model, theirs in (("cached-mini", "miss"), ("shared-docs", "hit")):
            await oa.chat.completions.create(model=model, **ask)
            assert (
                await oa.chat.completions.with_raw_response.create(model=model, **ask)
            ).headers["x-costwarden-cache"] == "hit"
            calls = await _calls(mock)
            raw = await ob.chat.completions.with_raw_response.create(model=model, **ask)
            assert raw.headers["x-costwarden-cache"] == theirs, model
            assert await _calls(mock) == calls + (theirs == "miss")
    # The keys differ by namespace alone.
    payload = {"model": "cached-mini", "messages": HI, "temperature": 0}
    acme = cache_key(namespace("org_a", None), "chat.completions", "openai", payload)
    assert acme != cache_key(namespace("org_b", None), "chat.completions", "openai", payload)


async def test_client_directives_and_unsafe_requests(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    ask: dict[str, Any] = {"model": "cached-mini", "messages": HI, "temperature": 0}
    await oa.chat.completions.create(**ask)

    async def status(headers: dict[str, str] | None = None, **kwargs: Any) -> str:
        raw = await oa.chat.completions.with_raw_response.create(
            **{**ask, **kwargs}, extra_headers=headers or {}
        )
        return raw.headers["x-costwarden-cache"]

    calls = await _calls(mock)
    assert await status({"cache-control": "no-store"}) == "bypass"
    assert await status({"x-costwarden-cache": "bypass"}) == "bypass"
    assert await status({"x-costwarden-cache": "refresh"}) == "refresh"
    assert await status({"cache-control": "no-cache"}) == "refresh"
    assert await _calls(mock) == calls + 4
    assert await status({"cache-control": "max-age=3600"}) == "hit"
    assert await status() == "hit"
    # Not safe to replay: a temperature above 0 (or none), tools; unless the route opts in.
    assert await status(temperature=0.7) == "bypass"
    assert await status(temperature=None) == "bypass"
    await oa.chat.completions.create(model="cached-any", messages=HI, temperature=0.7)
    raw = await oa.chat.completions.with_raw_response.create(
        model="cached-any", messages=HI, temperature=0.7
    )
    assert raw.headers["x-costwarden-cache"] == "hit"
    # An uncached route says nothing about the cache.
    plain = await oa.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HI, temperature=0
    )
    assert "x-costwarden-cache" not in plain.headers


async def test_saved_usd_sums_to_the_avoided_cost_and_hits_charge_no_budget(
    gw: LiveGateway, oa: openai.AsyncOpenAI
) -> None:
    await set_limits(gw, daily_usd="5")
    ask: dict[str, Any] = {"model": "cached-mini", "messages": HI, "temperature": 0}
    miss = await oa.chat.completions.with_raw_response.create(**ask)
    left = Decimal(miss.headers["x-costwarden-budget-remaining-usd"])
    ids = []
    for _ in range(7):
        raw = await oa.chat.completions.with_raw_response.create(**ask)
        assert "x-costwarden-budget-remaining-usd" not in raw.headers  # nothing reserved
        ids.append(raw.headers["x-request-id"])
    miss_row = await ledger_row(gw, miss.headers["x-request-id"])
    rows = await asyncio.to_thread(ledger_rows, gw.app.engine, ids)
    assert [r.status for r in rows] == ["cached"] * 7
    assert sum((r.saved_usd for r in rows), Decimal(0)) == 7 * miss_row.cost_usd
    assert sum((r.cost_usd for r in rows), Decimal(0)) == 0
    after = await oa.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HI, max_tokens=5
    )
    spent_since = left - Decimal(after.headers["x-costwarden-budget-remaining-usd"])
    after_row = await ledger_row(gw, after.headers["x-request-id"])
    assert spent_since == after_row.cost_usd  # the hits took nothing from the budget


async def test_bad_directive_is_a_400_and_a_broken_entry_a_miss(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer, caplog: pytest.LogCaptureFixture
) -> None:
    ask: dict[str, Any] = {"model": "cached-mini", "messages": HI, "temperature": 0}
    calls = await _calls(mock)
    with pytest.raises(openai.BadRequestError) as bad:
        await oa.chat.completions.create(**ask, extra_headers={"x-costwarden-cache": "forever"})
    assert "x-costwarden-cache must be 'refresh' or 'bypass'" in bad.value.message
    assert await _calls(mock) == calls  # nothing changed, nothing called
    async with aiohttp.ClientSession() as http:  # the error's shape, raw
        async with http.post(
            gw.openai_url + "/chat/completions",
            json=ask,
            headers={"authorization": f"Bearer {gw.key}", "x-costwarden-cache": "x"},
        ) as r:
            assert r.status == 400
            error = (await r.json())["error"]
            assert error["type"] == "invalid_request_error"
            assert error["param"] == "x-costwarden-cache"

    await oa.chat.completions.create(**ask)
    org = (await ledger_row(gw, (await _last_id(oa, ask)))).org_id
    assert org is not None
    key = cache_key(namespace(org, None), "chat.completions", "openai", ask)
    store = gw.app.proxy.cache._store  # type: ignore[union-attr]
    for broken in (b"", b"garbage", b'{"v":1}\n', (await store.get(key))[:-3]):
        await store.set(key, broken, 60)
        calls = await _calls(mock)
        with caplog.at_level(logging.WARNING, logger="costwarden.gateway.cache"):
            raw = await oa.chat.completions.with_raw_response.create(**ask)
        assert raw.headers["x-costwarden-cache"] == "miss"
        assert raw.status_code == 200 and await _calls(mock) == calls + 1
        assert "could not be read, a miss" in caplog.text
        caplog.clear()
    # The miss stored a good entry again.
    hit = await oa.chat.completions.with_raw_response.create(**ask)
    assert hit.headers["x-costwarden-cache"] == "hit"


async def _last_id(oa: openai.AsyncOpenAI, ask: dict[str, Any]) -> str:
    raw = await oa.chat.completions.with_raw_response.create(**ask)
    assert raw.headers["x-costwarden-cache"] == "hit"
    return raw.headers["x-request-id"]


async def test_a_hit_says_what_the_scan_made_of_the_request(
    gw: LiveGateway, oa: openai.AsyncOpenAI
) -> None:
    text = "please write to jane.rivera@northwind-mail.com about lunch"  # PII: flagged
    ask: dict[str, Any] = {
        "model": "cached-mini",
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
    }
    miss = await oa.chat.completions.with_raw_response.create(**ask)
    hit = await oa.chat.completions.with_raw_response.create(**ask)
    assert hit.headers["x-costwarden-cache"] == "hit"
    status = miss.headers["x-costwarden-security-status"]
    assert status != "clean" and hit.headers["x-costwarden-security-status"] == status
