"""AWS Bedrock end to end: the official OpenAI and Anthropic SDKs through the gateway to the
mock's Converse API, every call SigV4-signed by the gateway and the signature recomputed and
checked by the mock; billed at genai-prices' ``aws`` price of the model id; a wrong secret
is the mock's 403 and the gateway's 502; a failing Bedrock model falls back to OpenAI; a
corrupt event stream ends as an upstream error; and the config mistakes that stop the
gateway at start (no region, no credentials, no botocore), each naming its line."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from genai_prices import Usage, calc_price
from yarl import URL

from costwarden.config.settings import load_settings
from costwarden.core.errors import ConfigError
from costwarden.mock import MockServer
from costwarden.mock.bedrock import CREDENTIALS, EVENT_STREAM, event
from tests.helpers import (
    HostileUpstream,
    LiveGateway,
    configure_mock,
    ledger_row,
    live_gateway,
    mock_last,
    mock_stats,
)

SONNET = "anthropic.claude-3-5-sonnet-20241022-v2:0"
NOVA = "amazon.nova-lite-v1:0"
CONVERSE = f"/model/{SONNET}/converse"
CONVERSE_STREAM = f"/model/{SONNET}/converse-stream"
WRONG_SECRET = "not-the-mock-secret/0123456789abcdefghijklmno"
BEDROCK = """
[[providers]]
name = "bedrock"
type = "bedrock"
base_url = "{url}"
region = "us-east-1"
api_key_env = "CW_TEST_AWS_ACCESS_KEY"
secret_key_env = "CW_TEST_AWS_SECRET_KEY"
session_token_env = "CW_TEST_AWS_SESSION_TOKEN"

[[providers]]
name = "bedrock-wrong"
type = "bedrock"
base_url = "{url}"
region = "us-east-1"
api_key_env = "CW_TEST_AWS_ACCESS_KEY"
secret_key_env = "CW_TEST_AWS_WRONG_SECRET"
session_token_env = "CW_TEST_AWS_NO_TOKEN"

[[routes]]
model = "sonnet"
deployments = ["bedrock:{sonnet}"]

[[routes]]
model = "nova"
deployments = ["bedrock:{nova}"]

[[routes]]
model = "wrong-secret"
deployments = ["bedrock-wrong:{sonnet}"]
retries = 0

[[routes]]
model = "bedrock-first"
deployments = ["bedrock:{sonnet}"]
fallbacks = ["gpt-4o-mini"]
retries = 0
"""
AWS_ENV = {
    "CW_TEST_AWS_ACCESS_KEY": CREDENTIALS.access_key,
    "CW_TEST_AWS_SECRET_KEY": CREDENTIALS.secret_key,
    "CW_TEST_AWS_SESSION_TOKEN": CREDENTIALS.session_token,
    "CW_TEST_AWS_WRONG_SECRET": WRONG_SECRET,
}
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
REPLY_20 = "".join(f"tok{i} " for i in range(20))  # the mock's answer: 20 tokens by default
# 12 prompt tokens to the mock: room for the 3 cache reads and 5 cache writes it reports.
PROMPT = "Tell me a short story about a lighthouse keeper."


@pytest.fixture
async def gw(mock: MockServer, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    # Cache reads and writes on every answer: each is billed at its own aws rate.
    await configure_mock(mock, cached_tokens=3, cache_write_tokens=5)
    async with live_gateway(
        mock,
        f"sqlite:///{tmp_path / 'bedrock.db'}",
        tmp_path,
        extra_toml=BEDROCK.format(url=mock.base_url, sonnet=SONNET, nova=NOVA),
        env=AWS_ENV,
    ) as gateway:
        yield gateway










def _aws_price(model: str, prompt: int, output: int, read: int = 3, written: int = 5) -> Decimal:
    """genai-prices' own figure for the call: ``prompt`` counts every prompt token."""
    usage = Usage(
        input_tokens=prompt,
        cache_read_tokens=read,
        cache_write_tokens=written,
        output_tokens=output,
    )
    price: Decimal = calc_price(usage, model, provider_id="aws").total_price
    return price


async def test_openai_sdk_is_signed_converted_and_billed_at_aws_prices(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    raw = await oa.chat.completions.with_raw_response.create(
        model="sonnet",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": PROMPT},
        ],
        max_tokens=50,
        temperature=0.5,
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == REPLY_20
    assert reply.choices[0].finish_reason == "stop"
    seen = await mock_last(mock, CONVERSE)
    assert seen["signature"] == "verified"
    assert seen["body"] == {
        "messages": [{"role": "user", "content": [{"text": PROMPT}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.5},
    }
    headers = seen["headers"]
    assert headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={CREDENTIALS.access_key}/"
    )
    assert headers["x-amz-security-token"] == CREDENTIALS.session_token
    assert gw.key not in json.dumps(headers)  # the client's key never goes upstream
    assert CREDENTIALS.secret_key not in json.dumps(headers)
    usage = reply.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 3
    assert usage.prompt_tokens_details.cache_write_tokens == 5
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert (row.provider, row.served_model) == ("bedrock", SONNET)
    assert row.cost_usd == _aws_price(SONNET, usage.prompt_tokens, usage.completion_tokens) > 0
    # The cache-written tokens are priced above plain input: the bill counted them as such.
    plain = _aws_price(SONNET, usage.prompt_tokens, usage.completion_tokens, written=0)
    assert row.cost_usd > plain


async def test_a_stream_is_relayed_and_billed_exactly(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    stream = await oa.chat.completions.create(
        model="sonnet",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish, request_id = [], None, None, None
    async for chunk in stream:
        request_id = request_id or stream.response.headers["x-request-id"]
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    assert "".join(text) == REPLY_20 and finish == "stop"
    assert usage is not None and request_id is not None
    assert (await mock_last(mock, CONVERSE_STREAM))["signature"] == "verified"
    row = await ledger_row(gw, request_id)
    assert not row.cost_estimated
    assert row.cost_usd == _aws_price(SONNET, usage.prompt_tokens, usage.completion_tokens)


async def test_a_stream_without_usage_asked_is_billed_the_same(
    gw: LiveGateway, oa: openai.AsyncOpenAI
) -> None:
    messages: Any = [{"role": "user", "content": PROMPT}]
    unary = await oa.chat.completions.create(model="nova", messages=messages)
    assert unary.usage is not None
    stream = await oa.chat.completions.create(model="nova", messages=messages, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)  # the usage chunk was not forwarded
    row = await ledger_row(gw, stream.response.headers["x-request-id"])
    expected = _aws_price(NOVA, unary.usage.prompt_tokens, unary.usage.completion_tokens)
    assert row.cost_usd == expected > 0


async def test_anthropic_sdk_unary_and_streamed(
    gw: LiveGateway, an: anthropic.AsyncAnthropic, mock: MockServer
) -> None:
    raw = await an.messages.with_raw_response.create(
        model="sonnet", max_tokens=100, messages=[{"role": "user", "content": PROMPT}]
    )
    message = await raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == REPLY_20
    assert message.stop_reason == "end_turn"
    seen = await mock_last(mock, CONVERSE)
    assert seen["signature"] == "verified"
    assert seen["body"]["inferenceConfig"] == {"maxTokens": 100}
    row = await ledger_row(gw, raw.headers["x-request-id"])
    # The Anthropic client sees cache reads; the writes are in its input_tokens (OpenAI's
    # usage, which the answer passes through, has no field for them): the bill has them.
    assert message.usage.cache_read_input_tokens == 3
    prompt = message.usage.input_tokens + 3
    assert row.cost_usd == _aws_price(SONNET, prompt, message.usage.output_tokens)

    async with an.messages.stream(
        model="sonnet", max_tokens=100, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        streamed = "".join([text async for text in stream.text_stream])
        final = await stream.get_final_message()
    assert streamed == REPLY_20 and final.stop_reason == "end_turn"
    assert (await mock_last(mock, CONVERSE_STREAM))["signature"] == "verified"


async def test_a_tool_call_round_trip(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    ask: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = await oa.chat.completions.create(model="sonnet", messages=ask, tools=[WEATHER_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    sent = (await mock_last(mock, CONVERSE))["body"]["toolConfig"]
    assert sent == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "The weather in a city",
                    "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]},
                }
            }
        ]
    }
    history: Any = [
        *ask,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
    ]
    answer = await oa.chat.completions.create(
        model="sonnet", messages=history, tools=[WEATHER_TOOL]
    )
    assert answer.choices[0].message.content == REPLY_20
    turns = (await mock_last(mock, CONVERSE))["body"]["messages"]
    use = {"toolUseId": call.id, "name": "get_weather", "input": {"city": "Paris"}}
    assert turns[1] == {"role": "assistant", "content": [{"toolUse": use}]}
    assert turns[2] == {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": call.id, "content": [{"text": "Sunny, 21 C"}]}}],
    }


async def test_a_streamed_tool_call(oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic) -> None:
    stream = await oa.chat.completions.create(
        model="sonnet",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    name, arguments, finish = "", "", None
    async for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or []:
            assert call.index == 0 and call.function is not None
            name += call.function.name or ""
            arguments += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Paris"}, "tool_calls")

    async with an.messages.stream(
        model="sonnet",
        max_tokens=100,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
    ) as astream:
        final = await astream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use"
    assert (block.name, block.input) == ("get_weather", {"city": "Paris"})


async def test_the_mock_checked_every_signature(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    for _ in range(3):
        await oa.chat.completions.create(model="sonnet", messages=messages)
    stream = await oa.chat.completions.create(model="sonnet", messages=messages, stream=True)
    _ = [chunk async for chunk in stream]
    by_path = (await mock_stats(mock))["by_path"]
    # Every call reached the mock, which answers 403 to any signature it cannot reproduce.
    assert (by_path[CONVERSE], by_path[CONVERSE_STREAM]) == (3, 1)


async def test_a_wrong_secret_is_the_mocks_403_and_a_clear_502(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await oa.chat.completions.create(
            model="wrong-secret", messages=[{"role": "user", "content": "hello"}]
        )
    assert info.value.status_code == 502
    assert "rejected the gateway's credentials (status 403)" in info.value.message
    text = info.value.response.text
    assert WRONG_SECRET not in text and CREDENTIALS.access_key not in text
    assert (await mock_last(mock, CONVERSE))["signature"] == "InvalidSignatureException"


async def test_a_failing_bedrock_model_falls_back_to_openai(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    await configure_mock(mock, fault_status=503, fault_models=[SONNET])
    raw = await oa.chat.completions.with_raw_response.create(
        model="bedrock-first", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.parse().choices[0].message.content
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert (row.provider, row.served_model) == ("openai", "gpt-4o-mini")
    assert (await mock_stats(mock))["by_path"][CONVERSE] == 1  # Bedrock was tried first


async def test_an_untranslatable_request_is_a_clear_400(oa: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await oa.chat.completions.create(
            model="sonnet",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
                    ],
                }
            ],
        )
    assert "base64 data URLs only" in info.value.message


async def test_a_corrupt_event_stream_ends_as_an_upstream_error(
    hostile: HostileUpstream, tmp_path: Path
) -> None:
    good = event("messageStart", {"role": "assistant"}) + event(
        "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hello"}}
    )
    bad = bytearray(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}}))
    bad[-1] ^= 0xFF  # the message CRC no longer matches

    async def answer(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": EVENT_STREAM})
        await resp.prepare(request)
        await resp.write(good + bytes(bad))
        await resp.write_eof()
        return resp

    hostile.handler = answer
    async with live_gateway(
        hostile,
        f"sqlite:///{tmp_path / 'corrupt.db'}",
        tmp_path,
        extra_toml=BEDROCK.format(url=hostile.base_url, sonnet=SONNET, nova=NOVA),
        env=AWS_ENV,
    ) as gateway:
        async with openai.AsyncOpenAI(
            base_url=gateway.openai_url, api_key=gateway.key, max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="sonnet", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text: list[str] = []
            with pytest.raises(openai.APIError) as info:
                async for chunk in stream:
                    text.append(chunk.choices[0].delta.content or "")
            request_id = stream.response.headers["x-request-id"]
        assert "".join(text) == "Hello"  # what came before the corrupt frame, and no more
        assert "stream broke (EventStreamError)" in info.value.message
        row = await ledger_row(gateway, request_id)
        assert row.status == "upstream_error"


# --------------------------------------------------------------------------- startup errors

BASE = """[storage]
database_url = "sqlite:///x.db"

[[providers]]
name = "aws"
type = "bedrock"
{settings}
[[routes]]
model = "nova"
deployments = ["aws:amazon.nova-lite-v1:0"]
"""
ENV = {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret-test"}


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _error(text: str, env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(text=text, env=env)
    return str(info.value)


def test_a_bedrock_provider_is_filled_in_from_its_region_and_aws_variables() -> None:
    env = {**ENV, "AWS_SESSION_TOKEN": "token-test"}
    provider = load_settings(text=BASE.format(settings='region = "eu-west-3"\n'), env=env)
    p = provider.providers[0]
    assert p.base_url == "https://bedrock-runtime.eu-west-3.amazonaws.com"
    assert (p.api_key, p.secret_key, p.session_token) == ("AKIDTEST", "secret-test", "token-test")
    assert p.price_provider == "aws"
    assert "secret-test" not in repr(p) and "token-test" not in repr(p)


def test_a_bedrock_provider_needs_a_region() -> None:
    text = BASE.format(settings="")
    message = _error(text, ENV)
    line = _line(text, 'type = "bedrock"')
    assert message.startswith(f"<string>:{line}: providers[0].region: required"), message


@pytest.mark.parametrize(
    ("missing", "key"),
    [("AWS_ACCESS_KEY_ID", "api_key_env"), ("AWS_SECRET_ACCESS_KEY", "secret_key_env")],
)
def test_a_bedrock_provider_needs_credentials(missing: str, key: str) -> None:
    text = BASE.format(settings='region = "us-east-1"\n')
    env = {k: v for k, v in ENV.items() if k != missing}
    message = _error(text, env)
    line = _line(text, 'type = "bedrock"')  # the defaults' provider: its type line
    assert message.startswith(f"<string>:{line}: providers[0].{key}: environment variable "), (
        message
    )
    assert missing in message


def test_a_named_credential_variable_is_blamed_on_its_line() -> None:
    text = BASE.format(settings='region = "us-east-1"\nsecret_key_env = "MY_AWS_SECRET"\n')
    message = _error(text, ENV)
    line = _line(text, "secret_key_env =")
    assert message.startswith(f"<string>:{line}: providers[0].secret_key_env:"), message
    assert "MY_AWS_SECRET is not set" in message


def test_bedrock_settings_on_another_provider_are_refused() -> None:
    text = BASE.format(settings='region = "us-east-1"\n').replace(
        'type = "bedrock"', 'type = "openai"\nbase_url = "https://api.openai.com/v1"'
    )
    assert "providers[0].region: only a bedrock provider takes it" in _error(text, ENV)


def test_a_bedrock_provider_without_botocore_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "botocore", None)  # what an import finds when absent
    monkeypatch.setitem(sys.modules, "botocore.auth", None)
    text = BASE.format(settings='region = "us-east-1"\n')
    message = _error(text, ENV)
    line = _line(text, 'type = "bedrock"')
    assert message.startswith(f"<string>:{line}: providers[0].type:"), message
    assert "pip install 'costwarden[bedrock]'" in message


async def test_the_mock_refuses_a_signature_that_does_not_cover_what_it_got(
    mock: MockServer,
) -> None:
    from costwarden.providers.base import ProviderSpec
    from costwarden.providers.bedrock import BedrockAdapter

    adapter = BedrockAdapter(
        ProviderSpec(
            name="aws",
            type="bedrock",
            base_url=mock.base_url,
            connect_timeout=5,
            timeout=5,
            api_key=CREDENTIALS.access_key,
            secret_key=CREDENTIALS.secret_key,
            region=CREDENTIALS.region,
        )
    )
    signed_url = adapter.url("chat.completions", NOVA, False)
    url = URL(signed_url, encoded=True)  # as signed: "%3A" kept, not requoted
    body = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
    signed = adapter.headers({}, signed_url, body)
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers=signed) as resp:
            assert resp.status == 200, await resp.text()
        tampered = body.replace(b"hi", b"ho")
        async with http.post(url, data=tampered, headers=signed) as resp:
            assert resp.status == 403
            assert resp.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
            assert (await resp.json())["message"].startswith(
                "The request signature we calculated does not match"
            )
        async with http.post(url, data=body) as resp:
            assert resp.status == 403
            assert (await resp.json()) == {"message": "Missing Authentication Token"}
