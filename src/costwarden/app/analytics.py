"""The rollup job of one gateway process, and its daily reconciliation.

Every ``[analytics] rollup_interval_seconds`` the one process holding the rollup lease
(``storage.leases``, name ``analytics.rollup``, renewed each round, lapsing after three missed
ones) runs ``storage.rollups.roll_up``: the ledger rows written since the watermark, their
hours recomputed. Once a UTC day, after that day's rollup, the same process checks the last
``reconcile_days`` complete days against the raw ledger (``storage.rollups.reconcile``). A
day and org that differ raise an alert (through the alerting service, once per distinct
difference: the key holds the ledger's figures) and the day is recomputed from the raw rows
(``repair``), so the rollups are right again before anyone reads them.

A long run (the first over a large ledger) renews the lease between days and stops, the
watermark unmoved, if it was lost meanwhile: another replica may be at the same work.

Once an hour, after the rollup, the holder keeps the ledger's monthly partitions ahead
(PostgreSQL, ``storage.retention.ensure_partitions``) and, with ``raw_retention_days`` set,
prunes raw rows past it (``storage.retention.prune``; never one not rolled up yet). Not
while a lifetime limit is in force: its counter is rebuilt from the raw ledger (budgets).

Off the request path: worker threads for the database, one task, cancelled at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from costwarden.alerts.rules import AlertDraft
from costwarden.analytics.rollup import Drift
from costwarden.config.analytics import AnalyticsSettings
from costwarden.core.tasks import cancel_and_wait
from costwarden.storage.leases import try_lead
from costwarden.storage.reconciliation import (
    reconcile,
    reconciled_through,
    set_reconciled_through,
)
from costwarden.storage.retention import Pruned, ensure_partitions, prune
from costwarden.storage.rollups import RollupRun, repair, roll_up

logger = logging.getLogger(__name__)

ROLLUP_LEASE = "analytics.rollup"
DRIFT_RULE = "analytics-drift"
_DAY = 86_400
MAINTAIN_EVERY = 3600.0  # seconds between partition upkeep and retention


def drift_alert(day: str, org_id: str, found: list[Drift]) -> AlertDraft:
    """The alert of one day and org whose rollup differed from the ledger. Keyed on the
    ledger's figures, so the same difference alerts once and a new one alerts again."""
    figures = ",".join(f"{d.measure}={d.ledger}" for d in found)
    what = "; ".join(f"{d.measure}: ledger {d.ledger}, rollup {d.rollup}" for d in found)
    return AlertDraft(
        dedupe_key=f"{DRIFT_RULE}|{day}|{org_id or '-'}|{figures}",
        kind="service",
        rule=DRIFT_RULE,
        severity="warning",
        title=f"analytics for {day} differed from the ledger (org {org_id or 'none'}); "
        "recomputed from the ledger",
        window_key=f"day:{day}",
        org_id=org_id or None,
        scope="analytics",
        scope_id=day,
        detail={"day": day, "differences": what},
    )


class Rollups:
    def __init__(
        self,
        settings: AnalyticsSettings,
        engine: Engine,
        *,
        clock: Callable[[], float],
        holder: str,
        raise_alert: Callable[[AlertDraft], Awaitable[None]] | None = None,
        lifetime_limits: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self._engine = engine
        self._clock = clock
        self._holder = holder
        self._raise_alert = raise_alert
        self._lifetime_limits = lifetime_limits
        self._ttl = timedelta(seconds=3 * settings.rollup_interval_seconds)
        self._maintained_at: float | None = None  # clock of the last upkeep and prune
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        task, self._task = self._task, None
        with contextlib.suppress(Exception):
            await cancel_and_wait((task,))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.rollup_interval_seconds)
            try:
                await self.round()
            except Exception as exc:  # noqa: BLE001 - storage down: the next round
                logger.warning("analytics rollup failed: %s", type(exc).__name__)

    def _lead(self) -> bool:
        """Take or renew the lease (blocking: a worker thread's, also between a run's days)."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        return try_lead(self._engine, ROLLUP_LEASE, self._holder, ttl=self._ttl, now=now)

    async def round(self) -> RollupRun | None:
        """One round if this process holds the lease (None if another does)."""
        if not await asyncio.to_thread(self._lead):
            return None
        lag_ms = int(self.settings.lag_seconds * 1000)
        run = await asyncio.to_thread(roll_up, self._engine, lag_ms=lag_ms, on_day=self._lead)
        if not run.complete or run.watermark is None:
            return run  # the lease was lost mid-run: the new holder goes on
        yesterday = int(run.watermark // 1000 // _DAY) - 1  # the last complete UTC day
        done = await asyncio.to_thread(reconciled_through, self._engine)
        if done is None or done < yesterday:
            await self.reconcile(yesterday)
        await self.maintain()
        return run

    async def maintain(self) -> Pruned | None:
        """At most once every MAINTAIN_EVERY seconds, in the lease holder: the ledger's
        partitions kept ahead, then raw rows past ``raw_retention_days`` pruned. What was
        pruned (None: nothing was tried)."""
        at = self._clock()
        if self._maintained_at is not None and at - self._maintained_at < MAINTAIN_EVERY:
            return None
        if not await asyncio.to_thread(self._lead):  # the reconciliation may have been long
            return None
        self._maintained_at = at  # a failure waits for the next hour too: nothing is urgent
        now = datetime.fromtimestamp(at, UTC)
        try:
            await asyncio.to_thread(ensure_partitions, self._engine, now)
            days = self.settings.raw_retention_days
            if not days:
                return None
            if self._lifetime_limits():
                logger.warning(
                    "raw ledger retention paused: a lifetime limit is in force, and its "
                    "counter is rebuilt from the raw ledger"
                )
                return None
            return await asyncio.to_thread(prune, self._engine, keep_days=days, now=now)
        except SQLAlchemyError as exc:  # a lock not granted in time, the database down
            logger.warning("ledger partitions / retention failed (%s): retried in an hour",
                           type(exc).__name__)  # fmt: skip
            return None

    async def reconcile(self, through: int) -> list[Drift]:
        """Check the ``reconcile_days`` days up to epoch day ``through``; alert on and
        repair each day and org that differs. Returns what differed."""
        days = [
            datetime.fromtimestamp((through - i) * _DAY, UTC).strftime("%Y-%m-%d")
            for i in range(self.settings.reconcile_days)
        ]
        found = await asyncio.to_thread(reconcile, self._engine, days)
        by_day: dict[tuple[str, str], list[Drift]] = {}
        for drift in found:
            by_day.setdefault((drift.day, drift.org_id), []).append(drift)
        for (day, org), drifts in sorted(by_day.items()):
            logger.error(
                "analytics rollup of %s differs from the ledger for org %s: %s; recomputing",
                day, org or "(none)", ", ".join(d.measure for d in drifts),
            )  # fmt: skip
            if self._raise_alert is not None:
                await self._raise_alert(drift_alert(day, org, drifts))
        for day in sorted({d.day for d in found}):
            await asyncio.to_thread(repair, self._engine, day)
        await asyncio.to_thread(set_reconciled_through, self._engine, through)
        return found
