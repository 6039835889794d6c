"""Cache keys: which requests are the same request, as far as their answer goes.

A key is the hex SHA-256 of a canonical form of the request: its namespace, endpoint, wire
format, and the payload with sorted keys and compact separators (orjson ``OPT_SORT_KEYS``).
Two requests share a key exactly when they would get the same answer from a deterministic
model, so:

- fields that change how the answer is delivered or attributed, not what it says, are left
  out (:data:`IGNORED_FIELDS`): a streamed and a unary request share their answer (a stream
  hit is the stored answer replayed as a stream), and two users of one org asking the same
  thing share it too;
- everything else counts -- model, messages, system, tools, tool_choice, temperature, top_p,
  max_tokens, n, seed, response_format, stop, and any field added to the APIs later (a field
  we do not know might change the answer, so it must not be ignored by default);
- numbers are compared by value: a float with an integral value is hashed as the integer
  (``temperature: 1`` and ``1.0`` are one request), anywhere in the payload;
- the namespace is hashed too, so an org's answers are never served to another org (unless a
  route shares them: :func:`namespace`), and the endpoint and wire, so an OpenAI body is
  never served to an Anthropic client.

The payload is what ``orjson.loads`` gave (string keys, integers within 64 bits).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

import orjson

Endpoint = Literal["chat.completions", "messages", "embeddings"]
Wire = Literal["openai", "anthropic"]

# Top-level fields that do not change what the answer says: how it is delivered (stream,
# stream_options) and whom it is attributed to (user, metadata).
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata"})

# Integral floats within this bound become ints; past it a float is kept as it is (orjson
# serialises integers of 64 bits at most, and such floats are not request parameters).
_INT_BOUND = 2.0**63


def cache_key(namespace: str, endpoint: str, wire: str, payload: Mapping[str, Any]) -> str:
    """The hex SHA-256 of the request's canonical form (see the module docstring)."""
    fields = {k: _normal(v) for k, v in payload.items() if k not in IGNORED_FIELDS}
    # The head is a JSON array, so where it ends is unambiguous: no namespace, endpoint or
    # wire can be chosen to make two different heads and payloads hash the same bytes.
    head = orjson.dumps([namespace, endpoint, wire])
    body = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(head + b"\n" + body).hexdigest()


def namespace(org_id: str, shared: str | None) -> str:
    """The namespace of an org's cache entries: its own (``org:<id>``) by default, or a
    route's shared one (``shared:<name>``) when the route shares answers across orgs."""
    return "org:" + org_id if shared is None else "shared:" + shared


def _normal(value: Any) -> Any:
    """``value`` with every float of integral value as an int, recursively."""
    if isinstance(value, float):
        if value.is_integer() and -_INT_BOUND <= value < _INT_BOUND:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    return value
