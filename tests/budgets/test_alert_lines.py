"""Alert lines: parsing an operator's percents, which rule wins for a limit, and the lines a
limit book gives the limits a request meets (table tests, no I/O)."""

from __future__ import annotations

import pytest

from costwarden.budgets.alert_lines import DEFAULT_LINES, AlertLines, LineBook, parse_lines
from costwarden.budgets.limits import Limit, LimitBook, Principal, Tier, TierEntry
from costwarden.budgets.policy import Check
from costwarden.budgets.thresholds import Crossings, crossed, lowest_line
from costwarden.core.errors import InvalidInput


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([50, 80, 100], (50, 80, 100)),
        ([100, 50, 50], (50, 100)),  # sorted, distinct
        ([1000], (1000,)),
        ([1], (1,)),
        ([75.0], (75,)),  # a JSON integer written 75.0
        ([150, 120], (120, 150)),
    ],
)
def test_parse_lines(given: list[object], expected: tuple[int, ...]) -> None:
    assert parse_lines(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([0], "outside (0, 1000] %"),
        ([-5], "outside (0, 1000] %"),
        ([1001], "outside (0, 1000] %"),
        ([float("nan")], "outside (0, 1000] %"),
        ([float("inf")], "outside (0, 1000] %"),
        ([50.5], "not a whole percent"),
        (["80"], "is not a percent"),
        ([True], "is not a percent"),
        ([None], "is not a percent"),
        ([], "at least one"),
        (list(range(1, 12)), "at most 10"),
        ("50,80", "expected a list"),
        (80, "expected a list"),
        ({"a": 1}, "expected a list"),
    ],
)
def test_parse_lines_refuses(given: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace("]", r"\]")):
        parse_lines(given)


RULES = LineBook(
    [
        AlertLines((10,), "user", "o1", "alice", limit_name="daily_tokens"),
        AlertLines((20,), "user", "o1", "alice"),
        AlertLines((30,), "user", "o1", limit_name="daily_tokens"),
        AlertLines((40,), "user", "o1"),
        AlertLines((60,), "user", tier="pro", limit_name="daily_tokens"),
        AlertLines((70,), "user", tier="pro"),
        AlertLines((90, 120), "org", "o2", "o2"),
        AlertLines((95,), "platform"),
    ]
)


@pytest.mark.parametrize(
    ("org", "scope", "subject", "limit", "tier", "expected"),
    [
        ("o1", "user", "alice", "daily_tokens", "pro", (10,)),  # instance + limit
        ("o1", "user", "alice", "daily_usd", "pro", (20,)),  # instance
        ("o1", "user", "bob", "daily_tokens", "pro", (30,)),  # org's scope type + limit
        ("o1", "user", "bob", "daily_usd", "pro", (40,)),  # org's scope type
        ("o3", "user", "bob", "daily_tokens", "pro", (60,)),  # tier + limit
        ("o3", "user", "bob", "daily_usd", "pro", (70,)),  # tier
        ("o3", "user", "bob", "daily_usd", "free", DEFAULT_LINES),  # another tier
        ("o3", "user", "bob", "daily_usd", None, DEFAULT_LINES),  # no tier
        ("o3", "key", "k1", "daily_usd", "pro", DEFAULT_LINES),  # another scope type
        ("o2", "org", "o2", "monthly_usd", None, (90, 120)),
        ("", "platform", "", "daily_usd", None, (95,)),
    ],
)
def test_the_most_specific_rule_wins(
    org: str, scope: str, subject: str, limit: str, tier: str | None, expected: tuple[int, ...]
) -> None:
    assert RULES.lines(org, scope, subject, limit, tier) == expected


def test_a_limit_book_gives_each_limit_its_lines() -> None:
    pro = Tier("pro", (TierEntry("user", "tokens", "day", 1000), TierEntry("org", "usd", "day", 5)))
    explicit = Limit("key", "k1", "o1", "requests", "minute", 60, "soft")
    rules = [
        AlertLines((25,), "user", tier="pro"),
        AlertLines((90, 150), "org", tier="pro"),
        AlertLines((33,), "key", "o1", "k1"),
    ]
    book = LimitBook([explicit], [pro], {"o1": "pro"}, 1, rules)
    found = book.applicable(Principal("o1", None, "k1", end_user="alice"))
    lines = {(lim.scope, lim.name): lim.alert_lines for lim in found}
    assert lines == {
        ("org", "daily_usd"): (90, 150),
        ("key", "requests_per_minute"): (33,),
        ("user", "daily_tokens"): (25,),
    }
    # No rules: every limit keeps the defaults.
    plain = LimitBook([explicit], [pro], {"o1": "pro"}, 1)
    found = plain.applicable(Principal("o1", None, "k1", end_user="alice"))
    assert {lim.alert_lines for lim in found} == {DEFAULT_LINES}


@pytest.mark.parametrize(
    ("lines", "before", "after", "expected"),
    [
        ((25,), 0, 30, [25]),
        ((25,), 30, 60, []),
        ((120, 150), 90, 130, [120]),  # past the amount: a soft budget
        ((120, 150), 130, 200, [150]),
        ((10, 50, 100), 0, 100, [10, 50, 100]),
    ],
)
def test_crossed_with_a_rule_s_lines(
    lines: tuple[int, ...], before: int, after: int, expected: list[int]
) -> None:
    assert crossed(100, before, after, lines) == expected


def test_crossings_use_each_limit_s_lines() -> None:
    """A check whose limit has its lowest line at 20 % or at 120 % (the fast path's lines
    follow the limit)."""
    crossings = Crossings()
    low = Limit("org", "o1", "o1", "tokens", "day", 1000, alert_lines=(20,))
    high = Limit("org", "o1", "o1", "requests", "day", 100, "soft", alert_lines=(120,))
    checks = [Check(low, "c:low", False, resets_at=86400.0), Check(high, "c:high", False)]
    assert lowest_line(1000, 20) == 800 and lowest_line(100, 120) == -20
    # 150 tokens (15 %), 90 requests: nothing yet
    assert crossings.events(checks, [150, 90], [850, 10], [850, 10]) == []
    # 250 tokens (25 %): the 20 % line; 125 requests (125 %, a soft budget): the 120 % line
    events = crossings.events(checks, [100, 35], [850, 10], [750, -25])
    assert [(e.metric, e.threshold_pct, e.used) for e in events] == [
        ("tokens", 20, "250"),
        ("requests", 120, "125"),
    ]
