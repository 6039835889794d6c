"""Prices: from genai-prices (offline data shipped with the package), overridable per deployment.

Rates are resolved once per deployment at startup, so the request path does a handful of
Decimal multiplications instead of a price lookup (models priced in tiers by prompt size keep
genai-prices' own calculation, see ``TieredRates``). The arithmetic follows genai-prices'
semantics exactly: ``input_tokens`` counts every prompt token, cached reads and cache writes
included, and ``output_tokens`` counts every completion token, reasoning included; the cached
and reasoning parts are priced at their own rate (falling back to the plain rate). Tests hold
the result equal to ``genai_prices.calc_price`` for the same usage.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from costwarden.core.errors import ConfigError

_MILLION = Decimal(1_000_000)


@dataclasses.dataclass(slots=True)
class TokenUsage:
    """Token counts of one call, normalised across wire formats."""

    input_tokens: int = 0  # every prompt token, cached and cache-written ones included
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0  # every completion token, reasoning included
    reasoning_tokens: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class PriceOverride:
    """USD per million tokens; ``None`` means "as genai-prices says" (or the input/output rate).

    A deployment's ``price`` table in the config file parses straight into this.
    """

    input_mtok: Decimal | None = None
    cached_input_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None
    output_mtok: Decimal | None = None
    reasoning_mtok: Decimal | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens for one deployment."""

    input_mtok: Decimal
    output_mtok: Decimal
    cached_input_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None
    reasoning_mtok: Decimal | None = None
    source: str = "genai-prices"

    def cost(self, usage: TokenUsage) -> Decimal:
        cached = usage.cached_input_tokens
        written = usage.cache_write_tokens
        plain_in = usage.input_tokens - cached - written
        reasoning = usage.reasoning_tokens
        plain_out = usage.output_tokens - reasoning
        total = plain_in * self.input_mtok + plain_out * self.output_mtok
        if cached:
            total += cached * (
                self.input_mtok if self.cached_input_mtok is None else self.cached_input_mtok
            )
        if written:
            total += written * (
                self.input_mtok if self.cache_write_mtok is None else self.cache_write_mtok
            )
        if reasoning:
            total += reasoning * (
                self.output_mtok if self.reasoning_mtok is None else self.reasoning_mtok
            )
        return total / _MILLION

    def bound_rates(self) -> tuple[Decimal, Decimal]:
        """(USD per prompt token, USD per output token), each the dearest kind there is."""
        ins = [self.input_mtok, self.cached_input_mtok, self.cache_write_mtok]
        outs = [self.output_mtok, self.reasoning_mtok]
        return (
            max(r for r in ins if r is not None) / _MILLION,
            max(r for r in outs if r is not None) / _MILLION,
        )


class Pricer(Protocol):
    """Anything that turns usage into USD: flat ``Rates`` or genai-prices' tiered prices."""

    @property
    def source(self) -> str: ...

    def cost(self, usage: TokenUsage) -> Decimal: ...

    def bound_rates(self) -> tuple[Decimal, Decimal]: ...


# Prompt size that reaches every price tier genai-prices knows (they start at 128k-272k).
_TOP_TIER_TOKENS = 10_000_000


class TieredRates:
    """Prices that change with prompt size (e.g. above 200k tokens): genai-prices computes them.

    Slower than flat ``Rates`` (a genai-prices calculation per request) but exact for every tier.
    """

    source = "genai-prices (tiered)"

    def __init__(self, model_price: Any) -> None:
        self._model_price = model_price

    def cost(self, usage: TokenUsage) -> Decimal:
        total: Decimal = self._model_price.calc_price(genai_usage(usage))["total_price"]
        return total

    def bound_rates(self) -> tuple[Decimal, Decimal]:
        """The dearest tier's rates, probed through genai-prices itself."""
        n = _TOP_TIER_TOKENS
        per_in = max(
            self.cost(TokenUsage(input_tokens=n)),
            self.cost(TokenUsage(input_tokens=n, cache_write_tokens=n)),
            self.cost(TokenUsage(input_tokens=n, cached_input_tokens=n)),
        ) / n
        base = self.cost(TokenUsage(input_tokens=n))
        per_out = max(
            self.cost(TokenUsage(input_tokens=n, output_tokens=n)) - base,
            self.cost(TokenUsage(input_tokens=n, output_tokens=n, reasoning_tokens=n)) - base,
        ) / n
        return per_in, per_out


def genai_usage(usage: TokenUsage) -> Any:
    """The same usage as a ``genai_prices.Usage`` (for tests and for tiered prices)."""
    from genai_prices import Usage

    kwargs: dict[str, int] = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
    }
    if usage.cached_input_tokens:
        kwargs["cache_read_tokens"] = usage.cached_input_tokens
    if usage.cache_write_tokens:
        kwargs["cache_write_tokens"] = usage.cache_write_tokens
    if usage.reasoning_tokens:
        kwargs["output_reasoning_tokens"] = usage.reasoning_tokens
    return Usage(**kwargs)


def resolve_rates(
    price_provider: str, model: str, override: PriceOverride | None, *, deployment: str
) -> Pricer:
    """Rates for a deployment: genai-prices' current price with the override laid over it.

    A model genai-prices does not know, or prices in tiers, needs an override giving at least
    input and output rates; anything else is a ConfigError, because billing a model at an
    unknown price would silently get the money wrong.
    """
    base = _genai_rates(price_provider, model)
    if isinstance(base, TieredRates):
        if override is None:
            return base
        if override.input_mtok is None or override.output_mtok is None:
            raise ConfigError(
                f"deployment {deployment}: genai-prices prices {model!r} in tiers; a price "
                "override replaces them all, so it must give at least input_mtok and output_mtok"
            )
        base = None
    if override is None:
        if base is None:
            raise ConfigError(
                f"deployment {deployment}: genai-prices has no flat price for {model!r} at "
                f'provider {price_provider!r}; add [[deployments]] id = "{deployment}" with '
                'price = { input_mtok = "...", output_mtok = "..." }'
            )
        return base
    if base is None:
        if override.input_mtok is None or override.output_mtok is None:
            raise ConfigError(
                f"deployment {deployment}: genai-prices has no price for {model!r}; the price "
                "override must give both input_mtok and output_mtok"
            )
        base = Rates(input_mtok=override.input_mtok, output_mtok=override.output_mtok)
    return Rates(
        input_mtok=_pick(override.input_mtok, base.input_mtok),
        output_mtok=_pick(override.output_mtok, base.output_mtok),
        cached_input_mtok=_pick(override.cached_input_mtok, base.cached_input_mtok),
        cache_write_mtok=_pick(override.cache_write_mtok, base.cache_write_mtok),
        reasoning_mtok=_pick(override.reasoning_mtok, base.reasoning_mtok),
        source="config override",
    )


def _pick(override: Decimal | None, base: Decimal | None) -> Any:
    return base if override is None else override


def _genai_rates(price_provider: str, model: str) -> Rates | TieredRates | None:
    from genai_prices import Usage, calc_price

    try:
        calc = calc_price(
            Usage(input_tokens=0, output_tokens=0),
            model,
            provider_id=price_provider,
            genai_request_timestamp=datetime.now(UTC),
        )
    except (LookupError, ValueError):
        return None
    mp = calc.model_price
    values = {
        name: getattr(mp, name, None)
        for name in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
    }
    if not all(v is None or isinstance(v, Decimal) for v in values.values()):
        return TieredRates(mp)
    if values["input_mtok"] is None:
        return None
    return Rates(
        input_mtok=values["input_mtok"],
        # Embedding models have no output price: they produce no output tokens.
        output_mtok=values["output_mtok"] if values["output_mtok"] is not None else Decimal(0),
        cached_input_mtok=values["cache_read_mtok"],
        cache_write_mtok=values["cache_write_mtok"],
    )


def context_window(price_provider: str, model: str) -> int | None:
    """genai-prices' context window of ``model`` (tokens), or None when it does not say."""
    from genai_prices import Usage, calc_price

    try:
        calc = calc_price(
            Usage(input_tokens=0, output_tokens=0),
            model,
            provider_id=price_provider,
            genai_request_timestamp=datetime.now(UTC),
        )
    except (LookupError, ValueError):
        return None
    window = getattr(calc.model, "context_window", None)
    return window if isinstance(window, int) and window > 0 else None
