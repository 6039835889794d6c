"""Keeping credentials out of what an upstream sends back to the client.

An upstream may quote the credential it was sent ("Incorrect API key provided: sk-..."), in
an error body or anywhere else. Every byte relayed from an upstream -- bodies of every status,
streamed events, the headers that are passed on -- goes through :class:`Scrubber`, which
replaces each configured provider credential (as sent, and as it reads inside a JSON string)
and anything shaped like a costwarden virtual key with ``[redacted]``.

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

import orjson

# Credentials shorter than this are not secrets worth rewriting every response for: a test
# key such as "x" would otherwise corrupt every body that contains the letter.
_MIN_SECRET = 8
_VIRTUAL_KEY = re.compile(rb"cw-[A-Za-z0-9_\-]{20,}")
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
        if data.find(b"cw-") >= 0:
            data = _VIRTUAL_KEY.sub(b"cw-" + _REDACTED, data)
        return data

    def text(self, text: str) -> str:
        return self(text.encode()).decode("utf-8", "replace")
