"""Overview and trend figures from spend totals (pure).

A period (``24h``, ``7d``, ``30d``) is that many whole hours ending with the current one
(still running: the last one is partial), and the previous period the same number of hours
just before it, so "this week against last week" compares like with like (but for the part
of the current hour still to come). A change is in percent of the previous figure, None when
there was nothing before (a new org, a new model: no percentage describes that).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from costwarden.analytics.rollup import hour_of

Period = Literal["24h", "7d", "30d"]
PERIODS: dict[str, timedelta] = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
# The ledger statuses that count as failed requests in the error rate (the upstream failed or
# every candidate did and the degraded answer was given).
FAILED = ("upstream_error", "degraded", "gateway_error")
_PCT = Decimal("0.1")


def windows(period: str, now: datetime) -> tuple[datetime, datetime, datetime]:
    """(previous start, this period's start, now) for ``period``: whole hours."""
    length = PERIODS[period]
    start = hour_of(now) + timedelta(hours=1) - length
    return start - length, start, now


def change_pct(now: Decimal, before: Decimal) -> Decimal | None:
    """``now`` against ``before``, in percent (one decimal); None when ``before`` is 0."""
    if not before:
        return None
    return ((now - before) / before * 100).quantize(_PCT)


def error_rate(requests_by_status: Mapping[str, int]) -> Decimal | None:
    """The share of requests that failed, in percent (one decimal); None without requests."""
    total = sum(requests_by_status.values())
    if not total:
        return None
    failed = sum(n for status, n in requests_by_status.items() if status in FAILED)
    return (Decimal(failed) / total * 100).quantize(_PCT)
