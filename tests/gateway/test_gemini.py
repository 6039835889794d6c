"""Google Gemini end to end: the official OpenAI and Anthropic SDKs through a live gateway to
the mock's Gemini paths (``/v1beta/models/{model}:generateContent`` and friends, the key in
``x-goog-api-key``).

The mock's record of each request (``/_mock/last``) shows what the translation sent; every
ledger row's cost is held equal to genai-prices' ``google`` price of the usage the mock
reported, read from a ``usageMetadata`` built by the mock's own function from the request it
recorded (cached and thinking tokens included).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from genai_prices import calc_price, extract_usage
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from costwarden.config.settings import load_settings
from costwarden.core.errors import ConfigError
from costwarden.mock import MockServer
from costwarden.mock import formats as fmt
from costwarden.mock import gemini as mock_gemini
from tests.helpers import (
    PROVIDER_ENV,
    LiveGateway,
    configure_mock,
    gateway_toml,
    ledger_row,
    live_gateway,
    mock_last,
    mock_stats,
)

JSON = dict[str, Any]
GEMINI_KEY = "AIza-gw-test-7c1d5e"
FLASH = "gemini-2.5-flash"
GENERATE = f"/v1beta/models/{FLASH}:generateContent"
STREAM = f"/v1beta/models/{FLASH}:streamGenerateContent"
GEMINI = """
[[providers]]
name = "gemini"
type = "gemini"
base_url = "{mock}/v1beta"
api_key_env = "CW_TEST_GEMINI_KEY"

[[routes]]
model = "gemini-2.5-flash"
deployments = ["gemini:gemini-2.5-flash"]

[[routes]]
model = "gemini-embedding-001"
deployments = ["gemini:gemini-embedding-001"]

[[routes]]
model = "gemini-first"
deployments = ["gemini:gemini-2.5-flash-lite"]
fallbacks = ["claude-haiku-4-5"]
retries = 0
"""
WEATHER_OPENAI: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
]
WEATHER_ANTHROPIC: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
GEMINI_WEATHER = {
    "functionDeclarations": [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "OBJECT",
                "properties": {"city": {"type": "STRING"}},
                "required": ["city"],
            },
        }
    ]
}
ASK_WEATHER = "What is the weather in Paris?"
CALL_PARIS = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}


def _result(text: str) -> JSON:
    return {"functionResponse": {"name": "get_weather", "response": {"output": text}}}


@pytest.fixture
async def gw(mock: MockServer, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with live_gateway(
        mock,
        f"sqlite:///{tmp_path / 'gemini.db'}",
        tmp_path,
        extra_toml=GEMINI.format(mock=mock.base_url),
        env={"CW_TEST_GEMINI_KEY": GEMINI_KEY},
    ) as gateway:
        yield gateway










def _mock_usage(seen: JSON, visible: int, thoughts: int, cached: int) -> JSON:
    """The ``usageMetadata`` the mock answered ``seen`` with."""
    prompt = mock_gemini.prompt_tokens(seen)
    return mock_gemini.usage_metadata(prompt, visible, thoughts, min(cached, prompt))


def _google(meta: JSON, model: str) -> Decimal:
    """genai-prices' price of that usage, read by genai-prices' own Google extractor."""
    usage = extract_usage({"usageMetadata": meta, "modelVersion": model}, provider_id="google")
    price: Decimal = calc_price(usage.usage, model, provider_id="google").total_price
    return price


def _assert_billed(row: Any, meta: JSON, model: str = FLASH) -> None:
    thoughts = meta.get("thoughtsTokenCount", 0)
    assert (row.status, row.provider, row.served_model) == ("success", "gemini", model)
    assert row.input_tokens == meta["promptTokenCount"]
    assert row.cached_input_tokens == meta.get("cachedContentTokenCount", 0)
    assert row.output_tokens == meta["candidatesTokenCount"] + thoughts
    assert row.reasoning_tokens == thoughts
    assert not row.cost_estimated
    assert row.cost_usd == _google(meta, model) > 0


# --------------------------------------------------------------------------- OpenAI SDK


async def test_openai_chat_is_translated_and_billed_at_google_prices(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    await configure_mock(mock, output_tokens=12, reasoning_tokens=5, cached_tokens=8)
    raw = await oa.chat.completions.with_raw_response.create(
        model=FLASH,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello there, how are you today?"},
        ],
        max_tokens=100,
        temperature=0.2,
        stop=["END"],
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == fmt.reply_text(7)  # 12 less 5 thinking
    assert reply.choices[0].finish_reason == "stop"
    seen = await mock_last(mock, GENERATE)
    assert seen["headers"]["x-goog-api-key"] == GEMINI_KEY
    assert "authorization" not in seen["headers"]  # neither the client's key nor ours
    assert seen["body"] == {
        "contents": [{"role": "user", "parts": [{"text": "hello there, how are you today?"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 100, "temperature": 0.2, "stopSequences": ["END"]},
    }
    meta = _mock_usage(seen["body"], 7, 5, 8)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == meta["promptTokenCount"]
    assert reply.usage.completion_tokens == 12
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 8
    assert reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens == 5
    _assert_billed(await ledger_row(gw, raw.headers["x-request-id"]), meta)


@pytest.mark.parametrize("include_usage", [True, False])
async def test_openai_stream_is_billed_exactly(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer, include_usage: bool
) -> None:
    await configure_mock(mock, output_tokens=10, reasoning_tokens=3, cached_tokens=4)
    options: Any = {"include_usage": True} if include_usage else openai.NOT_GIVEN
    stream = await oa.chat.completions.create(
        model=FLASH,
        messages=[{"role": "user", "content": "tell me a story please"}],
        stream=True,
        stream_options=options,
    )
    text, usage, finish, request_id = [], None, None, None
    async for chunk in stream:
        request_id = request_id or stream.response.headers["x-request-id"]
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    assert "".join(text) == fmt.reply_text(7) and finish == "stop"
    assert request_id is not None
    seen = await mock_last(mock, STREAM)
    assert seen["headers"]["x-goog-api-key"] == GEMINI_KEY
    meta = _mock_usage(seen["body"], 7, 3, 4)
    if include_usage:
        assert usage is not None and usage.prompt_tokens == meta["promptTokenCount"]
        assert usage.completion_tokens == 10
    else:
        assert usage is None  # the usage chunk the decoder always makes is not relayed
    row = await ledger_row(gw, request_id)
    assert row.streamed
    _assert_billed(row, meta)


async def test_openai_tool_call_round_trip(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    ask: Any = {"role": "user", "content": ASK_WEATHER}
    first = await oa.chat.completions.create(model=FLASH, messages=[ask], tools=WEATHER_OPENAI)
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls or []
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}
    seen = await mock_last(mock, GENERATE)
    assert seen["body"]["tools"] == [GEMINI_WEATHER]  # the JSON schema in Gemini's subset

    assistant: Any = first.choices[0].message.model_dump(exclude_none=True)
    result: Any = {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}
    second = await oa.chat.completions.create(
        model=FLASH, messages=[ask, assistant, result], tools=WEATHER_OPENAI
    )
    assert second.choices[0].message.content and second.choices[0].finish_reason == "stop"
    seen = await mock_last(mock, GENERATE)
    assert seen["body"]["contents"] == [
        {"role": "user", "parts": [{"text": ASK_WEATHER}]},
        {"role": "model", "parts": [CALL_PARIS]},
        {"role": "user", "parts": [_result("18C and sunny")]},
    ]


async def test_openai_streamed_tool_call(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    async with oa.chat.completions.stream(
        model=FLASH, messages=[{"role": "user", "content": ASK_WEATHER}], tools=WEATHER_OPENAI
    ) as stream:
        final = await stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.parsed_arguments is None
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}
    assert final.choices[0].finish_reason == "tool_calls"
    assert (await mock_last(mock, STREAM))["body"]["tools"] == [GEMINI_WEATHER]


async def test_embeddings_through_the_openai_sdk(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    raw = await oa.embeddings.with_raw_response.create(
        model="gemini-embedding-001", input=["one", "two three"], dimensions=4
    )
    result = raw.parse()
    assert [len(d.embedding) for d in result.data] == [4, 4]
    assert all(isinstance(v, float) for d in result.data for v in d.embedding)
    seen = await mock_last(mock, "/v1beta/models/gemini-embedding-001:batchEmbedContents")
    assert seen["headers"]["x-goog-api-key"] == GEMINI_KEY
    assert seen["body"] == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": text}]},
                "outputDimensionality": 4,
            }
            for text in ("one", "two three")
        ]
    }
    tokens = fmt.tokens_for_bytes(3) + fmt.tokens_for_bytes(9)
    assert result.usage.prompt_tokens == tokens
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert (row.provider, row.input_tokens, row.output_tokens) == ("gemini", tokens, 0)
    assert row.cost_usd == _google({"promptTokenCount": tokens}, "gemini-embedding-001") > 0


async def test_a_request_gemini_cannot_take_is_a_400(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await oa.chat.completions.create(
            model=FLASH, messages=[{"role": "user", "content": "hi"}], n=2
        )
    assert caught.value.code == "untranslatable_request"
    assert "n:" in caught.value.message
    assert GENERATE not in (await mock_stats(mock))["by_path"]  # never sent


# --------------------------------------------------------------------------- Anthropic SDK


async def test_anthropic_messages_reach_gemini(
    gw: LiveGateway, an: anthropic.AsyncAnthropic, mock: MockServer
) -> None:
    await configure_mock(mock, output_tokens=9, cached_tokens=6, reasoning_tokens=2)
    raw = await an.messages.with_raw_response.create(
        model=FLASH,
        system="You are terse.",
        max_tokens=50,
        messages=[{"role": "user", "content": "hello from anthropic land"}],
    )
    message = await raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == fmt.reply_text(7)
    assert message.stop_reason == "end_turn"
    seen = await mock_last(mock, GENERATE)
    assert seen["body"] == {
        "contents": [{"role": "user", "parts": [{"text": "hello from anthropic land"}]}],
        "systemInstruction": {"parts": [{"text": "You are terse."}]},
        "generationConfig": {"maxOutputTokens": 50},
    }
    meta = _mock_usage(seen["body"], 7, 2, 6)
    assert message.usage.input_tokens == meta["promptTokenCount"] - 6  # Anthropic: uncached
    assert message.usage.cache_read_input_tokens == 6
    assert message.usage.output_tokens == 9
    _assert_billed(await ledger_row(gw, raw.headers["x-request-id"]), meta)


async def test_anthropic_stream_reaches_gemini(
    gw: LiveGateway, an: anthropic.AsyncAnthropic, mock: MockServer
) -> None:
    await configure_mock(mock, output_tokens=8)
    async with an.messages.stream(
        model=FLASH, max_tokens=64, messages=[{"role": "user", "content": "stream it to me"}]
    ) as stream:
        message = await stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert message.content[0].type == "text" and message.content[0].text == fmt.reply_text(8)
    seen = await mock_last(mock, STREAM)
    meta = _mock_usage(seen["body"], 8, 0, 0)
    assert message.usage.input_tokens == meta["promptTokenCount"]
    assert message.usage.output_tokens == 8
    _assert_billed(await ledger_row(gw, request_id), meta)


async def test_anthropic_tool_round_trip(
    gw: LiveGateway, an: anthropic.AsyncAnthropic, mock: MockServer
) -> None:
    ask: Any = {"role": "user", "content": ASK_WEATHER}
    async with an.messages.stream(
        model=FLASH, max_tokens=100, messages=[ask], tools=WEATHER_ANTHROPIC
    ) as stream:
        first = await stream.get_final_message()
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Paris"}

    turns: Any = [
        ask,
        {"role": "assistant", "content": [use.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C"}],
        },
    ]
    second = await an.messages.create(
        model=FLASH, max_tokens=100, tools=WEATHER_ANTHROPIC, messages=turns
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    seen = await mock_last(mock, GENERATE)
    assert seen["body"]["contents"][1:] == [
        {"role": "model", "parts": [CALL_PARIS]},
        {"role": "user", "parts": [_result("18C")]},
    ]


async def test_a_gemini_error_reaches_the_client_in_its_own_format(
    gw: LiveGateway, an: anthropic.AsyncAnthropic, mock: MockServer
) -> None:
    await configure_mock(mock, fault_status=400, fault_models=[FLASH])
    with pytest.raises(anthropic.BadRequestError) as caught:
        await an.messages.create(
            model=FLASH, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    body: Any = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


async def test_a_stream_gemini_drops_ends_with_an_error_and_is_billed_as_estimated(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    await configure_mock(mock, output_tokens=10, fault_drop_mid_stream_after=3)
    stream = await oa.chat.completions.create(
        model=FLASH, messages=[{"role": "user", "content": "a long story"}], stream=True
    )
    text: list[str] = []
    with pytest.raises(openai.APIError, match="upstream stream broke"):
        async for chunk in stream:
            text.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(text) == fmt.reply_text(3)  # what came before the cut was relayed
    row = await ledger_row(gw, stream.response.headers["x-request-id"])
    assert row.status == "upstream_error" and row.cost_estimated
    assert row.output_tokens == 3  # the content events the client received


# --------------------------------------------------------------------------- fallback


async def test_gemini_failing_falls_back_to_anthropic(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    await configure_mock(mock, fault_status=503, fault_models=["gemini-2.5-flash-lite"])
    raw = await oa.chat.completions.with_raw_response.create(
        model="gemini-first", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.parse().choices[0].message.content
    calls = (await mock_stats(mock))["by_path"]
    assert calls["/v1beta/models/gemini-2.5-flash-lite:generateContent"] == 1  # retries = 0
    assert calls["/v1/messages"] == 1
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert (row.status, row.provider, row.served_model) == (
        "success",
        "anthropic",
        "claude-haiku-4-5",
    )
    assert row.cost_usd > 0

    await configure_mock(mock, fault_status=None, fault_models=[])
    raw = await oa.chat.completions.with_raw_response.create(
        model="gemini-first", messages=[{"role": "user", "content": "hello again"}]
    )
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert (row.provider, row.served_model) == ("gemini", "gemini-2.5-flash-lite")


# --------------------------------------------------------------------------- config


def test_a_gemini_provider_needs_only_its_type(mock: MockServer, tmp_path: Path) -> None:
    extra = '[[providers]]\nname = "google"\ntype = "gemini"\n\n'
    extra += '[[routes]]\nmodel = "flash"\ndeployments = ["google:gemini-2.5-flash"]\n'
    config = tmp_path / "gemini.toml"
    config.write_text(gateway_toml(mock.base_url, "sqlite:///x.db", extra=extra))
    settings = load_settings(config, env={**PROVIDER_ENV, "GEMINI_API_KEY": "AIza-env"})
    (google,) = [p for p in settings.providers if p.name == "google"]
    assert google.base_url == "https://generativelanguage.googleapis.com/v1beta"
    assert (google.price_provider, google.api_key_env) == ("google", "GEMINI_API_KEY")
    assert google.api_key == "AIza-env"
    with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
        load_settings(config, env=PROVIDER_ENV)


# --------------------------------------------------------------------------- the mock itself


async def test_the_mock_checks_the_key_and_speaks_googles_shapes(mock: MockServer) -> None:
    url = f"{mock.base_url}/v1beta/models/{FLASH}"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(url + ":generateContent", json=body) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"]["status"] == "PERMISSION_DENIED"
        key = {"key": GEMINI_KEY}  # the query parameter Google also takes
        async with http.post(url + ":streamGenerateContent", json=body, params=key) as resp:
            chunks = await resp.json()  # without alt=sse: one JSON array
            assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
            assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
        embed = {"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 3}
        async with http.post(url + ":embedContent", json=embed, params=key) as resp:
            found = await resp.json()
            assert len(found["embedding"]["values"]) == 3
            assert found["usageMetadata"] == {"promptTokenCount": 2}
        async with http.post(url + ":generateContent", json={"contents": []}, params=key) as r:
            assert r.status == 400 and (await r.json())["error"]["status"] == "INVALID_ARGUMENT"


async def test_what_gemini_cannot_take_goes_to_the_next_candidate(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    """An image link: Gemini's format takes only inline images, Anthropic's takes links. The
    codec refuses it before the breaker's probe slot or an upstream call, and the walk goes on."""
    image = {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}}
    raw = await oa.chat.completions.with_raw_response.create(
        model="gemini-first",
        messages=[{"role": "user", "content": [{"type": "text", "text": "what is it"}, image]}],
    )
    assert raw.parse().choices[0].message.content
    calls = (await mock_stats(mock))["by_path"]
    assert "/v1beta/models/gemini-2.5-flash-lite:generateContent" not in calls
    assert calls["/v1/messages"] == 1
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert (row.status, row.provider) == ("success", "anthropic")
