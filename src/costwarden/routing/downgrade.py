"""Budget-aware downgrade: serve a cheaper deployment of the route once a budget is mostly
spent, before it runs out. Pure functions over data.

A route's ``downgrade`` rules each say "above ``above_percent`` of a USD budget, serve ``to``"
(one of the route's own deployments), optionally only for a budget of one ``scope`` (org,
project, key, ...) and one ``limit`` (daily_usd, monthly_usd, lifetime_usd). The first
rule that matches wins. The percentage is what was spent and reserved by *other* requests
before this one: the gateway reads it from the reservation it made for the deployment the
strategy picked (no extra round trip) -- or from the refusal, when that deployment no longer
fits -- gives that reservation back when a rule fires and reserves again for the target, so
every hop is checked against the budget.

The opt-in ``downgrade_on_refusal`` is the last resort: when the hard reservation for the
requested deployment is refused, the walk goes on to the chain's other deployments that are
cheaper for this request, each reserving in turn; a 402 only when none fits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import Decimal


@dataclasses.dataclass(frozen=True, slots=True)
class DowngradeRule:
    above_percent: Decimal  # of the budget spent and reserved, 0-100
    to: str  # a deployment id among the route's own
    scope: str | None = None  # only budgets of this scope (org, project, key, ...); None: any
    limit: str | None = None  # only this budget (daily_usd, monthly_usd, ...); None: any


@dataclasses.dataclass(frozen=True, slots=True)
class BudgetUse:
    """How much of one USD budget the request meets was used before it."""

    scope: str
    limit: str  # its name: daily_usd, monthly_usd, lifetime_usd
    percent: Decimal


@dataclasses.dataclass(frozen=True, slots=True)
class Downgrade:
    rule: DowngradeRule
    use: BudgetUse

    def reason(self, from_id: str) -> str:
        u = self.use
        return (
            f"downgraded from {from_id} to {self.rule.to}: {u.scope} {u.limit} budget "
            f"{_pct(u.percent)}% used (rule: above {_pct(self.rule.above_percent)}%)"
        )


def triggered(
    rules: Sequence[DowngradeRule], serving: str, uses: Sequence[BudgetUse]
) -> Downgrade | None:
    """The first rule ``uses`` trigger for a request about to be served by ``serving``
    (a rule that would send it where it already goes does not count)."""
    for rule in rules:
        if rule.to == serving:
            continue
        for use in uses:
            if rule.scope is not None and use.scope != rule.scope:
                continue
            if rule.limit is not None and use.limit != rule.limit:
                continue
            if use.percent > rule.above_percent:
                return Downgrade(rule, use)
    return None


def used_percent(amount: int, remaining_after: int, reserved_now: int) -> Decimal:
    """Percent of a budget of ``amount`` used before a reservation of ``reserved_now`` left
    ``remaining_after``."""
    if amount <= 0:
        return Decimal(100)
    used = max(0, amount - remaining_after - reserved_now)
    return Decimal(used) * 100 / amount


def check_rules(
    rules: Sequence[DowngradeRule],
    own: Sequence[str],
    scopes: Sequence[str],
    limits: Sequence[str],
) -> str | None:
    """What is wrong with a route's rules (``own``: its deployments; ``limits``: the USD
    budgets' names), or None."""
    for i, rule in enumerate(rules):
        if rule.to not in own:
            return (
                f"downgrade[{i}].to: {rule.to!r} is not one of the route's deployments "
                f"({', '.join(own)})"
            )
        if not Decimal(0) <= rule.above_percent < Decimal(100):
            return f"downgrade[{i}].above_percent: must be from 0 to below 100"
        if rule.scope is not None and rule.scope not in scopes:
            return f"downgrade[{i}].scope: unknown scope {rule.scope!r} ({', '.join(scopes)})"
        if rule.limit is not None and rule.limit not in limits:
            return f"downgrade[{i}].limit: not a USD budget {rule.limit!r} ({', '.join(limits)})"
    return None


def _pct(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.1")).normalize(), "f")
