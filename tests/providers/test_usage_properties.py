"""Usage as upstreams report it, read into TokenUsage: whatever the JSON, the counts are
whole, never negative, and their parts fit in their wholes, so no call costs less than
nothing (a negative cost would give budget back) and no answer fails on its usage."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from costwarden.pricing import Rates, TokenUsage
from costwarden.providers.anthropic import usage_from_anthropic
from costwarden.providers.base import token_count
from costwarden.providers.openai import usage_from_openai

COUNT_KEYS = [
    "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
    "cache_read_input_tokens", "cache_creation_input_tokens", "cached_tokens",
    "cache_write_tokens", "reasoning_tokens",
]  # fmt: skip
_counts = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
    | st.lists(st.integers(), max_size=2)
)
_details = st.dictionaries(st.sampled_from(COUNT_KEYS), _counts, max_size=3) | _counts
usages = (
    st.dictionaries(
        st.sampled_from([*COUNT_KEYS, "prompt_tokens_details", "completion_tokens_details"]),
        _counts | _details,
        max_size=6,
    )
    | _counts
)
# Cached and cache-write tokens cheaper and dearer than plain input, as real prices are.
RATES = Rates(
    input_mtok=Decimal("3"), output_mtok=Decimal("15"), cached_input_mtok=Decimal("0.3"),
    cache_write_mtok=Decimal("3.75"), reasoning_mtok=Decimal("15"),
)  # fmt: skip


def _check(usage: TokenUsage) -> None:
    counts = [usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens,
              usage.output_tokens, usage.reasoning_tokens]  # fmt: skip
    assert all(type(c) is int and c >= 0 for c in counts), usage
    assert usage.cached_input_tokens + usage.cache_write_tokens <= usage.input_tokens, usage
    assert usage.reasoning_tokens <= usage.output_tokens, usage
    cost = RATES.cost(usage)
    assert type(cost) is Decimal and cost >= 0, (usage, cost)


@settings(max_examples=200, deadline=None)
@given(usage=usages)
@example(usage={"prompt_tokens": "12"})
@example(usage={"prompt_tokens": -5, "completion_tokens": -7})
@example(usage={"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 1000}})
@example(usage={"prompt_tokens_details": [1], "completion_tokens_details": "x"})
@example(usage={"prompt_tokens": float("inf"), "completion_tokens": float("nan")})
def test_openai_usage_of_any_json_is_billable(usage: Any) -> None:
    _check(usage_from_openai(usage))


@settings(max_examples=200, deadline=None)
@given(usage=usages)
@example(usage={"input_tokens": -100, "output_tokens": 3})
@example(usage={"input_tokens": {}, "cache_read_input_tokens": "9"})
def test_anthropic_usage_of_any_json_is_billable(usage: Any) -> None:
    _check(usage_from_anthropic(usage))


@settings(max_examples=200, deadline=None)
@given(count=st.integers(0, 10**12))
def test_well_formed_counts_are_read_as_they_are(count: int) -> None:
    # The guard must not cost a real count anything.
    assert token_count(count) == count
    assert usage_from_openai({"prompt_tokens": count, "completion_tokens": count}) == TokenUsage(
        input_tokens=count, output_tokens=count
    )
    assert usage_from_anthropic(
        {"input_tokens": count, "cache_read_input_tokens": 1, "output_tokens": count}
    ) == TokenUsage(input_tokens=count + 1, cached_input_tokens=1, output_tokens=count)
