"""Threshold crossings: the pure rule (table), the per-process memory, and the events a live
gateway raises as a daily budget is spent."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costwarden.budgets.alert_lines import DEFAULT_LINES
from costwarden.budgets.limits import UNLIMITED, Limit
from costwarden.budgets.policy import Check
from costwarden.budgets.thresholds import Crossings, crossed, lowest_line
from costwarden.budgets.windows import bucket_seconds
from costwarden.core.event_kinds import LimitThresholdCrossed
from costwarden.mock import MockServer
from tests.helpers import PRICEY, T0, FakeClock, configure_mock, live_gateway, set_limits
from tests.helpers import chat as _chat


@pytest.mark.parametrize(
    ("amount", "before", "after", "expected"),
    [
        (100, 0, 49, []),
        (100, 0, 50, [50]),
        (100, 49, 80, [50, 80]),
        (100, 50, 79, []),  # at 50 already: crossed before
        (100, 79, 130, [80, 100]),
        (100, 100, 120, []),
        (100, 60, 40, []),  # going down crosses nothing
        (0, 0, 10, []),
        (3, 1, 2, [50]),  # 1/3 -> 2/3: exact integer arithmetic, no rounding
        (3, 2, 3, [80, 100]),
    ],
)
def test_crossed(amount: int, before: int, after: int, expected: list[int]) -> None:
    assert crossed(amount, before, after) == expected


@given(amount=st.integers(-1, 10**15), share=st.fractions(-1, 2))
def test_the_lowest_line_is_the_rule_itself(amount: int, share: Fraction) -> None:
    room = int(amount * share)
    below = amount <= 0 or (amount - room) * 100 < DEFAULT_LINES[0] * amount
    assert (room > lowest_line(amount)) == below
    for edge in (amount // 2 - 1, amount // 2, amount // 2 + 1, (amount + 1) // 2):
        below = amount <= 0 or (amount - edge) * 100 < DEFAULT_LINES[0] * amount
        assert (edge > lowest_line(amount)) == below


def test_a_rate_limit_crosses_a_line_once_an_hour() -> None:
    crossings = Crossings()
    limit = Limit("org", "org_1", "org_1", "requests", "minute", 100)
    per_bucket = bucket_seconds("minute")

    def at(seconds: float) -> Check:
        return Check(limit, "r:1", rolling=True, bucket=int(seconds // per_bucket))

    (event,) = crossings.events([at(7200)], [1], [51], [50])
    assert (event.window_key, event.resets_at) == ("hour:2", "1970-01-01T03:00:00+00:00")
    assert crossings.events([at(7200 + 600)], [1], [51], [50]) == []  # the same hour
    (later,) = crossings.events([at(3 * 3600)], [1], [51], [50])  # the next hour
    assert later.window_key == "hour:3"


def test_the_lines_follow_a_new_list_of_checks() -> None:
    crossings = Crossings()
    small, large = [_check(100, "tokens")], [_check(10_000, "tokens", key="c:9")]
    assert crossings.events(large, [1], [9_000], [8_000]) == []  # 20 %: below
    (event,) = crossings.events(small, [1], [60], [40])  # 60 %: the list's own line
    assert event.threshold_pct == 50
    (event,) = crossings.events(large, [1], [6_000], [4_000])  # and the first one's
    assert (event.threshold_pct, event.used) == (50, "6000")


def _check(amount: int, metric: str = "usd", key: str = "c:1") -> Check:
    limit = Limit("org", "org_1", "org_1", metric, "day", amount)
    return Check(limit, key, rolling=False, resets_at=1000.0)


def test_events_say_what_crossed_in_the_metric_s_unit_once_per_process() -> None:
    crossings = Crossings()
    usd = _check(5_000_000_000)  # $5 in nano-dollars
    # reserved $2, room $3 left when admitted (so $0 used by others), $2.6 used after
    (event,) = crossings.events([usd], [2_000_000_000], [3_000_000_000], [2_400_000_000])
    assert event == LimitThresholdCrossed(
        org_id="org_1",
        scope="org",
        scope_id="org_1",
        window="day",
        metric="usd",
        threshold_pct=50,
        used="2.6",
        limit="5",
        window_key="until:1000",  # the window instance: the same for every request in it
        resets_at="1970-01-01T00:16:40+00:00",
    )
    # an overlapping request that also saw the line: reported once in this process
    assert crossings.events([usd], [1], [2_999_999_999], [2_300_000_000]) == []
    tokens = _check(1000, "tokens", key="c:2")
    (event,) = crossings.events([tokens], [10], [200], [190])
    assert (event.threshold_pct, event.used, event.limit) == (80, "810", "1000")
    assert crossings.events([_check(UNLIMITED, key="c:3")], [1], [5], [0]) == []


async def test_a_gateway_raises_crossings_as_a_budget_is_spent(
    mock: MockServer, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    await configure_mock(mock, output_tokens=1000)  # about $1 a request with PRICEY
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, extra_toml=PRICEY, clock=clock) as gw:
        await set_limits(gw, daily_usd="4.5")
        subscription = gw.app.events.subscribe(kinds=frozenset({"limit_threshold_crossed"}))
        for _ in range(4):
            status, _, _ = await _chat(gw)
            assert status == 200
        got = []
        while (event := await subscription.get(timeout=2)) is not None:
            got.append(event.payload)
            if len(got) == 2:
                break
        subscription.close()
    assert [(e.scope, e.window, e.metric, e.threshold_pct) for e in got] == [
        ("org", "day", "usd", 50),
        ("org", "day", "usd", 80),
    ]
    assert all(e.limit == "4.5" for e in got)
