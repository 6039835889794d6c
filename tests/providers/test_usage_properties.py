"""Usage as upstreams report it, read into TokenUsage: whatever the JSON, the counts are
whole, never negative, and their parts fit in their wholes, so no call costs less than
nothing (a negative cost would give budget back) and no answer fails on its usage."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from costwarden.pricing import Rates, TokenUsage
from costwarden.providers.anthropic import AnthropicStreamMeter, usage_from_anthropic
from costwarden.providers.base import token_count
from costwarden.providers.openai import OpenAIStreamMeter, usage_from_openai

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
    | st.lists(st.integers(-(10**6), 10**6), max_size=2)
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


_event_data = (
    st.builds(
        lambda usage, extra: orjson.dumps({"type": "message_delta", "usage": usage, **extra}),
        usages,
        st.dictionaries(st.sampled_from(["choices", "message", "delta"]), usages, max_size=2),
    )
    | st.builds(
        lambda message: orjson.dumps({"type": "message_start", "message": message}),
        st.fixed_dictionaries({}, optional={"usage": usages}) | _counts,
    )
    | st.sampled_from([b'{"usage":{', b'{"usage": {"prompt_tokens": 1}', b"[DONE]", b"[]"])
    | st.binary(max_size=30).map(lambda b: b.replace(b"\n", b" "))
)
_events = st.lists(
    st.tuples(st.sampled_from([b"message_start", b"message_delta", b"content_block_delta"]),
              _event_data),
    max_size=5,
).map(lambda events: [b"event: " + kind + b"\ndata: " + data + b"\n\n" for kind, data in events])


@settings(max_examples=200, deadline=None)
@given(events=_events)
@example(events=[b'data: {"usage":{"prompt_tokens": 1}, broken\n\n'])
@example(events=[b'data: ["usage":{"a"}]\n\n', b'data: {"usage": 5}\n\n'])
@example(events=[b'event: message_start\ndata: {"message": []}\n\n'])
@example(events=[b'event: message_start\ndata: {"message": {"usage": [1]}}\n\n',
                 b'event: message_delta\ndata: {"usage": {"output_tokens": 2}}\n\n'])
@example(events=[b"event: message_delta\ndata: not json\n\n"])
def test_stream_meters_read_any_events_and_bill_nothing_negative(events: list[bytes]) -> None:
    """What a broken upstream streams is relayed and metered without an exception (one
    would end the client's stream with an internal error) and never bills below zero."""
    for meter in (OpenAIStreamMeter(client_wants_usage=True), AnthropicStreamMeter()):
        for event in events:
            meter.feed(event)
        for usage in (meter.usage, meter.estimated_usage(10)):
            if usage is not None:
                _check(usage)


def test_a_usage_that_is_not_an_object_leaves_the_estimate() -> None:
    # Billing zero for it would let a broken upstream serve for free; the estimate stands.
    meter = OpenAIStreamMeter(client_wants_usage=False)
    meter.feed(b'data: {"choices": [], "usage": 5, "x": {"usage":{}}}\n\n')
    assert meter.usage is None
    assert meter.estimated_usage(7) == TokenUsage(input_tokens=7)
