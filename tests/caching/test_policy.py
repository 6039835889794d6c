"""Cache policy as tables: the request's cache headers as read, when an answer is safe to
replay, every rule of decide, and the age of a hit."""

from __future__ import annotations

from typing import Any

import pytest

from costwarden.caching.policy import (
    CACHE_STATUSES,
    ClientCache,
    Decision,
    age_ok,
    client_cache,
    decide,
    unsafe_to_replay,
)

NONE = ClientCache(False, False, None, None)


@pytest.mark.parametrize(
    ("cache_control", "expected"),
    [
        (None, NONE),
        (b"", NONE),
        (b"no-cache", ClientCache(no_cache=True)),
        (b"No-Store", ClientCache(no_store=True)),
        (b"NO-CACHE, no-store", ClientCache(no_store=True, no_cache=True)),
        (b"max-age=60", ClientCache(max_age=60)),
        (b"max-age=0", ClientCache(max_age=0)),
        (b'max-age="30"', ClientCache(max_age=30)),
        (b" MAX-AGE = 7 ", ClientCache(max_age=7)),
        (b"max-age=10, max-age=5", ClientCache(max_age=5)),  # several: the strictest
        (b"private, no-cache, x-foo=bar, must-revalidate", ClientCache(no_cache=True)),
        (b"no-transform,,max-age=3,", ClientCache(max_age=3)),
        # malformed max-age: ignored, the rest still read
        (b"max-age=abc, no-cache", ClientCache(no_cache=True)),
        (b"max-age=-1", NONE),
        (b"max-age=", NONE),
        (b"max-age", NONE),
        (b"max-age=1.5", NONE),
        (b"max-age=\xd9\xa3", NONE),  # a non-ASCII digit
        # past 2**31: read as 2**31 (RFC 9111), without parsing a huge number
        (b"max-age=99999999999999999999999999999", ClientCache(max_age=2**31)),
        (b"max-age=" + b"9" * 10_000, ClientCache(max_age=2**31)),
    ],
)
def test_cache_control(cache_control: bytes | None, expected: ClientCache) -> None:
    headers = {} if cache_control is None else {b"cache-control": cache_control}
    assert client_cache(headers) == expected


@pytest.mark.parametrize(
    ("value", "directive"),
    [(b"refresh", "refresh"), (b"bypass", "bypass"), (b" BYPASS ", "bypass"),
     (b"Refresh", "refresh")],
)  # fmt: skip
def test_costwarden_header(value: bytes, directive: str) -> None:
    got = client_cache({b"x-costwarden-cache": value, b"cache-control": b"max-age=9"})
    assert got == ClientCache(max_age=9, directive=directive)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [b"", b"skip", b"no-cache", b"refresh, bypass", b"x" * 500])
def test_an_unknown_costwarden_header_is_an_error(value: bytes) -> None:
    with pytest.raises(ValueError, match="x-costwarden-cache must be 'refresh' or 'bypass'") as e:
        client_cache({b"x-costwarden-cache": value})
    assert len(str(e.value)) < 120  # a long value is cut short in the message


CHAT: dict[str, Any] = {"model": "m", "messages": [], "temperature": 0}
TOOLS = "tools may have side effects"


@pytest.mark.parametrize(
    ("endpoint", "payload", "reason"),
    [
        ("chat.completions", CHAT, None),
        ("messages", {**CHAT, "temperature": 0.0}, None),
        ("chat.completions", {**CHAT, "n": 1}, None),
        ("chat.completions", {**CHAT, "n": None}, None),
        ("chat.completions", {**CHAT, "tools": []}, None),  # no tools after all
        ("chat.completions", {**CHAT, "seed": 3, "top_p": 0.5}, None),
        # absent is not 0: the providers default to 1
        ("chat.completions", {"model": "m", "messages": []}, "temperature is not 0"),
        ("messages", {**CHAT, "temperature": 0.7}, "temperature is not 0"),
        ("messages", {**CHAT, "temperature": None}, "temperature is not 0"),
        ("messages", {**CHAT, "temperature": False}, "temperature is not 0"),
        ("messages", {**CHAT, "temperature": "0"}, "temperature is not 0"),
        ("chat.completions", {**CHAT, "n": 3}, "n > 1"),
        ("chat.completions", {**CHAT, "n": 0}, "n is not 1"),
        ("chat.completions", {**CHAT, "tools": [{"type": "function"}]}, TOOLS),
        ("chat.completions", {**CHAT, "functions": [{"name": "f"}]}, TOOLS),
        # tools first: the reason that matters most when several apply
        ("messages", {"tools": [{"name": "t"}], "n": 2}, TOOLS),
        # embeddings are deterministic, whatever the payload says
        ("embeddings", {"model": "e", "input": "x"}, None),
        ("embeddings", {"model": "e", "input": "x", "temperature": 1}, None),
    ],
)  # fmt: skip
def test_unsafe_to_replay(endpoint: str, payload: dict[str, Any], reason: str | None) -> None:
    assert unsafe_to_replay(endpoint, payload) == reason


TTL = 3600
UNSAFE = "temperature is not 0"
BYPASS = ClientCache(directive="bypass")
REFRESH = ClientCache(directive="refresh")


@pytest.mark.parametrize(
    ("client", "route_ttl", "unsafe", "opt_in", "expected"),
    [
        # 5. an ordinary request: look up, store for the route's ttl
        (NONE, TTL, None, False, Decision(True, True, "miss", TTL, None, "")),
        # ... lowered to the client's max-age, which also bounds the age of a hit
        (ClientCache(max_age=60), TTL, None, False, Decision(True, True, "miss", 60, 60, "")),
        (ClientCache(max_age=7200), TTL, None, False, Decision(True, True, "miss", TTL, 7200, "")),
        # an unsafe request the route opts in to is cached like any other
        (NONE, TTL, UNSAFE, True, Decision(True, True, "miss", TTL, None, "")),
        # 1. the route stores nothing
        (NONE, 0, None, False, Decision(False, False, "bypass", 0, None,
                                        "the route stores no answers")),
        (REFRESH, -1, None, True, Decision(False, False, "bypass", 0, None,
                                           "the route stores no answers")),
        # 2. bypass / no-store: neither read nor write, whatever else is said
        (BYPASS, TTL, None, False, Decision(False, False, "bypass", 0, None,
                                            "x-costwarden-cache: bypass")),
        (ClientCache(no_store=True), TTL, None, False,
         Decision(False, False, "bypass", 0, None, "cache-control: no-store")),
        (ClientCache(no_store=True, no_cache=True, directive="refresh"), TTL, None, True,
         Decision(False, False, "bypass", 0, None, "cache-control: no-store")),
        (ClientCache(max_age=5, directive="bypass"), TTL, UNSAFE, True,
         Decision(False, False, "bypass", 0, None, "x-costwarden-cache: bypass")),
        # 3. unsafe and not opted in: bypass, with the reason -- before refresh, which stores
        (NONE, TTL, UNSAFE, False, Decision(False, False, "bypass", 0, None, UNSAFE)),
        (REFRESH, TTL, "tools may have side effects", False,
         Decision(False, False, "bypass", 0, None, "tools may have side effects")),
        (ClientCache(no_cache=True), TTL, "n > 1", False,
         Decision(False, False, "bypass", 0, None, "n > 1")),
        # 4. refresh / no-cache / max-age=0: no look-up, store for the route's ttl
        (REFRESH, TTL, None, False, Decision(False, True, "refresh", TTL, None,
                                             "x-costwarden-cache: refresh")),
        (ClientCache(no_cache=True), TTL, None, False,
         Decision(False, True, "refresh", TTL, None, "cache-control: no-cache")),
        (ClientCache(max_age=0), TTL, None, False,
         Decision(False, True, "refresh", TTL, None, "cache-control: max-age=0")),
        (ClientCache(no_cache=True, max_age=30), TTL, UNSAFE, True,
         Decision(False, True, "refresh", TTL, None, "cache-control: no-cache")),
    ],
)  # fmt: skip
def test_decide(
    client: ClientCache, route_ttl: int, unsafe: str | None, opt_in: bool, expected: Decision
) -> None:
    decision = decide(client, route_ttl, unsafe, opt_in)
    assert decision == expected
    assert decision.status in CACHE_STATUSES and decision.status != "hit"
    # nothing is stored for no time, and what is not stored has no ttl
    assert (decision.ttl > 0) == decision.store


def test_decide_from_headers() -> None:
    """The two steps together, as the gateway runs them."""
    headers = {b"cache-control": b"max-age=0"}
    assert decide(client_cache(headers), TTL, None, False).status == "refresh"
    headers = {b"cache-control": b"no-store", b"x-costwarden-cache": b"refresh"}
    assert decide(client_cache(headers), TTL, None, False).status == "bypass"
    payload = {"model": "m", "messages": [], "temperature": 1}
    unsafe = unsafe_to_replay("chat.completions", payload)
    assert decide(client_cache({}), TTL, unsafe, False).reason == "temperature is not 0"


@pytest.mark.parametrize(
    ("stored_at", "now", "max_age", "ok"),
    [
        (1000.0, 5000.0, None, True),  # no bound: any age
        (1000.0, 1060.0, 60, True),  # exactly max-age old
        (1000.0, 1060.001, 60, False),
        (1000.0, 1000.0, 0, True),
        (1000.0, 1000.5, 0, False),
        (2000.0, 1000.0, 10, True),  # stored "in the future" by a clock ahead of ours
    ],
)
def test_age_ok(stored_at: float, now: float, max_age: int | None, ok: bool) -> None:
    assert age_ok(stored_at, now, max_age) is ok
