"""Tests for the mock LLM upstream, driven through the official OpenAI and Anthropic SDKs."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from costwarden.mock import MockServer, MockState, serve_mock

USER_HI: Any = [{"role": "user", "content": "hello there"}]
OPENAI_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
ANTHROPIC_TOOLS: list[Any] = [
    {
        "name": "lookup_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def reply(n: int) -> str:
    return "".join(f"tok{i} " for i in range(n))


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with serve_mock() as server:
        yield server


@pytest.fixture
async def oai(mock: MockServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=mock.base_url + "/v1", api_key="sk-test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def ant(mock: MockServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=mock.base_url, api_key="ant-test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def raw_post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    async with http.post(url, data=orjson.dumps(body), headers=headers or {}) as resp:
        return resp.status, await resp.read()


def sse_data(raw: bytes) -> list[bytes]:
    return [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]


# --------------------------------------------------------------------------- OpenAI chat


async def test_chat_non_stream(mock: MockServer, oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=USER_HI)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "gpt-4o-mini"
    assert r.created > 0
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == reply(20)
    assert choice.finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.prompt_tokens == math.ceil(len("hello there") / 4)
    assert r.usage.completion_tokens == 20
    assert r.usage.total_tokens == r.usage.prompt_tokens + 20
    assert r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.usage.completion_tokens_details is not None
    assert r.usage.completion_tokens_details.reasoning_tokens == 0


async def test_chat_stream_without_usage(mock: MockServer, oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=USER_HI,
        stream=True,
    )
    chunks = [c async for c in stream]
    assert all(c.object == "chat.completion.chunk" and c.usage is None for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    contents = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert contents == [f"tok{i} " for i in range(20)]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].delta.content is None
    assert len({c.id for c in chunks}) == 1 and chunks[0].model == "gpt-4o"


async def test_chat_stream_with_usage(mock: MockServer, oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=USER_HI,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert len(chunks) == 1 + 20 + 1 + 1
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens == 20
    assert last.usage.prompt_tokens == 3
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])


async def test_chat_stream_raw_wire_format(mock: MockServer, http: aiohttp.ClientSession) -> None:
    url = mock.base_url + "/v1/chat/completions"
    body = {"model": "m", "messages": USER_HI, "stream": True, "max_tokens": 2}
    async with http.post(url, json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = await resp.read()
    data = sse_data(raw)
    assert data[-1] == b"[DONE]" and raw.endswith(b"data: [DONE]\n\n")
    events = [orjson.loads(d) for d in data[:-1]]
    assert all("usage" not in e for e in events)  # not asked for: no usage key at all

    body["stream_options"] = {"include_usage": True}
    async with http.post(url, json=body) as resp:
        raw = await resp.read()
    events = [orjson.loads(d) for d in sse_data(raw)[:-1]]
    assert all("usage" in e and e["usage"] is None for e in events[:-1])
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 2
    assert events[-2]["choices"][0]["finish_reason"] == "length"


async def test_chat_max_tokens_capping(mock: MockServer, oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="m", messages=USER_HI, max_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == reply(5)
    assert r.usage is not None and r.usage.completion_tokens == 5
    r = await oai.chat.completions.create(
        model="m",
        messages=USER_HI,
        max_completion_tokens=3,
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 3
    r = await oai.chat.completions.create(model="m", messages=USER_HI, max_tokens=20)
    assert r.choices[0].finish_reason == "stop"


async def test_chat_n_choices_are_each_generated_and_billed(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="m", messages=USER_HI, n=3, max_tokens=5)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content == reply(5) for c in r.choices)
    assert r.usage is not None and r.usage.completion_tokens == 15
    stream = await oai.chat.completions.create(
        model="m",
        messages=USER_HI,
        n=3,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts = ["", "", ""]
    usage = None
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
        usage = chunk.usage or usage
    assert texts == [reply(5)] * 3 and usage is not None and usage.completion_tokens == 15


async def test_chat_tool_call(mock: MockServer, oai: openai.AsyncOpenAI) -> None:
    msgs: Any = [{"role": "user", "content": "What's the weather in Paris?"}]
    r = await oai.chat.completions.create(model="m", messages=msgs, tools=OPENAI_TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call: Any = calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}

    stream = await oai.chat.completions.create(
        model="m",
        messages=msgs,
        tools=OPENAI_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    first = deltas[0].tool_calls
    assert first is not None and first[0].id is not None and first[0].function is not None
    assert first[0].function.name == "get_weather"
    args = "".join(
        tc.function.arguments or ""
        for d in deltas
        for tc in (d.tool_calls or [])
        if tc.function is not None
    )
    assert orjson.loads(args) == {"city": "Paris"}
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    # no weather -> plain text even with tools
    r = await oai.chat.completions.create(model="m", messages=USER_HI, tools=OPENAI_TOOLS)
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.tool_calls is None


# --------------------------------------------------------------------------- embeddings, models


async def test_embeddings(mock: MockServer, oai: openai.AsyncOpenAI) -> None:
    r = await oai.embeddings.create(model="text-embedding-3-small", input=["hello", "world!!"])
    assert r.object == "list" and r.model == "text-embedding-3-small"
    assert [d.index for d in r.data] == [0, 1]
    assert all(len(d.embedding) == 8 and d.object == "embedding" for d in r.data)
    assert r.usage.prompt_tokens == 2 + 2 and r.usage.total_tokens == 4
    again = await oai.embeddings.create(
        model="text-embedding-3-small", input="hello", encoding_format="float"
    )
    assert again.data[0].embedding == pytest.approx(r.data[0].embedding, abs=1e-6)
    assert r.data[0].embedding != r.data[1].embedding
    tokens = await oai.embeddings.create(model="e", input=[1, 2, 3, 4, 5])
    assert tokens.usage.prompt_tokens == 5 and len(tokens.data) == 1


async def test_models_list(mock: MockServer, oai: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in oai.models.list()]
    assert "gpt-4o-mini" in ids and len(ids) >= 3


# --------------------------------------------------------------------------- Anthropic


async def test_messages_non_stream(mock: MockServer, ant: anthropic.AsyncAnthropic) -> None:
    m = await ant.messages.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        system=[{"type": "text", "text": "be brief"}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    )
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant"
    assert m.model == "claude-haiku-4-5"
    block = m.content[0]
    assert block.type == "text" and block.text == reply(20)
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert m.usage.input_tokens == math.ceil(len("be briefhello there") / 4)
    assert m.usage.output_tokens == 20
    assert m.usage.cache_read_input_tokens == 0 and m.usage.cache_creation_input_tokens == 0


async def test_messages_stream(mock: MockServer, ant: anthropic.AsyncAnthropic) -> None:
    async with ant.messages.stream(
        model="claude",
        max_tokens=100,
        system="sys",
        messages=USER_HI,
    ) as stream:
        texts = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert texts == [f"tok{i} " for i in range(20)]
    assert final.usage.output_tokens == 20
    assert final.usage.input_tokens == math.ceil(len("syshello there") / 4)
    assert final.stop_reason == "end_turn"
    assert final.content[0].type == "text" and final.content[0].text == reply(20)


async def test_messages_stream_raw_events(mock: MockServer, http: aiohttp.ClientSession) -> None:
    body = {"model": "c", "max_tokens": 2, "messages": USER_HI, "stream": True}
    async with http.post(mock.base_url + "/v1/messages", json=body) as resp:
        raw = (await resp.read()).decode()
    frames = [f for f in raw.split("\n\n") if f]
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [orjson.loads(f.split("\n")[1].removeprefix("data: ")) for f in frames]
    assert [p["type"] for p in payloads] == names
    assert payloads[0]["message"]["usage"]["output_tokens"] == 1
    assert payloads[3]["delta"] == {"type": "text_delta", "text": "tok0 "}
    assert payloads[6]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert payloads[6]["usage"] == {"output_tokens": 2}


async def test_messages_max_tokens(mock: MockServer, ant: anthropic.AsyncAnthropic) -> None:
    m = await ant.messages.create(model="c", max_tokens=3, messages=USER_HI)
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 3
    assert m.content[0].type == "text" and m.content[0].text == reply(3)


async def test_messages_tool_use(mock: MockServer, ant: anthropic.AsyncAnthropic) -> None:
    msgs: Any = [{"role": "user", "content": "weather in Paris?"}]
    m = await ant.messages.create(model="c", max_tokens=100, tools=ANTHROPIC_TOOLS, messages=msgs)
    assert m.stop_reason == "tool_use"
    block = m.content[0]
    assert block.type == "tool_use" and block.name == "lookup_weather"
    assert block.input == {"city": "Paris"} and block.id.startswith("toolu_")

    async with ant.messages.stream(
        model="c", max_tokens=100, tools=ANTHROPIC_TOOLS, messages=msgs
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    tb = final.content[0]
    assert tb.type == "tool_use" and tb.input == {"city": "Paris"}
    assert final.usage.output_tokens > 0

    # after the tool result the model answers in text
    follow: Any = msgs + [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": block.id, "name": block.name, "input": {"city": "Paris"}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}],
        },
    ]
    m = await ant.messages.create(model="c", max_tokens=100, tools=ANTHROPIC_TOOLS, messages=follow)
    assert m.stop_reason == "end_turn" and m.content[0].type == "text"


async def test_count_tokens(mock: MockServer, ant: anthropic.AsyncAnthropic) -> None:
    r = await ant.messages.count_tokens(model="c", messages=USER_HI)
    assert r.input_tokens == 3


# --------------------------------------------------------------------------- usage knobs


async def test_vary_output_is_deterministic(mock: MockServer, oai: openai.AsyncOpenAI) -> None:
    mock.state.update(vary_output=True, output_tokens=10)

    async def out(text: str) -> int:
        msgs: Any = [{"role": "user", "content": text}]
        r = await oai.chat.completions.create(model="m", messages=msgs)
        assert r.usage is not None
        assert r.choices[0].message.content == reply(r.usage.completion_tokens)
        return r.usage.completion_tokens

    first = [await out(f"prompt {i}") for i in range(12)]
    second = [await out(f"prompt {i}") for i in range(12)]
    assert first == second
    assert all(1 <= n <= 20 for n in first)
    assert len(set(first)) > 1


async def test_cache_and_reasoning_tokens(
    mock: MockServer, oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic
) -> None:
    long_msgs: Any = [{"role": "user", "content": "x" * 400}]  # 100 prompt tokens
    mock.state.update(cached_tokens=30, reasoning_tokens=4, cache_write_tokens=50)
    r = await oai.chat.completions.create(model="m", messages=long_msgs)
    assert r.usage is not None and r.usage.prompt_tokens == 100
    assert r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 30
    assert r.usage.completion_tokens == 20
    assert r.usage.completion_tokens_details is not None
    assert r.usage.completion_tokens_details.reasoning_tokens == 4
    assert r.choices[0].message.content == reply(16)

    m = await ant.messages.create(model="c", max_tokens=100, messages=long_msgs)
    u = m.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (
        20,
        30,
        50,
    )

    mock.state.update(cached_tokens=10_000, cache_write_tokens=10_000, reasoning_tokens=10_000)
    r = await oai.chat.completions.create(model="m", messages=long_msgs, max_tokens=5)
    assert r.usage is not None and r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 100
    assert r.usage.completion_tokens_details is not None
    assert r.usage.completion_tokens_details.reasoning_tokens == 5
    m = await ant.messages.create(model="c", max_tokens=100, messages=long_msgs)
    u = m.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (0, 100, 0)


async def test_input_tokens_never_exceed_request_bytes(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    bodies: list[Any] = [
        {"model": "m", "messages": [{"role": "user", "content": ""}]},
        {"model": "m", "messages": [{"role": "user", "content": "é" * 300 + "日本語" * 50}]},
        {"model": "m", "messages": USER_HI, "tools": OPENAI_TOOLS},
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "a" * 1000},
                        {"type": "image_url", "image_url": {"url": "x"}},
                    ],
                }
            ],
        },
    ]
    for body in bodies:
        data = orjson.dumps(body)
        status, raw = await raw_post(http, mock.base_url + "/v1/chat/completions", body)
        assert status == 200
        usage = orjson.loads(raw)["usage"]
        assert 1 <= usage["prompt_tokens"] <= len(data)
        body["max_tokens"] = 10
        status, raw = await raw_post(http, mock.base_url + "/v1/messages", body)
        u = orjson.loads(raw)["usage"]
        total = u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
        assert 1 <= total <= len(orjson.dumps(body))
    assert orjson.loads(raw)["usage"]["input_tokens"] == 250  # 1000 bytes of text / 4


# --------------------------------------------------------------------------- faults


async def test_fault_status(
    mock: MockServer,
    oai: openai.AsyncOpenAI,
    ant: anthropic.AsyncAnthropic,
    http: aiohttp.ClientSession,
) -> None:
    mock.state.update(fault_status=500)
    with pytest.raises(openai.InternalServerError) as oexc:
        await oai.chat.completions.create(model="m", messages=USER_HI)
    assert isinstance(oexc.value.body, dict) and "message" in oexc.value.body
    with pytest.raises(anthropic.InternalServerError) as aexc:
        await ant.messages.create(model="c", max_tokens=5, messages=USER_HI)
    assert aexc.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "mock api_error"},
    }
    # the control API is never faulted
    async with http.get(mock.base_url + "/_mock/stats") as resp:
        assert resp.status == 200

    mock.state.update(fault_status=429)
    with pytest.raises(openai.RateLimitError):
        await oai.chat.completions.create(model="m", messages=USER_HI)
    with pytest.raises(anthropic.RateLimitError):
        await ant.messages.create(model="c", max_tokens=5, messages=USER_HI)


async def test_fault_rate_alternates(mock: MockServer, oai: openai.AsyncOpenAI) -> None:
    mock.state.update(fault_status=503, fault_rate=0.5)
    outcomes = []
    for _ in range(6):
        try:
            await oai.chat.completions.create(model="m", messages=USER_HI)
            outcomes.append(True)
        except openai.InternalServerError:
            outcomes.append(False)
    assert outcomes == [False, True] * 3
    mock.state.update(fault_rate=0.0)
    await oai.chat.completions.create(model="m", messages=USER_HI)


async def test_per_request_override_headers(mock: MockServer, oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        await oai.chat.completions.create(
            model="m",
            messages=USER_HI,
            extra_headers={"x-mock-fault-status": "429"},
        )
    r = await oai.chat.completions.create(
        model="m",
        messages=USER_HI,
        extra_headers={"x-mock-output-tokens": "7"},
    )
    assert r.usage is not None and r.usage.completion_tokens == 7
    t0 = time.perf_counter()
    await oai.chat.completions.create(
        model="m",
        messages=USER_HI,
        extra_headers={"x-mock-latency-ms": "150"},
    )
    assert time.perf_counter() - t0 >= 0.14


async def test_fault_timeout(mock: MockServer, ant: anthropic.AsyncAnthropic) -> None:
    mock.state.update(fault_timeout=True)
    async with openai.AsyncOpenAI(
        base_url=mock.base_url + "/v1", api_key="x", max_retries=0, timeout=0.3
    ) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="m", messages=USER_HI)
    with pytest.raises(anthropic.APITimeoutError):
        await ant.messages.create(
            model="c",
            max_tokens=5,
            messages=USER_HI,
            timeout=0.3,
        )
    # the handlers are cancelled once the clients give up
    for _ in range(100):
        if mock.state.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert mock.state.in_flight == 0


async def test_fault_drop(
    mock: MockServer,
    oai: openai.AsyncOpenAI,
    ant: anthropic.AsyncAnthropic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aiohttp")
    mock.state.update(fault_drop=True)
    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(model="m", messages=USER_HI)
    with pytest.raises(anthropic.APIConnectionError):
        await ant.messages.create(model="c", max_tokens=5, messages=USER_HI)
    mock.state.update(fault_drop=False)
    r = await oai.chat.completions.create(model="m", messages=USER_HI)
    assert r.choices[0].message.content
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]


async def test_drop_mid_stream(
    mock: MockServer,
    oai: openai.AsyncOpenAI,
    ant: anthropic.AsyncAnthropic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aiohttp")
    mock.state.update(fault_drop_mid_stream_after=3)
    got: list[str] = []
    with pytest.raises(Exception) as exc:  # noqa: B017 - SDKs surface the transport error
        stream = await oai.chat.completions.create(
            model="m",
            messages=USER_HI,
            stream=True,
        )
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "RemoteProtocolError" in type(exc.value).__name__ or isinstance(
        exc.value, openai.APIConnectionError
    )
    assert "".join(got) == reply(3)

    texts: list[str] = []
    with pytest.raises(Exception) as exc:  # noqa: B017
        async with ant.messages.stream(model="c", max_tokens=50, messages=USER_HI) as s:
            async for text in s.text_stream:
                texts.append(text)
    assert "RemoteProtocolError" in type(exc.value).__name__ or isinstance(
        exc.value, anthropic.APIConnectionError
    )
    assert texts == ["tok0 ", "tok1 ", "tok2 "]
    # non-stream requests are unaffected
    r = await oai.chat.completions.create(model="m", messages=USER_HI)
    assert r.choices[0].finish_reason == "stop"
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]


async def test_stream_pacing(mock: MockServer, oai: openai.AsyncOpenAI) -> None:
    mock.state.update(latency_ms=50, ttft_ms=50, tokens_per_second=100, output_tokens=6)
    t0 = time.perf_counter()
    stream = await oai.chat.completions.create(
        model="m",
        messages=USER_HI,
        stream=True,
    )
    first_token_at = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first_token_at is None:
            first_token_at = time.perf_counter() - t0
    total = time.perf_counter() - t0
    assert first_token_at is not None and first_token_at >= 0.095
    assert total >= 0.095 + 5 * 0.01 - 0.005


# --------------------------------------------------------------------------- control API


async def test_bad_requests_in_provider_shape(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    status, raw = await raw_post(http, mock.base_url + "/v1/chat/completions", {"model": "m"})
    assert status == 400 and orjson.loads(raw)["error"]["type"] == "invalid_request_error"
    status, raw = await raw_post(http, mock.base_url + "/v1/chat/completions", {"messages": []})
    assert status == 400 and "error" in orjson.loads(raw)
    status, raw = await raw_post(http, mock.base_url + "/v1/messages", {"messages": USER_HI})
    err = orjson.loads(raw)
    assert status == 400 and err["type"] == "error"
    assert err["error"]["type"] == "invalid_request_error"
    async with http.post(mock.base_url + "/v1/messages", data=b"{not json") as resp:
        assert resp.status == 400 and (await resp.json())["type"] == "error"


async def test_stats_config_reset(
    mock: MockServer, oai: openai.AsyncOpenAI, http: aiohttp.ClientSession
) -> None:
    base = mock.base_url
    async with http.post(base + "/_mock/config", json={"latency_ms": 1, "output_tokens": 4}) as r:
        assert r.status == 200
        config = await r.json()
    assert config["output_tokens"] == 4 and config["latency_ms"] == 1.0
    assert config["fault_status"] is None and config["fault_rate"] == 1.0
    async with http.post(base + "/_mock/config", json={"nope": 1}) as r:
        assert r.status == 400
    async with http.post(base + "/_mock/config", json={"vary_output": "yes"}) as r:
        assert r.status == 400
    async with http.get(base + "/_mock/config") as r:
        assert (await r.json())["output_tokens"] == 4

    await oai.chat.completions.create(model="m", messages=USER_HI)
    await oai.chat.completions.create(model="m", messages=USER_HI)
    await oai.embeddings.create(model="e", input="x")
    async with http.get(base + "/_mock/stats") as r:
        stats = await r.json()
    assert stats == {
        "requests": 3,
        "by_path": {"/v1/chat/completions": 2, "/v1/embeddings": 1},
        "in_flight": 0,
        "faults": 0,
    }
    async with http.post(base + "/_mock/reset") as r:
        assert (await r.json())["output_tokens"] == 20
    assert mock.state.stats()["requests"] == 0 and mock.state.latency_ms == 0.0


async def test_last_request_recording(
    mock: MockServer,
    oai: openai.AsyncOpenAI,
    ant: anthropic.AsyncAnthropic,
    http: aiohttp.ClientSession,
) -> None:
    async with http.get(mock.base_url + "/_mock/last", params={"path": "/v1/messages"}) as r:
        assert r.status == 404
    await oai.chat.completions.create(
        model="m",
        messages=USER_HI,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"custom_field": {"a": 1}},
    )
    await ant.messages.create(model="c", max_tokens=5, messages=USER_HI)
    params = {"path": "/v1/chat/completions"}
    async with http.get(mock.base_url + "/_mock/last", params=params) as r:
        last = await r.json()
    assert last["body"]["custom_field"] == {"a": 1}
    assert last["body"]["stream_options"] == {"include_usage": True}
    assert last["headers"]["authorization"] == "Bearer sk-test"
    alast = mock.state.last_request("/v1/messages")
    assert alast is not None
    # older anthropic SDKs send x-api-key, newer ones a bearer Authorization header
    h = alast["headers"]
    assert h.get("x-api-key") == "ant-test" or h.get("authorization") == "Bearer ant-test"
    assert alast["body"]["max_tokens"] == 5


async def test_shared_state_and_port_zero() -> None:
    state = MockState(output_tokens=2)
    async with serve_mock(port=0, state=state) as a, serve_mock(state=state) as b:
        assert a.port != b.port and a.port > 0 and a.base_url.endswith(f":{a.port}")
        async with openai.AsyncOpenAI(base_url=b.base_url + "/v1", api_key="x") as client:
            r = await client.chat.completions.create(model="m", messages=USER_HI)
        assert r.choices[0].message.content == reply(2)
        assert a.state is state and state.requests == 1
