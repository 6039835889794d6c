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


def sessions_problem(s: SessionSettings) -> tuple[str, str] | None:
    """(field, what is wrong) for the first out-of-range ``[sessions]`` value, or None."""
    if not 0 < s.wind_down_pct <= 100:
        return "wind_down_pct", "must be over 0 and at most 100"
    if not 0 < s.wake_interval_seconds < math.inf:
        return "wake_interval_seconds", "must be a positive number"
    return None
