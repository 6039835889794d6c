"""Bad input and broken upstreams: the documented status and body, and nothing else changes.

The whole battery runs against one live gateway; afterwards a normal request must still
succeed and no captured log line may contain a provider credential or a virtual key.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest

from costwarden.mock import MockServer
from costwarden.storage import repo
from costwarden.storage.usage import ledger_rows
from tests.helpers import (
    ANTHROPIC_SECRET,
    OPENAI_SECRET,
    LiveGateway,
    live_gateway,
    mock_stats,
)
from tests.helpers import anthropic_error as _anthropic_error
from tests.helpers import configure_mock as _mock
from tests.helpers import openai_error as _openai_error
from tests.helpers import post_json as _post


async def _upstream_calls(mock: MockServer) -> int:
    calls: int = (await mock_stats(mock))["requests"]
    return calls



CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {
    "model": "claude-haiku-4-5",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture
async def gw(mock: MockServer, tmp_path: Path) -> Any:
    async with live_gateway(mock, f"sqlite:///{tmp_path}/e.db", tmp_path, timeout=1.0) as g:
        yield g


BAD_BODIES = [
    (b"{not json", "not valid JSON", None),
    (b"", "empty", None),
    (b"[1, 2]", "JSON object", None),
    (orjson.dumps({"messages": [{"role": "user", "content": "x"}]}), "'model'", "model"),
    (orjson.dumps({"model": "gpt-4o-mini"}), "'messages'", "messages"),
    (orjson.dumps({"model": "gpt-4o-mini", "messages": "hi"}), "'messages'", "messages"),
    (orjson.dumps({"model": 7, "messages": []}), "'model'", "model"),
    (orjson.dumps({**CHAT, "max_tokens": "10"}), "max_tokens", "max_tokens"),
    (orjson.dumps({**CHAT, "stream": "yes"}), "stream", "stream"),
    (orjson.dumps({**CHAT, "messages": [42]}), "messages[0]", "messages[0]"),
]


@pytest.mark.parametrize(("body", "says", "param"), BAD_BODIES)
async def test_bad_openai_bodies_get_400(
    gw: LiveGateway, body: bytes, says: str, param: str | None
) -> None:
    before = await _upstream_calls(gw.mock)
    status, data, headers = await _post(gw, "/v1/chat/completions", body)
    error = _openai_error(data)
    assert status == 400 and error["type"] == "invalid_request_error"
    assert says in error["message"] and error["param"] == param
    assert headers["x-request-id"].startswith("req_")
    assert await _upstream_calls(gw.mock) == before  # refused before the upstream


@pytest.mark.parametrize(
    "body",
    [
        b"{oops",
        orjson.dumps({"model": "claude-haiku-4-5", "max_tokens": 5}),
        orjson.dumps({**MESSAGES, "max_tokens": 0}),
        orjson.dumps({k: v for k, v in MESSAGES.items() if k != "max_tokens"}),
    ],
)
async def test_bad_anthropic_bodies_get_anthropic_shaped_400(gw: LiveGateway, body: bytes) -> None:
    status, data, _ = await _post(gw, "/v1/messages", body)
    assert status == 400 and _anthropic_error(data)["type"] == "invalid_request_error"


async def test_body_too_large_gets_413_both_shapes(gw: LiveGateway) -> None:
    big = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 10_000_000}]})
    status, data, _ = await _post(gw, "/v1/chat/completions", big)
    assert status == 413 and _openai_error(data)["type"] == "request_too_large"
    status, data, _ = await _post(gw, "/v1/messages", big)
    assert status == 413 and _anthropic_error(data)["type"] == "request_too_large"


async def test_unknown_model_gets_404_listing_models(gw: LiveGateway) -> None:
    status, data, _ = await _post(gw, "/v1/chat/completions", {**CHAT, "model": "gpt-9"})
    error = _openai_error(data)
    assert status == 404 and error["type"] == "model_not_found"
    assert error["available"] == ["claude-haiku-4-5", "gpt-4o-mini", "text-embedding-3-small"]
    status, data, _ = await _post(gw, "/v1/messages", {**MESSAGES, "model": "claude-9"})
    assert status == 404 and _anthropic_error(data)["type"] == "model_not_found"


@pytest.mark.parametrize(
    ("path", "body"), [("/v1/chat/completions", CHAT), ("/v1/messages", MESSAGES)]
)
async def test_max_tokens_beyond_every_context_window_is_the_clients_400(
    gw: LiveGateway, path: str, body: dict[str, Any]
) -> None:
    """Not a 503 (which the SDKs retry): no candidate could ever take the request."""
    before = await _upstream_calls(gw.mock)
    status, data, _ = await _post(gw, path, {**body, "max_tokens": 10_000_000})
    error = _openai_error(data) if path.endswith("completions") else _anthropic_error(data)
    assert status == 400 and error["type"] == "invalid_request_error", data
    assert "context window" in error["message"] and "10000000" in error["message"]
    if path.endswith("completions"):
        assert error["code"] == "context_length_exceeded" and error["param"] == "max_tokens"
    assert await _upstream_calls(gw.mock) == before


@pytest.mark.parametrize("key", [None, "cw-unknown-key-000000000000", "Bearer-garbage"])
async def test_missing_or_unknown_key_gets_401(gw: LiveGateway, key: str | None) -> None:
    status, data, _ = await _post(gw, "/v1/chat/completions", CHAT, key=key)
    assert status == 401 and _openai_error(data)["type"] == "authentication_error"
    status, data, _ = await _post(gw, "/v1/messages", MESSAGES, key=key)
    assert status == 401 and _anthropic_error(data)["type"] == "authentication_error"


async def test_revoked_key_gets_401_and_a_ledger_row(gw: LiveGateway) -> None:
    record = await asyncio.to_thread(repo.revoke_key, gw.app.engine, gw.key_id)
    gw.app.keys.apply([record])
    status, data, headers = await _post(gw, "/v1/chat/completions", CHAT)
    assert status == 401 and "revoked" in _openai_error(data)["message"]
    await gw.app.ledger.flush()
    rows = await asyncio.to_thread(ledger_rows, gw.app.engine, [headers["x-request-id"]])
    assert [(r.status, r.http_status, r.key_id) for r in rows] == [("auth_error", 401, gw.key_id)]


async def test_upstream_500_gets_502_with_provider_message(gw: LiveGateway) -> None:
    await _mock(gw.mock, fault_status=500)
    status, data, headers = await _post(gw, "/v1/chat/completions", CHAT)
    error = _openai_error(data)
    assert status == 502 and error["type"] == "upstream_error" and "500" in error["message"]
    status, data, _ = await _post(gw, "/v1/messages", MESSAGES)
    assert status == 502 and _anthropic_error(data)["type"] == "upstream_error"
    await gw.app.ledger.flush()
    rows = await asyncio.to_thread(ledger_rows, gw.app.engine, [headers["x-request-id"]])
    assert [(r.status, r.http_status) for r in rows] == [("upstream_error", 502)]


async def test_upstream_timeout_gets_504(gw: LiveGateway) -> None:
    await _mock(gw.mock, fault_timeout=True)
    status, data, _ = await _post(gw, "/v1/chat/completions", CHAT)
    assert status == 504 and _openai_error(data)["type"] == "upstream_error"
    status, data, _ = await _post(gw, "/v1/messages", {**MESSAGES, "stream": True})
    assert status == 504 and _anthropic_error(data)["type"] == "upstream_error"


async def test_upstream_dropped_connection_gets_502(gw: LiveGateway) -> None:
    await _mock(gw.mock, fault_drop=True)
    status, data, _ = await _post(gw, "/v1/chat/completions", CHAT)
    assert status == 502 and _openai_error(data)["type"] == "upstream_error"
    status, data, _ = await _post(gw, "/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 502


async def test_upstream_4xx_is_relayed_as_is(gw: LiveGateway) -> None:
    await _mock(gw.mock, fault_status=429)
    status, data, _ = await _post(gw, "/v1/chat/completions", CHAT)
    assert status == 429 and "error" in data


async def test_stream_dropped_mid_way_ends_with_an_error_both_sdks(gw: LiveGateway) -> None:
    await _mock(gw.mock, fault_drop_mid_stream_after=3)
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as c:
        stream = await c.chat.completions.create(**CHAT, stream=True)  # type: ignore[call-overload]
        with pytest.raises(openai.APIError, match="upstream stream broke"):
            async for _ in stream:
                pass
    async with anthropic.AsyncAnthropic(base_url=gw.base_url, api_key=gw.key, max_retries=0) as a:
        with pytest.raises(anthropic.APIStatusError):
            async with a.messages.stream(**MESSAGES) as s:  # type: ignore[arg-type]
                async for _ in s:
                    pass


async def test_battery_leaves_gateway_serving_and_logs_clean(
    gw: LiveGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for body, _, _ in BAD_BODIES:
        await _post(gw, "/v1/chat/completions", body)
    await _post(gw, "/v1/chat/completions", CHAT, key="cw-not-a-real-key-1234567890")
    for fault in (
        {"fault_status": 500},
        {"fault_status": 401},
        {"fault_drop": True},
        {"fault_timeout": True},
    ):
        await _mock(gw.mock, **fault)
        await _post(gw, "/v1/chat/completions", CHAT)
        await _post(gw, "/v1/messages", MESSAGES)
    await _mock(gw.mock, fault_status=None, fault_drop=False, fault_timeout=False)
    # The failures opened the deployment's breaker: refused without calling the upstream
    # until the cooldown ends or an operator resets it.
    status, data, _ = await _post(gw, "/v1/chat/completions", CHAT)
    assert status == 503 and _openai_error(data)["code"] == "no_healthy_deployment"
    await gw.app.breakers.reset("openai:gpt-4o-mini", actor="test")
    status, data, _ = await _post(gw, "/v1/chat/completions", CHAT)
    assert status == 200 and data["object"] == "chat.completion"
    await gw.app.ledger.flush()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records, "expected the failures to be logged"
    for secret in (OPENAI_SECRET, ANTHROPIC_SECRET, gw.key, "cw-not-a-real-key-1234567890"):
        assert secret not in text


async def test_upstream_401_hides_the_provider_message(gw: LiveGateway) -> None:
    await _mock(gw.mock, fault_status=401)
    status, data, _ = await _post(gw, "/v1/chat/completions", CHAT)
    error = _openai_error(data)
    assert status == 502 and "credentials" in error["message"]
    assert OPENAI_SECRET not in orjson.dumps(data).decode()
