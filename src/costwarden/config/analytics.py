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


def analytics_problem(a: AnalyticsSettings) -> tuple[str, str] | None:
    """(field, what is wrong) for the first out-of-range ``[analytics]`` value, or None."""
    for name in ("rollup_interval_seconds", "lag_seconds"):
        if not 0 < getattr(a, name) < math.inf:
            return name, "must be a positive number"
    if not 1 <= a.reconcile_days <= 366:
        return "reconcile_days", "must be from 1 to 366"
    return None
