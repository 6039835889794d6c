"""Prices: ``Rates.cost`` must equal ``genai_prices.calc_price`` exactly, in Decimal.

The comparison with genai-prices draws usages from a seeded ``random.Random`` (reproducible,
many cases per model); that money is monotonic and additive in tokens is hypothesis's.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price
from hypothesis import given, settings
from hypothesis import strategies as st

from costwarden.app.domain_types import build_deployments
from costwarden.config.settings import load_settings
from costwarden.core.errors import ConfigError
from costwarden.pricing import (
    PriceOverride,
    Pricer,
    Rates,
    TokenUsage,
    genai_usage,
    resolve_rates,
)

MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("openai", "o3-mini"),
    ("anthropic", "claude-haiku-4-5"),
    ("openai", "text-embedding-3-small"),
]
CASES_PER_MODEL = 400


def _usages(seed: int, n: int, *, embedding: bool = False) -> list[TokenUsage]:
    """Valid usages: cached + written <= input, reasoning <= output; edges included."""
    rng = random.Random(seed)
    out = [
        TokenUsage(),
        TokenUsage(input_tokens=1),
        TokenUsage(input_tokens=7, cached_input_tokens=7),
        TokenUsage(input_tokens=9, cache_write_tokens=9),
        TokenUsage(input_tokens=0 if embedding else 3, output_tokens=0 if embedding else 5),
        TokenUsage(input_tokens=1_999_999, output_tokens=0 if embedding else 1_000_001),
    ]
    if not embedding:
        out.append(TokenUsage(input_tokens=2, output_tokens=11, reasoning_tokens=11))
    while len(out) < n:
        scale = rng.choice([10, 1_000, 100_000, 2_000_000])
        inp = rng.randint(0, scale)
        cached = rng.randint(0, inp) if rng.random() < 0.6 else 0
        written = rng.randint(0, inp - cached) if rng.random() < 0.5 else 0
        if embedding:
            out.append(TokenUsage(input_tokens=inp))
            continue
        output = rng.randint(0, scale)
        reasoning = rng.randint(0, output) if rng.random() < 0.6 else 0
        out.append(TokenUsage(inp, cached, written, output, reasoning))
    return out


def _genai(provider: str, model: str, usage: TokenUsage) -> Decimal:
    total: Decimal = calc_price(
        genai_usage(usage),
        model,
        provider_id=provider,
        genai_request_timestamp=datetime.now(UTC),
    ).total_price
    return total


def test_genai_prices_knows_the_models() -> None:
    for provider, model in [*MODELS, ("anthropic", "claude-sonnet-4-5")]:
        calc = calc_price(Usage(input_tokens=1, output_tokens=1), model, provider_id=provider)
        assert calc.total_price > 0, model


@pytest.mark.parametrize(("provider", "model"), MODELS, ids=[m for _, m in MODELS])
def test_cost_equals_genai_prices(provider: str, model: str) -> None:
    rates = resolve_rates(provider, model, None, deployment=f"{provider}:{model}")
    assert rates.source == "genai-prices"
    embedding = model.startswith("text-embedding")
    for i, usage in enumerate(_usages(sum(map(ord, model)), CASES_PER_MODEL, embedding=embedding)):
        mine = rates.cost(usage)
        assert type(mine) is Decimal, (i, usage)
        assert mine == _genai(provider, model, usage), (i, usage)
        assert mine >= 0


def test_cost_features_are_exercised() -> None:
    """The random usages really mix cached, cache-write and reasoning tokens."""
    for _, model in MODELS[:-1]:
        usages = _usages(sum(map(ord, model)), CASES_PER_MODEL)
        assert sum(u.cached_input_tokens > 0 for u in usages) > 100
        assert sum(u.cache_write_tokens > 0 for u in usages) > 50
        assert sum(u.reasoning_tokens > 0 for u in usages) > 100
        assert any(
            u.cached_input_tokens and u.cache_write_tokens and u.reasoning_tokens for u in usages
        )


def test_cached_and_written_tokens_change_the_price() -> None:
    """Guard against a comparison that passes because both sides ignore a token kind."""
    haiku = resolve_rates("anthropic", "claude-haiku-4-5", None, deployment="a:h")
    plain = haiku.cost(TokenUsage(input_tokens=1_000_000))
    assert plain == Decimal(1)
    assert haiku.cost(TokenUsage(input_tokens=1_000_000, cached_input_tokens=1_000_000)) == (
        Decimal("0.1")
    )
    assert haiku.cost(TokenUsage(input_tokens=1_000_000, cache_write_tokens=1_000_000)) == (
        Decimal("1.25")
    )
    mini = resolve_rates("openai", "gpt-4o-mini", None, deployment="o:m")
    # 1M reasoning tokens out of 1M output tokens: no separate rate, so the output rate.
    assert mini.cost(TokenUsage(output_tokens=10**6, reasoning_tokens=10**6)) == Decimal("0.6")


def test_exact_decimal_no_float_rounding() -> None:
    rates = resolve_rates("openai", "gpt-4o-mini", None, deployment="openai:gpt-4o-mini")
    cost = rates.cost(TokenUsage(input_tokens=1, output_tokens=1))
    assert isinstance(cost, Decimal) and not isinstance(cost, float)
    assert cost == Decimal("0.00000075")  # 0.15e-6 + 0.6e-6, exact
    for value in (rates.input_mtok, rates.output_mtok, rates.cached_input_mtok):
        assert type(value) is Decimal


# ------------------------------------------------------------------ claude-sonnet-4-5


def test_sonnet_4_5_tiered_prices_match_genai_on_both_sides_of_the_tier() -> None:
    """genai-prices prices claude-sonnet-4-5 in tiers by prompt size; without an override
    the deployment keeps genai-prices' own tiered calculation, exact above the tier too."""
    rates = resolve_rates(
        "anthropic", "claude-sonnet-4-5", None, deployment="anthropic:claude-sonnet-4-5"
    )
    assert rates.source == "genai-prices (tiered)"
    rng = random.Random(4545)
    for _ in range(200):
        inp = rng.randint(0, 400_000)
        cached = rng.randint(0, inp)
        written = rng.randint(0, inp - cached)
        output = rng.randint(0, 50_000)
        usage = TokenUsage(inp, cached, written, output, 0)
        assert rates.cost(usage) == _genai("anthropic", "claude-sonnet-4-5", usage), usage
    small = rates.cost(TokenUsage(input_tokens=100_000, output_tokens=0))
    large = rates.cost(TokenUsage(input_tokens=300_000, output_tokens=0))
    assert large / 300_000 > small / 100_000  # the upper tier really costs more per token


def test_tiered_model_partial_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="anthropic:claude-sonnet-4-5.*tiers"):
        resolve_rates(
            "anthropic",
            "claude-sonnet-4-5",
            PriceOverride(output_mtok=Decimal("15")),
            deployment="anthropic:claude-sonnet-4-5",
        )


def test_sonnet_4_5_with_base_tier_override_matches_genai_below_the_tier() -> None:
    override = PriceOverride(
        input_mtok=Decimal("3"),
        output_mtok=Decimal("15"),
        cached_input_mtok=Decimal("0.3"),
        cache_write_mtok=Decimal("3.75"),
    )
    rates = resolve_rates(
        "anthropic", "claude-sonnet-4-5", override, deployment="anthropic:claude-sonnet-4-5"
    )
    assert rates.source == "config override"
    rng = random.Random(45)
    for _ in range(300):
        inp = rng.randint(0, 199_999)  # the base tier ends at 200k input tokens
        cached = rng.randint(0, inp)
        written = rng.randint(0, inp - cached)
        output = rng.randint(0, 50_000)
        usage = TokenUsage(inp, cached, written, output, rng.randint(0, output))
        assert rates.cost(usage) == _genai("anthropic", "claude-sonnet-4-5", usage), usage


# ------------------------------------------------------------------ overrides


def test_partial_override_keeps_genai_rates_for_the_rest() -> None:
    base = resolve_rates("openai", "gpt-4o", None, deployment="openai:gpt-4o")
    rates = resolve_rates(
        "openai", "gpt-4o", PriceOverride(output_mtok=Decimal("7.5")), deployment="openai:gpt-4o"
    )
    assert rates.source == "config override"
    assert rates.output_mtok == Decimal("7.5")
    assert rates.input_mtok == base.input_mtok == Decimal("2.5")
    assert rates.cached_input_mtok == base.cached_input_mtok == Decimal("1.25")
    usage = TokenUsage(input_tokens=1000, cached_input_tokens=400, output_tokens=300)
    assert (
        rates.cost(usage)
        == (600 * Decimal("2.5") + 400 * Decimal("1.25") + 300 * Decimal("7.5")) / 10**6
    )


def test_reasoning_priced_separately() -> None:
    override = PriceOverride(reasoning_mtok=Decimal("20"))
    rates = resolve_rates("openai", "o3-mini", override, deployment="openai:o3-mini")
    assert rates.output_mtok == Decimal("4.4") and rates.reasoning_mtok == Decimal("20")
    usage = TokenUsage(input_tokens=100, output_tokens=1000, reasoning_tokens=600)
    expected = (100 * Decimal("1.1") + 400 * Decimal("4.4") + 600 * Decimal("20")) / 10**6
    assert rates.cost(usage) == expected
    # Without reasoning tokens the override changes nothing.
    base = resolve_rates("openai", "o3-mini", None, deployment="openai:o3-mini")
    plain = TokenUsage(input_tokens=100, output_tokens=1000)
    assert rates.cost(plain) == base.cost(plain) == _genai("openai", "o3-mini", plain)


def test_unknown_model_without_override_names_the_deployment() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_rates("openai", "acme-finetune-7", None, deployment="openai:acme-finetune-7")
    message = str(info.value)
    assert message.startswith("deployment openai:acme-finetune-7:")
    assert "'acme-finetune-7'" in message


def test_unknown_model_partial_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="both input_mtok and output_mtok"):
        resolve_rates(
            "openai",
            "acme-finetune-7",
            PriceOverride(input_mtok=Decimal(1)),
            deployment="openai:acme-finetune-7",
        )


def test_unknown_model_full_override() -> None:
    override = PriceOverride(
        input_mtok=Decimal("0.3"), output_mtok=Decimal("1.2"), cached_input_mtok=Decimal("0.03")
    )
    rates = resolve_rates("openai", "acme-finetune-7", override, deployment="openai:ft")
    assert rates == Rates(
        input_mtok=Decimal("0.3"),
        output_mtok=Decimal("1.2"),
        cached_input_mtok=Decimal("0.03"),
        source="config override",
    )
    usage = TokenUsage(
        input_tokens=1000,
        cached_input_tokens=100,
        cache_write_tokens=50,
        output_tokens=80,
        reasoning_tokens=30,
    )
    # cache writes fall back to the input rate, reasoning to the output rate.
    expected = (
        850 * Decimal("0.3") + 100 * Decimal("0.03") + 50 * Decimal("0.3") + 80 * Decimal("1.2")
    ) / 10**6
    cost = rates.cost(usage)
    assert type(cost) is Decimal and cost == expected


# ------------------------------------------------------------------ through the config


_CONFIG = """\
[[providers]]
name = "openai"
type = "openai"
base_url = "http://127.0.0.1:9/v1"

[[routes]]
model = "ft"
deployments = ["openai:acme-finetune-7"]
"""


def test_config_unknown_model_fails_at_load_naming_the_deployment_and_its_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(text=_CONFIG, env={})
    line = next(i for i, t in enumerate(_CONFIG.splitlines(), 1) if "acme-finetune-7" in t)
    message = str(caught.value)
    assert message.startswith(f"<string>:{line}: routes[0].deployments[0]: "), message
    assert "deployment openai:acme-finetune-7: genai-prices has no flat price" in message


def test_config_override_prices_the_route() -> None:
    text = _CONFIG + (
        '[[deployments]]\nid = "openai:acme-finetune-7"\n'
        'price = { input_mtok = "0.30", output_mtok = "1.20" }\n'
    )
    deployment = build_deployments(load_settings(text=text, env={}))["openai:acme-finetune-7"]
    assert deployment.id == "openai:acme-finetune-7"
    assert deployment.rates.input_mtok == Decimal("0.30")
    cost = deployment.rates.cost(TokenUsage(input_tokens=10, output_tokens=10))
    assert type(cost) is Decimal and cost == Decimal("0.000015")


def test_config_price_provider_is_used() -> None:
    """An OpenAI-compatible provider priced as another genai-prices provider."""
    text = _CONFIG.replace('type = "openai"', 'type = "openai"\nprice_provider = "anthropic"')
    text = text.replace("acme-finetune-7", "claude-haiku-4-5")
    deployment = build_deployments(load_settings(text=text, env={}))["openai:claude-haiku-4-5"]
    usage = TokenUsage(input_tokens=1234, cached_input_tokens=200, output_tokens=99)
    assert deployment.rates.cost(usage) == _genai("anthropic", "claude-haiku-4-5", usage)


# ------------------------------------------------------------------ properties


def _usage(parts: tuple[int, int, int, int, int]) -> TokenUsage:
    plain, cached, written, plain_out, reasoning = parts
    return TokenUsage(plain + cached + written, cached, written, plain_out + reasoning, reasoning)


def _plus(a: TokenUsage, b: TokenUsage) -> TokenUsage:
    return TokenUsage(
        a.input_tokens + b.input_tokens,
        a.cached_input_tokens + b.cached_input_tokens,
        a.cache_write_tokens + b.cache_write_tokens,
        a.output_tokens + b.output_tokens,
        a.reasoning_tokens + b.reasoning_tokens,
    )


_valid_usages = st.tuples(*[st.integers(0, 2_000_000)] * 5).map(_usage)
_PRICERS: dict[str, Pricer] = {
    model: resolve_rates(provider, model, None, deployment=f"{provider}:{model}")
    for provider, model in [*MODELS, ("anthropic", "claude-sonnet-4-5")]
}


@settings(max_examples=200, deadline=None)
@given(model=st.sampled_from(sorted(_PRICERS)), a=_valid_usages, b=_valid_usages)
def test_money_is_exact_and_grows_with_every_token(
    model: str, a: TokenUsage, b: TokenUsage
) -> None:
    pricer = _PRICERS[model]
    cost_a, cost_both = pricer.cost(a), pricer.cost(_plus(a, b))
    assert type(cost_a) is Decimal and type(cost_both) is Decimal
    assert pricer.cost(TokenUsage()) == 0
    assert 0 <= cost_a <= cost_both, (a, b)
    if isinstance(pricer, Rates):
        # Flat prices: two calls cost what their tokens would cost as one, to the last digit
        # (claude-sonnet-4-5's tiers price a long prompt higher: monotonic, not additive).
        assert cost_both == cost_a + pricer.cost(b), (a, b)
