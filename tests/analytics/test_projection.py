"""Month-end projections (table tests). The backtest on generated series is
``bench/projections.py``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costwarden.analytics.projection import project_month

D = Decimal


def test_a_steady_org_projects_exactly_with_no_spread() -> None:
    p = project_month([D(10)] * 10, 30, history=[D(10)] * 14)
    assert (p.spent, p.projected, p.low, p.high, p.pace, p.days_left) == (
        D(100), D(300), D(300), D(300), D(10), 20,
    )  # fmt: skip


def test_the_pace_is_the_last_week() -> None:
    # A month that doubled its spend a week ago: the pace is the new level.
    p = project_month([D(10)] * 7 + [D(20)] * 7, 30)
    assert p.pace == D(20) and p.projected == D(210) + D(20) * 16


def test_the_interval_grows_with_the_spread_and_the_days_left() -> None:
    noisy = [D(5), D(15)] * 7
    early = project_month(noisy[:7], 30, history=noisy)
    late = project_month(noisy, 30)
    assert early.low < early.projected < early.high
    assert early.high - early.low > late.high - late.low > 0
    assert early.low >= early.spent  # never below what is already spent


def test_a_month_with_no_history_yet() -> None:
    p = project_month([], 31)
    assert (p.spent, p.projected, p.days_left) == (D(0), D(0), 31)


def test_the_last_day() -> None:
    p = project_month([D(3)] * 30, 30)
    assert p.projected == p.low == p.high == D(90) and p.days_left == 0


def test_more_days_than_the_month_is_refused() -> None:
    with pytest.raises(ValueError, match="more complete days"):
        project_month([D(1)] * 31, 30)
