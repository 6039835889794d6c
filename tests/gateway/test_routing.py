"""Route strategies and budget-aware downgrade end to end: a live gateway, the official SDKs,
the mock upstream. Each answer's ``x-costwarden-route-reason`` names where it went and why,
and the ledger row keeps the same reason."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from costwarden.mock import MockServer
from tests.helpers import T0, FakeClock, LiveGateway, ledger_row, live_gateway, set_limits
from tests.helpers import configure_mock as _mock
from tests.helpers import mock_stats as _stats

MINI, NANO, HAIKU, BIG = (
    "openai:gpt-4o-mini", "openai:gpt-4.1-mini", "anthropic:claude-haiku-4-5", "openai:gpt-4o",
)  # fmt: skip
ROUTES = f"""
[resilience]
retry_base_ms = 1
retry_max_ms = 5

[[deployments]]
id = "{MINI}"
context_window = 1500
capabilities = ["streaming", "structured_output"]

[[deployments]]
id = "{NANO}"
capabilities = ["streaming", "structured_output", "tools"]

[[deployments]]
id = "{HAIKU}"
capabilities = ["streaming", "tools", "vision"]

[[deployments]]
id = "{BIG}"
capabilities = ["streaming", "structured_output", "tools", "vision"]

[[routes]]
model = "best"
strategy = "cheapest"
deployments = ["{BIG}", "{HAIKU}", "{NANO}", "{MINI}"]
retries = 0

[[routes]]
model = "split"
strategy = "weighted"
deployments = ["{MINI}", "{NANO}"]
weights = [80, 20]

[[routes]]
model = "quick"
strategy = "lowest-latency"
deployments = ["{MINI}", "{NANO}"]

[[routes]]
model = "spread"
strategy = "least-busy"
deployments = ["{MINI}", "{NANO}"]
"""
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
]
SCHEMA: Any = {
    "type": "json_schema",
    "json_schema": {"name": "answer", "schema": {"type": "object", "properties": {}}},
}


@pytest.fixture
async def gw(mock: MockServer, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with live_gateway(
        mock, f"sqlite:///{tmp_path / 'gw.db'}", tmp_path, extra_toml=ROUTES
    ) as gateway:
        yield gateway


def _text(content: str = "hi") -> list[Any]:
    return [{"role": "user", "content": content}]


def _image() -> list[Any]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": PIXEL}},
            ],
        }
    ]


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("text", {"messages": _text()}, MINI, f"cheapest: {MINI}, at most $"),
    ("long prompt", {"messages": _text("word " * 2000)}, NANO,
     f"{MINI}: needs about"),
    ("tools", {"messages": _text(), "tools": TOOLS}, NANO, f"{MINI}: no tools"),
    ("vision", {"messages": _image()}, HAIKU, f"{NANO}: no vision"),
    ("vision and structured output", {"messages": _image(), "response_format": SCHEMA}, BIG,
     f"{HAIKU}: no structured output"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "extra", "served", "says"), CASES, ids=[c[0] for c in CASES])
async def test_cheapest_picks_the_cheapest_deployment_able_to_take_it(
    gw: LiveGateway,
    oa: openai.AsyncOpenAI,
    case: str,
    extra: dict[str, Any],
    served: str,
    says: str,
) -> None:
    raw = await oa.chat.completions.with_raw_response.create(
        model="best", max_tokens=50, **extra
    )
    reason = raw.headers["x-costwarden-route-reason"]
    assert reason.startswith(f"cheapest: {served}, at most $"), reason
    assert says in reason, reason
    assert raw.headers["x-costwarden-provider"] + ":" + raw.headers["x-costwarden-model"] == served
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert row.route_reason == reason and row.status == "success"


async def test_cheapest_passes_over_an_open_breaker_and_says_so(
    gw: LiveGateway, oa: openai.AsyncOpenAI
) -> None:
    for _ in range(5):
        gw.app.breakers.failure(MINI, "status 500")
    assert gw.app.breakers.state(MINI) == "open"
    raw = await oa.chat.completions.with_raw_response.create(
        model="best", max_tokens=50, messages=_text()
    )
    reason = raw.headers["x-costwarden-route-reason"]
    assert reason.startswith(f"cheapest: {NANO}, at most $"), reason
    assert f"(skipped {MINI}: circuit breaker open)" in reason
    assert raw.headers["x-costwarden-model"] == "gpt-4.1-mini"


async def test_a_failure_on_the_choice_is_served_by_the_next_and_the_reason_tells(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    await _mock(mock, fault_status=500, fault_models=["gpt-4o-mini"])
    raw = await oa.chat.completions.with_raw_response.create(
        model="best", max_tokens=50, messages=_text()
    )
    reason = raw.headers["x-costwarden-route-reason"]
    assert reason.startswith(f"cheapest: {MINI}"), reason
    assert f"; served by {NANO} after {MINI}: upstream openai returned 500" in reason, reason
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert row.route_reason == reason and row.served_model == "gpt-4.1-mini"


async def test_a_deployment_without_a_capability_is_never_tried(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    # Every deployment with tools failing: gpt-4o-mini (no tools) is not the last resort.
    await _mock(mock, fault_status=500, fault_models=["gpt-4.1-mini", "claude-haiku-4-5", "gpt-4o"])
    before = (await _stats(mock))["requests"]
    with pytest.raises(openai.APIStatusError) as failed:
        await oa.chat.completions.create(model="best", max_tokens=50, messages=_text(), tools=TOOLS)
    assert failed.value.status_code == 503
    assert MINI not in failed.value.message
    assert (await _stats(mock))["requests"] - before == 3  # three deployments, no retries
    # None able at all: the client's 400, naming what each lacks; nothing called.
    before = (await _stats(mock))["requests"]
    with pytest.raises(openai.BadRequestError) as bad:
        await oa.chat.completions.create(model="split", messages=_image())
    assert bad.value.message.endswith(
        f"no deployment of 'split' can take this request ({MINI}: no vision; {NANO}: no vision)"
    ), bad.value.message
    assert (await _stats(mock))["requests"] == before


async def test_an_ordered_route_says_its_first_deployment_streamed_or_not(
    gw: LiveGateway, oa: openai.AsyncOpenAI
) -> None:
    raw = await oa.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_text())
    assert raw.headers["x-costwarden-route-reason"] == f"ordered: {MINI} (first configured)"
    async with oa.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=_text(), stream=True
    ) as streamed:
        assert streamed.headers["x-costwarden-route-reason"] == (
            f"ordered: {MINI} (first configured)"
        )
        async for _ in streamed.iter_lines():
            pass


async def test_weighted_splits_traffic_by_weight(gw: LiveGateway, oa: openai.AsyncOpenAI) -> None:
    served: Counter[str] = Counter()
    for _ in range(200):
        raw = await oa.chat.completions.with_raw_response.create(model="split", messages=_text())
        served[raw.headers["x-costwarden-model"]] += 1
        assert "weighted: " in raw.headers["x-costwarden-route-reason"]
        assert " (drawn at weight " in raw.headers["x-costwarden-route-reason"]
    # 80/20 of 200: a binomial's 4.5 standard deviations (5.7 each) either side.
    assert 134 <= served["gpt-4o-mini"] <= 186, served
    assert served["gpt-4o-mini"] + served["gpt-4.1-mini"] == 200


async def test_lowest_latency_follows_the_measured_average(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    live = gw.app.proxy.failover.live
    await _mock(mock, latency_ms=40)
    raw = await oa.chat.completions.with_raw_response.create(model="quick", messages=_text())
    # Neither measured: the first configured; an unmeasured one goes first after that.
    assert raw.headers["x-costwarden-route-reason"] == f"lowest-latency: {MINI} (not measured yet)"
    await _mock(mock, latency_ms=0)
    raw = await oa.chat.completions.with_raw_response.create(model="quick", messages=_text())
    assert raw.headers["x-costwarden-route-reason"] == f"lowest-latency: {NANO} (not measured yet)"
    assert live.latency_ms[MINI] >= 40 > live.latency_ms[NANO]
    for _ in range(3):
        raw = await oa.chat.completions.with_raw_response.create(model="quick", messages=_text())
        reason = raw.headers["x-costwarden-route-reason"]
        assert reason.startswith(f"lowest-latency: {NANO} ("), reason
        assert reason.endswith(" ms average)"), reason


async def test_least_busy_sends_the_next_request_where_fewer_are_in_flight(
    gw: LiveGateway, oa: openai.AsyncOpenAI, mock: MockServer
) -> None:
    await _mock(mock, latency_ms=300)
    first = asyncio.create_task(
        oa.chat.completions.with_raw_response.create(model="spread", messages=_text())
    )
    live = gw.app.proxy.failover.live
    for _ in range(200):  # until the first is in flight upstream
        if live.in_flight.get(MINI):
            break
        await asyncio.sleep(0.005)
    second = await oa.chat.completions.with_raw_response.create(model="spread", messages=_text())
    assert second.headers["x-costwarden-route-reason"] == f"least-busy: {NANO} (0 in flight)"
    assert (await first).headers["x-costwarden-route-reason"] == (
        f"least-busy: {MINI} (0 in flight)"
    )
    assert live.in_flight == {MINI: 0, NANO: 0}  # each counted out once relayed


# ---------------------------------------------------------------- budget-aware downgrade

DOWNGRADE = f"""
[[deployments]]
id = "{BIG}"
price = {{ input_mtok = "0", output_mtok = "1000" }}

[[deployments]]
id = "openai:free-llm"
price = {{ input_mtok = "0", output_mtok = "0" }}

[[routes]]
model = "gpt-4o"
deployments = ["{BIG}", "{MINI}"]
downgrade = [{{ above_percent = 80, to = "{MINI}", scope = "org", limit = "daily_usd" }}]

[[routes]]
model = "careful"
deployments = ["{BIG}", "{MINI}"]
downgrade_on_refusal = true

[[routes]]
model = "careful-busy"
deployments = ["{BIG}", "{MINI}"]
downgrade_on_refusal = true
degraded = {{ content = "Busy." }}

[[routes]]
model = "free-first"
deployments = ["openai:free-llm"]
fallbacks = ["{BIG}"]
retries = 0
"""


@pytest.fixture
async def budget_gw(mock: MockServer, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with live_gateway(
        mock,
        f"sqlite:///{tmp_path / 'gw.db'}",
        tmp_path,
        extra_toml=DOWNGRADE,
        clock=FakeClock(T0),
    ) as gateway:
        yield gateway


async def test_above_80_percent_of_the_daily_budget_the_cheaper_model_serves(
    budget_gw: LiveGateway, mock: MockServer
) -> None:
    gw = budget_gw
    await _mock(mock, output_tokens=30)  # $0.03 a call on gpt-4o, a budget of $0.10
    await set_limits(gw, daily_usd="0.10")
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as oa:
        served: list[str] = []
        for _ in range(3):  # 0 %, 30 %, 60 % used before each: gpt-4o
            raw = await oa.chat.completions.with_raw_response.create(
                model="gpt-4o", max_tokens=30, messages=_text()
            )
            served.append(raw.parse().model)
            assert "x-costwarden-downgraded" not in raw.headers
        raw = await oa.chat.completions.with_raw_response.create(
            model="gpt-4o", max_tokens=30, messages=_text()
        )  # 90 % used: gpt-4o-mini
    assert served == ["gpt-4o"] * 3 and raw.parse().model == "gpt-4o-mini"
    assert raw.headers["x-costwarden-downgraded"] == "true"
    reason = raw.headers["x-costwarden-route-reason"]
    assert reason == (
        f"ordered: {BIG} (first configured); downgraded from {BIG} to {MINI}: org daily_usd "
        "budget 90% used (rule: above 80%)"
    ), reason
    row = await ledger_row(gw, raw.headers["x-request-id"])
    assert row.route_reason == reason and row.served_model == "gpt-4o-mini"
    assert Decimal(0) < row.cost_usd < Decimal("0.0001")  # billed at gpt-4o-mini's price


async def test_a_refused_reservation_is_served_cheaper_only_when_opted_in(
    budget_gw: LiveGateway, mock: MockServer
) -> None:
    gw = budget_gw
    await set_limits(gw, daily_usd="0.01")  # gpt-4o's 50-token reservation ($0.05) cannot fit
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as oa:
        with pytest.raises(openai.APIStatusError) as refused:
            await oa.chat.completions.create(model="gpt-4o", max_tokens=50, messages=_text())
        assert refused.value.status_code == 402
        raw = await oa.chat.completions.with_raw_response.create(
            model="careful", max_tokens=50, messages=_text()
        )
    assert raw.parse().model == "gpt-4o-mini"
    assert raw.headers["x-costwarden-downgraded"] == "true"
    reason = raw.headers["x-costwarden-route-reason"]
    assert f"; downgraded from {BIG}: " in reason and "daily_usd" in reason, reason
    # Nothing cheaper fits either: the budget's 402, not the route's degraded template.
    await set_limits(gw, daily_usd="0.000001")
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as oa:
        for model in ("careful", "careful-busy"):
            with pytest.raises(openai.APIStatusError) as refused:
                await oa.chat.completions.create(model=model, max_tokens=50, messages=_text())
            assert refused.value.status_code == 402, model


async def test_a_paid_fallback_behind_a_free_model_still_meets_the_budget(
    budget_gw: LiveGateway, mock: MockServer
) -> None:
    """Every hop reserves: the free model fits any budget, its paid fallback does not."""
    gw = budget_gw
    await set_limits(gw, daily_usd="0.01")
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as oa:
        answer = await oa.chat.completions.create(
            model="free-first", max_tokens=50, messages=_text()
        )
        assert answer.model == "free-llm"
        # The free model down for good (breaker open): nothing that fits is left -> 402,
        # and gpt-4o was never called.
        for _ in range(5):
            gw.app.breakers.failure("openai:free-llm", "status 500")
        calls = (await _stats(mock))["requests"]
        with pytest.raises(openai.APIStatusError) as refused:
            await oa.chat.completions.create(model="free-first", max_tokens=50, messages=_text())
        assert refused.value.status_code == 402
        assert (await _stats(mock))["requests"] == calls
        # The free model failing on the call itself: the paid fallback's reservation is
        # refused all the same (a 503 naming it: the failure was the free model's).
        await gw.app.breakers.reset("openai:free-llm", actor="test")
        await _mock(mock, fault_status=500, fault_models=["free-llm"])
        chat_calls = (await _stats(mock))["by_path"]["/v1/chat/completions"]
        with pytest.raises(openai.APIStatusError) as failed:
            await oa.chat.completions.create(model="free-first", max_tokens=50, messages=_text())
        assert failed.value.status_code == 503
        assert f"{BIG}: " in failed.value.message and "daily_usd" in failed.value.message
        # One call: the free model's; gpt-4o's never made.
        assert (await _stats(mock))["by_path"]["/v1/chat/completions"] == chat_calls + 1


async def test_the_admin_api_shows_each_routes_strategy_downgrade_and_cache(
    mock: MockServer, tmp_path: Path
) -> None:
    token = "admin-token-routing"
    extra = ROUTES + DOWNGRADE.replace('model = "gpt-4o"\n', 'model = "gpt-4o-down"\n') + (
        '\n[[routes]]\nmodel = "kept"\ndeployments = ["openai:gpt-4o-mini"]\n'
        'cache = { ttl_seconds = 60, namespace = "secret-team-name" }\n'
    )
    async with live_gateway(
        mock, f"sqlite:///{tmp_path / 'gw.db'}", tmp_path, extra_toml=extra, admin_token=token
    ) as gw:
        async with aiohttp.ClientSession() as http:
            async with http.get(
                gw.base_url + "/admin/routes", headers={"authorization": f"Bearer {token}"}
            ) as r:
                assert r.status == 200
                text = await r.text()
                routes = {x["model"]: x for x in (await r.json())["routes"]}
    assert routes["best"]["strategy"] == "cheapest" and routes["best"]["weights"] is None
    assert routes["split"]["weights"] == [80, 20]
    assert routes["gpt-4o-down"]["downgrade"] == [
        {"above_percent": "80", "to": MINI, "scope": "org", "limit": "daily_usd"}
    ]
    assert routes["careful"]["downgrade_on_refusal"] is True
    assert routes["kept"]["cache"] == {"ttl_seconds": 60, "replay_unsafe": False, "shared": True}
    assert routes["gpt-4o-mini"]["cache"] is None and routes["gpt-4o-mini"]["strategy"] == "ordered"
    assert "secret-team-name" not in text
