"""The scan policy: what each finding leads to, the request's verdict, and layers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from costwarden.core.errors import InvalidInput
from costwarden.security.findings import Finding, Severity
from costwarden.security.policy import SecurityPolicy, merged, outcome, parse_layer, verdict


def _finding(detector: str, severity: Severity, confidence: float) -> Finding:
    return Finding(detector, "family", severity, confidence, 0, 4)


@pytest.mark.parametrize(
    ("actions", "detector", "severity", "confidence", "expected"),
    [
        # default: block high and critical from 0.8, flag the rest from 0.5
        ({}, "injection", "high", 0.8, "blocked"),
        ({}, "injection", "critical", 0.99, "blocked"),
        ({}, "injection", "high", 0.79, "flagged"),
        ({}, "secrets", "medium", 0.95, "flagged"),
        ({}, "pii", "low", 0.5, "flagged"),
        ({}, "pii", "critical", 0.49, None),
        # explicit actions
        ({"pii": "redact"}, "pii", "low", 0.6, "redacted"),
        ({"pii": "redact"}, "pii", "low", 0.4, None),
        ({"pii": "block"}, "pii", "low", 0.85, "blocked"),
        ({"pii": "block"}, "pii", "low", 0.7, "flagged"),
        ({"injection": "flag"}, "injection", "critical", 1.0, "flagged"),
        ({"injection": "off"}, "injection", "critical", 1.0, None),
        # tool pinning is flagged unless a policy says otherwise
        ({"tools": "flag"}, "tools", "high", 1.0, "flagged"),
        ({"tools": "block"}, "tools", "high", 1.0, "blocked"),
        # a user's detector follows the default rule
        ({}, "my-classifier", "high", 0.9, "blocked"),
    ],
)
def test_outcome(
    actions: dict[str, Any], detector: str, severity: Severity, confidence: float, expected: str
) -> None:
    policy = SecurityPolicy(actions=actions)
    assert outcome(policy, _finding(detector, severity, confidence)) == expected


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([], "clean"),
        (["flagged"], "flagged"),
        (["flagged", "redacted"], "redacted"),
        (["redacted", "blocked", "flagged"], "blocked"),
    ],
)
def test_verdict(outcomes: list[Any], expected: str) -> None:
    assert verdict(outcomes) == expected


def test_layers_apply_in_order_field_by_field() -> None:
    base = SecurityPolicy(actions={"tools": "flag", "pii": "flag"}, on_timeout="open")
    org = parse_layer({"actions": {"pii": "redact"}, "on_timeout": "closed"})
    key = parse_layer({"actions": {"injection": "block"}, "min_confidence": 0.9})
    policy = merged(base, org, key)
    assert dict(policy.actions) == {"tools": "flag", "pii": "redact", "injection": "block"}
    assert policy.on_timeout == "closed"
    assert policy.min_confidence == 0.9
    assert merged(base, None, {}) == base
    assert parse_layer({"time_budget_ms": Decimal("2.5")}) == {"time_budget_ms": 2.5}
    # a flag threshold over the block threshold is brought down to it
    assert merged(base, parse_layer({"min_confidence": 0.3})).flag_confidence == 0.3


@pytest.mark.parametrize(
    "raw",
    [
        {"actions": {"pii": "explode"}},
        {"actions": ["pii"]},
        {"actions": None},
        {"actions": {"": "flag"}},
        {"min_confidence": 1.5},
        {"min_confidence": True},
        {"flag_confidence": "0.5"},
        {"on_timeout": "maybe"},
        {"time_budget_ms": 0},
        {"time_budget_ms": float("nan")},
        {"time_budget_ms": Decimal("NaN")},
        {"time_budget_ms": Decimal("1e9")},
        {"colour": "red"},
    ],
)
def test_bad_layers_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        parse_layer(raw)
