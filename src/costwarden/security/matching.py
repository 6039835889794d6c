"""Which engine matches what on the request path: Python's ``re`` for short texts, google-re2
for long ones.

google-re2 releases the GIL on every call. Alone that costs nothing; in the gateway, beside
the ledger writer's and the pollers' threads, the caller often waits to get the GIL back.
Measured inside the gateway under load (bench/run.py, 16 connections, the one-word prompt):
the PII detector's one RE2 pass took 14.6 us on average (p99 133 us) where a loop takes
1 us, and the injection detector's three RE2 set passes added about 30 us. Per byte RE2 is
still much faster than ``re`` (the secrets keywords over 1 KB: 2 us against 21 us), so the
choice is by length: a text shorter than :data:`SMALL_TEXT` is matched in Python (``re``,
``str`` methods, a superset check that rules RE2 out), a longer one by RE2. The secrets
rules that a short text's keywords let through still run on RE2, which keeps them linear
on an adversarial prompt where ``re`` could backtrack.

Both paths give the same answers: tests/security/test_matching.py checks that on the corpus
and on generated text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import re2  # type: ignore[import-untyped]

SMALL_TEXT = 1024  # characters: about where Python's cost reaches RE2's with its hand-over
# A short text that holds keywords at more places than this (a paste of tokens) is handed
# to RE2's one pass instead of being walked in Python.
_MAX_PLACES = 256


def latin1_options(*, case_sensitive: bool = True) -> Any:
    """RE2 options for matching bytes read as Latin-1 (one byte a character)."""
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.log_errors = False  # a bad user rule is a ValueError, not a line on stderr
    options.max_mem = 64 << 20  # room for the DFAs' state caches
    options.case_sensitive = case_sensitive
    return options


class KeywordSet:
    """Which of a set of literal keywords (lower-case bytes) occur in a text, case-blind.

    Long texts: one RE2 ``Set`` pass. Short texts: the keywords as one ``re`` trie
    (``a(?:b|c)``: ``re`` tries a plain alternation of 80 words word by word at every
    place, 5x slower on 2 KB), searched from every place a keyword starts. At a place the
    trie takes the longest keyword there, and every other keyword starting there is a
    prefix of it, so each match stands for the keywords it begins with."""

    __slots__ = ("_keywords", "_pattern", "_prefixes", "_set", "_small")

    def __init__(self, keywords: Sequence[bytes], *, small: int = SMALL_TEXT) -> None:
        if not keywords or any(k != k.lower() or not k for k in keywords):
            raise ValueError("keywords must be non-empty lower-case literals")
        self._keywords = tuple(keywords)
        self._small = small
        index = {k: i for i, k in enumerate(self._keywords)}
        self._prefixes = {
            k: frozenset(index[p] for p in self._keywords if k.startswith(p))
            for k in self._keywords
        }
        self._pattern = re.compile(_trie(self._keywords))
        self._set = re2.Set.SearchSet(latin1_options(case_sensitive=False))
        for keyword in self._keywords:
            self._set.Add(re2.escape(keyword))
        self._set.Compile()

    def __call__(self, data: bytes) -> frozenset[int]:
        """The indexes (in the order given) of the keywords ``data`` holds."""
        if len(data) < self._small:
            lowered = data.lower()  # ASCII only: the same folding RE2 does for these keywords
            search = self._pattern.search
            found: set[int] = set()
            match = search(lowered)
            places = 0
            while match is not None:
                places += 1
                if places > _MAX_PLACES:
                    break
                found.update(self._prefixes[match.group()])
                match = search(lowered, match.start() + 1)
            else:
                return frozenset(found)
        return frozenset(self._set.Match(data) or ())


def _trie(words: Sequence[bytes]) -> bytes:
    """A regex matching any of ``words`` (distinct, non-empty) as a trie, longest first:
    one branch per first byte, so ``re`` rules a place out in one step."""
    heads: dict[bytes, list[bytes]] = {}
    for word in words:
        heads.setdefault(word[:1], []).append(word[1:])
    branches = []
    for head, tails in sorted(heads.items()):
        rest = [tail for tail in tails if tail]
        if not rest:
            tail = b""
        elif len(rest) == 1:
            tail = re.escape(rest[0])
        else:
            tail = b"(?:" + _trie(rest) + b")"
        if rest and len(rest) < len(tails):  # a word ends here; a longer one goes on
            tail = (tail if tail.startswith(b"(?:") else b"(?:" + tail + b")") + b"?"
        branches.append(re.escape(head) + tail)
    return b"|".join(branches)
