"""``[analytics]``: the rollups analytics read (see ``costwarden.analytics`` and
``storage.rollups``).

The analytics package does not import config: the app maps these values into its calls.
"""

from __future__ import annotations

import dataclasses
import math

from costwarden.config.fields import setting as _setting


@dataclasses.dataclass(slots=True)
class AnalyticsSettings:
    enabled: bool = _setting(
        True,
        "Roll the ledger up into hourly and daily totals by every dimension (what analytics "
        "read), in the one gateway process holding the rollup lease.",
        "COSTWARDEN_ANALYTICS_ENABLED",
    )
    rollup_interval_seconds: float = _setting(
        60.0,
        "How often the rollup job takes the ledger rows written since its last run and "
        "recomputes the hours they fall in (and their days).",
        "COSTWARDEN_ANALYTICS_ROLLUP_INTERVAL_SECONDS",
    )
    lag_seconds: float = _setting(
        60.0,
        "Rows written in the last this many seconds wait for the next run: a transaction that "
        "stamped its rows but has not committed yet is never skipped.",
        "COSTWARDEN_ANALYTICS_LAG_SECONDS",
    )
    reconcile_days: int = _setting(
        7,
        "Once a day the rollups of the last this many complete days are checked against the "
        "raw ledger, exactly; a difference raises an alert and the day is recomputed.",
        "COSTWARDEN_ANALYTICS_RECONCILE_DAYS",
    )
    raw_retention_days: int = _setting(
        0,
        "Raw ledger rows (request log, usage reports) are kept this many days; the rollups "
        "analytics and reports read stay. 0 keeps raw rows for ever. Rows go only once rolled "
        "up, a UTC day at a time (on PostgreSQL a month's partition, once wholly past: up to "
        "a month later). At least 32 and more than reconcile_days + 1; needs enabled = true. "
        "Nothing goes while a lifetime limit is in force (its counter is rebuilt from raw "
        "rows).",
        "COSTWARDEN_ANALYTICS_RAW_RETENTION_DAYS",
    )


def analytics_problem(a: AnalyticsSettings) -> tuple[str, str] | None:
    """(field, what is wrong) for the first out-of-range ``[analytics]`` value, or None."""
    for name in ("rollup_interval_seconds", "lag_seconds"):
        if not 0 < getattr(a, name) < math.inf:
            return name, "must be a positive number"
    if not 1 <= a.reconcile_days <= 366:
        return "reconcile_days", "must be from 1 to 366"
    return _retention_problem(a)


# A budget's month window (up to 31 days, in any timezone) and the spike check's 31 days of
# history are read from raw rows: retention keeps at least this many days.
MIN_RETENTION_DAYS = 32


def _retention_problem(a: AnalyticsSettings) -> tuple[str, str] | None:
    days = a.raw_retention_days
    if days == 0:
        return None
    if days < 0:
        return "raw_retention_days", "must be 0 (keep raw rows for ever) or a number of days"
    if not a.enabled:
        return "raw_retention_days", (
            "needs enabled = true: raw rows go only once the rollups hold them"
        )
    if days < MIN_RETENTION_DAYS:
        return "raw_retention_days", (
            f"must be at least {MIN_RETENTION_DAYS}: budgets' month windows are rebuilt from "
            "raw rows"
        )
    if days <= a.reconcile_days + 1:
        return "raw_retention_days", (
            f"must be more than reconcile_days + 1 ({a.reconcile_days + 1}): the daily check "
            "compares the rollups with raw rows"
        )
    return None
