"""Billing webhooks in the database: events applied once, in order, with the tier and switch
writes they cause (the decisions are ``costwarden.billing.policy``'s).

Every function is one write transaction holding the policy lock
(:func:`~costwarden.storage.policy.lock_policy`; SQLite: ``BEGIN IMMEDIATE``), so two gateway
processes given the same event at once apply it once: the second finds its id in
``billing_events``. In that one transaction: the event's row, the subscription's or org's
state with the order key of the event (out-of-order delivery), the org's tier (bumping the
policy version every process polls) with its audit row, and the ``ai`` switch (with the
switches' lock, taken after the policy lock by every billing write, so no two writers wait on
each other crosswise).

An event is ``applied``, ``stale`` (older than what its subscription or org has seen) or
``ignored`` (no org found, a price lookup key or tier not configured). A replay of an applied
or stale event is a ``duplicate`` and changes nothing; an ignored event is evaluated again
when Stripe (or an operator, from Stripe's dashboard) resends it, so fixing the configuration
and resending applies it.

What changed is returned as events (``billing_changed``, ``switch_changed``) for the caller to
publish once the transaction has committed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from costwarden.billing.events import OtherEvent, PaymentEvent, SubscriptionEvent
from costwarden.billing.policy import (
    ACTOR,
    BillingPolicy,
    PaymentState,
    SubscriptionState,
    decide_payment,
    decide_subscription,
    due_for_suspension,
    may_restore,
    org_tier,
)
from costwarden.core.event_kinds import BillingChanged, EventPayload
from costwarden.storage.audit import record_audit
from costwarden.storage.db import Bind, begin_write, connect_read
from costwarden.storage.policy import insert_for, lock_policy, org_tier_of, write_org_tier
from costwarden.storage.schema import (
    billing_customers,
    billing_events,
    billing_orgs,
    billing_subscriptions,
    orgs,
    tiers,
)
from costwarden.storage.switches import current_switch, lock_switches, write_switch

logger = logging.getLogger(__name__)

TIER_ACTION = "org.tier"
Outcome = Literal["applied", "stale", "ignored", "duplicate"]


@dataclasses.dataclass(frozen=True, slots=True)
class Applied:
    """What became of one event, and what to publish about it."""

    outcome: Outcome
    detail: str
    org_id: str | None = None
    events: tuple[EventPayload, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class BillingEventRow:
    event_id: str
    type: str
    created: int
    org_id: str | None
    outcome: str
    detail: str | None


# --------------------------------------------------------------------------- helpers


def _seen(conn: Connection, event_id: str) -> str | None:
    """The outcome of an event already received (None: never, or ignored: try again)."""
    outcome: str | None = conn.execute(
        sa.select(billing_events.c.outcome).where(billing_events.c.event_id == event_id)
    ).scalar_one_or_none()
    return None if outcome == "ignored" else outcome


def _record(
    conn: Connection,
    event_id: str,
    type_: str,
    created: int,
    org_id: str | None,
    outcome: Outcome,
    detail: str,
    now: datetime,
) -> None:
    values = {
        "type": type_,
        "created": created,
        "org_id": org_id,
        "outcome": outcome,
        "detail": detail,
        "received_at": now,
    }
    stmt = insert_for(conn, billing_events).values(event_id=event_id, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["event_id"], set_=values))


def _org_by_name(conn: Connection, name: str) -> str | None:
    org_id: str | None = conn.execute(
        sa.select(orgs.c.id).where(orgs.c.name == name)
    ).scalar_one_or_none()
    return org_id


def _resolve_org(
    conn: Connection, org_name: str | None, customer_id: str | None, subscription_id: str | None
) -> tuple[str | None, str]:
    """(org id, how it was found / why none was): the metadata's org name (authoritative:
    a name of no org is not replaced by a guess), else the customer's or subscription's org
    recorded from an earlier event."""
    if org_name is not None:
        found = _org_by_name(conn, org_name)
        return (found, "metadata") if found else (None, f"unknown org {org_name!r} in metadata")
    if customer_id is not None:
        found = conn.execute(
            sa.select(billing_customers.c.org_id).where(
                billing_customers.c.customer_id == customer_id
            )
        ).scalar_one_or_none()
        if found:
            return found, "customer"
    if subscription_id is not None:
        found = conn.execute(
            sa.select(billing_subscriptions.c.org_id).where(
                billing_subscriptions.c.subscription_id == subscription_id
            )
        ).scalar_one_or_none()
        if found:
            return found, "subscription"
    return None, "no org: no costwarden_org metadata and the customer is not known"


def _remember_customer(conn: Connection, customer_id: str, org_id: str, now: datetime) -> None:
    stmt = insert_for(conn, billing_customers).values(
        customer_id=customer_id, org_id=org_id, updated_at=now
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["customer_id"], set_={"org_id": org_id, "updated_at": now}
        )
    )


def _ignored(
    conn: Connection, event: SubscriptionEvent | PaymentEvent, type_: str, detail: str,
    org_id: str | None, now: datetime,
) -> Applied:  # fmt: skip
    logger.warning("billing event %s (%s) ignored: %s", event.event_id, type_, detail)
    _record(conn, event.event_id, type_, event.created, org_id, "ignored", detail, now)
    return Applied("ignored", detail, org_id)


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


# --------------------------------------------------------------------------- events


def record_other(engine: Bind, event: OtherEvent, *, now: datetime) -> Applied:
    """A type billing does not act on: recorded once (so its replay is a duplicate)."""
    with begin_write(engine) as conn:
        lock_policy(conn)
        if (seen := _seen(conn, event.event_id)) is not None:
            return Applied("duplicate", f"already {seen}")
        detail = f"type {event.type} is not acted on"
        _record(conn, event.event_id, event.type, event.created, None, "ignored", detail, now)
    return Applied("ignored", detail)


def apply_subscription(
    engine: Bind,
    event: SubscriptionEvent,
    policy: BillingPolicy,
    *,
    known_tiers: Collection[str],
    now: datetime,
) -> Applied:
    """A subscription created, updated or deleted: its state stored, the org's tier set."""
    type_ = f"customer.subscription.{event.action}"
    with begin_write(engine) as conn:
        lock_policy(conn)
        if (seen := _seen(conn, event.event_id)) is not None:
            return Applied("duplicate", f"already {seen}")
        org_id, how = _resolve_org(conn, event.org_name, event.customer_id, event.subscription_id)
        if org_id is None:
            return _ignored(conn, event, type_, how, None, now)
        row = conn.execute(
            sa.select(billing_subscriptions).where(
                billing_subscriptions.c.subscription_id == event.subscription_id
            )
        ).first()
        if row is not None and row.org_id != org_id:
            detail = f"subscription {event.subscription_id} belongs to another org"
            return _ignored(conn, event, type_, detail, org_id, now)
        stored = None if row is None else SubscriptionState(row.subscription_id, row.tier,
                                                            int(row.last_order))  # fmt: skip
        decision = decide_subscription(event, stored, policy)
        if decision.action == "unmapped":
            detail = f"price lookup key(s) {', '.join(event.lookup_keys) or '(none)'} not in " \
                "[billing] price_tiers"  # fmt: skip
            return _ignored(conn, event, type_, detail, org_id, now)
        if decision.action == "stale":
            detail = "older than the last event applied to its subscription"
            _record(conn, event.event_id, type_, event.created, org_id, "stale", detail, now)
            return Applied("stale", detail, org_id)
        if event.customer_id is not None and how == "metadata":
            _remember_customer(conn, event.customer_id, org_id, now)
        others = [
            SubscriptionState(r.subscription_id, r.tier, int(r.last_order))
            for r in conn.execute(
                sa.select(billing_subscriptions).where(
                    billing_subscriptions.c.org_id == org_id,
                    billing_subscriptions.c.subscription_id != event.subscription_id,
                )
            )
        ]
        mine = SubscriptionState(event.subscription_id, decision.tier, decision.order)
        target = org_tier([*others, mine], policy.free_tier)
        previous = org_tier_of(conn, org_id)
        if target != previous and not _tier_known(conn, target, known_tiers):
            detail = f"tier {target!r} is not defined (config [[tiers]] or the tiers API)"
            return _ignored(conn, event, type_, detail, org_id, now)
        values = {
            "org_id": org_id,
            "customer_id": event.customer_id,
            "status": "deleted" if event.action == "deleted" else event.status,
            "tier": decision.tier,
            "last_order": decision.order,
            "updated_at": now,
        }
        stmt = insert_for(conn, billing_subscriptions).values(
            subscription_id=event.subscription_id, **values
        )
        conn.execute(stmt.on_conflict_do_update(index_elements=["subscription_id"], set_=values))
        published: tuple[EventPayload, ...] = ()
        if target != previous:
            write_org_tier(conn, org_id, target, known_tiers=known_tiers)
            record_audit(
                conn, ACTOR, TIER_ACTION, f"org:{org_id}", {"tier": previous},
                {"tier": target, "event": event.event_id,
                 "subscription": event.subscription_id},
                ts=now,
            )  # fmt: skip
            published = (
                BillingChanged(
                    org_id=org_id, change="plan", tier=target, previous_tier=previous,
                    event_id=event.event_id, subscription_id=event.subscription_id,
                ),
            )  # fmt: skip
        detail = f"tier {target}" + ("" if target != previous else " (unchanged)")
        _record(conn, event.event_id, type_, event.created, org_id, "applied", detail, now)
    if published:
        logger.info("billing: org %s now on tier %s (was %s)", org_id, target, previous)
    return Applied("applied", detail, org_id, published)


def _tier_known(conn: Connection, name: str, known_tiers: Collection[str]) -> bool:
    if name in known_tiers:
        return True
    found = conn.execute(sa.select(tiers.c.name).where(tiers.c.name == name)).first()
    return found is not None


def _payment_state(conn: Connection, org_id: str) -> tuple[PaymentState | None, bool]:
    row = conn.execute(sa.select(billing_orgs).where(billing_orgs.c.org_id == org_id)).first()
    if row is None:
        return None, False
    until = None if row.grace_until is None else row.grace_until.timestamp()
    return PaymentState(row.status, int(row.last_order), until), bool(row.suspended_by_billing)


def _store_payment(
    conn: Connection, org_id: str, state: PaymentState, invoice_id: str | None,
    by_billing: bool, now: datetime,
) -> None:  # fmt: skip
    values: dict[str, Any] = {
        "status": state.status,
        "last_order": state.last_order,
        "grace_until": (
            None if state.grace_until is None else datetime.fromtimestamp(state.grace_until, UTC)
        ),
        "invoice_id": invoice_id,
        "suspended_by_billing": by_billing,
        "updated_at": now,
    }
    stmt = insert_for(conn, billing_orgs).values(org_id=org_id, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["org_id"], set_=values))


def apply_payment(
    engine: Bind, event: PaymentEvent, policy: BillingPolicy, *, now: datetime
) -> Applied:
    """An invoice's payment failed (the grace period begins) or succeeded (it ends, and the
    org's switch goes back on if billing turned it off and nobody has set it since)."""
    type_ = event.type
    with begin_write(engine) as conn:
        lock_policy(conn)
        if (seen := _seen(conn, event.event_id)) is not None:
            return Applied("duplicate", f"already {seen}")
        org_id, how = _resolve_org(conn, event.org_name, event.customer_id, event.subscription_id)
        if org_id is None:
            return _ignored(conn, event, type_, how, None, now)
        stored, by_billing = _payment_state(conn, org_id)
        decision = decide_payment(event, stored, policy)
        if decision.action == "stale":
            detail = "older than the last payment event applied to its org"
            _record(conn, event.event_id, type_, event.created, org_id, "stale", detail, now)
            return Applied("stale", detail, org_id)
        state = decision.state
        published: list[EventPayload] = []
        was_ok = stored is None or stored.status == "ok"
        if event.kind == "failed":
            _store_payment(conn, org_id, state, event.invoice_id, by_billing, now)
            if was_ok:
                published.append(BillingChanged(
                    org_id=org_id, change="payment_failed", event_id=event.event_id,
                    invoice_id=event.invoice_id, subscription_id=event.subscription_id,
                    grace_until=_iso(state.grace_until),
                ))  # fmt: skip
            detail = f"grace until {_iso(state.grace_until)}"
        else:
            _store_payment(conn, org_id, state, None, False, now)
            if not was_ok:
                published.append(BillingChanged(
                    org_id=org_id, change="paid", event_id=event.event_id,
                    invoice_id=event.invoice_id, subscription_id=event.subscription_id,
                ))  # fmt: skip
            detail = "paid"
            if decision.restore and by_billing:
                lock_switches(conn)
                switch = current_switch(conn, org_id, "ai")
                if switch is not None and may_restore(switch.enabled, switch.updated_by):
                    record = write_switch(conn, org_id, "ai", enabled=True, message=None,
                                          actor=ACTOR)  # fmt: skip
                    published.append(record.changed_event())
                    published.append(BillingChanged(
                        org_id=org_id, change="restored", event_id=event.event_id,
                        invoice_id=event.invoice_id,
                    ))  # fmt: skip
                    detail = "paid; switched back on"
                else:
                    detail = "paid; the switch was set by someone else since: left as it is"
        _record(conn, event.event_id, type_, event.created, org_id, "applied", detail, now)
    return Applied("applied", detail, org_id, tuple(published))


# --------------------------------------------------------------------------- the job


def suspend_due(engine: Bind, *, now: datetime, message: str) -> list[EventPayload]:
    """The suspension job's round (app/billing.py, the lease holder only): every org whose
    grace period has passed switched off (its ``ai`` switch, with ``message``), each in its
    own transaction; one already switched off by someone is left as it is (and not switched
    back on when paid). What to publish."""
    with connect_read(engine) as conn:
        due = list(
            conn.execute(
                sa.select(billing_orgs.c.org_id).where(
                    billing_orgs.c.status == "grace", billing_orgs.c.grace_until <= now
                )
            ).scalars()
        )
    published: list[EventPayload] = []
    for org_id in due:
        published.extend(_suspend(engine, org_id, now=now, message=message))
    return published


def _suspend(engine: Bind, org_id: str, *, now: datetime, message: str) -> list[EventPayload]:
    with begin_write(engine) as conn:
        lock_policy(conn)
        lock_switches(conn)
        state, _ = _payment_state(conn, org_id)
        if state is None or not due_for_suspension(state, now.timestamp()):
            return []  # paid meanwhile, or another process did it
        switch = current_switch(conn, org_id, "ai")
        published: list[EventPayload] = []
        by_billing = switch is None or switch.enabled
        if by_billing:
            record = write_switch(conn, org_id, "ai", enabled=False, message=message, actor=ACTOR)
            published.append(record.changed_event())
        row = conn.execute(
            sa.select(billing_orgs.c.invoice_id).where(billing_orgs.c.org_id == org_id)
        ).scalar_one_or_none()
        suspended = PaymentState("suspended", state.last_order, state.grace_until)
        _store_payment(conn, org_id, suspended, row, by_billing, now)
        published.append(BillingChanged(
            org_id=org_id, change="suspended", invoice_id=row,
            grace_until=_iso(state.grace_until),
        ))  # fmt: skip
    logger.warning(
        "billing: org %s suspended (grace period over)%s",
        org_id,
        "" if by_billing else "; its switch was off already",
    )
    return published


def billing_events_of(engine: Bind, *, limit: int = 100) -> list[BillingEventRow]:
    """The newest events received, newest first."""
    with connect_read(engine) as conn:
        rows = conn.execute(
            sa.select(billing_events)
            .order_by(billing_events.c.received_at.desc(), billing_events.c.event_id)
            .limit(limit)
        ).all()
    return [
        BillingEventRow(r.event_id, r.type, int(r.created), r.org_id, r.outcome, r.detail)
        for r in rows
    ]


def payment_status(engine: Bind, org_id: str) -> PaymentState | None:
    """The org's payment state (None: no payment event seen)."""
    with connect_read(engine) as conn:
        state, _ = _payment_state(conn, org_id)
    return state
