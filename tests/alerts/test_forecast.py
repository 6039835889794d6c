"""The forecast and spike rules: exact tables for their arithmetic and gates, and a seeded
backtest on synthetic days that holds the chosen parameters to figures (run with ``-s`` to
see them): ramps caught before they cross 100 %, flat days that never alarm."""

from __future__ import annotations

import dataclasses
import random
import statistics
from decimal import Context, Decimal, localcontext

import pytest

from costwarden.alerts.forecast import (
    DEFAULT_PARAMS,
    SPIKE_FLOOR_NANOS,
    Forecast,
    ForecastParams,
    forecast,
    spike,
)
from costwarden.core.errors import InvalidInput
from costwarden.core.money import NANOS_PER_USD

BUCKET = 300  # five minutes
DAY_BUCKETS = 288
DAY0 = 1_700_006_400.0  # 2023-11-15 00:00 UTC: a day's window starts on a bucket boundary
RESET = DAY0 + 86_400
LIMIT = 50 * NANOS_PER_USD  # a $50 daily budget, in nano-dollars
NOON = DAY0 + 12 * 3600


def _steady(per_bucket: int, count: int, end: float) -> list[tuple[float, int]]:
    """``count`` complete buckets of ``per_bucket`` each, the newest ending at ``end``."""
    return [(end - (count - i) * BUCKET, per_bucket) for i in range(count)]


def _run(
    buckets: list[tuple[float, int]],
    *,
    amount: int = 100_000,
    settled: int = 50_000,
    reserved: int = 0,
    now: float = NOON,
    resets_at: float | None = NOON + 40_000,
    params: ForecastParams = DEFAULT_PARAMS,
) -> Forecast:
    return forecast(
        amount=amount,
        settled=settled,
        reserved=reserved,
        buckets=buckets,
        bucket_seconds=BUCKET,
        now=now,
        resets_at=resets_at,
        params=params,
    )


ONE_PER_SECOND = _steady(BUCKET, 24, NOON)  # 300 units a bucket: exactly 1 unit per second


# -- the arithmetic and the gates, exactly ------------------------------------------------


def test_a_steady_pace_is_the_window_mean_and_the_exhaustion_is_remaining_over_it() -> None:
    f = _run(ONE_PER_SECOND, settled=70_000)  # 30,000 left at 1 per second: 30,000 s
    assert f.rate == Decimal(1)
    assert f.growth == 0 and f.basis == "pace"
    assert f.exhausts_at == NOON + 30_000
    assert f.remaining == 30_000 and f.used == 70_000 and f.active_buckets == 24


@pytest.mark.parametrize(
    ("settled", "verdict"),
    [
        (70_000, "alert"),  # out in 30,000 s: exactly 75 % of the 40,000 s left
        (69_999, "on_track"),  # one unit more to go: 30,001 s, inside the 25 % margin
    ],
)
def test_the_margin_is_a_quarter_of_the_time_left_with_its_boundary_alerting(
    settled: int, verdict: str
) -> None:
    f = _run(ONE_PER_SECOND, settled=settled)
    assert f.verdict == verdict
    assert f.alert is (verdict == "alert")
    assert f.exhausts_at == NOON + (100_000 - settled)  # before the reset either way


def test_reservations_in_flight_count_as_used() -> None:
    assert _run(ONE_PER_SECOND, settled=60_000).verdict == "on_track"
    f = _run(ONE_PER_SECOND, settled=60_000, reserved=10_000)
    assert f.verdict == "alert"
    assert f.used == 70_000 and f.remaining == 30_000


def test_missing_buckets_are_zero_and_the_bucket_in_progress_is_left_out() -> None:
    every_other = ONE_PER_SECOND[1::2]  # 12 of the 24 buckets: half the pace
    in_progress = (NOON, 10**9)  # started at now: partial, so not a pace
    future = (NOON + 3600, 10**9)  # a clock ahead of ours: ignored
    stale = (NOON - 3 * 3600, 10**9)  # older than the two-hour window
    f = _run([*every_other, in_progress, future, stale], settled=70_000, resets_at=NOON + 10**5)
    assert f.rate == Decimal("0.5")
    assert f.active_buckets == 12
    assert f.exhausts_at == NOON + 60_000  # 30,000 left at 0.5 per second


def test_exhaustion_after_the_reset_is_none() -> None:
    f = _run(ONE_PER_SECOND[1::2], settled=70_000)  # 0.5 per second: 60,000 s > 40,000 s
    assert f.exhausts_at is None
    assert f.verdict == "on_track"
    assert "lasts until the reset" in f.reason


def test_buckets_on_a_shared_slot_add_up() -> None:
    halves = [(start, used // 2) for start, used in ONE_PER_SECOND]
    f = _run(halves + halves, settled=70_000)
    assert f.rate == Decimal(1)


@pytest.mark.parametrize(
    ("active", "settled", "verdict"),
    [
        (11, 90_000, "insufficient_evidence"),  # 11 buckets: under half the window
        (12, 90_000, "alert"),
        (24, 9_999, "insufficient_evidence"),  # 9.999 % used: under the 10 % floor
        (24, 10_000, "on_track"),  # trusted now, and 90,000 at 1 per second outlasts
    ],
)
def test_evidence_gates(active: int, settled: int, verdict: str) -> None:
    buckets = [(s, u * 24 // active) for s, u in ONE_PER_SECOND[24 - active :]]
    f = _run(buckets, settled=settled)
    assert f.verdict == verdict
    assert f.active_buckets == active
    if settled < 10_000:
        assert f.reason.endswith("9.9 % used: below the 10.0 % before a forecast is trusted")


def test_insufficient_evidence_still_reports_the_pace_but_never_alerts() -> None:
    # 8 buckets of 900, one in three (no slope), average to 1 per second over the window: the
    # last 10,000 units would go in under 3 hours, a pace worth reporting, but 8 buckets are
    # no evidence of one.
    f = _run([(s, 900) for s, _ in ONE_PER_SECOND[1::3]], settled=90_000)
    assert f.verdict == "insufficient_evidence" and not f.alert
    assert f.rate == Decimal(1) and f.basis == "pace"
    assert f.exhausts_at is not None
    assert "only 8 of the last 24 buckets had use (12 needed" in f.reason


def test_empty_history_is_no_evidence() -> None:
    f = _run([], settled=90_000)
    assert f.verdict == "insufficient_evidence" and not f.alert
    assert f.rate == 0 and f.exhausts_at is None and f.basis == "none"
    assert f.remaining == 10_000
    assert f.reason == "no use in the last 2 h"


@pytest.mark.parametrize(
    ("amount", "settled", "reserved", "verdict", "remaining"),
    [
        (-1, 10**12, 0, "unlimited", 0),
        (100_000, 100_000, 0, "exhausted", 0),
        (100_000, 99_000, 5_000, "exhausted", 0),  # the reservations push it over
        (0, 0, 0, "exhausted", 0),  # nothing allowed: nothing left to forecast
    ],
)
def test_unlimited_and_exhausted_never_alert(
    amount: int, settled: int, reserved: int, verdict: str, remaining: int
) -> None:
    f = _run(ONE_PER_SECOND, amount=amount, settled=settled, reserved=reserved)
    assert f.verdict == verdict and not f.alert
    assert f.remaining == remaining and f.exhausts_at is None


def test_a_lifetime_limit_alerts_within_a_day_only() -> None:
    soon = _run(ONE_PER_SECOND, settled=50_000, resets_at=None)  # 50,000 s: within 18 h
    assert soon.verdict == "alert" and soon.exhausts_at == NOON + 50_000
    assert "runs out at 2023-11-16 01:53 UTC, within the next 18 h" in soon.reason
    later = _run(ONE_PER_SECOND, amount=200_000, settled=100_000, resets_at=None)
    assert later.verdict == "on_track"  # 100,000 s: past 18 h, the day less its margin
    assert later.exhausts_at == NOON + 100_000  # no reset: the time is still told
    assert "later than the 18 h ahead it alerts for" in later.reason


def test_the_reason_says_when_and_how_close_to_the_reset() -> None:
    alert = _run(ONE_PER_SECOND, settled=70_000)
    assert alert.reason == (
        "70.0 % used (settled and in flight); pace of the last 2 h: 3.6 % of the limit per "
        "hour, steady; runs out at 2023-11-15 20:20 UTC, 2 h 47 min before the reset"
    )
    close = _run(ONE_PER_SECOND, settled=69_999)
    assert close.reason.endswith(
        "runs out at 2023-11-15 20:20 UTC: later than the 8 h 20 min ahead it alerts for"
    )


def test_a_month_long_window_is_forecast_a_day_ahead_unless_told_otherwise() -> None:
    in_20_days = NOON + 20 * 86_400
    soon = _run(ONE_PER_SECOND, amount=1_000_000, settled=990_000, resets_at=in_20_days)
    assert soon.verdict == "alert"  # out in under 3 hours
    # Out in 3 days at this pace: before the reset, but two hours of 5-minute buckets do not
    # speak for three days ahead.
    days3 = _run(ONE_PER_SECOND, amount=1_000_000, settled=740_800, resets_at=in_20_days)
    assert days3.verdict == "on_track" and days3.exhausts_at == NOON + 259_200
    further = dataclasses.replace(DEFAULT_PARAMS, max_horizon_seconds=30 * 86_400)
    told = _run(
        ONE_PER_SECOND, amount=1_000_000, settled=740_800, resets_at=in_20_days, params=further
    )
    assert told.verdict == "alert"


def test_a_window_already_due_to_reset_does_not_alert() -> None:
    f = _run(ONE_PER_SECOND, settled=90_000, resets_at=NOON)
    assert f.verdict == "on_track" and f.exhausts_at is None


def test_uneven_use_needs_a_clearer_pace() -> None:
    # 0 and 600 in turn: a mean of 1 per second that would use the last 30,000 in exactly the
    # 75 % of the time left, but one standard error below it (about 0.79 per second) it would
    # not: not enough evidence to alert. Told to ignore the spread, it alerts.
    uneven = [(s, 600 if i % 2 else 0) for i, (s, _) in enumerate(ONE_PER_SECOND)]
    f = _run(uneven, settled=70_000)
    assert f.rate == 1 and f.exhausts_at == NOON + 30_000
    assert f.verdict == "insufficient_evidence" and not f.alert
    assert "too uneven to be sure" in f.reason
    trusting = dataclasses.replace(DEFAULT_PARAMS, evidence_z=Decimal(0))
    assert _run(uneven, settled=70_000, params=trusting).verdict == "alert"
    # Twice the pace's doubt to spare: 10,000 left, the low end exhausts it well in time.
    assert _run(uneven, settled=90_000).verdict == "alert"


def test_a_significant_rise_projects_a_growing_rate() -> None:
    # Use per bucket rising by exactly 30 a bucket: 0.1 units/s more every 300 s.
    ramp = [(NOON - (24 - i) * BUCKET, 300 + 30 * i) for i in range(24)]
    f = _run(ramp, settled=90_000)
    assert f.basis == "trend"
    assert f.growth == Context(prec=34).divide(Decimal(30), BUCKET * BUCKET)
    # The line's value at now (the end of bucket 23, half a bucket past its centre).
    assert f.rate == Decimal(300 + 30 * 23.5) / BUCKET
    assert f.exhausts_at is not None
    seconds = Decimal(repr(f.exhausts_at - NOON))
    projected = f.rate * seconds + f.growth * seconds * seconds / 2
    assert abs(projected - 10_000) < Decimal("0.001")
    assert f.verdict == "alert" and "rising" in f.reason
    flat = _run(ramp, settled=90_000, params=dataclasses.replace(DEFAULT_PARAMS, trend_t_min=None))
    assert flat.basis == "pace" and flat.exhausts_at is not None
    assert flat.exhausts_at > f.exhausts_at  # the mean lags the ramp


def test_the_rising_line_is_read_at_now_within_the_bucket_in_progress() -> None:
    ramp = [(NOON - (24 - i) * BUCKET, 300 + 30 * i) for i in range(24)]
    in_progress = (NOON, 5)  # a partial bucket: not part of the line
    f = _run([*ramp, in_progress], settled=90_005, now=NOON + BUCKET / 2)
    assert f.basis == "trend"
    # Half a bucket into the next one: a whole bucket past the newest bucket's centre.
    assert f.rate == Decimal(300 + 30 * 24) / BUCKET


def test_noise_is_not_a_trend() -> None:
    # Alternating 0 and 600 with one high bucket at the end: a positive slope, far from
    # significant (t about 1.2).
    noisy = [(s, 600 if i % 2 else 0) for i, (s, _) in enumerate(ONE_PER_SECOND)]
    noisy[-1] = (noisy[-1][0], 900)
    f = _run(noisy, settled=50_000)
    assert f.basis == "pace" and f.growth == 0


def test_a_rise_is_trusted_only_for_an_exhaustion_within_its_reach() -> None:
    ramp = [(NOON - (24 - i) * BUCKET, 300 + 30 * i) for i in range(24)]
    near = _run(ramp, amount=400_000, settled=360_000, resets_at=NOON + 86_400)
    assert near.basis == "trend"  # 40,000 units: about 2.3 h on the rising line
    far = _run(ramp, amount=10_000_000, settled=9_000_000, resets_at=NOON + 86_400)
    assert far.basis == "pace"  # 1,000,000: far past the 3 h the rise is trusted for


def test_the_decimal_context_of_the_caller_does_not_matter() -> None:
    before = _run(ONE_PER_SECOND[1::3], settled=70_000)
    with localcontext(Context(prec=3)):
        after = _run(ONE_PER_SECOND[1::3], settled=70_000)
    assert after == before
    assert len(before.rate.as_tuple().digits) > 20  # 1/3: all 34 digits, not 3


@pytest.mark.parametrize(
    "change",
    [
        {"lookback_buckets": 2},
        {"min_active_buckets": 25},
        {"min_used_share": Decimal("1.5")},
        {"trend_t_min": Decimal(0)},
        {"trend_reach_buckets": 0},
        {"margin_share": Decimal(1)},
        {"max_horizon_seconds": 0},
        {"evidence_z": Decimal(-1)},
    ],
)
def test_parameters_out_of_range_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        dataclasses.replace(DEFAULT_PARAMS, **change)  # type: ignore[arg-type]


def test_a_bucket_size_of_zero_is_refused() -> None:
    with pytest.raises(InvalidInput):
        forecast(
            amount=1,
            settled=0,
            reserved=0,
            buckets=[],
            bucket_seconds=0,
            now=NOON,
            resets_at=None,
        )


# -- spike --------------------------------------------------------------------------------

USD = NANOS_PER_USD


@pytest.mark.parametrize(
    ("last_hour", "history", "factor", "verdict"),
    [
        (100 * USD, [USD, USD], Decimal(3), "short_history"),  # 2 days: 3 needed
        (100 * USD, [], Decimal(3), "short_history"),
        (30 * USD, [10 * USD] * 3, Decimal(3), "spike"),  # exactly 3 times: a spike
        (30 * USD - 1, [10 * USD] * 3, Decimal(3), "normal"),  # one nano-dollar under
        # A mean of 5/3 $: 3 times it is 5 $ exactly, with no rounding of the thirds.
        (5 * USD, [USD, 2 * USD, 2 * USD], Decimal(3), "spike"),
        (5 * USD - 1, [USD, 2 * USD, 2 * USD], Decimal(3), "normal"),
        (25 * USD, [10 * USD] * 4, Decimal("2.5"), "spike"),  # a factor with a fraction
        (25 * USD - 1, [10 * USD] * 4, Decimal("2.5"), "normal"),
        (USD - 1, [0, 0, 0], Decimal(3), "below_floor"),  # cents over nothing: no spike
        (USD, [0, 0, 0], Decimal(3), "spike"),  # at the floor over a usual of zero
        (USD // 2, [USD // 100] * 5, Decimal(3), "below_floor"),  # 50 times, but 50 cents
    ],
)
def test_spike_table(last_hour: int, history: list[int], factor: Decimal, verdict: str) -> None:
    result = spike(last_hour, history, factor)
    assert result.verdict == verdict
    assert result.spike is (verdict == "spike")
    assert result.last_hour == last_hour


def test_spike_reports_the_usual_and_the_ratio() -> None:
    result = spike(50 * USD, [10 * USD, 10 * USD, 10 * USD, 20 * USD])
    assert result.usual == Decimal(12.5 * USD)
    assert result.ratio == Decimal(4)
    assert result.reason.startswith("50000000000 in the last hour, 4.00 times a usual")
    nothing_usual = spike(2 * USD, [0, 0, 0])
    assert nothing_usual.usual == 0 and nothing_usual.ratio is None
    assert "over a usual of zero" in nothing_usual.reason


def test_spike_history_floor_and_minimum_are_the_callers_to_set() -> None:
    # A token counter: 40,000 tokens against a usual of 10,000, with a floor in tokens.
    assert spike(40_000, [10_000] * 3, min_amount=5_000).spike
    assert spike(40_000, [10_000] * 3).verdict == "below_floor"  # the dollar floor in tokens
    assert spike(40_000, [10_000], min_history=1, min_amount=5_000).spike
    assert spike(0, [0, 0, 0], min_amount=0).verdict == "below_floor"  # nothing is nothing
    assert SPIKE_FLOOR_NANOS == USD


@pytest.mark.parametrize("bad", [{"factor": Decimal(0)}, {"min_history": 0}])
def test_spike_refuses_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        spike(USD, [USD] * 3, **bad)  # type: ignore[arg-type]


# -- backtest -----------------------------------------------------------------------------
# Synthetic $50 days of 5-minute buckets, replayed as the alerting job would see them: at the
# end of every bucket, the last two hours of complete buckets, settled use so far, and a
# quarter of the bucket in progress in flight. Per-bucket use is gamma noise around the
# day's pace: a coefficient of variation of 0.5 with 10 % idle buckets, or of 0.7 with 30 %
# idle ("heavy"), the idle ones made up for by the others.

Day = list[int]  # use per bucket, 288 of them


def _noisy(rng: random.Random, mean: float, *, shape: float = 4.0, idle: float = 0.1) -> int:
    if rng.random() < idle:
        return 0
    return int(rng.gammavariate(shape, mean / (1 - idle) / shape))


def _flat_day(rng: random.Random, heavy: bool) -> Day:
    """Steady use ending the day at 40 to 70 % of the budget."""
    mean = rng.uniform(0.4, 0.7) * LIMIT / DAY_BUCKETS
    shape, idle = (2.0, 0.3) if heavy else (4.0, 0.1)
    return [_noisy(rng, mean, shape=shape, idle=idle) for _ in range(DAY_BUCKETS)]


def _ramp_day(rng: random.Random, late: bool) -> tuple[Day, int]:
    """A steady base (20 to 50 % a day) and, from a start bucket on, use per bucket growing
    linearly so that the day would cross 100 % at a chosen bucket; redrawn until the noisy
    day really crosses before the reset. ``late``: the ramp starts 1 to 4 hours before a
    crossing between 18:00 and 23:30 (a runaway in the evening); else it starts between 2:00
    and 14:00 and crosses 2 hours or more later, before 23:00."""
    while True:
        if late:
            base = rng.uniform(0.2, 0.4) * LIMIT / DAY_BUCKETS
            cross = rng.randrange(18 * 12, 23 * 12 + 6)
            start = cross - rng.randrange(12, 48)
        else:
            base = rng.uniform(0.2, 0.5) * LIMIT / DAY_BUCKETS
            start = rng.randrange(2 * 12, 14 * 12)
            cross = rng.randrange(start + 24, 23 * 12)
        slope = 2 * (LIMIT - base * cross) / (cross - start) ** 2
        day = [
            _noisy(rng, base + (slope * (i + 0.5 - start) if i >= start else 0))
            for i in range(DAY_BUCKETS)
        ]
        if sum(day) >= LIMIT:
            return day, start


def _business_hours_day(rng: random.Random) -> Day:
    """40 to 70 % a day, with 8:00 to 18:00 at 6.7 times the night's pace."""
    weights = [2.0 if 8 * 12 <= i < 18 * 12 else 0.3 for i in range(DAY_BUCKETS)]
    total = rng.uniform(0.4, 0.7) * LIMIT / sum(weights)
    return [_noisy(rng, w * total) for w in weights]


@dataclasses.dataclass(frozen=True)
class _Replay:
    first_alert: int | None  # buckets complete when the forecast first alerted
    crossing: int | None  # buckets complete when settled use reached 100 %


def _replay(day: Day, params: ForecastParams = DEFAULT_PARAMS) -> _Replay:
    """Run the forecast at the end of every bucket until it alerts or the day crosses 100 %
    (a raised alert stays raised: dedupe keeps one per window)."""
    pairs = [(DAY0 + i * BUCKET, used) for i, used in enumerate(day)]
    settled = 0
    for k in range(1, DAY_BUCKETS):
        settled += day[k - 1]
        if settled >= LIMIT:
            return _Replay(first_alert=None, crossing=k)
        f = forecast(
            amount=LIMIT,
            settled=settled,
            reserved=day[k] // 4,
            buckets=pairs[max(0, k - params.lookback_buckets) : k],
            bucket_seconds=BUCKET,
            now=DAY0 + k * BUCKET,
            resets_at=RESET,
            params=params,
        )
        if f.alert:
            cumulative = settled
            for j in range(k, DAY_BUCKETS):
                cumulative += day[j]
                if cumulative >= LIMIT:
                    return _Replay(first_alert=k, crossing=j + 1)
            return _Replay(first_alert=k, crossing=None)
    return _Replay(first_alert=None, crossing=None)


def _leads(days: list[tuple[Day, int]], params: ForecastParams) -> list[int]:
    """Minutes from the first alert to the 100 % crossing, asserting on the way that every
    ramp alerted before it crossed and none before its ramp began."""
    leads = []
    for day, start in days:
        replay = _replay(day, params)
        assert replay.first_alert is not None, f"a ramp crossed unannounced: {replay}"
        assert replay.crossing is not None
        assert start < replay.first_alert < replay.crossing, (start, replay)
        leads.append((replay.crossing - replay.first_alert) * BUCKET // 60)
    return leads


def _false_alarms(days: list[Day]) -> int:
    alarms = 0
    for day in days:
        assert sum(day) < LIMIT  # a day that never reaches 100 %
        alarms += _replay(day).first_alert is not None
    return alarms


def test_backtest_ramps_alert_before_they_cross() -> None:
    rng = random.Random(20231115)
    gradual = [_ramp_day(rng, late=False) for _ in range(100)]
    late = [_ramp_day(rng, late=True) for _ in range(100)]
    gradual_leads = _leads(gradual, DEFAULT_PARAMS)
    late_leads = _leads(late, DEFAULT_PARAMS)
    every = gradual_leads + late_leads
    print(
        f"\nforecast backtest, ramps: {len(every)} series, all alerted before 100 % and none "
        f"before its ramp began; lead median {statistics.median(every)} min, "
        f"min {min(every)} min; gradual (100): median {statistics.median(gradual_leads)}, "
        f"min {min(gradual_leads)}; late (100): median {statistics.median(late_leads)}, "
        f"min {min(late_leads)}"
    )
    assert statistics.median(every) >= 90
    assert statistics.median(late_leads) >= 60
    assert min(every) >= 15


def test_the_trend_earns_a_late_ramp_its_lead() -> None:
    # Noise-free: a 30 %-a-day base, and from 19:00 use growing so that 100 % falls at 21:30.
    # The sweep (python -m tests.alerts.test_forecast) has the same on 100 noisy late ramps:
    # median lead 90 min with the trend, 45 without.
    base = 0.3 * LIMIT / DAY_BUCKETS
    start, cross = 19 * 12, 21 * 12 + 6
    slope = 2 * (LIMIT - base * cross) / (cross - start) ** 2
    day = [int(base + (slope * (i + 0.5 - start) if i >= start else 0)) for i in range(DAY_BUCKETS)]
    with_trend = _replay(day)
    without = _replay(day, dataclasses.replace(DEFAULT_PARAMS, trend_t_min=None))
    assert with_trend.crossing == without.crossing == cross + 1
    assert with_trend.first_alert is not None and without.first_alert is not None
    lead = (cross + 1 - with_trend.first_alert) * 5
    lead_without = (cross + 1 - without.first_alert) * 5
    assert (lead, lead_without) == (110, 55)


def test_backtest_flat_days_never_alarm() -> None:
    rng = random.Random(20231116)
    days = [_flat_day(rng, heavy=i % 2 == 1) for i in range(200)]
    alarms = _false_alarms(days)
    ends = sorted(sum(day) * 100 // LIMIT for day in days)
    print(
        f"\nforecast backtest, flat days: {len(days)} series ending at {ends[0]} to "
        f"{ends[-1]} % (half with heavy noise), false alarms: {alarms}"
    )
    assert alarms == 0


def test_backtest_business_hours_days_rarely_alarm() -> None:
    # The known limit (module docstring): the forecast has no time of day, and at 8:00 a
    # business-hours pace does look like one that would not last the day.
    rng = random.Random(20231117)
    days = [_business_hours_day(rng) for _ in range(40)]
    alarms = _false_alarms(days)
    print(f"\nforecast backtest, business-hours days: {len(days)} series, alarms: {alarms}")
    assert alarms <= 4  # 10 %


def _quiet_day_with_burst(burst_share: float, *, background: bool) -> Day:
    """No noise: a 30 %-a-day base (or nothing), and at 10:00 a burst of ``burst_share`` of
    the budget over three buckets."""
    base = int(0.3 * LIMIT / DAY_BUCKETS) if background else 0
    day = [base] * DAY_BUCKETS
    for i in range(120, 123):
        day[i] += int(burst_share * LIMIT / 3)
    return day


def _verdicts(day: Day, ks: range) -> list[Forecast]:
    pairs = [(DAY0 + i * BUCKET, used) for i, used in enumerate(day)]
    return [
        forecast(
            amount=LIMIT,
            settled=sum(day[:k]),
            reserved=0,
            buckets=pairs[max(0, k - 24) : k],
            bucket_seconds=BUCKET,
            now=DAY0 + k * BUCKET,
            resets_at=RESET,
        )
        for k in ks
    ]


def test_a_burst_alone_is_no_pace() -> None:
    # 30 % of the budget in 15 minutes on a quiet day: three buckets are no evidence of a
    # pace (the threshold alerts and the spike rule speak for it).
    day = _quiet_day_with_burst(0.3, background=False)
    forecasts = _verdicts(day, range(121, DAY_BUCKETS))
    assert not any(f.alert for f in forecasts)
    assert {f.verdict for f in forecasts} == {"insufficient_evidence"}


def test_a_small_burst_over_a_steady_base_does_not_alert() -> None:
    day = _quiet_day_with_burst(0.05, background=True)
    assert not any(f.alert for f in _verdicts(day, range(1, DAY_BUCKETS)))


def test_a_large_burst_alerts_while_it_is_the_pace_then_quiet_takes_over() -> None:
    # 40 % in 15 minutes over a steady base. Its first bucket alone is too uneven a pace to
    # trust; with the second it cannot be told from a step up (a runaway starts the same way),
    # so it alerts; once it has left the two-hour window the pace is the base again.
    day = _quiet_day_with_burst(0.4, background=True)
    assert not any(f.alert for f in _verdicts(day, range(1, 121)))
    first = _verdicts(day, range(121, 122))[0]
    assert first.verdict == "insufficient_evidence" and "too uneven" in first.reason
    assert all(f.alert for f in _verdicts(day, range(122, 146)))
    # Its last bucket alone in the window (10:10 to 12:10) is uneven again, then the base.
    assert not any(f.alert for f in _verdicts(day, range(146, DAY_BUCKETS)))
    base_rate = Decimal(int(0.3 * LIMIT / DAY_BUCKETS)) / BUCKET
    after = _verdicts(day, range(147, DAY_BUCKETS))
    assert all(f.rate == base_rate and f.verdict == "on_track" for f in after)


def test_a_step_up_that_lasts_alerts_within_the_hour() -> None:
    # From a 30 %-a-day pace to ten times that at 10:00: 100 % at about 17:00.
    base = int(0.3 * LIMIT / DAY_BUCKETS)
    day = [base] * 120 + [10 * base] * (DAY_BUCKETS - 120)
    replay = _replay(day)
    assert replay.first_alert is not None and replay.crossing is not None
    assert 120 < replay.first_alert <= 120 + 12
    assert replay.crossing - replay.first_alert >= 6 * 12  # six hours' notice, at least


# -- the parameter sweep behind the module docstring's "Why these parameters" -------------
# Too slow for the suite (a few minutes): run it as `python -m tests.alerts.test_forecast`.


def _sparse_day(rng: random.Random, idle: float) -> Day:
    """40 to 70 % a day in few, uneven buckets (exponential noise, ``idle`` of them empty)."""
    mean = rng.uniform(0.4, 0.7) * LIMIT / DAY_BUCKETS
    return [_noisy(rng, mean, shape=1.0, idle=idle) for _ in range(DAY_BUCKETS)]


def _sweep_line(
    name: str,
    params: ForecastParams,
    ramps: dict[str, list[tuple[Day, int]]],
    quiet: dict[str, list[Day]],
) -> str:
    parts = [f"{name:16s}"]
    for family, days in ramps.items():
        replays = [(_replay(day, params), start) for day, start in days]
        missed = sum(r.first_alert is None or r.crossing is None for r, _ in replays)
        early = sum(r.first_alert is not None and r.first_alert <= s for r, s in replays)
        leads = [
            (r.crossing - r.first_alert) * BUCKET // 60
            for r, _ in replays
            if r.first_alert is not None and r.crossing is not None
        ]
        parts.append(
            f"{family}: missed {missed}, before the ramp {early}, "
            f"median {statistics.median(leads)} min {min(leads)}"
        )
    for family, quiet_days in quiet.items():
        alarms = sum(_replay(day, params).first_alert is not None for day in quiet_days)
        parts.append(f"{family} {alarms}/{len(quiet_days)}")
    return " | ".join(parts)


def _sweep() -> None:
    rng = random.Random(20231115)
    ramps = {
        "gradual": [_ramp_day(rng, late=False) for _ in range(100)],
        "late": [_ramp_day(rng, late=True) for _ in range(100)],
    }
    flat_rng, heavy_rng = random.Random(20231116), random.Random(7)
    biz_rng, sparse60_rng, sparse85_rng = (
        random.Random(20231117),
        random.Random(5),
        random.Random(6),
    )
    quiet: dict[str, list[Day]] = {
        "flat": [_flat_day(flat_rng, heavy=i % 2 == 1) for i in range(200)],
        "heavy": [_flat_day(heavy_rng, heavy=True) for _ in range(300)],
        "sparse60": [_sparse_day(sparse60_rng, 0.6) for _ in range(200)],
        "sparse85": [_sparse_day(sparse85_rng, 0.85) for _ in range(200)],
        "business": [_business_hours_day(biz_rng) for _ in range(200)],
    }
    d = DEFAULT_PARAMS
    variants = {
        "defaults": d,
        "no trend": dataclasses.replace(d, trend_t_min=None),
        "trend to reset": dataclasses.replace(d, trend_reach_buckets=DAY_BUCKETS),
        "trend t >= 2": dataclasses.replace(d, trend_t_min=Decimal(2)),
        "window 1 h": dataclasses.replace(d, lookback_buckets=12, min_active_buckets=6),
        "margin 10 %": dataclasses.replace(d, margin_share=Decimal("0.10")),
        "no gates": dataclasses.replace(d, min_active_buckets=0, min_used_share=Decimal(0)),
        "evidence_z 0": dataclasses.replace(d, evidence_z=Decimal(0)),
    }
    for name, params in variants.items():
        print(_sweep_line(name, params, ramps, quiet), flush=True)


if __name__ == "__main__":
    _sweep()
