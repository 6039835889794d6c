"""Forecast and spike rules: "at this pace the budget is gone before it resets" and "last
hour's spend is far above the usual for that hour". Pure functions over figures the caller
gathered; no I/O, no clock (``now`` is an argument).

**Forecast** (:func:`forecast`). Inputs are a limit's amount, what is settled, what is
reserved in flight (counted as already used: a reservation is money about to be spent), and
recent usage in fixed-size buckets (``(bucket_start, used)``; a bucket that is not given had
no use). The method, with the defaults tuned for 5-minute buckets:

1. *Window.* The last ``lookback_buckets`` (24: two hours) *complete* buckets before ``now``,
   on the grid of multiples of ``bucket_seconds`` since the epoch (what ``floor(ts / size) *
   size`` in SQL gives). The bucket in progress is left out: being partial it would read as a
   slowdown; its use is in ``settled`` anyway. Usage before the limit's window began counts:
   pace is pace, and it lets a daily forecast work in the first hours of the day.
2. *Pace.* The window's mean per-bucket use, as a rate. Two hours of 5-minute buckets average
   out bucket-to-bucket noise (per-bucket LLM spend is bursty: the backtest uses gamma noise
   with a coefficient of variation of 0.5 to 0.7 and 10 to 30 % idle buckets).
3. *Trend.* A least-squares line through the window. Its rise is used only if it is
   significant (t statistic of the slope at least ``trend_t_min``, 3) and only for an
   exhaustion it predicts within ``trend_reach_buckets`` (36: three hours). The projection
   then starts from the line's value at ``now`` and keeps rising at its slope, and the earlier
   of the two exhaustion times wins. Why: a ramp (a runaway agent, a new batch workload) is
   under-read by a mean that lags it, but a slope fitted on two hours of noisy buckets is only
   good for a short extrapolation: its error in the cumulative use grows with the square of
   the distance.
4. *Evidence.* No alert unless at least ``min_active_buckets`` (12: half the window) buckets
   had use and ``min_used_share`` (10 %) of the limit is used (a few buckets are no pace, and
   a forecast on a sliver of the budget is noise amplified by a long horizon); and unless the
   pace ``evidence_z`` (1) standard errors below its estimate exhausts the budget in time too.
   The standard error is the residual spread around the fitted line over root n: sparse or
   uneven use (a burst, mostly idle buckets) needs a clearer pace before it alarms, while a
   steady ramp, whose rise is not counted as spread, loses little. A verdict held back by
   evidence is ``insufficient_evidence``, with the exhaustion still reported.
5. *Margin.* Alert only when the exhaustion falls within the first ``1 - margin_share`` (75 %)
   of the time left before the reset: a prediction that the budget lasts until five minutes
   before the reset is not a reason to wake anyone (the 80 and 100 % threshold alerts still
   cover it). The time left is counted at most ``max_horizon_seconds`` (a day) ahead, and a
   lifetime limit (``resets_at`` None) has no reset, so that is its horizon: two hours of
   evidence say little about next week, and a day has a rhythm (busy hours, quiet nights) that
   a weekly or monthly forecast must not extrapolate from two hours. A weekly or monthly limit
   that should be forecast further ahead is given hourly or daily buckets and a longer
   horizon (the parameters are per call).

Rates are :class:`~decimal.Decimal` units (nano-dollars or tokens) per second, computed in a
34-digit context of this module's own, so a caller's context never changes a result; the
slope's significance test is exact integer arithmetic.

*Why these parameters* (the seeded backtest in ``tests/alerts/test_forecast.py``: its figures
with ``pytest -s``, the comparisons below with ``python -m tests.alerts.test_forecast``; $50
days of 5-minute buckets): with them, 200 ramps (100 starting between 2:00
and 14:00, 100 starting 1 to 4 hours before an evening crossing) all alert before 100 % and
none before its ramp begins, and 200 flat days (40 to 70 %) never alarm. Each choice against
its alternative, on the same days plus 300 more heavy-noise flat days, 400 sparse ones (60 and
85 % idle buckets, exponential noise) and 200 business-hours ones (8:00 to 18:00 at 6.7 times
the night's pace), all of which alarm 0 times with the defaults:

- no trend: the late ramps' median lead falls from 90 to 45 min (minimum 25 to 5);
- the trend extrapolated to the reset instead of 3 h: 37 of the 200 flat days and 151 of the
  business-hours days alarm, and some ramps alarm before they begin;
- ``trend_t_min`` 2: 9 sparse and 3 business-hours days alarm;
- a one-hour window: 13 of the 200 flat days alarm, and 64 of the others;
- a 10 % margin: 10 business-hours, 5 sparse and 1 heavy-noise day alarm;
- no evidence gates: 10 sparse days alarm;
- ``evidence_z`` 0: 15 sparse, 2 heavy-noise and 2 business-hours days alarm, for 25 more
  minutes of median lead on the early ramps.

Known limit: the forecast has no notion of time of day. A day whose use is concentrated in
business hours looks, in the morning, like a pace that would exhaust the budget; the margin
and the evidence test keep the backtest's business-hours days quiet, but a sharper rhythm
(or a tighter budget) would alarm. The spike rule, which compares an hour with the same hour
on previous days, is the one that knows about daily rhythm.

**Spike** (:func:`spike`). Last hour's use against the mean of the same hour on previous days:
a spike when it is at least ``factor`` (3) times that mean. Fewer than ``min_history`` days of
history is no spike (no usual to compare with), and neither is an hour below ``min_amount``
(one US dollar in nano-dollars by default; a token counter passes its own floor): three times
a few cents is nobody's emergency. A usual of zero with an hour above the floor is a spike.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import time
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from fractions import Fraction
from typing import Literal

from costwarden.core.errors import InvalidInput
from costwarden.core.money import NANOS_PER_USD

ForecastVerdict = Literal["alert", "on_track", "insufficient_evidence", "exhausted", "unlimited"]
# Which projection set exhausts_at: the window's mean, the rising trend, or none (no use).
ForecastBasis = Literal["pace", "trend", "none"]
SpikeVerdict = Literal["spike", "normal", "short_history", "below_floor"]

SPIKE_FLOOR_NANOS = NANOS_PER_USD  # one US dollar

# Estimates, not money: 34 digits is far more than the data supports, and fixing the context
# here keeps a caller's (or a test's) decimal context from changing a result.
_CTX = Context(prec=34, rounding=ROUND_HALF_UP)
_ZERO = Decimal(0)
_LAST_DAY = 253_402_214_400.0  # 9999-12-31T00:00:00Z


@dataclasses.dataclass(frozen=True, slots=True)
class ForecastParams:
    """The forecast's knobs (see the module docstring for what each does and why)."""

    lookback_buckets: int = 24
    min_active_buckets: int = 12
    min_used_share: Decimal = Decimal("0.10")
    trend_t_min: Decimal | None = Decimal(3)  # None: never use the trend
    trend_reach_buckets: int = 36
    margin_share: Decimal = Decimal("0.25")
    max_horizon_seconds: int = 86_400
    evidence_z: Decimal = Decimal(1)

    def __post_init__(self) -> None:
        # Three points at least: the slope's significance needs n - 2 > 0 degrees of freedom.
        if self.lookback_buckets < 3:
            raise InvalidInput("lookback_buckets must be at least 3")
        if not 0 <= self.min_active_buckets <= self.lookback_buckets:
            raise InvalidInput("min_active_buckets must be between 0 and lookback_buckets")
        if not _ZERO <= self.min_used_share <= 1:
            raise InvalidInput("min_used_share must be between 0 and 1")
        if self.trend_t_min is not None and self.trend_t_min <= 0:
            raise InvalidInput("trend_t_min must be positive (or None for no trend)")
        if self.trend_reach_buckets < 1:
            raise InvalidInput("trend_reach_buckets must be at least 1")
        if not _ZERO <= self.margin_share < 1:
            raise InvalidInput("margin_share must be at least 0 and below 1")
        if self.max_horizon_seconds <= 0:
            raise InvalidInput("max_horizon_seconds must be positive")
        if self.evidence_z < 0:
            raise InvalidInput("evidence_z must not be negative")


DEFAULT_PARAMS = ForecastParams()


@dataclasses.dataclass(frozen=True, slots=True)
class Forecast:
    """What :func:`forecast` concludes.

    ``rate`` is the use per second (counter units) the projection starts from and ``growth``
    how fast that rate rises (units per second per second; zero unless ``basis`` is
    ``trend``). ``exhausts_at`` is when the limit runs out at that pace (epoch seconds), None
    when it does not before the reset, when nothing is being used, or when it is already
    used up. ``remaining`` is the amount less settled and reserved, never below zero;
    ``active_buckets`` the window's buckets with use (0 when the window was not read: an
    unlimited or used-up limit). ``alert`` is true only for the verdict ``alert``."""

    verdict: ForecastVerdict
    alert: bool
    rate: Decimal
    growth: Decimal
    basis: ForecastBasis
    exhausts_at: float | None
    remaining: int
    used: int
    active_buckets: int
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Window:
    """Integer sums of the window's buckets, oldest first at x = -(n - 1), newest at n - 1
    (x = 2 i - (n - 1): centred, in half-buckets, so every sum is an exact integer)."""

    n: int
    active: int
    sy: int  # sum of use
    sxy: int  # sum of x * use
    syy: int  # sum of use squared
    sxx: int  # sum of x squared: n (n^2 - 1) / 3


def _window(
    buckets: Iterable[tuple[float, int]], bucket_seconds: int, now: float, n: int
) -> _Window:
    current = math.floor(now / bucket_seconds)  # the slot in progress: left out
    first = current - n
    ys = [0] * n
    for start, used in buckets:
        i = int(start // bucket_seconds) - first
        if 0 <= i < n:  # older buckets, and any from the future, are ignored
            ys[i] += used
    # Built-in loops: the backtest calls this some hundred thousand times.
    return _Window(
        n=n,
        active=n - ys.count(0),
        sy=sum(ys),
        sxy=sum(map(operator.mul, _xs(n), ys)),
        syy=sum(map(operator.mul, ys, ys)),
        sxx=n * (n * n - 1) // 3,
    )


@functools.cache
def _xs(n: int) -> tuple[int, ...]:
    return tuple(range(1 - n, n, 2))


def _significant_rise(w: _Window, t_min: Decimal) -> bool:
    """Whether the fitted slope is positive with a t statistic of at least ``t_min``.

    t^2 = sxy^2 (n - 2) / (sxx * SSR), SSR the residual sum of squares; with
    q = n * sxx * SSR = n sxx syy - sxx sy^2 - n sxy^2 (an integer) the test is
    sxy^2 (n - 2) n >= t_min^2 q, exact in integers. q = 0 (a perfect line) is infinitely
    significant."""
    if w.sxy <= 0:
        return False
    num, den = t_min.as_integer_ratio()
    return w.sxy * w.sxy * (w.n - 2) * w.n * den * den >= num * num * _residual_q(w)


def _residual_q(w: _Window) -> int:
    """n * sxx * SSR, SSR the residual sum of squares around the fitted line (exact)."""
    return w.n * w.sxx * w.syy - w.sxx * w.sy * w.sy - w.n * w.sxy * w.sxy


def _sure(p: _Projection, remaining: Decimal, within: Decimal, z: Decimal) -> bool:
    """Whether the projection's starting rate less ``z`` standard errors, rising as it does,
    still uses ``remaining`` within ``within`` seconds (module docstring, step 4).

    The rate needed is ``(remaining - growth within^2 / 2) / within``; comparing squares
    keeps square roots out of a check made on every call."""
    needed = (remaining - p.growth * within * within / 2) / within
    if needed <= 0:  # the rise alone uses it up, whatever the rate it starts from
        return True
    ahead = p.rate - needed
    return ahead >= 0 and ahead * ahead >= z * z * p.variance


def _trend_time(remaining: Decimal, rate: Decimal, growth: Decimal) -> Decimal:
    """Seconds until ``rate * T + growth * T^2 / 2`` reaches ``remaining`` (growth > 0).

    ``2 R / (r + sqrt(r^2 + 2 g R))``: the root of the quadratic written without the
    subtraction that loses digits when the growth is small."""
    return 2 * remaining / (rate + (rate * rate + 2 * growth * remaining).sqrt())


def forecast(
    *,
    amount: int,
    settled: int,
    reserved: int,
    buckets: Iterable[tuple[float, int]],
    bucket_seconds: int,
    now: float,
    resets_at: float | None,
    params: ForecastParams = DEFAULT_PARAMS,
) -> Forecast:
    """Whether, at the recent pace, the limit runs out before it resets (module docstring).

    ``amount`` is the limit in counter units (-1 or any negative: unlimited); ``settled`` and
    ``reserved`` are what is used and in flight now; ``buckets`` are ``(start, used)`` pairs
    (epoch seconds, counter units) of ``bucket_seconds`` each; ``resets_at`` is when the
    limit's window resets (epoch seconds), None for a lifetime limit."""
    with localcontext(_CTX):
        return _forecast(amount, settled, reserved, buckets, bucket_seconds, now, resets_at, params)


def _forecast(
    amount: int,
    settled: int,
    reserved: int,
    buckets: Iterable[tuple[float, int]],
    bucket_seconds: int,
    now: float,
    resets_at: float | None,
    params: ForecastParams,
) -> Forecast:
    if bucket_seconds <= 0:
        raise InvalidInput("bucket_seconds must be positive")
    used = settled + reserved
    if amount < 0:
        return _quiet("unlimited", used, 0, "unlimited: nothing to forecast")
    remaining = amount - used
    if remaining <= 0:
        return _quiet(
            "exhausted",
            used,
            0,
            f"already used up: {_share(used, amount)} used (settled and in flight)",
        )

    w = _window(buckets, bucket_seconds, now, params.lookback_buckets)
    lookback = _lookback_text(params.lookback_buckets * bucket_seconds)
    if w.sy <= 0:
        return _quiet("insufficient_evidence", used, remaining, f"no use in the last {lookback}")
    rem = Decimal(remaining)
    p = _project(w, rem, now, bucket_seconds, params)
    exhausts = now + float(p.seconds)
    exhausts_at = exhausts if resets_at is None or exhausts < resets_at else None
    horizon = float(params.max_horizon_seconds)
    if resets_at is not None:
        horizon = min(horizon, resets_at - now)

    if w.active < params.min_active_buckets:
        verdict: ForecastVerdict = "insufficient_evidence"
        why = (
            f"only {w.active} of the last {w.n} buckets had use "
            f"({params.min_active_buckets} needed for a pace)"
        )
    elif Decimal(used) < params.min_used_share * amount:
        verdict = "insufficient_evidence"
        why = (
            f"{_share(used, amount)} used: below the {_pct(params.min_used_share)} before a "
            "forecast is trusted"
        )
    elif horizon <= 0:
        verdict, why = "on_track", "the window is already due to reset"
    else:
        within = Decimal(horizon) * (1 - params.margin_share)
        if p.seconds > within:
            verdict = "on_track"
        elif _sure(p, rem, within, params.evidence_z):
            verdict = "alert"
        else:
            verdict = "insufficient_evidence"
        why = _verdict_text(verdict, exhausts, exhausts_at, within, resets_at)
    pace_text = _pace_text(p.rate, p.basis, amount, lookback)
    return Forecast(
        verdict=verdict,
        alert=verdict == "alert",
        rate=p.rate,
        growth=p.growth,
        basis=p.basis,
        exhausts_at=exhausts_at,
        remaining=remaining,
        used=used,
        active_buckets=w.active,
        reason=f"{_share(used, amount)} used (settled and in flight); {pace_text}; {why}",
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Projection:
    """Use from now on: starting at ``rate`` (per second), rising at ``growth`` (per second
    squared), gone in ``seconds``; ``variance`` is the starting rate's (its standard error,
    squared)."""

    seconds: Decimal
    rate: Decimal
    growth: Decimal
    basis: ForecastBasis
    variance: Decimal


def _project(
    w: _Window, remaining: Decimal, now: float, bucket_seconds: int, params: ForecastParams
) -> _Projection:
    """The pace's projection, or the rising line's when it is significant, earlier and within
    its reach (module docstring, steps 2 and 3). ``w.sy`` is positive."""
    size = Decimal(bucket_seconds)
    # One bucket's residual variance around the fitted line, as a rate (per second, squared):
    # the line's own rise is not counted as noise, so a steady ramp is not taken for noise.
    spread = Decimal(_residual_q(w)) / (w.n * w.sxx * (w.n - 2)) / (size * size)
    pace = Decimal(w.sy) / (w.n * size)
    by_pace = _Projection(remaining / pace, pace, _ZERO, "pace", spread / w.n)
    if params.trend_t_min is None or not _significant_rise(w, params.trend_t_min):
        return by_pace
    # The line's value at now: x = 2 u - n, u = n + the part of the bucket in progress that
    # has passed (u counts buckets from the window's start, x half-buckets from its middle).
    x_now = w.n + 2 * Decimal(now % bucket_seconds) / size
    slope_x = Decimal(w.sxy) / w.sxx  # use per bucket, per half-bucket of x
    at_now = (Decimal(w.sy) / w.n + slope_x * x_now) / size
    rising = 2 * slope_x / (size * size)  # per bucket per bucket -> per second squared
    seconds = _trend_time(remaining, at_now, rising)
    if seconds >= by_pace.seconds or seconds > params.trend_reach_buckets * size:
        return by_pace
    # The fitted line's variance at x_now: s^2 (1/n + x_now^2 / sxx).
    return _Projection(
        seconds, at_now, rising, "trend", spread * (1 / Decimal(w.n) + x_now * x_now / w.sxx)
    )


def _quiet(verdict: ForecastVerdict, used: int, remaining: int, reason: str) -> Forecast:
    return Forecast(
        verdict=verdict,
        alert=False,
        rate=_ZERO,
        growth=_ZERO,
        basis="none",
        exhausts_at=None,
        remaining=remaining,
        used=used,
        active_buckets=0,
        reason=reason,
    )


def _verdict_text(
    verdict: ForecastVerdict,
    exhausts: float,
    exhausts_at: float | None,
    within: Decimal,
    resets_at: float | None,
) -> str:
    when = _when(exhausts)
    if verdict == "insufficient_evidence":
        return (
            f"runs out at {when} at this pace, but use is too uneven to be sure: at the low "
            "end of the pace's estimate it lasts longer"
        )
    if verdict == "alert":
        if resets_at is None:
            return f"runs out at {when}, within the next {_span(float(within))}"
        return f"runs out at {when}, {_span(resets_at - exhausts)} before the reset"
    if exhausts_at is None and resets_at is not None:
        return f"lasts until the reset at {_when(resets_at)}"
    return f"runs out at {when}: later than the {_span(float(within))} ahead it alerts for"


def _pace_text(rate: Decimal, basis: ForecastBasis, amount: int, lookback: str) -> str:
    per_mille = int(rate * 3_600_000 / amount)  # of the limit, per hour
    how = "rising" if basis == "trend" else "steady"
    return f"pace of the last {lookback}: {_tenths(per_mille)} of the limit per hour, {how}"


def _share(used: int, amount: int) -> str:
    if amount <= 0:
        return "all"
    return _tenths(used * 1000 // amount)


def _pct(ratio: Decimal) -> str:
    return _tenths(int(ratio * 1000))


def _tenths(per_mille: int) -> str:
    """Tenths of a per cent, rounded down (as risks.py does: 99.96 % used is not "100.0 %");
    integer formatting, as this runs on every forecast."""
    return f"{per_mille // 10}.{per_mille % 10} %"


def _when(epoch: float) -> str:
    if epoch >= _LAST_DAY:  # a pace so slow that the date would not print
        return "after the year 9999"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


@functools.lru_cache(maxsize=16)
def _lookback_text(seconds: int) -> str:
    return _span(seconds)  # the same few windows on every call: formatted once


def _span(seconds: float) -> str:
    """A duration a person reads: "2 h", "3 h 10 min", "45 min", "2 d 3 h"."""
    minutes = max(0, round(seconds / 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {mins} min" if mins else f"{hours} h"
    return f"{mins} min"


@dataclasses.dataclass(frozen=True, slots=True)
class SpikeResult:
    """What :func:`spike` concludes. ``usual`` is the trailing mean of the same hour on
    previous days (None without enough history); ``ratio`` is the last hour over it (None
    when there is no usual, or it is zero)."""

    verdict: SpikeVerdict
    spike: bool
    last_hour: int
    usual: Decimal | None
    ratio: Decimal | None
    reason: str


def spike(
    last_hour: int,
    same_hour_history: Sequence[int],
    factor: Decimal = Decimal(3),
    *,
    min_history: int = 3,
    min_amount: int = SPIKE_FLOOR_NANOS,
) -> SpikeResult:
    """Whether ``last_hour`` is at least ``factor`` times the mean of ``same_hour_history``
    (the same hour on previous days, in the same counter units). See the module docstring."""
    if factor <= 0:
        raise InvalidInput("factor must be positive")
    if min_history < 1:
        raise InvalidInput("min_history must be at least 1")
    with localcontext(_CTX):
        return _spike(last_hour, same_hour_history, factor, min_history, min_amount)


def _spike(
    last_hour: int,
    history: Sequence[int],
    factor: Decimal,
    min_history: int,
    min_amount: int,
) -> SpikeResult:
    days = len(history)
    if days < min_history:
        return SpikeResult(
            verdict="short_history",
            spike=False,
            last_hour=last_hour,
            usual=None,
            ratio=None,
            reason=f"only {days} previous days of this hour ({min_history} needed)",
        )
    total = sum(history)
    usual = Decimal(total) / days
    ratio = Decimal(last_hour) / usual if total > 0 else None
    usual_text = f"a usual {usual.quantize(Decimal(1), rounding=ROUND_HALF_UP)} over {days} days"
    # A floor of at least 1: an empty hour is never a spike, even over an empty history.
    if last_hour < max(min_amount, 1):
        return SpikeResult(
            verdict="below_floor",
            spike=False,
            last_hour=last_hour,
            usual=usual,
            ratio=ratio,
            reason=f"{last_hour} in the last hour: below the floor of {min_amount}",
        )
    # last_hour >= factor * total / days, exactly: factor as a fraction, both sides integers
    # (the boundary, exactly factor times the usual, is a spike).
    f = Fraction(factor)
    is_spike = last_hour * days * f.denominator >= f.numerator * total
    if ratio is None:
        times = "over a usual of zero"
    else:
        times = f"{ratio.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)} times {usual_text}"
    if is_spike:
        reason = f"{last_hour} in the last hour, {times}: at least {factor} times"
    else:
        reason = f"{last_hour} in the last hour, {times}: under {factor} times"
    return SpikeResult(
        verdict="spike" if is_spike else "normal",
        spike=is_spike,
        last_hour=last_hour,
        usual=usual,
        ratio=ratio,
        reason=reason,
    )
