"""Overview and trend figures (table tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from costwarden.analytics.overview import change_pct, error_rate, windows


def test_windows_compare_like_with_like() -> None:
    now = datetime(2026, 12, 2, 10, 25, tzinfo=UTC)
    before, start, end = windows("7d", now)
    assert start == datetime(2026, 11, 25, 11, tzinfo=UTC) and end == now
    assert start - before == timedelta(days=7) and before.minute == 0


@pytest.mark.parametrize(
    ("now", "before", "expected"),
    [("150", "100", "50.0"), ("50", "100", "-50.0"), ("1", "3", "-66.7"), ("5", "0", None),
     ("0", "0", None), ("100", "100", "0.0")],
)  # fmt: skip
def test_change_pct(now: str, before: str, expected: str | None) -> None:
    got = change_pct(Decimal(now), Decimal(before))
    assert got == (None if expected is None else Decimal(expected))


def test_error_rate() -> None:
    assert error_rate({}) is None
    assert error_rate({"success": 97, "upstream_error": 2, "degraded": 1}) == Decimal("3.0")
    assert error_rate({"success": 2, "blocked": 1}) == Decimal("0.0")  # refusals are no failures
