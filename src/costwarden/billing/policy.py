"""What billing does with an event, given what is stored: pure functions over data.

**Order.** Stripe delivers events at least once and in any order. Each subscription, and each
org's payment state, remembers the order key of the last event applied to it:
``created * 4 + rank`` (:func:`order_key`), ``created`` being the event's creation time in
seconds and ``rank`` breaking ties within one second by what must come last (a subscription
is created, then updated, then deleted; a payment fails, then is paid). An event whose key is
below the stored one is stale: recorded, not applied. Any delivery order therefore ends in the
state of the newest event. (Two updates within the same second cannot be told apart: the one
delivered last wins.)

**Plans.** A subscription grants a tier while its status is active, trialing or past_due (a
failed payment is handled by the grace period, not by the plan): the tier its first item
with a mapped price lookup key maps to (``[billing] price_tiers``). Deleted, canceled, unpaid,
incomplete or paused, it grants none. An org's tier is the one granted by its most recently
changed subscription that grants one, else the free tier (:func:`org_tier`).

**Payments.** ``invoice.payment_failed`` starts a grace period (from the event's creation
time; a repeated failure does not extend it); when it has passed the suspension job switches
the org off (its ``ai`` kill switch). ``invoice.paid`` ends the grace or the suspension; the
switch is turned back on only if billing turned it off and nobody has set it since
(:func:`may_restore`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Literal

from costwarden.billing.events import PaymentEvent, SubscriptionEvent

GRANTING_STATUSES = frozenset({"active", "trialing", "past_due"})
ACTOR = "billing:stripe"  # who billing's changes are audited as, and its switch writes' author

PaymentStatus = Literal["ok", "grace", "suspended"]


@dataclasses.dataclass(frozen=True, slots=True)
class BillingPolicy:
    """``[billing]`` as the billing package takes it (mapped by the app)."""

    price_tiers: Mapping[str, str]  # price lookup key -> tier name
    free_tier: str
    grace_seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class SubscriptionState:
    """A subscription as stored: the tier it grants (None: none) and its last order key."""

    subscription_id: str
    tier: str | None
    last_order: int


@dataclasses.dataclass(frozen=True, slots=True)
class PaymentState:
    """An org's payment state as stored."""

    status: PaymentStatus
    last_order: int
    grace_until: float | None  # epoch seconds, while in grace


@dataclasses.dataclass(frozen=True, slots=True)
class SubscriptionDecision:
    action: Literal["apply", "stale", "unmapped"]
    tier: str | None  # the tier the subscription grants now (apply)
    order: int


@dataclasses.dataclass(frozen=True, slots=True)
class PaymentDecision:
    action: Literal["apply", "stale"]
    state: PaymentState  # the state to store (apply)
    restore: bool  # paid while suspended: the switch may go back on


_SUBSCRIPTION_RANK = {"created": 0, "updated": 1, "deleted": 2}


def order_key(created: int, rank: int) -> int:
    """The order of an event among its subscription's or org's (module docstring)."""
    return created * 4 + rank


def subscription_order(event: SubscriptionEvent) -> int:
    return order_key(event.created, _SUBSCRIPTION_RANK[event.action])


def granted_tier(event: SubscriptionEvent, policy: BillingPolicy) -> str | None:
    """The tier the subscription grants as the event shows it (None: none); KeyError when
    it is live but none of its prices' lookup keys is mapped."""
    if event.action == "deleted" or event.status not in GRANTING_STATUSES:
        return None
    for key in event.lookup_keys:
        if key in policy.price_tiers:
            return policy.price_tiers[key]
    raise KeyError(", ".join(event.lookup_keys) or "no lookup key")


def decide_subscription(
    event: SubscriptionEvent,
    stored: SubscriptionState | None,
    policy: BillingPolicy,
) -> SubscriptionDecision:
    """Apply the event to its subscription, or not (stale; live with an unmapped price)."""
    order = subscription_order(event)
    if stored is not None and order < stored.last_order:
        return SubscriptionDecision("stale", stored.tier, order)
    try:
        tier = granted_tier(event, policy)
    except KeyError:
        return SubscriptionDecision("unmapped", None, order)
    return SubscriptionDecision("apply", tier, order)


def org_tier(subscriptions: Iterable[SubscriptionState], free_tier: str) -> str:
    """The org's tier: its most recently changed granting subscription's, else the free one."""
    granting = [s for s in subscriptions if s.tier is not None]
    if not granting:
        return free_tier
    newest = max(granting, key=lambda s: (s.last_order, s.subscription_id))
    assert newest.tier is not None
    return newest.tier


def decide_payment(
    event: PaymentEvent, stored: PaymentState | None, policy: BillingPolicy
) -> PaymentDecision:
    """The org's payment state after the event (module docstring)."""
    order = order_key(event.created, 0 if event.kind == "failed" else 1)
    if stored is not None and order < stored.last_order:
        return PaymentDecision("stale", stored, restore=False)
    if event.kind == "paid":
        suspended = stored is not None and stored.status == "suspended"
        return PaymentDecision("apply", PaymentState("ok", order, None), restore=suspended)
    if stored is not None and stored.status != "ok":
        # A repeated failure (Stripe's retries of the invoice): the first one's grace holds.
        return PaymentDecision(
            "apply", PaymentState(stored.status, order, stored.grace_until), restore=False
        )
    grace_until = event.created + policy.grace_seconds
    return PaymentDecision("apply", PaymentState("grace", order, grace_until), restore=False)


def due_for_suspension(state: PaymentState, now: float) -> bool:
    """Whether the suspension job switches the org off now."""
    return state.status == "grace" and state.grace_until is not None and state.grace_until <= now


def may_restore(switch_enabled: bool | None, switch_updated_by: str | None) -> bool:
    """Whether billing may turn the org's switch back on: only one billing turned off and
    nobody has set since (an operator's switch is never re-enabled by a payment)."""
    return switch_enabled is False and switch_updated_by == ACTOR
