"""The app's metrics exporter, wired to the parts it reads (``GET /metrics``, docs/metrics.md).

The metrics package imports only ``costwarden.core``: here, in the composition root, the
breaker board, the enforcer, the ledger writer and the event bus are read and their values
mapped into the metrics package's own types (:mod:`costwarden.metrics.sources`). Every source
reads memory only; per-limit counters held in Redis are not read at scrape time (the limits'
amounts are still exported).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

from costwarden.budgets.enforcer import Enforcer
from costwarden.budgets.leased import LeasedStore
from costwarden.budgets.limits import Limit
from costwarden.budgets.status import LimitStatus, memory_snapshot
from costwarden.config.metrics import MetricsSettings
from costwarden.core.events import EventBus
from costwarden.metrics import (
    GaugeSources,
    LedgerGauges,
    LimitGauge,
    LimitGauges,
    MetricsExporter,
    RequestMetrics,
    SliceCounts,
)
from costwarden.routing.breakers import BreakerBoard
from costwarden.storage.ledger import LedgerWriter


def metrics_exporter(
    settings: MetricsSettings,
    *,
    routes: Iterable[str],
    breakers: BreakerBoard,
    enforcer: Enforcer,
    ledger: LedgerWriter,
    events: EventBus,
) -> MetricsExporter | None:
    """The exporter of one app, or None when ``[metrics] enabled = false``."""
    if not settings.enabled:
        return None
    requests = RequestMetrics(
        max_orgs=settings.max_orgs, max_models=settings.max_models, models=routes
    )
    max_limits = settings.max_limits

    def breaker_states() -> dict[str, str]:
        return {d: breakers.state(d) for d in breakers.deployments}

    def limits() -> LimitGauges:
        snap = memory_snapshot(
            enforcer.book, enforcer.store, enforcer.clock(), enforcer.tz, max_limits=max_limits
        )
        statuses: list[LimitStatus | None] = (
            [None] * len(snap.limits) if snap.statuses is None else list(snap.statuses)
        )
        gauges = tuple(_gauge(lim, st) for lim, st in zip(snap.limits, statuses, strict=True))
        return LimitGauges(gauges, snap.omitted)

    def ledger_state() -> LedgerGauges:
        return LedgerGauges(
            queue_depth=ledger.pending,
            flush_lag_seconds=ledger.flush_lag(time.monotonic()),
            written=ledger.written,
            failures=ledger.failures,
            spooled=ledger.spooled,
            spooling=ledger.spooling,
        )

    sources = GaugeSources(
        breakers=breaker_states,
        limits=limits,
        ledger=ledger_state,
        event_subscribers=lambda: events.subscribers,
        counters_mode=lambda: enforcer.mode,
        slices=_slice_counts(enforcer.store) if isinstance(enforcer.store, LeasedStore) else None,
    )
    return MetricsExporter(requests, sources)


def _slice_counts(store: LeasedStore) -> Callable[[], SliceCounts]:
    return lambda: SliceCounts(store.admitted_locally, store.reserved_exactly, store.calls)


def _gauge(limit: Limit, status: LimitStatus | None) -> LimitGauge:
    """A limit in the metrics package's terms; its counters only when they are in memory."""
    gauge = LimitGauge(limit.org_id, limit.scope, limit.subject, limit.name, limit.amount)
    if status is None:
        return gauge
    return dataclasses.replace(
        gauge, spent=status.spent, reserved=status.reserved, remaining=status.remaining
    )
