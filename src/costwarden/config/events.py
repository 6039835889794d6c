"""``[events]``: the event log and the live stream (see ``costwarden.core.events``).

The event bus does not import config: the app factory passes these values to it.
"""

from __future__ import annotations

import dataclasses
import math

from costwarden.config.fields import setting as _setting


@dataclasses.dataclass(slots=True)
class EventSettings:
    retention_days: float = _setting(
        7.0,
        "How long the event log keeps events: a live-stream client can resume (Last-Event-ID) "
        "from any event this recent, from any gateway process.",
        "COSTWARDEN_EVENTS_RETENTION_DAYS",
    )
    flush_ms: float = _setting(
        20.0,
        "Events are written to the log, numbered and sent to the other processes in batches "
        "gathered for this long: longer is fewer transactions, shorter is fresher streams. "
        "While no one waits for them (no live-stream client and no background consumer of "
        "their kinds, in this process or, heard over Redis, another) they gather for 5 s.",
        "COSTWARDEN_EVENTS_FLUSH_MS",
    )
    poll_seconds: float = _setting(
        0.5,
        "Without Redis, or while it is unreachable, how often each process reads the event "
        "log for the events other processes raised.",
        "COSTWARDEN_EVENTS_POLL_SECONDS",
    )
    buffer: int = _setting(
        10_000,
        "Recent events each process keeps in memory to replay to reconnecting clients "
        "(older ones come from the log).",
    )
    client_queue: int = _setting(
        1000,
        "Events a live-stream client may fall behind before it is cut off (it gets a last "
        "stream_cut event and resumes with Last-Event-ID).",
    )


def events_problem(e: EventSettings) -> tuple[str, str] | None:
    """(field, what is wrong) for the first out-of-range ``[events]`` value, or None."""
    for name in ("retention_days", "flush_ms", "poll_seconds"):
        if not 0 < getattr(e, name) < math.inf:
            return name, "must be a positive number"
    for name in ("buffer", "client_queue"):
        if getattr(e, name) < 1:
            return name, "must be at least 1"
    return None
