"""The alerting service of one gateway process: events in, alerts raised, deliveries sent.

Everything here runs off the request path, in background tasks:

- **Raising.** An in-process subscription to ``limit_threshold_crossed`` events (every process
  receives every process's events through the event log) turns each into an alert draft
  (``alerts.rules``) and stores it (``storage.alerts.raise_alert``). The alert's unique key
  makes the database, not the processes, decide that it fires once: whichever process inserts
  it first enqueues its deliveries; the others, and any process after a restart, find it
  there and do nothing. Each new alert is published as ``alert_changed``. A honeypot key's use
  (``honeypot_triggered``) is a critical alert, one per key, source and hour; the keys this
  process knows are stored are not raised again (no query per use of a flood).
- **Forecasting.** Every ``forecast_interval_seconds`` the one process holding the forecast
  lease (``storage.leases``) forecasts every org budget (``app.forecasting``) and raises the
  alerts of those that run out before they reset, once per limit and window.
- **Watching.** Every ``watch_interval_seconds`` the one process holding the watch lease
  checks each provider's upstream error rate and, once an hour, every org's spend for spikes
  (``app.watching``), raising and resolving their alerts through this service.
- **Delivering.** Every ``delivery_poll_seconds`` (and at once after this process raised an
  alert) the process resolves the alerts whose window has reset, claims the deliveries that
  are due, and sends them concurrently, each bounded by the send timeout: a dead channel
  delays no other. Failed attempts are retried on the ``alerts.delivery`` schedule for up
  to 24 h, then go to the dead letter; every attempt is in the delivery log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from costwarden.alerts.channels import Attempt, Sender
from costwarden.alerts.delivery import next_attempt_at
from costwarden.alerts.model import AlertMessage
from costwarden.alerts.rules import (
    HONEYPOT_RULE,
    AlertDraft,
    billing_alert,
    breaker_alert,
    cleared,
    escalation_alert,
    honeypot_alert,
    honeypot_text,
    security_alert,
    switch_alert,
    threshold_alert,
)
from costwarden.app.forecasting import forecast_drafts
from costwarden.app.watching import Watcher, watch_params
from costwarden.budgets.enforcer import Enforcer
from costwarden.config.alerts import AlertSettings
from costwarden.core.event_kinds import (
    BillingChanged,
    BreakerChanged,
    EscalationCreated,
    EscalationResolved,
    HoneypotTriggered,
    LimitThresholdCrossed,
    SecurityFinding,
    SwitchChanged,
)
from costwarden.core.events import EventBus
from costwarden.core.polling import FailureRun
from costwarden.core.subscription import Subscription
from costwarden.core.tasks import cancel_and_wait
from costwarden.storage.alert_deliveries import DueDelivery, claim_deliveries, record_attempt
from costwarden.storage.alert_records import AlertRecord
from costwarden.storage.alerts import raise_alert, resolve_cleared, resolve_reset_windows
from costwarden.storage.leases import try_lead

logger = logging.getLogger(__name__)

FORECAST_LEASE = "alerts.forecast"
_RAISE_ATTEMPTS = 7  # 0.5 + 1 + 2 + 4 + 8 + 15 s of waiting between them
_KINDS = frozenset({
    LimitThresholdCrossed.kind, BreakerChanged.kind, SwitchChanged.kind,
    EscalationCreated.kind, EscalationResolved.kind, SecurityFinding.kind,
    HoneypotTriggered.kind, BillingChanged.kind,
})  # fmt: skip
_HONEYPOTS_KEPT = 1024  # honeypot alerts this process knows are stored (no query per use)


def alert_message(alert: AlertRecord, delivery_id: str, dashboard_url: str) -> AlertMessage:
    """What a delivery of ``alert`` sends."""
    detail = alert.detail
    link = f"{dashboard_url.rstrip('/')}/dashboard/alerts/{alert.id}" if dashboard_url else None
    return AlertMessage(
        message_id=delivery_id,
        alert_id=alert.id,
        kind=alert.kind,
        rule=alert.rule,
        severity=alert.severity,
        state=alert.state,
        title=alert.title,
        text=_text(alert),
        created_at=alert.fired_at.astimezone(UTC).isoformat(),
        org_id=alert.org_id,
        scope=alert.scope,
        scope_id=alert.scope_id,
        limit_name=detail.get("limit_name"),
        metric=detail.get("metric"),
        threshold_pct=alert.threshold_pct,
        spent=detail.get("spent"),
        reserved=detail.get("reserved"),
        limit=detail.get("limit"),
        percent=detail.get("percent"),
        resets_at=detail.get("resets_at"),
        dashboard_url=link,
    )


def _text(alert: AlertRecord) -> str:
    d = alert.detail
    if alert.kind == "threshold":
        resets = f"; the window resets at {d['resets_at']}" if d.get("resets_at") else ""
        return (
            f"{d.get('spent')} of {d.get('limit')} {d.get('metric')} used "
            f"(settled and in flight){resets}."
        )
    if alert.rule == HONEYPOT_RULE:
        return honeypot_text(alert.title, d)
    return alert.title


def process_holder() -> str:
    """A lease holder's name for this process: unique across restarts and machines."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Alerting:
    def __init__(
        self,
        settings: AlertSettings,
        engine: Engine,
        events: EventBus,
        *,
        clock: Callable[[], float],
        enforcer: Enforcer | None = None,
    ) -> None:
        self.settings = settings
        self._engine = engine
        self._events = events
        self._clock = clock
        self._sender = Sender(timeout=settings.send_timeout_seconds)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._enforcer = enforcer
        self._honeypots: dict[str, None] = {}  # dedupe keys stored, oldest first
        # Who holds the forecast lease: this process, unique across restarts and machines.
        self._holder = process_holder()
        # Error-rate and spike alerts: the ledger watched on a schedule (app.watching).
        self.watcher = Watcher(
            watch_params(settings), engine, clock=clock, holder=self._holder,
            raise_alert=self._raise, clear=self._clear,
        )  # fmt: skip

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def start(self) -> None:
        if self._tasks:
            return
        subscription = self._events.subscribe(kinds=_KINDS, background=True)
        self._tasks.append(asyncio.create_task(self._raise_loop(subscription)))
        self._tasks.append(asyncio.create_task(self._deliver_loop()))
        if self._enforcer is not None:
            self._tasks.append(asyncio.create_task(self._forecast_loop(self._enforcer)))
        self._tasks.append(asyncio.create_task(self.watcher.loop()))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await cancel_and_wait(self._tasks)
        self._tasks.clear()
        await self._sender.aclose()

    # ------------------------------------------------------------------ raising

    async def _raise_loop(self, subscription: Subscription) -> None:
        last = 0
        while True:
            with subscription:
                async for event in subscription:
                    last = event.id
                    await self._on_event(event.id, event.payload)
            # Cut off for falling behind: resume where it stopped. Otherwise the bus ended its
            # streams (shutting down): so does this.
            if not subscription.cut:
                return
            subscription = self._events.subscribe(after=last, kinds=_KINDS, background=True)

    async def _on_event(self, event_id: int, payload: object) -> None:
        if isinstance(payload, LimitThresholdCrossed):
            await self._raise(threshold_alert(payload))
        elif isinstance(payload, BreakerChanged | SwitchChanged):
            draft = (
                breaker_alert(event_id, payload)
                if isinstance(payload, BreakerChanged)
                else switch_alert(event_id, payload)
            )
            if draft is not None:
                await self._raise(draft)
            if (what := cleared(payload)) is not None:
                await self._clear(*what)
        elif isinstance(payload, EscalationCreated):
            await self._raise(escalation_alert(event_id, payload))
        elif isinstance(payload, SecurityFinding):
            if (draft := security_alert(payload, time.time())) is not None:
                await self._raise(draft)
        elif isinstance(payload, EscalationResolved):
            if (what := cleared(payload)) is not None:
                await self._clear(*what)
        elif isinstance(payload, HoneypotTriggered):
            await self._raise_honeypot(honeypot_alert(payload))
        elif isinstance(payload, BillingChanged):
            if (draft := billing_alert(event_id, payload)) is not None:
                await self._raise(draft)
            if (what := cleared(payload)) is not None:
                await self._clear(*what)

    async def _raise_honeypot(self, draft: AlertDraft) -> None:
        """A honeypot key's use: its alert (one per key, source and hour) raised unless this
        process knows it is stored already, so a flood of uses is no flood of queries."""
        if draft.dedupe_key in self._honeypots:
            return
        if await self._store(draft):
            self._honeypots[draft.dedupe_key] = None
            if len(self._honeypots) > _HONEYPOTS_KEPT:
                del self._honeypots[next(iter(self._honeypots))]

    async def _clear(self, rule: str, scope_id: str, org_id: str | None) -> None:
        try:
            resolved = await asyncio.to_thread(
                resolve_cleared, self._engine, rule, scope_id, org_id,
                reason="condition cleared", now=self._now(),
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the database is down: resolve by hand
            logger.warning("alerts of %s not resolved: %s", rule, type(exc).__name__)
            return
        for alert in resolved:
            self._events.publish(alert.event())

    async def raise_draft(self, draft: AlertDraft) -> None:
        """Raise an alert another service found (analytics drift, ...): stored once,
        published, delivered, as this service's own."""
        await self._raise(draft)

    async def _raise(self, draft: AlertDraft) -> None:
        await self._store(draft)

    async def _store(self, draft: AlertDraft) -> bool:
        """Whether the alert is stored (now, or by an earlier raise)."""
        # A crossing happens once per window: an alert not stored now would never fire, so a
        # database blip is waited out (about a minute in all) before giving up with an error.
        alert = None
        for attempt in range(_RAISE_ATTEMPTS):
            try:
                alert = await asyncio.to_thread(
                    raise_alert, self._engine, draft, now=self._now()
                )
                break
            except Exception as exc:  # noqa: BLE001 - the database is down: wait, retry
                if attempt == _RAISE_ATTEMPTS - 1:
                    logger.error(
                        "alert %s not stored after %d attempts: %s",
                        draft.dedupe_key, _RAISE_ATTEMPTS, type(exc).__name__,
                    )  # fmt: skip
                    return False
                await asyncio.sleep(min(0.5 * 2**attempt, 15.0))
        if alert is None:
            return True  # raised already, by this process or another
        logger.warning("alert fired: %s (%s)", alert.title, alert.id)
        self._events.publish(alert.event())
        self._wake.set()
        return True

    # ------------------------------------------------------------------ forecasting

    async def _forecast_loop(self, enforcer: Enforcer) -> None:
        interval = self.settings.forecast_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.forecast_round(enforcer)
            except Exception as exc:  # noqa: BLE001 - storage down: the next round
                logger.warning("budget forecasts failed: %s", type(exc).__name__)

    async def forecast_round(self, enforcer: Enforcer) -> int:
        """One round, if this process holds the lease; the alerts it tried to raise."""
        ttl = timedelta(seconds=3 * self.settings.forecast_interval_seconds)
        leading = await asyncio.to_thread(
            try_lead, self._engine, FORECAST_LEASE, self._holder, ttl=ttl, now=self._now()
        )
        if not leading:
            return 0
        drafts = await forecast_drafts(enforcer, self._engine, self._clock())
        for draft in drafts:
            await self._raise(draft)
        return len(drafts)

    # ------------------------------------------------------------------ delivering

    async def _deliver_loop(self) -> None:
        rounds = FailureRun("alert delivery rounds")
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.delivery_poll_seconds):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.deliver_due()
            except Exception as exc:  # noqa: BLE001 - the database is down: next tick
                if rounds.failed():
                    logger.warning("alert delivery round failed: %s", type(exc).__name__)
            else:
                rounds.succeeded()

    async def deliver_due(self) -> int:
        """One round: resolve reset windows, send what is due; how many attempts were made."""
        now = self._now()
        for alert in await asyncio.to_thread(resolve_reset_windows, self._engine, now=now):
            self._events.publish(alert.event())
        lease = timedelta(seconds=2 * self.settings.send_timeout_seconds + 5)
        due = await asyncio.to_thread(claim_deliveries, self._engine, now=now, lease=lease)
        if due:
            await asyncio.gather(*(self._send(d) for d in due))
        return len(due)

    async def _send(self, delivery: DueDelivery) -> None:
        message = alert_message(delivery.alert, delivery.id, self.settings.dashboard_url)
        attempt: Attempt = await self._sender.send(delivery.channel, message)
        now = self._now()
        first = delivery.first_attempt_at or now
        retry_at: datetime | None = None
        if not attempt.delivered and attempt.retryable:
            due = next_attempt_at(
                delivery.attempts + 1, first.timestamp(), base=self.settings.retry_base_seconds
            )
            retry_at = None if due is None else datetime.fromtimestamp(due, UTC)
        state = await asyncio.to_thread(
            record_attempt,
            self._engine,
            delivery,
            delivered=attempt.delivered,
            status=attempt.status,
            error=attempt.error,
            next_attempt_at=retry_at,
            now=now,
        )
        if state == "dead":
            logger.error(
                "alert %s to channel %s: delivery dead after %d attempts (%s)",
                delivery.alert.id,
                delivery.channel.name,
                delivery.attempts + 1,
                attempt.error,
            )
        elif not attempt.delivered:
            logger.warning(
                "alert %s to channel %s: attempt %d failed (%s), retrying",
                delivery.alert.id,
                delivery.channel.name,
                delivery.attempts + 1,
                attempt.error,
            )
