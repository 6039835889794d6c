"""A verified Stripe event (the JSON object, as a dict) read into typed data. Pure.

Only what billing acts on is read: the event's id, type and ``created`` time, and of its
object the subscription's id, customer, status, price lookup keys and metadata, or the
invoice's id, customer, subscription and metadata. The event must have been verified first
(gateway/billing_webhook.py, with the ``stripe`` package): this module trusts its content and
only checks its shape. A malformed event raises :class:`BadEvent` (a 400).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from costwarden.core.errors import InvalidInput

# The metadata key naming the org (by name) on a subscription, or on an invoice's
# subscription details.
ORG_METADATA_KEY = "costwarden_org"
MAX_ID_LEN = 255

PaymentKind = Literal["failed", "paid"]
SubscriptionAction = Literal["created", "updated", "deleted"]

SUBSCRIPTION_TYPES = frozenset({
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
})  # fmt: skip
PAYMENT_FAILED_TYPES = frozenset({"invoice.payment_failed"})
PAID_TYPES = frozenset({"invoice.paid", "invoice.payment_succeeded"})
_ACTIONS: dict[str, SubscriptionAction] = {
    "customer.subscription.created": "created",
    "customer.subscription.updated": "updated",
    "customer.subscription.deleted": "deleted",
}
HANDLED_TYPES = SUBSCRIPTION_TYPES | PAYMENT_FAILED_TYPES | PAID_TYPES



class BadEvent(InvalidInput):
    """A verified body that is not a Stripe event billing can read."""


@dataclasses.dataclass(frozen=True, slots=True)
class SubscriptionEvent:
    event_id: str
    created: int  # epoch seconds, Stripe's creation time of the event
    subscription_id: str
    customer_id: str | None
    status: str  # active | trialing | past_due | canceled | unpaid | incomplete | ...
    action: SubscriptionAction  # the event type's last part
    lookup_keys: tuple[str, ...]  # of the subscription's items' prices, in item order
    org_name: str | None  # metadata costwarden_org


@dataclasses.dataclass(frozen=True, slots=True)
class PaymentEvent:
    event_id: str
    created: int
    kind: PaymentKind
    invoice_id: str
    customer_id: str | None
    subscription_id: str | None
    org_name: str | None
    type: str  # as Stripe named it: invoice.payment_failed, invoice.paid, ...


@dataclasses.dataclass(frozen=True, slots=True)
class OtherEvent:
    """A type billing does not act on (recorded, answered 200)."""

    event_id: str
    created: int
    type: str


BillingEvent = SubscriptionEvent | PaymentEvent | OtherEvent


def parse_event(data: Any) -> BillingEvent:
    """The typed event of a verified Stripe event object; BadEvent if it is not one."""
    if not isinstance(data, Mapping):
        raise BadEvent("the body is not a JSON object")
    event_id = _text(data, "id", "event")
    kind = _text(data, "type", "event")
    created = data.get("created")
    if isinstance(created, bool) or not isinstance(created, int) or created < 0:
        raise BadEvent("event.created must be a non-negative integer (epoch seconds)")
    if kind not in HANDLED_TYPES:
        return OtherEvent(event_id, created, kind)
    obj = _object(data)
    if kind in SUBSCRIPTION_TYPES:
        return SubscriptionEvent(
            event_id=event_id,
            created=created,
            subscription_id=_text(obj, "id", "subscription"),
            customer_id=_customer(obj),
            status=_text(obj, "status", "subscription"),
            action=_ACTIONS[kind],
            lookup_keys=_lookup_keys(obj),
            org_name=_org_name(obj.get("metadata")),
        )
    subscription, metadata = _invoice_subscription(obj)
    return PaymentEvent(
        event_id=event_id,
        created=created,
        kind="failed" if kind in PAYMENT_FAILED_TYPES else "paid",
        invoice_id=_text(obj, "id", "invoice"),
        customer_id=_customer(obj),
        subscription_id=subscription,
        org_name=_org_name(metadata) or _org_name(obj.get("metadata")),
        type=kind,
    )


def _object(data: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = data.get("data")
    obj = inner.get("object") if isinstance(inner, Mapping) else None
    if not isinstance(obj, Mapping):
        raise BadEvent("event.data.object must be an object")
    return obj


def _text(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LEN:
        raise BadEvent(f"{what}.{key} must be a non-empty string of at most {MAX_ID_LEN}")
    return value.strip()


def _optional_id(value: Any) -> str | None:
    """An id given as itself, or expanded into its object (``{"id": ...}``)."""
    if isinstance(value, Mapping):
        value = value.get("id")
    if isinstance(value, str) and value.strip() and len(value) <= MAX_ID_LEN:
        return value.strip()
    return None


def _customer(obj: Mapping[str, Any]) -> str | None:
    return _optional_id(obj.get("customer"))


def _lookup_keys(obj: Mapping[str, Any]) -> tuple[str, ...]:
    items = obj.get("items")
    rows = items.get("data") if isinstance(items, Mapping) else None
    if not isinstance(rows, list):
        return ()
    keys: list[str] = []
    for item in rows:
        price = item.get("price") if isinstance(item, Mapping) else None
        key = price.get("lookup_key") if isinstance(price, Mapping) else None
        if isinstance(key, str) and key.strip():
            keys.append(key.strip())
    return tuple(keys)


def _org_name(metadata: Any) -> str | None:
    if not isinstance(metadata, Mapping):
        return None
    name = metadata.get(ORG_METADATA_KEY)
    if isinstance(name, str) and name.strip() and len(name) <= MAX_ID_LEN:
        return name.strip()
    return None


def _invoice_subscription(obj: Mapping[str, Any]) -> tuple[str | None, Any]:
    """(subscription id, its metadata) of an invoice, in the API versions' shapes: ``parent.
    subscription_details`` (2025 on), ``subscription_details`` and ``subscription`` (before)."""
    parent = obj.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
    if not isinstance(details, Mapping):
        details = obj.get("subscription_details")
    if isinstance(details, Mapping):
        found = _optional_id(details.get("subscription")) or _optional_id(obj.get("subscription"))
        return found, details.get("metadata")
    return _optional_id(obj.get("subscription")), None
