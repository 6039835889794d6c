"""app.billing: the suspension job runs in the one process holding the billing.suspend lease
(on SQLite and PostgreSQL), switches off an org past its grace period once, and publishes
what it did; [billing] is mapped into billing's own policy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine

from costwarden.app.billing import SuspensionJob, billing_policy
from costwarden.billing.events import PaymentEvent, parse_event
from costwarden.billing.policy import ACTOR, BillingPolicy
from costwarden.config.billing import BillingSettings
from costwarden.core.event_kinds import BillingChanged, SwitchChanged
from costwarden.core.events import EventBus
from costwarden.storage import repo
from costwarden.storage.billing import apply_payment
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from costwarden.storage.switches import list_switches
from tests.helpers import FakeClock, stripe_invoice_event


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    migrate(database_url)
    made = create_engine_for(database_url)
    yield made
    made.dispose()


def test_the_settings_map_into_the_policy() -> None:
    settings = BillingSettings(price_tiers={"pro_monthly": "pro"}, grace_period_hours=1.5)
    assert billing_policy(settings) == BillingPolicy({"pro_monthly": "pro"}, "free", 5400.0)


async def test_one_leader_suspends_once_and_publishes(engine: Engine) -> None:
    clock = FakeClock(time.time())
    repo.ensure_org(engine, "acme")
    event = parse_event(stripe_invoice_event("evt_f", int(clock()), org="acme"))
    assert isinstance(event, PaymentEvent)
    policy = BillingPolicy({}, "free", 60)
    now = datetime.fromtimestamp(clock(), UTC)
    await asyncio.to_thread(apply_payment, engine, event, policy, now=now)
    bus = EventBus(clock=clock)
    settings = BillingSettings(check_interval_seconds=60, suspension_message="pay us")
    leader = SuspensionJob(settings, engine, bus, clock=clock, holder="one")
    other = SuspensionJob(settings, engine, bus, clock=clock, holder="two")
    await bus.start()
    try:
        seen = bus.subscribe(kinds=frozenset({BillingChanged.kind, SwitchChanged.kind}))
        assert await leader.round() == 0  # in grace
        assert await other.round() is None  # not the leader
        clock.advance(61)
        assert await other.round() is None
        assert await leader.round() == 1
        assert await leader.round() == 0  # once
        switches = [s for s in list_switches(engine) if s.feature == "ai"]
        assert [(s.enabled, s.message, s.updated_by) for s in switches] == [
            (False, "pay us", ACTOR)
        ]
        with seen:
            kinds = [(await asyncio.wait_for(anext(aiter(seen)), 5)).kind for _ in range(2)]
        assert kinds == [SwitchChanged.kind, BillingChanged.kind]
        clock.advance(181)  # the leader's lease (3 rounds) lapsed: another process takes over
        assert await other.round() == 0
    finally:
        await bus.close()
