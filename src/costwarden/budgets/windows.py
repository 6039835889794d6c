"""Windows: which counter a moment falls into, and when it resets.

Calendar windows (``day``, ``month``) follow the configured timezone; ``lifetime`` never
resets. Rolling windows are kept as :data:`BUCKETS` + 1 buckets of ``window / BUCKETS``
seconds: the sum over the current bucket and the :data:`BUCKETS` before it covers at least
the whole window, so a rate limit is never looser than stated, and a ``Retry-After`` computed
from the buckets is never early (it is late by less than one bucket: 1 s for a minute, 60 s
for an hour).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from costwarden.budgets.limits import ROLLING_WINDOWS
from costwarden.core.errors import ConfigError

BUCKETS = 60


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"budgets.timezone: unknown timezone {name!r}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class CalendarWindow:
    id: str  # "2026-11-21", "2026-11" or "lifetime"
    start: float  # epoch seconds; 0 for lifetime
    resets_at: float | None  # epoch seconds; None for lifetime


def calendar_window(window: str, now: float, tz: ZoneInfo) -> CalendarWindow:
    if window == "lifetime":
        return CalendarWindow("lifetime", 0.0, None)
    local = datetime.fromtimestamp(now, tz)
    if window == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        # Adding a day in local time then normalising handles DST days of 23 or 25 hours.
        end = (start + timedelta(days=1)).replace(tzinfo=None)
        return CalendarWindow(
            start.strftime("%Y-%m-%d"),
            start.timestamp(),
            _local(end, tz).timestamp(),
        )
    if window == "month":
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        end = datetime(year, month, 1)
        return CalendarWindow(
            start.strftime("%Y-%m"), start.timestamp(), _local(end, tz).timestamp()
        )
    raise ValueError(f"not a calendar window: {window}")


def _local(naive: datetime, tz: ZoneInfo) -> datetime:
    return naive.replace(tzinfo=tz)


def bucket_seconds(window: str) -> int:
    return ROLLING_WINDOWS[window] // BUCKETS


def bucket_index(window: str, now: float) -> int:
    return math.floor(now / bucket_seconds(window))


def first_bucket(window: str, now: float) -> int:
    """Oldest bucket still counted at ``now``."""
    return bucket_index(window, now) - BUCKETS


def bucket_leaves_at(window: str, bucket: int) -> float:
    """Epoch second at which ``bucket`` stops being counted."""
    return float((bucket + BUCKETS + 1) * bucket_seconds(window))


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
