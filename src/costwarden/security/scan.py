"""One request's scan: every detector over every piece, within a time budget; and the
redaction of what the policy says to redact.

The detectors are pure and synchronous (costwarden.security.findings.Detector); the budget
is checked between pieces and detectors, so a scan overruns it by at most one detector's
pass over one piece (bounded by the body limit). What a scan that ran out of time does is
the policy's ``on_timeout``.
"""

from __future__ import annotations

import dataclasses
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


class Scanner:
    """The detectors a gateway runs, in order (cheapest first is best: a timeout then
    leaves the expensive ones unrun)."""

    __slots__ = ("_clock", "detectors")

    def __init__(
        self, detectors: Sequence[Detector], clock: Callable[[], float] = perf_counter
    ) -> None:
        self.detectors = tuple(detectors)
        self._clock = clock

    def scan(self, endpoint: str, payload: Mapping[str, Any], budget_ms: float) -> ScanResult:
        clock = self._clock
        start = clock()
        deadline = start + budget_ms / 1000
        found: list[Located] = []
        chars = 0
        for piece in pieces(endpoint, payload):
            text = piece.text
            if not text:
                continue
            for detector in self.detectors:
                if clock() > deadline:
                    return ScanResult(found, True, (clock() - start) * 1000, chars)
                for finding in detector.scan(text):
                    found.append(Located(finding, piece))
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
