"""What the scan stage does with what the detectors found: a function over data.

A policy says, per detector, one of:

- ``default``: **block** a finding of severity high or critical with confidence at least
  ``min_confidence`` (0.8 unless set), **flag** the rest from ``flag_confidence`` (0.5) up;
- ``block``: refuse the request (403 ``security_policy_violation``) for any finding from
  ``min_confidence`` up, flag those between ``flag_confidence`` and it;
- ``redact``: forward the request with each finding's span replaced by a placeholder that
  names its detector and family (the response is billed as usual);
- ``flag``: forward the request as it is; the finding is an event and ledger fields;
- ``off``: the detector's findings are ignored.

Findings under ``flag_confidence`` are dropped: a scanner that reported everything it
half-suspects would flood the ledger and teach people to ignore it. Tool pinning's findings
(``tools``) are flagged by default: a changed tool list is a reason to look, and blocking it
would stop every agent whose tools are built per run.

Policies are layered: the gateway's configured policy, then the org's, then the key's; each
layer sets only what it names (:func:`merged`). ``on_timeout`` says what happens when the
scan runs out of its time budget: ``open`` forwards the request unscanned (flagged as
such), ``closed`` refuses it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Literal

from costwarden.core.errors import InvalidInput
from costwarden.security.findings import SEVERITY_RANK, Finding

Action = Literal["default", "block", "redact", "flag", "off"]
ACTIONS: tuple[Action, ...] = ("default", "block", "redact", "flag", "off")
Outcome = Literal["blocked", "redacted", "flagged"]
OnTimeout = Literal["open", "closed"]
_HIGH = SEVERITY_RANK["high"]


@dataclasses.dataclass(frozen=True, slots=True)
class SecurityPolicy:
    actions: Mapping[str, Action] = dataclasses.field(default_factory=lambda: {"tools": "flag"})
    min_confidence: float = 0.8
    flag_confidence: float = 0.5
    on_timeout: OnTimeout = "open"
    time_budget_ms: float = 10.0

    def action(self, detector: str) -> Action:
        return self.actions.get(detector, "default")


def outcome(policy: SecurityPolicy, finding: Finding) -> Outcome | None:
    """What ``policy`` does with ``finding``; None: nothing (under ``flag_confidence``, or the
    detector is off)."""
    confidence = finding.confidence
    if confidence < policy.flag_confidence:
        return None
    action = policy.action(finding.detector)
    if action == "off":
        return None
    if action == "flag":
        return "flagged"
    if action == "redact":
        return "redacted"
    sure = confidence >= policy.min_confidence
    if action == "block":
        return "blocked" if sure else "flagged"
    return "blocked" if sure and SEVERITY_RANK[finding.severity] >= _HIGH else "flagged"


def verdict(outcomes: Iterable[Outcome]) -> Outcome | Literal["clean"]:
    """The request's status: blocked if anything blocks, else redacted, else flagged."""
    seen = set(outcomes)
    order: tuple[Outcome, ...] = ("blocked", "redacted", "flagged")
    for name in order:
        if name in seen:
            return name
    return "clean"


_FIELDS = ("actions", "min_confidence", "flag_confidence", "on_timeout", "time_budget_ms")


def parse_layer(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A policy layer (an org's or a key's, as the admin API takes it) checked and
    normalised; InvalidInput naming the first bad field."""
    unknown = set(raw) - set(_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown security policy field(s): {', '.join(sorted(unknown))}")
    layer: dict[str, Any] = {}
    if "actions" in raw:
        actions = raw["actions"]
        if not isinstance(actions, Mapping):
            raise InvalidInput("actions must be an object of detector -> action")
        for detector, action in actions.items():
            if not isinstance(detector, str) or not 0 < len(detector) <= 64:
                raise InvalidInput("a detector name is 1 to 64 characters")
            if action not in ACTIONS:
                raise InvalidInput(f"action for {detector!r} must be one of {', '.join(ACTIONS)}")
        layer["actions"] = dict(actions)
    for name in ("min_confidence", "flag_confidence"):
        if name in raw:
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
                raise InvalidInput(f"{name} must be a number from 0 to 1")
            if not 0 <= value <= 1:
                raise InvalidInput(f"{name} must be a number from 0 to 1")
            layer[name] = float(value)
    if "on_timeout" in raw:
        if raw["on_timeout"] not in ("open", "closed"):
            raise InvalidInput("on_timeout must be 'open' or 'closed'")
        layer["on_timeout"] = raw["on_timeout"]
    if "time_budget_ms" in raw:
        value = raw["time_budget_ms"]
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise InvalidInput("time_budget_ms must be a positive number")
        if math.isnan(value) or not 0 < value <= 10_000:
            raise InvalidInput("time_budget_ms must be over 0 and at most 10000")
        layer["time_budget_ms"] = float(value)
    return layer


def merged(base: SecurityPolicy, *layers: Mapping[str, Any] | None) -> SecurityPolicy:
    """``base`` with each layer (from :func:`parse_layer`) applied in turn."""
    policy = base
    for layer in layers:
        if not layer:
            continue
        changes = {k: v for k, v in layer.items() if k != "actions"}
        if "actions" in layer:
            changes["actions"] = {**policy.actions, **layer["actions"]}
        policy = dataclasses.replace(policy, **changes)
    if policy.flag_confidence > policy.min_confidence:
        policy = dataclasses.replace(policy, flag_confidence=policy.min_confidence)
    return policy
