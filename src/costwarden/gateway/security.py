"""The prompt scan stage: every request's text through the detectors, then block, redact or
flag by the org's (and key's) policy, before any limit is checked or upstream called.

The detectors and the policy are costwarden.security's pure functions; this stage adds what
needs the request: the policy layers in memory (:class:`PolicyBook`, refreshed off the
request path), the tool pins, the events, the ledger fields and the response header
``x-costwarden-security-status`` (clean, flagged, redacted, unscanned; a blocked request's
403 carries ``blocked``). What is recorded of a finding -- in the ledger row's ``security``
field and the ``security_finding`` event -- is its detector, family, severity, confidence,
where in the request it was and a keyed hash of the span: never the text.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Any

import orjson

from costwarden.core.errors import SecurityPolicyViolation
from costwarden.core.event_kinds import SecurityFinding
from costwarden.core.events import EventBus
from costwarden.gateway.state import RequestState
from costwarden.security.extract import Piece, location
from costwarden.security.findings import Finding, span_hash
from costwarden.security.policy import Outcome, SecurityPolicy, merged, outcome, verdict
from costwarden.security.scan import Located, Scanner, redacted
from costwarden.security.tools import ToolPins, tools_digest

logger = logging.getLogger(__name__)

STATUS_HEADER = "x-costwarden-security-status"
# A request that trips hundreds of findings (a pasted dump of keys) records the first ones;
# the verdict still weighs them all.
MAX_RECORDED = 20
_TOOLS_PIECE = Piece(("tools",), "")
_WHOLE = Piece(("request",), "")
_RANK: dict[Outcome, int] = {"blocked": 0, "redacted": 1, "flagged": 2}
_TIMEOUT = Finding("scan", "time_budget_exceeded", "low", 1.0, 0, 0)


class PolicyBook:
    """The gateway's policy and the orgs' and keys' layers over it (``(org_id, "")`` is an
    org's layer, ``(org_id, key_id)`` a key's), merged once per (org, key) and kept."""

    __slots__ = ("_layers", "_merged", "base")

    def __init__(self, base: SecurityPolicy) -> None:
        self.base = base
        self._layers: dict[tuple[str, str], dict[str, Any]] = {}
        self._merged: dict[tuple[str, str], SecurityPolicy] = {}

    def replace(self, layers: Mapping[tuple[str, str], dict[str, Any]]) -> None:
        self._layers = dict(layers)
        self._merged = {}

    def policy(self, org_id: str, key_id: str) -> SecurityPolicy:
        found = self._merged.get((org_id, key_id))
        if found is None:
            layers = self._layers
            if not layers:
                found = self.base
            else:
                found = merged(self.base, layers.get((org_id, "")), layers.get((org_id, key_id)))
            if len(self._merged) > 100_000:
                self._merged.clear()
            self._merged[(org_id, key_id)] = found
        return found


class SecurityGate:
    """The admission stage (after the switches and sessions, before the route and limits)."""

    __slots__ = ("_book", "_events", "_hash_key", "_pins", "_scanner")

    def __init__(
        self,
        scanner: Scanner,
        book: PolicyBook,
        events: EventBus,
        *,
        hash_key: bytes | None = None,
        pins: ToolPins | None = None,
    ) -> None:
        self._scanner = scanner
        self._book = book
        self._events = events
        self._hash_key = hash_key or secrets.token_bytes(32)
        self._pins = pins

    def __call__(self, state: RequestState) -> None:
        record = state.record
        org_id = record.org_id or ""
        policy = self._book.policy(org_id, record.key_id or "")
        result = self._scanner.scan(
            state.endpoint, state.payload, policy.time_budget_ms, org_id
        )
        found = result.found
        if self._pins is not None:
            digest = tools_digest(state.payload)
            subject = record.session_id or record.key_id
            if digest is not None and subject is not None:
                change = self._pins.check(org_id, subject, digest)
                if change is not None:
                    found.append(Located(change, _TOOLS_PIECE))
        if result.timed_out:
            if policy.on_timeout == "closed":
                self._record(state, [(Located(_TIMEOUT, _WHOLE), "blocked")])
                record.status = "blocked"
                raise SecurityPolicyViolation(
                    "the request could not be scanned within its time budget "
                    f"({policy.time_budget_ms:g} ms) and this policy fails closed",
                    headers={STATUS_HEADER: "unscanned"},
                )
            found.append(Located(_TIMEOUT, _WHOLE))
        if not found:
            state.security_status = "clean"
            return
        acted: list[tuple[Located, Outcome]] = []
        for located in found:
            what = outcome(policy, located.finding)
            if located.finding is _TIMEOUT:
                what = "flagged"
            if what is not None:
                acted.append((located, what))
        status = verdict(what for _, what in acted)
        if acted:
            # What is recorded is capped: the findings that decided come first.
            acted.sort(key=lambda pair: _RANK[pair[1]])
            self._record(state, acted)
        if status == "blocked":
            record.status = "blocked"
            blocking = [loc.finding for loc, what in acted if what == "blocked"]
            names = sorted({f"{f.detector}/{f.family}" for f in blocking})
            raise SecurityPolicyViolation(
                "the request was blocked by the security policy: " + ", ".join(names),
                headers={STATUS_HEADER: "blocked"},
                extra={"findings": [_public(f) for f in blocking[:MAX_RECORDED]]},
            )
        if status == "redacted":
            before = len(state.body)
            state.payload = redacted(
                state.payload, [loc for loc, what in acted if what == "redacted"]
            )
            # The reservation's input bound is the body's size: a placeholder can be longer
            # than what it replaced.
            state.added_bytes += max(0, len(orjson.dumps(state.payload)) - before)
        state.security_status = (
            "unscanned" if result.timed_out and status in ("flagged", "clean") else status
        )

    def _record(self, state: RequestState, acted: list[tuple[Located, Outcome]]) -> None:
        """The ledger row's ``security`` field and one event per recorded finding."""
        record = state.record
        rows: list[dict[str, Any]] = []
        key = self._hash_key
        for located, what in acted[:MAX_RECORDED]:
            finding, piece = located.finding, located.piece
            hashed = span_hash(key, piece.text, finding) if finding.end > finding.start else None
            rows.append(
                {**_public(finding), "action": what, "location": location(piece.path),
                 "span_hash": hashed}
            )  # fmt: skip
            self._events.publish(  # the event's fields are the row's, and whose
                SecurityFinding(
                    org_id=record.org_id,
                    request_id=record.request_id,
                    key_id=record.key_id,
                    session_id=record.session_id,
                    **rows[-1],
                )
            )
        record.security = orjson.dumps(rows).decode()


def _public(finding: Finding) -> dict[str, Any]:
    """What a blocked client is told of a finding: what and how sure, not where or what."""
    return {
        "detector": finding.detector,
        "family": finding.family,
        "severity": finding.severity,
        "confidence": round(finding.confidence, 3),
    }
