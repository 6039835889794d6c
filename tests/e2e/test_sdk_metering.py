"""End to end with the official SDKs: a live gateway on loopback, the mock as upstream.

Every ledger row's cost must equal genai-prices' price for the usage the mock reported.
Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import aiohttp
import anthropic
import openai
import orjson
import pytest
from genai_prices import Usage, calc_price

from costwarden.core.records import LedgerRecord
from costwarden.mock import MockServer
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.usage import ledger_rows
from tests.helpers import ANTHROPIC_SECRET, OPENAI_SECRET, LiveGateway, live_gateway


async def _row(gw: LiveGateway, request_id: str) -> LedgerRecord:
    ledger: LedgerWriter = gw.app.ledger
    for _ in range(100):
        await ledger.flush()
        rows = await asyncio.to_thread(ledger_rows, gw.app.engine, [request_id])
        if rows:
            return rows[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no ledger row for {request_id}")


def _price(model: str, provider: str, **usage: int) -> Decimal:
    price: Decimal = calc_price(Usage(**usage), model, provider_id=provider).total_price
    return price


async def _mock_config(mock: MockServer, **fields: object) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(mock.base_url + "/_mock/config", json=fields) as r:
            assert r.status == 200, await r.text()


async def _mock_get(mock: MockServer, path: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as http:
        async with http.get(mock.base_url + path) as r:
            data: dict[str, object] = await r.json()
            return data


async def test_openai_chat_billed_exactly(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    await _mock_config(mock, output_tokens=17, cached_tokens=4, reasoning_tokens=3)
    async with live_gateway(mock, database_url, tmp_path) as gw:
        async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as c:
            raw = await c.chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hello there, gateway"}],
                user="end-user-7",
                extra_headers={"x-costwarden-session": "run-1", "x-costwarden-tags": "team=a,f=b"},
                extra_body={"some_unknown_field": {"kept": True}},
            )
            completion = raw.parse()
        usage = completion.usage
        assert usage is not None and usage.completion_tokens == 17
        row = await _row(gw, raw.headers["x-request-id"])
        expected = _price(
            "gpt-4o-mini",
            "openai",
            input_tokens=usage.prompt_tokens,
            cache_read_tokens=4,
            output_tokens=17,
            output_reasoning_tokens=3,
        )
        assert row.cost_usd == expected and expected > 0
        assert Decimal(raw.headers["x-costwarden-cost-usd"]) == expected
        assert float(raw.headers["x-costwarden-overhead-ms"]) >= 0
        assert (row.status, row.http_status, row.cost_estimated) == ("success", 200, False)
        assert (row.input_tokens, row.cached_input_tokens) == (usage.prompt_tokens, 4)
        assert (row.output_tokens, row.reasoning_tokens) == (17, 3)
        assert (row.end_user, row.session_id, row.tags) == (
            "end-user-7",
            "run-1",
            {"team": "a", "f": "b"},
        )
        assert (row.provider, row.requested_model, row.served_model) == (
            "openai",
            "gpt-4o-mini",
            "gpt-4o-mini",
        )
        assert row.key_id == gw.key_id and row.org_id is not None
        last = await _mock_get(mock, "/_mock/last?path=/v1/chat/completions")
        body = last["body"]
        headers = last["headers"]
        assert isinstance(body, dict) and isinstance(headers, dict)
        assert body["some_unknown_field"] == {"kept": True}  # unknown fields pass through
        auth = {k.lower(): v for k, v in headers.items()}["authorization"]
        assert auth == f"Bearer {OPENAI_SECRET}"  # our credential, not the client's key


async def test_openai_stream_with_usage_requested(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    await _mock_config(mock, output_tokens=9)
    async with live_gateway(mock, database_url, tmp_path) as gw:
        async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as c:
            raw = await c.chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "stream please"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in raw.parse()]
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        usage_chunks = [ch for ch in chunks if ch.usage is not None]
        assert len(usage_chunks) == 1 and usage_chunks[0].usage is not None
        reported = usage_chunks[0].usage
        assert reported.completion_tokens == 9 and text
        row = await _row(gw, raw.headers["x-request-id"])
        assert row.streamed and row.status == "success" and not row.cost_estimated
        assert row.ttft_ms is not None and row.ttft_ms > 0
        assert row.cost_usd == _price(
            "gpt-4o-mini", "openai", input_tokens=reported.prompt_tokens, output_tokens=9
        )


async def test_openai_stream_without_include_usage_is_billed_but_gets_no_usage_chunk(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    await _mock_config(mock, output_tokens=11)
    async with live_gateway(mock, database_url, tmp_path) as gw:
        async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as c:
            raw = await c.chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "no usage for me"}],
                stream=True,
            )
            chunks = [chunk async for chunk in raw.parse()]
        assert chunks and all(ch.usage is None for ch in chunks)
        assert all(ch.choices for ch in chunks)  # the usage-only chunk was removed
        last = await _mock_get(mock, "/_mock/last?path=/v1/chat/completions")
        body = last["body"]
        assert isinstance(body, dict) and body["stream_options"] == {"include_usage": True}
        row = await _row(gw, raw.headers["x-request-id"])
        assert row.output_tokens == 11 and not row.cost_estimated and row.status == "success"
        assert row.cost_usd == _price(
            "gpt-4o-mini", "openai", input_tokens=row.input_tokens, output_tokens=11
        )
        assert row.input_tokens > 0


async def test_embeddings_billed(mock: MockServer, database_url: str, tmp_path: Path) -> None:
    async with live_gateway(mock, database_url, tmp_path) as gw:
        async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as c:
            raw = await c.embeddings.with_raw_response.create(
                model="text-embedding-3-small", input=["alpha beta", "gamma delta epsilon"]
            )
            result = raw.parse()
        assert len(result.data) == 2
        row = await _row(gw, raw.headers["x-request-id"])
        assert row.endpoint == "embeddings" and row.input_tokens == result.usage.prompt_tokens
        assert row.cost_usd == _price(
            "text-embedding-3-small", "openai", input_tokens=result.usage.prompt_tokens
        )


async def test_models_list_both_sdks(mock: MockServer, tmp_path: Path) -> None:
    async with live_gateway(mock, f"sqlite:///{tmp_path}/m.db", tmp_path) as gw:
        async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key) as c:
            ids = sorted([m.id async for m in c.models.list()])
        async with anthropic.AsyncAnthropic(base_url=gw.base_url, api_key=gw.key) as a:
            aids = sorted([m.id async for m in a.models.list()])
    assert ids == aids == ["claude-haiku-4-5", "gpt-4o-mini", "text-embedding-3-small"]


async def test_anthropic_messages_billed_exactly(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    await _mock_config(mock, output_tokens=13, cached_tokens=6, cache_write_tokens=2)
    async with live_gateway(mock, database_url, tmp_path) as gw:
        async with anthropic.AsyncAnthropic(
            base_url=gw.base_url, api_key=gw.key, max_retries=0
        ) as a:
            raw = await a.messages.with_raw_response.create(
                model="claude-haiku-4-5",
                max_tokens=100,
                system="be terse",
                messages=[{"role": "user", "content": "what is a gateway for, really?"}],
            )
            message = await raw.parse()
        u = message.usage
        assert u.output_tokens == 13
        row = await _row(gw, raw.headers["x-request-id"])
        cache_read = u.cache_read_input_tokens or 0
        cache_write = u.cache_creation_input_tokens or 0
        total_in = u.input_tokens + cache_read + cache_write
        expected = _price(
            "claude-haiku-4-5",
            "anthropic",
            input_tokens=total_in,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            output_tokens=13,
        )
        assert (
            row.cost_usd == expected and Decimal(raw.headers["x-costwarden-cost-usd"]) == expected
        )
        assert (row.input_tokens, row.cached_input_tokens, row.cache_write_tokens) == (
            total_in,
            cache_read,
            cache_write,
        )
        last = await _mock_get(mock, "/_mock/last?path=/v1/messages")
        headers = last["headers"]
        assert isinstance(headers, dict)
        assert {k.lower(): v for k, v in headers.items()}["x-api-key"] == ANTHROPIC_SECRET


async def test_anthropic_stream_billed_exactly(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    await _mock_config(mock, output_tokens=21)
    async with live_gateway(mock, database_url, tmp_path) as gw:
        async with anthropic.AsyncAnthropic(
            base_url=gw.base_url, api_key=gw.key, max_retries=0
        ) as a:
            async with a.messages.stream(
                model="claude-haiku-4-5",
                max_tokens=100,
                messages=[{"role": "user", "content": "stream me some words"}],
            ) as stream:
                text = "".join([t async for t in stream.text_stream])
                final = await stream.get_final_message()
                request_id = stream.response.headers["x-request-id"]
        assert text and final.usage.output_tokens == 21
        row = await _row(gw, request_id)
        assert row.streamed and row.status == "success" and not row.cost_estimated
        assert row.cost_usd == _price(
            "claude-haiku-4-5", "anthropic", input_tokens=final.usage.input_tokens, output_tokens=21
        )


async def _read_some_then_drop(
    url: str, headers: dict[str, str], body: dict[str, object], wanted: int, marker: bytes
) -> tuple[str, int]:
    """Read until ``wanted`` content events arrived, then close the connection abruptly."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        resp = await http.post(url, data=orjson.dumps(body), headers=headers)
        request_id = resp.headers["x-request-id"]
        received = b""
        while received.count(marker) < wanted:
            received += await resp.content.readany()
        resp.close()
    return request_id, received.count(marker)


async def test_openai_client_disconnect_billed_for_what_it_received(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    await _mock_config(mock, output_tokens=400, tokens_per_second=100)
    async with live_gateway(mock, database_url, tmp_path) as gw:
        request_id, got = await _read_some_then_drop(
            gw.openai_url + "/chat/completions",
            {"authorization": f"Bearer {gw.key}"},
            {
                "model": "gpt-4o-mini",
                "stream": True,
                "messages": [{"role": "user", "content": "a long answer please"}],
            },
            wanted=6,
            marker=b'"content":"tok',
        )
        row = await _row(gw, request_id)
        stats = await _mock_get(mock, "/_mock/stats")
    assert row.status == "cancelled" and row.cost_estimated
    # Billed for what reached the client; a few more events may have been in flight.
    assert got <= row.output_tokens <= got + 3, (got, row.output_tokens)
    assert row.output_tokens < 400  # the upstream call was cut short, not run to the end
    assert stats["in_flight"] == 0
    assert row.cost_usd == _price(
        "gpt-4o-mini", "openai", input_tokens=row.input_tokens, output_tokens=row.output_tokens
    )


async def test_anthropic_client_disconnect_billed_for_what_it_received(
    mock: MockServer, tmp_path: Path
) -> None:
    await _mock_config(mock, output_tokens=400, tokens_per_second=100)
    async with live_gateway(mock, f"sqlite:///{tmp_path}/d.db", tmp_path) as gw:
        request_id, got = await _read_some_then_drop(
            gw.base_url + "/v1/messages",
            {"x-api-key": gw.key},
            {
                "model": "claude-haiku-4-5",
                "stream": True,
                "max_tokens": 1000,
                "messages": [{"role": "user", "content": "a long answer please"}],
            },
            wanted=5,
            marker=b"event: content_block_delta",
        )
        row = await _row(gw, request_id)
    assert row.status == "cancelled" and row.cost_estimated
    assert got <= row.output_tokens <= got + 3, (got, row.output_tokens)
    assert row.input_tokens > 0  # known exactly from message_start
    assert row.cost_usd == _price(
        "claude-haiku-4-5",
        "anthropic",
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
    )


@pytest.mark.parametrize("mode", ["durable"])
async def test_durable_mode_row_committed_before_response(
    mock: MockServer, database_url: str, tmp_path: Path, mode: str
) -> None:
    async with live_gateway(mock, database_url, tmp_path, ledger_mode=mode) as gw:
        async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as c:
            raw = await c.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "durable"}]
            )
        # No flush: the row must already be in the database when the response arrives.
        rows = await asyncio.to_thread(ledger_rows, gw.app.engine, [raw.headers["x-request-id"]])
        assert len(rows) == 1 and rows[0].status == "success"
