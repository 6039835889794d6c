"""Azure OpenAI end to end: the official OpenAI SDK through the gateway to the mock's Azure
paths (a deployment in the URL, the api-version in the query, the key in ``api-key``), billed
at genai-prices' ``azure`` price of the model the deployment runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import anthropic
import openai
import pytest
from genai_prices import Usage, calc_price

from costwarden.mock import MockServer
from tests.helpers import LiveGateway, configure_mock, ledger_row, live_gateway, mock_last

AZURE_KEY = "az-test-key-1f3b9c"
AZURE = """
[[providers]]
name = "azure"
type = "azure"
base_url = "{mock}"
api_version = "2024-10-21"
api_key_env = "CW_TEST_AZURE_KEY"

[[deployments]]
id = "azure:prod-mini"
price_model = "gpt-4o-mini"

[[deployments]]
id = "azure:embedder"
price_model = "text-embedding-3-small"

[[routes]]
model = "company-mini"
deployments = ["azure:prod-mini"]

[[routes]]
model = "company-embed"
deployments = ["azure:embedder"]

[[routes]]
model = "azure-first"
deployments = ["azure:prod-mini"]
fallbacks = ["claude-haiku-4-5"]
retries = 0
"""


@pytest.fixture
async def gw(mock: MockServer, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with live_gateway(
        mock,
        f"sqlite:///{tmp_path / 'azure.db'}",
        tmp_path,
        extra_toml=AZURE.format(mock=mock.base_url),
        env={"CW_TEST_AZURE_KEY": AZURE_KEY},
    ) as gateway:
        yield gateway








def _genai(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    price: Decimal = calc_price(usage, model, provider_id="azure").total_price
    return price


async def test_chat_goes_to_the_deployment_with_the_key_and_is_billed_at_azure_prices(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    raw = await oa.chat.completions.with_raw_response.create(
        model="company-mini", messages=[{"role": "user", "content": "hello"}], max_tokens=20
    )
    reply = raw.parse()
    assert reply.choices[0].message.content
    seen = await mock_last(mock, "/openai/deployments/prod-mini/chat/completions")
    assert seen["headers"]["api-key"] == AZURE_KEY  # the mock refuses a call without api-version
    assert "authorization" not in seen["headers"]  # neither the client's key nor ours
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert reply.usage is not None
    assert (row.provider, row.served_model) == ("azure", "prod-mini")
    expected = _genai("gpt-4o-mini", reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert row.cost_usd == expected > 0


async def test_a_stream_is_billed_exactly(gw: LiveGateway, oa: openai.AsyncOpenAI) -> None:
    stream = await oa.chat.completions.create(
        model="company-mini",
        messages=[{"role": "user", "content": "tell me a story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, request_id = [], None, None
    async for chunk in stream:
        request_id = request_id or stream.response.headers["x-request-id"]
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert text and usage is not None and request_id is not None
    row = await ledger_row(gw, request_id)
    assert row.cost_usd == _genai("gpt-4o-mini", usage.prompt_tokens, usage.completion_tokens)


async def test_embeddings(gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer) -> None:
    raw = await oa.embeddings.with_raw_response.create(
        model="company-embed", input=["one", "two"]
    )
    result = raw.parse()
    assert len(result.data) == 2
    await mock_last(mock, "/openai/deployments/embedder/embeddings")
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert row.cost_usd == _genai("text-embedding-3-small", result.usage.prompt_tokens, 0)


async def test_azure_failing_falls_back_to_anthropic(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    await configure_mock(mock, fault_status=503, fault_models=["prod-mini"])
    raw = await oa.chat.completions.with_raw_response.create(
        model="azure-first", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.parse().choices[0].message.content
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert (row.provider, row.served_model) == ("anthropic", "claude-haiku-4-5")


async def test_a_tool_call_from_the_anthropic_sdk_through_azure(gw: LiveGateway) -> None:
    """Translated Anthropic -> OpenAI, sent to the Azure deployment, the tool call back in
    Anthropic's format, billed at the Azure price."""
    tool = {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    async with anthropic.AsyncAnthropic(base_url=gw.base_url, api_key=gw.key) as an:
        raw = await an.messages.with_raw_response.create(
            model="company-mini",
            max_tokens=100,
            tools=[tool],  # type: ignore[list-item]
            messages=[{"role": "user", "content": "Weather in Paris?"}],
        )
    message = await raw.parse()
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content][-1] == "tool_use"
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert row.provider == "azure"
    expected = _genai("gpt-4o-mini", message.usage.input_tokens, message.usage.output_tokens)
    assert row.cost_usd == expected > 0
