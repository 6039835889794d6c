"""What a client app's degradation banner shows: ``ok``, ``degraded`` or ``disabled``.

A pure function of what the gateway already knows (no I/O): the kill switch's and feature
toggles' refusals for the key's org, the circuit breakers' states, and the key's budgets
(:class:`~costwarden.budgets.status.LimitStatus`, as the admin API reads them).

- ``disabled``: every chat endpoint (``chat.completions`` and ``messages``) is switched off for
  the org (``ai`` off, platform-wide or for the org, or both endpoints off); the message is
  the switch's (the operator's emergency message).
- ``degraded``: some feature is switched off (one chat endpoint, ``embeddings`` or
  ``streaming``: its message), a deployment's breaker is not closed (no message: which
  deployment is not told), or the key's tightest budget is at least
  :data:`NEAR_LIMIT_PERCENT` used.
- ``ok`` otherwise.

The budget shown is the key's *tightest* hard USD budget (a calendar or lifetime window) of
its org, project or key -- the one most used, then the one with the least left; the
platform-wide limits are never shown (they are every org's spending together).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Literal

from costwarden.budgets.status import LimitStatus

NEAR_LIMIT_PERCENT = Decimal(90)
# The features a switch can turn off, as the refusals are asked for: the endpoints without
# streaming, and "streaming" (a chat completion with ``stream: true``).
CHAT_ENDPOINTS = ("chat.completions", "messages")
FEATURES = (*CHAT_ENDPOINTS, "streaming", "embeddings")
# Scopes of a key's budgets shown to it: its own org's, never the platform's.
SHOWN_SCOPES = frozenset({"org", "project", "key"})

State = Literal["ok", "degraded", "disabled"]


@dataclasses.dataclass(frozen=True, slots=True)
class ClientStatus:
    status: State
    message: str | None
    # Why, in order: "switched_off", "feature_off", "breaker_open", "budget_near_limit".
    reasons: tuple[str, ...]
    budget: LimitStatus | None

    def to_json(self, checked_at: str) -> dict[str, Any]:
        return {
            "status": self.status,
            "message": self.message,
            "reasons": list(self.reasons),
            "budget": None if self.budget is None else budget_json(self.budget),
            "checked_at": checked_at,
        }


def budget_json(s: LimitStatus) -> dict[str, Any]:
    """The figures of one budget a client may see (from :meth:`LimitStatus.to_json`: no ids)."""
    full = s.to_json()
    return {
        "scope": full["scope"],
        "window": full["window"],
        "limit": full["limit"],
        "remaining": full["remaining"],
        "percent_used": full["percent_used"],
        "resets_at": full["resets_at"],
    }


def tightest_budget(statuses: Iterable[LimitStatus]) -> LimitStatus | None:
    """The key's hard USD budget (calendar or lifetime window) of its org, project or key
    that is most used (then: least left); None when none applies."""
    found = [
        s
        for s in statuses
        if s.limit.metric == "usd"
        and not s.limit.rolling
        and s.limit.mode == "hard"
        and s.limit.scope in SHOWN_SCOPES
    ]
    if not found:
        return None
    return min(found, key=lambda s: (-s.percent, s.remaining))


def client_status(
    refusals: Mapping[str, str | None],
    breaker_states: Iterable[str],
    budget: LimitStatus | None,
) -> ClientStatus:
    """``refusals``: each of :data:`FEATURES` -> the switch's message when it is off for the
    org (missing: on); ``breaker_states``: every deployment's breaker state; ``budget``: the
    key's tightest budget (:func:`tightest_budget`)."""
    if all(refusals.get(e) is not None for e in CHAT_ENDPOINTS):
        return ClientStatus("disabled", refusals[CHAT_ENDPOINTS[0]], ("switched_off",), budget)
    reasons: list[str] = []
    message = next((m for f in FEATURES if (m := refusals.get(f)) is not None), None)
    if message is not None:
        reasons.append("feature_off")
    if any(state != "closed" for state in breaker_states):
        reasons.append("breaker_open")
    if budget is not None and budget.percent >= NEAR_LIMIT_PERCENT:
        reasons.append("budget_near_limit")
    return ClientStatus("degraded" if reasons else "ok", message, tuple(reasons), budget)
