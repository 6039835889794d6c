"""Keeping credentials out of what an upstream sends back to the client.

An upstream may quote the credential it was sent ("Incorrect API key provided: sk-..."), in
an error body or anywhere else. Every byte relayed from an upstream -- bodies of every status,
streamed events, the headers that are passed on -- goes through a :class:`Scrubber`, which
replaces provider credentials (as sent, and as they read inside a JSON string) and anything
shaped like a costwarden virtual key with ``[redacted]``.

Which credentials: every one the gateway sends to that upstream's origin (scheme, host and
port) -- the provider's own, and those of any other provider configured at the same origin,
since that server has seen them all. A credential sent only elsewhere is not one this server
can know, and searching every response for every credential would cost a search per
configured provider on every request (:func:`per_upstream`).

Cost: one substring search per credential over the relayed bytes, plus one for ``cw-``
(about 0.25 and 0.6 µs over a 600-byte body); the replacements only run when something was
found.

Limit: events are scrubbed one at a time, so an upstream that deliberately spells a
credential across several stream events is not caught. An upstream sent a credential can
always leak it some way; what this stops is the common, accidental echo.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

import orjson

from costwarden.providers.base import ProviderAdapter

# Credentials shorter than this are not secrets worth rewriting every response for: a test
# key such as "x" would otherwise corrupt every body that contains the letter.
_MIN_SECRET = 8
_VIRTUAL_KEY = re.compile(rb"cw-[A-Za-z0-9_\-]{20,}")  # searched faster than find(b"cw-")
_REDACTED = b"[redacted]"


class Scrubber:
    __slots__ = ("_patterns",)

    def __init__(self, secrets: Iterable[str]) -> None:
        patterns: set[bytes] = set()
        for secret in secrets:
            if len(secret) < _MIN_SECRET:
                continue
            patterns.add(secret.encode())
            patterns.add(orjson.dumps(secret)[1:-1])  # as it reads inside a JSON string
        # Longest first: a credential that contains another is replaced whole.
        self._patterns = sorted(patterns, key=len, reverse=True)

    def __call__(self, data: bytes) -> bytes:
        # find(), not ``in``: ``pattern in data`` first tries the pattern as an integer (a
        # byte value) and formats and drops a TypeError, ~1,900 instructions a test.
        for pattern in self._patterns:
            if data.find(pattern) >= 0:
                data = data.replace(pattern, _REDACTED)
        if _VIRTUAL_KEY.search(data) is not None:
            data = _VIRTUAL_KEY.sub(b"cw-" + _REDACTED, data)
        return data


def per_upstream(adapters: Iterable[ProviderAdapter]) -> dict[str, Scrubber]:
    """Provider name -> the Scrubber for what its upstream sends back: the credentials of
    every provider at the same origin."""
    by_origin: dict[tuple[str, str, int], set[str]] = {}
    found = list(adapters)
    for adapter in found:
        by_origin.setdefault(_origin(adapter.base_url), set()).update(adapter.secrets())
    return {a.name: Scrubber(sorted(by_origin[_origin(a.base_url)])) for a in found}


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)
