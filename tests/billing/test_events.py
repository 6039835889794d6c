"""billing.events: a verified Stripe event read into typed data, or refused (BadEvent)."""

from __future__ import annotations

from typing import Any

import pytest

from costwarden.billing.events import (
    BadEvent,
    OtherEvent,
    PaymentEvent,
    SubscriptionEvent,
    parse_event,
)
from tests.helpers import stripe_invoice_event, stripe_subscription_event


def test_a_subscription_event_is_read() -> None:
    event = parse_event(stripe_subscription_event("evt_1", 100, action="created"))
    assert event == SubscriptionEvent(
        event_id="evt_1", created=100, subscription_id="sub_1", customer_id="cus_1",
        status="active", action="created", lookup_keys=("pro_monthly",), org_name="acme",
    )  # fmt: skip


def test_an_expanded_customer_and_several_items() -> None:
    data = stripe_subscription_event("evt_1", 5, org=None)
    obj = data["data"]["object"]
    obj["customer"] = {"id": "cus_9", "object": "customer"}
    obj["items"]["data"] = [
        {"price": {"lookup_key": None}},
        {"price": {"lookup_key": " team "}},
        {"price": "price_x"},
    ]
    event = parse_event(data)
    assert isinstance(event, SubscriptionEvent)
    assert (event.customer_id, event.lookup_keys, event.org_name) == ("cus_9", ("team",), None)


@pytest.mark.parametrize(
    ("shape", "subscription", "org"),
    [
        ("parent", "sub_1", "acme"),  # 2025 API: parent.subscription_details
        ("details", "sub_2", "acme"),  # subscription_details + subscription
        ("plain", "sub_3", None),  # subscription only
    ],
)
def test_invoice_shapes_of_the_api_versions(shape: str, subscription: str, org: str | None) -> None:
    data = stripe_invoice_event("evt_2", 7, type_="invoice.paid", org="acme")
    obj = data["data"]["object"]
    if shape == "details":
        del obj["parent"]
        obj["subscription"] = "sub_2"
        obj["subscription_details"] = {"metadata": {"costwarden_org": "acme"}}
    elif shape == "plain":
        del obj["parent"]
        obj["subscription"] = "sub_3"
    event = parse_event(data)
    assert event == PaymentEvent(
        event_id="evt_2", created=7, kind="paid", invoice_id="in_1", customer_id="cus_1",
        subscription_id=subscription, org_name=org, type="invoice.paid",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("type_", "kind"),
    [("invoice.payment_failed", "failed"), ("invoice.payment_succeeded", "paid")],
)
def test_payment_kinds(type_: str, kind: str) -> None:
    event = parse_event(stripe_invoice_event("evt_3", 1, type_=type_))
    assert isinstance(event, PaymentEvent) and (event.kind, event.type) == (kind, type_)


def test_another_type_is_kept_as_other() -> None:
    data = {"id": "evt_4", "type": "charge.refunded", "created": 9, "data": {}}
    assert parse_event(data) == OtherEvent("evt_4", 9, "charge.refunded")


def _broken(change: str) -> Any:
    data: dict[str, Any] = stripe_subscription_event("evt_5", 10)
    if change == "list":
        return [data]
    if change == "no id":
        del data["id"]
    elif change == "created text":
        data["created"] = "10"
    elif change == "created bool":
        data["created"] = True
    elif change == "negative":
        data["created"] = -1
    elif change == "no object":
        data["data"] = {"object": None}
    elif change == "no status":
        del data["data"]["object"]["status"]
    elif change == "long id":
        data["id"] = "e" * 300
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("list", "not a JSON object"),
        ("no id", "event.id"),
        ("created text", "created"),
        ("created bool", "created"),
        ("negative", "created"),
        ("no object", "data.object"),
        ("no status", "subscription.status"),
        ("long id", "event.id"),
    ],
)
def test_a_malformed_event_is_refused(change: str, message: str) -> None:
    with pytest.raises(BadEvent, match=message):
        parse_event(_broken(change))
