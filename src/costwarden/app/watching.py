"""The watch: alert rules that look at the ledger on a schedule rather than at events.

Every ``[alerts] watch_interval_seconds`` (30 s) the one process holding the watch lease
(``storage.leases``, name ``alerts.watch``, renewed each round, lapsing after three missed
ones) runs a round:

- **Upstream error rate.** Each provider's requests and failures per minute over the last
  quarter hour (``storage.outcomes``, one grouped query), judged by ``alerts.error_rate``
  against the provider's alerts of that rule that are open or fired in that time
  (``storage.alerts.recent_alerts``): raise one per episode (keyed on the minute it began),
  resolve it when the rate is back under the threshold or the provider has no traffic.
- **Spend spikes.** Once per clock hour (two minutes after it ends, for the ledger's batches
  to land), every org's spend in that hour and the same hour on previous days
  (``storage.spend.hourly_usage``, one grouped query), judged by ``alerts.spikes``; each
  spike raises an alert keyed per org, metric and hour, resolving itself an hour later.

Its own lease, rather than the forecast's, because its cadence is its own: the forecast lease
lives three forecast rounds (15 min by default), and error-rate alerts must not go quiet for
that long when the leader dies. Alerts are raised and resolved through the alerting service
(``app.alerting``), which stores them once (unique keys), publishes ``alert_changed`` and
wakes its deliveries. A new leader (a restart, a failover) starts with no memory: it checks
the last hour again (keys make that a no-op) and finds an open episode's alert in storage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy.engine import Engine

from costwarden.alerts.error_rate import (
    MINUTE,
    ErrorRateParams,
    PriorAlert,
    decide,
    error_rate,
)
from costwarden.alerts.rules import ERROR_RATE_RULE, AlertDraft, error_rate_alert, spike_alert
from costwarden.alerts.spikes import (
    SpikeFinding,
    SpikeParams,
    compared_hours,
    hour_to_check,
    spikes,
)
from costwarden.config.alerts import AlertSettings
from costwarden.core.money import format_nanos, usd_to_nanos
from costwarden.storage.alerts import recent_alerts
from costwarden.storage.leases import try_lead
from costwarden.storage.outcomes import provider_minutes
from costwarden.storage.repo import list_orgs
from costwarden.storage.spend import hourly_usage

logger = logging.getLogger(__name__)

WATCH_LEASE = "alerts.watch"
_LOOKBACK_WINDOWS = 3  # an episode's start is found within 3 x error_rate_minutes
_SPIKE_GRACE_SECONDS = 120

RaiseAlert = Callable[[AlertDraft], Awaitable[None]]
ClearAlerts = Callable[[str, str, str | None], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True)
class WatchParams:
    """``[alerts]`` as the watch's rules take it."""

    interval_seconds: float
    error_rate: ErrorRateParams
    spike: SpikeParams


def watch_params(settings: AlertSettings) -> WatchParams:
    """The domain's parameters of validated ``[alerts]`` settings (``config.alerts``)."""
    minutes = settings.error_rate_minutes
    return WatchParams(
        interval_seconds=settings.watch_interval_seconds,
        error_rate=ErrorRateParams(
            pct=settings.error_rate_pct,
            minutes=minutes,
            min_requests=settings.error_rate_min_requests,
            lookback_minutes=_LOOKBACK_WINDOWS * minutes,
        ),
        spike=SpikeParams(
            factor=Decimal(str(settings.spike_factor)),  # the decimal the file wrote
            history_days=settings.spike_history_days,
            min_history_days=settings.spike_min_history_days,
            min_usd_nanos=usd_to_nanos(Decimal(settings.spike_min_usd)),
            min_tokens=settings.spike_min_tokens,
            grace_seconds=_SPIKE_GRACE_SECONDS,
        ),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class WatchRound:
    """What one round did: whether this process leads, and the alerts it raised or resolved
    (tried to: a key already stored raises nothing); ``spike_hour`` is the hour it checked for
    spikes (None: checked already)."""

    leading: bool
    raised: int = 0
    resolved: int = 0
    spike_hour: int | None = None


class Watcher:
    """The watch of one process (module docstring): rounds only while it holds the lease;
    alerts raised and cleared through the callables it is given (the alerting service's)."""

    def __init__(
        self,
        params: WatchParams,
        engine: Engine,
        *,
        clock: Callable[[], float],
        holder: str,
        raise_alert: RaiseAlert,
        clear: ClearAlerts,
    ) -> None:
        self.params = params
        self._engine = engine
        self._clock = clock
        self._holder = holder
        self._raise = raise_alert
        self._clear = clear
        self._spike_hour: int | None = None  # the newest hour this process checked

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self.params.interval_seconds)
            try:
                await self.round()
            except Exception as exc:  # noqa: BLE001 - storage down: the next round
                logger.warning("alert watch round failed: %s", type(exc).__name__)

    async def round(self) -> WatchRound:
        """One round, if this process holds (or takes) the watch lease."""
        now = self._clock()
        ttl = timedelta(seconds=3 * self.params.interval_seconds)
        at = datetime.fromtimestamp(now, UTC)
        leading = await asyncio.to_thread(
            try_lead, self._engine, WATCH_LEASE, self._holder, ttl=ttl, now=at
        )
        if not leading:
            self._spike_hour = None  # whoever leads checks; this process may lead again later
            return WatchRound(leading=False)
        raised, resolved = await self._error_rates(now)
        hour = hour_to_check(now, self.params.spike.grace_seconds)
        if hour == self._spike_hour:
            return WatchRound(leading=True, raised=raised, resolved=resolved)
        raised += await self._spikes(hour)
        self._spike_hour = hour  # only once the hour's alerts are stored: a failure retries
        return WatchRound(leading=True, raised=raised, resolved=resolved, spike_hour=hour)

    async def _error_rates(self, now: float) -> tuple[int, int]:
        p = self.params.error_rate
        first = (int(now // MINUTE) - p.lookback_minutes) * MINUTE
        counts = await asyncio.to_thread(provider_minutes, self._engine, first, p.lookback_minutes)
        since = datetime.fromtimestamp(first, UTC)
        recent = await asyncio.to_thread(recent_alerts, self._engine, ERROR_RATE_RULE, since)
        priors: dict[str, list[PriorAlert]] = {}
        for alert in recent:
            if alert.scope_id is not None:
                prior = PriorAlert(alert.state != "resolved", alert.fired_at.timestamp())
                priors.setdefault(alert.scope_id, []).append(prior)
        raised = resolved = 0
        # Providers with traffic, and those with an open alert but none (idle: it clears).
        for provider in sorted(counts.keys() | priors.keys()):
            result = error_rate(counts.get(provider, []), now=now, params=p)
            decision = decide(result, priors.get(provider, []))
            if decision == "raise" and result.run_start is not None:
                draft = error_rate_alert(
                    provider=provider, episode_start=result.run_start, pct=p.pct,
                    minutes=p.minutes, requests=result.requests, failures=result.failures,
                    reason=result.reason,
                )  # fmt: skip
                await self._raise(draft)
                raised += 1
            elif decision == "resolve":
                logger.info("%s error rate cleared: %s", provider, result.reason)
                await self._clear(ERROR_RATE_RULE, provider, None)
                resolved += 1
        return raised, resolved

    async def _spikes(self, hour: int) -> int:
        params = self.params.spike
        hours = compared_hours(hour, params.history_days)
        usage = await asyncio.to_thread(hourly_usage, self._engine, hours)
        if not any(u.hour == hour for u in usage):
            return 0  # nobody used that hour: no spike, and no need to read the orgs
        orgs = await asyncio.to_thread(list_orgs, self._engine)
        created = {o.id: o.created_at.timestamp() for o in orgs}
        found = spikes(hour, usage, created, params)
        for finding in found:
            await self._raise(_spike_draft(finding))
        return len(found)


def _spike_draft(f: SpikeFinding) -> AlertDraft:
    r = f.result
    ratio = None if r.ratio is None else str(r.ratio.quantize(Decimal("0.1"), ROUND_HALF_UP))
    usual = r.usual if r.usual is not None else Decimal(0)
    usual_units = int(usual.to_integral_value(ROUND_HALF_UP))
    return spike_alert(
        org_id=f.org_id,
        metric=f.metric,
        hour=f.hour,
        spent=_amount(f.metric, r.last_hour),
        usual=_amount(f.metric, usual_units),
        ratio=ratio,
        reason=r.reason,
    )


def _amount(metric: str, units: int) -> str:
    return format_nanos(units) if metric == "usd" else str(units)
