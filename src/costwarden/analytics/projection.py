"""Month-end spend projections: where an org's month is heading, with an interval.

**Method.** From the complete days so far (``daily``: the month's days 1..d) and the days
before them (``history``, e.g. the previous month's last two weeks, so a young month has a
pace to go on):

- the pace is the mean daily spend of the last 7 days (a whole week: weekly patterns, quiet
  weekends, cancel out);
- the projection is what is spent so far plus the pace times the days left;
- the interval (90 %) combines the day-to-day spread and the uncertainty of the pace: with
  ``s`` the standard deviation of the last 14 days' spend, ``r`` the days left and ``n`` the
  days the pace is measured over, the half-width is ``1.645 * s * sqrt(r + r² / n)`` (the
  sum of ``r`` independent days, plus ``r`` times the pace's own error ``s / sqrt(n)``),
  never below what is already spent.

``bench/projections.py`` backtests it on generated series (weekly seasonality, trends, noise,
spikes) and reports the mean absolute percentage error and how often the actual month-end
fell inside the interval. Pure: the analytics API feeds it daily sums.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import Decimal

PACE_DAYS = 7
SPREAD_DAYS = 14
Z_90 = Decimal("1.645")
_CENT = Decimal("0.01")


@dataclasses.dataclass(frozen=True, slots=True)
class Projection:
    spent: Decimal  # so far this month (the complete days given)
    projected: Decimal  # at month end
    low: Decimal  # the 90 % interval
    high: Decimal
    pace: Decimal  # per day
    days_left: int


def project_month(
    daily: Sequence[Decimal], days_in_month: int, history: Sequence[Decimal] = ()
) -> Projection:
    """The month-end projection after ``len(daily)`` complete days of a month of
    ``days_in_month`` days (see the module docstring)."""
    if not 0 <= len(daily) <= days_in_month:
        raise ValueError("more complete days than the month has")
    spent = sum(daily, Decimal(0))
    left = days_in_month - len(daily)
    series = [*history, *daily]
    recent = series[-PACE_DAYS:]
    pace = sum(recent, Decimal(0)) / len(recent) if recent else Decimal(0)
    projected = spent + pace * left
    spread = _stdev(series[-SPREAD_DAYS:])
    n = max(len(recent), 1)
    half = Z_90 * spread * (Decimal(left) + Decimal(left * left) / n).sqrt()
    return Projection(
        spent=spent,
        projected=projected.quantize(_CENT),
        low=max(spent, projected - half).quantize(_CENT),
        high=(projected + half).quantize(_CENT),
        pace=pace.quantize(_CENT),
        days_left=left,
    )


def _stdev(values: Sequence[Decimal]) -> Decimal:
    if len(values) < 2:
        return Decimal(0)
    mean = sum(values, Decimal(0)) / len(values)
    return (sum(((v - mean) ** 2 for v in values), Decimal(0)) / (len(values) - 1)).sqrt()
