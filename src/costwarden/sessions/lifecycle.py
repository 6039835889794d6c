"""An agent session's state machine: a function over data, no I/O.

::

    active --(spend reaches wind_down_pct of its budget)--> winding_down
    active | winding_down --(the budget of a window that resets is gone)--> sleeping
    sleeping --(now >= wake_at: the window reset, no traffic needed)--> active
    active | winding_down | sleeping --(a lifetime budget is gone)--> exhausted
    active | winding_down --(runaway detected, or an operator)--> paused
    paused --(its escalation approved, maybe with extra budget)--> active
    paused --(its escalation denied)--> terminated
    winding_down --(the share falls back under wind_down_pct: extra budget)--> active

``exhausted`` and ``terminated`` are final; an operator may still pause or terminate a
session in any state but those. Every function takes the session's :class:`Standing` and
what happened, and returns the :class:`Transition` it makes (or None); recording and
publishing it is the caller's business, as for the circuit breaker
(``routing.breaker``). :func:`admit` says what a request of a session in a state gets.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from decimal import ROUND_FLOOR, Decimal
from typing import Final, Literal, get_args

from costwarden.core.errors import InvalidInput

SessionState = Literal["active", "winding_down", "sleeping", "exhausted", "paused", "terminated"]
STATES: tuple[SessionState, ...] = get_args(SessionState)
ACTIVE: Final = "active"
WINDING_DOWN: Final = "winding_down"
SLEEPING: Final = "sleeping"
EXHAUSTED: Final = "exhausted"
PAUSED: Final = "paused"
TERMINATED: Final = "terminated"
FINAL: frozenset[SessionState] = frozenset({EXHAUSTED, TERMINATED})

Cause = Literal[
    "near_budget", "budget_restored", "window_spent", "woke", "lifetime_spent", "runaway",
    "operator_pause", "operator_terminate", "approved", "denied",
]  # fmt: skip

# Every transition the machine can make; anything else is a bug in a caller.
ALLOWED: frozenset[tuple[SessionState, SessionState]] = frozenset({
    (ACTIVE, WINDING_DOWN), (WINDING_DOWN, ACTIVE),
    (ACTIVE, SLEEPING), (WINDING_DOWN, SLEEPING), (SLEEPING, ACTIVE),
    (SLEEPING, SLEEPING),  # a later window is gone too: wake_at moves on
    (ACTIVE, EXHAUSTED), (WINDING_DOWN, EXHAUSTED), (SLEEPING, EXHAUSTED),
    (ACTIVE, PAUSED), (WINDING_DOWN, PAUSED), (SLEEPING, PAUSED),
    (PAUSED, ACTIVE), (PAUSED, TERMINATED),
    (ACTIVE, TERMINATED), (WINDING_DOWN, TERMINATED), (SLEEPING, TERMINATED),
})  # fmt: skip

DEFAULT_WIND_DOWN_PCT = Decimal(90)


@dataclasses.dataclass(frozen=True, slots=True)
class Standing:
    """Where a session is: its state, the share of its budget spent (None: no budget),
    when it wakes (epoch seconds, sleeping only) and its open escalation's id (paused)."""

    state: SessionState = ACTIVE
    budget_pct: Decimal | None = None
    wake_at: float | None = None
    escalation: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    before: SessionState
    after: Standing
    cause: Cause
    at: float

    @property
    def state(self) -> SessionState:
        return self.after.state


def _move(
    was: Standing, to: SessionState, cause: Cause, at: float, **changes: object
) -> Transition:
    if (was.state, to) not in ALLOWED:
        raise ValueError(f"no transition {was.state} -> {to}")
    after = dataclasses.replace(was, state=to, **changes)  # type: ignore[arg-type]
    return Transition(was.state, after, cause, at)


def check_wind_down(pct: Decimal) -> Decimal:
    """A wind-down share: over 0, at most 100 (InvalidInput otherwise)."""
    if not pct.is_finite() or not 0 < pct <= 100:
        raise InvalidInput(f"wind_down_pct must be over 0 and at most 100, got {pct}")
    return pct


def on_spend(
    was: Standing, budget_pct: Decimal | None, now: float, wind_down_pct: Decimal
) -> Transition | None:
    """The session's spend moved (a request settled, a window reset, budget was added):
    wind down at ``wind_down_pct`` of the budget, and back when it falls under it."""
    if was.state == ACTIVE and budget_pct is not None and budget_pct >= wind_down_pct:
        return _move(was, WINDING_DOWN, "near_budget", now, budget_pct=budget_pct)
    if was.state == WINDING_DOWN and (budget_pct is None or budget_pct < wind_down_pct):
        return _move(was, ACTIVE, "budget_restored", now, budget_pct=budget_pct)
    return None


def on_budget_gone(was: Standing, resets_at: float | None, now: float) -> Transition | None:
    """A request was refused for the session's budget: asleep until the window resets at
    ``resets_at`` (epoch seconds), or exhausted for good when it never resets (None)."""
    if was.state in FINAL or was.state == PAUSED:
        return None
    if resets_at is None:
        return _move(was, EXHAUSTED, "lifetime_spent", now, wake_at=None)
    if resets_at <= now:
        return None  # already reset: the next request is let through
    if was.state == SLEEPING and was.wake_at is not None and was.wake_at >= resets_at:
        return None  # asleep until then or later already
    return _move(was, SLEEPING, "window_spent", now, wake_at=resets_at)


def on_clock(was: Standing, now: float) -> Transition | None:
    """Time passed: a sleeping session whose wake_at has come is active again."""
    if was.state == SLEEPING and was.wake_at is not None and now >= was.wake_at:
        return _move(was, ACTIVE, "woke", now, wake_at=None, budget_pct=None)
    return None


def on_runaway(was: Standing, escalation: str, now: float) -> Transition | None:
    """Runaway detected and the policy pauses: paused until ``escalation`` is resolved."""
    if was.state in FINAL or was.state == PAUSED:
        return None
    return _move(was, PAUSED, "runaway", now, escalation=escalation)


def on_operator(
    was: Standing, action: Literal["pause", "terminate"], escalation: str | None, now: float
) -> Transition | None:
    """An operator paused (with the escalation that tracks it) or terminated the session."""
    if was.state in FINAL:
        return None
    if action == "terminate":
        return _move(was, TERMINATED, "operator_terminate", now, wake_at=None)
    if was.state == PAUSED:
        return None
    return _move(was, PAUSED, "operator_pause", now, escalation=escalation)


def on_resolved(
    was: Standing, escalation: str, approved: bool, now: float
) -> Transition | None:
    """The paused session's escalation was resolved: active again, or terminated. A
    resolution of another escalation (an older one) changes nothing."""
    if was.state != PAUSED or was.escalation != escalation:
        return None
    if approved:
        return _move(was, ACTIVE, "approved", now, escalation=None)
    return _move(was, TERMINATED, "denied", now, escalation=None)


# "looping": loop detection's policy blocks the request (the session itself goes on).
Verdict = Literal["go", "sleeping", "exhausted", "paused", "terminated", "looping"]


@dataclasses.dataclass(frozen=True, slots=True)
class Admission:
    """What a request of the session gets: ``go``, or a refusal with what it says (the
    seconds until wake_at for ``sleeping``, the escalation for ``paused``)."""

    verdict: Verdict
    retry_after: int | None = None
    escalation: str | None = None


GO: Final = Admission("go")


def admit(was: Standing, now: float) -> Admission:
    """A request of a session standing so, at ``now`` (call :func:`on_clock` first)."""
    state = was.state
    if state in (ACTIVE, WINDING_DOWN):
        return GO
    if state == SLEEPING:
        wait = max(1, math.ceil((was.wake_at or now) - now))
        return Admission("sleeping", retry_after=wait)
    if state == PAUSED:
        return Admission("paused", escalation=was.escalation)
    return Admission("exhausted" if state == EXHAUSTED else "terminated")


def budget_pct(spent_nanos: int, budget_nanos: int) -> Decimal | None:
    """The share of a budget spent, in percent to 0.01 (None for no budget, or unlimited)."""
    if budget_nanos <= 0:
        return None
    share = Decimal(spent_nanos) * 100 / Decimal(budget_nanos)
    return share.quantize(Decimal("0.01"), rounding=ROUND_FLOOR)  # 90 % means reached


def new_escalation_id() -> str:
    """``esc_`` + milliseconds + random bits, in hex: unique and ordered by time (made where
    the session is paused, so the refusal can name it before it is stored)."""
    return f"esc_{time.time_ns() // 1_000_000:012x}{secrets.randbits(40):010x}"


MAX_SESSION_ID = 200  # a session id is a budget's subject (budgets.limits.MAX_SUBJECT_LEN)


def clean_session_id(text: str) -> str:
    """A session id as a path names it: 1 to 200 characters, no control characters
    (InvalidInput otherwise; a header could not carry such an id either)."""
    if not text or len(text) > MAX_SESSION_ID:
        raise InvalidInput(f"a session id has 1 to {MAX_SESSION_ID} characters, got {len(text)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidInput("a session id has no control characters")
    if text.startswith(("@key:", "@project:")):
        raise InvalidInput("@key: and @project: name session defaults, not a session")
    return text
