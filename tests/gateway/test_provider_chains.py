"""The new providers together: a fallback chain Azure -> Gemini -> Bedrock -> Anthropic walked
with the existing breakers, retries and translation, and the OpenAI-compatible presets served
and billed at their own prices -- through the official SDKs, against the mock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import anthropic
import openai
import pytest
from genai_prices import Usage, calc_price

from costwarden.mock import MockServer
from costwarden.mock.bedrock import CREDENTIALS
from tests.helpers import LiveGateway, configure_mock, ledger_row, live_gateway, mock_stats

PROVIDERS = """
[[providers]]
name = "azure"
type = "azure"
base_url = "{mock}"
api_version = "2024-10-21"
api_key_env = "CW_TEST_AZURE_KEY"

[[providers]]
name = "gemini"
type = "gemini"
base_url = "{mock}/v1beta"
api_key_env = "CW_TEST_GEMINI_KEY"

[[providers]]
name = "bedrock"
type = "bedrock"
region = "us-east-1"
base_url = "{mock}"
api_key_env = "CW_TEST_AWS_ACCESS_KEY"
secret_key_env = "CW_TEST_AWS_SECRET_KEY"
session_token_env = "CW_TEST_AWS_SESSION_TOKEN"

[[providers]]
name = "groq"
type = "groq"
base_url = "{mock}/v1"
api_key_env = "CW_TEST_GROQ_KEY"

[[providers]]
name = "local"
type = "vllm"
base_url = "{mock}/v1"

[[deployments]]
id = "azure:prod-4o"
price_model = "gpt-4o"

[[deployments]]
id = "gemini:gemini-2.5-flash"

[[deployments]]
id = "bedrock:amazon.nova-lite-v1:0"

[[deployments]]
id = "local:llama-3.1-8b"
price = {{ input_mtok = "0.02", output_mtok = "0.05" }}

[[routes]]
model = "chain"
deployments = ["azure:prod-4o"]
fallbacks = [
    "gemini:gemini-2.5-flash",
    "bedrock:amazon.nova-lite-v1:0",
    "claude-haiku-4-5",
]
retries = 1

[[routes]]
model = "fast"
deployments = ["groq:llama-3.1-8b-instant"]

[[routes]]
model = "local"
deployments = ["local:llama-3.1-8b"]
"""

ENV = {
    "CW_TEST_AZURE_KEY": "az-chain-key",
    "CW_TEST_GEMINI_KEY": "AIza-chain-key",
    "CW_TEST_AWS_ACCESS_KEY": CREDENTIALS.access_key,
    "CW_TEST_AWS_SECRET_KEY": CREDENTIALS.secret_key,
    "CW_TEST_AWS_SESSION_TOKEN": CREDENTIALS.session_token,
    "CW_TEST_GROQ_KEY": "gsk-chain-key",
}
AZURE_PATH = "/openai/deployments/prod-4o/chat/completions"
GEMINI_PATH = "/v1beta/models/gemini-2.5-flash:generateContent"
BEDROCK_PATH = "/model/amazon.nova-lite-v1:0/converse"  # as the mock sees it, decoded


@pytest.fixture
async def gw(mock: MockServer, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with live_gateway(
        mock,
        f"sqlite:///{tmp_path / 'chains.db'}",
        tmp_path,
        extra_toml=PROVIDERS.format(mock=mock.base_url),
        env=ENV,
    ) as gateway:
        yield gateway






async def _calls(mock: MockServer) -> dict[str, int]:
    by_path: dict[str, int] = (await mock_stats(mock))["by_path"]
    return by_path


async def test_the_chain_walks_every_new_provider_to_anthropic(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    failing = ["prod-4o", "gemini-2.5-flash", "amazon.nova-lite-v1:0"]
    await configure_mock(mock, fault_status=503, fault_models=failing)
    raw = await oa.chat.completions.with_raw_response.create(
        model="chain", messages=[{"role": "user", "content": "hello"}], max_tokens=30
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-costwarden-attempts"] == "7"  # 2 tries each on three, then one
    calls = await _calls(mock)
    assert (calls[AZURE_PATH], calls[GEMINI_PATH], calls[BEDROCK_PATH]) == (2, 2, 2)
    assert calls["/v1/messages"] == 1
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert (row.status, row.provider, row.served_model) == (
        "success",
        "anthropic",
        "claude-haiku-4-5",
    )

    await configure_mock(mock, fault_models=["prod-4o"])  # Azure alone is down now
    async with anthropic.AsyncAnthropic(base_url=gw.base_url, api_key=gw.key) as an:
        raw_an = await an.messages.with_raw_response.create(
            model="chain", max_tokens=30, messages=[{"role": "user", "content": "hi"}]
        )
    answer = await raw_an.parse()
    assert answer.content[0].type == "text"  # Gemini's answer, in Anthropic's format
    row = await ledger_row(gw, raw_an.headers["x-request-id"])
    assert (row.provider, row.served_model) == ("gemini", "gemini-2.5-flash")
    assert row.cost_usd > 0


async def test_an_open_breaker_skips_its_provider(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    await configure_mock(mock, fault_status=503, fault_models=["prod-4o"])
    for _ in range(6):  # enough failures to open Azure's breaker
        await oa.chat.completions.create(
            model="chain", messages=[{"role": "user", "content": "hello"}], max_tokens=5
        )
    before = (await _calls(mock))[AZURE_PATH]
    raw = await oa.chat.completions.with_raw_response.create(
        model="chain", messages=[{"role": "user", "content": "hello"}], max_tokens=5
    )
    assert gw.app.breakers.state("azure:prod-4o") == "open"
    assert (await _calls(mock))[AZURE_PATH] == before  # not called while open
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert row.provider == "gemini"


@pytest.mark.parametrize(
    ("route", "model", "provider", "rates"),
    [
        ("fast", "llama-3.1-8b-instant", "groq", None),  # genai-prices' groq price
        ("local", "llama-3.1-8b", "local", (Decimal("0.02"), Decimal("0.05"))),  # the override
    ],
)
async def test_presets_are_served_and_billed_at_their_prices(
    gw: LiveGateway,
    oa: openai.AsyncOpenAI,
    mock: MockServer,
    route: str,
    model: str,
    provider: str,
    rates: tuple[Decimal, Decimal] | None,
) -> None:
    raw = await oa.chat.completions.with_raw_response.create(
        model=route, messages=[{"role": "user", "content": "hello"}], max_tokens=20
    )
    usage = raw.parse().usage
    assert usage is not None
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert (row.provider, row.served_model) == (provider, model)
    if rates is None:
        counted = Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens)
        expected: Decimal = calc_price(counted, model, provider_id="groq").total_price
    else:
        expected = (usage.prompt_tokens * rates[0] + usage.completion_tokens * rates[1]) / 10**6
    assert row.cost_usd == expected > 0
    seen = (await mock_stats(mock))["by_path"]["/v1/chat/completions"]
    assert seen >= 1
