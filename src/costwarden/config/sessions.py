"""``[sessions]``: agent sessions (see ``costwarden.sessions``).

The sessions package does not import config: the app maps these values into its types.
"""

from __future__ import annotations

import dataclasses
import math

from costwarden.config.fields import setting as _setting


@dataclasses.dataclass(slots=True)
class SessionSettings:
    enabled: bool = _setting(
        True,
        "Track agent sessions (x-costwarden-session): wind down near their budget, sleep "
        "until a spent window resets, and refuse paused, exhausted or terminated ones.",
        "COSTWARDEN_SESSIONS_ENABLED",
    )
    wind_down_pct: float = _setting(
        90.0,
        "A session winds down (x-costwarden-session-state: winding_down) once this percent "
        "of its tightest budget is spent or held. Over 0, at most 100.",
        "COSTWARDEN_SESSIONS_WIND_DOWN_PCT",
    )
    wake_interval_seconds: float = _setting(
        1.0,
        "How often each process looks for sleeping sessions whose wake_at has come, to wake "
        "them (an event, with no request needed): wake_at is kept to about this much.",
        "COSTWARDEN_SESSIONS_WAKE_INTERVAL_SECONDS",
    )
    loop_action: str = _setting(
        "pause",
        "What loop and runaway detection does with a session it finds looping: 'flag' (an "
        "event), 'pause' (the session waits for a human to resolve an escalation) or "
        "'block' (the request is refused, the session goes on).",
        "COSTWARDEN_SESSIONS_LOOP_ACTION",
    )
    repeat_count: int = _setting(
        3,
        "The same request (the last tool calls and their results, or the last user turn) "
        "this many times within repeat_window_seconds is a loop. At least 2.",
        "COSTWARDEN_SESSIONS_REPEAT_COUNT",
    )
    repeat_window_seconds: float = _setting(
        600.0,
        "The window of the repeat signal.",
        "COSTWARDEN_SESSIONS_REPEAT_WINDOW_SECONDS",
    )
    velocity_factor: float = _setting(
        10.0,
        "A minute's tokens above this many times the session's own median per busy minute "
        "is a runaway. Over 1.",
        "COSTWARDEN_SESSIONS_VELOCITY_FACTOR",
    )
    velocity_min_minutes: int = _setting(
        5,
        "Busy minutes a session must have had before its pace is judged.",
        "COSTWARDEN_SESSIONS_VELOCITY_MIN_MINUTES",
    )
    error_burst: int = _setting(
        5,
        "This many upstream errors in a row in one session is a runaway.",
        "COSTWARDEN_SESSIONS_ERROR_BURST",
    )


LOOP_ACTIONS = ("flag", "pause", "block")


def sessions_problem(s: SessionSettings) -> tuple[str, str] | None:
    """(field, what is wrong) for the first out-of-range ``[sessions]`` value, or None."""
    if not 0 < s.wind_down_pct <= 100:
        return "wind_down_pct", "must be over 0 and at most 100"
    for name in ("wake_interval_seconds", "repeat_window_seconds"):
        if not 0 < getattr(s, name) < math.inf:
            return name, "must be a positive number"
    if s.loop_action not in LOOP_ACTIONS:
        return "loop_action", f"must be one of {', '.join(LOOP_ACTIONS)}"
    if s.repeat_count < 2:
        return "repeat_count", "must be at least 2"
    if not 1 < s.velocity_factor < math.inf:
        return "velocity_factor", "must be over 1"
    for name in ("velocity_min_minutes", "error_burst"):
        if getattr(s, name) < 1:
            return name, "must be at least 1"
    return None
