"""One request's scan: every detector over every piece, within a time budget; and the
redaction of what the policy says to redact.

The detectors are pure and synchronous (costwarden.security.findings.Detector); the budget
is checked between pieces and detectors, so a scan overruns it by at most one detector's
pass over one piece (bounded by the body limit). What a scan that ran out of time does is
the policy's ``on_timeout``.

Because they are pure, what they found in a piece is found again in the same text: a
:class:`ScanMemo` keeps each piece's findings, per org, so a piece seen again is not scanned
again. An agent resends its whole conversation every turn (the system prompt, the tools, every
earlier message), so most of a request's pieces are ones its org sent before. The memo holds
no text: a keyed digest of it (the key made at random per process) and the findings, which
hold spans and kinds, never text. Per org, so how long a scan took cannot tell one org what
another sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from time import perf_counter
from typing import Any

from costwarden.security.extract import Path, Piece, pieces, replace_pieces
from costwarden.security.findings import Detector, Finding


@dataclasses.dataclass(frozen=True, slots=True)
class Located:
    """A finding and the piece it was found in."""

    finding: Finding
    piece: Piece


@dataclasses.dataclass(frozen=True, slots=True)
class ScanResult:
    found: list[Located]
    timed_out: bool
    elapsed_ms: float
    scanned_chars: int


class ScanMemo:
    """The findings of the last ``entries`` pieces scanned whole, by org and text digest.

    Oldest first out when full (insertion order; a hit does not reorder, which keeps a hit to
    one digest and one dict lookup)."""

    __slots__ = ("_entries", "_key", "_found", "hits")

    def __init__(self, entries: int) -> None:
        if entries < 1:
            raise ValueError(f"a scan memo holds at least 1 entry, not {entries}")
        self._entries = entries
        self._key = secrets.token_bytes(32)
        self._found: dict[tuple[str, bytes], tuple[Finding, ...]] = {}
        self.hits = 0

    def __len__(self) -> int:
        return len(self._found)

    def digest(self, text: str) -> bytes:
        data = text.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, digest_size=16, key=self._key).digest()

    def get(self, org: str, digest: bytes) -> tuple[Finding, ...] | None:
        found = self._found.get((org, digest))
        if found is not None:
            self.hits += 1
        return found

    def put(self, org: str, digest: bytes, findings: tuple[Finding, ...]) -> None:
        memo = self._found
        if len(memo) >= self._entries:
            del memo[next(iter(memo))]
        memo[(org, digest)] = findings


class Scanner:
    """The detectors a gateway runs, in order (cheapest first is best: a timeout then
    leaves the expensive ones unrun), and the memo of what they found, if any."""

    __slots__ = ("_clock", "detectors", "memo")

    def __init__(
        self,
        detectors: Sequence[Detector],
        clock: Callable[[], float] = perf_counter,
        memo: ScanMemo | None = None,
    ) -> None:
        self.detectors = tuple(detectors)
        self._clock = clock
        self.memo = memo

    def scan(
        self, endpoint: str, payload: Mapping[str, Any], budget_ms: float, org: str = ""
    ) -> ScanResult:
        """``org``: whose request it is (the memo's entries are that org's alone)."""
        clock = self._clock
        start = clock()
        deadline = start + budget_ms / 1000
        found: list[Located] = []
        chars = 0
        memo = self.memo
        for piece in pieces(endpoint, payload):
            text = piece.text
            if not text:
                continue
            digest = b""
            if memo is not None:
                digest = memo.digest(text)
                known = memo.get(org, digest)
                if known is not None:
                    found.extend(Located(finding, piece) for finding in known)
                    chars += len(text)
                    continue
            mark = len(found)
            for detector in self.detectors:
                if clock() > deadline:
                    return ScanResult(found, True, (clock() - start) * 1000, chars)
                for finding in detector.scan(text):
                    found.append(Located(finding, piece))
            if memo is not None:  # every detector ran over it: a whole piece's findings
                memo.put(org, digest, tuple(located.finding for located in found[mark:]))
            chars += len(text)
        return ScanResult(found, False, (clock() - start) * 1000, chars)


def placeholder(finding: Finding) -> str:
    return f"[REDACTED:{finding.detector}:{finding.family}]"


def redacted(payload: Mapping[str, Any], targets: Sequence[Located]) -> dict[str, Any]:
    """``payload`` with the span of every target finding replaced by its placeholder;
    overlapping spans in one piece become one placeholder (the first's)."""
    by_piece: dict[Path, tuple[str, list[Finding]]] = {}
    for target in targets:
        piece = target.piece
        by_piece.setdefault(piece.path, (piece.text, []))[1].append(target.finding)
    replacements: dict[Path, str] = {}
    for path, (text, findings) in by_piece.items():
        findings.sort(key=lambda f: (f.start, -f.end))
        out: list[str] = []
        cursor = 0
        for finding in findings:
            start = max(0, min(finding.start, len(text)))
            end = max(start, min(finding.end, len(text)))
            if end <= cursor:  # inside a span already replaced
                continue
            if start >= cursor:
                out.append(text[cursor:start])
                out.append(placeholder(finding))
            cursor = end
        out.append(text[cursor:])
        replacements[path] = "".join(out)
    return replace_pieces(payload, replacements)
