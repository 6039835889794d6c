"""What a detector reports, and the interface a detector (built in or a user's) implements.

A :class:`Finding` never holds the text it found: only where it is (for redaction), what it
is and how sure the detector is. The span's hash is made by the caller with a key of its own
(:func:`span_hash`), so a ledger row or an event can say "the same secret again" without a
reader being able to test guesses of a phone number or a short token against it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Literal, Protocol, runtime_checkable

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """One thing a detector found in one piece of text.

    ``start``/``end`` are offsets into the text the detector was given (the piece as the
    client sent it); a finding made on a normalised or decoded form that cannot be mapped
    back covers the whole piece (0, len(text)).
    """

    detector: str  # "injection" | "secrets" | "pii" | "tools" | a user's detector name
    family: str  # e.g. "instruction_override", "aws_access_key", "email"
    severity: Severity
    confidence: float  # 0..1: how sure the detector is that this is what it says
    start: int
    end: int


@runtime_checkable
class Detector(Protocol):
    """A detector: a name (its findings' ``detector``) and a pure scan of one text piece.

    ``scan`` must not do I/O and should return quickly: the scan stage gives every request a
    time budget and checks it between pieces and detectors.
    """

    name: str

    def scan(self, text: str) -> list[Finding]: ...


def span_hash(key: bytes, text: str, finding: Finding) -> str:
    """A keyed hash of the span ``finding`` covers in ``text``: 16 hex digits of
    BLAKE2b-MAC, so equal spans hash equal without the hash revealing the span."""
    span = text[finding.start : finding.end].encode("utf-8", "surrogatepass")
    return hashlib.blake2b(span, key=key[:64], digest_size=8).hexdigest()
