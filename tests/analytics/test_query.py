"""Analytics queries: what is refused, and where each part of a range is read (table tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from costwarden.analytics.query import Plan, SpendQuery, plan
from costwarden.core.errors import InvalidInput

T = datetime(2026, 11, 1, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
HALF = timedelta(minutes=30)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"until": T}, "'until' must be after 'since'"),
        ({"until": T - H}, "'until' must be after 'since'"),
        ({"until": T + timedelta(days=367)}, "at most 366 days"),
        ({"since": T + timedelta(minutes=5)}, "whole UTC hour"),
        ({"since": datetime(2026, 11, 1)}, "UTC offset"),
        ({"by": ("galaxy",)}, "unknown dimension 'galaxy'"),
        ({"by": ("model", "model")}, "named twice"),
        ({"by": ("tag", "model")}, "'tag' groups alone or with org_id"),
        ({"filters": {"colour": "red"}}, "unknown filter 'colour'"),
        ({"filters": {"tag": "team=ml", "model": "m"}}, "a 'tag' filter goes with"),
        ({"granularity": "week"}, "granularity must be one of hour, day"),
    ],
)
def test_bad_queries_are_refused(fields: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"since": T, "until": T + D}
    with pytest.raises(InvalidInput, match=message):
        SpendQuery(**{**base, **fields})


def test_good_queries() -> None:
    SpendQuery(T, T + D, by=("tag",), filters={"tag": "team=ml", "org_id": "o"})
    SpendQuery(T, T + D, by=("org_id", "tag"))
    SpendQuery(T, T + timedelta(days=366), by=("org_id", "model"), granularity="day")


@pytest.mark.parametrize(
    ("since", "until", "granularity", "rolled", "expected"),
    [
        # Nothing rolled up yet: all raw.
        (T, T + 2 * D, None, None, Plan((), (), (T, T + 2 * D))),
        # Two whole days rolled, the third read raw from the hour the watermark is in.
        (T, T + 3 * D, None, T + 2 * D + 5 * H + timedelta(minutes=7),
         Plan(("2026-11-01", "2026-11-02"), tuple(T + 2 * D + i * H for i in range(5)),
              (T + 2 * D + 5 * H, T + 3 * D))),
        # Per hour: no daily rows.
        (T, T + 3 * H, "hour", T + D, Plan((), (T, T + H, T + 2 * H), None)),
        # A range starting mid-day: its first hours from the hourly rollup, then whole days.
        (T + 22 * H, T + 2 * D + HALF, "day", T + 5 * D,
         Plan(("2026-11-02",), (T + 22 * H, T + 23 * H), (T + 2 * D, T + 2 * D + HALF))),
        # Everything rolled, the range ends on an hour: nothing raw.
        (T, T + D, None, T + 3 * D, Plan(("2026-11-01",), (), None)),
        # A watermark before the range: all raw.
        (T + D, T + 2 * D, None, T, Plan((), (), (T + D, T + 2 * D))),
    ],
)  # fmt: skip
def test_plan(
    since: datetime, until: datetime, granularity: Any, rolled: datetime | None, expected: Plan
) -> None:
    assert plan(SpendQuery(since, until, granularity=granularity), rolled) == expected
