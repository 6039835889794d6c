"""billing.policy: order keys, the tier a subscription grants, an org's tier, payment
states, suspension and restore: table tests over plain data."""

from __future__ import annotations

import pytest

from costwarden.billing.events import PaymentEvent, SubscriptionEvent
from costwarden.billing.policy import (
    ACTOR,
    BillingPolicy,
    PaymentState,
    SubscriptionState,
    decide_payment,
    decide_subscription,
    due_for_suspension,
    may_restore,
    order_key,
    org_tier,
)

POLICY = BillingPolicy(
    price_tiers={"pro_monthly": "pro", "team_monthly": "team"},
    free_tier="free",
    grace_seconds=3600,
)


def _sub(
    created: int = 100, action: str = "updated", status: str = "active",
    keys: tuple[str, ...] = ("pro_monthly",),
) -> SubscriptionEvent:  # fmt: skip
    return SubscriptionEvent(
        event_id="evt", created=created, subscription_id="sub_1", customer_id="cus_1",
        status=status, action=action, lookup_keys=keys, org_name="acme",  # type: ignore[arg-type]
    )  # fmt: skip


def _pay(kind: str, created: int = 100) -> PaymentEvent:
    return PaymentEvent(
        event_id="evt", created=created, kind=kind, invoice_id="in_1",  # type: ignore[arg-type]
        customer_id="cus_1", subscription_id="sub_1", org_name=None,
        type="invoice.payment_failed" if kind == "failed" else "invoice.paid",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("event", "stored", "action", "tier"),
    [
        (_sub(), None, "apply", "pro"),
        (_sub(keys=("other", "team_monthly")), None, "apply", "team"),
        (_sub(status="trialing"), None, "apply", "pro"),
        (_sub(status="past_due"), None, "apply", "pro"),
        (_sub(status="canceled"), None, "apply", None),
        (_sub(status="unpaid"), None, "apply", None),
        (_sub(status="incomplete"), None, "apply", None),
        (_sub(action="deleted", status="active"), None, "apply", None),
        (_sub(keys=("gold",)), None, "unmapped", None),
        (_sub(keys=()), None, "unmapped", None),
        (_sub(status="canceled", keys=("gold",)), None, "apply", None),  # ended: no price needed
        # an older event than the stored one is stale, whatever it says
        (_sub(created=99), SubscriptionState("sub_1", "team", order_key(100, 1)), "stale", "team"),
        # same second: created < updated < deleted
        (_sub(action="created"), SubscriptionState("sub_1", "team", order_key(100, 1)),
         "stale", "team"),
        (_sub(action="deleted"), SubscriptionState("sub_1", "pro", order_key(100, 1)),
         "apply", None),
        (_sub(created=101), SubscriptionState("sub_1", None, order_key(100, 2)), "apply", "pro"),
        # the same order applies again (two updates in one second: the later delivery wins)
        (_sub(keys=("team_monthly",)), SubscriptionState("sub_1", "pro", order_key(100, 1)),
         "apply", "team"),
    ],
)  # fmt: skip
def test_decide_subscription(
    event: SubscriptionEvent, stored: SubscriptionState | None, action: str, tier: str | None
) -> None:
    decision = decide_subscription(event, stored, POLICY)
    assert (decision.action, decision.tier) == (action, tier)


@pytest.mark.parametrize(
    ("subs", "tier"),
    [
        ([], "free"),
        ([SubscriptionState("a", None, 10)], "free"),
        ([SubscriptionState("a", "pro", 10)], "pro"),
        ([SubscriptionState("a", "pro", 10), SubscriptionState("b", "team", 20)], "team"),
        ([SubscriptionState("a", "pro", 30), SubscriptionState("b", "team", 20)], "pro"),
        # the newer subscription ended: the older live one still grants its tier
        ([SubscriptionState("a", "pro", 10), SubscriptionState("b", None, 20)], "pro"),
    ],
)
def test_org_tier(subs: list[SubscriptionState], tier: str) -> None:
    assert org_tier(subs, "free") == tier


@pytest.mark.parametrize(
    ("event", "stored", "action", "state", "restore"),
    [
        (_pay("failed"), None, "apply", PaymentState("grace", 400, 3700.0), False),
        # a repeated failure keeps the first one's grace
        (_pay("failed", 200), PaymentState("grace", 400, 3700.0), "apply",
         PaymentState("grace", 800, 3700.0), False),
        (_pay("failed", 200), PaymentState("suspended", 400, 3700.0), "apply",
         PaymentState("suspended", 800, 3700.0), False),
        (_pay("failed", 200), PaymentState("ok", 401, None), "apply",
         PaymentState("grace", 800, 3800.0), False),
        (_pay("paid"), PaymentState("grace", 400, 3700.0), "apply",
         PaymentState("ok", 401, None), False),
        (_pay("paid"), PaymentState("suspended", 400, 3700.0), "apply",
         PaymentState("ok", 401, None), True),
        # paid in the same second as the failure: paid wins, in either delivery order
        (_pay("failed"), PaymentState("ok", 401, None), "stale",
         PaymentState("ok", 401, None), False),
        (_pay("paid", 99), PaymentState("grace", 400, 3700.0), "stale",
         PaymentState("grace", 400, 3700.0), False),
    ],
)  # fmt: skip
def test_decide_payment(
    event: PaymentEvent, stored: PaymentState | None, action: str, state: PaymentState,
    restore: bool,
) -> None:  # fmt: skip
    decision = decide_payment(event, stored, POLICY)
    assert (decision.action, decision.state, decision.restore) == (action, state, restore)


@pytest.mark.parametrize(
    ("state", "now", "due"),
    [
        (PaymentState("grace", 0, 100.0), 99.9, False),
        (PaymentState("grace", 0, 100.0), 100.0, True),
        (PaymentState("suspended", 0, 100.0), 200.0, False),
        (PaymentState("ok", 0, None), 200.0, False),
    ],
)
def test_due_for_suspension(state: PaymentState, now: float, due: bool) -> None:
    assert due_for_suspension(state, now) is due


@pytest.mark.parametrize(
    ("enabled", "by", "restore"),
    [
        (False, ACTOR, True),
        (False, "cli:ann", False),  # an operator switched it off since: theirs
        (True, ACTOR, False),  # on already
        (None, None, False),  # never set
    ],
)
def test_may_restore(enabled: bool | None, by: str | None, restore: bool) -> None:
    assert may_restore(enabled, by) is restore
