"""Budget-aware downgrade rules: table tests of when a rule fires and what is refused."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costwarden.routing.downgrade import (
    BudgetUse,
    DowngradeRule,
    check_rules,
    triggered,
    used_percent,
)

MINI = "openai:gpt-4o-mini"
BIG = "openai:gpt-4o"
AT_80 = DowngradeRule(Decimal(80), MINI)
ORG_DAILY = DowngradeRule(Decimal(80), MINI, scope="org", limit="daily_usd")


@pytest.mark.parametrize(
    ("rules", "serving", "uses", "fires"),
    [
        ((AT_80,), BIG, [BudgetUse("org", "daily_usd", Decimal("80.5"))], True),
        ((AT_80,), BIG, [BudgetUse("org", "daily_usd", Decimal(80))], False),  # above, not at
        ((AT_80,), MINI, [BudgetUse("org", "daily_usd", Decimal(99))], False),  # already there
        ((AT_80,), BIG, [], False),  # no USD budget met
        ((ORG_DAILY,), BIG, [BudgetUse("key", "daily_usd", Decimal(95))], False),
        ((ORG_DAILY,), BIG, [BudgetUse("org", "monthly_usd", Decimal(95))], False),
        ((ORG_DAILY,), BIG, [BudgetUse("key", "daily_usd", Decimal(95)),
                             BudgetUse("org", "daily_usd", Decimal(81))], True),
    ],
)  # fmt: skip
def test_when_a_rule_fires(
    rules: tuple[DowngradeRule, ...], serving: str, uses: list[BudgetUse], fires: bool
) -> None:
    assert (triggered(rules, serving, uses) is not None) is fires


def test_the_first_matching_rule_wins_and_says_why() -> None:
    rules = (DowngradeRule(Decimal(95), "x:nano"), AT_80)
    hit = triggered(rules, BIG, [BudgetUse("org", "daily_usd", Decimal("85.26"))])
    assert hit is not None and hit.rule is AT_80
    assert hit.reason(BIG) == (
        "downgraded from openai:gpt-4o to openai:gpt-4o-mini: org daily_usd budget 85.3% used "
        "(rule: above 80%)"
    )
    hit = triggered(rules, BIG, [BudgetUse("org", "daily_usd", Decimal(96))])
    assert hit is not None and hit.rule.to == "x:nano"


@pytest.mark.parametrize(
    ("amount", "remaining", "reserved", "percent"),
    [
        (1000, 100, 100, Decimal(80)),  # 800 used by others before this reservation
        (1000, 1000 - 5, 5, Decimal(0)),
        (1000, -50, 50, Decimal(100)),
        (0, 0, 0, Decimal(100)),
    ],
)
def test_used_percent_leaves_out_the_requests_own_reservation(
    amount: int, remaining: int, reserved: int, percent: Decimal
) -> None:
    assert used_percent(amount, remaining, reserved) == percent


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (DowngradeRule(Decimal(80), "openai:gpt-3"), "not one of the route's deployments"),
        (DowngradeRule(Decimal(100), MINI), "from 0 to below 100"),
        (DowngradeRule(Decimal(-1), MINI), "from 0 to below 100"),
        (DowngradeRule(Decimal(80), MINI, scope="galaxy"), "unknown scope 'galaxy'"),
        (ORG_DAILY, None),
    ],
)
def test_bad_rules_are_named(rule: DowngradeRule, problem: str | None) -> None:
    found = check_rules([rule], [BIG, MINI], ["org", "project", "key"], ["daily_usd"])
    assert (found is None) if problem is None else (found is not None and problem in found)
