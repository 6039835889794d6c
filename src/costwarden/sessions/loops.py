"""Loop and runaway detection from what the gateway already sees: functions over data.

Three signals, each with its evidence:

- **repeat**: the same request fingerprint (:func:`fingerprint`) ``repeat_count`` times within
  ``repeat_window_s`` (defaults 3 within 10 minutes). An agent stuck in a loop sends the same
  tool call and gets the same tool result, over and over; the tool calls' ids differ each
  time, so they are left out of the fingerprint, as are the turns before the last exchange
  (the conversation grows by one exchange a step, the last exchange repeats).
- **velocity**: tokens in the current minute above ``velocity_factor`` times the session's
  own median per busy minute, once it has ``velocity_min_minutes`` of them: a session that
  suddenly burns tokens far faster than it ever did.
- **errors**: ``error_burst`` upstream errors in a row.

What happens then is the policy's ``action``: ``flag`` (an event and an alert), ``pause``
(an escalation a human resolves) or ``block`` (the request refused).
"""

from __future__ import annotations

import dataclasses
import hashlib
import statistics
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

import orjson

from costwarden.core.errors import InvalidInput

Action = Literal["flag", "pause", "block"]
ACTIONS: tuple[Action, ...] = ("flag", "pause", "block")
Signal = Literal["repeat", "velocity", "errors"]


@dataclasses.dataclass(frozen=True, slots=True)
class LoopPolicy:
    repeat_count: int = 3
    repeat_window_s: float = 600.0
    velocity_factor: Decimal = Decimal(10)
    velocity_min_minutes: int = 5
    error_burst: int = 5
    action: Action = "pause"

    def __post_init__(self) -> None:
        if self.repeat_count < 2:
            raise InvalidInput("repeat_count must be at least 2")
        if not self.repeat_window_s > 0:
            raise InvalidInput("repeat_window_s must be over 0")
        if not self.velocity_factor > 1:
            raise InvalidInput("velocity_factor must be over 1")
        if self.velocity_min_minutes < 1 or self.error_burst < 1:
            raise InvalidInput("velocity_min_minutes and error_burst must be at least 1")
        if self.action not in ACTIONS:
            raise InvalidInput(f"action must be one of {', '.join(ACTIONS)}")


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """A runaway signal and its evidence (what an escalation shows a human)."""

    signal: Signal
    evidence: Mapping[str, Any]


# ------------------------------------------------------------------ fingerprints


def fingerprint(endpoint: str, payload: Mapping[str, Any]) -> str | None:
    """What a request repeats when its agent loops: the last assistant turn's tool calls
    and the tool results after them, or else the last user turn; a short hash (None for a
    request with no turns, such as embeddings)."""
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    if endpoint == "messages":
        last = _anthropic_exchange(messages)
    else:
        last = _openai_exchange(messages)
    if last is None:
        return None
    canonical = orjson.dumps(last, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:24]


def _openai_exchange(messages: Sequence[Any]) -> Any:
    results: list[Any] = []
    i = len(messages) - 1
    while i >= 0 and _role(messages[i]) == "tool":
        results.append(messages[i].get("content"))
        i -= 1
    if results and i >= 0 and _role(messages[i]) == "assistant":
        calls = [
            (call.get("function") or {}) if isinstance(call, dict) else call
            for call in messages[i].get("tool_calls") or []
        ]
        return {"calls": calls, "results": results[::-1]}
    for message in reversed(messages):
        if _role(message) == "user":
            return {"user": message.get("content")}
    return None


def _anthropic_exchange(messages: Sequence[Any]) -> Any:
    last = messages[-1]
    if _role(last) != "user":
        return None
    blocks = _blocks(last.get("content"))
    results = [_drop_ids(b) for b in blocks if b.get("type") == "tool_result"]
    if results and len(messages) >= 2 and _role(messages[-2]) == "assistant":
        uses = [
            {"name": b.get("name"), "input": b.get("input")}
            for b in _blocks(messages[-2].get("content"))
            if b.get("type") == "tool_use"
        ]
        return {"calls": uses, "results": results}
    return {"user": last.get("content")}


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, dict) else None


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _drop_ids(block: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "tool_use_id"}


# ------------------------------------------------------------------ signals


def repeats(seen: Iterable[tuple[float, str]], fp: str, now: float, window_s: float) -> int:
    """How many times ``fp`` was sent within ``window_s`` before ``now``, this one included
    (``seen``: the session's earlier (time, fingerprint) pairs)."""
    since = now - window_s
    return 1 + sum(1 for at, other in seen if other == fp and since <= at <= now)


def check_repeat(
    policy: LoopPolicy, seen: Iterable[tuple[float, str]], fp: str | None, now: float
) -> Finding | None:
    if fp is None:
        return None
    count = repeats(seen, fp, now, policy.repeat_window_s)
    if count < policy.repeat_count:
        return None
    return Finding("repeat", {
        "fingerprint": fp, "count": count, "within_s": policy.repeat_window_s,
    })  # fmt: skip


def check_velocity(
    policy: LoopPolicy, busy_minutes: Sequence[int], this_minute: int
) -> Finding | None:
    """``busy_minutes``: the session's tokens in each earlier minute it sent any."""
    earlier = [t for t in busy_minutes if t > 0]
    if len(earlier) < policy.velocity_min_minutes:
        return None
    median = Decimal(statistics.median(earlier))
    if Decimal(this_minute) <= policy.velocity_factor * median:
        return None
    return Finding("velocity", {
        "tokens_this_minute": this_minute, "median_per_minute": str(median),
        "factor": str(policy.velocity_factor),
    })  # fmt: skip


def check_errors(policy: LoopPolicy, consecutive_errors: int) -> Finding | None:
    if consecutive_errors < policy.error_burst:
        return None
    return Finding("errors", {"consecutive_upstream_errors": consecutive_errors})
