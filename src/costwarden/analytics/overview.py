"""Overview and trend figures from spend totals (pure).

A period (``24h``, ``7d``, ``30d``) is that many whole hours ending with the current one
(still running: the last one is partial), and the previous period the same number of hours
just before it, so "this week against last week" compares like with like (but for the part
of the current hour still to come). A change is in percent of the previous figure, None when
there was nothing before (a new org, a new model: no percentage describes that).

The response cache's figures (:class:`CacheCounts`, :func:`hit_rate`) are counted from the
ledger's status: a hit is a request of status ``cached``. What the hits saved is a rollup
measure of its own (``saved_usd``), not ``cache_savings_usd`` (the provider's prompt caching).
"""

from __future__ import annotations

import dataclasses
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
# The response cache: a hit's status, and the statuses of the requests that were answered,
# from an upstream or from the cache (the hit rate's denominator).
CACHED = "cached"
ANSWERED = ("success", CACHED)
_RATE = Decimal("0.0001")


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


@dataclasses.dataclass(slots=True)
class CacheCounts:
    """A group's response-cache hits (requests of status ``cached``) and the requests that
    were answered (status ``success`` or ``cached``)."""

    hits: int = 0
    answered: int = 0

    def count(self, status: str, requests: int) -> None:
        """Add ``requests`` requests of ``status``."""
        if status == CACHED:
            self.hits += requests
        if status in ANSWERED:
            self.answered += requests

    def add(self, other: CacheCounts) -> None:
        self.hits += other.hits
        self.answered += other.answered


def hit_rate(counts: CacheCounts) -> Decimal | None:
    """The response cache's hit rate: hits over the requests that were answered, from an
    upstream or from the cache (status ``success`` + ``cached``), as a fraction to four places
    (``0.2500``); None when none was answered. Refused requests (blocked, client and auth
    errors), failures (upstream and gateway errors, degraded answers), cancelled ones and
    stopped sessions are left out: the rate is the share of the answers that came from the
    cache."""
    if not counts.answered:
        return None
    return (Decimal(counts.hits) / counts.answered).quantize(_RATE)


def hit_rate_pct(counts: CacheCounts) -> Decimal | None:
    """:func:`hit_rate` in percent (one decimal, like the error rate); None as it."""
    if not counts.answered:
        return None
    return (Decimal(counts.hits) / counts.answered * 100).quantize(_PCT)
