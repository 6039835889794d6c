"""Resilience end to end: retries, breakers, fallback chains across providers, degraded mode.

A live gateway on loopback, the official SDKs as clients, and the mock upstream injecting
faults for chosen models only (``fault_models``), so one mock is both the failing provider
and the healthy fallback. The gateway's clock is a FakeClock: breaker cooldowns pass by hand.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from costwarden.config.settings import load_settings
from costwarden.core.errors import ConfigError
from costwarden.mock import MockServer
from costwarden.pricing import TokenUsage
from costwarden.storage.usage import ledger_rows
from tests.helpers import FakeClock, LiveGateway, gateway_toml, live_gateway, mock_last, set_limits
from tests.helpers import configure_mock as _mock
from tests.helpers import mock_stats as _stats

ROUTES = """
[resilience]
retry_base_ms = 1
retry_max_ms = 5

[[routes]]
model = "smart"
deployments = ["openai:gpt-4o"]
fallbacks = ["claude-haiku-4-5", "gpt-4o-mini"]
retries = 1
degraded = { content = "We are busy right now; please try again in a minute." }

[[routes]]
model = "sonnet-first"
deployments = ["anthropic:claude-sonnet-4-5"]
fallbacks = ["openai:gpt-4o-mini"]
retries = 0

[[routes]]
model = "cheap-first"
deployments = ["openai:gpt-4o-mini"]
fallbacks = ["anthropic:claude-sonnet-4-5"]
retries = 0

[[routes]]
model = "bare"
deployments = ["openai:gpt-4.1-mini"]
retries = 0

[[deployments]]
id = "openai:gpt-4.1"
context_window = 300

[[routes]]
model = "small-window"
deployments = ["openai:gpt-4.1"]
fallbacks = ["openai:gpt-4o-mini"]
"""

WEATHER_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
WEATHER_ANTHROPIC = [
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
ASK_WEATHER = "What is the weather in Paris?"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


@pytest.fixture
async def gw(mock: MockServer, tmp_path: Path, clock: FakeClock) -> AsyncIterator[LiveGateway]:
    async with live_gateway(
        mock, f"sqlite:///{tmp_path / 'gw.db'}", tmp_path, extra_toml=ROUTES, clock=clock
    ) as gateway:
        yield gateway








async def _rows(gw: LiveGateway, request_ids: list[str]) -> dict[str, Any]:
    await gw.app.ledger.flush()
    rows = await asyncio.to_thread(ledger_rows, gw.app.engine, request_ids)
    return {r.request_id: r for r in rows}


def _cost(gw: LiveGateway, deployment: str, usage: TokenUsage) -> Decimal:
    for route in gw.app.routes.values():
        for dep in route.candidates:
            if dep.id == deployment:
                return dep.rates.cost(usage)
    raise AssertionError(deployment)


async def test_breaker_opens_fallback_serves_then_probe_closes_it(
    gw: LiveGateway, clock: FakeClock, oa: openai.AsyncOpenAI
) -> None:
    client = oa
    primary = "openai:gpt-4o"
    await _mock(gw.mock, fault_status=500, fault_models=["gpt-4o"])
    ids = []
    for _ in range(3):  # 2 tries each (retries = 1): the 5th failure opens the breaker
        raw = await client.chat.completions.with_raw_response.create(
            model="smart", messages=[{"role": "user", "content": "hello there"}]
        )
        completion = raw.parse()
        assert completion.model == "claude-haiku-4-5"  # the serving model, translated
        assert raw.headers["x-costwarden-model"] == "claude-haiku-4-5"
        assert raw.headers["x-costwarden-provider"] == "anthropic"
        assert completion.choices[0].message.content
        ids.append(raw.headers["x-request-id"])
    assert gw.app.breakers.state(primary) == "open"
    calls = (await _stats(gw.mock))["by_path"]
    assert calls["/v1/chat/completions"] == 5  # 2 + 2 + 1: open after the 5th failure
    assert calls["/v1/messages"] == 3

    # Billed at the serving model's price, from the serving provider's usage.
    rows = await _rows(gw, ids)
    for rid in ids:
        row = rows[rid]
        assert (row.status, row.requested_model, row.served_model) == (
            "success",
            "smart",
            "claude-haiku-4-5",
        )
        usage = TokenUsage(input_tokens=row.input_tokens, output_tokens=row.output_tokens)
        assert row.input_tokens > 0 and row.output_tokens > 0
        assert row.cost_usd == _cost(gw, "anthropic:claude-haiku-4-5", usage) > 0

    # While open, the primary is not called at all.
    await client.chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "again"}]
    )
    assert (await _stats(gw.mock))["by_path"]["/v1/chat/completions"] == 5

    # After the cooldown one probe goes; a failing probe opens the breaker again.
    clock.advance(61)
    await client.chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "probe 1"}]
    )
    assert (await _stats(gw.mock))["by_path"]["/v1/chat/completions"] == 6
    assert gw.app.breakers.state(primary) == "open"

    # The provider recovers; the next probe after another cooldown closes the breaker.
    await _mock(gw.mock, fault_status=None, fault_models=[])
    clock.advance(61)
    completion = await client.chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "probe 2"}]
    )
    assert completion.model == "gpt-4o"
    assert gw.app.breakers.state(primary) == "closed"
    health = {h["deployment"]: h for h in gw.app.breakers.health()}
    assert health[primary]["state"] == "closed" and health[primary]["last_success_at"]


async def test_retry_then_success_on_the_same_deployment(
    gw: LiveGateway, oa: openai.AsyncOpenAI
) -> None:
    await _mock(gw.mock, fault_status=503, fault_rate=0.5, fault_models=["gpt-4o"])
    raw = await oa.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "hi"}]
    )
    # fault_rate 0.5 faults every other request: the first try fails, the retry answers.
    assert raw.parse().model == "gpt-4o"
    assert raw.headers["x-costwarden-attempts"] == "2"
    assert gw.app.breakers.state("openai:gpt-4o") == "closed"


async def test_429_retry_after_is_honoured_or_handed_to_the_fallback(
    gw: LiveGateway, oa: openai.AsyncOpenAI
) -> None:
    # A Retry-After beyond max_retry_after_seconds (10): no wait, the next candidate serves.
    await _mock(gw.mock, fault_status=429, fault_retry_after=30, fault_models=["gpt-4o"])
    raw = await oa.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().model == "claude-haiku-4-5"
    assert raw.headers["x-costwarden-attempts"] == "2"  # one 429, then the fallback
    # 429 is the provider's rate limit, not a fault: the breaker does not count it.
    assert gw.app.breakers.health()[0]["consecutive_failures"] == 0


async def test_anthropic_client_served_by_openai_fallback_with_tool_call(
    gw: LiveGateway, an: anthropic.AsyncAnthropic
) -> None:
    await _mock(gw.mock, fault_status=500, fault_models=["claude-sonnet-4-5"])
    client = an
    raw = await client.messages.with_raw_response.create(
        model="sonnet-first",
        max_tokens=200,
        system="You are terse.",
        tools=WEATHER_ANTHROPIC,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": ASK_WEATHER}],
    )
    message = await raw.parse()
    assert raw.headers["x-costwarden-provider"] == "openai"
    assert message.model == "gpt-4o-mini" and message.stop_reason == "tool_use"
    tool = next(b for b in message.content if b.type == "tool_use")
    assert tool.name == "get_weather" and tool.input == {"city": "Paris"}
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    sent = (await mock_last(gw.mock, "/v1/chat/completions"))["body"]
    assert sent["messages"][0] == {"role": "system", "content": "You are terse."}
    assert sent["tools"][0]["function"]["name"] == "get_weather"

    async with client.messages.stream(
        model="sonnet-first",
        max_tokens=200,
        tools=WEATHER_ANTHROPIC,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": ASK_WEATHER}],
    ) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.model == "gpt-4o-mini"
    tool = next(b for b in final.content if b.type == "tool_use")
    assert tool.name == "get_weather" and tool.input == {"city": "Paris"}
    assert final.usage.output_tokens > 0

    async with client.messages.stream(
        model="sonnet-first", max_tokens=50, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        text = await stream.get_final_text()
        final = await stream.get_final_message()
    assert text.startswith("tok0") and final.stop_reason in ("end_turn", "max_tokens")


async def test_openai_client_served_by_anthropic_fallback_with_tool_call(
    gw: LiveGateway, oa: openai.AsyncOpenAI
) -> None:
    await _mock(gw.mock, fault_status=500, fault_models=["gpt-4o"])
    client = oa
    completion = await client.chat.completions.create(
        model="smart",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": ASK_WEATHER},
        ],
        tools=WEATHER_OPENAI,  # type: ignore[arg-type]
    )
    choice = completion.choices[0]
    assert completion.model == "claude-haiku-4-5" and choice.finish_reason == "tool_calls"
    call = (choice.message.tool_calls or [])[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    sent = (await mock_last(gw.mock, "/v1/messages"))["body"]
    assert sent["system"] == "You are terse." and sent["tools"][0]["name"] == "get_weather"

    stream = await client.chat.completions.create(
        model="smart",
        messages=[{"role": "user", "content": ASK_WEATHER}],
        tools=WEATHER_OPENAI,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    arguments, names, finish, usage = "", [], None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                if tc.function and tc.function.name:
                    names.append(tc.function.name)
                if tc.function and tc.function.arguments:
                    arguments += tc.function.arguments
            finish = c.finish_reason or finish
    assert names == ["get_weather"] and json.loads(arguments) == {"city": "Paris"}
    assert finish == "tool_calls" and usage is not None and usage.completion_tokens > 0

    # Plain text through the helper that accumulates the stream.
    async with client.chat.completions.stream(
        model="smart", messages=[{"role": "user", "content": "hello"}]
    ) as s:
        async for _ in s:
            pass
        final = await s.get_final_completion()
    assert (final.choices[0].message.content or "").startswith("tok0")


async def test_tool_results_go_back_across_formats_both_sdks(
    gw: LiveGateway, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    """The second turn of a tool call: the client's tool result reaches the other format's
    upstream as its own kind of block, tied to the call the upstream made."""
    await _mock(gw.mock, fault_status=500, fault_models=["gpt-4o", "claude-sonnet-4-5"])
    first = await oa.chat.completions.create(
        model="smart",
        messages=[{"role": "user", "content": ASK_WEATHER}],
        tools=WEATHER_OPENAI,  # type: ignore[arg-type]
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    second = await oa.chat.completions.create(
        model="smart",
        messages=[
            {"role": "user", "content": ASK_WEATHER},
            first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"},
            {"role": "user", "content": "Thanks. Anything else?"},
        ],
        tools=WEATHER_OPENAI,  # type: ignore[arg-type]
    )
    assert second.model == "claude-haiku-4-5" and second.choices[0].finish_reason == "stop"
    sent = (await mock_last(gw.mock, "/v1/messages"))["body"]["messages"]
    assert sent[1]["content"][-1]["type"] == "tool_use" and sent[1]["content"][-1]["id"] == call.id
    assert sent[2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": call.id,
        "content": "18 C, sunny",
    }

    message = await an.messages.create(
        model="sonnet-first",
        max_tokens=200,
        tools=WEATHER_ANTHROPIC,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": ASK_WEATHER}],
    )
    tool = next(b for b in message.content if b.type == "tool_use")
    async with an.messages.stream(
        model="sonnet-first",
        max_tokens=200,
        tools=WEATHER_ANTHROPIC,  # type: ignore[arg-type]
        messages=[
            {"role": "user", "content": ASK_WEATHER},
            {"role": "assistant", "content": [b.model_dump() for b in message.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool.id, "content": "18 C, sunny"}
                ],
            },
        ],
    ) as stream:
        final = await stream.get_final_message()
    assert final.model == "gpt-4o-mini" and final.stop_reason == "end_turn"
    sent = (await mock_last(gw.mock, "/v1/chat/completions"))["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == tool.id
    assert sent[2] == {"role": "tool", "tool_call_id": tool.id, "content": "18 C, sunny"}


async def test_all_failing_route_with_template_answers_both_sdks(
    gw: LiveGateway, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    await _mock(gw.mock, fault_status=500)  # every model
    template = "We are busy right now; please try again in a minute."
    raw = await oa.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-costwarden-degraded"] == "true"
    assert raw.parse().choices[0].message.content == template
    rid = raw.headers["x-request-id"]

    stream = await oa.chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == template

    message = await an.messages.create(
        model="smart", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == template
    async with an.messages.stream(
        model="smart", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        assert await s.get_final_text() == template

    row = (await _rows(gw, [rid]))[rid]
    assert (row.status, row.http_status, row.cost_usd) == ("degraded", 200, Decimal(0))
    assert "circuit breaker open" in (row.error or "") or "returned 500" in (row.error or "")

    # A route without a template: the error while trying, then 503 once the breaker is open.
    statuses = []
    for _ in range(7):
        try:
            await oa.chat.completions.create(
                model="bare", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.APIStatusError as exc:
            statuses.append(exc.status_code)
    assert statuses[:5] == [502] * 5 and statuses[5:] == [503, 503]
    with pytest.raises(anthropic.APIStatusError) as info:
        await an.messages.create(
            model="bare", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 503
    assert "circuit breaker open" in info.value.message


async def test_request_too_long_for_a_model_goes_to_the_next_that_fits(
    oa: openai.AsyncOpenAI,
) -> None:
    client = oa
    short = await client.chat.completions.create(
        model="small-window", messages=[{"role": "user", "content": "hi"}], max_tokens=10
    )
    assert short.model == "gpt-4.1"
    long = await client.chat.completions.create(
        model="small-window", messages=[{"role": "user", "content": "word " * 400}]
    )
    assert long.model == "gpt-4o-mini"



# ---------------------------------------------------------------- bad chains at config load


def _load(tmp_path: Path, extra: str) -> None:
    text = gateway_toml("http://127.0.0.1:9", f"sqlite:///{tmp_path / 'x.db'}", extra=extra)
    load_settings(text=text, env={"CW_TEST_OPENAI_KEY": "k", "CW_TEST_ANTHROPIC_KEY": "k"})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '[[routes]]\nmodel = "x"\ndeployments = ["openai:gpt-4o"]\nfallbacks = ["nope"]\n',
            "fallback 'nope' is neither a route nor a deployment",
        ),
        (
            '[[routes]]\nmodel = "x"\ndeployments = ["openai:gpt-4o"]\nfallbacks = ["y"]\n'
            '[[routes]]\nmodel = "y"\ndeployments = ["openai:gpt-4o-mini"]\nfallbacks = ["x"]\n',
            "fallbacks form a cycle: x -> y -> x",
        ),
        (
            '[[routes]]\nmodel = "x"\ndeployments = ["openai:gpt-4o"]\ndegraded = "busy"\n',
            "must be a table",
        ),
        (
            '[[routes]]\nmodel = "x"\ndeployments = ["openai:gpt-4o"]\n'
            'degraded = { text = "busy" }\n',
            "unknown field 'text'",
        ),
        (
            '[[routes]]\nmodel = "x"\ndeployments = ["openai:gpt-4o"]\n'
            'degraded = { content = "" }\n',
            "content: required, a non-empty string",
        ),
    ],
)
def test_bad_chains_and_templates_are_refused_at_load(
    tmp_path: Path, extra: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, extra)
    assert message in str(info.value)


# ---------------------------------------------------------------- fallback chains via the admin API


async def _admin(
    gw: LiveGateway, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    headers = {"authorization": "Bearer admin-secret"}
    async with aiohttp.ClientSession() as http:
        async with http.request(method, gw.base_url + path, json=body, headers=headers) as r:
            return r.status, await r.json()


async def test_admin_api_sets_validates_and_audits_fallback_chains(
    mock: MockServer, tmp_path: Path, clock: FakeClock
) -> None:
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    async with (
        live_gateway(
            mock, db, tmp_path, extra_toml=ROUTES, clock=clock, admin_token="admin-secret"
        ) as one,
        live_gateway(mock, db, tmp_path, extra_toml=ROUTES, clock=clock) as two,
    ):
        status, body = await _admin(one, "GET", "/admin/routes")
        smart = next(r for r in body["routes"] if r["model"] == "smart")
        assert smart["chain"] == [
            "openai:gpt-4o",
            "anthropic:claude-haiku-4-5",
            "openai:gpt-4o-mini",
        ]
        assert smart["fallbacks_source"] == "config"

        # Bad chains: refused with a clear error, nothing stored, nothing changed.
        # A cycle through the other routes' chains conflicts with them: 409.
        for fallbacks, code, words in (
            (["nope"], 400, "neither a route nor a deployment"),
            (["openai:gpt-4o", "nope"], 400, "'nope' is neither a route nor a deployment"),
            (["sonnet-first", "smart"], 409, "cycle"),
            ("gpt-4o-mini", 400, "must be a list"),
        ):
            status, body = await _admin(
                one, "PUT", "/admin/routes/smart/fallbacks", {"fallbacks": fallbacks}
            )
            assert status == code and words in body["error"]["message"], body
        status, body = await _admin(one, "PUT", "/admin/routes/ghost/fallbacks", {"fallbacks": []})
        assert status == 404

        status, body = await _admin(
            one, "PUT", "/admin/routes/smart/fallbacks", {"fallbacks": ["openai:gpt-4o-mini"]}
        )
        assert status == 200 and body["chain"] == ["openai:gpt-4o", "openai:gpt-4o-mini"]
        assert body["fallbacks_source"] == "admin"
        # The other process follows within a poll (0.5 s here).
        for _ in range(40):
            if [d.id for d in two.app.routes["smart"].candidates][1:] == ["openai:gpt-4o-mini"]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the second gateway did not pick up the new chain")

        await _mock(mock, fault_status=500, fault_models=["gpt-4o"])
        async with openai.AsyncOpenAI(
            base_url=two.openai_url, api_key=two.key, max_retries=0
        ) as client:
            completion = await client.chat.completions.create(
                model="smart", messages=[{"role": "user", "content": "hi"}]
            )
        assert completion.model == "gpt-4o-mini"

        status, body = await _admin(
            one, "PUT", "/admin/routes/smart/fallbacks", {"fallbacks": None}
        )
        assert status == 200 and body["fallbacks_source"] == "config"
        status, body = await _admin(one, "GET", "/admin/audit?action=route.fallbacks")
        entries = body["data"]
        assert [e["new_value"]["fallbacks"] for e in entries][:2] == [None, ["openai:gpt-4o-mini"]]
        assert entries[1]["old_value"] == {"fallbacks": None}


# ---------------------------------------------------------------- kill switch on the request path


async def test_kill_switch_stops_every_process_and_nothing_reaches_upstream(
    mock: MockServer, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    async with (
        live_gateway(mock, db, tmp_path, admin_token="admin-secret") as one,
        live_gateway(mock, db, tmp_path) as two,
    ):
        status, body = await _admin(
            one,
            "PUT",
            "/admin/switches",
            {"org": None, "feature": "ai", "enabled": False, "message": "Maintenance until 3pm."},
        )
        assert status == 400 and "disable-all" in body["error"]["message"]
        status, body = await _admin(
            one,
            "PUT",
            "/admin/switches",
            {
                "org": None,
                "feature": "ai",
                "enabled": False,
                "message": "Maintenance until 3pm.",
                "confirm": "disable-all",
            },
        )
        assert status == 200, body
        loop = asyncio.get_running_loop()
        switched = loop.time()
        async with (
            openai.AsyncOpenAI(base_url=two.openai_url, api_key=two.key, max_retries=0) as oa2,
            anthropic.AsyncAnthropic(base_url=two.base_url, api_key=two.key, max_retries=0) as an2,
        ):
            while True:  # the second process follows within its poll interval
                try:
                    await oa2.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                    )
                except openai.APIStatusError as exc:
                    assert exc.status_code == 503 and "Maintenance until 3pm." in exc.message
                    break
                assert loop.time() - switched < 1.0, "still serving a second after the switch"
                await asyncio.sleep(0.02)
            seen = (await _stats(mock))["requests"]
            with pytest.raises(anthropic.APIStatusError) as info:
                await an2.messages.create(
                    model="claude-haiku-4-5",
                    max_tokens=20,
                    messages=[{"role": "user", "content": "hi"}],
                )
            assert info.value.status_code == 503
            async with openai.AsyncOpenAI(
                base_url=one.openai_url, api_key=one.key, max_retries=0
            ) as oa1:
                with pytest.raises(openai.APIStatusError) as refused:
                    await oa1.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                    )
                assert refused.value.status_code == 503
                assert (await _stats(mock))["requests"] == seen  # nothing reached the upstream

                status, body = await _admin(
                    one, "PUT", "/admin/switches", {"org": None, "feature": "ai", "enabled": True}
                )
                assert status == 200
                await oa1.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                )
        status, body = await _admin(one, "GET", "/admin/audit?action=switch.set")
        assert status == 200, body
        changes = [(e["old_value"], e["new_value"]) for e in body["data"]]
        assert len(changes) >= 2 and changes[0][1]["enabled"] is True
        assert changes[1][1]["enabled"] is False and body["data"][0]["actor"]


async def test_a_fallback_that_cannot_take_the_request_is_passed_over(
    gw: LiveGateway, oa: openai.AsyncOpenAI
) -> None:
    # n=2 has no Anthropic equivalent: claude-haiku is skipped for gpt-4o-mini.
    await _mock(gw.mock, fault_status=500, fault_models=["gpt-4o"])
    completion = await oa.chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "hi"}], n=2
    )
    assert completion.model == "gpt-4o-mini"
    # With no candidate able to take it, the client hears why: a 400, not a 503.
    with pytest.raises(openai.BadRequestError) as info:
        await oa.chat.completions.create(
            model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}], n=2
        )
    assert "n" in info.value.message


async def test_a_budget_refusal_on_a_fallback_leaves_its_probe_for_the_next_request(
    gw: LiveGateway, clock: FakeClock, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    sonnet = "anthropic:claude-sonnet-4-5"
    board = gw.app.breakers
    await _mock(gw.mock, fault_status=500, fault_models=["claude-sonnet-4-5"])
    for _ in range(5):  # each served by the gpt-4o-mini fallback; the 5th failure opens
        await an.messages.create(
            model="sonnet-first", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
    assert board.state(sonnet) == "open"
    clock.advance(61)
    assert board.probe_due(sonnet)

    # A budget gpt-4o-mini's prompt fits and claude-sonnet's (20x the price) does not.
    await set_limits(gw, daily_usd="0.01")
    await _mock(gw.mock, fault_status=500, fault_models=["gpt-4o-mini"])
    messages_calls = (await _stats(gw.mock))["by_path"]["/v1/messages"]
    long_prompt = [{"role": "user", "content": "word " * 8000}]
    with pytest.raises(openai.APIStatusError) as refused:
        await oa.chat.completions.create(model="cheap-first", messages=long_prompt)
    assert refused.value.status_code == 503
    assert "claude-sonnet-4-5" in refused.value.message
    # The refused fallback was never called and its probe slot was not taken.
    assert (await _stats(gw.mock))["by_path"]["/v1/messages"] == messages_calls
    assert board.state(sonnet) == "open" and board.probe_due(sonnet)

    # So the next request that can pay for it probes at once, and the breaker closes.
    await set_limits(gw, daily_usd="100")
    await _mock(gw.mock, fault_status=None, fault_models=[])
    message = await an.messages.create(
        model="sonnet-first", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.model == "claude-sonnet-4-5"
    assert board.state(sonnet) == "closed"
