"""Cache keys: what makes two requests one (delivery and attribution fields, key order, 1 vs
1.0) and what keeps them apart (every other field, the namespace, endpoint and wire)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from costwarden.caching.keys import IGNORED_FIELDS, cache_key, namespace

NS = "org:acme"
BASE: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "What is 2 + 2?"}],
    "temperature": 0,
    "max_tokens": 50,
}


def key(payload: dict[str, Any], ns: str = NS) -> str:
    return cache_key(ns, "chat.completions", "openai", payload)


def test_the_key_is_the_sha256_of_the_canonical_form() -> None:
    # Pinned: changing the canonical form orphans every stored entry (a deploy empties the
    # cache), so it must be a decision, not an accident.
    canonical = (
        b'["org:acme","chat.completions","openai"]\n'
        b'{"max_tokens":50,"messages":[{"content":"What is 2 + 2?","role":"user"}],'
        b'"model":"gpt-4o-mini","temperature":0}'
    )
    assert key(BASE) == hashlib.sha256(canonical).hexdigest()
    assert len(key(BASE)) == 64 and int(key(BASE), 16) >= 0


@pytest.mark.parametrize(
    "extra",
    [
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"user": "alice"},
        {"metadata": {"user_id": "u-17"}},
        {"stream": False, "user": "bob", "metadata": {}, "stream_options": None},
    ],
)
def test_delivery_and_attribution_do_not_count(extra: dict[str, Any]) -> None:
    assert key({**BASE, **extra}) == key(BASE)


def test_only_top_level_fields_are_ignored() -> None:
    nested = {**BASE, "response_format": {"type": "json_schema", "user": "x"}}
    assert key(nested) != key({**BASE, "response_format": {"type": "json_schema"}})
    assert IGNORED_FIELDS == {"stream", "stream_options", "user", "metadata"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "gpt-4o"),
        ("messages", [{"role": "user", "content": "What is 2 + 3?"}]),
        ("system", "Be terse."),
        ("tools", [{"type": "function", "function": {"name": "add"}}]),
        ("tool_choice", "none"),
        ("temperature", 0.2),
        ("top_p", 0.9),
        ("max_tokens", 51),
        ("n", 2),
        ("seed", 7),
        ("response_format", {"type": "json_object"}),
        ("stop", ["\n"]),
        ("logprobs", True),
        ("a_field_added_to_the_api_next_year", 1),
    ],
)
def test_every_other_field_counts(field: str, value: Any) -> None:
    assert key({**BASE, field: value}) != key(BASE)


def test_key_order_does_not_count() -> None:
    reordered = dict(reversed(list(BASE.items())))
    reordered["messages"] = [{"content": "What is 2 + 2?", "role": "user"}]
    assert key(reordered) == key(BASE)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"temperature": 1}, {"temperature": 1.0}),
        ({"temperature": 0}, {"temperature": 0.0}),
        ({"temperature": 0}, {"temperature": -0.0}),
        ({"max_tokens": 50}, {"max_tokens": 50.0}),
        # anywhere in the payload: a tool schema's bounds
        (
            {"tools": [{"function": {"parameters": {"minimum": 1, "enum": [2, 3]}}}]},
            {"tools": [{"function": {"parameters": {"minimum": 1.0, "enum": [2.0, 3]}}}]},
        ),
    ],
)
def test_integral_floats_are_their_integers(one: dict[str, Any], other: dict[str, Any]) -> None:
    assert key({**BASE, **one}) == key({**BASE, **other})


def test_other_numbers_stay_apart() -> None:
    assert key({**BASE, "temperature": 0.5}) != key({**BASE, "temperature": 0})
    assert key({**BASE, "temperature": 1}) != key({**BASE, "temperature": "1"})
    assert key({**BASE, "logprobs": True}) != key({**BASE, "logprobs": 1})
    # huge integral floats are not made ints past 64 bits (orjson could not write them)
    assert key({**BASE, "seed": 1e300}) != key({**BASE, "seed": 1e299})
    assert key({**BASE, "seed": 2.0**62}) == key({**BASE, "seed": 2**62})


def test_namespace_endpoint_and_wire_keep_requests_apart() -> None:
    keys = {
        cache_key(NS, "chat.completions", "openai", BASE),
        cache_key("org:other", "chat.completions", "openai", BASE),
        cache_key("shared:faq", "chat.completions", "openai", BASE),
        cache_key(NS, "messages", "anthropic", BASE),
        cache_key(NS, "chat.completions", "anthropic", BASE),
        cache_key(NS, "embeddings", "openai", BASE),
    }
    assert len(keys) == 6


def test_the_head_cannot_be_forged_by_the_namespace() -> None:
    # a namespace that contains what would follow it in a naive concatenation
    forged = cache_key('org:a","chat.completions', "openai", "x", {})
    assert forged != cache_key("org:a", "chat.completions", "openai", {})


@pytest.mark.parametrize(
    ("org", "shared", "expected"),
    [("acme", None, "org:acme"), ("acme", "faq-bot", "shared:faq-bot"), ("b", "x", "shared:x")],
)
def test_namespace(org: str, shared: str | None, expected: str) -> None:
    assert namespace(org, shared) == expected


def test_two_orgs_sharing_a_route_share_keys() -> None:
    assert key(BASE, namespace("a", "faq")) == key(BASE, namespace("b", "faq"))
    assert key(BASE, namespace("a", None)) != key(BASE, namespace("b", None))
