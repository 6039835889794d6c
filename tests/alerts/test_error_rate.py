"""The upstream error-rate rule: tables of per-minute counts and the verdict each gives, the
episode's start, and the raise / resolve decision against prior alerts."""

from __future__ import annotations

import pytest

from costwarden.alerts.error_rate import (
    ErrorRateParams,
    ErrorRateResult,
    MinuteOutcomes,
    PriorAlert,
    decide,
    error_rate,
    is_failing,
)
from costwarden.core.errors import InvalidInput

P = ErrorRateParams(pct=20, minutes=5, min_requests=10, lookback_minutes=15)
NOW = 1_900_000_000 + 30  # half a minute into a minute: 1_900_000_000 is a multiple of 60
NEWEST = (NOW // 60 - 1) * 60  # the newest complete minute


def _minutes(*counts: tuple[int, int]) -> list[MinuteOutcomes]:
    """(requests, failures) per minute, the last one given being the newest complete one."""
    n = len(counts)
    return [MinuteOutcomes(NEWEST - (n - 1 - i) * 60, r, f) for i, (r, f) in enumerate(counts)]


@pytest.mark.parametrize(
    ("counts", "verdict", "run"),
    [
        ([(10, 2)] * 5, "failing", 5),  # exactly 20 % in each of 5 minutes: fires
        ([(10, 1)] * 5, "healthy", 0),  # 10 %: under
        ([(10, 2)] * 4 + [(10, 1)], "healthy", 0),  # the newest minute is back under
        ([(10, 1)] + [(10, 2)] * 4, "not_sustained", 4),  # 4 minutes over, not 5
        ([(10, 9)] * 2 + [(0, 0)] + [(10, 9)] * 2, "not_sustained", 2),  # a gap breaks the run
        ([(10, 9)] * 4 + [(0, 0)], "not_sustained", 0),  # the newest minute had no traffic
        ([(1, 1)] * 5, "too_few_requests", 5),  # 5 failures of 5 requests: below 10
        ([(2, 1)] * 5, "failing", 5),  # 10 requests in all, half failed
        ([], "idle", 0),
        ([(10, 0)] + [(0, 0)] * 5, "idle", 0),  # traffic only before the window
        ([(3, 3)] * 5 + [(0, 0), (5, 0)], "healthy", 0),
    ],
)
def test_verdicts(counts: list[tuple[int, int]], verdict: str, run: int) -> None:
    result = error_rate(_minutes(*counts), now=NOW, params=P)
    assert (result.verdict, result.run_minutes) == (verdict, run)
    assert result.fires == (verdict == "failing")
    assert result.clears == (verdict in ("healthy", "idle"))
    window = counts[-5:]
    assert result.requests == sum(r for r, _ in window)
    assert result.failures == sum(f for _, f in window)


def test_the_episode_starts_at_the_first_failing_minute_of_the_run() -> None:
    counts = [(10, 0)] * 3 + [(10, 5)] * 7
    result = error_rate(_minutes(*counts), now=NOW, params=P)
    assert result.verdict == "failing"
    assert result.run_start == NEWEST - 6 * 60
    # Half a minute on and a minute on, the same run: the same start, as another process sees.
    later = error_rate(
        [*_minutes(*counts), MinuteOutcomes(NEWEST + 60, 10, 5)], now=NOW + 60, params=P
    )
    assert later.run_start == result.run_start and not later.clamped
    assert error_rate(_minutes(*counts), now=NOW + 29, params=P).run_start == result.run_start


def test_a_run_longer_than_the_lookback_is_clamped() -> None:
    result = error_rate(_minutes(*[(10, 5)] * 20), now=NOW, params=P)
    assert result.clamped and result.run_minutes == 15
    assert result.run_start == NEWEST - 14 * 60


def test_the_minute_in_progress_and_older_minutes_are_ignored() -> None:
    in_progress = MinuteOutcomes(NEWEST + 60, 100, 100)
    too_old = MinuteOutcomes(NEWEST - 15 * 60, 100, 100)
    result = error_rate([in_progress, too_old], now=NOW, params=P)
    assert result.verdict == "idle" and result.requests == 0


def test_counts_of_the_same_minute_add_up() -> None:
    halves = [MinuteOutcomes(m.start, 5, 1) for m in _minutes(*[(0, 0)] * 5)]
    result = error_rate(halves + halves, now=NOW, params=P)
    assert (result.verdict, result.requests, result.failures) == ("failing", 50, 10)


@pytest.mark.parametrize(
    ("requests", "failures", "pct", "failing"),
    [(3, 1, 33, True), (3, 1, 34, False), (0, 0, 1, False), (7, 7, 100, True)],
)
def test_failing_minute_is_exact(requests: int, failures: int, pct: int, failing: bool) -> None:
    assert is_failing(MinuteOutcomes(0, requests, failures), pct) is failing


FAILING = error_rate(_minutes(*[(10, 5)] * 5), now=NOW, params=P)
HEALTHY = error_rate(_minutes(*[(10, 0)] * 5), now=NOW, params=P)
START = float(FAILING.run_start or 0)


@pytest.mark.parametrize(
    ("result", "priors", "decision"),
    [
        (FAILING, [], "raise"),
        (FAILING, [PriorAlert(open=True, fired_at=START - 3600)], "none"),  # still open
        (FAILING, [PriorAlert(open=False, fired_at=START - 60)], "raise"),  # an older episode
        (FAILING, [PriorAlert(open=False, fired_at=START + 240)], "none"),  # resolved by hand
        (HEALTHY, [PriorAlert(open=True, fired_at=START)], "resolve"),
        (HEALTHY, [PriorAlert(open=False, fired_at=START)], "none"),
        (HEALTHY, [], "none"),
    ],
)
def test_decisions(result: ErrorRateResult, priors: list[PriorAlert], decision: str) -> None:
    assert decide(result, priors) == decision


def test_params_are_checked() -> None:
    for bad in ({"pct": 0}, {"pct": 101}, {"minutes": 0}, {"min_requests": 0},
                {"minutes": 5, "lookback_minutes": 4}):  # fmt: skip
        with pytest.raises(InvalidInput):
            ErrorRateParams(**bad)
