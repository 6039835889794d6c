"""Risk signals: what a product may show its own user ("you are close to today's allowance").

Pure functions over figures the caller gathered (limit statuses, ledger counts, breaker
states); ``GET /admin/risks`` gathers them and answers the list. Each signal is a
:class:`Risk`: a ``type`` a product can switch on, the ``rule`` that raised it, a message a
person can read, and the ``ratio`` behind it (an exact decimal string).

- ``high_token_usage``: a user, key or org has used at least 80 % of today's token allowance
  (its daily token limit: the scope's own override, else its plan tier's default; a limit of
  -1 is unlimited and never a risk). The message says the share: "85% of today's token
  budget".
- ``upstream_failures``: requests of an org (and of each of its projects) that failed
  upstream, timed out or got the degraded answer within the window, counted from the ledger's
  rows; raised when there is at least one, with the failed share of the window's requests.
- ``model_unavailable``: the circuit breaker of a deployment the org used in the window is
  open.
- ``session_near_budget``: an agent session winding down (past its wind-down share of its
  budget); ``session_runaway``: one paused by loop detection, waiting for a person.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from decimal import ROUND_FLOOR, Decimal
from typing import Any

HIGH_TOKEN_SHARE = Decimal("0.8")
FAILURE_STATUSES = ("upstream_error", "degraded")


@dataclasses.dataclass(frozen=True, slots=True)
class Risk:
    type: str
    rule: str
    message: str
    ratio: str  # exact decimal
    scope: str | None = None
    scope_id: str | None = None
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "rule": self.rule,
            "message": self.message,
            "ratio": self.ratio,
            "scope": self.scope,
            "scope_id": self.scope_id,
            **self.detail,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class TokenAllowance:
    """One scope's daily token limit and what it has used today."""

    scope: str  # org | project | key | user
    scope_id: str
    amount: int  # tokens; -1 unlimited
    used: int
    source: str  # "override" or "tier NAME"
    resets_at: str | None = None


def _pct(ratio: Decimal) -> str:
    return str((ratio * 100).to_integral_value(rounding=ROUND_FLOOR))


def token_risks(allowances: Iterable[TokenAllowance]) -> list[Risk]:
    """``high_token_usage`` for each allowance at or past 80 %."""
    out: list[Risk] = []
    for a in allowances:
        if a.amount <= 0:  # -1: unlimited; 0: nothing allowed, nothing to warn before
            continue
        ratio = Decimal(a.used) / Decimal(a.amount)
        if ratio < HIGH_TOKEN_SHARE:
            continue
        out.append(
            Risk(
                type="high_token_usage",
                rule="daily_tokens_80",
                message=f"{_pct(ratio)}% of today's token budget",
                ratio=str(ratio.quantize(Decimal("0.0001"), rounding=ROUND_FLOOR)),
                scope=a.scope,
                scope_id=a.scope_id,
                detail={
                    "used": str(a.used),
                    "limit": str(a.amount),
                    "source": a.source,
                    "resets_at": a.resets_at,
                },
            )
        )
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class FailureCount:
    """Ledger rows of one org (project None) or one of its projects in a window."""

    scope: str  # org | project
    scope_id: str
    requests: int
    failed: int  # upstream_error and degraded rows
    window_seconds: int


def failure_risks(counts: Iterable[FailureCount]) -> list[Risk]:
    """``upstream_failures`` for each count with at least one failure."""
    out: list[Risk] = []
    for c in counts:
        if c.failed <= 0 or c.requests <= 0:
            continue
        ratio = Decimal(c.failed) / Decimal(c.requests)
        minutes = c.window_seconds // 60
        out.append(
            Risk(
                type="upstream_failures",
                rule=f"failures_{minutes}m",
                message=(
                    f"{c.failed} of {c.requests} requests failed upstream or were degraded "
                    f"in the last {minutes} minutes"
                ),
                ratio=str(ratio.quantize(Decimal("0.0001"), rounding=ROUND_FLOOR)),
                scope=c.scope,
                scope_id=c.scope_id,
                detail={"failed": c.failed, "requests": c.requests},
            )
        )
    return out


def breaker_risks(states: Mapping[str, str]) -> list[Risk]:
    """``model_unavailable`` for each deployment (of those the org used) whose breaker is
    open."""
    return [
        Risk(
            type="model_unavailable",
            rule="breaker_open",
            message=f"{deployment} is unavailable (its circuit breaker is open)",
            ratio="1",
            scope="deployment",
            scope_id=deployment,
        )
        for deployment, state in sorted(states.items())
        if state == "open"
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class SessionRisk:
    """An agent session that is not simply active, as the risk signals see it."""

    session_id: str
    state: str  # winding_down | paused | ...
    budget_pct: Decimal | None  # the largest share of its budgets spent
    escalation_id: str | None = None


def session_risks(sessions: Iterable[SessionRisk]) -> list[Risk]:
    """``session_near_budget`` for a session winding down (past its share of the budget),
    ``session_runaway`` for one paused for a human's decision."""
    out: list[Risk] = []
    for s in sessions:
        if s.state == "winding_down":
            pct = s.budget_pct
            share = "most" if pct is None else f"{pct.to_integral_value(rounding=ROUND_FLOOR)}%"
            out.append(Risk(
                type="session_near_budget", rule="session_wind_down",
                message=f"agent session {s.session_id} has used {share} of its budget",
                ratio="1" if pct is None else str(pct / 100), scope="session",
                scope_id=s.session_id,
            ))  # fmt: skip
        elif s.state == "paused":
            out.append(Risk(
                type="session_runaway", rule="session_paused",
                message=f"agent session {s.session_id} is paused until a person resolves "
                f"escalation {s.escalation_id}",
                ratio="1", scope="session", scope_id=s.session_id,
                detail={"escalation_id": s.escalation_id},
            ))  # fmt: skip
    return out
