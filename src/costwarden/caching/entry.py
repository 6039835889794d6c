"""A stored answer, and its bytes in a store.

The entry keeps the whole unary response body as the client got it (its wire format: an
OpenAI ``chat.completion`` or embeddings list, an Anthropic ``message``), and what the
original call was billed, so that a hit can say what it saved and the ledger can record it.

Format, version 1: one line of JSON (the header: the version, the figures, the cost as a
decimal string, the body's length), a newline, then the body's bytes as they are::

    {"v":1,"p":"openai","m":"gpt-4o-mini-2024-07-18","i":12,...,"usd":"0.0000123","n":456}\\n<body>

JSON never holds a raw newline (orjson escapes them), so the first newline ends the header;
the body is not re-encoded (a hit costs one small ``orjson.loads``, not a copy of the body
through base64). The length makes a truncated entry an error rather than a cut-short answer.

Entries are read back from a store another process (or another version of costwarden) may
have written, or that lost bytes: :func:`decode` checks everything and raises
:class:`CacheEntryError`, and only that, for whatever it cannot read -- the caller then
treats the entry as a miss.
"""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal, InvalidOperation
from typing import Any, TypeGuard

import orjson

VERSION = 1

# A cost past this cannot be one call's (the ledger's NUMERIC(24, 12) stops at 10**12).
_MAX_USD = Decimal(10) ** 12
_MAX_USD_CHARS = 64
_TOKEN_FIELDS = ("i", "ci", "cw", "o", "r")


class CacheEntryError(ValueError):
    """Stored bytes that are not an entry this version can read."""


@dataclasses.dataclass(frozen=True, slots=True)
class CachedAnswer:
    body: bytes  # the whole unary response JSON, in the client's wire format
    provider: str
    served_model: str
    input_tokens: int  # all prompt tokens, cached ones included (as the ledger counts)
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int  # reasoning included
    reasoning_tokens: int
    cost_usd: Decimal  # what the original call cost: what each hit saves
    stored_at: float  # epoch seconds


def encode(answer: CachedAnswer) -> bytes:
    header = orjson.dumps(
        {
            "v": VERSION,
            "p": answer.provider,
            "m": answer.served_model,
            "i": answer.input_tokens,
            "ci": answer.cached_input_tokens,
            "cw": answer.cache_write_tokens,
            "o": answer.output_tokens,
            "r": answer.reasoning_tokens,
            "usd": str(answer.cost_usd),
            "t": answer.stored_at,
            "n": len(answer.body),
        }
    )
    return header + b"\n" + answer.body


def decode(raw: bytes) -> CachedAnswer:
    """The entry in ``raw``; :class:`CacheEntryError` when it is not one."""
    cut = raw.find(b"\n")
    if cut < 0:
        raise CacheEntryError("no header: the entry is truncated or not a cache entry")
    try:
        header = orjson.loads(raw[:cut])
    except orjson.JSONDecodeError as exc:
        raise CacheEntryError(f"the header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise CacheEntryError("the header is not a JSON object")
    version = header.get("v")
    if version != VERSION or not _is_int(version):
        raise CacheEntryError(f"entry version {version!r}, this version reads {VERSION}")
    body = raw[cut + 1 :]
    if header.get("n") != len(body) or not _is_int(header.get("n")):
        raise CacheEntryError(
            f"the body has {len(body)} bytes, the header says {header.get('n')!r}"
        )
    tokens = [_count(header, name) for name in _TOKEN_FIELDS]
    return CachedAnswer(
        body=bytes(body),
        provider=_text(header, "p"),
        served_model=_text(header, "m"),
        input_tokens=tokens[0],
        cached_input_tokens=tokens[1],
        cache_write_tokens=tokens[2],
        output_tokens=tokens[3],
        reasoning_tokens=tokens[4],
        cost_usd=_usd(header.get("usd")),
        stored_at=_epoch(header.get("t")),
    )


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(header: dict[str, Any], name: str) -> int:
    value = header.get(name)
    if not _is_int(value) or value < 0:
        raise CacheEntryError(f"{name!r} must be a count of tokens, not {value!r}")
    return value


def _text(header: dict[str, Any], name: str) -> str:
    value = header.get(name)
    if not isinstance(value, str):
        raise CacheEntryError(f"{name!r} must be a string")
    return value


def _usd(value: Any) -> Decimal:
    if not isinstance(value, str) or len(value) > _MAX_USD_CHARS:
        raise CacheEntryError("the cost must be a decimal string")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise CacheEntryError(f"the cost {value!r} is not a decimal") from None
    if not amount.is_finite() or not 0 <= amount < _MAX_USD:
        raise CacheEntryError(f"the cost {value!r} is not an amount of USD")
    return amount


def _epoch(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise CacheEntryError("the time stored must be a number")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise CacheEntryError("the time stored must be finite")
    return seconds
