"""Billing in one gateway process: ``[billing]`` mapped into the billing package's types, the
webhook endpoint built, and the suspension job.

The job runs every ``check_interval_seconds`` in the one process holding the ``billing.
suspend`` lease (``storage.leases``, lapsing after three missed rounds), never on a request:
it switches off the orgs whose grace period after a failed payment has passed
(``storage.billing.suspend_due``) and publishes what it did (``switch_changed``, which every
process's switch board also picks up by polling, and ``billing_changed``). A new leader
finds the due orgs in the database: nothing is kept in memory between rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from costwarden.app.alerting import process_holder
from costwarden.billing.policy import BillingPolicy
from costwarden.billing.signature import StripeVerifier
from costwarden.config.billing import BillingSettings, webhook_secrets
from costwarden.config.settings import Settings
from costwarden.core.events import EventBus
from costwarden.core.tasks import cancel_and_wait
from costwarden.gateway.billing_webhook import StripeWebhook
from costwarden.storage.billing import suspend_due
from costwarden.storage.leases import try_lead

logger = logging.getLogger(__name__)

SUSPEND_LEASE = "billing.suspend"


def billing_policy(b: BillingSettings) -> BillingPolicy:
    return BillingPolicy(
        price_tiers=dict(b.price_tiers),
        free_tier=b.free_tier,
        grace_seconds=b.grace_period_hours * 3600,
    )


def stripe_webhook(
    settings: Settings, engine: Engine, events: EventBus, *, clock: Callable[[], float]
) -> StripeWebhook:
    """The endpoint; off (404) without a signing secret."""
    secrets = webhook_secrets(settings.stripe_webhook_secret)
    b = settings.billing
    verifier = StripeVerifier(secrets, tolerance_seconds=b.tolerance_seconds) if secrets else None
    return StripeWebhook(
        engine,
        verifier=verifier,
        policy=billing_policy(b),
        known_tiers=[t.name for t in settings.tiers],
        publish=events.publish,
        clock=clock,
    )


def billing_parts(
    settings: Settings, engine: Engine, events: EventBus, *, clock: Callable[[], float]
) -> tuple[StripeWebhook, SuspensionJob | None]:
    """The endpoint, and the suspension job when billing webhooks are on (a secret is set)."""
    webhook = stripe_webhook(settings, engine, events, clock=clock)
    if webhook.verifier is None:
        return webhook, None
    job = SuspensionJob(settings.billing, engine, events, clock=clock, holder=process_holder())
    return webhook, job


class SuspensionJob:
    """The suspension job of one process (module docstring)."""

    def __init__(
        self,
        settings: BillingSettings,
        engine: Engine,
        events: EventBus,
        *,
        clock: Callable[[], float],
        holder: str,
    ) -> None:
        self._interval = settings.check_interval_seconds
        self._message = settings.suspension_message
        self._engine = engine
        self._events = events
        self._clock = clock
        self._holder = holder
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await cancel_and_wait((self._task,))
        self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.round()
            except Exception as exc:  # noqa: BLE001 - storage down: the next round
                logger.warning("billing suspension round failed: %s", type(exc).__name__)

    async def round(self) -> int | None:
        """One round if this process leads (None if not): the orgs it switched off."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        ttl = timedelta(seconds=3 * self._interval)
        leading = await asyncio.to_thread(
            try_lead, self._engine, SUSPEND_LEASE, self._holder, ttl=ttl, now=now
        )
        if not leading:
            return None
        published = await asyncio.to_thread(
            suspend_due, self._engine, now=now, message=self._message
        )
        for payload in published:
            self._events.publish(payload)
        return sum(1 for p in published if p.kind == "billing_changed")
