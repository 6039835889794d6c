"""storage.billing on SQLite and PostgreSQL: events applied once (a replay is a duplicate),
in order of creation whatever the delivery order, the org's tier set with an audit row and a
policy version bump; unknown orgs, prices and tiers ignored and evaluated again when resent;
payment failures, the suspension job and payments switching the org's ``ai`` switch (never
one an operator set); migration 0018 up and down."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from costwarden.billing.events import OtherEvent, PaymentEvent, SubscriptionEvent, parse_event
from costwarden.billing.policy import ACTOR, BillingPolicy
from costwarden.core.event_kinds import BillingChanged, SwitchChanged
from costwarden.storage import policy, repo
from costwarden.storage.audit import audit_entries
from costwarden.storage.billing import (
    TIER_ACTION,
    Applied,
    apply_payment,
    apply_subscription,
    billing_events_of,
    payment_status,
    record_other,
    suspend_due,
)
from costwarden.storage.migrate import alembic_config
from costwarden.storage.switches import list_switches, set_switch
from tests.helpers import stripe_invoice_event, stripe_subscription_event

POLICY = BillingPolicy(
    price_tiers={"pro_monthly": "pro", "team_monthly": "team"},
    free_tier="free",
    grace_seconds=3600,
)
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())


@pytest.fixture
def acme(engine: Engine) -> str:
    org_id, _ = repo.ensure_org(engine, "acme")
    for name in ("pro", "team"):
        policy.set_tier(engine, name, {"org": {"daily_usd": "50"}})
    return org_id


def _sub(event_id: str, created: int, **kw: object) -> SubscriptionEvent:
    event = parse_event(stripe_subscription_event(event_id, created, **kw))  # type: ignore[arg-type]
    assert isinstance(event, SubscriptionEvent)
    return event


def _pay(event_id: str, created: int, **kw: object) -> PaymentEvent:
    event = parse_event(stripe_invoice_event(event_id, created, **kw))  # type: ignore[arg-type]
    assert isinstance(event, PaymentEvent)
    return event


def _apply(engine: Engine, event: SubscriptionEvent) -> Applied:
    # "free" is a config-file tier here (known_tiers), "pro" and "team" are API tiers
    return apply_subscription(engine, event, POLICY, known_tiers=["free"], now=NOW)


def _tier(engine: Engine, org_id: str) -> str | None:
    return policy.load_policy(engine)[3].get(org_id)


def _ai_switch(engine: Engine) -> tuple[bool, str | None, str] | None:
    found = [s for s in list_switches(engine) if s.feature == "ai" and s.org_id is not None]
    return None if not found else (found[0].enabled, found[0].message, found[0].updated_by)


def test_a_subscription_sets_the_tier_audited_and_bumps_the_policy(
    engine: Engine, acme: str
) -> None:
    version = policy.policy_version(engine)
    applied = _apply(engine, _sub("evt_1", T, action="created"))
    assert (applied.outcome, applied.org_id) == ("applied", acme)
    assert applied.events == (
        BillingChanged(
            org_id=acme, change="plan", tier="pro", previous_tier=None, event_id="evt_1",
            subscription_id="sub_1",
        ),
    )  # fmt: skip
    assert _tier(engine, acme) == "pro"
    assert policy.policy_version(engine) == version + 1
    (entry,) = audit_entries(engine, action=TIER_ACTION)
    assert (entry.actor, entry.target, entry.old_value) == (ACTOR, f"org:{acme}", {"tier": None})
    assert entry.new_value == {"tier": "pro", "event": "evt_1", "subscription": "sub_1"}

    # a replay changes nothing: no audit row, no version, no event
    again = _apply(engine, _sub("evt_1", T, action="created"))
    assert (again.outcome, again.events) == ("duplicate", ())
    assert policy.policy_version(engine) == version + 1
    assert len(audit_entries(engine, action=TIER_ACTION)) == 1
    # an update that keeps the tier is applied, but writes no tier and no audit row
    same = _apply(engine, _sub("evt_2", T + 5))
    assert (same.outcome, same.detail, same.events) == ("applied", "tier pro (unchanged)", ())
    assert policy.policy_version(engine) == version + 1


def test_one_event_delivered_to_two_processes_at_once_is_applied_once(
    db_url: str, make_engine: Callable[[str], Engine], acme: str
) -> None:
    engines = [make_engine(db_url) for _ in range(4)]
    event = _sub("evt_1", T)
    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(a.outcome for a in pool.map(lambda e: _apply(e, event), engines))
    assert outcomes == ["applied", "duplicate", "duplicate", "duplicate"]
    assert len(audit_entries(engines[0], action=TIER_ACTION)) == 1


def test_out_of_order_delivery_ends_in_the_latest_state(engine: Engine, acme: str) -> None:
    # updated (t+10, team) arrives before created (t, pro): the created is stale
    assert _apply(engine, _sub("evt_u", T + 10, lookup_key="team_monthly")).outcome == "applied"
    assert _apply(engine, _sub("evt_c", T, action="created")).outcome == "stale"
    assert _tier(engine, acme) == "team"
    # deleted (t+30) then a late updated (t+20): the org stays on the free tier
    assert _apply(engine, _sub("evt_d", T + 30, action="deleted", status="canceled")).outcome \
        == "applied"  # fmt: skip
    assert _apply(engine, _sub("evt_l", T + 20)).outcome == "stale"
    assert _tier(engine, acme) == "free"
    assert [e.outcome for e in billing_events_of(engine)].count("stale") == 2
    entries = audit_entries(engine, action=TIER_ACTION)
    assert [e.new_value["tier"] for e in reversed(entries)] == ["team", "free"]


def test_two_subscriptions_of_one_org(engine: Engine, acme: str) -> None:
    _apply(engine, _sub("evt_1", T, subscription="sub_a"))
    _apply(engine, _sub("evt_2", T + 1, subscription="sub_b", lookup_key="team_monthly"))
    assert _tier(engine, acme) == "team"
    # the newer one ends: the older one, still live, grants its tier again
    _apply(engine, _sub("evt_3", T + 2, subscription="sub_b", action="deleted"))
    assert _tier(engine, acme) == "pro"


@pytest.mark.parametrize(
    ("kw", "detail"),
    [
        ({"org": "nobody"}, "unknown org 'nobody'"),
        ({"org": None, "customer": "cus_new"}, "no org"),
        ({"lookup_key": "gold_monthly"}, "gold_monthly"),
    ],
)
def test_what_cannot_be_applied_is_ignored_and_changes_nothing(
    engine: Engine, acme: str, kw: dict[str, object], detail: str
) -> None:
    version = policy.policy_version(engine)
    applied = _apply(engine, _sub("evt_x", T, **kw))
    assert applied.outcome == "ignored" and detail in applied.detail
    assert (_tier(engine, acme), policy.policy_version(engine)) == (None, version)
    assert audit_entries(engine, action=TIER_ACTION) == []
    assert [(e.event_id, e.outcome) for e in billing_events_of(engine)] == [("evt_x", "ignored")]


def test_an_ignored_event_is_evaluated_again_when_resent(engine: Engine) -> None:
    assert _apply(engine, _sub("evt_1", T)).outcome == "ignored"  # no org acme yet
    org_id, _ = repo.ensure_org(engine, "acme")
    policy.set_tier(engine, "pro", {})
    assert _apply(engine, _sub("evt_1", T)).outcome == "applied"
    assert _tier(engine, org_id) == "pro"
    assert [(e.event_id, e.outcome) for e in billing_events_of(engine)] == [("evt_1", "applied")]


def test_an_undefined_tier_is_ignored(engine: Engine, acme: str) -> None:
    applied = _apply(engine, _sub("evt_1", T, action="deleted"))  # to "free": defined
    assert applied.outcome == "applied"
    strict = BillingPolicy({"pro_monthly": "platinum"}, "free", 3600)
    applied = apply_subscription(engine, _sub("evt_2", T + 1), strict, known_tiers=[], now=NOW)
    assert applied.outcome == "ignored" and "'platinum' is not defined" in applied.detail
    assert _tier(engine, acme) == "free"


def test_other_types_are_recorded_once(engine: Engine) -> None:
    event = OtherEvent("evt_o", T, "charge.refunded")
    assert record_other(engine, event, now=NOW).outcome == "ignored"
    assert billing_events_of(engine)[0].type == "charge.refunded"


def test_payment_failed_grace_suspension_and_payment(engine: Engine, acme: str) -> None:
    _apply(engine, _sub("evt_s", T))  # learns cus_1 -> acme
    failed = apply_payment(engine, _pay("evt_f", T + 60), POLICY, now=NOW)  # by the customer
    assert failed.outcome == "applied" and failed.org_id == acme
    (event,) = failed.events
    assert isinstance(event, BillingChanged) and event.change == "payment_failed"
    assert event.grace_until == datetime.fromtimestamp(T + 60 + 3600, UTC).isoformat()
    # Stripe retries the invoice and it fails again: the grace does not move
    again = apply_payment(engine, _pay("evt_f2", T + 600), POLICY, now=NOW)
    assert again.events == ()
    state = payment_status(engine, acme)
    assert state is not None and (state.status, state.grace_until) == ("grace", T + 3660.0)

    assert suspend_due(engine, now=NOW + timedelta(seconds=3659), message="m") == []
    assert _ai_switch(engine) is None
    done = suspend_due(engine, now=NOW + timedelta(seconds=3661), message="billing: unpaid")
    assert [type(e) for e in done] == [SwitchChanged, BillingChanged]
    assert _ai_switch(engine) == (False, "billing: unpaid", ACTOR)
    assert suspend_due(engine, now=NOW + timedelta(hours=5), message="m") == []  # once

    paid = apply_payment(
        engine, _pay("evt_p", T + 7200, type_="invoice.payment_succeeded"), POLICY, now=NOW
    )
    assert paid.detail == "paid; switched back on"
    assert [getattr(e, "change", None) for e in paid.events] == ["paid", None, "restored"]
    types = {e.event_id: e.type for e in billing_events_of(engine)}
    assert types["evt_f"] == "invoice.payment_failed"
    assert types["evt_p"] == "invoice.payment_succeeded"
    assert _ai_switch(engine) == (True, None, ACTOR)
    state = payment_status(engine, acme)
    assert state is not None and state.status == "ok"
    switch_audit = audit_entries(engine, action="switch.set")
    assert [e.new_value["enabled"] for e in reversed(switch_audit)] == [False, True]


def test_an_operators_switch_is_never_turned_on_by_a_payment(engine: Engine, acme: str) -> None:
    apply_payment(engine, _pay("evt_f", T, org="acme"), POLICY, now=NOW)
    suspend_due(engine, now=NOW + timedelta(hours=2), message="billing: unpaid")
    set_switch(engine, org="acme", feature="ai", enabled=False, message="abuse", actor="cli:ann")
    paid = apply_payment(engine, _pay("evt_p", T + 10, type_="invoice.paid", org="acme"),
                         POLICY, now=NOW)  # fmt: skip
    assert "set by someone else" in paid.detail
    assert _ai_switch(engine) == (False, "abuse", "cli:ann")


def test_an_org_switched_off_already_is_left_alone(engine: Engine, acme: str) -> None:
    set_switch(engine, org="acme", feature="ai", enabled=False, message="ops", actor="cli:ann")
    apply_payment(engine, _pay("evt_f", T, org="acme"), POLICY, now=NOW)
    done = suspend_due(engine, now=NOW + timedelta(hours=2), message="billing: unpaid")
    assert [type(e) for e in done] == [BillingChanged]  # no switch write
    apply_payment(engine, _pay("evt_p", T + 10, type_="invoice.paid", org="acme"), POLICY,
                  now=NOW)  # fmt: skip
    assert _ai_switch(engine) == (False, "ops", "cli:ann")


def test_a_late_failure_after_the_payment_is_stale(engine: Engine, acme: str) -> None:
    apply_payment(engine, _pay("evt_p", T + 10, type_="invoice.paid", org="acme"), POLICY,
                  now=NOW)  # fmt: skip
    late = apply_payment(engine, _pay("evt_f", T, org="acme"), POLICY, now=NOW)
    assert late.outcome == "stale"
    assert suspend_due(engine, now=NOW + timedelta(days=30), message="m") == []


def _migrate_to(engine: Engine, revision: str, *, down: bool = False) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


_TABLES = {"billing_events", "billing_customers", "billing_subscriptions", "billing_orgs"}


def test_migration_0018_up_and_down(
    fresh_db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(fresh_db_url)
    _migrate_to(engine, "0017")
    assert not _TABLES & set(sa.inspect(engine).get_table_names())
    _migrate_to(engine, "0018")
    assert _TABLES <= set(sa.inspect(engine).get_table_names())
    repo.ensure_org(engine, "acme")
    policy.set_tier(engine, "pro", {})
    assert _apply(engine, _sub("evt_1", T)).outcome == "applied"
    _migrate_to(engine, "0017", down=True)
    assert not _TABLES & set(sa.inspect(engine).get_table_names())
    assert repo.get_org_by_name(engine, "acme") is not None  # nothing else touched
    _migrate_to(engine, "head")
    assert billing_events_of(engine) == []
