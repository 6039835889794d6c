"""The banner's policy (budgets/client_status.py): ok, degraded or disabled from the switches'
refusals, the breakers' states and the key's tightest budget; a table."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costwarden.budgets.client_status import (
    ClientStatus,
    budget_json,
    client_status,
    tightest_budget,
)
from costwarden.budgets.limits import Limit
from costwarden.budgets.status import LimitStatus

USD = 1_000_000_000  # counter units of a dollar


def _budget(
    spent_usd: str,
    limit_usd: str = "10",
    *,
    scope: str = "org",
    window: str = "day",
    mode: str = "hard",
    metric: str = "usd",
) -> LimitStatus:
    scale = USD if metric == "usd" else 1
    amount = int(Decimal(limit_usd) * scale)
    limit = Limit(scope, "s1", "org1", metric, window, amount, mode)
    return LimitStatus(limit, int(Decimal(spent_usd) * scale), 0, 1_800_000_000.0)


OFF = "AI is off."
ALL_ON: dict[str, str | None] = {}


@pytest.mark.parametrize(
    ("refusals", "breakers", "budget", "expected"),
    [
        # nothing wrong
        (ALL_ON, ["closed", "closed"], None, ("ok", None, ())),
        (ALL_ON, [], _budget("8.99"), ("ok", None, ())),
        # the kill switch: every chat endpoint off
        ({"chat.completions": OFF, "messages": OFF}, ["closed"], None,
         ("disabled", OFF, ("switched_off",))),
        ({"chat.completions": OFF, "messages": OFF, "embeddings": OFF, "streaming": OFF},
         ["open"], _budget("10"), ("disabled", OFF, ("switched_off",))),
        # one feature off: degraded, with its message
        ({"messages": "no messages"}, ["closed"], None,
         ("degraded", "no messages", ("feature_off",))),
        ({"chat.completions": "no chat"}, [], None, ("degraded", "no chat", ("feature_off",))),
        ({"streaming": "no streams"}, [], None, ("degraded", "no streams", ("feature_off",))),
        ({"embeddings": "no vectors"}, [], None, ("degraded", "no vectors", ("feature_off",))),
        ({"chat.completions": None, "messages": None}, [], None, ("ok", None, ())),
        # breakers
        (ALL_ON, ["closed", "open"], None, ("degraded", None, ("breaker_open",))),
        (ALL_ON, ["half_open"], None, ("degraded", None, ("breaker_open",))),
        # the budget: from 90 % used
        (ALL_ON, ["closed"], _budget("9"), ("degraded", None, ("budget_near_limit",))),
        (ALL_ON, ["closed"], _budget("12"), ("degraded", None, ("budget_near_limit",))),
        (ALL_ON, ["closed"], _budget("0", "0"), ("degraded", None, ("budget_near_limit",))),
        # everything at once, in order
        ({"streaming": "no streams"}, ["open"], _budget("9.5"),
         ("degraded", "no streams", ("feature_off", "breaker_open", "budget_near_limit"))),
    ],
)  # fmt: skip
def test_the_policy(
    refusals: dict[str, str | None],
    breakers: list[str],
    budget: LimitStatus | None,
    expected: tuple[str, str | None, tuple[str, ...]],
) -> None:
    got = client_status(refusals, breakers, budget)
    assert (got.status, got.message, got.reasons) == expected
    assert got.budget is budget


def test_the_tightest_budget_is_the_most_used_then_the_least_left() -> None:
    org = _budget("5", "10", scope="org")  # 50 %
    key = _budget("1.6", "2", scope="key", window="month")  # 80 %
    project = _budget("4", "5", scope="project", window="lifetime")  # 80 %, more left
    assert tightest_budget([org, project, key]) is key
    assert tightest_budget([org]) is org
    assert tightest_budget([]) is None


@pytest.mark.parametrize(
    "ignored",
    [
        _budget("9.9", scope="platform"),  # every org's spending: never shown
        _budget("9.9", scope="user"),
        _budget("9.9", mode="soft"),  # refuses nothing
        _budget("9.9", window="hour"),  # a rate limit
        _budget("9", "10", metric="tokens"),
    ],
)
def test_budgets_not_shown(ignored: LimitStatus) -> None:
    shown = _budget("1", scope="key")
    assert tightest_budget([ignored, shown]) is shown
    assert tightest_budget([ignored]) is None


def test_the_json_holds_the_figures_and_no_ids() -> None:
    status = ClientStatus("degraded", None, ("budget_near_limit",), _budget("9.25"))
    body = status.to_json("2027-03-10T10:00:30Z")
    assert body == {
        "status": "degraded",
        "message": None,
        "reasons": ["budget_near_limit"],
        "budget": {
            "scope": "org",
            "window": "day",
            "limit": body["budget"]["limit"],
            "remaining": body["budget"]["remaining"],
            "percent_used": "92.50",
            "resets_at": "2027-01-15T08:00:00Z",
        },
        "checked_at": "2027-03-10T10:00:30Z",
    }
    assert Decimal(body["budget"]["limit"]) == 10
    assert Decimal(body["budget"]["remaining"]) == Decimal("0.75")
    assert "s1" not in str(budget_json(_budget("1"))) and "org1" not in str(body)
